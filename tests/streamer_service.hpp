// The Trellis implementation of trellis.testing.Streamer used by the streaming tests.
#pragma once

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "trellis/testing/streamer.trellis.h"
#include "trellis/timer.hpp"

namespace trellis::testing {

// How Collect and Chat read their requests: read() (a new std::optional message each), or
// read(message) into one message for the whole call, awaited as a Task or, with
// boost::asio::deferred, as an asynchronous operation.
enum class ReadMode { kOptional, kInto, kIntoDeferred };

// What the handlers observed, for tests to assert on.
struct StreamerObservations {
  // A handler ended (returned or threw) with its call cancelled: a read or write failed under
  // it, a wait was cut short, or its next co_await threw operation_aborted.
  absl::Notification handler_saw_cancellation;
  std::atomic<bool> is_cancelled_was_true{false};
  std::atomic<int> requests_read{0};
};

// A Streamer whose test needs Chat only: Split and Collect answer UNIMPLEMENTED.
class ChatOnlyStreamer : public StreamerService {
 public:
  Task<Status> Split(ServerContext&, const EchoRequest&, ServerWriter<EchoResponse>&) override {
    co_return Status::unimplemented("not used here");
  }
  Task<Result<EchoResponse>> Collect(ServerContext&, ServerReader<EchoRequest>&) override {
    co_return Status::unimplemented("not used here");
  }
};

class StreamerImpl final : public StreamerService {
 public:
  StreamerObservations observed;
  // Set by a test before its calls.
  std::atomic<ReadMode> read_mode{ReadMode::kOptional};

  // Records, when a handler ends by any path, whether its call was cancelled.
  class Witness {
   public:
    Witness(StreamerImpl* self, ServerContext& ctx) : self_(self), ctx_(ctx) {}
    ~Witness() {
      if (ctx_.is_cancelled()) self_->saw_cancellation(ctx_);
    }

   private:
    StreamerImpl* self_;
    ServerContext& ctx_;
  };

  Task<Status> Split(ServerContext& ctx, const EchoRequest& req,
                     ServerWriter<EchoResponse>& writer) override {
    Witness witness(this, ctx);
    if (req.throw_exception()) throw std::runtime_error("split handler exploded on purpose");
    if (req.echo_metadata()) {
      for (const auto& [k, v] : ctx.request_metadata()) {
        if (!k.starts_with("echo-")) continue;
        ctx.add_initial_metadata(k, v);
        ctx.add_trailing_metadata(k, v);
      }
    }
    bool first = true;
    std::vector<std::string> words = absl::StrSplit(req.message(), ' ', absl::SkipEmpty());
    for (const std::string& word : words) {
      if (!first && req.delay_ms() > 0 && !co_await wait(req.delay_ms())) {
        co_return Status::cancelled("handler saw the cancellation");
      }
      first = false;
      EchoResponse resp;
      resp.set_message(word);
      if (!co_await writer.write(resp)) co_return Status::cancelled("write failed");
    }
    co_return status_of(req);
  }

  Task<Result<EchoResponse>> Collect(ServerContext& ctx,
                                     ServerReader<EchoRequest>& reader) override {
    Witness witness(this, ctx);
    std::vector<std::string> parts;
    EchoRequest req;
    while (co_await read_next(reader, req)) {
      observed.requests_read.fetch_add(1);
      if (req.status_code() != 0) co_return status_of(req);
      parts.push_back(req.message());
    }
    if (ctx.is_cancelled()) co_return Status::cancelled("read failed");
    EchoResponse resp;
    resp.set_message(absl::StrJoin(parts, ","));
    co_return resp;
  }

  // Echoes each request. A first request "pump:N" switches to concurrent mode: one task writes
  // N responses "pump i" while another reads the remaining requests, then a last response says
  // "read K" (K = requests read after the first). A first request "two-reads" starts two reads
  // at once (a misuse the framework must turn into a failed call).
  Task<Status> Chat(ServerContext& ctx, ServerReader<EchoRequest>& reader,
                    ServerWriter<EchoResponse>& writer) override {
    Witness witness(this, ctx);
    bool first = true;
    EchoRequest req;
    while (co_await read_next(reader, req)) {
      observed.requests_read.fetch_add(1);
      int pumps = 0;
      if (first && absl::StartsWith(req.message(), "pump:") &&
          absl::SimpleAtoi(req.message().substr(5), &pumps)) {
        co_return co_await pump(ctx, reader, writer, pumps);
      }
      if (first && req.message() == "two-reads") {
        // Misuse on purpose: a second read while one is pending.
        using namespace boost::asio::experimental::awaitable_operators;
        co_await (reader.read() && reader.read());
        co_return Status();
      }
      first = false;
      if (req.throw_exception()) throw std::runtime_error("chat handler exploded on purpose");
      if (req.delay_ms() > 0 && !co_await wait(req.delay_ms())) {
        co_return Status::cancelled("handler saw the cancellation");
      }
      if (req.status_code() != 0) co_return status_of(req);
      EchoResponse resp;
      resp.set_message(req.message());
      if (!co_await writer.write(resp)) co_return Status::cancelled("write failed");
    }
    co_return Status();
  }

 private:
  // The next request into `req`, read as read_mode says; false when there are no more.
  Task<bool> read_next(ServerReader<EchoRequest>& reader, EchoRequest& req) {
    switch (read_mode.load()) {
      case ReadMode::kInto:
        co_return co_await reader.read(req);
      case ReadMode::kIntoDeferred:
        co_return co_await reader.read(req, boost::asio::deferred);
      case ReadMode::kOptional:
        break;
    }
    std::optional<EchoRequest> next = co_await reader.read();
    if (next) req = std::move(*next);
    co_return next.has_value();
  }

  Task<Status> pump(ServerContext& ctx, ServerReader<EchoRequest>& reader,
                    ServerWriter<EchoResponse>& writer, int pumps) {
    using namespace boost::asio::experimental::awaitable_operators;
    int read = 0;
    auto write_all = [](ServerWriter<EchoResponse>& w, int n) -> Task<bool> {
      for (int i = 0; i < n; ++i) {
        EchoResponse resp;
        resp.set_message("pump " + std::to_string(i));
        if (!co_await w.write(resp)) co_return false;
      }
      co_return true;
    };
    auto read_all = [](ServerReader<EchoRequest>& r, int* count) -> Task<void> {
      while (co_await r.read()) ++*count;
    };
    bool wrote_all = co_await (write_all(writer, pumps) && read_all(reader, &read));
    if (!wrote_all || ctx.is_cancelled()) {
      co_return Status::cancelled("the call ended while pumping");
    }
    EchoResponse last;
    last.set_message("read " + std::to_string(read));
    co_await writer.write(last);
    co_return Status();
  }

  // Waits `ms`, cancellably; false when the call's cancellation cut it short.
  static Task<bool> wait(std::int64_t ms) {
    auto [ec] = co_await sleep_for(std::chrono::milliseconds(ms), boost::asio::as_tuple(use_task));
    co_return !ec;
  }

  void saw_cancellation(ServerContext& ctx) {
    observed.is_cancelled_was_true = ctx.is_cancelled();
    if (!observed.handler_saw_cancellation.HasBeenNotified()) {
      observed.handler_saw_cancellation.Notify();
    }
  }

  static Status status_of(const EchoRequest& req) {
    if (req.status_code() == 0) return Status();
    return Status(static_cast<StatusCode>(req.status_code()), req.status_message(),
                  req.status_details());
  }
};

}  // namespace trellis::testing
