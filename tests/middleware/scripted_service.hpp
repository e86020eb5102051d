// An Echo service whose failures are scripted by request metadata, for retry and hedging tests.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <map>
#include <mutex>
#include <string>

#include "fixture.hpp"
#include "trellis/testing/echo.trellis.h"
#include "trellis/timer.hpp"

namespace trellis::testing {

// Every attempt of a call carries the same metadata; the service counts attempts per "x-key":
//   x-fail-first: N      attempts 1..N fail with x-code (default UNAVAILABLE)
//   x-code: C            the status code of those failures
//   x-pushback: V        failures carry the trailer grpc-retry-pushback-ms: V
//   x-header: 1          failures send a response header first (the call is then committed)
//   x-slow-first: 1      attempt 1 waits (cancellably) for 60 s before answering
// Both methods behave the same (IdempotentEcho is the one declared IDEMPOTENT).
class ScriptedService final : public EchoService {
 public:
  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    return serve(ctx, req);
  }
  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest& req) override {
    return serve(ctx, req);
  }

  int attempts(const std::string& key) {
    std::lock_guard lock(mu_);
    return attempts_[key];
  }
  int total_attempts() {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [k, v] : attempts_) n += v;
    return n;
  }
  int cancelled() {
    std::lock_guard lock(mu_);
    return cancelled_;
  }

 private:
  static int number(const Metadata& md, std::string_view key, int fallback) {
    auto v = md.get(key);
    return v ? std::stoi(std::string(*v)) : fallback;
  }

  Task<Result<EchoResponse>> serve(ServerContext& ctx, const EchoRequest& req) {
    const Metadata& md = ctx.request_metadata();
    std::string key(md.get("x-key").value_or(""));
    int attempt;
    {
      std::lock_guard lock(mu_);
      attempt = ++attempts_[key];
    }
    if (attempt == 1 && md.contains("x-slow-first")) {
      auto [ec] = co_await sleep_for(std::chrono::seconds(60), boost::asio::as_tuple(use_task));
      if (ec) {
        std::lock_guard lock(mu_);
        ++cancelled_;
        co_return Status::cancelled("attempt 1 cancelled");
      }
    }
    if (attempt <= number(md, "x-fail-first", 0)) {
      if (auto pushback = md.get("x-pushback")) {
        ctx.add_trailing_metadata("grpc-retry-pushback-ms", std::string(*pushback));
      }
      if (md.contains("x-header")) ctx.add_initial_metadata("x-committed", "1");
      co_return Status(static_cast<StatusCode>(number(md, "x-code", 14)),
                       "scripted failure of attempt " + std::to_string(attempt));
    }
    EchoResponse resp;
    resp.set_message(req.message() + " after " + std::to_string(attempt));
    co_return resp;
  }

  std::mutex mu_;
  std::map<std::string, int> attempts_;
  int cancelled_ = 0;
};

// A server with a ScriptedService only, and calls scripted by metadata.
class ScriptedTest : public MiddlewareTest {
 protected:
  void SetUp() override {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    server_ = start_other(scripted_);
    ASSERT_NE(server_, nullptr);
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(server_->port()));
  }

  // Calls IdempotentEcho (or Echo) through `channel` with the script `md` under key `key`.
  Result<EchoResponse> call(const Channel& channel, const std::string& key, Metadata md,
                            bool idempotent = true) {
    CallOptions options;
    options.set_timeout(std::chrono::seconds(30)).add_metadata("x-key", key);
    for (const auto& [k, v] : md) options.add_metadata(k, v);
    EchoClient client(channel);
    EchoRequest req = with_message(key);
    return run(idempotent ? client.IdempotentEcho(req, options) : client.Echo(req, options));
  }

  ScriptedService scripted_;
};

}  // namespace trellis::testing
