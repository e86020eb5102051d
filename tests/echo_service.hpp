// The Trellis implementation of trellis.testing.Echo used by the end-to-end tests.
#pragma once

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <chrono>

#include "absl/synchronization/notification.h"
#include "trellis/testing/echo.trellis.h"
#include "trellis/timer.hpp"

namespace trellis::testing {

// What the handlers observed, for tests to assert on.
struct EchoObservations {
  // A delayed handler's wait was cut short. Notified by the first such handler: a test whose
  // deadline grows over attempts (with_growing_timeout) may leave more than one.
  absl::Notification handler_cancelled;
  std::atomic<bool> cancellation_seen{false};
  std::atomic<bool> saw_is_cancelled{false};
  std::atomic<int> calls{0};
};

class EchoImpl final : public EchoService {
 public:
  EchoObservations observed;

  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    observed.calls.fetch_add(1);
    if (req.throw_exception()) throw std::runtime_error("handler exploded on purpose");
    if (req.echo_metadata()) {
      for (const auto& [k, v] : ctx.request_metadata()) {
        if (!k.starts_with("echo-")) continue;
        ctx.add_initial_metadata(k, v);
        ctx.add_trailing_metadata(k, v);
      }
    }
    if (req.delay_ms() > 0) {
      auto [ec] = co_await sleep_for(std::chrono::milliseconds(req.delay_ms()),
                                     boost::asio::as_tuple(use_task));
      if (ec) {
        observed.saw_is_cancelled = ctx.is_cancelled();
        if (!observed.cancellation_seen.exchange(true)) observed.handler_cancelled.Notify();
        co_return Status::cancelled("handler saw the cancellation");
      }
    }
    if (req.status_code() != 0) {
      co_return Status(static_cast<StatusCode>(req.status_code()), req.status_message(),
                       req.status_details());
    }
    EchoResponse resp;
    resp.set_message(req.message());
    auto deadline = ctx.deadline();
    if (deadline == std::chrono::system_clock::time_point::max()) {
      resp.set_remaining_deadline_ms(-1);
    } else {
      resp.set_remaining_deadline_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         deadline - std::chrono::system_clock::now())
                                         .count());
    }
    resp.set_peer(ctx.peer());
    co_return resp;
  }

  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest& req) override {
    return Echo(ctx, req);
  }
};

}  // namespace trellis::testing
