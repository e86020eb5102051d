// Internal: the untyped half of streaming calls, shared by server and client streams.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <cstddef>
#include <optional>
#include <utility>

#include "trellis/detail/completion_handler.hpp"
#include "trellis/detail/runnable.hpp"
#include "trellis/detail/serialization.hpp"
#include "trellis/executor.hpp"
#include "trellis/status.hpp"

namespace trellis::detail {

// A pending stream operation. complete() is called exactly once, on the stream's worker, and
// frees the object.
template <class... Args>
class StreamOp {
 public:
  virtual void complete(Args... args) = 0;

 protected:
  ~StreamOp() = default;
};

// (got a message, its bytes): the bytes belong to the stream and are valid during complete().
using ReadOp = StreamOp<bool, grpc::ByteBuffer*>;
using WriteOp = StreamOp<bool>;     // (the stream took the message)
using FinishOp = StreamOp<Status>;  // (the call's final status)

// One gRPC stream on bytes: the server or client side of a streaming call. Every operation runs
// on the stream's worker thread; at most one read and one write-side operation (write,
// writes_done, finish) may be pending at once, and breaking that rule fails the call with
// FAILED_PRECONDITION. A pending operation whose cancellation slot is signalled cancels the whole
// call: gRPC has no per-operation cancellation.
class StreamCore {
 public:
  // Binds the stream to worker `w` unless it is bound already; returns the worker it is bound
  // to. Server streams are bound from the start; a client stream binds to the worker of its
  // first operation and starts the call there. Any thread.
  virtual Worker* bind(Worker* w) = 0;
  // Client side: starts the call if needed and completes once its headers have been sent
  // (true), or the call could not start (false).
  virtual void start(WriteOp* op) = 0;
  virtual void read(ReadOp* op) = 0;
  // `last`: half-close together with this message (client side only).
  virtual void write(Bytes message, bool last, WriteOp* op) = 0;
  // Client side: half-close. Completes true at once when already half-closed.
  virtual void writes_done(WriteOp* op) = 0;
  // Client side: half-close if needed, discard unread messages, and complete with the status.
  virtual void finish(FinishOp* op) = 0;
  // Cancels the call (gRPC TryCancel). Worker thread.
  virtual void cancel() = 0;
  // Ends the call with `status` (for example a message that does not parse): cancels it, and
  // `status` becomes its final status. Worker thread.
  virtual void fail(Status status) = 0;

 protected:
  ~StreamCore() = default;
};

// What an operation completes with when it cannot reach a Trellis runtime.
template <class T>
T not_on_runtime() {
  if constexpr (std::is_same_v<T, Status>) {
    return Status::failed_precondition(
        "Trellis streams must be used from tasks on a Trellis runtime");
  } else {
    return T{};
  }
}

// Starts a stream operation for `handler`: `make_op(handler, worker)` allocates the StreamOp and
// `start(op)` hands it to the stream, on the stream's worker. Completes with `fallback...` (on
// the handler's executor) when there is no runtime to run on.
template <class Handler, class MakeOp, class Start, class... Fallback>
void initiate_stream_op(StreamCore* core, Handler handler, MakeOp make_op, Start start,
                        Fallback... fallback) {
  auto ex = boost::asio::get_associated_executor(handler);
  Worker* w = worker_for(ex);
  if (w != nullptr) w = core->bind(w);
  if (w == nullptr) {
    boost::asio::post(ex, [h = std::move(handler), ... f = std::move(fallback)]() mutable {
      std::move(h)(std::move(f)...);
    });
    return;
  }
  auto* op = make_op(std::move(handler), w);
  if (running_in(w)) {
    start(op);
  } else {
    post(w, make_runnable([op, start = std::move(start)]() mutable { start(op); }));
  }
}

// A StreamOp that completes an Asio handler with Result(args...), where Result is a callable
// transforming the raw arguments (for example parsing a message).
template <class Handler, class Transform, class... Args>
class HandlerStreamOp final : public StreamOp<Args...> {
 public:
  HandlerStreamOp(Handler h, Worker* w, StreamCore* core, Transform t)
      : handler_(std::move(h)), worker_(w), core_(core), transform_(std::move(t)) {
    auto slot = boost::asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected()) slot.template emplace<Cancel>(core);
  }

  // One of these is allocated per stream operation: Asio's per-thread recycling cache (which
  // Trellis workers have) serves them without malloc.
  static void* operator new(std::size_t size) { return Allocator().allocate(units(size)); }
  static void operator delete(void* p, std::size_t size) {
    Allocator().deallocate(static_cast<std::max_align_t*>(p), units(size));
  }

  void complete(Args... args) override {
    Handler h = take_handler(handler_);
    Worker* w = worker_;
    auto result = transform_(core_, std::move(args)...);
    delete this;
    detail::complete(std::move(h), w, std::move(result));
  }

 private:
  struct Cancel {
    StreamCore* core;
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none) core->cancel();
    }
  };

  using Allocator = boost::asio::recycling_allocator<std::max_align_t>;
  static std::size_t units(std::size_t size) {
    return (size + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
  }

  Handler handler_;
  Worker* worker_;
  StreamCore* core_;
  Transform transform_;
};

template <class... Args, class Handler, class Transform>
StreamOp<Args...>* make_stream_op(Handler h, Worker* w, StreamCore* core, Transform t) {
  return new HandlerStreamOp<Handler, Transform, Args...>(std::move(h), w, core, std::move(t));
}

// Parses a read into T: nullopt at the end of the stream, or when the message does not parse
// (which fails the call with INTERNAL).
template <class T>
struct ParseMessage {
  std::optional<T> operator()(StreamCore* core, bool got, grpc::ByteBuffer* bytes) const {
    if (!got) return std::nullopt;
    std::optional<T> message(std::in_place);
    if (Status s = parse(bytes, &*message, "message"); !s.ok()) {
      core->fail(std::move(s));
      return std::nullopt;
    }
    return message;
  }
};

struct PassBool {
  bool operator()(StreamCore*, bool ok) const { return ok; }
};

struct PassStatus {
  Status operator()(StreamCore*, Status status) const { return status; }
};

// co_await-able read of the next message: completes with std::optional<T>.
template <class T, class Token>
auto async_read(StreamCore* core, Token&& token) {
  return boost::asio::async_initiate<Token, void(std::optional<T>)>(
      [core](auto handler) {
        initiate_stream_op(
            core, std::move(handler),
            [core](auto h, Worker* w) {
              return make_stream_op<bool, grpc::ByteBuffer*>(std::move(h), w, core,
                                                             ParseMessage<T>{});
            },
            [core](ReadOp* op) { core->read(op); }, std::optional<T>());
      },
      token);
}

// Serializes `message` for async_write; false if it cannot be serialized.
inline bool serialize_for_write(const google::protobuf::MessageLite& message, Bytes* out) {
  return serialize(message, out->get()).ok();
}

// Writes `bytes`, already serialized (`serialized` false: that failed, and the call fails with
// INTERNAL): completes with bool, false once the stream is closed.
template <class Token>
auto async_write(StreamCore* core, bool serialized, Bytes bytes, bool last, Token&& token) {
  return boost::asio::async_initiate<Token, void(bool)>(
      [core, last, serialized](auto handler, Bytes bytes) {
        initiate_stream_op(
            core, std::move(handler),
            [core](auto h, Worker* w) {
              return make_stream_op<bool>(std::move(h), w, core, PassBool{});
            },
            [core, last, serialized, bytes = std::move(bytes)](WriteOp* op) mutable {
              if (!serialized) {
                core->fail(Status::internal("a message could not be serialized"));
                core->write(Bytes(), last, op);  // fails: the call has ended
                return;
              }
              core->write(std::move(bytes), last, op);
            },
            false);
      },
      token, std::move(bytes));
}

// An operation without a message, `Fn` (StreamCore::start or writes_done): completes with bool.
template <void (StreamCore::*Fn)(WriteOp*), class Token>
auto async_signal(StreamCore* core, Token&& token) {
  return boost::asio::async_initiate<Token, void(bool)>(
      [core](auto handler) {
        initiate_stream_op(
            core, std::move(handler),
            [core](auto h, Worker* w) {
              return make_stream_op<bool>(std::move(h), w, core, PassBool{});
            },
            [core](WriteOp* op) { (core->*Fn)(op); }, false);
      },
      token);
}

template <class Token>
auto async_start(StreamCore* core, Token&& token) {
  return async_signal<&StreamCore::start>(core, std::forward<Token>(token));
}

template <class Token>
auto async_writes_done(StreamCore* core, Token&& token) {
  return async_signal<&StreamCore::writes_done>(core, std::forward<Token>(token));
}

template <class Token>
auto async_finish(StreamCore* core, Token&& token) {
  return boost::asio::async_initiate<Token, void(Status)>(
      [core](auto handler) {
        initiate_stream_op(
            core, std::move(handler),
            [core](auto h, Worker* w) {
              return make_stream_op<Status>(std::move(h), w, core, PassStatus{});
            },
            [core](FinishOp* op) { core->finish(op); }, not_on_runtime<Status>());
      },
      token);
}

}  // namespace trellis::detail
