// trellis::sync::watch: a single latest value that receivers watch for changes
// (tokio::sync::watch).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <tuple>
#include <utility>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync::watch {

namespace detail {

using sync::detail::ReadyList;
using sync::detail::WaitList;
using sync::detail::WaitState;

// A receiver's position: the version it saw last. Guarded by the state's `mu`.
struct Cursor {
  std::uint64_t seen = 0;
};

template <class T>
class State final : public WaitState {
 public:
  explicit State(T initial) : value(std::move(initial)) {}
  std::shared_mutex value_mu;  // guards `value`; taken before `mu`
  T value;
  std::uint64_t version = 1;  // guarded by `mu`, like the rest
  bool sender_alive = true;
  std::size_t receivers = 1;
  WaitList waiters;
};

struct ChangedWaiter : sync::detail::Waiter {
  explicit ChangedWaiter(std::shared_ptr<Cursor> c) : cursor(std::move(c)) {}
  std::shared_ptr<Cursor> cursor;
  std::uint64_t previous = 0;  // the cursor before the wake-up marked the new version seen
  std::tuple<boost::system::error_code> take_results() { return {ec}; }
  bool revoke(WaitState&, ReadyList&) override {
    cursor->seen = previous;
    return true;
  }
  // Marks `version` seen. Under `mu`.
  void see(std::uint64_t version) {
    previous = cursor->seen;
    cursor->seen = version;
  }
};

// Completes the receivers of `list` whose cursor is `cursor` with Errc::closed. Under `mu`.
inline void close_waiters_of(WaitList& list, const Cursor* cursor, ReadyList& ready) {
  for (auto* w = list.front(); w != nullptr;) {
    auto* next = w->next_waiter;
    if (static_cast<ChangedWaiter*>(w)->cursor.get() == cursor) {
      list.remove(w);
      w->ec = Errc::closed;
      ready.add(w);
    }
    w = next;
  }
}

}  // namespace detail

// A read lock on the current value (Receiver::borrow). While one is held, send() waits: do not
// send from the thread that holds it, and hold it briefly.
template <class T>
class Ref {
 public:
  const T& operator*() const { return *value_; }
  const T* operator->() const { return value_; }

 private:
  template <class U>
  friend class Receiver;
  template <class U>
  friend class Sender;
  Ref(std::shared_lock<std::shared_mutex> lock, const T& value)
      : lock_(std::move(lock)), value_(&value) {}
  std::shared_lock<std::shared_mutex> lock_;
  const T* value_;
};

template <class T>
class Sender;

// A watcher of the value. Copyable: a copy is a new receiver that has seen what this one saw.
// Operations may be called from any thread, one at a time per Receiver object.
template <class T>
class Receiver {
 public:
  Receiver(const Receiver& other)
      : state_(other.state_), cursor_(std::make_shared<detail::Cursor>()) {
    std::lock_guard lock(state_->mu);
    cursor_->seen = other.cursor_->seen;
    ++state_->receivers;
  }
  Receiver(Receiver&&) noexcept = default;
  Receiver& operator=(Receiver other) noexcept {
    std::swap(state_, other.state_);
    std::swap(cursor_, other.cursor_);
    return *this;
  }
  ~Receiver() { release(); }

  // Waits until the value has a version newer than the last one this receiver saw, and marks it
  // seen. Completes at once if such a version exists already. Completes with void(error_code):
  // success; Errc::closed once the sender is gone (and every version was seen);
  // operation_aborted if cancelled. Cancellation-safe: a cancelled wait marks nothing seen, even
  // when it raced with the send that woke it. Intermediate versions may be skipped: a watcher
  // sees the latest value, not every value.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_changed(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [](auto handler, std::shared_ptr<detail::State<T>> state,
           std::shared_ptr<detail::Cursor> cursor) {
          auto* s = state.get();
          sync::detail::start_wait<detail::ChangedWaiter>(
              std::move(handler), std::move(state),
              [s](detail::ChangedWaiter& w, detail::ReadyList&) -> detail::WaitList* {
                if (s->version > w.cursor->seen) {
                  w.see(s->version);
                  return nullptr;
                }
                if (!s->sender_alive) {
                  w.ec = Errc::closed;
                  return nullptr;
                }
                return &s->waiters;
              },
              std::move(cursor));
        },
        token, state_, cursor_);
  }

  // The current value, read-locked (does not mark it seen).
  Ref<T> borrow() const { return Ref<T>(std::shared_lock(state_->value_mu), state_->value); }
  // The current value, read-locked, marked seen.
  Ref<T> borrow_and_update() {
    std::shared_lock value_lock(state_->value_mu);
    {
      std::lock_guard lock(state_->mu);
      cursor_->seen = state_->version;
    }
    return Ref<T>(std::move(value_lock), state_->value);
  }
  // A copy of the current value (does not mark it seen).
  T get() const {
    std::shared_lock lock(state_->value_mu);
    return state_->value;
  }
  // Whether a version newer than the last seen exists.
  bool has_changed() const {
    std::lock_guard lock(state_->mu);
    return state_->version > cursor_->seen;
  }

 private:
  friend class Sender<T>;
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel(U initial);
  Receiver(std::shared_ptr<detail::State<T>> state, std::uint64_t seen)
      : state_(std::move(state)), cursor_(std::make_shared<detail::Cursor>()) {
    cursor_->seen = seen;
  }

  void release() {
    if (!state_) return;
    detail::ReadyList ready;
    std::lock_guard lock(state_->mu);
    --state_->receivers;
    detail::close_waiters_of(state_->waiters, cursor_.get(), ready);
  }

  std::shared_ptr<detail::State<T>> state_;
  std::shared_ptr<detail::Cursor> cursor_;
};

// The single writer of the value. Move-only; destroying it closes the channel (receivers'
// async_changed fails with Errc::closed once they have seen the last version).
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

  // Replaces the value, makes a new version and wakes every waiting receiver. Never blocks
  // (beyond the value's write lock, see Ref). Works with no receivers too.
  void send(T value) {
    send_modify([&value](T& current) { current = std::move(value); });
  }
  // Modifies the value in place under its write lock, then makes a new version as send() does.
  // `modify` must not use the channel.
  template <class F>
  void send_modify(F&& modify) {
    detail::ReadyList ready;
    std::unique_lock value_lock(state_->value_mu);
    std::forward<F>(modify)(state_->value);
    std::lock_guard lock(state_->mu);
    ++state_->version;
    while (auto* w = static_cast<detail::ChangedWaiter*>(state_->waiters.pop_front())) {
      w->see(state_->version);
      ready.add(w);
    }
  }
  // The current value, read-locked.
  Ref<T> borrow() const { return Ref<T>(std::shared_lock(state_->value_mu), state_->value); }
  // A new receiver that has seen the current version.
  Receiver<T> subscribe() const {
    std::lock_guard lock(state_->mu);
    ++state_->receivers;
    return Receiver<T>(state_, state_->version);
  }
  std::size_t receiver_count() const {
    std::lock_guard lock(state_->mu);
    return state_->receivers;
  }

 private:
  template <class U>
  friend std::pair<Sender<U>, Receiver<U>> channel(U initial);
  explicit Sender(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  void release() {
    if (!state_) return;
    {
      detail::ReadyList ready;
      std::lock_guard lock(state_->mu);
      state_->sender_alive = false;
      ready.claim_all(state_->waiters, Errc::closed);
    }
    state_.reset();
  }

  std::shared_ptr<detail::State<T>> state_;
};

// Creates a watch channel holding `initial`, which its first receiver has seen.
template <class T>
std::pair<Sender<T>, Receiver<T>> channel(T initial) {
  auto state = std::make_shared<detail::State<T>>(std::move(initial));
  return {Sender<T>(state), Receiver<T>(state, state->version)};
}

}  // namespace trellis::sync::watch
