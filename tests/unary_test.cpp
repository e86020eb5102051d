// End-to-end unary calls: a Trellis server and a Trellis client over real loopback sockets.
#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_future.hpp>
#include <filesystem>
#include <fstream>

#include "client_checks.hpp"
#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "trellis/client.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

class UnaryTest : public EndToEndTest, public TransportParam {
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
    target_ = "127.0.0.1:" + std::to_string(server_->port());
    channel_ = Channel::insecure(target_);
  }

  Result<EchoResponse> call(const EchoRequest& req, CallOptions options = {}) {
    EchoClient client(channel_);
    return run(client.Echo(req, std::move(options)));
  }

  bool handler_started() const { return echo_.observed.calls.load() > 0; }

  EchoImpl echo_;
  std::string target_;
  Channel channel_{nullptr};
};

TRELLIS_BOTH_TRANSPORTS(UnaryTest);

EchoRequest with_message(std::string m) {
  EchoRequest req;
  req.set_message(std::move(m));
  return req;
}

EchoRequest failing_with(StatusCode code) {
  EchoRequest req;
  req.set_status_code(static_cast<int>(code));
  return req;
}

TEST_P(UnaryTest, EchoesAndReportsPeer) {
  auto r = call(with_message("hello"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "hello");
  EXPECT_EQ(r->remaining_deadline_ms(), -1) << "no deadline was set";
  EXPECT_NE(r->peer().find("127.0.0.1"), std::string::npos) << r->peer();
}

TEST_P(UnaryTest, EveryStatusCodeRoundTripsWithMessageAndDetails) {
  CheckEveryStatusCodeRoundTrips(
      [this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_P(UnaryTest, MetadataTravelsBothWaysTextAndBinary) {
  CheckMetadataTravelsBothWays([this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_P(UnaryTest, ServerSeesTheClientDeadline) {
  CallOptions options;
  options.set_timeout(20s);
  auto r = call(with_message("d"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->remaining_deadline_ms(), 0);
  // grpc-timeout is rounded up on the wire, so allow its resolution.
  EXPECT_LE(r->remaining_deadline_ms(), 21000);
}

TEST_P(UnaryTest, DeadlineExceededOnClientAndHandlerCancelled) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  auto r = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        CallOptions options;
        options.set_timeout(timeout);
        return call(req, options);
      },
      [&] { return handler_started(); });
  ASSERT_TRUE(handler_started()) << "no call reached the handler before its deadline";
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

TEST_P(UnaryTest, ClientCancellationReachesHandler) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  EchoClient client(channel_);
  auto handle = runtime_->spawn(client.Echo(req));
  // Cancel once the handler is running, so the cancellation has to cross the wire.
  ASSERT_TRUE(wait_until([&] { return handler_started(); }, "the handler to start"));
  handle.abort();
  auto r = run(handle.join());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

TEST_P(UnaryTest, AwaitableOrTimeoutCancelsTheCall) {
  using boost::asio::experimental::awaitable_operators::operator||;
  EchoRequest req;
  req.set_delay_ms(60'000);
  EchoClient client(channel_);
  auto winner = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        return run(
            [](EchoClient& c, EchoRequest r, std::chrono::milliseconds t) -> Task<std::size_t> {
              auto v = co_await (c.Echo(r) || sleep_for(t));
              co_return v.index();
            }(client, req, timeout));
      },
      [&] { return handler_started(); });
  ASSERT_TRUE(handler_started()) << "no call reached the handler before the timer fired";
  EXPECT_EQ(winner, 1u) << "the timer wins";
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline))
      << "the losing call was cancelled all the way to the server";
}

TEST_P(UnaryTest, UseFutureOnTheRuntimesExecutorGivesTheResponse) {
  EchoClient client(channel_);
  std::future<Result<EchoResponse>> future =
      client.Echo(with_message("future"), {},
                  boost::asio::bind_executor(runtime_->executor(), boost::asio::use_future));
  ASSERT_EQ(future.wait_for(kWaitBound), std::future_status::ready);
  Result<EchoResponse> r = future.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "future");
}

TEST_P(UnaryTest, CallbackTokenRunsOnTheRuntimeAndGetsTheErrorStatus) {
  EchoClient client(channel_);
  Executor worker = runtime_->executor();
  std::promise<std::pair<bool, Result<EchoResponse>>> done;
  client.Echo(failing_with(StatusCode::kNotFound), {},
              boost::asio::bind_executor(worker, [&](Result<EchoResponse> r) {
                done.set_value({worker.running_in_this_thread(), std::move(r)});
              }));
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(kWaitBound), std::future_status::ready);
  auto [on_worker, r] = future.get();
  EXPECT_TRUE(on_worker) << "the callback must run on its executor's worker";
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST_P(UnaryTest, DeferredTokenStartsTheCallOnlyWhenInvoked) {
  EchoClient client(channel_);
  auto deferred = client.Echo(with_message("later"), {}, boost::asio::deferred);
  EXPECT_EQ(echo_.observed.calls.load(), 0) << "a deferred operation must not start by itself";
  Result<EchoResponse> r = run([](auto op) -> Task<Result<EchoResponse>> {
    co_return co_await std::move(op);
  }(std::move(deferred)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "later");
}

TEST_P(UnaryTest, ATokenOffTheRuntimeFailsAsAwaitingOffTheRuntimeDoes) {
  EchoClient client(channel_);
  boost::asio::io_context io;  // a foreign executor: not a Trellis worker
  std::future<Result<EchoResponse>> future =
      client.Echo(with_message("x"), {}, boost::asio::bind_executor(io, boost::asio::use_future));
  io.run();
  ASSERT_EQ(future.wait_for(0s), std::future_status::ready) << "io.run() returned first";
  Result<EchoResponse> r = future.get();
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
  EXPECT_EQ(echo_.observed.calls.load(), 0);
}

TEST_P(UnaryTest, UnknownMethodAndServiceAreUnimplemented) {
  UnaryClientMethod<EchoRequest, EchoResponse> missing_method(channel_,
                                                              "/trellis.testing.Echo/Nope");
  UnaryClientMethod<EchoRequest, EchoResponse> missing_service(channel_, "/no.Such/Echo");
  for (auto* m : {&missing_method, &missing_service}) {
    auto r = run((*m)(with_message("x")));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  }
}

TEST_P(UnaryTest, ThrowingHandlerYieldsInternalAndServerLives) {
  EchoRequest req;
  req.set_throw_exception(true);
  auto r = call(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_EQ(r.status().message(), "internal error") << "no exception text leaks to clients";
  auto again = call(with_message("still here"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->message(), "still here");
}

TEST_P(UnaryTest, MalformedRequestBytesYieldInternal) {
  // BytesValue's field 1 is bytes; EchoRequest's field 1 is a proto3 string, which must be UTF-8.
  UnaryClientMethod<google::protobuf::BytesValue, EchoResponse> bogus(channel_,
                                                                      "/trellis.testing.Echo/Echo");
  google::protobuf::BytesValue not_utf8;
  not_utf8.set_value(std::string("\xff\xfe\xfd", 3));
  auto r = run(bogus(not_utf8));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("failed to parse request"), std::string::npos) << r.status();
  EXPECT_EQ(echo_.observed.calls.load(), 0) << "the handler never sees a malformed request";
  EXPECT_TRUE(call(with_message("alive")).ok());
}

TEST_P(UnaryTest, ThousandConcurrentCallsOnOneChannel) {
  EchoClient client(channel_);
  constexpr int kCalls = 1000;
  std::vector<JoinHandle<Result<EchoResponse>>> handles;
  handles.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    handles.push_back(runtime_->spawn(client.Echo(with_message(std::to_string(i)))));
  }
  int ok = 0;
  for (int i = 0; i < kCalls; ++i) {
    auto r = run(handles[i].join());
    if (r.ok() && r->message() == std::to_string(i)) ++ok;
  }
  EXPECT_EQ(ok, kCalls);
}

TEST_P(UnaryTest, GracefulShutdownLetsInFlightCallFinish) {
  EchoRequest req;
  req.set_message("slow");
  req.set_delay_ms(200);
  EchoClient client(channel_);
  auto handle = runtime_->spawn(client.Echo(req));
  ASSERT_TRUE(wait_until([&] { return handler_started(); }, "the handler to start"));
  server_->shutdown(30'000ms);
  auto r = run(handle.join());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "slow");
  EXPECT_FALSE(echo_.observed.handler_cancelled.HasBeenNotified());
}

TEST_P(UnaryTest, ShutdownAfterGraceCancelsHandlers) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  EchoClient client(channel_);
  auto handle = runtime_->spawn(client.Echo(req));
  ASSERT_TRUE(wait_until([&] { return handler_started(); }, "the handler to start"));
  server_->shutdown(0ms);
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  auto r = run(handle.join());
  EXPECT_FALSE(r.ok());
}

TEST_P(UnaryTest, CallAfterShutdownFailsUnavailable) {
  server_->shutdown();
  CallOptions options;
  options.set_timeout(10s);
  auto r = call(with_message("x"), options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

// Tests that build their own servers on the fixture's runtime: locals, declared after the
// services they serve, so that they are gone before TearDown shuts the runtime down.
using TargetTest = EndToEndTest;
using ServerBuildTest = EndToEndTest;
using ClientTest = EndToEndTest;

class ListenTest : public EndToEndTest, public TransportParam {};
TRELLIS_BOTH_TRANSPORTS(ListenTest);

// The server listens on TCP, a unix socket and an abstract unix socket at once; clients reach it
// by each kind of target.
TEST_P(ListenTest, UnixDnsAndIpv4TargetsReachTheServer) {
  runtime_ = Runtime::multi_thread().worker_threads(2).build();
  EchoImpl echo;
  char dir_template[] = "/tmp/trellis-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string socket_path = std::string(dir_template) + "/echo.sock";
  // Unique per run: abstract names live in the network namespace, not in a directory.
  std::string abstract_name = std::string("trellis-test-") + (dir_template + 5);
  auto server = Server::Builder(*runtime_)
                    .transport(transport())
                    .add_insecure_port("127.0.0.1:0")
                    .add_insecure_port("unix:" + socket_path)
                    .add_insecure_port("unix-abstract:" + abstract_name)
                    .add_service(echo)
                    .build();
  ASSERT_TRUE(server.ok()) << server.status();
  std::string port = std::to_string((*server)->ports()[0]);
  for (std::string target :
       {"unix:" + socket_path, "unix://" + socket_path, "unix-abstract:" + abstract_name,
        "dns:///127.0.0.1:" + port, "ipv4:127.0.0.1:" + port, "localhost:" + port}) {
    EchoClient client(Channel::insecure(target));
    CallOptions options;
    options.set_timeout(20s);
    auto r = run(client.Echo(with_message(target), options));
    ASSERT_TRUE(r.ok()) << target << ": " << r.status();
    EXPECT_EQ(r->message(), target);
  }
  (*server)->shutdown(kShutdownGrace);
  // The server removes its socket file when it shuts down.
  EXPECT_FALSE(std::filesystem::exists(socket_path));
  std::filesystem::remove_all(dir_template);
}

// A socket file left by a server that did not shut down (killed) does not stop the next one from
// listening at that path; a file that is not a socket does, and is left alone.
TEST_P(ListenTest, AStaleUnixSocketFileIsReplaced) {
  runtime_ = Runtime::single_thread().build();
  char dir_template[] = "/tmp/trellis-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string socket_path = std::string(dir_template) + "/echo.sock";
  {
    boost::asio::io_context io;
    boost::asio::local::stream_protocol::acceptor stale(
        io, boost::asio::local::stream_protocol::endpoint(socket_path));
  }  // closed, the file stays
  ASSERT_TRUE(std::filesystem::is_socket(socket_path));
  EchoImpl echo;
  auto server = Server::Builder(*runtime_)
                    .transport(transport())
                    .add_insecure_port("unix:" + socket_path)
                    .add_service(echo)
                    .build();
  ASSERT_TRUE(server.ok()) << server.status();
  CallOptions options;
  options.set_timeout(20s);
  auto r =
      run(EchoClient(Channel::insecure("unix:" + socket_path)).Echo(with_message("x"), options));
  ASSERT_TRUE(r.ok()) << r.status();
  (*server)->shutdown(kShutdownGrace);

  const std::string regular = std::string(dir_template) + "/regular";
  std::ofstream(regular) << "not a socket";
  EchoImpl other;
  auto refused = Server::Builder(*runtime_)
                     .transport(transport())
                     .add_insecure_port("unix:" + regular)
                     .add_service(other)
                     .build();
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(std::filesystem::is_regular_file(regular));
  std::filesystem::remove_all(dir_template);
}

TEST_F(ServerBuildTest, UnbindableAddressIsAnError) {
  runtime_ = Runtime::single_thread().build();
  EchoImpl echo;
  auto first =
      Server::Builder(*runtime_).add_insecure_port("127.0.0.1:0").add_service(echo).build();
  ASSERT_TRUE(first.ok());
  std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  EchoImpl other;
  auto second = Server::Builder(*runtime_).add_insecure_port(taken).add_service(other).build();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(taken), std::string::npos);
}

TEST_F(ServerBuildTest, TheNativeTransportRefusesConfigureAndBadAddresses) {
  runtime_ = Runtime::single_thread().build();
  EchoImpl echo;
  auto native = [&] {
    Server::Builder builder(*runtime_);
    builder.transport(Transport::native).add_service(echo);
    return builder;
  };
  auto expect_refused = [](Result<std::unique_ptr<Server>> server, StatusCode code,
                           std::string_view naming) {
    ASSERT_FALSE(server.ok());
    EXPECT_EQ(server.status().code(), code) << server.status();
    EXPECT_NE(server.status().message().find(naming), std::string::npos) << server.status();
  };
  expect_refused(
      native().add_insecure_port("127.0.0.1:0").configure([](grpc::ServerBuilder&) {}).build(),
      StatusCode::kUnimplemented, "configure");
  expect_refused(native().add_insecure_port("no port here").build(), StatusCode::kInvalidArgument,
                 "no port here");
  expect_refused(native().add_insecure_port("unix:").build(), StatusCode::kInvalidArgument,
                 "no socket path");
  expect_refused(native().add_insecure_port("unix:/" + std::string(200, 'x')).build(),
                 StatusCode::kInvalidArgument, "is over");
  // A directory that does not exist: UNAVAILABLE naming the address.
  expect_refused(native().add_insecure_port("unix:/nonexistent-dir/trellis.sock").build(),
                 StatusCode::kUnavailable, "unix:/nonexistent-dir/trellis.sock");
  // A port another server holds: UNAVAILABLE naming it, as on the grpc transport.
  EchoImpl holder;
  auto first =
      Server::Builder(*runtime_).add_insecure_port("127.0.0.1:0").add_service(holder).build();
  ASSERT_TRUE(first.ok()) << first.status();
  std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  expect_refused(native().add_insecure_port(taken).build(), StatusCode::kUnavailable, taken);
  // An abstract name has a NUL in front of it in sun_path: 106 bytes at most, refused above
  // (not thrown).
  expect_refused(native().add_insecure_port("unix-abstract:" + std::string(107, 'x')).build(),
                 StatusCode::kInvalidArgument, "is over 106 bytes");
  // Bound, then refused because its service is served already: the socket file goes with it.
  char dir_template[] = "/tmp/trellis-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string socket_path = std::string(dir_template) + "/echo.sock";
  Server::Builder second(*runtime_);
  second.transport(Transport::native).add_insecure_port("unix:" + socket_path).add_service(holder);
  expect_refused(second.build(), StatusCode::kFailedPrecondition, "already served");
  EXPECT_FALSE(std::filesystem::exists(socket_path));
  std::filesystem::remove_all(dir_template);
  EXPECT_EQ(parse_transport("native").value(), Transport::native);
  EXPECT_EQ(parse_transport("grpc").value(), Transport::grpc);
  EXPECT_EQ(parse_transport("h2").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ServerBuildTest, DuplicateServiceIsAnError) {
  runtime_ = Runtime::single_thread().build();
  EchoImpl a, b;
  auto s = Server::Builder(*runtime_)
               .add_insecure_port("127.0.0.1:0")
               .add_service(a)
               .add_service(b)
               .build();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kAlreadyExists);
}

TEST_F(ClientTest, UnreachableServerIsUnavailable) {
  runtime_ = Runtime::single_thread().build();
  // Bind a port, then release it, so nothing listens there.
  std::string target;
  {
    EchoImpl echo;
    auto s = Server::Builder(*runtime_).add_insecure_port("127.0.0.1:0").add_service(echo).build();
    ASSERT_TRUE(s.ok());
    target = "127.0.0.1:" + std::to_string((*s)->port());
  }
  EchoClient client(Channel::insecure(target));
  CallOptions options;
  options.set_timeout(20s);
  auto r = run(client.Echo(with_message("x"), options));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

TEST_F(ClientTest, AwaitingOffTheRuntimeIsAClearError) {
  EchoClient client(Channel::insecure("127.0.0.1:1"));
  boost::asio::io_context io;  // a foreign executor: not a Trellis worker
  std::optional<Result<EchoResponse>> result;
  boost::asio::co_spawn(io, client.Echo(with_message("x")),
                        [&](std::exception_ptr e, Result<EchoResponse> r) {
                          if (!e) result = std::move(r);
                        });
  io.run();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(result->status().message().find("Trellis runtime"), std::string::npos);
}

}  // namespace
}  // namespace trellis::testing
