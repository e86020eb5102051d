#include "trellis/server.hpp"

#include <grpc/grpc.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/async_stream.h>
#include <grpcpp/support/async_unary_call.h>
#include <sys/resource.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/version.hpp>
#include <cassert>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "forward.hpp"
#include "grpc_convert.hpp"
#include "log.hpp"
#if TRELLIS_NATIVE_TRANSPORT
#include "native_server.hpp"
#endif
#include "outgoing_bytes.hpp"
#include "runtime_core.hpp"
#include "server_call.hpp"
#include "server_queues.hpp"
#include "tls_credentials.hpp"
#include "trellis/runtime.hpp"
#include "trellis/service.hpp"
#include "worker.hpp"

namespace trellis {
namespace {

using detail::cancel_handler;
using detail::Completion;
using detail::Forward;
using detail::handler_outcome;
using detail::run_cancel_with;
using detail::Worker;

}  // namespace

class Server::State {
 public:
  explicit State(Runtime* rt) : runtime(rt) {
    detail::RuntimeAccess::core(*rt).live_servers.fetch_add(1);
  }
  ~State() { detail::RuntimeAccess::core(*runtime).live_servers.fetch_sub(1); }

  // Every call object, requested or accepted, is counted: gRPC finalizes a pending request
  // (touching the grpc::Server) just before handing it back, so the server may only be destroyed
  // once every object has seen its last completion. Any worker.
  void call_object_created() { detail::LiveCounts::created(call_objects); }
  void call_object_destroyed() { live.destroyed(call_objects); }

  Runtime* runtime;
  std::unique_ptr<grpc::Server> server;
#if TRELLIS_NATIVE_TRANSPORT
  std::unique_ptr<detail::NativeServer> native;  // instead of `server` on the native transport
#endif
  // BuildAndStart insists on one frequently polled queue of its own; no call is ever requested
  // on it, so it stays empty. Shut down and drained after the server.
  std::unique_ptr<grpc::ServerCompletionQueue> idle_cq;
  grpc::AsyncGenericService generic;
  std::vector<int> ports;
  // The services served, in the order added: their lifecycle hooks run at start and shutdown.
  std::vector<Service*> services;
  // The middleware stack of each method that has one (a deque: call objects point into it).
  std::deque<BoxService> stacks;
  std::atomic<int> call_objects{0};
  detail::LiveCounts live;  // Server::shutdown waits there for call_objects to reach zero
  std::mutex shutdown_mu;   // makes shutdown() idempotent
  bool shut_down = false;
};

// A call's handler runs as an Asio awaitable thread whose cancellation slot is the context's
// signal. With TRELLIS_ASIO_INTERNALS the call starts that thread itself, inline on the accepting
// worker, and answers the call from the thread's bottom frame (asio_internals::Launch): co_spawn
// would add a dispatch through the executor, a post after a handler that never suspended, a
// completion dispatch, two tracked-work executor copies and a proxy cancellation signal, none of
// which a call accepted on its handler's own worker needs. Without internals it uses co_spawn.

namespace {

// On a call's done tag: when the call was cancelled (by the client, its deadline, or shutdown)
// while its handler runs, marks the context and cancels what the handler awaits. Once the handler
// has finished nothing reads the cancellation any more, so that common case skips IsCancelled,
// which takes a lock.
void cancel_handler_if_cancelled(grpc::ServerContext& grpc_ctx, ServerContext& ctx,
                                 bool handler_running) {
  if (handler_running && grpc_ctx.IsCancelled()) cancel_handler(ctx);
}

// Ends a gRPC server call now with `status`, as the client will see it. Any thread.
void cancel_grpc_call(grpc::ServerContext& grpc_ctx, const Status& status) {
  grpc_call_cancel_with_status(grpc_ctx.c_call(), static_cast<grpc_status_code>(status.code()),
                               status.message().c_str(), nullptr);
}

// The end of a server call object: uncounts it (`accepted`: it was counted as a live call),
// frees it, then tells the server, whose shutdown() may be waiting for the last one.
template <class Call>
void destroy_call(Call* call, Server::State* server, Worker* worker, bool accepted) {
  if (accepted) Worker::count_call(worker->live_server_calls, -1);
  delete call;
  server->call_object_destroyed();
}

// Freed memory blocks of one size, kept per thread for reuse. A worker frees one UnaryCall
// (about 2 KiB, above the size glibc keeps in its per-thread cache, so malloc's slow path) and
// allocates another for every call it serves; recycling them keeps malloc's slow path off
// the per-call path. Bounded, so a burst of concurrent calls does not pin memory for ever.
template <std::size_t kSize>
class BlockCache {
 public:
  BlockCache() = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache() {
    for (std::size_t i = 0; i < count_; ++i) ::operator delete(blocks_[i]);
  }

  void* take() { return count_ > 0 ? blocks_[--count_] : ::operator new(kSize); }
  void give(void* p) {
    if (count_ < kCapacity) {
      blocks_[count_++] = p;
    } else {
      ::operator delete(p);
    }
  }

  static BlockCache& for_this_thread() {
    thread_local BlockCache cache;
    return cache;
  }

 private:
#if defined(__SANITIZE_ADDRESS__)
  // Recycled blocks would hide a use after free of a call object from AddressSanitizer.
  static constexpr std::size_t kCapacity = 0;
#else
  static constexpr std::size_t kCapacity = 64;
#endif
  void* blocks_[kCapacity > 0 ? kCapacity : 1];
  std::size_t count_ = 0;
};

// One incoming unary call, from request to the last completion. Lives on one worker: it is
// created, armed and completed there, and every member is touched only there, but for
// pending_posts_ (see run_cancel_with).
class UnaryCall final : public detail::ServerCall {
 public:
  // Always this exact class (it is final): every block has the same size.
  static void* operator new([[maybe_unused]] std::size_t size) {
    assert(size == sizeof(UnaryCall));
    return BlockCache<sizeof(UnaryCall)>::for_this_thread().take();
  }
  static void operator delete(void* p) { BlockCache<sizeof(UnaryCall)>::for_this_thread().give(p); }

  UnaryCall(Server::State* server, Worker* worker, detail::UnaryMethod* method,
            const BoxService* stack)
      : server_(server),
        worker_(worker),
        method_(method),
        stack_(stack),
        responder_(&grpc_ctx_),
        ctx_(&grpc_ctx_, method->path(), this) {
    server_->call_object_created();
  }

  // Asks gRPC for the next call of this method on this worker's queue.
  void arm() {
    grpc_ctx_.AsyncNotifyWhenDone(&on_done_);
    method_->grpc_service()->RequestAsyncUnary(method_->index(), &grpc_ctx_, &request_, &responder_,
                                               worker_->cq(), worker_->cq(), &on_accepted_);
  }

  void cancel_with(Status status) override {
    run_cancel_with(this, worker_, pending_posts_, ctx_, cancel_request_, std::move(status));
  }

  // ServerContext::cancel_with on the worker: the client gets `status` now; the handler is
  // cancelled, and what it answers afterwards is not sent.
  void cancel_now(Status status) {
    if (!handler_running_ || cancelled_with_) return;
    cancel_grpc_call(grpc_ctx_, status);
    cancelled_with_ = std::move(status);
    cancel_handler(ctx_);
  }

  void maybe_free() {
    if (done_ && finished_ && pending_posts_.load(std::memory_order_relaxed) == 0) free();
  }

 private:
  void accepted(bool ok) {
    if (!ok) {
      // The server is shutting down; this request never became a call.
      free();
      return;
    }
    (new UnaryCall(server_, worker_, method_, stack_))->arm();
    Worker::count_call(worker_->live_server_calls, 1);
    accepted_ = true;
    handler_running_ = true;
    boost::asio::cancellation_slot slot = detail::ServerContextAccess::signal(ctx_).slot();
#if TRELLIS_ASIO_INTERNALS
    detail::asio_internals::Launch(serve(this), Executor(worker_), slot).launch();
#else
    boost::asio::co_spawn(Executor(worker_),
                          method_->invoke(ctx_, &request_, &response_.buffer, &status_, stack_),
                          boost::asio::bind_cancellation_slot(
                              slot, [this](std::exception_ptr error) { handler_done(error); }));
#endif
  }

#if TRELLIS_ASIO_INTERNALS
  // The bottom frame of the call's awaitable thread: runs the handler and answers the call, as
  // the co_spawn completion handler does otherwise.
  static detail::asio_internals::EntryPoint serve(UnaryCall* self) {
    std::exception_ptr error;
    try {
      co_await self->method_->invoke(self->ctx_, &self->request_, &self->response_.buffer,
                                     &self->status_, self->stack_);
    } catch (...) {
      error = std::current_exception();
    }
    self->handler_done(error);
  }
#endif

  void handler_done(const std::exception_ptr& error) {
    if (std::optional<Status> cancel = cancel_request_.take()) cancel_now(std::move(*cancel));
    handler_running_ = false;
    if (error) status_ = handler_outcome(error, std::move(status_), ctx_);
    if (cancelled_with_) status_ = std::move(*cancelled_with_);
    if (status_.ok()) {
      responder_.Finish(response_, grpc::Status::OK, &on_finished_);
    } else {
      responder_.FinishWithError(detail::to_grpc(status_), &on_finished_);
    }
  }

  void done(bool) {
    done_ = true;
    cancel_handler_if_cancelled(grpc_ctx_, ctx_, handler_running_);
    maybe_free();
  }

  void finished(bool) {
    finished_ = true;
    maybe_free();
  }

  void free() { destroy_call(this, server_, worker_, accepted_); }

  Server::State* server_;
  Worker* worker_;
  detail::UnaryMethod* method_;
  const BoxService* stack_;  // the server's middleware for the method, or nullptr
  bool accepted_ = false;

  grpc::ServerContext grpc_ctx_;
  grpc::ByteBuffer request_;
  detail::OutgoingBytes response_;
  grpc::ServerAsyncResponseWriter<detail::OutgoingBytes> responder_;
  ServerContext ctx_;
  Status status_;                         // the handler's outcome, set by UnaryMethod::invoke
  std::optional<Status> cancelled_with_;  // ServerContext::cancel_with's status
  std::atomic<int> pending_posts_{0};     // run_cancel_with runnables not yet run
  detail::CancelRequest cancel_request_;  // a cancel_with from another thread, until it runs
  bool handler_running_ = false;
  bool done_ = false;
  bool finished_ = false;

  Forward<UnaryCall, &UnaryCall::accepted> on_accepted_{this};
  Forward<UnaryCall, &UnaryCall::done> on_done_{this};
  Forward<UnaryCall, &UnaryCall::finished> on_finished_{this};
};

// A call to a method no registered service has: answered UNIMPLEMENTED.
class UnknownMethodCall {
 public:
  UnknownMethodCall(Server::State* server, Worker* worker)
      : server_(server), worker_(worker), stream_(&ctx_) {
    server_->call_object_created();
  }

  void arm() {
    server_->generic.RequestCall(&ctx_, &stream_, worker_->cq(), worker_->cq(), &on_accepted_);
  }

 private:
  void accepted(bool ok) {
    if (!ok) {
      finished(false);
      return;
    }
    (new UnknownMethodCall(server_, worker_))->arm();
    stream_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                absl::StrCat("unknown method ", ctx_.method())),
                   &on_finished_);
  }

  void finished(bool) { destroy_call(this, server_, worker_, false); }

  Server::State* server_;
  Worker* worker_;
  grpc::GenericServerContext ctx_;
  grpc::GenericServerAsyncReaderWriter stream_;
  Forward<UnknownMethodCall, &UnknownMethodCall::accepted> on_accepted_{this};
  Forward<UnknownMethodCall, &UnknownMethodCall::finished> on_finished_{this};
};

// The gRPC operations a StreamCall has in flight, one tag each.
enum StreamOp { kAccept, kRead, kWrite, kDone, kFinish };

// One incoming streaming call (any streaming kind), from request to the last completion. Lives
// on one worker, where it is created and armed and where the handler's reads and writes run
// (StreamCore's threading contract). It is freed when the handler has returned, the status has
// been sent, gRPC has reported the call done, no read or write is in flight and no
// run_cancel_with runnable is pending.
class StreamCall final : public detail::ServerStreamCore,
                         public detail::ServerCall,
                         public detail::OpTag<StreamCall, kAccept>,
                         public detail::OpTag<StreamCall, kRead>,
                         public detail::OpTag<StreamCall, kWrite>,
                         public detail::OpTag<StreamCall, kDone>,
                         public detail::OpTag<StreamCall, kFinish> {
 public:
  StreamCall(Server::State* server, Worker* worker, detail::StreamMethod* method,
             const BoxService* stack)
      : server_(server),
        worker_(worker),
        method_(method),
        stack_(stack),
        stream_(&grpc_ctx_),
        ctx_(&grpc_ctx_, method->path(), this) {
    server_->call_object_created();
  }

  void arm() {
    grpc_ctx_.AsyncNotifyWhenDone(tag<kDone>());
    method_->grpc_service()->RequestAsyncBidiStreaming(
        method_->index(), &grpc_ctx_, &stream_, worker_->cq(), worker_->cq(), tag<kAccept>());
  }

  Worker* bind(Worker*) override { return worker_; }

  void read(detail::ReadOp* op) override {
    if (read_op_ != nullptr) {
      misuse("a read was started while another read is pending on the stream");
      detail::complete_later(worker_, op, false, static_cast<grpc::ByteBuffer*>(nullptr));
      return;
    }
    if (reads_ended_ || failed_ || status_sent_) {
      detail::complete_later(worker_, op, false, static_cast<grpc::ByteBuffer*>(nullptr));
      return;
    }
    read_op_ = op;
    ++outstanding_;
    stream_.Read(&read_buffer_, tag<kRead>());
  }

  void write(detail::Bytes message, bool, detail::WriteOp* op) override {
    if (write_op_ != nullptr) {
      misuse("a write was started while another write is pending on the stream");
      detail::complete_later(worker_, op, false);
      return;
    }
    if (failed_ || handler_returned_) {
      detail::complete_later(worker_, op, false);
      return;
    }
    write_op_ = op;
    ++outstanding_;
    write_buffer_.take(std::move(message));
    stream_.Write(write_buffer_, tag<kWrite>());
  }

  // Client-side operations; the typed server API never starts them.
  void start(detail::WriteOp* op) override { detail::complete_later(worker_, op, false); }
  void writes_done(detail::WriteOp* op) override { detail::complete_later(worker_, op, false); }
  void finish(detail::FinishOp* op) override {
    detail::complete_later(
        worker_, op, Status::failed_precondition("a server stream is finished by its handler"));
  }

  // Ends the call at once: with the failure status if the call has one (a server time limit
  // that ran out answers DEADLINE_EXCEEDED), else CANCELLED, as TryCancel does. gRPC sends
  // that status to the client as the call's trailers. Any thread: a pending operation's
  // cancellation slot may be signalled from another worker's task.
  void cancel() override {
    std::lock_guard lock(failure_mu_);
    if (!failed_) {
      grpc_ctx_.TryCancel();
      return;
    }
    grpc_call_cancel_with_status(grpc_ctx_.c_call(), static_cast<grpc_status_code>(status_.code()),
                                 status_.message().c_str(), nullptr);
  }

  // The call ends with `status` once the handler returns; reads and writes fail from now on.
  // Worker thread (the only writer of status_ and failed_; cancel() reads them under the lock
  // from anywhere, and status_ only once failed_, after which it never changes).
  void fail(Status status) override {
    std::lock_guard lock(failure_mu_);
    if (failed_) return;
    status_ = std::move(status);
    failed_ = true;
  }

  void cancel_with(Status status) override {
    run_cancel_with(this, worker_, pending_posts_, ctx_, cancel_request_, std::move(status));
  }

  // ServerContext::cancel_with on the worker: the call fails with `status`, which the client
  // gets now, and the handler is cancelled.
  void cancel_now(Status status) {
    if (handler_returned_ || failed_) return;
    fail(std::move(status));
    cancel();
    cancel_handler(ctx_);
  }

  void maybe_free() {
    if (callback_depth_ == 0 && done_ && finished_ && outstanding_ == 0 && !handler_running_ &&
        pending_posts_.load(std::memory_order_relaxed) == 0) {
      free();
    }
  }

 private:
  friend class detail::CallbackScope<StreamCall>;
  template <class, int>
  friend class detail::OpTag;
  using Scope = detail::CallbackScope<StreamCall>;

  template <int K>
  detail::Completion* tag() {
    return static_cast<detail::OpTag<StreamCall, K>*>(this);
  }
  void on_complete(detail::OpKind<kAccept>, bool ok) { accepted(ok); }
  void on_complete(detail::OpKind<kRead>, bool ok) { read_done(ok); }
  void on_complete(detail::OpKind<kWrite>, bool ok) { written(ok); }
  void on_complete(detail::OpKind<kDone>, bool ok) { done(ok); }
  void on_complete(detail::OpKind<kFinish>, bool ok) { finished(ok); }

  void accepted(bool ok) {
    if (!ok) {
      free();  // the server is shutting down; this request never became a call
      return;
    }
    Scope scope(this);
    (new StreamCall(server_, worker_, method_, stack_))->arm();
    Worker::count_call(worker_->live_server_calls, 1);
    accepted_ = true;
    handler_running_ = true;
    boost::asio::cancellation_slot slot = detail::ServerContextAccess::signal(ctx_).slot();
#if TRELLIS_ASIO_INTERNALS
    // As in UnaryCall; the method's frame is the thread's bottom frame (StreamMethod::run). The
    // thread is also the stream's home thread: it runs on this worker's own executor, so its
    // reads and writes skip the check of the awaiting task's executor.
    detail::asio_internals::Launch thread(method_->run(ctx_, *this, stack_), Executor(worker_),
                                          slot);
    home_thread_.store(thread.id(), std::memory_order_relaxed);
    thread.launch();
#else
    boost::asio::co_spawn(
        Executor(worker_), method_->invoke(ctx_, *this, stack_),
        boost::asio::bind_cancellation_slot(slot, [this](std::exception_ptr error, Status status) {
          handler_returned(std::move(error), std::move(status));
        }));
#endif
  }

  void handler_returned(std::exception_ptr error, Status status) noexcept override {
    Scope scope(this);
    if (std::optional<Status> cancel = cancel_request_.take()) cancel_now(std::move(*cancel));
    home_thread_.store(nullptr, std::memory_order_relaxed);  // the thread ends
    handler_running_ = false;
    handler_returned_ = true;
    Status outcome = handler_outcome(std::move(error), std::move(status), ctx_);
    if (!failed_) status_ = std::move(outcome);
    // gRPC allows one write in flight: a write the handler left pending goes out first.
    if (write_op_ == nullptr) send_status();
  }

  void send_status() {
    status_sent_ = true;
    ++outstanding_;
    stream_.Finish(detail::to_grpc(status_), tag<kFinish>());
  }

  // A failed read is the client's half-close or a broken call (cancelled by the client, deadline,
  // connection lost); core tells which, so the handler learns from is_cancelled() at once.
  void read_done(bool ok) {
    Scope scope(this);
    --outstanding_;
    if (!ok) {
      reads_ended_ = true;
      if (grpc_call_failed_before_recv_message(grpc_ctx_.c_call()) != 0) {
        detail::ServerContextAccess::mark_cancelled(ctx_);
      }
    }
    detail::ReadOp* op = std::exchange(read_op_, nullptr);
    // The message leaves read_buffer_ first: completing may start the next read into it.
    grpc::ByteBuffer message;
    message.Swap(&read_buffer_);
    op->complete(ok, ok ? &message : nullptr);
  }

  // A write fails only when the call is dead.
  void written(bool ok) {
    Scope scope(this);
    --outstanding_;
    if (!ok) detail::ServerContextAccess::mark_cancelled(ctx_);
    std::exchange(write_op_, nullptr)->complete(ok);
    if (handler_returned_ && !status_sent_ && write_op_ == nullptr) send_status();
  }

  void done(bool) {
    Scope scope(this);
    done_ = true;
    cancel_handler_if_cancelled(grpc_ctx_, ctx_, handler_running_);
  }

  void finished(bool) {
    Scope scope(this);
    --outstanding_;
    finished_ = true;
  }

  void misuse(const char* what) {
    detail::log(detail::LogLevel::kError, absl::StrCat(std::string(ctx_.method()), ": ", what));
    fail(Status::internal(what));
  }

  void free() { destroy_call(this, server_, worker_, accepted_); }

  Server::State* server_;
  Worker* worker_;
  detail::StreamMethod* method_;
  const BoxService* stack_;  // the server's middleware for the method, or nullptr

  grpc::ServerContext grpc_ctx_;
  grpc::ServerAsyncReaderWriter<detail::OutgoingBytes, grpc::ByteBuffer> stream_;
  detail::OutgoingBytes write_buffer_;  // the message of the write in flight
  ServerContext ctx_;
  grpc::ByteBuffer read_buffer_;
  detail::ReadOp* read_op_ = nullptr;
  detail::WriteOp* write_op_ = nullptr;
  // The call's final status: what fail() set (failed_), else the handler's outcome once it
  // returned.
  Status status_;
  int outstanding_ = 0;  // reads, writes and the status in flight in gRPC
  int callback_depth_ = 0;
  std::atomic<int> pending_posts_{0};     // run_cancel_with runnables not yet run
  detail::CancelRequest cancel_request_;  // a cancel_with from another thread, until it runs
  bool accepted_ = false;
  bool handler_running_ = false;
  bool handler_returned_ = false;
  bool reads_ended_ = false;
  bool status_sent_ = false;
  bool done_ = false;
  bool finished_ = false;
  bool failed_ = false;
  detail::TinyLock failure_mu_;  // status_ and failed_ between fail() and cancel()
};

// A method a server keeps calls requested for, on every worker.
struct RequestedMethod {
  detail::UnaryMethod* unary;  // one of unary and stream is set
  detail::StreamMethod* stream;
  const BoxService* stack;  // the server's middleware for the method, or nullptr
};

// Makes and arms a worker's call objects on that worker, so that every gRPC operation of a call
// object starts on the thread that completes it. Counted as a call object until it has run, so
// that Server::shutdown waits for it.
class ArmWorker final : public detail::Runnable {
 public:
  ArmWorker(Server::State* server, Worker* worker, std::vector<RequestedMethod> methods,
            int per_method)
      : server_(server), worker_(worker), methods_(std::move(methods)), per_method_(per_method) {
    server_->call_object_created();
  }

  void run() override {
    for (const RequestedMethod& m : methods_) {
      for (int k = 0; k < per_method_; ++k) {
        if (m.unary != nullptr) {
          (new UnaryCall(server_, worker_, m.unary, m.stack))->arm();
        } else {
          (new StreamCall(server_, worker_, m.stream, m.stack))->arm();
        }
      }
    }
    (new UnknownMethodCall(server_, worker_))->arm();
    done();
  }
  void discard() override { done(); }

 private:
  void done() {
    Server::State* server = server_;
    delete this;
    server->call_object_destroyed();
  }

  Server::State* server_;
  Worker* worker_;
  std::vector<RequestedMethod> methods_;
  int per_method_;
};

}  // namespace

// ------------------------------------------------------------------------- Server::Builder

Server::Builder::Builder(Runtime& runtime) : runtime_(&runtime) {}
Server::Builder::~Builder() = default;
Server::Builder::Builder(Builder&&) noexcept = default;

Server::Builder& Server::Builder::add_insecure_port(std::string address) {
  addresses_.push_back(std::move(address));
  return *this;
}

Server::Builder& Server::Builder::add_service(Service& service, BoxLayer layer) {
  services_.push_back(&service);
  service_layers_.push_back(std::move(layer));
  return *this;
}

Server::Builder& Server::Builder::layer(BoxLayer layer) {
  layers_.push(std::move(layer));
  return *this;
}

Server::Builder& Server::Builder::requests_per_worker(int n) {
  requests_per_worker_ = std::max(1, n);
  return *this;
}

Server::Builder& Server::Builder::grpc_option(std::function<void(grpc::ServerBuilder&)> fn) {
  configure_.push_back(std::move(fn));
  return *this;
}

Server::Builder& Server::Builder::configure(std::function<void(grpc::ServerBuilder&)> fn) {
  configured_ = true;
  return grpc_option(std::move(fn));
}

Server::Builder& Server::Builder::transport(Transport transport) {
  transport_ = transport;
  return *this;
}

Server::Builder& Server::Builder::max_receive_message_size(int bytes) {
  max_receive_message_size_ = bytes;
  return grpc_option([bytes](grpc::ServerBuilder& b) { b.SetMaxReceiveMessageSize(bytes); });
}

Server::Builder& Server::Builder::max_send_message_size(int bytes) {
  max_send_message_size_ = bytes;
  return grpc_option([bytes](grpc::ServerBuilder& b) { b.SetMaxSendMessageSize(bytes); });
}

Server::Builder& Server::Builder::default_compression(Compression compression) {
  default_compression_ = compression;
  return grpc_option([compression](grpc::ServerBuilder& b) {
    b.SetDefaultCompressionAlgorithm(detail::to_grpc(compression));
  });
}

Server::Builder& Server::Builder::keepalive(Keepalive keepalive) {
  keepalive_ = keepalive;
  return grpc_option([keepalive](grpc::ServerBuilder& b) {
    b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, detail::to_grpc_ms(keepalive.time));
    b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, detail::to_grpc_ms(keepalive.timeout));
    b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                         keepalive.permit_without_calls ? 1 : 0);
    // As on a channel (channel_builder.cpp): keep pinging an idle connection.
    if (keepalive.permit_without_calls) {
      b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
  });
}

Server::Builder& Server::Builder::min_ping_interval(std::chrono::milliseconds interval) {
  min_ping_interval_ = interval;
  return grpc_option([interval](grpc::ServerBuilder& b) {
    b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                         detail::to_grpc_ms(interval));
  });
}

Server::Builder& Server::Builder::max_connection_idle(std::chrono::milliseconds idle) {
  max_connection_idle_ = idle;
  return grpc_option([idle](grpc::ServerBuilder& b) {
    b.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, detail::to_grpc_ms(idle));
  });
}

Server::Builder& Server::Builder::max_connection_age(std::chrono::milliseconds age,
                                                     std::chrono::milliseconds grace) {
  max_connection_age_ = age;
  max_connection_age_grace_ = grace;
  return grpc_option([age, grace](grpc::ServerBuilder& b) {
    b.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, detail::to_grpc_ms(age));
    b.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, detail::to_grpc_ms(grace));
  });
}

Server::Builder& Server::Builder::max_concurrent_streams(int streams) {
  max_concurrent_streams_ = streams;
  return grpc_option([streams](grpc::ServerBuilder& b) {
    b.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, streams);
  });
}

Server::Builder& Server::Builder::min_open_files(std::size_t n) {
  min_open_files_ = n;
  return *this;
}

namespace {

// The error of a server that needs `needed` descriptors where the process may open fewer.
Status check_open_file_limit(std::size_t needed) {
  rlimit lim{};
  if (needed == 0 || getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY ||
      lim.rlim_cur >= needed) {
    return Status();
  }
  auto name = [](rlim_t v) {
    return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v);
  };
  return Status::resource_exhausted(absl::StrCat(
      "the server needs ", needed, " open files (min_open_files) but the process may open ",
      name(lim.rlim_cur), " (RLIMIT_NOFILE: soft limit ", name(lim.rlim_cur), ", hard limit ",
      name(lim.rlim_max),
      "); raise the hard limit (ulimit -Hn, LimitNOFILE= in a systemd unit, docker run "
      "--ulimit nofile=N:N)"));
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Builder::build() {
  if (addresses_.empty()) return Status::invalid_argument("no listening address was added");
  if (Status limit = check_open_file_limit(min_open_files_); !limit.ok()) return limit;
  std::set<std::string> names;
  for (Service* s : services_) {
    if (!names.insert(s->name()).second) {
      return Status::already_exists(absl::StrCat("service ", s->name(), " was added twice"));
    }
  }
  const bool native = transport_ == Transport::native;
  if (native) {
    if (Status supported = check_native(); !supported.ok()) return supported;
  }
  // Each address's credentials; a TLS port reads and checks its PEM files here, before
  // anything is claimed (the native transport reads them in NativeServer::bind).
  std::vector<std::shared_ptr<grpc::ServerCredentials>> credentials(addresses_.size());
  for (const auto& [index, options] : tls_ports_) {
    if (native) break;
    auto made = detail::make_server_credentials(options);
    if (!made.ok()) {
      return Status(made.status().code(),
                    absl::StrCat("TLS port ", addresses_[index], ": ", made.status().message()));
    }
    credentials[index] = std::move(made).value();
  }

  auto claim_services = [this]() -> Status {
    for (std::size_t i = 0; i < services_.size(); ++i) {
      if (services_[i]->served_.exchange(true)) {
        for (std::size_t j = 0; j < i; ++j) services_[j]->served_ = false;
        return Status::failed_precondition(absl::StrCat(
            "service ", services_[i]->name(),
            " was already served by another server: a Service object serves one server"));
      }
    }
    return Status();
  };
  // grpc++ binds a service to the server it is registered with, even one that fails to start:
  // the grpc transport claims the services first. The native transport claims them once its
  // ports are bound, so that a server that could not listen leaves its services free.
  if (!native) {
    if (Status claimed = claim_services(); !claimed.ok()) return claimed;
  }

  auto state = std::make_unique<State>(runtime_);
  if (native) {
#if TRELLIS_NATIVE_TRANSPORT
    detail::NativeServerOptions options;
    options.max_receive_message_size = max_receive_message_size_;
    options.max_send_message_size = max_send_message_size_;
    options.default_compression = default_compression_;
    options.keepalive = keepalive_;
    options.min_ping_interval = min_ping_interval_;
    options.max_concurrent_streams = max_concurrent_streams_;
    options.max_connection_idle = max_connection_idle_;
    options.max_connection_age = max_connection_age_;
    options.max_connection_age_grace = max_connection_age_grace_;
    std::vector<detail::NativePort> ports(addresses_.size());
    for (std::size_t i = 0; i < addresses_.size(); ++i) ports[i].address = addresses_[i];
    for (const auto& [index, tls] : tls_ports_) ports[index].tls = &tls;
    auto bound = detail::NativeServer::bind(*runtime_, ports, options);
    if (!bound.ok()) return bound.status();
    if (Status claimed = claim_services(); !claimed.ok()) return claimed;
    state->native = std::move(bound).value();
    state->ports = state->native->ports();
#endif
  } else if (Status started = start_grpc(*state, credentials); !started.ok()) {
    return started;
  }

  // Each method's stack: the server's layers outside the service's, the handler innermost.
  // Without layers there is no stack at all, and calls go straight to the handler.
  auto stack_for = [&](std::size_t service, detail::Method& method) -> const BoxService* {
    if (layers_.empty() && !service_layers_[service]) return nullptr;
    return &state->stacks.emplace_back(
        layers_.wrap(service_layers_[service].wrap(detail::HandlerService{&method})));
  };
  std::vector<RequestedMethod> methods;
  for (std::size_t i = 0; i < services_.size(); ++i) {
    Service* s = services_[i];
    for (auto& m : s->unary_methods_) {
      methods.push_back({m.get(), nullptr, stack_for(i, *m)});
    }
    for (auto& m : s->stream_methods_) {
      methods.push_back({nullptr, m.get(), stack_for(i, *m)});
    }
  }

  // The start hooks run before any call is requested: the posts below order them before every
  // handler.
  state->services = services_;
  std::vector<std::string> service_names;
  for (Service* s : services_) service_names.push_back(s->name());
  for (Service* s : services_) s->on_server_start(service_names);

#if TRELLIS_NATIVE_TRANSPORT
  if (native) {
    std::unordered_map<std::string, detail::NativeMethod> by_path;
    for (const RequestedMethod& m : methods) {
      const detail::Method* method = m.unary != nullptr ? static_cast<detail::Method*>(m.unary)
                                                        : static_cast<detail::Method*>(m.stream);
      by_path[method->path()] = detail::NativeMethod{m.unary, m.stream, m.stack};
    }
    state->native->serve(std::move(by_path));
    return std::unique_ptr<Server>(new Server(std::move(state)));
  }
#endif
  // Keep calls requested on every worker, so each worker accepts calls on its own queue.
  for (auto& worker : detail::RuntimeAccess::core(*runtime_).workers) {
    worker->post(new ArmWorker(state.get(), worker.get(), methods, requests_per_worker_));
  }
  return std::unique_ptr<Server>(new Server(std::move(state)));
}

Status Server::Builder::check_native() const {
#if TRELLIS_NATIVE_TRANSPORT
  if (!configured_) return Status();
  return Status::unimplemented(
      "the native transport does not support configure (it adjusts a grpc::ServerBuilder, which "
      "the native server does not have); use Transport::grpc for it");
#else
  return Status::unimplemented(
      "this Trellis was built without libnghttp2, so without the native transport");
#endif
}

Status Server::Builder::start_grpc(
    State& state, const std::vector<std::shared_ptr<grpc::ServerCredentials>>& credentials) {
  state.ports.assign(addresses_.size(), 0);
  grpc::ServerBuilder builder;
  for (std::size_t i = 0; i < addresses_.size(); ++i) {
    builder.AddListeningPort(addresses_[i],
                             credentials[i] ? credentials[i] : grpc::InsecureServerCredentials(),
                             &state.ports[i]);
  }
  for (Service* s : services_) builder.RegisterService(&s->grpc_service_);
  builder.RegisterAsyncGenericService(&state.generic);
  state.idle_cq = builder.AddCompletionQueue(true);
  // gRPC enables SO_REUSEPORT by default, which lets a second server bind a port that is in use
  // and silently share its traffic. Trellis fails instead; configure() can turn it back on.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (auto& fn : configure_) fn(builder);

  {
    detail::RuntimeQueuesForNextServer queues(*runtime_);
    state.server = builder.BuildAndStart();
  }
  bool bound = state.server != nullptr;
  for (std::size_t i = 0; bound && i < addresses_.size(); ++i) {
    bound = state.ports[i] != 0;
  }
  if (!bound) {
    if (state.server) state.server->Shutdown();
    state.idle_cq->Shutdown();
    return Status::unavailable(absl::StrCat("could not start a server listening on ",
                                            absl::StrJoin(addresses_, ", "),
                                            " (address in use, or not a valid address?)"));
  }

  return Status();
}

Result<Transport> parse_transport(std::string_view name) {
  if (name == "grpc") return Transport::grpc;
  if (name == "native") return Transport::native;
  return Status::invalid_argument(absl::StrCat("unknown transport \"",
                                               absl::string_view(name.data(), name.size()),
                                               "\": grpc (the default) or native"));
}

// ---------------------------------------------------------------------------------- Server

Server::Server(std::unique_ptr<State> state) : state_(std::move(state)) {}

Server::~Server() {
  try {
    shutdown();
  } catch (const std::exception& e) {
    detail::log(detail::LogLevel::kError, absl::StrCat("trellis::Server destroyed: ", e.what()));
    std::abort();
  }
}

const std::vector<int>& Server::ports() const { return state_->ports; }
int Server::port() const { return state_->ports.front(); }

void Server::shutdown(std::chrono::milliseconds grace) {
  if (detail::current_worker() != nullptr) {
    throw std::logic_error(
        "trellis::Server::shutdown blocks and must not run on a runtime worker thread");
  }
  std::lock_guard once(state_->shutdown_mu);
  if (state_->shut_down) return;
  state_->shut_down = true;
  // Services that follow the server's life (health turns NOT_SERVING) first, then the drain.
  for (Service* s : state_->services) s->on_server_shutdown();
#if TRELLIS_NATIVE_TRANSPORT
  if (state_->native) {
    state_->native->shutdown(grace);
    return;
  }
#endif
  state_->server->Shutdown(std::chrono::system_clock::now() + grace);
  // Core is done with the calls; wait until our side of each has run its last completion.
  state_->live.wait([this] { return state_->call_objects.load() == 0; });
  state_->idle_cq->Shutdown();
  void* tag;
  bool ok;
  while (state_->idle_cq->Next(&tag, &ok)) {
  }
}

}  // namespace trellis
