// Runtime-owned timers: sleep_for / sleep_until as Asio asynchronous operations.
#pragma once

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
class TimerOp {
 public:
  std::chrono::steady_clock::time_point deadline;
  Worker* worker = nullptr;
  std::size_t heap_index = 0;  // maintained by the worker's heap
  // Frees the op and completes its handler with `ec`.
  virtual void fire(boost::system::error_code ec) = 0;
  // Frees the op without completing (runtime teardown).
  virtual void discard() = 0;

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

template <class Handler>
class TimerOpImpl final : public TimerOp {
 public:
  explicit TimerOpImpl(Handler h) : handler_(std::move(h)) {}

  void start() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected()) {
      slot.template emplace<Cancel>(this);
    }
    schedule_timer(this);
  }
  void fire(boost::system::error_code ec) override {
    Handler h = take_handler(handler_);
    Worker* w = worker;
    delete this;
    complete(std::move(h), w, ec);
  }
  void discard() override { delete this; }

 private:
  struct Cancel {
    TimerOp* op;
    void operator()(boost::asio::cancellation_type type) {
      if (type == boost::asio::cancellation_type::none) return;
      if (unschedule_timer(op)) op->fire(boost::asio::error::operation_aborted);
    }
  };
  Handler handler_;
};

}  // namespace detail

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
