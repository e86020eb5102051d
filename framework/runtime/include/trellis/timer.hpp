// Runtime-owned timers: sleep_for / sleep_until as Asio asynchronous operations.
#pragma once

#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <utility>

#include "trellis/detail/completion_handler.hpp"
#include "trellis/executor.hpp"
#include "trellis/task.hpp"

namespace trellis {

namespace detail {

// A timer entry in a worker's timer heap. Scheduled, fired and cancelled on the worker thread.
// It is also the runnable that fires it with operation_aborted, so that a cancellation or a
// stopping runtime completes it from the worker's queue without allocating.
class TimerOp : public Runnable {
 public:
  std::chrono::steady_clock::time_point deadline;
  Worker* worker = nullptr;
  std::size_t heap_index = 0;  // maintained by the worker's heap
  // Completes the timer with `ec` (and frees it if it owns itself).
  virtual void fire(boost::system::error_code ec) = 0;
  // As a queued runnable: fires with operation_aborted. (discard(), from Runnable: frees the op
  // without completing it, at runtime teardown.)
  void run() final { fire(boost::asio::error::operation_aborted); }

 protected:
  ~TimerOp() = default;
};

void schedule_timer(TimerOp* op);
// Schedules `op` on its worker unless that runtime is stopping; returns whether it did. For
// timers embedded in other objects, which cannot be fired after the fact as schedule_timer does
// while the runtime stops. Worker thread only.
bool try_schedule_timer(TimerOp* op);
// Removes `op` from its worker's heap if it is still there; returns whether it was.
bool unschedule_timer(TimerOp* op);
// Reports a timer cancelled from a thread that is not its worker's (see TimerOpImpl::Cancel).
void report_foreign_timer_cancel() noexcept;

template <class Handler>
class TimerOpImpl final : public TimerOp {
 public:
  explicit TimerOpImpl(Handler h) : handler(std::move(h)) {}

  void start() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<Cancel>(this);
    schedule_timer(this);
  }
  void fire(boost::system::error_code ec) override { complete_op(this, worker, ec); }
  void discard() override {
    take_handler(handler);
    delete this;
  }

  Handler handler;
  std::atomic<bool> completed{false};  // for complete_op

 private:
  // Runs where the handler's cancellation is signalled: the timer's worker, whose heap it owns.
  // The timer completes from the worker's queue, never inside the signal's emit().
  struct Cancel {
    explicit Cancel(TimerOpImpl* op) : op(op) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type == boost::asio::cancellation_type::none) return;
      // A handler whose executor does not run on the timer's worker cannot cancel it: the heap
      // belongs to that thread. sleep_until only serves handlers on a worker, so this is a bug.
      if (!running_in(op->worker)) return report_foreign_timer_cancel();
      if (unschedule_timer(op)) post(op->worker, op);
    }
    TimerOpImpl* op;
  };
};

}  // namespace detail

// A timer entry of a runtime worker's timer heap that lives inside its owner, so arming it
// allocates nothing: for code that needs a deadline without a coroutine waiting on it, such as a
// layer's time limit on a call (TimeoutLayer). Derive from it and implement expired().
//
// Threads: arm() on a runtime worker; expired() then runs on that worker, and disarm(), a new
// arm() and the destructor must run there too.
class WorkerTimer {
 public:
  WorkerTimer() = default;
  WorkerTimer(const WorkerTimer&) = delete;
  WorkerTimer& operator=(const WorkerTimer&) = delete;

  // Schedules the timer on the calling worker to expire at `deadline` (an armed timer moves).
  // False, and not armed, when the calling thread is not a runtime worker or its runtime is
  // stopping (a stopping runtime cancels its calls and timers itself).
  bool arm(std::chrono::steady_clock::time_point deadline);
  // Takes the timer out of the heap; expired() will not be called. No effect when not armed.
  void disarm();
  bool armed() const { return armed_; }

 protected:
  ~WorkerTimer() { disarm(); }
  // Called on the worker once `deadline` has passed; the timer is no longer armed.
  virtual void expired() = 0;

 private:
  class Entry final : public detail::TimerOp {
   public:
    explicit Entry(WorkerTimer* owner) : owner_(owner) {}
    void fire(boost::system::error_code ec) override {
      owner_->armed_ = false;
      if (!ec) owner_->expired();
    }
    void discard() override { owner_->armed_ = false; }

   private:
    WorkerTimer* owner_;
  };

  Entry entry_{this};
  bool armed_ = false;
};

// Completes at `deadline` with no error, or earlier with boost::asio::error::operation_aborted
// when the handler's cancellation slot is signalled (any cancellation type) or the runtime shuts
// down. The timer lives on the Trellis worker of the handler's executor; await it from a task
// running on a Trellis runtime (elsewhere it fails with operation_not_supported). With the default
// token this returns a Task<void> that throws boost::system::system_error on cancellation, so
// `co_await (rpc() || sleep_for(1s))` works.
template <class Token = boost::asio::use_awaitable_t<>>
auto sleep_until(std::chrono::steady_clock::time_point deadline, Token&& token = {}) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
      [](auto handler, std::chrono::steady_clock::time_point deadline) {
        using H = decltype(handler);
        auto ex = boost::asio::get_associated_executor(handler);
        detail::Worker* worker = detail::worker_for(ex);
        if (worker == nullptr) {
          // Not on a Trellis runtime: there is no timer heap to wait on.
          boost::asio::post(ex, [h = std::move(handler)]() mutable {
            std::move(h)(boost::asio::error::operation_not_supported);
          });
          return;
        }
        auto* op = new detail::TimerOpImpl<H>(std::move(handler));
        op->deadline = deadline;
        op->worker = worker;
        if (detail::running_in(worker)) {
          op->start();
        } else {
          detail::post(worker, detail::make_runnable([op] { op->start(); }));
        }
      },
      token, deadline);
}

// sleep_until(now + duration).
template <class Rep, class Period, class Token = boost::asio::use_awaitable_t<>>
auto sleep_for(std::chrono::duration<Rep, Period> duration, Token&& token = {}) {
  return sleep_until(std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(duration),
                     std::forward<Token>(token));
}

}  // namespace trellis
