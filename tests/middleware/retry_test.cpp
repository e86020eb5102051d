// RetryLayer: gRFC A6 retries against a server that fails on purpose, over real loopback calls.
#include "trellis/middleware/retry.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "fixture.hpp"
#include "scripted_service.hpp"
#include "trellis/message_observer.hpp"
#include "trellis/middleware/hedging.hpp"
#include "trellis/middleware/timeout.hpp"
#include "trellis/scoped_layer.hpp"
#include "trellis/stack.hpp"
#include "trellis/testing/streamer.trellis.h"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

RetryPolicy fast_policy(int max_attempts = 3) {
  RetryPolicy policy;
  policy.max_attempts = max_attempts;
  policy.initial_backoff = 1ms;
  policy.max_backoff = 5ms;
  return policy;
}

using RetryTest = ScriptedTest;

TEST_F(RetryTest, RetriesUnavailableUntilItSucceeds) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy(3)));
  auto r = call(retrying, "a", {{"x-fail-first", "2"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "a after 3");
  EXPECT_EQ(scripted_.attempts("a"), 3);
}

TEST_F(RetryTest, StopsAfterMaxAttemptsWithTheLastStatus) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy(4)));
  auto r = call(retrying, "b", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "scripted failure of attempt 4");
  EXPECT_EQ(scripted_.attempts("b"), 4);
}

TEST_F(RetryTest, OnlyRetryableCodesAreRetried) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy()));
  auto r = call(retrying, "c", {{"x-fail-first", "1"}, {"x-code", "3"}});  // INVALID_ARGUMENT
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(scripted_.attempts("c"), 1);

  RetryPolicy policy = fast_policy();
  policy.retryable_codes = {StatusCode::kInvalidArgument};
  auto retried =
      call(channel_.with_layer(RetryLayer(policy)), "c2", {{"x-fail-first", "1"}, {"x-code", "3"}});
  EXPECT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(scripted_.attempts("c2"), 2);
}

TEST_F(RetryTest, MethodsWithoutIdempotencyAreNotRetriedUnlessConfigured) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy()));
  auto r = call(retrying, "d", {{"x-fail-first", "1"}}, /*idempotent=*/false);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("d"), 1);

  RetryPolicy any = fast_policy();
  any.retry_any_method = true;
  auto retried = call(channel_.with_layer(RetryLayer(any)), "d2", {{"x-fail-first", "1"}}, false);
  EXPECT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(scripted_.attempts("d2"), 2);
}

TEST_F(RetryTest, CommittedResponsesAreNotRetried) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy()));
  ResponseMetadata md;
  CallOptions options;
  options.set_timeout(30s)
      .add_metadata("x-key", "e")
      .add_metadata("x-fail-first", "1")
      .add_metadata("x-header", "1")
      .capture_response_metadata(&md);
  auto r = run(EchoClient(retrying).IdempotentEcho(with_message("e"), options));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(md.initial.get("x-committed"), "1");
  EXPECT_EQ(scripted_.attempts("e"), 1);
}

TEST_F(RetryTest, ServerPushbackDelaysOrStopsRetries) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy()));
  auto pushed = call(retrying, "f", {{"x-fail-first", "1"}, {"x-pushback", "1"}});
  EXPECT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(scripted_.attempts("f"), 2);

  for (const char* stop : {"-1", "soon"}) {
    std::string key = std::string("g") + stop;
    auto stopped = call(retrying, key, {{"x-fail-first", "1"}, {"x-pushback", stop}});
    EXPECT_EQ(stopped.status().code(), StatusCode::kUnavailable) << stop;
    EXPECT_EQ(scripted_.attempts(key), 1) << stop;
  }
}

TEST_F(RetryTest, NoRetryThatCouldNotFinishBeforeTheDeadline) {
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy()));
  CallOptions options;
  options.set_timeout(2s)
      .add_metadata("x-key", "h")
      .add_metadata("x-fail-first", "1")
      .add_metadata("x-pushback", "60000");
  auto r = run(EchoClient(retrying).IdempotentEcho(with_message("h"), options));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);  // the server's status, at once
  EXPECT_EQ(scripted_.attempts("h"), 1);
}

TEST_F(RetryTest, BudgetStopsARetryStorm) {
  // Tokens start at 10; each failed attempt takes one; retries only while tokens > 5. Against a
  // server that fails everything: call 1 retries at 9 and 8 tokens (3 attempts, max reached),
  // call 2 retries at 6 and then has 5: no call retries after that.
  auto budget = std::make_shared<RetryBudget>(10, 0.1);
  Channel retrying = channel_.with_layer(RetryLayer(fast_policy(3), budget));
  constexpr int kCalls = 50;
  for (int i = 0; i < kCalls; ++i) {
    auto r = call(retrying, "storm", {{"x-fail-first", "1000000"}});
    ASSERT_EQ(r.status().code(), StatusCode::kUnavailable);
  }
  int extra = scripted_.attempts("storm") - kCalls;
  EXPECT_LE(extra, 4);  // what a budget of 10 tokens allows at most, whatever max_attempts is
  EXPECT_EQ(extra, 3);
  EXPECT_EQ(budget->tokens(), 0.0);
  EXPECT_FALSE(budget->allows_retry());

  // Successes refill the budget, 0.1 token each. The next failure takes a token before the
  // retry is decided, so a retry needs more than 6 tokens: 61 successes.
  for (int i = 0; i < 61; ++i) ASSERT_TRUE(call(retrying, "ok", {}).ok());
  EXPECT_TRUE(budget->allows_retry());
  auto again = call(retrying, "after", {{"x-fail-first", "1"}});
  EXPECT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(scripted_.attempts("after"), 2);
}

TEST_F(RetryTest, BackoffBoundsGrowAndCap) {
  RetryPolicy policy;
  policy.initial_backoff = 100ms;
  policy.backoff_multiplier = 2;
  policy.max_backoff = 500ms;
  EXPECT_EQ(policy.backoff_bound(1), 100ms);
  EXPECT_EQ(policy.backoff_bound(2), 200ms);
  EXPECT_EQ(policy.backoff_bound(3), 400ms);
  EXPECT_EQ(policy.backoff_bound(4), 500ms);
  for (int i = 0; i < 1000; ++i) {
    auto j = detail::jitter(100ms);
    ASSERT_GE(j.count(), 0);
    ASSERT_LT(j.count(), 100);
  }
}

TEST_F(RetryTest, ServerSideAndUnlayeredCallsAreUntouched) {
  // A retry layer on the server does nothing: retries are the client's business.
  ScriptedService other;
  auto server = start_other(other, RetryLayer(fast_policy()));
  ASSERT_NE(server, nullptr);
  Channel plain = Channel::insecure("127.0.0.1:" + std::to_string(server->port()));
  auto r = call(plain, "i", {{"x-fail-first", "1"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(other.attempts("i"), 1);
  server->shutdown(kShutdownGrace);
}

// A service config under which gRPC itself retries every method of `service`: `max_attempts`
// attempts on UNAVAILABLE, with backoffs of at most 1 ms.
grpc::ChannelArguments core_retry_args(std::string_view service, int max_attempts) {
  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(absl::StrCat(R"({"methodConfig": [{"name": [{"service": ")",
                                         std::string(service),
                                         R"("}], "retryPolicy": {"maxAttempts": )", max_attempts,
                                         R"(, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
      "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]})"));
  return args;
}

constexpr std::string_view kEcho = "trellis.testing.Echo";

TEST_F(RetryTest, ServiceConfigRetriesWorkWithoutARetryLayer) {
  std::string target = "127.0.0.1:" + std::to_string(server_->port());
  Channel core = Channel::insecure(target, core_retry_args(kEcho, 3));
  auto r = call(core, "sc", {{"x-fail-first", "2"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "sc after 3");
  EXPECT_EQ(scripted_.attempts("sc"), 3);

  // A layer that does not send calls again leaves gRPC's retries alone.
  Channel timed = core.with_layer(TimeoutLayer(30s));
  EXPECT_EQ(timed.grpc_channel(), core.grpc_channel());
  auto t = call(timed, "sc-timed", {{"x-fail-first", "2"}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(scripted_.attempts("sc-timed"), 3);
}

TEST_F(RetryTest, RetryLayerOverAServiceConfigRetryPolicyMakesOnlyItsOwnAttempts) {
  std::string target = "127.0.0.1:" + std::to_string(server_->port());
  Channel core = Channel::insecure(target, core_retry_args(kEcho, 3));
  Channel retrying = core.with_layer(RetryLayer(fast_policy(3)));

  // With gRPC's retries as well, each of the layer's 3 attempts was 3: 9 in all.
  auto r = call(retrying, "both", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "scripted failure of attempt 3");
  EXPECT_EQ(scripted_.attempts("both"), 3);

  auto ok = call(retrying, "both-ok", {{"x-fail-first", "2"}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->message(), "both-ok after 3");
  EXPECT_EQ(scripted_.attempts("both-ok"), 3);

  // Every call of the handle goes without gRPC's retries, those the layer does not retry too
  // (Echo has no idempotency level).
  auto not_retried = call(retrying, "both-echo", {{"x-fail-first", "1"}}, /*idempotent=*/false);
  EXPECT_EQ(not_retried.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("both-echo"), 1);

  // The handle it was made from keeps them.
  auto plain = call(core, "core-only", {{"x-fail-first", "2"}});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(scripted_.attempts("core-only"), 3);
}

TEST_F(RetryTest, HedgingLayerOverAServiceConfigRetryPolicyMakesOnlyItsOwnAttempts) {
  std::string target = "127.0.0.1:" + std::to_string(server_->port());
  HedgingPolicy hedging;
  hedging.max_attempts = 2;
  hedging.hedging_delay = 1ms;
  Channel hedged =
      Channel::insecure(target, core_retry_args(kEcho, 3)).with_layer(HedgingLayer(hedging));
  auto r = call(hedged, "hedged", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("hedged"), 2);  // 6 with gRPC's retries of each
}

TEST_F(RetryTest, GrpcRetriesStayOffUnderARetryLayerWhateverTheArgumentsSay) {
  // The server records the user agent each call came with.
  auto agents = std::make_shared<std::vector<std::string>>();
  auto mu = std::make_shared<std::mutex>();
  ScriptedService other;
  auto server =
      start_other(other, layer_fn([agents, mu](Call& call, const auto& next) -> Task<Status> {
                    {
                      std::lock_guard lock(*mu);
                      agents->emplace_back(call.request_metadata().get("user-agent").value_or(""));
                    }
                    co_return co_await next(call);
                  }));
  ASSERT_NE(server, nullptr);
  grpc::ChannelArguments args = core_retry_args(kEcho, 3);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);
  args.SetUserAgentPrefix("retry-test/7");
  Channel retrying = Channel::insecure("127.0.0.1:" + std::to_string(server->port()), args)
                         .with_layer(RetryLayer(fast_policy(2)));
  auto r = call(retrying, "enabled", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(other.attempts("enabled"), 2);

  // The other arguments are the caller's: the user agent, and the service config, which the
  // channel has applied (it comes with the name resolution of the first call).
  {
    std::lock_guard lock(*mu);
    ASSERT_EQ(agents->size(), 2u);
    EXPECT_TRUE(agents->front().starts_with("retry-test/7 grpc-c++/")) << agents->front();
  }
  EXPECT_NE(retrying.grpc_channel()->GetServiceConfigJSON().find("retryPolicy"), std::string::npos)
      << retrying.grpc_channel()->GetServiceConfigJSON();
  server->shutdown(10s);
}

TEST_F(RetryTest, OneChannelWithoutGrpcRetriesIsSharedByTheHandlesThatNeedIt) {
  Channel core = Channel::insecure("127.0.0.1:1", core_retry_args(kEcho, 3));
  Channel a = core.with_layer(RetryLayer(fast_policy(3)));
  Channel b = core.with_layer(TimeoutLayer(1s))
                  .with_layer(Stack()
                                  .layer(TimeoutLayer(2s))
                                  .layer(for_methods({"/x.Y/Z"}, RetryLayer(fast_policy(2)))));
  EXPECT_NE(a.grpc_channel(), core.grpc_channel());
  EXPECT_EQ(b.grpc_channel(), a.grpc_channel());
  EXPECT_EQ(a.with_layer(TimeoutLayer(1s)).grpc_channel(), a.grpc_channel());
  EXPECT_EQ(a.with_layer(RetryLayer(fast_policy(3))).grpc_channel(), a.grpc_channel());
  // A layer that makes one attempt only, and a channel whose retries are off already, need none.
  EXPECT_EQ(core.with_layer(RetryLayer(fast_policy(1))).grpc_channel(), core.grpc_channel());
  grpc::ChannelArguments off;
  off.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  Channel no_core = Channel::insecure("127.0.0.1:1", off);
  EXPECT_EQ(no_core.with_layer(RetryLayer(fast_policy(3))).grpc_channel(), no_core.grpc_channel());
}

TEST_F(RetryTest, AWrappedGrpcChannelIsUsedAsItIs) {
  std::string target = "127.0.0.1:" + std::to_string(server_->port());
  // Trellis cannot make it again: the service config's retries multiply the layer's attempts.
  Channel wrapped(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                            core_retry_args(kEcho, 3)));
  Channel retrying = wrapped.with_layer(RetryLayer(fast_policy(3)));
  EXPECT_EQ(retrying.grpc_channel(), wrapped.grpc_channel());
  auto r = call(retrying, "wrapped", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("wrapped"), 9);

  // Made with gRPC's retries off, as channel.hpp says to.
  grpc::ChannelArguments args = core_retry_args(kEcho, 3);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  Channel off(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  auto o =
      call(off.with_layer(RetryLayer(fast_policy(3))), "wrapped-off", {{"x-fail-first", "100"}});
  EXPECT_EQ(o.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("wrapped-off"), 3);
}

TEST_F(RetryTest, ChannelCreateKeepsWhatItNeedsToTurnGrpcRetriesOff) {
  std::string target = "127.0.0.1:" + std::to_string(server_->port());
  Channel created =
      Channel::create(target, grpc::InsecureChannelCredentials(), core_retry_args(kEcho, 3));
  auto core = call(created, "created-core", {{"x-fail-first", "2"}});
  ASSERT_TRUE(core.ok()) << core.status();
  EXPECT_EQ(scripted_.attempts("created-core"), 3);
  auto r =
      call(created.with_layer(RetryLayer(fast_policy(2))), "created", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("created"), 2);
}

// A Streamer whose calls fail as their request metadata says, counting attempts per "x-key" (the
// script of ScriptedService, for streaming calls):
//   x-fail-first: N   attempts 1..N fail with x-code (default UNAVAILABLE)
//   x-code: C         the status code of those failures
//   x-fail-after: K   Collect: a failing attempt stops reading after K requests (default: it
//                     reads them all, then fails)
//   x-header: 1       Collect: a failing attempt sends a response header (the call is committed)
//   x-answer-after: K Collect: answers after reading K requests, without reading the others
// Collect records the messages each attempt received and answers them joined with ",", followed
// by " after <attempt>". Split fails or ends at once; Chat is not scripted.
class ScriptedStreamer final : public StreamerService {
 public:
  Task<Status> Split(ServerContext& ctx, const EchoRequest&, ServerWriter<EchoResponse>&) override {
    int attempt = begin(ctx);
    if (failing(ctx, attempt)) co_return failure(ctx, attempt);
    co_return Status();
  }

  Task<Result<EchoResponse>> Collect(ServerContext& ctx,
                                     ServerReader<EchoRequest>& reader) override {
    int attempt = begin(ctx);
    bool fail = failing(ctx, attempt);
    int read_at_most = fail ? number(ctx.request_metadata(), "x-fail-after", -1)
                            : number(ctx.request_metadata(), "x-answer-after", -1);
    std::vector<std::string> got;
    while (read_at_most < 0 || static_cast<int>(got.size()) < read_at_most) {
      std::optional<EchoRequest> req = co_await reader.read();
      if (!req) break;
      got.push_back(req->message());
    }
    std::string key = key_of(ctx);
    {
      std::lock_guard lock(mu_);
      received_[key].push_back(got);
    }
    if (fail) {
      if (ctx.request_metadata().contains("x-header")) ctx.add_initial_metadata("x-committed", "1");
      if (!attempt_ends.HasBeenNotified()) attempt_ends.Notify();
      co_return failure(ctx, attempt);
    }
    if (ctx.is_cancelled()) co_return Status::cancelled("read failed");
    if (read_at_most >= 0 && !attempt_ends.HasBeenNotified()) attempt_ends.Notify();
    EchoResponse resp;
    resp.set_message(absl::StrJoin(got, ",") + " after " + std::to_string(attempt));
    co_return resp;
  }

  Task<Status> Chat(ServerContext&, ServerReader<EchoRequest>&,
                    ServerWriter<EchoResponse>&) override {
    co_return Status::unimplemented("not scripted");
  }

  // Notified when an attempt of Collect fails, or answers early, just before it returns.
  absl::Notification attempt_ends;

  int attempts(const std::string& key) {
    std::lock_guard lock(mu_);
    return attempts_[key];
  }
  // What each attempt of `key` received, in the order the attempts ended.
  std::vector<std::vector<std::string>> received(const std::string& key) {
    std::lock_guard lock(mu_);
    return received_[key];
  }

 private:
  static int number(const Metadata& md, std::string_view key, int fallback) {
    auto v = md.get(key);
    return v ? std::stoi(std::string(*v)) : fallback;
  }
  static std::string key_of(ServerContext& ctx) {
    return std::string(ctx.request_metadata().get("x-key").value_or(""));
  }
  int begin(ServerContext& ctx) {
    std::lock_guard lock(mu_);
    return ++attempts_[key_of(ctx)];
  }
  static bool failing(ServerContext& ctx, int attempt) {
    return attempt <= number(ctx.request_metadata(), "x-fail-first", 0);
  }
  static Status failure(ServerContext& ctx, int attempt) {
    return Status(static_cast<StatusCode>(number(ctx.request_metadata(), "x-code", 14)),
                  "scripted failure of attempt " + std::to_string(attempt));
  }

  std::mutex mu_;
  std::map<std::string, int> attempts_;
  std::map<std::string, std::vector<std::vector<std::string>>> received_;
};

// Client-streaming retries: a ScriptedStreamer server besides the fixture's.
class StreamRetryTest : public ScriptedTest {
 protected:
  void SetUp() override {
    ScriptedTest::SetUp();
    streamer_server_ = start_other(streamer_);
    ASSERT_NE(streamer_server_, nullptr);
    streamer_channel_ = Channel::insecure("127.0.0.1:" + std::to_string(streamer_server_->port()));
  }

  // The streamer's server first; then the fixture's TearDown checks that nothing outlived its
  // call, however many attempts the call took.
  void TearDown() override {
    if (streamer_server_) streamer_server_->shutdown(kShutdownGrace);
    streamer_server_.reset();
    ScriptedTest::TearDown();
  }

  struct Collected {
    Result<EchoResponse> result;
    int failed_writes = 0;  // writes the caller saw fail
  };

  // Writes `messages` to Collect through `layer` under the script `md` (key `key`), then
  // finish(). `md_out`: the response metadata the caller gets. `pause_after` > 0: after that
  // many writes, waits (off the workers, bounded) until an attempt has failed or answered.
  Collected collect(BoxLayer layer, const std::string& key, Metadata md,
                    std::vector<std::string> messages, ResponseMetadata* md_out = nullptr,
                    int pause_after = 0) {
    CallOptions options;
    options.set_timeout(30s).add_metadata("x-key", key);
    for (const auto& [k, v] : md) options.add_metadata(k, v);
    if (md_out != nullptr) options.capture_response_metadata(md_out);
    Channel channel = streamer_channel_.with_layer(std::move(layer));
    return run([](Runtime* rt, absl::Notification* failed_attempt, int pause_after, Channel channel,
                  CallOptions options, std::vector<std::string> messages) -> Task<Collected> {
      StreamerClient client(channel);
      auto stream = client.Collect(std::move(options));
      int failed = 0;
      int written = 0;
      for (const std::string& m : messages) {
        if (!co_await stream.write(with_message(m))) ++failed;
        if (++written == pause_after) {
          bool ended = co_await rt->spawn_blocking([failed_attempt] {
            return failed_attempt->WaitForNotificationWithTimeout(kTestDeadline);
          });
          if (!ended) ADD_FAILURE() << "no attempt failed or answered within " << kTestDeadline;
        }
      }
      Result<EchoResponse> result = co_await stream.finish();
      co_return Collected{std::move(result), failed};
    }(runtime_.get(), &streamer_.attempt_ends, pause_after, std::move(channel), std::move(options),
                                                                          std::move(messages)));
  }

  // n messages "0", "1", ... each padded with '.' to `size` bytes.
  static std::vector<std::string> messages(int n, std::size_t size = 1) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      std::string m = std::to_string(i);
      if (m.size() < size) m.append(size - m.size(), '.');
      out.push_back(std::move(m));
    }
    return out;
  }

  static RetryLayer any_method(RetryPolicy policy, std::shared_ptr<RetryBudget> budget = nullptr) {
    policy.retry_any_method = true;  // Collect declares no idempotency level
    return RetryLayer(std::move(policy), std::move(budget));
  }

  ScriptedStreamer streamer_;
  std::unique_ptr<Server> streamer_server_;
  Channel streamer_channel_{nullptr};
};

TEST_F(StreamRetryTest, ClientStreamIsRetriedByReplayingEveryMessage) {
  std::vector<std::string> sent = messages(10);
  Collected c = collect(any_method(fast_policy(3)), "a", {{"x-fail-first", "1"}}, sent);
  ASSERT_TRUE(c.result.ok()) << c.result.status();
  EXPECT_EQ(c.result->message(), absl::StrJoin(sent, ",") + " after 2");
  EXPECT_EQ(c.failed_writes, 0);  // the caller never saw the failed attempt
  EXPECT_EQ(streamer_.attempts("a"), 2);
  EXPECT_EQ(streamer_.received("a"), (std::vector<std::vector<std::string>>{sent, sent}));
}

TEST_F(StreamRetryTest, ReplayOverAServiceConfigRetryPolicyMakesOnlyTheLayersAttempts) {
  streamer_channel_ = Channel::insecure("127.0.0.1:" + std::to_string(streamer_server_->port()),
                                        core_retry_args("trellis.testing.Streamer", 3));
  // Without a retrying layer gRPC retries the stream itself, replaying what it buffered.
  std::vector<std::string> sent = messages(3);
  Collected core = collect(BoxLayer(), "sc-core", {{"x-fail-first", "2"}}, sent);
  ASSERT_TRUE(core.result.ok()) << core.result.status();
  EXPECT_EQ(core.result->message(), absl::StrJoin(sent, ",") + " after 3");
  EXPECT_EQ(streamer_.attempts("sc-core"), 3);

  Collected both = collect(any_method(fast_policy(3)), "sc-both", {{"x-fail-first", "100"}}, sent);
  EXPECT_EQ(both.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(streamer_.attempts("sc-both"), 3);
  EXPECT_EQ(streamer_.received("sc-both"),
            (std::vector<std::vector<std::string>>{sent, sent, sent}));
}

TEST_F(StreamRetryTest, AttemptThatFailsMidStreamIsReplayedInFull) {
  // The first attempt stops reading after 2 of 64 messages of 8 KiB and fails; the caller goes
  // on writing once it has, so the failure reaches its writes (which must not see it).
  std::vector<std::string> sent = messages(64, 8192);
  RetryPolicy policy = fast_policy(3);
  policy.max_replay_bytes = 1 << 20;
  Collected c = collect(any_method(policy), "b", {{"x-fail-first", "1"}, {"x-fail-after", "2"}},
                        sent, nullptr, /*pause_after=*/2);
  ASSERT_TRUE(c.result.ok()) << c.result.status();
  EXPECT_EQ(c.failed_writes, 0);
  EXPECT_EQ(streamer_.attempts("b"), 2);
  std::vector<std::vector<std::string>> received = streamer_.received("b");
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[0].size(), 2u);
  EXPECT_TRUE(received[1] == sent) << "the second attempt received " << received[1].size()
                                   << " messages, not all " << sent.size() << " in order";
}

TEST_F(StreamRetryTest, CallOverTheReplayLimitIsNotRetried) {
  RetryPolicy policy = fast_policy(3);
  policy.max_replay_bytes = 100;
  // 5 messages of 50 bytes (serialized a little more): over the limit at the second one.
  Collected over = collect(any_method(policy), "c", {{"x-fail-first", "1"}}, messages(5, 50));
  EXPECT_EQ(over.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(over.result.status().message(), "scripted failure of attempt 1");
  EXPECT_EQ(streamer_.attempts("c"), 1);

  // Within it: retried.
  Collected within = collect(any_method(policy), "c2", {{"x-fail-first", "1"}}, messages(5, 10));
  EXPECT_TRUE(within.result.ok()) << within.result.status();
  EXPECT_EQ(streamer_.attempts("c2"), 2);

  // 0 turns replay off.
  policy.max_replay_bytes = 0;
  Collected off = collect(any_method(policy), "c3", {{"x-fail-first", "1"}}, messages(1));
  EXPECT_EQ(off.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(streamer_.attempts("c3"), 1);
}

TEST_F(StreamRetryTest, NonRetryableCodesAndMethodsWithSideEffectsAreNotRetried) {
  Collected code = collect(any_method(fast_policy()), "d", {{"x-fail-first", "1"}, {"x-code", "3"}},
                           messages(3));
  EXPECT_EQ(code.result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(streamer_.attempts("d"), 1);

  // Collect declares no idempotency level: only retry_any_method retries it.
  Collected method = collect(RetryLayer(fast_policy()), "d2", {{"x-fail-first", "1"}}, messages(3));
  EXPECT_EQ(method.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(streamer_.attempts("d2"), 1);
}

TEST_F(StreamRetryTest, CommittedCallIsNotRetried) {
  ResponseMetadata md;
  Collected c = collect(any_method(fast_policy()), "e", {{"x-fail-first", "1"}, {"x-header", "1"}},
                        messages(3), &md);
  EXPECT_EQ(c.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(md.initial.get("x-committed"), "1");
  EXPECT_EQ(streamer_.attempts("e"), 1);
}

TEST_F(StreamRetryTest, MaxAttemptsAndBudgetBoundStreamRetries) {
  std::vector<std::string> sent = messages(4);
  Collected c = collect(any_method(fast_policy(4)), "f", {{"x-fail-first", "100"}}, sent);
  EXPECT_EQ(c.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(c.result.status().message(), "scripted failure of attempt 4");
  EXPECT_EQ(streamer_.attempts("f"), 4);
  EXPECT_EQ(streamer_.received("f"), (std::vector<std::vector<std::string>>(4, sent)));

  // As BudgetStopsARetryStorm: 10 tokens, one per failed attempt, retries while more than 5.
  auto budget = std::make_shared<RetryBudget>(10, 0.1);
  constexpr int kCalls = 5;
  for (int i = 0; i < kCalls; ++i) {
    Collected failed = collect(any_method(fast_policy(3), budget), "storm",
                               {{"x-fail-first", "1000000"}}, messages(2));
    ASSERT_EQ(failed.result.status().code(), StatusCode::kUnavailable);
  }
  EXPECT_EQ(streamer_.attempts("storm") - kCalls, 3);
  EXPECT_FALSE(budget->allows_retry());
}

TEST_F(StreamRetryTest, EarlyAnswerIsKeptAndNotRetried) {
  // The server answers after 2 of 20 requests: the writes after that may fail (the caller sees
  // it, as without retries), and the response, read ahead by the stream, reaches the caller.
  Collected c = collect(any_method(fast_policy()), "h", {{"x-answer-after", "2"}}, messages(20),
                        nullptr, /*pause_after=*/2);
  ASSERT_TRUE(c.result.ok()) << c.result.status();
  EXPECT_EQ(c.result->message(), "0,1 after 1");
  EXPECT_EQ(streamer_.attempts("h"), 1);
}

TEST_F(StreamRetryTest, StreamDroppedDuringRetriesLeaksNothing) {
  // Every attempt fails; the caller drops the stream without finish() once the first attempt
  // has failed, while the layer retries. TearDown checks that no call object outlives it.
  CallOptions options;
  options.set_timeout(30s).add_metadata("x-key", "i").add_metadata("x-fail-first", "100");
  Channel channel = streamer_channel_.with_layer(any_method(fast_policy(5)));
  run([](Runtime* rt, absl::Notification* attempt_ends, Channel channel,
         CallOptions options) -> Task<void> {
    StreamerClient client(channel);
    auto stream = client.Collect(std::move(options));
    for (int i = 0; i < 3; ++i) co_await stream.write(with_message("m"));
    co_await stream.writes_done();
    bool ended = co_await rt->spawn_blocking(
        [attempt_ends] { return attempt_ends->WaitForNotificationWithTimeout(kTestDeadline); });
    if (!ended) ADD_FAILURE() << "no attempt failed within " << kTestDeadline;
  }(runtime_.get(), &streamer_.attempt_ends, std::move(channel), std::move(options)));
  EXPECT_GE(streamer_.attempts("i"), 1);
}

// A layer inside the retry runs once per attempt, and registers a new observer each time: the
// one of a failed attempt is gone with its frame, and must be unregistered with it.
TEST_F(StreamRetryTest, ObserverOfEachAttemptIsUnregisteredWithIt) {
  struct Observer final : MessageObserver {
    Observer(std::mutex* mu, std::vector<std::string>* seen, int attempt)
        : mu(mu), seen(seen), attempt(attempt) {}
    Status on_received(const google::protobuf::MessageLite& m) override {
      std::lock_guard lock(*mu);
      seen->push_back(std::to_string(attempt) + " recv " +
                      static_cast<const EchoResponse&>(m).message());
      return Status();
    }
    std::mutex* mu;
    std::vector<std::string>* seen;
    int attempt;
  };
  std::mutex mu;
  std::vector<std::string> seen;
  std::atomic<int> attempts{0};
  auto observing = layer_fn([&](Call& call, const auto& next) -> Task<Status> {
    Observer observer(&mu, &seen, ++attempts);
    call.observe_messages(observer);
    call.observe_messages(observer);  // registering again only moves it
    co_return co_await next(call);
  });
  Collected c = collect(Stack().layer(any_method(fast_policy(3))).layer(observing), "obs",
                        {{"x-fail-first", "1"}}, messages(3));
  ASSERT_TRUE(c.result.ok()) << c.result.status();
  EXPECT_EQ(streamer_.attempts("obs"), 2);
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"2 recv 0,1,2 after 2"}));
}

TEST_F(StreamRetryTest, ServerStreamingCallsPassThrough) {
  CallOptions options;
  options.set_timeout(30s).add_metadata("x-key", "g").add_metadata("x-fail-first", "1");
  Channel channel = streamer_channel_.with_layer(any_method(fast_policy()));
  Status status = run([](Channel channel, CallOptions options) -> Task<Status> {
    StreamerClient client(channel);
    auto stream = client.Split(with_message("a b"), std::move(options));
    while (co_await stream.read()) {
    }
    co_return co_await stream.finish();
  }(std::move(channel), std::move(options)));
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(streamer_.attempts("g"), 1);
}

}  // namespace
}  // namespace trellis::testing
