// Operations and contexts used from a worker other than the one that owns them: a handler's
// ServerContext read and cancelled from a task on another worker, stream operations awaited and
// cancelled from another worker, on both sides of a call. These are the tests the
// ThreadSanitizer build (scripts/tsan.sh) must find clean.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/system/system_error.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "end_to_end.hpp"
#include "streamer_service.hpp"
#include "trellis/client.hpp"
#include "trellis/client_stream.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/testing/echo.trellis.h"
#include "trellis/testing/streamer.trellis.h"
#include "trellis/timer.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;

// A worker of `runtime` other than the calling one (which must be a worker).
Executor other_worker(Runtime& runtime) {
  for (std::size_t i = 0; i < runtime.worker_count(); ++i) {
    if (!runtime.executor(i).running_in_this_thread()) return runtime.executor(i);
  }
  ADD_FAILURE() << "the runtime has a single worker";
  return runtime.executor(0);
}

// Calls ctx.cancel_with(status) from a task on another worker, and waits for that task.
Task<void> cancel_from_another_worker(Runtime& runtime, ServerContext& ctx, Status status) {
  co_await runtime
      .spawn(other_worker(runtime),
             [](ServerContext& ctx, Status status) -> Task<void> {
               ctx.cancel_with(std::move(status));
               co_return;
             }(ctx, std::move(status)))
      .join();
}

EchoRequest request(std::string message) {
  EchoRequest req;
  req.set_message(std::move(message));
  return req;
}

// What the handlers below saw.
struct Observations {
  absl::Notification handler_cancelled;
  std::atomic<int> handlers_started{0};
  std::atomic<bool> other_worker_saw_cancellation{false};
  std::atomic<bool> served_on_other_worker{false};
};

// Echo, with its behaviour chosen by the request's message:
//  "cancel-elsewhere": a task on another worker ends the call with cancel_with(RESOURCE_EXHAUSTED);
//    the handler then sleeps, and must be cancelled.
//  "watch-elsewhere": a task on another worker polls is_cancelled() and deadline() until the
//    client's deadline cancels the call; the handler waits for that task.
class CrossWorkerEcho final : public EchoService {
 public:
  CrossWorkerEcho(Runtime& runtime, Observations& seen) : runtime_(runtime), seen_(seen) {}

  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    seen_.handlers_started.fetch_add(1);
    if (req.message() == "cancel-elsewhere") {
      co_await cancel_from_another_worker(
          runtime_, ctx, Status::resource_exhausted("quota spent on another worker"));
      try {
        co_await sleep_for(kWaitBound);
      } catch (const boost::system::system_error&) {
        seen_.handler_cancelled.Notify();
      }
      EchoResponse ignored;
      ignored.set_message("not sent: the call was cancelled");
      co_return ignored;
    }
    if (req.message() == "watch-elsewhere") {
      co_await runtime_
          .spawn(other_worker(runtime_),
                 [](ServerContext& ctx, Observations& seen) -> Task<void> {
                   while (!ctx.is_cancelled()) {
                     if (ctx.deadline() == std::chrono::system_clock::time_point::max()) {
                       ADD_FAILURE() << "the call has no deadline";
                     }
                     co_await sleep_for(1ms);
                   }
                   seen.other_worker_saw_cancellation = true;
                 }(ctx, seen_))
          .join();
      // The client's deadline may end the call first, or this answer, sent once the deadline
      // has passed on the server's clock, may reach the client before its own deadline fires.
      co_return Status::deadline_exceeded("the other worker saw the call cancelled");
    }
    co_return Status::invalid_argument("unknown instruction " + req.message());
  }
  Task<Result<EchoResponse>> IdempotentEcho(ServerContext&, const EchoRequest&) override {
    co_return Status::unimplemented("not used here");
  }

 private:
  Runtime& runtime_;
  Observations& seen_;
};

// Streamer's Chat, with its behaviour chosen by the first request's message:
//  "serve-elsewhere": a task on another worker reads every request and echoes it, using the
//    handler's reader and writer; the handler waits for it.
//  "cancel-elsewhere": after the first request, a task on another worker ends the call with
//    cancel_with(ABORTED); the handler's next read must then fail.
//  anything else: echoes every request, reading until the client half-closes or cancels.
class CrossWorkerStreamer final : public ChatOnlyStreamer {
 public:
  CrossWorkerStreamer(Runtime& runtime, Observations& seen) : runtime_(runtime), seen_(seen) {}

  Task<Status> Chat(ServerContext& ctx, ServerReader<EchoRequest>& reader,
                    ServerWriter<EchoResponse>& writer) override {
    seen_.handlers_started.fetch_add(1);
    std::optional<EchoRequest> first = co_await reader.read();
    if (!first) co_return Status();
    if (first->message() == "serve-elsewhere") {
      co_return co_await runtime_
          .spawn(other_worker(runtime_),
                 [](ServerReader<EchoRequest>& reader, ServerWriter<EchoResponse>& writer,
                    Observations& seen) -> Task<Status> {
                   seen.served_on_other_worker = true;
                   while (std::optional<EchoRequest> req = co_await reader.read()) {
                     EchoResponse resp;
                     resp.set_message(req->message());
                     if (!co_await writer.write(resp)) co_return Status::cancelled("write failed");
                   }
                   co_return Status();
                 }(reader, writer, seen_))
          .join();
    }
    if (first->message() == "cancel-elsewhere") {
      co_await cancel_from_another_worker(runtime_, ctx,
                                          Status::aborted("stopped from another worker"));
      try {
        if (!co_await reader.read() && ctx.is_cancelled()) seen_.handler_cancelled.Notify();
      } catch (const boost::system::system_error&) {
        seen_.handler_cancelled.Notify();
      }
      co_return Status();  // not sent: the call was cancelled
    }
    for (std::optional<EchoRequest> req = std::move(first); req; req = co_await reader.read()) {
      EchoResponse resp;
      resp.set_message(req->message());
      if (!co_await writer.write(resp)) break;
    }
    if (ctx.is_cancelled()) seen_.handler_cancelled.Notify();
    co_return Status();
  }

 private:
  Runtime& runtime_;
  Observations& seen_;
};

class CrossWorkerTest : public EndToEndTest, public TransportParam {
 protected:
  void SetUp() override {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    echo_.emplace(*runtime_, seen_);
    streamer_.emplace(*runtime_, seen_);
    auto server = Server::Builder(*runtime_)
                      .transport(transport())
                      .add_insecure_port("127.0.0.1:0")
                      .add_service(*echo_)
                      .add_service(*streamer_)
                      .build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(server_->port()));
  }

  Observations seen_;
  std::optional<CrossWorkerEcho> echo_;
  std::optional<CrossWorkerStreamer> streamer_;
  Channel channel_{nullptr};
};

TRELLIS_BOTH_TRANSPORTS(CrossWorkerTest);

TEST_P(CrossWorkerTest, CancelWithFromAnotherWorkerEndsAUnaryCall) {
  EchoClient client(channel_);
  Result<EchoResponse> result = run(client.Echo(request("cancel-elsewhere")));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kResourceExhausted) << result.status();
  EXPECT_EQ(result.status().message(), "quota spent on another worker");
  EXPECT_TRUE(seen_.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

TEST_P(CrossWorkerTest, AnotherWorkerSeesTheClientsDeadlineCancelTheCall) {
  EchoClient client(channel_);
  Result<EchoResponse> result = with_growing_timeout(
      [&](std::chrono::milliseconds timeout) {
        CallOptions options;
        options.set_timeout(timeout);
        return run(client.Echo(request("watch-elsewhere"), options));
      },
      [&] { return seen_.handlers_started.load() > 0; });
  ASSERT_GT(seen_.handlers_started.load(), 0) << "no call reached the handler";
  EXPECT_EQ(result.status().code(), StatusCode::kDeadlineExceeded) << result.status();
  shut_down();  // every handler has returned
  EXPECT_TRUE(seen_.other_worker_saw_cancellation);
}

TEST_P(CrossWorkerTest, AHandlersStreamServedFromAnotherWorker) {
  StreamerClient client(channel_);
  std::vector<std::string> echoed =
      run([](StreamerClient& client) -> Task<std::vector<std::string>> {
        auto stream = client.Chat();
        std::vector<std::string> out;
        for (std::string text : {"serve-elsewhere", "one", "two", "three"}) {
          if (!co_await stream.write(request(text))) break;
        }
        co_await stream.writes_done();
        while (std::optional<EchoResponse> resp = co_await stream.read())
          out.push_back(resp->message());
        Status status = co_await stream.finish();
        EXPECT_TRUE(status.ok()) << status;
        co_return out;
      }(client));
  EXPECT_EQ(echoed, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_TRUE(seen_.served_on_other_worker);
}

TEST_P(CrossWorkerTest, CancelWithFromAnotherWorkerEndsAStream) {
  StreamerClient client(channel_);
  Status status = run([](StreamerClient& client) -> Task<Status> {
    auto stream = client.Chat();
    co_await stream.write(request("cancel-elsewhere"));
    co_return co_await stream.finish();
  }(client));
  EXPECT_EQ(status.code(), StatusCode::kAborted) << status;
  EXPECT_EQ(status.message(), "stopped from another worker");
  EXPECT_TRUE(seen_.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

// The stream is bound to the worker of its first operation; a task on another worker then reads
// from it and writes to it concurrently.
TEST_P(CrossWorkerTest, AClientStreamReadFromAnotherWorkerWhileThisOneWrites) {
  StreamerClient client(channel_);
  std::vector<std::string> echoed =
      run([](StreamerClient& client, Runtime& runtime) -> Task<std::vector<std::string>> {
        auto stream = client.Chat();
        co_await stream.write(request("zero"));
        JoinHandle<std::vector<std::string>> reader = runtime.spawn(
            other_worker(runtime), [](decltype(stream)& stream) -> Task<std::vector<std::string>> {
              std::vector<std::string> out;
              while (std::optional<EchoResponse> r = co_await stream.read()) {
                out.push_back(r->message());
              }
              co_return out;
            }(stream));
        for (std::string text : {"one", "two", "three"}) {
          if (!co_await stream.write(request(text))) break;
        }
        co_await stream.writes_done();
        std::vector<std::string> out = co_await reader.join();
        Status status = co_await stream.finish();
        EXPECT_TRUE(status.ok()) << status;
        co_return out;
      }(client, *runtime_));
  EXPECT_EQ(echoed, (std::vector<std::string>{"zero", "one", "two", "three"}));
}

// The read runs on the stream's worker; its cancellation is signalled on the awaiting task's
// worker, and its completion must come back there.
TEST_P(CrossWorkerTest, CancellingAReadAwaitedOnAnotherWorkerCancelsTheCall) {
  StreamerClient client(channel_);
  Status status = run([](StreamerClient& client, Runtime& runtime) -> Task<Status> {
    auto stream = client.Chat();
    co_await stream.write(request("hello"));
    std::optional<EchoResponse> echo = co_await stream.read();
    EXPECT_TRUE(echo.has_value());
    bool timed_out = co_await runtime
                         .spawn(other_worker(runtime),
                                [](decltype(stream)& stream) -> Task<bool> {
                                  // No request is outstanding, so only the timer can end this.
                                  auto winner = co_await (stream.read() || sleep_for(10ms));
                                  co_return winner.index() == 1;
                                }(stream))
                         .join();
    EXPECT_TRUE(timed_out);
    co_return co_await stream.finish();
  }(client, *runtime_));
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  EXPECT_TRUE(seen_.handler_cancelled.WaitForNotificationWithTimeout(kTestDeadline));
}

}  // namespace
}  // namespace trellis::testing
