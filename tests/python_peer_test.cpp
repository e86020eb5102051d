// Trellis against python3-grpcio peers nobody here wrote, over real loopback sockets:
//  - PythonClientPeerTest: tests/python/echo_client.py runs its battery against a Trellis server.
//  - PythonServerPeerTest: the Trellis client against tests/python/echo_server.py.
// The python peers run as child processes (tests/subprocess.hpp), each bounded by a deadline.
#include "python_peer.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "client_checks.hpp"
#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "subprocess.hpp"
#include "trellis/client.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kCallTimeout = 30s;   // deadline of every call expected to succeed
constexpr auto kStartBound = 30s;    // a python peer must be serving by then
constexpr auto kBatteryBound = 60s;  // the whole python client battery
constexpr int kConcurrentCalls = 1000;

EchoRequest with_message(std::string m) {
  EchoRequest req;
  req.set_message(std::move(m));
  return req;
}

// ------------------------------------------------------------- the child-process helper itself

std::vector<std::string> python_code(const std::string& code) {
  return {TRELLIS_TEST_PYTHON, "-c", code};
}

TEST(PeerSubprocessTest, ReportsExitCodeOutputAndEnvironment) {
  auto run = run_with_deadline(python_code("import os, sys\n"
                                           "print('out ' + os.environ['TRELLIS_PROBE'])\n"
                                           "print('err', file=sys.stderr)\n"
                                           "sys.exit(3)"),
                               {{"TRELLIS_PROBE", "value"}}, deadline_in(kStartBound));
  EXPECT_TRUE(run.status.exited) << run.status.describe();
  EXPECT_EQ(run.status.exit_code, 3);
  EXPECT_FALSE(run.status.success());
  EXPECT_NE(run.output.find("out value\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("err\n"), std::string::npos) << run.output;
}

TEST(PeerSubprocessTest, KillsAChildThatRunsPastItsDeadline) {
  std::string error;
  // Blocks reading its stdin, which stays open: it never ends by itself.
  auto child = Subprocess::start(python_code("import sys; sys.stdin.read()"), {}, &error);
  ASSERT_TRUE(child) << error;
  ExitStatus s = child->wait(deadline_in(200ms));
  EXPECT_TRUE(s.timed_out);
  EXPECT_EQ(s.term_signal, SIGKILL);
  EXPECT_FALSE(s.success());
}

TEST(PeerSubprocessTest, ReadsLinesUntilDeadlineOrEnd) {
  std::string error;
  auto child = Subprocess::start(
      python_code("import sys\nprint('one'); print('two 2', flush=True)\nsys.stdin.read()\n"
                  "print('after stdin')"),
      {}, &error);
  ASSERT_TRUE(child) << error;
  EXPECT_EQ(child->wait_for_line("two", deadline_in(kStartBound)), "two 2");
  EXPECT_EQ(child->wait_for_line("one", deadline_in(100ms)), std::nullopt)
      << "lines already passed are not seen again, and the wait ends at the deadline";
  child->close_stdin();
  EXPECT_EQ(child->wait_for_line("after", deadline_in(kStartBound)), "after stdin");
  EXPECT_EQ(child->wait_for_line("more", deadline_in(kStartBound)), std::nullopt)
      << "the output ended";
  EXPECT_TRUE(child->wait(deadline_in(kStartBound)).success());
  EXPECT_FALSE(child->send_signal(SIGTERM)) << "a reaped child cannot be signalled";
}

TEST(PeerSubprocessTest, MissingProgramIsAnError) {
  std::string error;
  EXPECT_EQ(Subprocess::start({"/nonexistent/program"}, {}, &error), nullptr);
  EXPECT_NE(error.find("/nonexistent/program"), std::string::npos) << error;
}

// ------------------------------------------------------------- python client, Trellis server

class PythonClientPeerTest : public EndToEndTest, public TransportParam {
 protected:
  void SetUp() override {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    auto server = Server::Builder(*runtime_)
                      .transport(transport())
                      .add_insecure_port("127.0.0.1:0")
                      .add_service(echo_)
                      .build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  EchoImpl echo_;
};

TRELLIS_BOTH_TRANSPORTS(PythonClientPeerTest);

TEST_P(PythonClientPeerTest, BatteryPassesAgainstTrellisServer) {
  auto run = run_with_deadline(
      python("echo_client.py", {"--target", "127.0.0.1:" + std::to_string(server_->port())}),
      python_env(), deadline_in(kBatteryBound));
  EXPECT_TRUE(run.status.success())
      << "echo_client.py " << run.status.describe() << "; its output:\n"
      << run.output;
  EXPECT_NE(run.output.find(" passed, 0 failed"), std::string::npos) << run.output;
  EXPECT_GE(echo_.observed.calls.load(), kConcurrentCalls + 16);
}

// The Trellis side of the battery's deadline check: a python client's deadline that passes while
// the handler waits cuts the handler's wait short. The check runs alone, its deadline growing
// until a call has reached the handler.
TEST_P(PythonClientPeerTest, ClientDeadlineCancelsTheHandler) {
  auto started = [&] { return echo_.observed.calls.load() > 0; };
  RunResult last = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        return run_with_deadline(
            python("echo_client.py",
                   {"--target", "127.0.0.1:" + std::to_string(server_->port()), "--only-deadline",
                    "--deadline-ms", std::to_string(timeout.count())}),
            python_env(), deadline_in(kBatteryBound));
      },
      started);
  ASSERT_TRUE(started()) << "no call reached the handler before its deadline";
  EXPECT_TRUE(last.status.success())
      << "echo_client.py " << last.status.describe() << "; its output:\n"
      << last.output;
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

// ------------------------------------------------------------- Trellis client, python server

class PythonServerPeerTest : public EndToEndTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(python_.error().empty()) << python_.error();
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(python_.port()));
  }
  // The Trellis client's runtime first (and its leak check), then the peer.
  void TearDown() override {
    EndToEndTest::TearDown();
    // Close the connection first: a grpc server's graceful stop waits for its connections to go.
    channel_ = Channel(nullptr);
    if (python_.error().empty()) {
      ExitStatus s = python_.stop(deadline_in(kStartBound));
      EXPECT_TRUE(s.success()) << "echo_server.py " << s.describe() << "; its output:\n"
                               << python_.process().output();
    }
  }

  Result<EchoResponse> call(const EchoRequest& req, CallOptions options) {
    if (!options.deadline()) options.set_timeout(kCallTimeout);
    EchoClient client(channel_);
    return run(client.Echo(req, std::move(options)));
  }
  Result<EchoResponse> call(const EchoRequest& req) { return call(req, CallOptions()); }

  // A call without a gRPC deadline, still bounded: it is cancelled if it runs past kCallTimeout.
  static Task<Result<EchoResponse>> call_without_deadline(Channel channel, EchoRequest req) {
    using namespace boost::asio::experimental::awaitable_operators;
    EchoClient client(channel);
    auto r = co_await (client.Echo(req) || sleep_for(kCallTimeout));
    if (r.index() == 1) co_return Status::deadline_exceeded("the test's bound passed");
    co_return std::get<0>(std::move(r));
  }

  // Whether the server has printed `line` (the whole line) after what earlier waits have read,
  // by `deadline`.
  bool printed(const std::string& line, Deadline deadline) {
    for (;;) {
      auto next = python_.process().wait_for_line(line, deadline);
      if (!next) return false;
      if (*next == line) return true;
    }
  }

  PythonServer python_;
  Channel channel_{nullptr};
};

TEST_F(PythonServerPeerTest, Succeeds) {
  auto r = call(with_message("hello"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "hello");
  EXPECT_GT(r->remaining_deadline_ms(), 0);
  EXPECT_LE(r->remaining_deadline_ms(), 31'000);
  EXPECT_NE(r->peer().find("127.0.0.1"), std::string::npos) << r->peer();
}

TEST_F(PythonServerPeerTest, SucceedsWithoutDeadline) {
  auto r = run(call_without_deadline(channel_, with_message("no deadline")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "no deadline");
  EXPECT_EQ(r->remaining_deadline_ms(), -1);
}

TEST_F(PythonServerPeerTest, EveryStatusCodeRoundTripsWithMessageAndDetails) {
  CheckEveryStatusCodeRoundTrips(
      [this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_F(PythonServerPeerTest, MetadataTravelsBothWaysTextAndBinary) {
  CheckMetadataTravelsBothWays([this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_F(PythonServerPeerTest, TrailersAndDetailsOnAnError) {
  CheckTrailersAndDetailsOnAnError(
      [this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_F(PythonServerPeerTest, DeadlineExceededOnClientAndSeenByServer) {
  // Each attempt has a message of its own, so that the server's lines tell the attempts apart. An
  // attempt counts once the server has said its handler started (the line may take as long as
  // the attempt's timeout to arrive).
  int attempts = 0;
  bool started = false;
  auto message = [](int attempt) { return "slow call " + std::to_string(attempt) + "."; };
  auto r = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        EchoRequest req;
        req.set_message(message(++attempts));
        req.set_delay_ms(60'000);
        CallOptions options;
        options.set_timeout(timeout);
        auto result = call(req, options);
        started = printed("handler started: " + message(attempts), deadline_in(timeout));
        return result;
      },
      [&] { return started; });
  ASSERT_TRUE(started) << "no call reached the handler before its deadline; the server said:\n"
                       << python_.process().output();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  // The server's handler reports that its wait was cut short.
  EXPECT_TRUE(printed("handler cancelled: " + message(attempts), deadline_in(kCallTimeout)))
      << python_.process().output();
}

TEST_F(PythonServerPeerTest, AbortedClientCallIsCancelledOnTheServer) {
  EchoRequest req;
  req.set_message("aborted call");
  req.set_delay_ms(60'000);
  CallOptions options;
  options.set_timeout(kCallTimeout);  // bounds the call should the abort not work
  EchoClient client(channel_);
  auto handle = runtime_->spawn(client.Echo(req, options));
  // Abort once the handler runs, so the cancellation has to cross the wire.
  auto started = python_.process().wait_for_line("handler started: ", deadline_in(kCallTimeout));
  handle.abort();
  auto r = run(handle.join());
  ASSERT_EQ(started, "handler started: aborted call") << python_.process().output();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status();
  auto cancelled =
      python_.process().wait_for_line("handler cancelled: ", deadline_in(kCallTimeout));
  EXPECT_EQ(cancelled, "handler cancelled: aborted call") << python_.process().output();
}

TEST_F(PythonServerPeerTest, UnknownMethodAndServiceAreUnimplemented) {
  UnaryClientMethod<EchoRequest, EchoResponse> missing_method(channel_,
                                                              "/trellis.testing.Echo/Nope");
  UnaryClientMethod<EchoRequest, EchoResponse> missing_service(channel_, "/no.Such/Echo");
  for (auto* m : {&missing_method, &missing_service}) {
    CallOptions options;
    options.set_timeout(kCallTimeout);
    auto r = run((*m)(with_message("x"), options));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status();
  }
}

TEST_F(PythonServerPeerTest, ThousandConcurrentCallsOnOneChannel) {
  EchoClient client(channel_);
  std::vector<JoinHandle<Result<EchoResponse>>> handles;
  handles.reserve(kConcurrentCalls);
  for (int i = 0; i < kConcurrentCalls; ++i) {
    CallOptions options;
    options.set_timeout(kCallTimeout);
    handles.push_back(runtime_->spawn(client.Echo(with_message(std::to_string(i)), options)));
  }
  int succeeded = 0;
  std::string first_error;
  for (int i = 0; i < kConcurrentCalls; ++i) {
    auto r = run(handles[i].join());
    if (r.ok() && r->message() == std::to_string(i)) {
      ++succeeded;
    } else if (first_error.empty()) {
      first_error = r.ok() ? "wrong message " + r->message() : r.status().to_string();
    }
  }
  EXPECT_EQ(succeeded, kConcurrentCalls) << "first error: " << first_error;
}

// The battery run against the reference server: evidence that the battery and the reference
// server agree with each other, so a failure against Trellis points at Trellis. grpcio answers a
// throwing handler UNKNOWN where Trellis answers INTERNAL.
TEST_F(PythonServerPeerTest, ReferenceBatteryPassesAgainstPythonServer) {
  auto run = run_with_deadline(
      python("echo_client.py", {"--target", "127.0.0.1:" + std::to_string(python_.port()),
                                "--throw-code", "UNKNOWN"}),
      python_env(), deadline_in(kBatteryBound));
  EXPECT_TRUE(run.status.success())
      << "echo_client.py " << run.status.describe() << "; its output:\n"
      << run.output;
}

}  // namespace
}  // namespace trellis::testing
