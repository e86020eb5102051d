// End-to-end streaming calls of all three kinds: a Trellis server and a Trellis client over real
// loopback sockets. Every test ends by checking that no call object is left alive.
#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <utility>

#include "absl/strings/str_join.h"
#include "end_to_end.hpp"
#include "streamer_service.hpp"
#include "trellis/client_stream.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;

EchoRequest request(std::string message) {
  EchoRequest req;
  req.set_message(std::move(message));
  return req;
}

EchoRequest failing_request(StatusCode code, std::string message) {
  EchoRequest req;
  req.set_status_code(static_cast<int>(code));
  req.set_status_message(std::move(message));
  req.set_status_details("\x01\x02 details");
  return req;
}

class StreamTest : public EndToEndTest, public TransportParam {
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
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(server_->port()));
    client_ = std::make_unique<StreamerClient>(channel_);
  }

  // Sends a Chat request that does not parse (proto3 strings must be UTF-8) and gives the call's
  // status.
  Status chat_with_malformed_request() {
    BidiStreamingClientMethod<google::protobuf::BytesValue, EchoResponse> raw(
        channel_, "/trellis.testing.Streamer/Chat");
    return run([](BidiStreamingClientMethod<google::protobuf::BytesValue, EchoResponse>* m)
                   -> Task<Status> {
      auto stream = (*m)();
      google::protobuf::BytesValue bad;
      bad.set_value("\xff\xfe not UTF-8");  // field 1: EchoRequest.message, a string
      co_await stream.write(bad);
      co_return co_await stream.finish();
    }(&raw));
  }

  void expect_handler_saw_cancellation() {
    ASSERT_TRUE(
        streamer_.observed.handler_saw_cancellation.WaitForNotificationWithTimeout(kTestDeadline));
    EXPECT_TRUE(streamer_.observed.is_cancelled_was_true);
  }

  StreamerImpl streamer_;
  Channel channel_{nullptr};
  std::unique_ptr<StreamerClient> client_;
};

// Reads every remaining message of `stream` into a vector of their texts.
template <class Stream>
Task<std::vector<std::string>> read_all(Stream& stream) {
  std::vector<std::string> out;
  while (std::optional<EchoResponse> resp = co_await stream.read()) out.push_back(resp->message());
  co_return out;
}

TRELLIS_BOTH_TRANSPORTS(StreamTest);

TEST_P(StreamTest, ServerStreamingDeliversEveryMessageThenOk) {
  auto [messages, status] =
      run([](StreamerClient* c) -> Task<std::pair<std::vector<std::string>, Status>> {
        auto stream = c->Split(request("one two three"));
        auto messages = co_await read_all(stream);
        co_return std::pair{messages, co_await stream.finish()};
      }(client_.get()));
  EXPECT_EQ(messages, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_TRUE(status.ok()) << status;
}

// 2 MB of responses, far past any flow-control window: the handler's writes wait for the
// client to read (backpressure), and every message arrives whole and in order.
TEST_P(StreamTest, ServerStreamingPastTheFlowControlWindowArrivesWhole) {
  std::vector<std::string> words;
  for (int i = 0; i < 256; ++i)
    words.push_back(std::string(8 << 10, static_cast<char>('a' + i % 26)));
  auto [messages, status] = run(
      [](StreamerClient* c, std::string text) -> Task<std::pair<std::vector<std::string>, Status>> {
        auto stream = c->Split(request(text));
        auto messages = co_await read_all(stream);
        co_return std::pair{messages, co_await stream.finish()};
      }(client_.get(), absl::StrJoin(words, " ")));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(messages, words);
}

TEST_P(StreamTest, ServerStreamingEndsWithTheHandlersErrorAfterItsMessages) {
  EchoRequest req = failing_request(StatusCode::kFailedPrecondition, "no more words");
  req.set_message("a b");
  auto [messages, status] = run(
      [](StreamerClient* c, EchoRequest req) -> Task<std::pair<std::vector<std::string>, Status>> {
        auto stream = c->Split(req);
        auto messages = co_await read_all(stream);
        co_return std::pair{messages, co_await stream.finish()};
      }(client_.get(), req));
  EXPECT_EQ(messages, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "no more words");
  EXPECT_EQ(status.details(), "\x01\x02 details");
}

TEST_P(StreamTest, ServerStreamingFinishWithoutReadingDiscardsTheMessages) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    auto stream = c->Split(request("unread words are discarded"));
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_TRUE(status.ok()) << status;
}

TEST_P(StreamTest, ServerStreamingSendsHeadersAndTrailers) {
  ResponseMetadata md;
  EchoRequest req = request("x");
  req.set_echo_metadata(true);
  Status status = run([](StreamerClient* c, EchoRequest req, ResponseMetadata* md) -> Task<Status> {
    CallOptions options;
    options.add_metadata("echo-text", "hello")
        .add_metadata("echo-raw-bin", std::string("\0\xff", 2));
    options.capture_response_metadata(md);
    auto stream = c->Split(req, options);
    co_await read_all(stream);
    co_return co_await stream.finish();
  }(client_.get(), req, &md));
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(md.initial.get("echo-text"), "hello");
  EXPECT_EQ(md.trailing.get("echo-raw-bin"), std::string("\0\xff", 2));
}

TEST_P(StreamTest, ClientStreamingCollectsEveryRequest) {
  Result<EchoResponse> r = run([](StreamerClient* c) -> Task<Result<EchoResponse>> {
    auto stream = c->Collect();
    for (const char* m : {"x", "y", "z"}) {
      if (!co_await stream.write(request(m))) break;
    }
    co_return co_await stream.finish();
  }(client_.get()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "x,y,z");
  EXPECT_EQ(streamer_.observed.requests_read, 3);
}

TEST_P(StreamTest, ClientStreamingWithNoRequests) {
  Result<EchoResponse> r = run([](StreamerClient* c) -> Task<Result<EchoResponse>> {
    auto stream = c->Collect();
    co_return co_await stream.finish();
  }(client_.get()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "");
}

TEST_P(StreamTest, ClientStreamingFinishTakesACompletionToken) {
  Result<EchoResponse> r = run([](StreamerClient* c) -> Task<Result<EchoResponse>> {
    auto stream = c->Collect();
    co_await stream.write(request("p"));
    co_await stream.write(request("q"));
    co_return co_await stream.finish(boost::asio::deferred);
  }(client_.get()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "p,q");
}

TEST_P(StreamTest, ClientStreamingFinishWithUseFutureOnTheRuntimesExecutor) {
  auto stream = client_->Collect();
  auto future =
      stream.finish(boost::asio::bind_executor(runtime_->executor(), boost::asio::use_future));
  ASSERT_EQ(future.wait_for(kWaitBound), std::future_status::ready);
  Result<EchoResponse> r = future.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "");
}

TEST_P(StreamTest, ClientStreamingHandlerThatReturnsEarlyEndsTheCall) {
  Result<EchoResponse> r = run([](StreamerClient* c) -> Task<Result<EchoResponse>> {
    auto stream = c->Collect();
    co_await stream.write(request("a"));
    co_await stream.write(failing_request(StatusCode::kAborted, "stop here"));
    // The handler has returned (or soon will): later writes are taken or refused, never hang.
    for (int i = 0; i < 100; ++i) {
      if (!co_await stream.write(request("ignored"))) break;
    }
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(r.status().code(), StatusCode::kAborted);
  EXPECT_EQ(r.status().message(), "stop here");
}

TEST_P(StreamTest, BidiEchoesInOrder) {
  auto [echoed, status] = run([](StreamerClient* c) -> Task<std::pair<int, Status>> {
    auto stream = c->Chat();
    int echoed = 0;
    for (int i = 0; i < 100; ++i) {
      if (!co_await stream.write(request(std::to_string(i)))) break;
      std::optional<EchoResponse> resp = co_await stream.read();
      if (!resp || resp->message() != std::to_string(i)) break;
      ++echoed;
    }
    co_await stream.writes_done();
    std::optional<EchoResponse> after = co_await stream.read();
    co_return std::pair{after ? -1 : echoed, co_await stream.finish()};
  }(client_.get()));
  EXPECT_EQ(echoed, 100);
  EXPECT_TRUE(status.ok()) << status;
}

TEST_P(StreamTest, BidiEmptyStream) {
  auto [messages, status] =
      run([](StreamerClient* c) -> Task<std::pair<std::vector<std::string>, Status>> {
        auto stream = c->Chat();
        co_await stream.writes_done();
        auto messages = co_await read_all(stream);
        co_return std::pair{messages, co_await stream.finish()};
      }(client_.get()));
  EXPECT_TRUE(messages.empty());
  EXPECT_TRUE(status.ok()) << status;
}

// Both sides read and write at the same time from two tasks: the client writes 500 requests
// while reading; the server pumps 300 responses while reading.
TEST_P(StreamTest, BidiReadsAndWritesConcurrentlyOnBothSides) {
  auto [messages, status] =
      run([](StreamerClient* c) -> Task<std::pair<std::vector<std::string>, Status>> {
        auto stream = c->Chat();
        auto writer = [](ClientReaderWriter<EchoRequest, EchoResponse>& s) -> Task<void> {
          co_await s.write(request("pump:300"));
          for (int i = 0; i < 500; ++i) {
            if (!co_await s.write(request("r"))) break;
          }
          co_await s.writes_done();
        };
        auto messages = co_await (writer(stream) && read_all(stream));
        co_return std::pair{messages, co_await stream.finish()};
      }(client_.get()));
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(messages.size(), 301u);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(messages[i], "pump " + std::to_string(i));
  EXPECT_EQ(messages.back(), "read 500");
}

TEST_P(StreamTest, ClientCancelEndsTheHandlersPendingRead) {
  auto [got, status] = run([](StreamerClient* c) -> Task<std::pair<bool, Status>> {
    auto stream = c->Chat();
    co_await stream.write(request("a"));
    std::optional<EchoResponse> first = co_await stream.read();
    stream.cancel();  // the handler is now waiting in read()
    std::optional<EchoResponse> next = co_await stream.read();
    co_return std::pair{first.has_value() && !next.has_value(), co_await stream.finish()};
  }(client_.get()));
  EXPECT_TRUE(got);
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  expect_handler_saw_cancellation();
}

TEST_P(StreamTest, ClientCancelEndsTheHandlersPendingWait) {
  EchoRequest req = request("first second");
  req.set_delay_ms(600'000);
  Status status = run([](StreamerClient* c, EchoRequest req) -> Task<Status> {
    auto stream = c->Split(req);
    co_await stream.read();
    stream.cancel();
    co_return co_await stream.finish();
  }(client_.get(), req));
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  expect_handler_saw_cancellation();
}

TEST_P(StreamTest, DeadlineMidStreamEndsBothSides) {
  // The deadline must pass once the call is under way: an attempt whose first echo did not come
  // back in time is made again with a longer deadline.
  bool echoed = false;
  Status status = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        return run(
            [](StreamerClient* c, std::chrono::milliseconds timeout, bool* echoed) -> Task<Status> {
              CallOptions options;
              options.set_timeout(timeout);
              auto stream = c->Chat(options);
              co_await stream.write(request("a"));
              *echoed = (co_await stream.read()).has_value();
              // Neither side sends anything now: the deadline ends the call.
              std::optional<EchoResponse> none = co_await stream.read();
              if (none) co_return Status::internal("unexpected message");
              co_return co_await stream.finish();
            }(client_.get(), timeout, &echoed));
      },
      [&] { return echoed; });
  ASSERT_TRUE(echoed) << "no attempt got its echo before the deadline";
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status;
  expect_handler_saw_cancellation();
}

TEST_P(StreamTest, DroppingTheStreamCancelsTheCall) {
  bool echoed = run([](StreamerClient* c) -> Task<bool> {
    auto stream = c->Chat();
    co_await stream.write(request("a"));
    co_return (co_await stream.read()).has_value();
    // `stream` is destroyed here, mid-call.
  }(client_.get()));
  EXPECT_TRUE(echoed);
  expect_handler_saw_cancellation();
}

TEST_P(StreamTest, HandlerExceptionMidStreamIsInternal) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    auto stream = c->Chat();
    co_await stream.write(request("a"));
    co_await stream.read();
    EchoRequest boom;
    boom.set_throw_exception(true);
    co_await stream.write(boom);
    co_await read_all(stream);
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status;
  EXPECT_EQ(status.message(), "internal error");
}

TEST_P(StreamTest, ServerStreamingHandlerExceptionIsInternal) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    EchoRequest boom;
    boom.set_throw_exception(true);
    auto stream = c->Split(boom);
    co_await read_all(stream);
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status;
  EXPECT_EQ(status.message(), "internal error");
}

// A server-streaming method's request travels as the stream's first message; a client that
// half-closes without one gets INTERNAL, before any handler runs.
TEST_P(StreamTest, ServerStreamingCallWithoutItsRequestIsInternal) {
  BidiStreamingClientMethod<EchoRequest, EchoResponse> split(channel_,
                                                             "/trellis.testing.Streamer/Split");
  Status status = run([](BidiStreamingClientMethod<EchoRequest, EchoResponse>* m) -> Task<Status> {
    auto stream = (*m)();
    co_await stream.writes_done();
    co_return co_await stream.finish();
  }(&split));
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status;
  EXPECT_EQ(status.message(), "the client sent no request message");
}

TEST_P(StreamTest, UnknownStreamingMethodIsUnimplemented) {
  BidiStreamingClientMethod<EchoRequest, EchoResponse> nope(channel_,
                                                            "/trellis.testing.Streamer/Nope");
  Status status = run([](BidiStreamingClientMethod<EchoRequest, EchoResponse>* m) -> Task<Status> {
    auto stream = (*m)();
    co_await stream.write(request("a"));
    co_return co_await stream.finish();
  }(&nope));
  EXPECT_EQ(status.code(), StatusCode::kUnimplemented) << status;
}

TEST_P(StreamTest, TwoReadsAtOnceFailTheCall) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    auto stream = c->Chat();
    co_await (stream.read() && stream.read());
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("another read"), std::string::npos) << status;
}

TEST_P(StreamTest, TwoReadsAtOnceInAHandlerFailTheCall) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    auto stream = c->Chat();
    co_await stream.write(request("two-reads"));
    co_await stream.writes_done();
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("another read"), std::string::npos) << status;
}

TEST_P(StreamTest, WriteAfterWritesDoneFailsTheCall) {
  auto [wrote, status] = run([](StreamerClient* c) -> Task<std::pair<bool, Status>> {
    auto stream = c->Chat();
    co_await stream.writes_done();
    bool wrote = co_await stream.write(request("too late"));
    co_return std::pair{wrote, co_await stream.finish()};
  }(client_.get()));
  EXPECT_FALSE(wrote);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("after writes_done"), std::string::npos) << status;
}

// A request that does not parse (proto3 strings must be UTF-8) ends the handler's reads, and
// the call fails INTERNAL whatever the handler returns.
TEST_P(StreamTest, MalformedRequestMidStreamIsInternal) {
  Status status = chat_with_malformed_request();
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("failed to parse"), std::string::npos) << status;
}

// A pending read has no cancellation of its own in gRPC: losing a race (here to a task that
// completes at once) cancels the call.
TEST_P(StreamTest, CancellingAPendingReadCancelsTheCall) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    auto stream = c->Chat();
    co_await stream.write(request("a"));
    co_await stream.read();  // the handler runs, and now waits for the next request
    auto at_once = []() -> Task<void> { co_return; };
    co_await (stream.read() || at_once());
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  expect_handler_saw_cancellation();
}

TEST_P(StreamTest, StartSendsHeadersThenTheCallGoesOnAsUsual) {
  Result<EchoResponse> r = run([](StreamerClient* c) -> Task<Result<EchoResponse>> {
    auto stream = c->Collect();
    if (!co_await stream.start()) co_return Status::internal("start() failed");
    if (!co_await stream.start()) co_return Status::internal("second start() failed");
    co_await stream.write(request("after start"));
    co_return co_await stream.finish();
  }(client_.get()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "after start");
}

TEST_P(StreamTest, StartFailsWhenTheServerIsUnreachable) {
  StreamerClient nowhere(Channel::insecure("unix:/nonexistent-dir/trellis-test.sock"));
  auto [started, status] = run([](StreamerClient* c) -> Task<std::pair<bool, Status>> {
    auto stream = c->Chat();
    bool started = co_await stream.start();
    co_return std::pair{started, co_await stream.finish()};
  }(&nowhere));
  EXPECT_FALSE(started);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
}

TEST_P(StreamTest, StreamOffTheRuntimeFailsClearly) {
  auto stream = client_->Chat();
  boost::asio::io_context io;
  auto status = boost::asio::co_spawn(io, stream.finish(), boost::asio::use_future);
  io.run();
  ASSERT_EQ(status.wait_for(0s), std::future_status::ready) << "io.run() returned before finish()";
  Status s = status.get();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
}

TEST_P(StreamTest, ManyConcurrentStreams) {
  constexpr int kStreams = 200;
  constexpr int kMessages = 10;
  int ok = run([](Runtime* rt, StreamerClient* c) -> Task<int> {
    auto one = [](StreamerClient* c, int id) -> Task<bool> {
      auto stream = c->Chat();
      for (int i = 0; i < kMessages; ++i) {
        std::string m = std::to_string(id) + "/" + std::to_string(i);
        if (!co_await stream.write(request(m))) co_return false;
        auto resp = co_await stream.read();
        if (!resp || resp->message() != m) co_return false;
      }
      co_return (co_await stream.finish()).ok();
    };
    std::vector<JoinHandle<bool>> handles;
    for (int id = 0; id < kStreams; ++id) handles.push_back(rt->spawn(one(c, id)));
    int ok = 0;
    for (auto& h : handles) ok += (co_await h.join()) ? 1 : 0;
    co_return ok;
  }(runtime_.get(), client_.get()));
  EXPECT_EQ(ok, kStreams);
}

// ---- read(message): reading into a message the caller owns, which completes with bool.

// How a test's client reads into its message: the default token (a Task), boost::asio::deferred
// (an asynchronous operation awaited without a frame of its own), or a token that goes through
// async_initiate (as_tuple).
enum class ClientRead { kTask, kDeferred, kInitiate };

template <class Stream, class Msg>
Task<bool> read_into(Stream& stream, Msg& message, ClientRead how) {
  switch (how) {
    case ClientRead::kTask:
      co_return co_await stream.read(message);
    case ClientRead::kDeferred:
      co_return co_await stream.read(message, boost::asio::deferred);
    case ClientRead::kInitiate:
      break;
  }
  auto [got] = co_await stream.read(message, boost::asio::as_tuple(use_task));
  co_return got;
}

constexpr ClientRead kClientReads[] = {ClientRead::kTask, ClientRead::kDeferred,
                                       ClientRead::kInitiate};

// Every response into one reused message, then false at the end of the stream.
TEST_P(StreamTest, ClientReadIntoReadsEveryResponseThenFalse) {
  for (ClientRead how : kClientReads) {
    auto [messages, status] = run(
        [](StreamerClient* c, ClientRead how) -> Task<std::pair<std::vector<std::string>, Status>> {
          auto stream = c->Split(request("one two three"));
          std::vector<std::string> messages;
          EchoResponse resp;
          while (co_await read_into(stream, resp, how)) messages.push_back(resp.message());
          co_return std::pair{messages, co_await stream.finish()};
        }(client_.get(), how));
    EXPECT_EQ(messages, (std::vector<std::string>{"one", "two", "three"}));
    EXPECT_TRUE(status.ok()) << status;
  }
}

// An error status after some messages: the reads give the messages, then false; finish() gives
// the status.
TEST_P(StreamTest, ClientReadIntoErrorMidStreamGivesFalseThenFinishGivesTheStatus) {
  for (ClientRead how : kClientReads) {
    EchoRequest req = failing_request(StatusCode::kAborted, "stopped mid-stream");
    req.set_message("a b");
    auto [messages, status] =
        run([](StreamerClient* c, EchoRequest req,
               ClientRead how) -> Task<std::pair<std::vector<std::string>, Status>> {
          auto stream = c->Split(req);
          std::vector<std::string> messages;
          EchoResponse resp;
          while (co_await read_into(stream, resp, how)) messages.push_back(resp.message());
          co_return std::pair{messages, co_await stream.finish()};
        }(client_.get(), req, how));
    EXPECT_EQ(messages, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(status.code(), StatusCode::kAborted) << status;
    EXPECT_EQ(status.message(), "stopped mid-stream");
  }
}

// A bidi call broken mid-stream (the client cancels): the next read gives false, finish() gives
// CANCELLED, and the handler's pending read(message) ends with false.
TEST_P(StreamTest, ReadIntoOnBothSidesEndsWhenTheClientCancels) {
  streamer_.read_mode = ReadMode::kInto;
  auto [got, status] = run([](StreamerClient* c) -> Task<std::pair<bool, Status>> {
    auto stream = c->Chat();
    co_await stream.write(request("a"));
    EchoResponse resp;
    bool first = co_await stream.read(resp);
    stream.cancel();  // the handler is now waiting in read(req)
    bool next = co_await stream.read(resp, boost::asio::deferred);
    co_return std::pair{first && resp.message() == "a" && !next, co_await stream.finish()};
  }(client_.get()));
  EXPECT_TRUE(got);
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  expect_handler_saw_cancellation();
}

// Handlers reading with read(message), as a Task and with boost::asio::deferred: every request
// arrives, and the client's half-close ends the reads with false (the handler then returns OK).
TEST_P(StreamTest, HandlerReadIntoEchoesThenSeesTheHalfClose) {
  for (ReadMode mode : {ReadMode::kInto, ReadMode::kIntoDeferred}) {
    streamer_.read_mode = mode;
    auto [echoed, status] = run([](StreamerClient* c) -> Task<std::pair<int, Status>> {
      auto stream = c->Chat();
      int echoed = 0;
      EchoResponse resp;
      for (int i = 0; i < 50; ++i) {
        if (!co_await stream.write(request(std::to_string(i)))) break;
        if (!co_await stream.read(resp) || resp.message() != std::to_string(i)) break;
        ++echoed;
      }
      co_await stream.writes_done();
      bool more = co_await stream.read(resp);
      co_return std::pair{more ? -1 : echoed, co_await stream.finish()};
    }(client_.get()));
    EXPECT_EQ(echoed, 50);
    EXPECT_TRUE(status.ok()) << status;
  }
}

// One message reused for every request: each read replaces what the previous one left (an
// empty request reads as empty, not as the previous text).
TEST_P(StreamTest, HandlerReadIntoReplacesThePreviousMessage) {
  for (ReadMode mode : {ReadMode::kInto, ReadMode::kIntoDeferred}) {
    streamer_.read_mode = mode;
    Result<EchoResponse> r = run([](StreamerClient* c) -> Task<Result<EchoResponse>> {
      auto stream = c->Collect();
      for (const char* m : {"a", "", "c"}) co_await stream.write(request(m));
      co_return co_await stream.finish();
    }(client_.get()));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->message(), "a,,c");
  }
}

// A request that does not parse ends the handler's read(message) with false, and the call fails
// INTERNAL.
TEST_P(StreamTest, HandlerReadIntoMalformedRequestIsInternal) {
  streamer_.read_mode = ReadMode::kIntoDeferred;
  Status status = chat_with_malformed_request();
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("failed to parse"), std::string::npos) << status;
}

// read(message) as a Task is an operand of `a || b`; losing the race cancels the call, as read()
// does.
TEST_P(StreamTest, CancellingAPendingReadIntoCancelsTheCall) {
  Status status = run([](StreamerClient* c) -> Task<Status> {
    auto stream = c->Chat();
    co_await stream.write(request("a"));
    EchoResponse resp;
    co_await stream.read(resp);  // the handler runs, and now waits for the next request
    auto at_once = []() -> Task<void> { co_return; };
    co_await (stream.read(resp, use_task) || at_once());
    co_return co_await stream.finish();
  }(client_.get()));
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  expect_handler_saw_cancellation();
}

// Awaited off a Trellis runtime, read(message, deferred) completes with false (and the call,
// never started, finishes FAILED_PRECONDITION).
TEST_P(StreamTest, ReadIntoOffTheRuntimeGivesFalse) {
  auto stream = client_->Chat();
  boost::asio::io_context io;
  EchoResponse resp;
  auto got = boost::asio::co_spawn(
      io,
      [](ClientReaderWriter<EchoRequest, EchoResponse>& s,
         EchoResponse& r) -> boost::asio::awaitable<bool> {
        co_return co_await s.read(r, boost::asio::deferred);
      }(stream, resp),
      boost::asio::use_future);
  auto status = boost::asio::co_spawn(io, stream.finish(), boost::asio::use_future);
  io.run();
  ASSERT_EQ(got.wait_for(0s), std::future_status::ready) << "io.run() returned before the read";
  ASSERT_EQ(status.wait_for(0s), std::future_status::ready) << "io.run() returned before finish()";
  EXPECT_FALSE(got.get());
  EXPECT_EQ(status.get().code(), StatusCode::kFailedPrecondition);
}

// A client stream still waiting for a message when its runtime stops ends CANCELLED. The stop
// cancels the call, and the read's completion comes after the worker has shut its completion
// queue down: the stream must start nothing more there (grpc core aborts the process on that; it
// did here at every run, on either transport, before client streams checked the runtime at every
// operation). The stream's runtime has also served on the transport under test, so that with a
// native server the completions come through the worker's reactor.
TEST_P(StreamTest, AClientStreamWaitingForAMessageEndsCancelledWhenItsRuntimeStops) {
  // Before the runtime: a failed assertion returns, and the runtime's destructor may still run
  // the task, which sets them.
  std::promise<void> echoed;
  std::promise<std::pair<bool, Status>> ended;
  auto client_runtime = Runtime::multi_thread().worker_threads(1).build();
  StreamerImpl other;
  auto side = Server::Builder(*client_runtime)
                  .transport(transport())
                  .add_insecure_port("127.0.0.1:0")
                  .add_service(other)
                  .build();
  ASSERT_TRUE(side.ok()) << side.status();
  side->reset();  // servers go before their runtime; a native one left the reactor running

  boost::asio::co_spawn(
      client_runtime->executor(),
      [](StreamerClient* client, std::promise<void>* echoed,
         std::promise<std::pair<bool, Status>>* ended) -> Task<void> {
        auto chat = client->Chat(CallOptions().set_timeout(30s));
        EXPECT_TRUE(co_await chat.write(request("a")));
        EXPECT_TRUE((co_await chat.read()).has_value());
        echoed->set_value();
        bool second = (co_await chat.read()).has_value();  // the handler waits for a message
        Status status = co_await chat.finish();
        ended->set_value({second, status});
      }(client_.get(), &echoed, &ended),
      boost::asio::detached);
  ASSERT_EQ(echoed.get_future().wait_for(kWaitBound), std::future_status::ready);
  client_runtime->shutdown();
  auto result = ended.get_future();
  ASSERT_EQ(result.wait_for(kWaitBound), std::future_status::ready);
  auto [second, status] = result.get();
  EXPECT_FALSE(second);
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  expect_no_live_calls(*client_runtime);
}

}  // namespace
}  // namespace trellis::testing
