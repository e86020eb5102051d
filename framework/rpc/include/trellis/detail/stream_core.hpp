// Internal: the untyped half of streaming calls, shared by server and client streams.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstddef>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "trellis/detail/asio_internals.hpp"
#include "trellis/detail/completion_handler.hpp"
#include "trellis/detail/runnable.hpp"
#include "trellis/detail/serialization.hpp"
#include "trellis/executor.hpp"
#include "trellis/message_observer.hpp"
#include "trellis/status.hpp"

namespace trellis::detail {

// A pending stream operation. complete() is called exactly once, on the stream's worker; it
// frees the object (at once, or once the operation's handler has run: complete_op).
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
//
// Threads: the operations (start, read, write, writes_done, finish) and fail() run on the
// stream's worker, where their StreamOps complete; initiate_stream_op posts them there from any
// other thread. bind(), cancel() and home_thread() may be called from any thread: cancel() comes
// from cancellation handlers, which run on the awaiting task's executor.
class StreamCore : public ObservedStream {
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
  // Cancels the call: with the status fail() gave, if any, else CANCELLED. Any thread.
  virtual void cancel() = 0;
  // Ends the call with `status` (for example a message that does not parse): cancels it, and
  // `status` becomes its final status. Worker thread.
  virtual void fail(Status status) = 0;

  // The identity (asio_internals::thread_id) of a task that runs on the stream's worker, on that
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
// transforming the raw arguments (for example parsing a message). The transform runs on the
// stream's worker; the handler is invoked as complete_op() says (completion_handler.hpp).
template <class Handler, class Transform, class... Args>
class HandlerStreamOp final : public StreamOp<Args...> {
 public:
  HandlerStreamOp(Handler h, Worker* w, StreamCore* core, Transform t)
      : handler(std::move(h)), worker_(w), core_(core), transform_(std::move(t)) {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<Cancel>(this);
  }

  // One of these is allocated per stream operation: Asio's per-thread recycling cache (which
  // Trellis workers have) serves them without malloc.
  static void* operator new(std::size_t size) { return Allocator().allocate(units(size)); }
  static void operator delete(void* p, std::size_t size) {
    Allocator().deallocate(static_cast<std::max_align_t*>(p), units(size));
  }

  void complete(Args... args) override {
    complete_op(this, worker_, transform_(core_, std::move(args)...));
  }

  Handler handler;
  // Set once the outcome is decided, while the completion travels to the handler's executor.
  std::atomic<bool> completed{false};

 private:
  // Runs on the handler's executor. An operation that has completed is not cancelled any more:
  // cancelling the call then would end a stream whose operation succeeded.
  struct Cancel {
    explicit Cancel(HandlerStreamOp* op) : op(op) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none &&
          !op->completed.load(std::memory_order_acquire)) {
        op->core_->cancel();
      }
    }
    HandlerStreamOp* op;
  };

  using Allocator = boost::asio::recycling_allocator<std::max_align_t>;
  static std::size_t units(std::size_t size) {
    return (size + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
  }

  Worker* worker_;
  StreamCore* core_;
  Transform transform_;
};

template <class... Args, class Handler, class Transform>
StreamOp<Args...>* make_stream_op(Handler h, Worker* w, StreamCore* core, Transform t) {
  return new HandlerStreamOp<Handler, Transform, Args...>(std::move(h), w, core, std::move(t));
}

// Parses a received message and shows it to the stream's observers; false (the call failed with
// INTERNAL, or with what an observer answered) if it does not parse or an observer rejects it.
// A server's stream: told how the handler's task ended.
class ServerStreamCore : public StreamCore {
 public:
  // The handler's task ended: with `error` if it threw, else with `status`. On the stream's
  // worker. Called once.
  virtual void handler_returned(std::exception_ptr error, Status status) noexcept = 0;

 protected:
  ~ServerStreamCore() = default;
};

// The stream a streaming call was given (CallAccess::set_stream): always a StreamCore.
inline StreamCore* stream_core(ObservedStream* stream) { return static_cast<StreamCore*>(stream); }

inline bool parse_received(StreamCore* core, grpc::ByteBuffer* bytes,
                           google::protobuf::MessageLite* message) {
  Status s = parse(bytes, message, "message");
  if (s.ok() && core->observed()) s = core->observers()->received(*message);
  if (s.ok()) return true;
  core->fail(std::move(s));
  return false;
}

// Parses a read into T: nullopt at the end of the stream, or when parse_received fails.
template <class T>
struct ParseMessage {
  std::optional<T> operator()(StreamCore* core, bool got, grpc::ByteBuffer* bytes) const {
    std::optional<T> message;  // the one object returned: constructed in place (NRVO)
    if (!got) return message;
    if (!parse_received(core, bytes, &message.emplace())) message.reset();
    return message;
  }
};

// Parses a read into a message the caller owns (read(T&)): true with a message, false at the
// end of the stream or when parse_received fails.
// Parsing clears the message first, but keeps what it has allocated (strings, repeated fields),
// so a loop reusing one message allocates nothing per message, like a grpc++ server reusing its
// request object.
struct ParseInto {
  google::protobuf::MessageLite* message;
  bool operator()(StreamCore* core, bool got, grpc::ByteBuffer* bytes) const {
    return got && parse_received(core, bytes, message);
  }
};

struct PassBool {
  bool operator()(StreamCore*, bool ok) const { return ok; }
};

struct PassStatus {
  Status operator()(StreamCore*, Status status) const { return status; }
};

// Awaiting a stream operation directly (TRELLIS_ASIO_INTERNALS). With the default token
// (use_awaitable), async_initiate makes a coroutine whose only job is to hand an awaitable_handler
// to the initiation, which then allocates a HandlerStreamOp for it, copies the task's executor
// twice to find its worker, and on completion checks the executor again before resuming the
// task. A task on the stream's own worker (the common case: a handler's reads and writes) needs
// none of it: its operation object can live in the coroutine frame that the operation returns,
// and complete by resuming the task inline (asio_internals::suspend). Any other task (another
// worker, a strand, a foreign executor, no runtime) takes the async_initiate path.
#if TRELLIS_ASIO_INTERNALS
// Whether an operation of `core` awaited by the task `id` on `ex` can complete by resuming the
// task inline: the task runs on a Trellis worker's own executor, on that worker, and the stream is
// bound to the same worker.
inline bool resumes_inline(StreamCore* core, const void* id,
                           const boost::asio::any_io_executor& ex) {
  const void* home = core->home_thread();
  if (home != nullptr && home == id) return true;
  const Executor* te = ex.target<Executor>();
  if (te == nullptr) return false;
  Worker* w = te->worker();
  return *te == Executor(w) && running_in(w) && core->bind(w) == w;
}

// A StreamOp in the frame of the coroutine that the operation returns, completed on the
// stream's worker, which is also the worker of the task awaiting it: completing it sets the
// frame's result and resumes the task inline. The task's cancellation is signalled on that same
// worker, so the slot is installed and cleared there.
template <class R, class Transform, class... Args>
class DirectStreamOp final : public StreamOp<Args...> {
 public:
  DirectStreamOp(asio_internals::SuspendedTask<R>&& task, StreamCore* core, Transform t)
      : task_(std::move(task)), core_(core), transform_(std::move(t)) {
    auto slot = task_.cancellation_slot();
    if (slot.is_connected()) slot.template emplace<Cancel>(core);
  }

  void complete(Args... args) override {
    // The task leaves this object first: resuming it destroys the frame this object lives in.
    asio_internals::SuspendedTask<R> task(std::move(task_));
    std::move(task).resume(transform_(core_, std::move(args)...));
  }

 private:
  struct Cancel {
    explicit Cancel(StreamCore* core) : core(core) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none) core->cancel();
    }
    StreamCore* core;
  };

  asio_internals::SuspendedTask<R> task_;
  StreamCore* core_;
  [[no_unique_address]] Transform transform_;
};

// The awaitable of a stream operation for the default token: `start(op)` hands the StreamOp to
// the stream, on the stream's worker, and `transform(core, args...)` makes the result of what the
// stream completes it with; `fallback...` is the result when there is no runtime.
template <class R, class... Args, class Transform, class Start, class... Fallback>
boost::asio::awaitable<R> direct_stream_op(StreamCore* core, Transform transform, Start start,
                                           Fallback... fallback) {
  using Op = DirectStreamOp<R, Transform, Args...>;
  return asio_internals::suspend<R, Op>(
      [core, transform = std::move(transform), start = std::move(start),
       ... fallback = std::move(fallback)](asio_internals::SuspendedTask<R>&& task,
                                           std::optional<Op>& op) mutable {
        if (resumes_inline(core, task.id(), task.executor())) {
          start(&op.emplace(std::move(task), core, std::move(transform)));
          return;
        }
        initiate_stream_op(
            core, std::move(task).into_handler(),
            [core, &transform](auto h, Worker* w) {
              return make_stream_op<Args...>(std::move(h), w, core, std::move(transform));
            },
            std::move(start), std::move(fallback)...);
      });
}

template <class Token>
inline constexpr bool kDirectToken =
    std::is_same_v<std::decay_t<Token>, boost::asio::use_awaitable_t<boost::asio::any_io_executor>>;

// The StreamOp of a StreamOperation awaited directly by a task on the stream's worker. It lives
// in the operation object, which is the operand of the co_await and so stays in the awaiting
// frame until that frame resumes: no allocation and no coroutine frame of its own.
template <class R, class Transform, class... Args>
class AwaitedStreamOp final : public StreamOp<Args...> {
 public:
  AwaitedStreamOp(asio_internals::AsyncOpHandler<R>&& handler, StreamCore* core, Transform t)
      : handler_(std::move(handler)), core_(core), transform_(std::move(t)) {
    auto slot = handler_.get_cancellation_slot();
    if (slot.is_connected()) slot.template emplace<Cancel>(core);
  }

  void complete(Args... args) override {
    // The handler leaves this object first: resuming the task destroys it.
    asio_internals::AsyncOpHandler<R> handler(std::move(handler_));
    std::move(handler)(transform_(core_, std::move(args)...));
  }

 private:
  struct Cancel {
    explicit Cancel(StreamCore* core) : core(core) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none) core->cancel();
    }
    StreamCore* core;
  };

  asio_internals::AsyncOpHandler<R> handler_;
  StreamCore* core_;
  [[no_unique_address]] Transform transform_;
};
#else
template <class Token>
inline constexpr bool kDirectToken = false;
#endif

// The initiation of a stream operation for any completion token: `start(op)` hands the StreamOp
// to the stream on its worker, `transform(core, args...)` makes the result from what the stream
// completes it with, `fallback` is the result when there is no runtime.
template <class R, class Transform, class Start, class... Args>
struct StreamInitiation {
  StreamCore* core;
  Transform transform;
  Start start;
  R fallback;

  template <class Handler>
  void operator()(Handler&& handler) {
    initiate_stream_op(
        core, std::forward<Handler>(handler),
        [this](auto h, Worker* w) {
          return make_stream_op<Args...>(std::move(h), w, core, std::move(transform));
        },
        std::move(start), std::move(fallback));
  }
};

// What a stream operation returns for the token boost::asio::deferred: an Asio asynchronous
// operation (boost::asio::is_async_operation), a function object that starts the operation when
// called with a completion token. A task can co_await it directly, which needs no coroutine frame
// for the operation (an awaitable does; docs/performance.md has the difference). With
// TRELLIS_ASIO_INTERNALS, co_await from a task on the stream's worker completes by resuming the
// task inline, with the StreamOp in this object.
template <class R, class Transform, class Start, class... Args>
class StreamOperation {
 public:
  StreamOperation(StreamCore* core, Transform transform, Start start, R fallback)
      : init_{core, std::move(transform), std::move(start), std::move(fallback)} {}

  // Constrained: co_await probes its operand for other uses (a function of the frame).
  template <boost::asio::completion_token_for<void(R)> Token>
  auto operator()(Token&& token) && {
#if TRELLIS_ASIO_INTERNALS
    if constexpr (asio_internals::kIsAsyncOpHandler<Token, R>) {
      if (resumes_inline(init_.core, asio_internals::thread_id(token), token.get_executor())) {
        init_.start(&op_.emplace(std::move(token), init_.core, std::move(init_.transform)));
        return;
      }
    }
#endif
    return boost::asio::async_initiate<Token, void(R)>(std::move(init_), token);
  }

 private:
  StreamInitiation<R, Transform, Start, Args...> init_;
#if TRELLIS_ASIO_INTERNALS
  std::optional<AwaitedStreamOp<R, Transform, Args...>> op_;
#endif
};

template <class Token>
inline constexpr bool kDeferredToken = std::is_same_v<std::decay_t<Token>, boost::asio::deferred_t>;

// A stream operation (completing with R) for `token`: see StreamInitiation for the arguments.
template <class R, class... Args, class Token, class Transform, class Start>
auto async_stream_op(StreamCore* core, Token&& token, Transform transform, Start start,
                     R fallback) {
  if constexpr (kDeferredToken<Token>) {
    return StreamOperation<R, Transform, Start, Args...>(core, std::move(transform),
                                                         std::move(start), std::move(fallback));
  }
#if TRELLIS_ASIO_INTERNALS
  else if constexpr (kDirectToken<Token>) {
    return direct_stream_op<R, Args...>(core, std::move(transform), std::move(start),
                                        std::move(fallback));
  }
#endif
  else {
    return boost::asio::async_initiate<Token, void(R)>(
        StreamInitiation<R, Transform, Start, Args...>{core, std::move(transform), std::move(start),
                                                       std::move(fallback)},
        token);
  }
}

// Read of the next message: completes with std::optional<T>.
template <class T, class Token>
auto async_read(StreamCore* core, Token&& token) {
  return async_stream_op<std::optional<T>, bool, grpc::ByteBuffer*>(
      core, std::forward<Token>(token), ParseMessage<T>{}, [core](ReadOp* op) { core->read(op); },
      std::optional<T>());
}

// Read of the next message into `*message` (see ParseInto): completes with bool.
template <class Token>
auto async_read_into(StreamCore* core, google::protobuf::MessageLite* message, Token&& token) {
  return async_stream_op<bool, bool, grpc::ByteBuffer*>(
      core, std::forward<Token>(token), ParseInto{message}, [core](ReadOp* op) { core->read(op); },
      false);
}

// A completion token rather than a message: keeps a message that read(T&) cannot take (a const
// one) from being taken for a token by read(Token), which would fail deep inside Asio.
template <class Token>
concept NotAMessage = !std::is_base_of_v<google::protobuf::MessageLite, std::remove_cvref_t<Token>>;

// Serializes `message` for async_write: OK, or the status the call is to fail with.
inline Status serialize_for_write(const google::protobuf::MessageLite& message, Bytes* out) {
  if (serialize(message, out->get()).ok()) return Status();
  return Status::internal("a message could not be serialized");
}

// The same, for a message a server handler writes: its observers see it first. (A client
// stream's observers see what the caller wrote once the call is under way, see
// layered_client_stream.cpp.)
inline Status prepare_server_write(StreamCore* core, const google::protobuf::MessageLite& message,
                                   Bytes* out) {
  if (core->observed()) {
    if (Status s = core->observers()->sent(message); !s.ok()) return s;
  }
  return serialize_for_write(message, out);
}

// Hands a write to the stream; a non-OK `prepared` (from serialize_for_write) fails the call
// with it instead, and the write with it.
inline void start_write(StreamCore* core, Status& prepared, Bytes& bytes, bool last, WriteOp* op) {
  if (!prepared.ok()) {
    core->fail(std::move(prepared));
    core->write(Bytes(), last, op);  // fails: the call has ended
    return;
  }
  core->write(std::move(bytes), last, op);
}

// Writes `bytes`, already serialized (`prepared`: see start_write): completes with bool, false
// once the stream is closed. The message moves into the operation, with the function that
// starts it.
template <class Token>
auto async_write(StreamCore* core, Status prepared, Bytes&& bytes, bool last, Token&& token) {
  return async_stream_op<bool, bool>(
      core, std::forward<Token>(token), PassBool{},
      [core, prepared = std::move(prepared), bytes = std::move(bytes), last](WriteOp* op) mutable {
        start_write(core, prepared, bytes, last, op);
      },
      false);
}

// An operation without a message, `Fn` (StreamCore::start or writes_done): completes with bool.
template <void (StreamCore::*Fn)(WriteOp*), class Token>
auto async_signal(StreamCore* core, Token&& token) {
  return async_stream_op<bool, bool>(
      core, std::forward<Token>(token), PassBool{}, [core](WriteOp* op) { (core->*Fn)(op); },
      false);
}

template <class Token>
auto async_start(StreamCore* core, Token&& token) {
  return async_signal<&StreamCore::start>(core, std::forward<Token>(token));
}

template <class Token>
auto async_writes_done(StreamCore* core, Token&& token) {
  return async_signal<&StreamCore::writes_done>(core, std::forward<Token>(token));
}

// Half-close if needed and the call's final status: completes with Status.
template <class Token>
auto async_finish(StreamCore* core, Token&& token) {
  return async_stream_op<Status, Status>(
      core, std::forward<Token>(token), PassStatus{}, [core](FinishOp* op) { core->finish(op); },
      not_on_runtime<Status>());
}

}  // namespace trellis::detail
