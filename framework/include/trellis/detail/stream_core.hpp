// Internal: the untyped half of streaming calls, shared by server and client streams.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/version.hpp>
#include <cstddef>
#include <new>
#include <optional>
#include <type_traits>
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

  // The bottom frame of an Asio awaitable thread that runs on the stream's worker, on that
  // worker's own executor (a server handler's task), while it runs; else nullptr. Its
  // operations skip the check of the awaiting task's executor. Any thread.
  const void* home_thread() const { return home_thread_.load(std::memory_order_relaxed); }

 protected:
  ~StreamCore() = default;
  // Set and cleared on the stream's worker.
  std::atomic<const void*> home_thread_{nullptr};
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
    std::optional<T> message;  // the one object returned: constructed in place (NRVO)
    if (!got) return message;
    if (Status s = parse(bytes, &message.emplace(), "message"); !s.ok()) {
      core->fail(std::move(s));
      message.reset();
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

// Awaiting a stream operation directly. With the default token (use_awaitable), async_initiate
// makes a coroutine whose only job is to hand an awaitable_handler to the initiation, which then
// allocates a HandlerStreamOp for it, copies the task's executor twice to find its worker, and
// on completion checks the executor again before resuming the task. Measured under callgrind
// (bench/callgrind-stream.sh), that was most of what a streamed message costs Trellis above a
// plain grpc++ server. A task on the stream's own worker (the common case: a handler's reads and
// writes) needs none of it: its operation object can live in the coroutine frame that the
// operation returns, and complete by resuming the task inline. This is Asio's internal
// interface (boost/asio/impl/awaitable.hpp: the awaitable_frame_base::await_transform overload
// for a function of the frame, which async_result<use_awaitable_t>::initiate itself uses, and
// awaitable_handler), so it is used only with the Boost version it was checked against; any
// other version takes the async_initiate path for every token.
#if BOOST_VERSION == 108100
#define TRELLIS_DIRECT_STREAM_OPS 1
#else
#define TRELLIS_DIRECT_STREAM_OPS 0
#endif

#if TRELLIS_DIRECT_STREAM_OPS
using AwaitableFrame = boost::asio::detail::awaitable_frame_base<boost::asio::any_io_executor>;
using AwaitableThread = boost::asio::detail::awaitable_thread<boost::asio::any_io_executor>;
// The frame of a coroutine returning awaitable<R>: its promise.
template <class R>
using AwaitableResultFrame = boost::asio::detail::awaitable_frame<R, boost::asio::any_io_executor>;
// What use_awaitable's initiation hands an operation: completing it stores the result in the
// operation's own frame, pops that frame and resumes the task that awaits it.
template <class R>
using AwaitableHandler = boost::asio::detail::awaitable_handler<boost::asio::any_io_executor, R>;

// Whether an operation of `core` awaited by `thread` can complete by resuming the thread
// inline: the thread runs on a Trellis worker's own executor, on that worker, and the stream is
// bound to the same worker.
inline bool resumes_inline(StreamCore* core, AwaitableThread& thread) {
  const void* home = core->home_thread();
  if (home != nullptr && home == thread.entry_point()) return true;
  boost::asio::any_io_executor ex = thread.get_executor();
  const Executor* te = ex.target<Executor>();
  if (te == nullptr) return false;
  Worker* w = te->worker();
  return *te == Executor(w) && running_in(w) && core->bind(w) == w;
}

// An awaitable thread suspended in an operation, which the operation resumes itself, as
// AwaitableHandler does.
class SuspendedThread : public AwaitableThread {
 public:
  explicit SuspendedThread(AwaitableThread* thread) : AwaitableThread(std::move(*thread)) {}

  // Pops `top`, the frame on top of the thread's stack, whose result has been set, and resumes
  // the frame below it. The thread's cancellation slot must have been cleared.
  void resume(AwaitableFrame* top) {
    top->attach_thread(this);
    top->pop_frame();
    this->pump();
  }
};

// Sets the result of an operation's frame from the raw arguments the stream completes it with.
template <class R, class Transform, class... Args>
struct SetResult {
  static void set(AwaitableResultFrame<R>* frame, StreamCore* core, Args... args) {
    frame->return_value(Transform{}(core, std::move(args)...));
  }
};

// A StreamOp in the frame of the coroutine that the operation returns, completed on the
// stream's worker, which is also the worker of the task awaiting it: completing it sets the
// frame's result and resumes the task inline.
template <class R, class Transform, class... Args>
class DirectStreamOp final : public StreamOp<Args...> {
 public:
  DirectStreamOp(AwaitableThread* thread, AwaitableFrame* frame, StreamCore* core)
      : thread_(thread), frame_(static_cast<AwaitableResultFrame<R>*>(frame)), core_(core) {
    auto slot = thread_.get_cancellation_slot();
    if (slot.is_connected()) slot.template emplace<Cancel>(core);
  }

  void complete(Args... args) override {
    // The thread leaves the frame first: resuming the task destroys the frame.
    SuspendedThread thread(std::move(thread_));
    auto slot = thread.get_cancellation_slot();
    if (slot.is_connected()) slot.clear();
    AwaitableResultFrame<R>* frame = frame_;
    SetResult<R, Transform, Args...>::set(frame, core_, std::move(args)...);
    thread.resume(frame);
  }

 private:
  struct Cancel {
    StreamCore* core;
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none) core->cancel();
    }
  };

  SuspendedThread thread_;
  AwaitableResultFrame<R>* frame_;
  StreamCore* core_;
};

// The awaitable of a stream operation for the default token: `start(op)` hands the StreamOp to
// the stream, on the stream's worker; `fallback...` is the result when there is no runtime.
template <class R, class Transform, class... Args, class Start, class... Fallback>
boost::asio::awaitable<R> direct_stream_op(StreamCore* core, Start start, Fallback... fallback) {
  std::optional<DirectStreamOp<R, Transform, Args...>> op;
  // Runs once the frame is suspended (see awaitable_frame_base::await_transform), like the
  // initiation of use_awaitable: the operation may complete, on another thread, at once.
  co_await [&](AwaitableFrame* frame) -> AwaitableThread* {
    AwaitableThread* thread = frame->detach_thread();
    if (resumes_inline(core, *thread)) {
      start(&op.emplace(thread, frame, core));
    } else {
      initiate_stream_op(
          core, AwaitableHandler<R>(thread),
          [core](auto h, Worker* w) {
            return make_stream_op<Args...>(std::move(h), w, core, Transform{});
          },
          std::move(start), std::move(fallback)...);
    }
    return nullptr;
  };
  // Not reached: the operation's completion pops this frame with its result.
  co_return R{};
}

template <class Token>
inline constexpr bool kDirectToken =
    std::is_same_v<std::decay_t<Token>, boost::asio::use_awaitable_t<boost::asio::any_io_executor>>;
#else
template <class Token>
inline constexpr bool kDirectToken = false;
#endif

// co_await-able read of the next message: completes with std::optional<T>.
template <class T, class Token>
auto async_read(StreamCore* core, Token&& token) {
  auto start = [core](ReadOp* op) { core->read(op); };
#if TRELLIS_DIRECT_STREAM_OPS
  if constexpr (kDirectToken<Token>) {
    return direct_stream_op<std::optional<T>, ParseMessage<T>, bool, grpc::ByteBuffer*>(
        core, start, std::optional<T>());
  } else
#endif
  {
    return boost::asio::async_initiate<Token, void(std::optional<T>)>(
        [core, start](auto handler) {
          initiate_stream_op(
              core, std::move(handler),
              [core](auto h, Worker* w) {
                return make_stream_op<bool, grpc::ByteBuffer*>(std::move(h), w, core,
                                                               ParseMessage<T>{});
              },
              start, std::optional<T>());
        },
        token);
  }
}

// Serializes `message` for async_write; false if it cannot be serialized.
inline bool serialize_for_write(const google::protobuf::MessageLite& message, Bytes* out) {
  return serialize(message, out->get()).ok();
}

// Hands a write to the stream (`serialized` false: the message could not be serialized, and
// the call fails with INTERNAL).
inline void start_write(StreamCore* core, bool serialized, Bytes& bytes, bool last, WriteOp* op) {
  if (!serialized) {
    core->fail(Status::internal("a message could not be serialized"));
    core->write(Bytes(), last, op);  // fails: the call has ended
    return;
  }
  core->write(std::move(bytes), last, op);
}

// Writes `bytes`, already serialized (`serialized` false: that failed, and the call fails with
// INTERNAL): completes with bool, false once the stream is closed.
template <class Token>
auto async_write(StreamCore* core, bool serialized, Bytes&& bytes, bool last, Token&& token) {
#if TRELLIS_DIRECT_STREAM_OPS
  if constexpr (kDirectToken<Token>) {
    // The message moves into the frame of the coroutine, with the function that starts it.
    return direct_stream_op<bool, PassBool, bool>(
        core,
        [core, serialized, bytes = std::move(bytes), last](WriteOp* op) mutable {
          start_write(core, serialized, bytes, last, op);
        },
        false);
  } else
#endif
  {
    return boost::asio::async_initiate<Token, void(bool)>(
        [core, last, serialized](auto handler, Bytes bytes) {
          initiate_stream_op(
              core, std::move(handler),
              [core](auto h, Worker* w) {
                return make_stream_op<bool>(std::move(h), w, core, PassBool{});
              },
              [core, last, serialized, bytes = std::move(bytes)](WriteOp* op) mutable {
                start_write(core, serialized, bytes, last, op);
              },
              false);
        },
        token, std::move(bytes));
  }
}

// An operation without a message, `Fn` (StreamCore::start or writes_done): completes with bool.
template <void (StreamCore::*Fn)(WriteOp*), class Token>
auto async_signal(StreamCore* core, Token&& token) {
  auto start = [core](WriteOp* op) { (core->*Fn)(op); };
#if TRELLIS_DIRECT_STREAM_OPS
  if constexpr (kDirectToken<Token>) {
    return direct_stream_op<bool, PassBool, bool>(core, start, false);
  } else
#endif
  {
    return boost::asio::async_initiate<Token, void(bool)>(
        [core, start](auto handler) {
          initiate_stream_op(
              core, std::move(handler),
              [core](auto h, Worker* w) {
                return make_stream_op<bool>(std::move(h), w, core, PassBool{});
              },
              start, false);
        },
        token);
  }
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
  auto start = [core](FinishOp* op) { core->finish(op); };
#if TRELLIS_DIRECT_STREAM_OPS
  if constexpr (kDirectToken<Token>) {
    return direct_stream_op<Status, PassStatus, Status>(core, start, not_on_runtime<Status>());
  } else
#endif
  {
    return boost::asio::async_initiate<Token, void(Status)>(
        [core, start](auto handler) {
          initiate_stream_op(
              core, std::move(handler),
              [core](auto h, Worker* w) {
                return make_stream_op<Status>(std::move(h), w, core, PassStatus{});
              },
              start, not_on_runtime<Status>());
        },
        token);
  }
}

}  // namespace trellis::detail
