// trellis::sync::oneshot: a channel for a single value (tokio::sync::oneshot).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync::oneshot {

namespace detail {

using sync::detail::ReadyList;
using sync::detail::WaitList;
using sync::detail::WaitState;

template <class T>
class State final : public WaitState {
 public:
  std::optional<T> value;
  bool sent = false;  // send() happened (the value may have been received since)
  bool sender_alive = true;
  bool receiver_alive = true;
  WaitList waiters;
};

template <class T>
struct RecvWaiter : sync::detail::Waiter {
  std::optional<T> value;
  std::tuple<boost::system::error_code, T> take_results() {
    return {ec, value ? std::move(*value) : T()};
  }
  bool revoke(WaitState& state, ReadyList&) override {
    if (!value) return false;
    static_cast<State<T>&>(state).value = std::move(value);
    value.reset();
    return true;
  }
};

}  // namespace detail

template <class T>
class Receiver;

// The sending half of a oneshot channel. Move-only. Destroying it without sending closes the
// channel: the receiver gets Errc::closed.
template <class T>
class Sender {
 public:
  Sender(Sender&&) noexcept = default;
  Sender& operator=(Sender&& other) noexcept {
    if (this != &other) {
      release();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~Sender() { release(); }

  // Sends the value, waking the receiver if it waits; never blocks. Returns success, or
  // Errc::closed when the receiver is gone (`value` is then left as it was, not moved from) or a
  // value was already sent.
  boost::system::error_code send(T&& value) {
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    if (!state_->receiver_alive || state_->sent) return Errc::closed;
    state_->sent = true;
    if (auto* r = static_cast<detail::RecvWaiter<T>*>(state_->waiters.pop_front())) {
      r->value.emplace(std::move(value));
      ready.add(r);
    } else {
      state_->value.emplace(std::move(value));
    }
    return {};
  }
  boost::system::error_code send(const T& value) {
    T copy(value);
    return send(std::move(copy));
  }

  // Whether the receiver is gone (a send would fail).
  bool is_closed() const {
    std::lock_guard lock(state_->mu);
    return !state_->receiver_alive;
  }

 private:
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel();
  explicit Sender(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  void release() {
    if (!state_) return;
    {
      detail::ReadyList ready;
      std::lock_guard lock(state_->mu);
      state_->sender_alive = false;
      if (!state_->sent) ready.claim_all(state_->waiters, Errc::closed);
    }
    state_.reset();
  }

  std::shared_ptr<detail::State<T>> state_;
};

// The receiving half of a oneshot channel. Move-only.
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

  // Waits for the value. Completes with void(error_code, T): the value; Errc::closed (and a
  // default-constructed T) if the sender was destroyed without sending or the value was already
  // received; operation_aborted if cancelled. Cancellation-safe: a cancelled receive leaves the
  // value in the channel for the next one, even if it raced with the send.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_receive(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, T)>(
        [](auto handler, std::shared_ptr<detail::State<T>> state) {
          auto* s = state.get();
          sync::detail::start_wait<detail::RecvWaiter<T>>(
              std::move(handler), std::move(state),
              [s](detail::RecvWaiter<T>& w, detail::ReadyList&) -> detail::WaitList* {
                if (s->value) {
                  w.value = std::move(s->value);
                  s->value.reset();
                  return nullptr;
                }
                if (s->sent || !s->sender_alive) {
                  w.ec = Errc::closed;
                  return nullptr;
                }
                return &s->waiters;
              });
        },
        token, state_);
  }

  // Takes the value if it was sent. Returns success (the value is in `out`), Errc::empty (not
  // sent yet) or Errc::closed (the sender is gone without sending, or the value was taken).
  boost::system::error_code try_receive(T& out) {
    std::optional<T> value;
    {
      std::lock_guard lock(state_->mu);
      if (!state_->value) {
        return state_->sent || !state_->sender_alive ? Errc::closed : Errc::empty;
      }
      value = std::move(state_->value);
      state_->value.reset();
    }
    out = std::move(*value);
    return {};
  }

 private:
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel();
  explicit Receiver(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  void release() {
    if (!state_) return;
    std::optional<T> dropped;  // destroyed last, with no lock held
    {
      detail::ReadyList ready;
      std::lock_guard lock(state_->mu);
      state_->receiver_alive = false;
      ready.claim_all(state_->waiters, Errc::closed);
      dropped = std::move(state_->value);
      state_->value.reset();
    }
    state_.reset();
  }

  std::shared_ptr<detail::State<T>> state_;
};

// Creates a oneshot channel.
template <class T>
std::pair<Sender<T>, Receiver<T>> channel() {
  auto state = std::make_shared<detail::State<T>>();
  return {Sender<T>(state), Receiver<T>(state)};
}

}  // namespace trellis::sync::oneshot
