// Trellis against plain grpc++ peers nobody here wrote, over real loopback sockets:
//  - GrpcClientPeerTest: a grpc++ client (stubs from grpc_cpp_plugin) against a Trellis server.
//  - GrpcServerPeerTest: the Trellis client against a grpc++ synchronous server.
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client_checks.hpp"
#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "trellis/client.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/testing/echo.grpc.pb.h"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
using GrpcMetadata = std::multimap<grpc::string_ref, grpc::string_ref>;

constexpr auto kCallTimeout = 30s;  // deadline of every call expected to succeed
constexpr int kConcurrentCalls = 1000;

std::chrono::system_clock::time_point in(std::chrono::system_clock::duration d) {
  return std::chrono::system_clock::now() + d;
}

EchoRequest with_message(std::string m) {
  EchoRequest req;
  req.set_message(std::move(m));
  return req;
}

std::string details_for(int code) { return std::string("\x00\x01\xfe", 3) + char(code); }

// The first value of `key` in grpc++ metadata.
std::optional<std::string> find(const GrpcMetadata& md, const std::string& key) {
  auto it = md.find(key);
  if (it == md.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

// Waits for the one completion of a single-call queue, bounded: a call still running at the
// bound is cancelled (and reported) so nothing outlives the test. Then drains the queue.
void finish_one(grpc::CompletionQueue& cq, grpc::ClientContext& ctx) {
  void* tag = nullptr;
  bool ok = false;
  if (cq.AsyncNext(&tag, &ok, in(kWaitBound)) != grpc::CompletionQueue::NextStatus::GOT_EVENT) {
    ADD_FAILURE() << "the call did not complete in time; cancelling it";
    ctx.TryCancel();
    cq.Next(&tag, &ok);
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

// ------------------------------------------------------------- grpc++ client, Trellis server

class GrpcClientPeerTest : public EndToEndTest, public TransportParam {
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
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = Echo::NewStub(channel_);
  }

  // A blocking call with the stock sync stub; bounded by a deadline unless `ctx` has one.
  grpc::Status call(const EchoRequest& req, EchoResponse* resp, grpc::ClientContext* ctx) {
    if (ctx->deadline() == std::chrono::system_clock::time_point::max()) {
      ctx->set_deadline(in(kCallTimeout));
    }
    return stub_->Echo(ctx, req, resp);
  }
  grpc::Status call(const EchoRequest& req, EchoResponse* resp) {
    grpc::ClientContext ctx;
    return call(req, resp, &ctx);
  }

  // A call of `method` through grpc::GenericStub (the path need not exist), bounded.
  grpc::Status generic_call(const std::string& method, const EchoRequest& req) {
    grpc::TemplatedGenericStub<EchoRequest, EchoResponse> generic(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(in(kCallTimeout));
    grpc::CompletionQueue cq;
    EchoResponse resp;
    grpc::Status status;
    auto reader = generic.PrepareUnaryCall(&ctx, method, req, &cq);
    reader->StartCall();
    reader->Finish(&resp, &status, &status);
    finish_one(cq, ctx);
    return status;
  }

  EchoImpl echo_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Echo::Stub> stub_;
};

TRELLIS_BOTH_TRANSPORTS(GrpcClientPeerTest);

TEST_P(GrpcClientPeerTest, Succeeds) {
  EchoResponse resp;
  grpc::Status s = call(with_message("hello"), &resp);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_EQ(resp.message(), "hello");
  EXPECT_GT(resp.remaining_deadline_ms(), 0);
  EXPECT_LE(resp.remaining_deadline_ms(), 31'000);
  EXPECT_NE(resp.peer().find("127.0.0.1"), std::string::npos) << resp.peer();
}

TEST_P(GrpcClientPeerTest, SucceedsWithoutDeadline) {
  // No grpc-timeout on the wire: the async stub, so the wait is still bounded.
  grpc::ClientContext ctx;
  grpc::CompletionQueue cq;
  EchoResponse resp;
  grpc::Status status;
  auto reader = stub_->AsyncEcho(&ctx, with_message("no deadline"), &cq);
  reader->Finish(&resp, &status, &status);
  finish_one(cq, ctx);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(resp.message(), "no deadline");
  EXPECT_EQ(resp.remaining_deadline_ms(), -1);
}

TEST_P(GrpcClientPeerTest, EveryStatusCodeRoundTripsWithMessageAndDetails) {
  for (int code = 1; code <= 16; ++code) {
    SCOPED_TRACE("code " + std::to_string(code));
    EchoRequest req;
    req.set_status_code(code);
    req.set_status_message("message for " + std::to_string(code));
    req.set_status_details(details_for(code));
    EchoResponse resp;
    grpc::Status s = call(req, &resp);
    EXPECT_EQ(static_cast<int>(s.error_code()), code);
    EXPECT_EQ(s.error_message(), req.status_message());
    EXPECT_EQ(s.error_details(), req.status_details());
  }
}

TEST_P(GrpcClientPeerTest, MetadataTravelsBothWaysTextAndBinary) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("echo-text", "plain value");
  ctx.AddMetadata("echo-data-bin", kBinaryValue);
  ctx.AddMetadata("not-echoed", "x");
  auto req = with_message("md");
  req.set_echo_metadata(true);
  EchoResponse resp;
  grpc::Status s = call(req, &resp, &ctx);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  for (const GrpcMetadata* md :
       {&ctx.GetServerInitialMetadata(), &ctx.GetServerTrailingMetadata()}) {
    EXPECT_EQ(find(*md, "echo-text"), "plain value");
    EXPECT_EQ(find(*md, "echo-data-bin"), kBinaryValue);
    EXPECT_EQ(find(*md, "not-echoed"), std::nullopt);
  }
}

TEST_P(GrpcClientPeerTest, TrailersAndDetailsOnAnError) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("echo-text", "on error");
  ctx.AddMetadata("echo-data-bin", kBinaryValue);
  EchoRequest req;
  req.set_echo_metadata(true);
  req.set_status_code(static_cast<int>(grpc::StatusCode::NOT_FOUND));
  req.set_status_message("gone");
  req.set_status_details("\x01\x02");
  EchoResponse resp;
  grpc::Status s = call(req, &resp, &ctx);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "gone");
  EXPECT_EQ(s.error_details(), "\x01\x02");
  EXPECT_EQ(find(ctx.GetServerTrailingMetadata(), "echo-text"), "on error");
  EXPECT_EQ(find(ctx.GetServerTrailingMetadata(), "echo-data-bin"), kBinaryValue);
}

TEST_P(GrpcClientPeerTest, DeadlineExceededAndHandlerCancelled) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  auto started = [&] { return echo_.observed.calls.load() > 0; };
  grpc::Status s = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        grpc::ClientContext ctx;
        ctx.set_deadline(in(timeout));
        EchoResponse resp;
        return call(req, &resp, &ctx);
      },
      started);
  ASSERT_TRUE(started()) << "no call reached the handler before its deadline";
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

TEST_P(GrpcClientPeerTest, ClientCancellationReachesHandler) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  grpc::ClientContext ctx;  // TryCancel is thread-safe; the call runs on `caller`
  ctx.set_deadline(in(kCallTimeout));
  grpc::Status status;
  std::thread caller([&] {
    EchoResponse resp;
    status = stub_->Echo(&ctx, req, &resp);
  });
  // Cancel once the handler runs, so the cancellation has to cross the wire.
  auto started =
      wait_until([&] { return echo_.observed.calls.load() > 0; }, "the handler to start");
  ctx.TryCancel();
  caller.join();  // bounded by the call's deadline
  ASSERT_TRUE(started);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  ASSERT_TRUE(echo_.observed.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(echo_.observed.saw_is_cancelled.load());
}

TEST_P(GrpcClientPeerTest, UnknownMethodAndServiceAreUnimplemented) {
  for (const char* method : {"/trellis.testing.Echo/Nope", "/no.Such/Echo"}) {
    SCOPED_TRACE(method);
    grpc::Status s = generic_call(method, with_message("x"));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << s.error_message();
  }
  EXPECT_EQ(echo_.observed.calls.load(), 0);
  // The real method through the same generic path works, so the stub itself is sound.
  EXPECT_TRUE(generic_call("/trellis.testing.Echo/Echo", with_message("x")).ok());
}

TEST_P(GrpcClientPeerTest, ThrowingHandlerYieldsInternalAndServerLives) {
  EchoRequest req;
  req.set_throw_exception(true);
  EchoResponse resp;
  grpc::Status s = call(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(s.error_message().find("exploded"), std::string::npos) << "exception text leaked";
  grpc::Status again = call(with_message("still here"), &resp);
  ASSERT_TRUE(again.ok()) << again.error_code() << ": " << again.error_message();
  EXPECT_EQ(resp.message(), "still here");
}

TEST_P(GrpcClientPeerTest, ThousandConcurrentCallsOnOneChannel) {
  struct Call {
    grpc::ClientContext ctx;
    EchoResponse resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<EchoResponse>> reader;
    bool done = false;
  };
  grpc::CompletionQueue cq;
  std::vector<Call> calls(kConcurrentCalls);
  for (int i = 0; i < kConcurrentCalls; ++i) {
    calls[i].ctx.set_deadline(in(kCallTimeout));
    calls[i].reader = stub_->AsyncEcho(&calls[i].ctx, with_message(std::to_string(i)), &cq);
    calls[i].reader->Finish(&calls[i].resp, &calls[i].status, &calls[i]);
  }
  // Every call is in flight before the first completion is taken.
  int completed = 0;
  const auto bound = in(kWaitBound + kCallTimeout);
  void* tag = nullptr;
  bool ok = false;
  while (completed < kConcurrentCalls &&
         cq.AsyncNext(&tag, &ok, bound) == grpc::CompletionQueue::NextStatus::GOT_EVENT) {
    static_cast<Call*>(tag)->done = true;
    ++completed;
  }
  if (completed < kConcurrentCalls) {
    ADD_FAILURE() << "only " << completed << " calls completed in time; cancelling the rest";
    for (auto& c : calls) {
      if (!c.done) c.ctx.TryCancel();
    }
    for (; completed < kConcurrentCalls && cq.Next(&tag, &ok); ++completed) {
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  int succeeded = 0;
  for (int i = 0; i < kConcurrentCalls; ++i) {
    if (calls[i].status.ok() && calls[i].resp.message() == std::to_string(i)) ++succeeded;
  }
  EXPECT_EQ(succeeded, kConcurrentCalls);
}

// ------------------------------------------------------------- Trellis client, grpc++ server

// A grpc++ synchronous Echo server that behaves like EchoImpl; a throwing request is answered the
// way Trellis answers a throwing handler (INTERNAL, "internal error").
class PlainEcho final : public Echo::Service {
 public:
  std::atomic<int> calls{0};
  absl::Notification delayed_handler_started;
  absl::Notification handler_cancelled;  // a delayed handler's wait was cut short

  grpc::Status Echo(grpc::ServerContext* ctx, const EchoRequest* req, EchoResponse* resp) override {
    calls.fetch_add(1);
    if (req->throw_exception()) return grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
    if (req->echo_metadata()) {
      for (const auto& [k, v] : ctx->client_metadata()) {
        std::string key(k.data(), k.size());
        if (!key.starts_with("echo-")) continue;
        ctx->AddInitialMetadata(key, std::string(v.data(), v.size()));
        ctx->AddTrailingMetadata(key, std::string(v.data(), v.size()));
      }
    }
    const auto deadline = ctx->deadline();
    if (req->delay_ms() > 0) {
      if (!started_once_.exchange(true)) delayed_handler_started.Notify();
      // The sync API has no wake-up on cancellation, only IsCancelled(); the handler's delay is
      // paced by a 1 ms tick. (This is the peer's behaviour, not a synchronisation of the test.)
      const absl::Time end = absl::Now() + absl::Milliseconds(req->delay_ms());
      while (!ctx->IsCancelled() && absl::Now() < end) {
        absl::SleepFor(std::min(absl::Milliseconds(1), end - absl::Now()));
      }
      if (ctx->IsCancelled()) {
        if (!cancelled_once_.exchange(true)) handler_cancelled.Notify();
        return grpc::Status(grpc::StatusCode::CANCELLED, "handler saw the cancellation");
      }
    }
    if (req->status_code() != 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(req->status_code()), req->status_message(),
                          req->status_details());
    }
    resp->set_message(req->message());
    if (deadline == std::chrono::system_clock::time_point::max()) {
      resp->set_remaining_deadline_ms(-1);
    } else {
      resp->set_remaining_deadline_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          deadline - std::chrono::system_clock::now())
                                          .count());
    }
    resp->set_peer(ctx->peer());
    return grpc::Status::OK;
  }

 private:
  std::atomic<bool> started_once_{false};
  std::atomic<bool> cancelled_once_{false};
};

class GrpcServerPeerTest : public EndToEndTest {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&plain_);
    grpc_server_ = builder.BuildAndStart();
    ASSERT_TRUE(grpc_server_ != nullptr && port != 0) << "the grpc++ server did not start";
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(port));
  }
  // The Trellis client's runtime first (and its leak check), then the peer.
  void TearDown() override {
    EndToEndTest::TearDown();
    // In-flight handlers see IsCancelled() and return, so this is quick.
    if (grpc_server_) grpc_server_->Shutdown(in(0ms));
    grpc_server_.reset();
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

  PlainEcho plain_;
  std::unique_ptr<grpc::Server> grpc_server_;
  Channel channel_{nullptr};
};

TEST_F(GrpcServerPeerTest, Succeeds) {
  auto r = call(with_message("hello"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "hello");
  EXPECT_GT(r->remaining_deadline_ms(), 0);
  EXPECT_LE(r->remaining_deadline_ms(), 31'000);
  EXPECT_NE(r->peer().find("127.0.0.1"), std::string::npos) << r->peer();
}

TEST_F(GrpcServerPeerTest, SucceedsWithoutDeadline) {
  auto r = run(call_without_deadline(channel_, with_message("no deadline")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "no deadline");
  EXPECT_EQ(r->remaining_deadline_ms(), -1);
}

TEST_F(GrpcServerPeerTest, EveryStatusCodeRoundTripsWithMessageAndDetails) {
  CheckEveryStatusCodeRoundTrips(
      [this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_F(GrpcServerPeerTest, MetadataTravelsBothWaysTextAndBinary) {
  CheckMetadataTravelsBothWays([this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_F(GrpcServerPeerTest, TrailersAndDetailsOnAnError) {
  CheckTrailersAndDetailsOnAnError(
      [this](const EchoRequest& r, CallOptions o) { return call(r, o); });
}

TEST_F(GrpcServerPeerTest, DeadlineExceededOnClientAndSeenByServer) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  auto started = [&] { return plain_.calls.load() > 0; };
  auto r = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        CallOptions options;
        options.set_timeout(timeout);
        return call(req, options);
      },
      started);
  ASSERT_TRUE(started()) << "no call reached the handler before its deadline";
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(plain_.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

TEST_F(GrpcServerPeerTest, AbortedClientCallIsCancelledOnTheServer) {
  EchoRequest req;
  req.set_delay_ms(60'000);
  CallOptions options;
  options.set_timeout(kCallTimeout);  // bounds the call should the abort not work
  EchoClient client(channel_);
  auto handle = runtime_->spawn(client.Echo(req, options));
  ASSERT_TRUE(plain_.delayed_handler_started.WaitForNotificationWithTimeout(kTestDeadline));
  handle.abort();
  auto r = run(handle.join());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status();
  EXPECT_TRUE(plain_.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

TEST_F(GrpcServerPeerTest, UnknownMethodAndServiceAreUnimplemented) {
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
  EXPECT_EQ(plain_.calls.load(), 0);
}

TEST_F(GrpcServerPeerTest, ThousandConcurrentCallsOnOneChannel) {
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
  EXPECT_EQ(plain_.calls.load(), kConcurrentCalls);
}

}  // namespace
}  // namespace trellis::testing
