// Trellis streams against plain grpc++ peers nobody here wrote, over real loopback sockets:
//  - GrpcStreamClientPeerTest: grpc++ sync stubs (grpc_cpp_plugin) against a Trellis server.
//  - GrpcStreamServerPeerTest: Trellis client streams against a grpc++ synchronous server.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <gtest/gtest.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "end_to_end.hpp"
#include "streamer_service.hpp"
#include "trellis/client_stream.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/testing/streamer.grpc.pb.h"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
constexpr auto kCallTimeout = 30s;

std::chrono::system_clock::time_point in(std::chrono::system_clock::duration d) {
  return std::chrono::system_clock::now() + d;
}

EchoRequest request(std::string message) {
  EchoRequest req;
  req.set_message(std::move(message));
  return req;
}

// ---------------------------------------------------------- grpc++ client, Trellis server

class GrpcStreamClientPeerTest : public EndToEndTest, public TransportParam {
 protected:
  void SetUp() override {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    auto server = Server::Builder(*runtime_)
                      .transport(transport())
                      .add_insecure_port("127.0.0.1:0")
                      .add_service(streamer_)
                      .build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    stub_ = Streamer::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                                  grpc::InsecureChannelCredentials()));
    ctx_.set_deadline(in(kCallTimeout));
  }

  StreamerImpl streamer_;
  std::unique_ptr<Streamer::Stub> stub_;
  grpc::ClientContext ctx_;
};

TRELLIS_BOTH_TRANSPORTS(GrpcStreamClientPeerTest);

TEST_P(GrpcStreamClientPeerTest, ServerStreaming) {
  auto reader = stub_->Split(&ctx_, request("alpha beta gamma"));
  std::vector<std::string> got;
  EchoResponse resp;
  while (reader->Read(&resp)) got.push_back(resp.message());
  grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(got, (std::vector<std::string>{"alpha", "beta", "gamma"}));
}

TEST_P(GrpcStreamClientPeerTest, ServerStreamingErrorAfterMessages) {
  EchoRequest req = request("a b");
  req.set_status_code(static_cast<int>(StatusCode::kOutOfRange));
  req.set_status_message("past the end");
  auto reader = stub_->Split(&ctx_, req);
  int got = 0;
  EchoResponse resp;
  while (reader->Read(&resp)) ++got;
  grpc::Status status = reader->Finish();
  EXPECT_EQ(got, 2);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(status.error_message(), "past the end");
}

TEST_P(GrpcStreamClientPeerTest, ClientStreaming) {
  EchoResponse resp;
  auto writer = stub_->Collect(&ctx_, &resp);
  for (const char* m : {"1", "2", "3", "4"}) ASSERT_TRUE(writer->Write(request(m)));
  ASSERT_TRUE(writer->WritesDone());
  grpc::Status status = writer->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(resp.message(), "1,2,3,4");
}

TEST_P(GrpcStreamClientPeerTest, BidiWithConcurrentWriterThread) {
  auto stream = stub_->Chat(&ctx_);
  constexpr int kMessages = 200;
  std::thread writer([&] {
    for (int i = 0; i < kMessages; ++i) {
      if (!stream->Write(request(std::to_string(i)))) break;
    }
    stream->WritesDone();
  });
  std::vector<std::string> got;
  EchoResponse resp;
  while (stream->Read(&resp)) got.push_back(resp.message());
  writer.join();
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(got[i], std::to_string(i));
}

TEST_P(GrpcStreamClientPeerTest, ClientCancelReachesTheHandler) {
  auto stream = stub_->Chat(&ctx_);
  ASSERT_TRUE(stream->Write(request("a")));
  EchoResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ctx_.TryCancel();
  EXPECT_FALSE(stream->Read(&resp));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(
      streamer_.observed.handler_saw_cancellation.WaitForNotificationWithTimeout(kTestDeadline));
  EXPECT_TRUE(streamer_.observed.is_cancelled_was_true);
}

TEST_P(GrpcStreamClientPeerTest, DeadlineMidStream) {
  // The deadline must pass once the call is under way: an attempt whose first echo did not come
  // back in time is made again with a longer deadline.
  bool echoed = false;
  grpc::StatusCode code = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        grpc::ClientContext ctx;
        ctx.set_deadline(in(timeout));
        auto stream = stub_->Chat(&ctx);
        EchoResponse resp;
        echoed = stream->Write(request("a")) && stream->Read(&resp);
        // Nothing more comes: the deadline ends the call.
        if (echoed && stream->Read(&resp)) return grpc::StatusCode::INTERNAL;
        return stream->Finish().error_code();
      },
      [&] { return echoed; });
  ASSERT_TRUE(echoed) << "no attempt got its echo before the deadline";
  EXPECT_EQ(code, grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(
      streamer_.observed.handler_saw_cancellation.WaitForNotificationWithTimeout(kTestDeadline));
}

// ---------------------------------------------------------- Trellis client, grpc++ server

// A synchronous grpc++ implementation of Streamer with the same contract as StreamerImpl
// (without delays and pumping).
class GrpcStreamer final : public Streamer::Service {
 public:
  absl::Notification chat_saw_cancellation;

  grpc::Status Split(grpc::ServerContext*, const EchoRequest* req,
                     grpc::ServerWriter<EchoResponse>* writer) override {
    std::vector<std::string> words = absl::StrSplit(req->message(), ' ', absl::SkipEmpty());
    for (const std::string& w : words) {
      EchoResponse resp;
      resp.set_message(w);
      if (!writer->Write(resp)) return grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
    }
    if (req->status_code() != 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(req->status_code()), req->status_message());
    }
    return grpc::Status::OK;
  }

  grpc::Status Collect(grpc::ServerContext*, grpc::ServerReader<EchoRequest>* reader,
                       EchoResponse* resp) override {
    std::vector<std::string> parts;
    EchoRequest req;
    while (reader->Read(&req)) parts.push_back(req.message());
    resp->set_message(absl::StrJoin(parts, ","));
    return grpc::Status::OK;
  }

  grpc::Status Chat(grpc::ServerContext* ctx,
                    grpc::ServerReaderWriter<EchoResponse, EchoRequest>* stream) override {
    EchoRequest req;
    while (stream->Read(&req)) {
      EchoResponse resp;
      resp.set_message(req.message());
      stream->Write(resp);
    }
    if (ctx->IsCancelled()) chat_saw_cancellation.Notify();
    return grpc::Status::OK;
  }
};

class GrpcStreamServerPeerTest : public EndToEndTest {
 protected:
  void SetUp() override {
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    grpc_server_ = builder.BuildAndStart();
    ASSERT_TRUE(grpc_server_ != nullptr && port != 0);
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(port));
    client_ = std::make_unique<StreamerClient>(channel_);
  }
  // The Trellis client's runtime first (and its leak check), then the peer.
  void TearDown() override {
    client_.reset();
    EndToEndTest::TearDown();
    if (grpc_server_) grpc_server_->Shutdown(in(5s));
  }

  CallOptions bounded() {
    CallOptions options;
    options.set_timeout(kCallTimeout);
    return options;
  }

  GrpcStreamer service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  Channel channel_{nullptr};
  std::unique_ptr<StreamerClient> client_;
};

TEST_F(GrpcStreamServerPeerTest, ServerStreaming) {
  auto [words, status] = run(
      [](StreamerClient* c, CallOptions o) -> Task<std::pair<std::vector<std::string>, Status>> {
        EchoRequest req = request("x y z");
        req.set_status_code(static_cast<int>(StatusCode::kDataLoss));
        req.set_status_message("lost");
        auto stream = c->Split(req, o);
        std::vector<std::string> words;
        while (auto resp = co_await stream.read()) words.push_back(resp->message());
        co_return std::pair{words, co_await stream.finish()};
      }(client_.get(), bounded()));
  EXPECT_EQ(words, (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(status.code(), StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "lost");
}

TEST_F(GrpcStreamServerPeerTest, ClientStreaming) {
  Result<EchoResponse> r = run([](StreamerClient* c, CallOptions o) -> Task<Result<EchoResponse>> {
    auto stream = c->Collect(o);
    for (const char* m : {"p", "q"}) co_await stream.write(request(m));
    co_return co_await stream.finish();
  }(client_.get(), bounded()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "p,q");
}

TEST_F(GrpcStreamServerPeerTest, BidiConcurrentReadAndWrite) {
  using namespace boost::asio::experimental::awaitable_operators;
  auto [count, status] = run([](StreamerClient* c, CallOptions o) -> Task<std::pair<int, Status>> {
    auto stream = c->Chat(o);
    auto write_all = [](ClientReaderWriter<EchoRequest, EchoResponse>& s) -> Task<void> {
      for (int i = 0; i < 300; ++i) {
        if (!co_await s.write(request(std::to_string(i)))) break;
      }
      co_await s.writes_done();
    };
    auto count_all = [](ClientReaderWriter<EchoRequest, EchoResponse>& s) -> Task<int> {
      int n = 0;
      while (auto resp = co_await s.read()) {
        if (resp->message() != std::to_string(n)) co_return -1;
        ++n;
      }
      co_return n;
    };
    int count = co_await (write_all(stream) && count_all(stream));
    co_return std::pair{count, co_await stream.finish()};
  }(client_.get(), bounded()));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(count, 300);
}

TEST_F(GrpcStreamServerPeerTest, TrellisCancelReachesTheGrpcHandler) {
  Status status = run([](StreamerClient* c, CallOptions o) -> Task<Status> {
    auto stream = c->Chat(o);
    co_await stream.write(request("a"));
    co_await stream.read();
    stream.cancel();
    co_return co_await stream.finish();
  }(client_.get(), bounded()));
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  EXPECT_TRUE(service_.chat_saw_cancellation.WaitForNotificationWithTimeout(kTestDeadline));
}

}  // namespace
}  // namespace trellis::testing
