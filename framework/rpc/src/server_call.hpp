// Internal: what every kind of server call object shares, whichever transport carries the call.
#pragma once

#include <atomic>
#include <boost/asio/cancellation_type.hpp>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "log.hpp"
#include "trellis/server_context.hpp"
#include "trellis/status.hpp"
#include "worker.hpp"

namespace trellis::detail {

// Counts of the objects a server's shutdown waits for (call objects, connections), and the wait.
// Counting is lock-free until a count may reach zero: that decrement is made under the mutex the
// waiter checks the counts under, so the waiter cannot see zero, and destroy the counts' owner,
// before the last decrementer is done with it. Any thread.
class LiveCounts {
 public:
  static void created(std::atomic<int>& count) { count.fetch_add(1, std::memory_order_relaxed); }
  void destroyed(std::atomic<int>& count) {
    int n = count.load(std::memory_order_relaxed);
    while (n > 1) {
      if (count.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) return;
    }
    std::lock_guard lock(mu_);
    if (count.fetch_sub(1, std::memory_order_acq_rel) == 1) cv_.notify_all();
  }
  // Waits until `done()` (a condition on the counts) holds, or `timeout` has passed.
  template <class Done>
  void wait(Done done, std::chrono::milliseconds timeout = std::chrono::milliseconds::max()) {
    std::unique_lock lock(mu_);
    if (timeout == std::chrono::milliseconds::max()) {
      cv_.wait(lock, done);
    } else {
      cv_.wait_for(lock, timeout, done);
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

// The status a call ends with when its handler's task has completed with `error` or `status`.
// An exception is logged and answered INTERNAL with a generic message (the client must not see
// server internals), or CANCELLED when it came from the call's own cancellation.
inline Status handler_outcome(const std::exception_ptr& error, Status status,
                              const ServerContext& ctx) {
  if (!error) return status;
  if (ctx.is_cancelled()) return Status::cancelled("call cancelled");
  log(LogLevel::kError,
      absl::StrCat("handler of ", std::string(ctx.method()), " threw: ", exception_text(error)));
  return Status::internal("internal error");
}

// Marks the context cancelled and emits the terminal cancellation to the handler's task. On the
// call's worker, where the task's cancellation is signalled. What the handler awaits is not
// resumed inside emit(): every operation's cancellation handler only cancels or posts.
inline void cancel_handler(ServerContext& ctx) {
  ServerContextAccess::mark_cancelled(ctx);
  ServerContextAccess::signal(ctx).emit(boost::asio::cancellation_type::terminal);
}

// A ServerContext::cancel_with made on another thread than the call's worker, from the moment it
// is made until the worker acts on it. The handler may return meanwhile (its reads can complete
// before the posted cancellation runs): the call takes the request before it sends the
// handler's outcome, so that the cancellation wins, as cancel_with promises. One pointer per
// call; the status lives on the heap only while a request is pending.
class CancelRequest {
 public:
  CancelRequest() = default;
  CancelRequest(const CancelRequest&) = delete;
  CancelRequest& operator=(const CancelRequest&) = delete;
  ~CancelRequest() { delete status_.load(std::memory_order_acquire); }

  // Any thread. A request made while one is pending is dropped: the first cancellation wins.
  void request(Status status) {
    auto* requested = new Status(std::move(status));
    Status* none = nullptr;
    if (!status_.compare_exchange_strong(none, requested, std::memory_order_acq_rel)) {
      delete requested;
    }
  }
  // On the call's worker: the pending request's status, which is then no longer pending.
  std::optional<Status> take() {
    if (status_.load(std::memory_order_relaxed) == nullptr) return std::nullopt;
    std::unique_ptr<Status> requested(status_.exchange(nullptr, std::memory_order_acq_rel));
    if (requested == nullptr) return std::nullopt;
    return std::move(*requested);
  }

 private:
  std::atomic<Status*> status_{nullptr};
};

// How a call object runs ServerContext::cancel_with from any thread: on its worker, at once when
// called there; else `ctx` is marked cancelled at once (is_cancelled() is true from then on, on
// every thread), the status recorded in `request`, and the cancellation posted. The call takes a
// recorded request before it sends a handler's outcome (CancelRequest); the object stays alive
// until a posted one has run (pending_posts() is part of its condition to free itself).
template <class Call>
void run_cancel_with(Call* call, Worker* worker, std::atomic<int>& pending, ServerContext& ctx,
                     CancelRequest& request, Status status) {
  if (worker->in_this_thread()) {
    call->cancel_now(std::move(status));
    return;
  }
  // Pinned before the request is visible: a worker that takes the request (acquire) then sees
  // the pin too, and does not free the call under the post below.
  pending.fetch_add(1, std::memory_order_relaxed);
  ServerContextAccess::mark_cancelled(ctx);
  request.request(std::move(status));
  worker->post(make_runnable([call, &pending, &request] {
    pending.fetch_sub(1, std::memory_order_relaxed);
    if (std::optional<Status> status = request.take()) call->cancel_now(std::move(*status));
    call->maybe_free();
  }));
}

}  // namespace trellis::detail
