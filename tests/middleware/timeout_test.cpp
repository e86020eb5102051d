// TimeoutLayer and deadline propagation: client deadlines, server time limits, and deadlines
// inherited by the calls a handler makes, over real loopback calls.
#include "trellis/middleware/timeout.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "fixture.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

// grpc-timeout carries a duration, rounded up when encoded (a 1 s timeout arrives as up to about
// 1010 ms), so a deadline seen downstream may be later than the sender's by this much at most.
constexpr std::int64_t kEncodingSlackMs = 100;

std::int64_t to_ms(Clock::time_point t) {
  if (t == Clock::time_point::max()) return -1;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// How much later than `remaining_ms` from now the deadline a peer derives from a grpc-timeout
// header can be, by gRPC core's encoding (src/core/lib/transport/timeout_encoding.cc,
// Timeout::FromMillis): the timeout is sent in whole milliseconds, rounded up to at most three
// significant digits (below 1 s: exact ms; below 10 s: 10 ms units; below 100 s: 100 ms units; then
// seconds, ten seconds, ...), so it grows by less than one unit. (HPACK may also resend an earlier
// grpc-timeout of the same connection up to 3% longer; the relays below send one per connection.)
std::int64_t max_timeout_rounding_ms(std::int64_t remaining_ms) {
  std::int64_t unit = 1;
  while (remaining_ms >= 1000 * unit) unit *= 10;
  return unit - 1;
}

// The latest deadline (ms since the epoch) that B, the server of an outgoing call made by A's
// handler under a deadline of `a_deadline_ms`, can see. grpc-timeout is a duration, not a point in
// time: A's gRPC sends deadline - its now, rounded up (above), and B's gRPC adds it to B's now, so
// B's deadline is also later by the time between those two clock reads (the hop from A to B),
// unbounded on a loaded machine but within [before, after], the test's window around the whole
// call. The remaining time A sends is at most a_deadline_ms - before. 3 ms cover the truncations
// to whole milliseconds: gRPC rounds A's deadline up and its clock reads down, and to_ms truncates
// the deadlines and the window here.
std::int64_t latest_inherited_deadline_ms(std::int64_t a_deadline_ms, Clock::time_point before,
                                          Clock::time_point after) {
  std::int64_t hop_ms = to_ms(after) - to_ms(before) + 1;
  return a_deadline_ms + max_timeout_rounding_ms(a_deadline_ms - to_ms(before) + 1) + hop_ms + 3;
}

// Answers with its own deadline (ms since the epoch, -1 for none) in `message`; when the request
// message is "relay", first calls `next` with the handler's context as parent and puts the
// deadline `next` saw into remaining_deadline_ms (ms since the epoch).
class RelayService final : public EchoService {
 public:
  explicit RelayService(Channel next) : next_(std::move(next)) {}

  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    EchoResponse resp;
    resp.set_message(std::to_string(to_ms(ctx.deadline())));
    if (req.message() == "relay") {
      EchoRequest inner;
      inner.set_message("report");
      auto downstream = co_await EchoClient(next_).Echo(inner, CallOptions().set_parent(ctx));
      if (!downstream.ok()) co_return downstream.status();
      resp.set_remaining_deadline_ms(std::stoll(downstream->message()));
    }
    co_return resp;
  }
  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest& req) override {
    return Echo(ctx, req);
  }

 private:
  Channel next_;
};

class TimeoutTest : public MiddlewareTest {
 protected:
  // Starts two more servers on the runtime: B (a RelayService that only reports) and A (a
  // RelayService relaying to B), A with `a_layer`.
  void start_relays(BoxLayer a_layer = {}) {
    start();
    b_ = std::make_unique<RelayService>(Channel(nullptr));
    b_server_ = start_other(*b_);
    a_ = std::make_unique<RelayService>(
        Channel::insecure("127.0.0.1:" + std::to_string(b_server_->port())));
    a_server_ = start_other(*a_, std::move(a_layer));
    a_channel_ = Channel::insecure("127.0.0.1:" + std::to_string(a_server_->port()));
  }
  void TearDown() override {
    for (auto* s : {&a_server_, &b_server_}) {
      if (*s) (*s)->shutdown(kShutdownGrace);
      s->reset();
    }
    MiddlewareTest::TearDown();
  }

  // For the tests whose client deadline must pass while the handler runs (the handler waits 60 s,
  // so the deadline is what ends the call): with_growing_timeout's predicate.
  bool handler_started() const { return echo_.observed.calls.load() > 0; }

  std::unique_ptr<RelayService> a_, b_;
  std::unique_ptr<Server> a_server_, b_server_;
  Channel a_channel_{nullptr};
};

TEST_F(TimeoutTest, ClientLayerSetsTheDeadlineTheServerSees) {
  start();
  Channel limited = channel_.with_layer(TimeoutLayer(5s));
  auto r = run(EchoClient(limited).Echo(with_message("x")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->remaining_deadline_ms(), 0);
  EXPECT_LE(r->remaining_deadline_ms(), 5000 + kEncodingSlackMs);

  // An earlier deadline of the call's own is kept.
  auto earlier = run(EchoClient(limited).Echo(with_message("x"), CallOptions().set_timeout(1s)));
  ASSERT_TRUE(earlier.ok()) << earlier.status();
  EXPECT_LE(earlier->remaining_deadline_ms(), 1000 + kEncodingSlackMs);
}

TEST_F(TimeoutTest, ClientLayerExpiryIsDeadlineExceededAndCancelsTheHandler) {
  start();
  EchoRequest slow;
  slow.set_delay_ms(60'000);
  auto r = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        return run(EchoClient(channel_.with_layer(TimeoutLayer(timeout))).Echo(slow));
      },
      [&] { return handler_started(); });
  ASSERT_TRUE(handler_started()) << "no call reached the handler before its deadline";
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

TEST_F(TimeoutTest, ServerLayerCancelsTheHandlerAndAnswersDeadlineExceeded) {
  start([](Server::Builder& b) { b.layer(TimeoutLayer(50ms)); });
  EchoRequest slow;
  slow.set_delay_ms(60'000);
  auto r = run(EchoClient(channel_).Echo(slow, CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(echo_.observed.handler_cancelled.HasBeenNotified());
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

// On a stream the handler is often suspended in a read or a write when the time is up; the
// client still gets DEADLINE_EXCEEDED, not the CANCELLED of a plain cancellation.
TEST_F(TimeoutTest, ServerLayerAnswersDeadlineExceededOnStreams) {
  start([](Server::Builder& b) { b.layer(TimeoutLayer(200ms)); });
  {  // the streams are dropped before shut_down() destroys the runtime they run on
    StreamerClient client(channel_);
    auto chat = client.Chat(CallOptions().set_timeout(30s));
    EchoRequest slow = with_message("a b");
    slow.set_delay_ms(60'000);
    auto split = client.Split(slow, CallOptions().set_timeout(30s));
    run([&]() -> Task<void> {
      // Bidi: the handler echoes what it gets, then waits in a read that never completes. (Under
      // load the time may be up before the first echo: what the handler was doing then does not
      // matter, the status does.)
      co_await chat.write(with_message("hello"));
      while (co_await chat.read()) {
      }
      Status chat_status = co_await chat.finish();
      EXPECT_EQ(chat_status.code(), StatusCode::kDeadlineExceeded) << chat_status;
      // Server streaming, the handler waiting between two writes (in a timer, not a stream
      // operation): the layer's after() answers for it.
      while (co_await split.read()) {
      }
      Status split_status = co_await split.finish();
      EXPECT_EQ(split_status.code(), StatusCode::kDeadlineExceeded) << split_status;
    }());
  }
  EXPECT_TRUE(
      streamer_.observed.handler_saw_cancellation.WaitForNotificationWithTimeout(kTestDeadline));
}

TEST_F(TimeoutTest, ServerLayerTightensTheDeadlineAndLetsFastHandlersBe) {
  start([](Server::Builder& b) { b.layer(TimeoutLayer(5s)); });
  EchoClient client(channel_);
  auto r = run(client.Echo(with_message("fast"), CallOptions().set_timeout(60s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "fast");
  EXPECT_GT(r->remaining_deadline_ms(), 0);
  EXPECT_LE(r->remaining_deadline_ms(), 5000 + kEncodingSlackMs);
  // A client deadline earlier than the limit is left as it is.
  auto earlier = run(client.Echo(with_message("fast"), CallOptions().set_timeout(1s)));
  ASSERT_TRUE(earlier.ok()) << earlier.status();
  EXPECT_LE(earlier->remaining_deadline_ms(), 1000 + kEncodingSlackMs);
  // Without a client deadline the limit applies.
  auto none = run(client.Echo(with_message("fast")));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_LE(none->remaining_deadline_ms(), 5000 + kEncodingSlackMs);
  EXPECT_GT(none->remaining_deadline_ms(), 0);
}

TEST_F(TimeoutTest, ServerWithoutLayersAnswersAnExpiredClientDeadlineAsDeadlineExceeded) {
  start();
  EchoRequest slow;
  slow.set_delay_ms(60'000);
  auto r = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        return run(EchoClient(channel_).Echo(slow, CallOptions().set_timeout(timeout)));
      },
      [&] { return handler_started(); });
  ASSERT_TRUE(handler_started()) << "no call reached the handler before its deadline";
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

TEST_F(TimeoutTest, HandlersOutgoingCallsInheritTheRemainingDeadline) {
  start_relays();
  auto before = Clock::now();
  auto r = run(EchoClient(a_channel_).Echo(with_message("relay"), CallOptions().set_timeout(20s)));
  auto after = Clock::now();
  ASSERT_TRUE(r.ok()) << r.status();
  std::int64_t a_deadline = std::stoll(r->message());
  std::int64_t b_deadline = r->remaining_deadline_ms();
  ASSERT_GT(a_deadline, 0);
  ASSERT_GT(b_deadline, 0) << "B saw no deadline";
  // B inherits A's deadline: not later than it, but for grpc-timeout's rounding and the hop.
  EXPECT_LE(b_deadline, latest_inherited_deadline_ms(a_deadline, before, after))
      << "B's deadline is " << b_deadline - a_deadline << " ms after A's; the call took "
      << to_ms(after) - to_ms(before) << " ms";

  // A call without a deadline passes none on.
  auto none = run(EchoClient(a_channel_).Echo(with_message("relay")));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(std::stoll(none->message()), -1);
  EXPECT_EQ(none->remaining_deadline_ms(), -1);
}

TEST_F(TimeoutTest, ServerTimeLimitPropagatesDownstream) {
  start_relays(TimeoutLayer(2s));
  auto before = Clock::now();
  auto r = run(EchoClient(a_channel_).Echo(with_message("relay"), CallOptions().set_timeout(60s)));
  auto after = Clock::now();
  ASSERT_TRUE(r.ok()) << r.status();
  std::int64_t a_deadline = std::stoll(r->message());
  std::int64_t b_deadline = r->remaining_deadline_ms();
  // A's deadline is its 2 s limit, not the client's 60 s, and B inherits it.
  EXPECT_LE(a_deadline, to_ms(after) + 2000);
  EXPECT_GE(a_deadline, to_ms(before));
  EXPECT_LE(b_deadline, latest_inherited_deadline_ms(a_deadline, before, after))
      << "B's deadline is " << b_deadline - a_deadline << " ms after A's; the call took "
      << to_ms(after) - to_ms(before) << " ms";
}

}  // namespace
}  // namespace trellis::testing
