// trellis::TimeoutLayer: a time limit on calls, as a gRPC deadline.
#pragma once

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/this_coro.hpp>
#include <chrono>
#include <memory>

#include "trellis/layer.hpp"
#include "trellis/timer.hpp"

namespace trellis {

namespace detail {

// The timer of one server call under a TimeoutLayer. Shared by the call's layer frame and the
// timer's completion handler: whichever of "the handler returned" and "the time is up" comes
// second finds the other done. Both run on the call's worker.
class ServerTimeout {
 public:
  explicit ServerTimeout(ServerContext* ctx) : ctx_(ctx) {}
  // Time is up: cancel the handler the way a client cancellation does.
  void expire(boost::system::error_code ec);
  // The handler returned: stop the timer; the context is not touched after this.
  void disarm();
  bool expired() const { return expired_; }
  boost::asio::cancellation_slot timer_slot() { return timer_cancel_.slot(); }

 private:
  ServerContext* ctx_;
  bool expired_ = false;
  boost::asio::cancellation_signal timer_cancel_;
};

// The status a timed-out server call answers.
Status deadline_exceeded_by_layer();

}  // namespace detail

// Limits how long a call may take. The same layer works on both sides:
//
//  - Client: the call's deadline becomes now + timeout when that is earlier than the deadline it
//    has (CallOptions, or one inherited from a parent handler). gRPC sends it to the server as
//    `grpc-timeout`; when it passes, the call ends DEADLINE_EXCEEDED. Put it outside a retry
//    layer to bound all attempts together, inside to bound each attempt.
//  - Server: the handler gets at most `timeout`, or less when the client's deadline is earlier.
//    When the time is up the handler is cancelled (what it awaits completes with
//    operation_aborted, ServerContext::is_cancelled() turns true) and the client gets
//    DEADLINE_EXCEEDED, not CANCELLED. The tightened deadline is what ServerContext::deadline()
//    reports, so calls the handler makes with CallOptions::set_parent inherit it.
//
// Without any layer, a server already enforces the client's own deadline: the handler is
// cancelled when it passes, and the client's call ends DEADLINE_EXCEEDED.
class TimeoutLayer {
 public:
  explicit TimeoutLayer(std::chrono::nanoseconds timeout) : timeout_(timeout) {}

  template <CallService S>
  class Service {
   public:
    Service(std::chrono::nanoseconds timeout, S inner)
        : timeout_(timeout), inner_(std::move(inner)) {}

    Task<Status> operator()(Call& call) const {
      auto deadline = std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout_);
      if (call.is_client()) {
        auto current = call.deadline();
        if (!current || deadline < *current) call.options()->set_deadline(deadline);
        co_return co_await inner_(call);
      }
      ServerContext& ctx = *call.server_context();
      // gRPC enforces the client's deadline by itself; the layer only adds an earlier one.
      if (ctx.deadline() <= deadline) co_return co_await inner_(call);
      ctx.set_deadline(deadline);
      auto timeout = std::make_shared<detail::ServerTimeout>(&ctx);
      auto executor = co_await boost::asio::this_coro::executor;
      sleep_for(timeout_,
                boost::asio::bind_cancellation_slot(
                    timeout->timer_slot(),
                    boost::asio::bind_executor(executor, [timeout](boost::system::error_code ec) {
                      timeout->expire(ec);
                    })));
      Status status;
      try {
        status = co_await inner_(call);
      } catch (...) {
        timeout->disarm();
        // What the handler threw because its time ran out is the timeout, not an error.
        if (timeout->expired()) co_return detail::deadline_exceeded_by_layer();
        throw;
      }
      timeout->disarm();
      if (timeout->expired()) co_return detail::deadline_exceeded_by_layer();
      co_return status;
    }

   private:
    std::chrono::nanoseconds timeout_;
    S inner_;
  };

  template <CallService S>
  Service<S> wrap(S inner) const {
    return Service<S>(timeout_, std::move(inner));
  }

 private:
  std::chrono::nanoseconds timeout_;
};

}  // namespace trellis
