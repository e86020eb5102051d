// Compression, message size limits, keepalive and connection lifetimes, set through Trellis's
// typed options (Server::Builder, Channel::Builder, CallOptions, ServerContext), against
// python3-grpcio peers where the other side matters; what travels on the wire is counted by a
// loopback proxy (tests/byte_counting_proxy.hpp).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "byte_counting_proxy.hpp"
#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "python_peer.hpp"
#include "subprocess.hpp"
#include "trellis/channel_builder.hpp"
#include "trellis/client.hpp"
#include "trellis/compression.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kPeerBound = 60s;
// A message that compresses to almost nothing: the wire shows at once whether it was compressed.
constexpr int kLargeMessage = 100'000;
// Far above what kLargeMessage compresses to, far below its size.
constexpr std::int64_t kCompressedBound = kLargeMessage / 10;

std::string target(int port) { return "127.0.0.1:" + std::to_string(port); }

EchoRequest large_request() {
  EchoRequest req;
  req.set_message(std::string(kLargeMessage, 'a'));
  return req;
}

CallOptions bounded() { return CallOptions().set_timeout(kWaitBound); }

// An Echo whose handler compresses its response itself (ServerContext::set_compression).
class GzipEcho final : public EchoService {
 public:
  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    ctx.set_compression(Compression::kGzip);
    EchoResponse resp;
    resp.set_message(req.message());
    co_return resp;
  }
  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest& req) override {
    return Echo(ctx, req);
  }
};

// ------------------------------------------------------ the Trellis client, python server

class ClientOptionsTest : public EndToEndTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(python_.error().empty()) << python_.error();
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    proxy_ = std::make_unique<ByteCountingProxy>(python_.port());
  }
  void TearDown() override {
    EndToEndTest::TearDown();
    proxy_.reset();
  }

  Result<EchoResponse> call(const Channel& channel, const EchoRequest& req, CallOptions options) {
    return run(EchoClient(channel).Echo(req, options));
  }

  PythonServer python_;
  std::unique_ptr<ByteCountingProxy> proxy_;
};

TEST_F(ClientOptionsTest, CallCompressionShrinksTheRequestOnTheWire) {
  Channel channel = Channel::Builder(target(proxy_->port())).build().value();
  auto plain = call(channel, large_request(), bounded());
  ASSERT_TRUE(plain.ok()) << plain.status();
  std::int64_t plain_bytes = proxy_->to_server();
  EXPECT_GT(plain_bytes, kLargeMessage);

  auto gzip = call(channel, large_request(), bounded().set_compression(Compression::kGzip));
  ASSERT_TRUE(gzip.ok()) << gzip.status();
  EXPECT_EQ(gzip->message(), std::string(kLargeMessage, 'a'));  // grpcio decompressed it
  EXPECT_LT(proxy_->to_server() - plain_bytes, kCompressedBound);
  // The python server answers uncompressed: the response was not the client's to compress.
  EXPECT_GT(proxy_->to_client(), 2 * kLargeMessage);
}

TEST_F(ClientOptionsTest, ChannelDefaultCompressionAndAPerCallOverride) {
  Channel channel = Channel::Builder(target(proxy_->port()))
                        .default_compression(Compression::kDeflate)
                        .build()
                        .value();
  auto deflated = call(channel, large_request(), bounded());
  ASSERT_TRUE(deflated.ok()) << deflated.status();
  EXPECT_EQ(deflated->message().size(), static_cast<std::size_t>(kLargeMessage));
  std::int64_t deflated_bytes = proxy_->to_server();
  EXPECT_LT(deflated_bytes, kCompressedBound);

  auto plain = call(channel, large_request(), bounded().set_compression(Compression::kNone));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_GT(proxy_->to_server() - deflated_bytes, kLargeMessage);
}

TEST_F(ClientOptionsTest, MessageSizeLimitsOfTheChannel) {
  Channel channel = Channel::Builder(target(python_.port()))
                        .max_send_message_size(1000)
                        .max_receive_message_size(2000)
                        .build()
                        .value();
  EchoRequest small;
  small.set_message(std::string(900, 'x'));
  auto ok = call(channel, small, bounded());
  ASSERT_TRUE(ok.ok()) << ok.status();

  EchoRequest too_big;
  too_big.set_message(std::string(1500, 'x'));
  auto sent = call(channel, too_big, bounded());
  EXPECT_EQ(sent.status().code(), StatusCode::kResourceExhausted) << sent.status();

  // The reply echoes the message: 3,000 bytes, above what the channel receives.
  Channel small_receiver =
      Channel::Builder(target(python_.port())).max_receive_message_size(2000).build().value();
  EchoRequest big_reply;
  big_reply.set_message(std::string(3000, 'x'));
  auto received = call(small_receiver, big_reply, bounded());
  EXPECT_EQ(received.status().code(), StatusCode::kResourceExhausted) << received.status();
}

// With keepalive, a call to a server that stops answering (SIGSTOP: the kernel keeps the
// connection, the process answers nothing, not even pings) fails UNAVAILABLE once a ping goes
// unanswered, long before its own deadline.
TEST_F(ClientOptionsTest, KeepaliveNoticesAServerThatStoppedAnswering) {
  Channel channel = Channel::Builder(target(python_.port()))
                        .keepalive({.time = 500ms, .timeout = 500ms})
                        .build()
                        .value();
  EchoRequest slow;
  slow.set_message("held");
  slow.set_delay_ms(60'000);
  auto handle = runtime_->spawn(EchoClient(channel).Echo(slow, CallOptions().set_timeout(60s)));
  ASSERT_TRUE(python_.process().wait_for_line("handler started: held", deadline_in(kWaitBound)))
      << python_.process().output();
  ASSERT_TRUE(python_.process().send_signal(SIGSTOP));
  auto r = run_bounded(*runtime_, handle.join(), 50s);
  python_.process().send_signal(SIGCONT);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
}

// permit_without_calls: the channel pings an idle connection too, so it notices a server that
// stopped answering while no call is open, and leaves READY.
TEST_F(ClientOptionsTest, KeepaliveWithoutCallsNoticesAStoppedServerWhileIdle) {
  Channel channel = Channel::Builder(target(python_.port()))
                        .keepalive({.time = 500ms, .timeout = 500ms, .permit_without_calls = true})
                        .build()
                        .value();
  auto deadline = [] { return std::chrono::system_clock::now() + kWaitBound; };
  ASSERT_TRUE(run(channel.wait_until_ready(deadline())));
  ASSERT_TRUE(python_.process().send_signal(SIGSTOP));
  bool changed = run(channel.wait_for_state_change(ConnectivityState::kReady, deadline()));
  python_.process().send_signal(SIGCONT);
  EXPECT_TRUE(changed) << "still " << connectivity_state_name(channel.state());
}

// ------------------------------------------------------ python client, Trellis server

class ServerOptionsTest : public EndToEndTest, public TransportParam {
 protected:
  // Starts the server with `configure` applied to its builder.
  void start(const std::function<void(Server::Builder&)>& configure, Service& service) {
    if (!runtime_) runtime_ = Runtime::multi_thread().worker_threads(2).build();
    Server::Builder builder(*runtime_);
    builder.transport(transport()).add_insecure_port("127.0.0.1:0").add_service(service);
    configure(builder);
    auto server = builder.build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    proxy_ = std::make_unique<ByteCountingProxy>(server_->port());
  }
  void TearDown() override {
    EndToEndTest::TearDown();
    proxy_.reset();
  }

  // One call of tests/python/call_echo.py through the proxy; its output.
  std::string python_call(std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", target(proxy_->port())});
    auto run = run_with_deadline(python("call_echo.py", std::move(args)), python_env(),
                                 deadline_in(kPeerBound));
    EXPECT_TRUE(run.status.success()) << run.status.describe() << "; output:\n" << run.output;
    return run.output;
  }

  // Services outlive the servers TearDown shuts down. A service serves one server: a test that
  // starts a second one serves second_echo_.
  EchoImpl echo_;
  EchoImpl second_echo_;
  GzipEcho gzip_echo_;
  std::unique_ptr<ByteCountingProxy> proxy_;
};

TRELLIS_BOTH_TRANSPORTS(ServerOptionsTest);

TEST_P(ServerOptionsTest, DefaultCompressionShrinksResponsesAndDecodesCompressedRequests) {
  start([](Server::Builder& b) { b.default_compression(Compression::kGzip); }, echo_);
  EXPECT_EQ(python_call({"--size", std::to_string(kLargeMessage), "--compression", "gzip"}),
            "calling\nreply 100000\n");
  EXPECT_LT(proxy_->to_server(), kCompressedBound);  // grpcio compressed the request
  EXPECT_LT(proxy_->to_client(), kCompressedBound);  // Trellis compressed the response
}

TEST_P(ServerOptionsTest, AHandlerCompressesItsResponse) {
  start([](Server::Builder&) {}, gzip_echo_);
  EXPECT_EQ(python_call({"--size", std::to_string(kLargeMessage)}), "calling\nreply 100000\n");
  EXPECT_GT(proxy_->to_server(), kLargeMessage);
  EXPECT_LT(proxy_->to_client(), kCompressedBound);
}

TEST_P(ServerOptionsTest, WithoutCompressionResponsesGoAsTheyAre) {
  start([](Server::Builder&) {}, echo_);
  EXPECT_EQ(python_call({"--size", std::to_string(kLargeMessage)}), "calling\nreply 100000\n");
  EXPECT_GT(proxy_->to_client(), kLargeMessage);
}

TEST_P(ServerOptionsTest, MessageSizeLimitsOfTheServer) {
  start([](Server::Builder& b) { b.max_receive_message_size(1000).max_send_message_size(2000); },
        echo_);
  EXPECT_EQ(python_call({"--size", "900"}), "calling\nreply 900\n");
  EXPECT_EQ(python_call({"--size", "1500"}), "calling\nerror RESOURCE_EXHAUSTED\n");
  server_->shutdown(kShutdownGrace);
  server_.reset();
  proxy_.reset();
  start([](Server::Builder& b) { b.max_send_message_size(2000); }, second_echo_);
  EXPECT_EQ(python_call({"--size", "3000"}), "calling\nerror RESOURCE_EXHAUSTED\n");
}

// With keepalive, the server notices a client that stopped answering (SIGSTOP) and cancels its
// handler, instead of holding the call until the handler ends by itself.
TEST_P(ServerOptionsTest, KeepaliveCancelsTheCallsOfAClientThatStoppedAnswering) {
  start([](Server::Builder& b) { b.keepalive({.time = 500ms, .timeout = 500ms}); }, echo_);
  std::string error;
  auto client = Subprocess::start(
      python("call_echo.py", {"--target", target(server_->port()), "--delay-ms", "60000"}),
      python_env(), &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(wait_until([&] { return echo_.observed.calls.load() == 1; }, "the call to start"));
  ASSERT_TRUE(client->send_signal(SIGSTOP));
  EXPECT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  client->send_signal(SIGKILL);
}

// A server tolerates clients' pings no more often than min_ping_interval (5 minutes by default,
// and never without calls): a client that pings every 200 ms on an idle connection is sent
// GOAWAY (too_many_pings) and leaves READY. With min_ping_interval and permit_without_calls the
// same client keeps its connection: it stays READY through ten of its pings.
TEST_P(ServerOptionsTest, MinPingIntervalDecidesWhetherAPingingClientIsToldToGoAway) {
  auto deadline = [](auto in) { return std::chrono::system_clock::now() + in; };
  auto pinging = [&] {
    return Channel::Builder(target(server_->port()))
        .keepalive({.time = 200ms, .timeout = 10s, .permit_without_calls = true})
        .build()
        .value();
  };
  start([](Server::Builder&) {}, echo_);
  Channel strict = pinging();
  ASSERT_TRUE(run(strict.wait_until_ready(deadline(kWaitBound))));
  EXPECT_TRUE(run(strict.wait_for_state_change(ConnectivityState::kReady, deadline(kWaitBound))))
      << "a server with the default ping policy kept a client that pings every 200 ms";

  server_->shutdown(kShutdownGrace);
  server_.reset();
  proxy_.reset();
  start(
      [](Server::Builder& b) {
        b.min_ping_interval(100ms).keepalive({.permit_without_calls = true});
      },
      second_echo_);
  Channel tolerated = pinging();
  ASSERT_TRUE(run(tolerated.wait_until_ready(deadline(kWaitBound))));
  EXPECT_FALSE(run(tolerated.wait_for_state_change(ConnectivityState::kReady, deadline(2s))))
      << "the connection went " << connectivity_state_name(tolerated.state());
}

// max_connection_idle closes a connection that carries no call; the channel sees it go (and
// reconnects on its next call).
TEST_P(ServerOptionsTest, MaxConnectionIdleClosesAQuietConnection) {
  start([](Server::Builder& b) { b.max_connection_idle(300ms); }, echo_);
  Channel channel = Channel::Builder(target(server_->port())).build().value();
  auto r = run(EchoClient(channel).Echo(EchoRequest(), bounded()));
  ASSERT_TRUE(r.ok()) << r.status();
  // On a loaded machine the idle time may already have run out by now.
  if (channel.state() == ConnectivityState::kReady) {
    EXPECT_TRUE(run(channel.wait_for_state_change(ConnectivityState::kReady,
                                                  std::chrono::system_clock::now() + kWaitBound)));
  }
  EXPECT_NE(channel.state(), ConnectivityState::kReady);
  r = run(EchoClient(channel).Echo(EchoRequest(), bounded()));
  EXPECT_TRUE(r.ok()) << r.status();
}

// max_connection_age closes a connection however busy, after letting its calls finish.
TEST_P(ServerOptionsTest, MaxConnectionAgeClosesAConnectionAndLetsItsCallsFinish) {
  start([](Server::Builder& b) { b.max_connection_age(300ms, 30s); }, echo_);
  Channel channel = Channel::Builder(target(server_->port())).build().value();
  ASSERT_TRUE(run(channel.wait_until_ready(std::chrono::system_clock::now() + kWaitBound)));
  // A call that outlives the connection's age: it still finishes within the grace.
  EchoRequest slow;
  slow.set_delay_ms(1000);
  slow.set_message("outlived");
  auto r = run(EchoClient(channel).Echo(slow, bounded()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "outlived");
  if (channel.state() == ConnectivityState::kReady) {
    EXPECT_TRUE(run(channel.wait_for_state_change(ConnectivityState::kReady,
                                                  std::chrono::system_clock::now() + kWaitBound)));
  }
}

// The grace of max_connection_age ends: a call still running is cut off with the connection
// (UNAVAILABLE), and its handler is cancelled.
TEST_P(ServerOptionsTest, MaxConnectionAgeGraceEndsTheCallsLeft) {
  start([](Server::Builder& b) { b.max_connection_age(300ms, 300ms); }, echo_);
  Channel channel = Channel::Builder(target(server_->port())).build().value();
  EchoRequest endless;
  endless.set_delay_ms(600'000);
  auto r = run(EchoClient(channel).Echo(endless, bounded()));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

// milliseconds::max(), the usual way to write "never", means never (grpc core clamps it to its
// own "never"): the connection is neither closed nor pinged to death at once.
TEST_P(ServerOptionsTest, ConnectionLimitsOfMillisecondsMaxMeanNever) {
  start(
      [](Server::Builder& b) {
        constexpr auto never = std::chrono::milliseconds::max();
        b.max_connection_idle(never)
            .max_connection_age(never, never)
            .keepalive({.time = never, .timeout = never});
      },
      echo_);
  Channel channel = Channel::Builder(target(server_->port())).build().value();
  for (int i = 0; i < 2; ++i) {
    auto r = run(EchoClient(channel).Echo(EchoRequest(), bounded()));
    ASSERT_TRUE(r.ok()) << r.status();
    // Without a GOAWAY the connection is still the channel's.
    EXPECT_EQ(channel.state(), ConnectivityState::kReady);
  }
}

// One stream per connection: a second call waits until the first is done. (Without the limit,
// the second call would be answered at once, within its 2 s.)
TEST_P(ServerOptionsTest, MaxConcurrentStreamsQueuesTheCallsBeyondIt) {
  start([](Server::Builder& b) { b.max_concurrent_streams(1); }, echo_);
  Channel channel = Channel::Builder(target(server_->port())).build().value();
  EchoRequest slow;
  slow.set_delay_ms(60'000);
  auto first = runtime_->spawn(EchoClient(channel).Echo(slow, bounded()));
  ASSERT_TRUE(wait_until([&] { return echo_.observed.calls.load() == 1; }, "the first call"));
  auto second = run(EchoClient(channel).Echo(EchoRequest(), CallOptions().set_timeout(2s)));
  EXPECT_EQ(second.status().code(), StatusCode::kDeadlineExceeded) << second.status();
  EXPECT_EQ(echo_.observed.calls.load(), 1);
  first.abort();
}

// ------------------------------------------------------ connectivity

TEST(ChannelStateTest, WaitUntilReadyTimesOutWithoutAServerAndWaitForStateChangeSeesIt) {
  auto runtime = Runtime::multi_thread().worker_threads(1).build();
  // Port 1: privileged, and nobody here listens on it.
  Channel channel = Channel::Builder("127.0.0.1:1").build().value();
  EXPECT_EQ(channel.state(), ConnectivityState::kIdle);
  EXPECT_FALSE(
      run_bounded(*runtime, channel.wait_until_ready(std::chrono::system_clock::now() + 200ms)));
  EXPECT_NE(channel.state(), ConnectivityState::kReady);
  EXPECT_EQ(connectivity_state_name(ConnectivityState::kTransientFailure), "TRANSIENT_FAILURE");
  runtime->shutdown(kShutdownGrace);
}

// ------------------------------------------------------------------------- open-file limit

rlimit open_file_limit() {
  rlimit lim{};
  EXPECT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
  return lim;
}

// The runtime raises the soft limit to the hard one when it starts, and says so on stderr.
TEST(OpenFileLimit, RuntimeRaisesTheSoftLimitAndSaysSo) {
  if (open_file_limit().rlim_max <= 256) {
    GTEST_SKIP() << "the hard open-file limit is " << open_file_limit().rlim_max
                 << ": a soft limit below it cannot be set up";
  }
  ChildServer server({"/bin/sh", "-c", "ulimit -Sn 256 && exec \"$0\"", TRELLIS_TEST_ECHO_SERVER},
                     Subprocess::Env{}, deadline_in(kWaitBound));
  ASSERT_EQ(server.error(), "");
  EXPECT_NE(server.process().output().find(
                "raised the open-file limit (RLIMIT_NOFILE) from 256 to its hard limit"),
            std::string::npos)
      << server.process().output();
  // Not stopped with SIGTERM: the signal could land before the server waits for it (the
  // ChildServer's destructor kills it).
}

// A server that needs more descriptors than the hard limit allows does not start, and says
// which limit is in the way.
TEST(OpenFileLimit, ServerNeedingMoreThanTheHardLimitFailsNamingIt) {
  std::string error;
  auto child = Subprocess::start({"/bin/sh", "-c", "ulimit -n 256 && exec \"$0\" \"$@\"",
                                  TRELLIS_TEST_ECHO_SERVER, "--min-open-files", "10000"},
                                 Subprocess::Env{}, &error);
  ASSERT_NE(child, nullptr) << error;
  ExitStatus status = child->wait(deadline_in(kWaitBound));
  EXPECT_TRUE(status.exited && status.exit_code == 1) << status.describe();
  const std::string& out = child->output();
  EXPECT_NE(out.find("RESOURCE_EXHAUSTED"), std::string::npos) << out;
  EXPECT_NE(out.find("needs 10000 open files"), std::string::npos) << out;
  EXPECT_NE(out.find("RLIMIT_NOFILE: soft limit 256, hard limit 256"), std::string::npos) << out;
}

// In process: the check reads the limits as they are now; a need within them builds.
TEST(OpenFileLimit, MinOpenFilesWithinTheLimitBuilds) {
  rlimit lim = open_file_limit();
  if (lim.rlim_cur == RLIM_INFINITY) GTEST_SKIP() << "no open-file limit to test against";
  auto runtime = Runtime::single_thread().build();
  EchoImpl echo;
  auto over = Server::Builder(*runtime)
                  .add_insecure_port("127.0.0.1:0")
                  .add_service(echo)
                  .min_open_files(lim.rlim_cur + 1)
                  .build();
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  auto within = Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(echo)
                    .min_open_files(lim.rlim_cur)
                    .build();
  ASSERT_TRUE(within.ok()) << within.status().to_string();
  (*within)->shutdown(kShutdownGrace);
}

}  // namespace
}  // namespace trellis::testing
