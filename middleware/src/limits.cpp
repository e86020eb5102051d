// The limit layers: ConcurrencyLimiter's waiter queue, the wait for a permit within the call's
// deadline, and RateLimiter's token bucket.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/system_executor.hpp>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "trellis/middleware/concurrency_limit.hpp"
#include "trellis/middleware/load_shed.hpp"
#include "trellis/middleware/rate_limit.hpp"
#include "trellis/runtime.hpp"
#include "trellis/timer.hpp"

namespace trellis {

ConcurrencyLimiter::ConcurrencyLimiter(std::size_t max_in_flight, std::size_t max_waiting)
    : max_in_flight_(max_in_flight),
      max_waiting_(max_waiting),
      available_(static_cast<std::int64_t>(
          std::min<std::size_t>(max_in_flight, std::numeric_limits<std::int64_t>::max()))) {}

ConcurrencyLimiter::~ConcurrencyLimiter() {
  std::lock_guard lock(mu_);
  while (head_ != nullptr) {
    Waiter* w = head_;
    head_ = w->next;
    w->queued = false;
    w->finish(boost::asio::error::operation_aborted);
  }
  tail_ = nullptr;
}

boost::asio::any_io_executor ConcurrencyLimiter::calling_executor() {
  if (detail::Worker* w = detail::current_worker()) return Executor(w);
  return boost::asio::system_executor();
}

void ConcurrencyLimiter::release() noexcept {
  available_.fetch_add(1, std::memory_order_seq_cst);
  // Pairs with enqueue(), which counts itself in waiting_ before it retries take_permit(): in
  // the single total order of these seq_cst operations either that retry sees this permit, or
  // this load sees the waiter and the loop below (under the same mutex) grants it.
  if (waiting_.load(std::memory_order_seq_cst) == 0) return;
  Waiter* granted = nullptr;
  {
    std::lock_guard lock(mu_);
    if (head_ != nullptr && take_permit()) {
      granted = head_;
      head_ = granted->next;
      if (head_ != nullptr) {
        head_->prev = nullptr;
      } else {
        tail_ = nullptr;
      }
      granted->queued = false;
      waiting_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  // Posted to the waiter's executor, so no lock is held while anything resumes.
  if (granted != nullptr) granted->finish({});
}

void ConcurrencyLimiter::enqueue(Waiter* w) {
  boost::system::error_code ec;
  {
    std::lock_guard lock(mu_);
    if (waiting_.load(std::memory_order_relaxed) >= max_waiting_) {
      ec = boost::asio::error::no_buffer_space;
    } else {
      waiting_.fetch_add(1, std::memory_order_seq_cst);
      // Only take a free permit when nobody is ahead in the queue (FIFO among waiters).
      if (head_ == nullptr && take_permit()) {
        waiting_.fetch_sub(1, std::memory_order_seq_cst);
      } else {
        w->queued = true;
        w->prev = tail_;
        w->next = nullptr;
        if (tail_ != nullptr) {
          tail_->next = w;
        } else {
          head_ = w;
        }
        tail_ = w;
        return;
      }
    }
  }
  w->finish(ec);
}

bool ConcurrencyLimiter::remove(Waiter* w) {
  std::lock_guard lock(mu_);
  if (!w->queued) return false;
  if (w->prev != nullptr) {
    w->prev->next = w->next;
  } else {
    head_ = w->next;
  }
  if (w->next != nullptr) {
    w->next->prev = w->prev;
  } else {
    tail_ = w->prev;
  }
  w->queued = false;
  waiting_.fetch_sub(1, std::memory_order_seq_cst);
  return true;
}

namespace detail {

namespace {

Status deadline_exceeded_waiting() {
  return Status::deadline_exceeded("deadline exceeded while waiting for a concurrency permit");
}

}  // namespace

Task<Status> wait_for_permit(ConcurrencyLimiter& limiter, const Call& call) {
  std::optional<std::chrono::system_clock::time_point> deadline = call.deadline();
  boost::system::error_code ec;
  if (!deadline) {
    std::tie(ec) = co_await limiter.async_acquire(boost::asio::as_tuple(use_task));
  } else {
    auto remaining = *deadline - std::chrono::system_clock::now();
    if (remaining <= std::chrono::system_clock::duration::zero()) {
      co_return deadline_exceeded_waiting();
    }
    auto until = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
    // Both operations always complete; the one that finishes first cancels the other. A permit
    // granted just as the timer fired is still a permit: the call then proceeds.
    auto [order, acquired, timer] =
        co_await boost::asio::experimental::make_parallel_group(
            limiter.async_acquire(boost::asio::deferred), sleep_until(until, boost::asio::deferred))
            .async_wait(boost::asio::experimental::wait_for_one(), use_task);
    (void)order;
    if (!acquired) co_return Status();
    if (acquired == boost::asio::error::operation_aborted && !timer) {
      co_return deadline_exceeded_waiting();
    }
    ec = acquired;
  }
  if (!ec) co_return Status();
  if (ec == boost::asio::error::no_buffer_space) {
    co_return Status::resource_exhausted(
        absl::StrCat("concurrency limit of ", limiter.max_in_flight(),
                     " reached and too many calls are already waiting"));
  }
  // Cancelled from outside: the client went away, or the server cancelled the handler because
  // its deadline passed, or the caller's task was aborted.
  if (deadline && std::chrono::system_clock::now() >= *deadline) {
    co_return deadline_exceeded_waiting();
  }
  co_return Status::cancelled("cancelled while waiting for a concurrency permit");
}

Status shed_status(StatusCode code, std::size_t max_in_flight) {
  return Status(code, absl::StrCat("load shed: ", max_in_flight, " calls already in flight"));
}

Status rate_limited_status(const RateLimiter& limiter, StatusCode code) {
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(limiter.time_to_next());
  return Status(code, absl::StrCat("rate limited: next call allowed in ", wait.count(), " ms"));
}

}  // namespace detail

namespace {

constexpr std::int64_t kMaxNs = std::numeric_limits<std::int64_t>::max() / 4;

}  // namespace

RateLimiter::RateLimiter(double per_second, std::uint32_t burst, Clock clock)
    : clock_(clock), burst_(std::max<std::uint32_t>(burst, 1)) {
  double interval = per_second > 0 ? 1e9 / per_second : static_cast<double>(kMaxNs);
  interval_ns_ = static_cast<std::int64_t>(
      std::clamp(std::ceil(interval), 1.0, static_cast<double>(kMaxNs) / burst_));
  window_ns_ = interval_ns_ * burst_;
  // Full bucket: the next arrival may come now.
  tat_.store(now_ns() - window_ns_, std::memory_order_relaxed);
}

std::int64_t RateLimiter::now_ns() const noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_().time_since_epoch()).count();
}

// GCRA: each admitted call pushes the theoretical arrival time (tat) one interval further; a call
// is admitted while tat stays within `window` of now, i.e. while the bucket has a token.
bool RateLimiter::try_acquire() noexcept {
  std::int64_t now = now_ns();
  std::int64_t tat = tat_.load(std::memory_order_relaxed);
  while (true) {
    std::int64_t next = std::max(tat, now - window_ns_) + interval_ns_;
    if (next - now > 0) return false;
    if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) return true;
  }
}

std::uint32_t RateLimiter::available() const noexcept {
  std::int64_t now = now_ns();
  std::int64_t tat = std::max(tat_.load(std::memory_order_relaxed), now - window_ns_);
  // Each interval of room between tat and now is one token.
  return static_cast<std::uint32_t>((now - tat) / interval_ns_);
}

std::chrono::nanoseconds RateLimiter::time_to_next() const noexcept {
  std::int64_t now = now_ns();
  std::int64_t tat = tat_.load(std::memory_order_relaxed);
  std::int64_t wait = tat + interval_ns_ - now;
  return std::chrono::nanoseconds(std::max<std::int64_t>(wait, 0));
}

Task<std::optional<Status>> ConcurrencyLimitLayer::wait(Call& call, State& permit) const {
  Status waited = co_await detail::wait_for_permit(*limiter_, call);
  if (!waited.ok()) co_return waited;
  permit.hold(limiter_.get());
  co_return std::nullopt;
}

}  // namespace trellis
