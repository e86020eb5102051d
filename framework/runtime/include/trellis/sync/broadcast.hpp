// trellis::sync::broadcast: a bounded multi-producer, multi-consumer channel in which every
// receiver sees every value (tokio::sync::broadcast).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync::broadcast {

namespace detail {

using sync::detail::ReadyList;
using sync::detail::WaitList;
using sync::detail::WaitState;

// A receiver's position: the index of the next value it receives (values are numbered from 0 in
// send order), and the size of its last lag. Guarded by the state's `mu`.
struct Cursor {
  std::uint64_t next = 0;
  std::uint64_t lagged_by = 0;
};

template <class T>
class State final : public WaitState {
 public:
  explicit State(std::size_t capacity) : ring(capacity) {}
  // The index of the oldest value still retained.
  std::uint64_t oldest() const { return sent > ring.size() ? sent - ring.size() : 0; }

  std::vector<std::optional<T>> ring;  // value i is in ring[i % capacity]
  std::uint64_t sent = 0;              // values sent so far: the index of the next one
  std::size_t senders = 1;
  std::size_t receivers = 1;
  WaitList waiters;
};

template <class T>
struct RecvWaiter : sync::detail::Waiter {
  explicit RecvWaiter(std::shared_ptr<Cursor> c) : cursor(std::move(c)) {}
  std::shared_ptr<Cursor> cursor;
  std::optional<T> value;
  std::tuple<boost::system::error_code, T> take_results() {
    return {ec, value ? std::move(*value) : T()};
  }
  // Takes value cursor->next. Under `mu`, with cursor->next < sent and retained.
  void take(const State<T>& s) {
    value.emplace(*s.ring[cursor->next % s.ring.size()]);
    ++cursor->next;
  }
  // The value taken goes back: the receiver will receive it again (or a lag report, if it was
  // overwritten meanwhile).
  bool revoke(WaitState&, ReadyList&) override {
    if (!value) return false;
    value.reset();
    --cursor->next;
    return true;
  }
};

}  // namespace detail

template <class T>
class Sender;

// A receiver of every value sent after it subscribed. Copyable: a copy receives, from the same
// position, the same values independently. Operations may be called from any thread, one at a
// time per Receiver object.
template <class T>
class Receiver {
 public:
  Receiver(const Receiver& other)
      : state_(other.state_), cursor_(std::make_shared<detail::Cursor>()) {
    std::lock_guard lock(state_->mu);
    *cursor_ = *other.cursor_;
    ++state_->receivers;
  }
  Receiver(Receiver&&) noexcept = default;
  Receiver& operator=(Receiver other) noexcept {
    std::swap(state_, other.state_);
    std::swap(cursor_, other.cursor_);
    return *this;
  }
  ~Receiver() { release(); }

  // Receives the next value, waiting until one is sent. Completes with void(error_code, T):
  //  - success and a copy of the value;
  //  - Errc::lagged when the receiver fell more than the capacity behind: lagged_by() then tells
  //    how many values it missed, and the next receive yields the oldest value retained;
  //  - Errc::closed once every sender is gone and every retained value was received;
  //  - operation_aborted if cancelled.
  // Cancellation-safe: a cancelled receive consumes nothing, even when it raced with the send
  // that woke it. T must be copyable and default-constructible; values are copied under the
  // channel's lock, so T's copy must not use the channel.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_receive(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, T)>(
        [](auto handler, std::shared_ptr<detail::State<T>> state,
           std::shared_ptr<detail::Cursor> cursor) {
          auto* s = state.get();
          sync::detail::start_wait<detail::RecvWaiter<T>>(
              std::move(handler), std::move(state),
              [s](detail::RecvWaiter<T>& w, detail::ReadyList&) -> detail::WaitList* {
                std::uint64_t oldest = s->oldest();
                if (w.cursor->next < oldest) {
                  w.cursor->lagged_by = oldest - w.cursor->next;
                  w.cursor->next = oldest;
                  w.ec = Errc::lagged;
                  return nullptr;
                }
                if (w.cursor->next < s->sent) {
                  w.take(*s);
                  return nullptr;
                }
                if (s->senders == 0) {
                  w.ec = Errc::closed;
                  return nullptr;
                }
                return &s->waiters;
              },
              std::move(cursor));
        },
        token, state_, cursor_);
  }

  // How many values the receiver missed, as reported by its last Errc::lagged.
  std::uint64_t lagged_by() const {
    std::lock_guard lock(state_->mu);
    return cursor_->lagged_by;
  }
  // Values sent that this receiver has not received yet (retained or not).
  std::uint64_t pending() const {
    std::lock_guard lock(state_->mu);
    return state_->sent - cursor_->next;
  }

 private:
  friend class Sender<T>;
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel(std::size_t capacity);
  Receiver(std::shared_ptr<detail::State<T>> state, std::uint64_t next)
      : state_(std::move(state)), cursor_(std::make_shared<detail::Cursor>()) {
    cursor_->next = next;
  }

  void release() {
    if (!state_) return;
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    --state_->receivers;
    for (auto* w = state_->waiters.front(); w != nullptr;) {
      auto* next = w->next_waiter;
      if (static_cast<detail::RecvWaiter<T>*>(w)->cursor == cursor_) {
        state_->waiters.remove(w);
        w->ec = Errc::closed;
        ready.add(w);
      }
      w = next;
    }
  }

  std::shared_ptr<detail::State<T>> state_;
  std::shared_ptr<detail::Cursor> cursor_;
};

// A sender of values to every receiver. Copyable: the channel closes once every copy is gone.
template <class T>
class Sender {
 public:
  Sender(const Sender& other) : state_(other.state_) {
    std::lock_guard lock(state_->mu);
    ++state_->senders;
  }
  Sender(Sender&&) noexcept = default;
  Sender& operator=(Sender other) noexcept {
    std::swap(state_, other.state_);
    return *this;
  }
  ~Sender() { release(); }

  // Appends `value` to the ring (overwriting the oldest value once it is full: receivers that
  // had not received that one will see Errc::lagged) and wakes every waiting receiver. Never
  // blocks. Returns the number of receivers subscribed now; with none, the value is still
  // retained but nobody can receive it (later subscribers start after it).
  std::size_t send(T value) {
    detail::ReadyList ready;
    std::optional<T> overwritten;  // destroyed last, with no lock held
    std::lock_guard lock(state_->mu);
    auto& slot = state_->ring[state_->sent % state_->ring.size()];
    overwritten = std::move(slot);
    slot.emplace(std::move(value));
    ++state_->sent;
    while (auto* w = static_cast<detail::RecvWaiter<T>*>(state_->waiters.pop_front())) {
      w->take(*state_);
      ready.add(w);
    }
    return state_->receivers;
  }

  // A new receiver of the values sent from now on.
  Receiver<T> subscribe() const {
    std::lock_guard lock(state_->mu);
    ++state_->receivers;
    return Receiver<T>(state_, state_->sent);
  }
  std::size_t receiver_count() const {
    std::lock_guard lock(state_->mu);
    return state_->receivers;
  }

 private:
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel(std::size_t capacity);
  explicit Sender(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  void release() {
    if (!state_) return;
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    if (--state_->senders == 0) ready.claim_all(state_->waiters, Errc::closed);
  }

  std::shared_ptr<detail::State<T>> state_;
};

// Creates a broadcast channel retaining the last `capacity` (>= 1) values, and its first
// receiver. Throws std::invalid_argument for a zero capacity.
template <class T>
std::pair<Sender<T>, Receiver<T>> channel(std::size_t capacity) {
  if (capacity == 0) {
    throw std::invalid_argument("trellis::sync::broadcast::channel: zero capacity");
  }
  auto state = std::make_shared<detail::State<T>>(capacity);
  return {Sender<T>(state), Receiver<T>(state, 0)};
}

}  // namespace trellis::sync::broadcast
