// trellis::sync::mpsc: a bounded multi-producer, single-consumer channel (tokio::sync::mpsc).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync::mpsc {

namespace detail {

using sync::detail::ReadyList;
using sync::detail::WaitList;
using sync::detail::WaitState;

template <class T>
class State;

// A pending async_send: holds the value until the channel takes it.
template <class T>
struct SendWaiter : sync::detail::Waiter {
  explicit SendWaiter(T v) : value(std::move(v)) {}
  std::optional<T> value;
  std::tuple<boost::system::error_code> take_results() { return {ec}; }
};

// A pending async_receive: gets the value when claimed.
template <class T>
struct RecvWaiter : sync::detail::Waiter {
  std::optional<T> value;
  std::tuple<boost::system::error_code, T> take_results() {
    return {ec, value ? std::move(*value) : T()};
  }
  // A value handed over but not yet delivered goes back to the front of the queue.
  bool revoke(WaitState& state, ReadyList&) override {
    if (!value) return false;
    static_cast<State<T>&>(state).queue.push_front(std::move(*value));
    value.reset();
    return true;
  }
};

template <class T>
class State final : public WaitState {
 public:
  explicit State(std::size_t cap) : capacity(cap) {}

  // Moves the first queued value into `out`, and the first blocked sender's value into the queue.
  // Under `mu`, the queue not empty.
  void pop_into(std::optional<T>& out, ReadyList& ready) {
    out.emplace(std::move(queue.front()));
    queue.pop_front();
    if (auto* s = static_cast<SendWaiter<T>*>(send_waiters.pop_front())) {
      queue.push_back(std::move(*s->value));
      s->value.reset();
      ready.add(s);
    }
  }
  // Hands `value` to a waiting receiver or queues it; false when full. Under `mu`, not closed.
  bool offer(T&& value, ReadyList& ready) {
    if (auto* r = static_cast<RecvWaiter<T>*>(recv_waiters.pop_front())) {
      r->value.emplace(std::move(value));
      ready.add(r);
      return true;
    }
    if (queue.size() >= capacity || !send_waiters.empty()) return false;
    queue.push_back(std::move(value));
    return true;
  }
  // Stops accepting values. Under `mu`.
  void close(ReadyList& ready) {
    closed = true;
    ready.claim_all(send_waiters, Errc::closed);
    // Receivers wait only on an empty queue: nothing more will come.
    ready.claim_all(recv_waiters, Errc::closed);
  }

  const std::size_t capacity;
  std::deque<T> queue;
  std::size_t senders = 1;
  bool closed = false;
  WaitList send_waiters;
  WaitList recv_waiters;
};

}  // namespace detail

template <class T>
class Receiver;

// The sending half of an mpsc channel. Copyable: every copy is one more sender, and the channel
// closes for the receiver once the last one is destroyed (after the values already sent are
// received). Each operation may be called from any thread; one Sender object, like any C++
// object, must not be used by two threads at once without synchronisation (copy it instead).
template <class T>
class Sender {
 public:
  Sender(const Sender& other) : state_(other.state_) {
    if (state_) {
      std::lock_guard lock(state_->mu);
      ++state_->senders;
    }
  }
  Sender(Sender&& other) noexcept = default;
  Sender& operator=(Sender other) noexcept {
    std::swap(state_, other.state_);
    return *this;
  }
  ~Sender() { release(); }

  // Sends `value`, waiting while the channel is full (backpressure); senders blocked on a full
  // channel are served in FIFO order. Completes with void(error_code): success once the value is
  // in the channel (or handed to the waiting receiver), Errc::closed if the receiver is gone or
  // closed the channel, operation_aborted if cancelled while waiting. On failure the value was
  // not delivered and is destroyed: use try_send to keep it.
  // Cancellation (any type) takes effect only while the send waits for room.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_send(T value, Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [](auto handler, std::shared_ptr<detail::State<T>> state, T value) {
          auto* s = state.get();
          sync::detail::start_wait<detail::SendWaiter<T>>(
              std::move(handler), std::move(state),
              [s](detail::SendWaiter<T>& w, detail::ReadyList& ready) -> detail::WaitList* {
                if (s->closed) {
                  w.ec = Errc::closed;
                  return nullptr;
                }
                if (s->offer(std::move(*w.value), ready)) {
                  w.value.reset();
                  return nullptr;
                }
                return &s->send_waiters;
              },
              std::move(value));
        },
        token, state_, std::move(value));
  }

  // Sends `value` if there is room now. Returns success, Errc::full or Errc::closed; on failure
  // `value` is left as it was (not moved from).
  boost::system::error_code try_send(T&& value) {
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    if (state_->closed) return Errc::closed;
    if (!state_->offer(std::move(value), ready)) return Errc::full;
    return {};
  }
  boost::system::error_code try_send(const T& value) {
    T copy(value);
    return try_send(std::move(copy));
  }

  // Whether the channel no longer accepts values (the receiver closed it or is gone).
  bool is_closed() const {
    std::lock_guard lock(state_->mu);
    return state_->closed;
  }

 private:
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel(std::size_t capacity);
  explicit Sender(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  void release() {
    if (!state_) return;
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    if (--state_->senders == 0) state_->close(ready);
    // `ready` completes the waiters after the lock is released (declared first).
  }

  std::shared_ptr<detail::State<T>> state_;
};

// The receiving half of an mpsc channel. Move-only. Destroying it closes the channel: pending
// and later sends fail with Errc::closed, and the values still queued are destroyed.
template <class T>
class Receiver {
 public:
  Receiver(Receiver&&) noexcept = default;
  Receiver& operator=(Receiver&& other) noexcept {
    if (this != &other) {
      release();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~Receiver() { release(); }

  // Receives the next value, waiting until one is sent. Completes with void(error_code, T): the
  // value; or Errc::closed (with a default-constructed T) once the channel is closed and every
  // value sent before has been received; or operation_aborted if cancelled.
  // Cancellation-safe: a cancelled receive takes no value. Even when the cancellation races with
  // a send that already handed it a value, the value goes back to the front of the channel
  // (which may then hold one value more than its capacity, briefly). T must be
  // default-constructible and movable.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_receive(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, T)>(
        [](auto handler, std::shared_ptr<detail::State<T>> state) {
          auto* s = state.get();
          sync::detail::start_wait<detail::RecvWaiter<T>>(
              std::move(handler), std::move(state),
              [s](detail::RecvWaiter<T>& w, detail::ReadyList& ready) -> detail::WaitList* {
                if (!s->queue.empty()) {
                  s->pop_into(w.value, ready);
                  return nullptr;
                }
                if (s->closed) {
                  w.ec = Errc::closed;
                  return nullptr;
                }
                return &s->recv_waiters;
              });
        },
        token, state_);
  }

  // Receives a value if one is queued. Returns success (the value is in `out`), Errc::empty, or
  // Errc::closed (closed and drained).
  boost::system::error_code try_receive(T& out) {
    std::optional<T> value;
    {
      detail::ReadyList ready;
      std::lock_guard lock(state_->mu);
      if (state_->queue.empty()) return state_->closed ? Errc::closed : Errc::empty;
      state_->pop_into(value, ready);
    }
    out = std::move(*value);
    return {};
  }

  // Closes the channel without dropping the receiver: pending and later sends fail with
  // Errc::closed; the values already queued can still be received, then receives report
  // Errc::closed.
  void close() {
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    state_->close(ready);
  }

  // Values queued now.
  std::size_t size() const {
    std::lock_guard lock(state_->mu);
    return state_->queue.size();
  }
  std::size_t capacity() const { return state_->capacity; }

 private:
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel(std::size_t capacity);
  explicit Receiver(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  void release() {
    if (!state_) return;
    std::deque<T> dropped;  // destroyed last, with no lock held
    {
      detail::ReadyList ready;
      std::lock_guard lock(state_->mu);
      state_->close(ready);
      dropped.swap(state_->queue);
    }
    state_.reset();
  }

  std::shared_ptr<detail::State<T>> state_;
};

// Creates a channel that holds up to `capacity` (>= 1) values; senders wait when it is full.
// Throws std::invalid_argument for a zero capacity.
template <class T>
std::pair<Sender<T>, Receiver<T>> channel(std::size_t capacity) {
  if (capacity == 0) throw std::invalid_argument("trellis::sync::mpsc::channel: zero capacity");
  auto state = std::make_shared<detail::State<T>>(capacity);
  return {Sender<T>(state), Receiver<T>(state)};
}

}  // namespace trellis::sync::mpsc
