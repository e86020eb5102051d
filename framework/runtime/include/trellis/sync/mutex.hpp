// trellis::sync::Mutex: an async mutual-exclusion lock with FIFO fairness (tokio::sync::Mutex,
// without the protected data).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <tuple>
#include <utility>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync {

namespace detail {
class MutexState;
struct LockWaiter;
}  // namespace detail

// Ownership of a locked Mutex: unlocks it when destroyed. Move-only; an empty guard (a failed
// try_lock, a moved-from guard) owns nothing. Keeps the mutex's state alive, so it may outlive
// the Mutex. May be destroyed on any thread: the lock is not tied to a thread.
class MutexGuard {
 public:
  MutexGuard() noexcept = default;
  MutexGuard(MutexGuard&& other) noexcept = default;
  MutexGuard& operator=(MutexGuard&& other) noexcept;
  ~MutexGuard() { unlock(); }

  // Whether it owns the lock.
  explicit operator bool() const noexcept { return state_ != nullptr; }
  // Unlocks now, handing the lock to the longest waiter (no effect when empty).
  void unlock();

 private:
  friend class Mutex;
  friend class detail::MutexState;
  friend struct detail::LockWaiter;
  explicit MutexGuard(std::shared_ptr<detail::MutexState> state) noexcept
      : state_(std::move(state)) {}

  std::shared_ptr<detail::MutexState> state_;
};

namespace detail {

class MutexState final : public WaitState, public std::enable_shared_from_this<MutexState> {
 public:
  // Hands the lock to the first waiter, or unlocks. Under `mu`, locked.
  void unlock_locked(ReadyList& ready);
  // A guard owning the lock (which the caller has taken).
  MutexGuard make_guard();

  bool locked = false;
  bool closed = false;
  WaitList waiters;
};

struct LockWaiter : Waiter {
  MutexGuard guard;  // filled when the lock is handed over; unlocks if never delivered
  std::tuple<boost::system::error_code, MutexGuard> take_results() {
    return {ec, std::move(guard)};
  }
  bool revoke(WaitState& state, ReadyList& ready) override;
};

WaitList* mutex_try_lock(MutexState& state, LockWaiter& w);

}  // namespace detail

// An asynchronous mutex for tasks on any worker: waiting for it suspends the task, not the
// thread, and the guard may be held across co_await. Waiters get the lock in FIFO order (an
// unlock hands it to the longest waiter directly, so no newcomer barges in).
//
// Differences from tokio::sync::Mutex: it protects no data of its own (guard your data with it),
// and destroying it with tasks waiting completes them with Errc::closed.
class Mutex {
 public:
  Mutex();
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  // Fails pending async_locks with Errc::closed. A guard still held stays valid.
  ~Mutex();

  // Locks, waiting behind the current owner and earlier waiters. Completes with
  // void(error_code, MutexGuard): the guard; Errc::closed (and an empty guard) if the Mutex is
  // destroyed first; operation_aborted if cancelled. Cancellation-safe: a cancelled lock never
  // leaves the mutex locked, even when it raced with the unlock that handed it the lock (the
  // lock goes on to the next waiter).
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_lock(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, MutexGuard)>(
        [](auto handler, std::shared_ptr<detail::MutexState> state) {
          auto* s = state.get();
          detail::start_wait<detail::LockWaiter>(std::move(handler), std::move(state),
                                                 [s](detail::LockWaiter& w, detail::ReadyList&) {
                                                   return detail::mutex_try_lock(*s, w);
                                                 });
        },
        token, state_);
  }
  // Locks if the mutex is free and nobody waits; else returns an empty guard.
  MutexGuard try_lock();
  // Whether it is locked now (for tests and diagnostics).
  bool is_locked() const;

 private:
  std::shared_ptr<detail::MutexState> state_;
};

}  // namespace trellis::sync
