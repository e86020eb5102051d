// RetryLayer: gRFC A6 retries against a server that fails on purpose, over real loopback calls.
#include "trellis/middleware/retry.hpp"

#include <gtest/gtest.h>

#include "fixture.hpp"
#include "scripted_service.hpp"
#include "trellis/middleware/timeout.hpp"

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
  server->shutdown(10s);
}

}  // namespace
}  // namespace trellis::testing
