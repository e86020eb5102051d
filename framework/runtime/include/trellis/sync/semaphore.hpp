// trellis::sync::Semaphore: an async counting semaphore with FIFO fairness
// (tokio::sync::Semaphore).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>
#include <tuple>
#include <utility>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync {

namespace detail {
class SemaphoreState;
struct AcquireWaiter;
}  // namespace detail

// Permits acquired from a Semaphore, given back when destroyed. Move-only. An empty permit (a
// failed try_acquire, a moved-from permit) holds nothing. Keeps the semaphore's state alive, so
// it may outlive the Semaphore.
class SemaphorePermit {
 public:
  SemaphorePermit() noexcept = default;
  SemaphorePermit(SemaphorePermit&& other) noexcept
      : state_(std::move(other.state_)), count_(std::exchange(other.count_, 0)) {}
  SemaphorePermit& operator=(SemaphorePermit&& other) noexcept;
  ~SemaphorePermit() { release(); }

  // Whether it holds permits.
  explicit operator bool() const noexcept { return state_ != nullptr; }
  std::size_t count() const noexcept { return count_; }
  // Gives the permits back now (no effect when empty).
  void release();
  // Drops the permits without giving them back: the semaphore has that many fewer.
  void forget() noexcept {
    state_.reset();
    count_ = 0;
  }

 private:
  friend class Semaphore;
  friend class detail::SemaphoreState;
  friend struct detail::AcquireWaiter;
  SemaphorePermit(std::shared_ptr<detail::SemaphoreState> state, std::size_t count) noexcept
      : state_(std::move(state)), count_(count) {}

  std::shared_ptr<detail::SemaphoreState> state_;
  std::size_t count_ = 0;
};

namespace detail {

class SemaphoreState final : public WaitState, public std::enable_shared_from_this<SemaphoreState> {
 public:
  explicit SemaphoreState(std::size_t p) : permits(p) {}
  // Grants permits to the waiters at the head of the queue, in order, while there are enough.
  // Under `mu`.
  void grant(ReadyList& ready);
  // A permit for `n` permits (which the caller has taken).
  SemaphorePermit make_permit(std::size_t n);

  std::size_t permits;
  bool closed = false;
  WaitList waiters;

 protected:
  // A cancelled head waiter may have held back smaller requests behind it.
  void after_cancel(ReadyList& ready) override { grant(ready); }
};

struct AcquireWaiter : Waiter {
  explicit AcquireWaiter(std::size_t n) : wanted(n) {}
  std::size_t wanted;
  SemaphorePermit permit;  // filled when granted; gives the permits back if never delivered
  std::tuple<boost::system::error_code, SemaphorePermit> take_results() {
    return {ec, std::move(permit)};
  }
  bool revoke(WaitState& state, ReadyList& ready) override;
};

WaitList* semaphore_try_acquire(SemaphoreState& state, AcquireWaiter& w);

}  // namespace detail

// A counting semaphore for tasks on any worker. Requests are served in FIFO order: a request
// for more permits than are available holds back later, smaller ones, so it is never starved.
class Semaphore {
 public:
  explicit Semaphore(std::size_t permits);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  // Closes the semaphore (see close()). Permits already acquired stay valid.
  ~Semaphore();

  // Acquires `n` permits, waiting until they are available and every earlier request was served.
  // Completes with void(error_code, SemaphorePermit): the permits; Errc::closed (and an empty
  // permit) if the semaphore is closed; operation_aborted if cancelled. Cancellation-safe: a
  // cancelled acquire holds no permits, even when it raced with the release that granted them
  // (they go back to the semaphore). An acquire of 0 permits completes at once.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_acquire(std::size_t n = 1, Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, SemaphorePermit)>(
        [](auto handler, std::shared_ptr<detail::SemaphoreState> state, std::size_t n) {
          auto* s = state.get();
          detail::start_wait<detail::AcquireWaiter>(
              std::move(handler), std::move(state),
              [s](detail::AcquireWaiter& w, detail::ReadyList&) {
                return detail::semaphore_try_acquire(*s, w);
              },
              n);
        },
        token, state_, n);
  }
  // Acquires `n` permits if they are available now and nobody waits; else an empty permit.
  SemaphorePermit try_acquire(std::size_t n = 1);
  // Adds `n` permits (waking waiters).
  void add_permits(std::size_t n);
  std::size_t available_permits() const;
  // Fails pending and later acquires with Errc::closed.
  void close();

 private:
  std::shared_ptr<detail::SemaphoreState> state_;
};

}  // namespace trellis::sync
