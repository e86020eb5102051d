// HedgingLayer: a second attempt after a delay, the first good answer wins, the loser cancelled.
#include "trellis/middleware/hedging.hpp"

#include <gtest/gtest.h>

#include "fixture.hpp"
#include "scripted_service.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

class HedgingTest : public ScriptedTest {
 protected:
  static HedgingPolicy policy(int attempts, std::chrono::milliseconds delay) {
    HedgingPolicy p;
    p.max_attempts = attempts;
    p.hedging_delay = delay;
    return p;
  }
};

TEST_F(HedgingTest, SlowFirstAttemptLosesToTheHedgeAndIsCancelled) {
  Channel hedged = channel_.with_layer(HedgingLayer(policy(2, 20ms)));
  auto r = call(hedged, "a", {{"x-slow-first", "1"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "a after 2");
  EXPECT_EQ(scripted_.attempts("a"), 2);
  shut_down();  // the server has seen every call end once it has shut down
  EXPECT_EQ(scripted_.cancelled(), 1);
}

TEST_F(HedgingTest, FastAnswerSendsNoHedge) {
  Channel hedged = channel_.with_layer(HedgingLayer(policy(3, std::chrono::hours(1))));
  auto r = call(hedged, "b", {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "b after 1");
  EXPECT_EQ(scripted_.attempts("b"), 1);
}

TEST_F(HedgingTest, FatalStatusEndsTheCallAtOnce) {
  Channel hedged = channel_.with_layer(HedgingLayer(policy(3, std::chrono::hours(1))));
  auto r = call(hedged, "c", {{"x-fail-first", "1"}, {"x-code", "5"}});  // NOT_FOUND
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(scripted_.attempts("c"), 1);
}

TEST_F(HedgingTest, AllAttemptsFailingNonFatallyGiveTheLastStatus) {
  Channel hedged = channel_.with_layer(HedgingLayer(policy(3, 5ms)));
  auto r = call(hedged, "d", {{"x-fail-first", "100"}});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("d"), 3);
}

TEST_F(HedgingTest, NonFatalFailureWaitsForTheNextAttempt) {
  Channel hedged = channel_.with_layer(HedgingLayer(policy(2, 20ms)));
  auto r = call(hedged, "e", {{"x-fail-first", "1"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "e after 2");
}

TEST_F(HedgingTest, MethodsWithoutIdempotencyAreNotHedgedUnlessConfigured) {
  Channel hedged = channel_.with_layer(HedgingLayer(policy(2, 5ms)));
  auto r = call(hedged, "f", {{"x-fail-first", "1"}}, /*idempotent=*/false);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scripted_.attempts("f"), 1);

  HedgingPolicy any = policy(2, 5ms);
  any.hedge_any_method = true;
  auto hedged_any =
      call(channel_.with_layer(HedgingLayer(any)), "g", {{"x-fail-first", "1"}}, false);
  EXPECT_TRUE(hedged_any.ok()) << hedged_any.status();
  EXPECT_EQ(scripted_.attempts("g"), 2);
}

}  // namespace
}  // namespace trellis::testing
