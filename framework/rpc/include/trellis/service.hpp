// trellis::Service: the base of generated service classes; maps methods to handlers.
#pragma once

#include <grpcpp/impl/service_type.h>
#include <grpcpp/support/byte_buffer.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trellis/call.hpp"
#include "trellis/detail/serialization.hpp"
#include "trellis/layer.hpp"
#include "trellis/method_info.hpp"
#include "trellis/result.hpp"
#include "trellis/server_context.hpp"
#include "trellis/server_stream.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis {

class Server;

namespace detail {

class GrpcService;

// A method of a service as the server sees it: its path, kind and idempotency level, and its
// index among the grpc::Service's methods.
class Method {
 public:
  Method(std::string path, RpcKind kind, Idempotency idempotency)
      : path_(std::move(path)), info_{path_, kind, idempotency} {}
  Method(const Method&) = delete;
  Method& operator=(const Method&) = delete;
  virtual ~Method() = default;
  const std::string& path() const { return path_; }
  const MethodInfo& info() const { return info_; }
  // The grpc::Service the method is registered with, and its index among that service's methods.
  GrpcService* grpc_service() const { return grpc_service_; }
  int index() const { return index_; }
  void set_registration(GrpcService* service, int index) {
    grpc_service_ = service;
    index_ = index;
  }

  // The innermost service of a server's middleware stack: runs the handler on the call's
  // messages (call.request(), call.response(), CallAccess::stream(call)).
  virtual Task<Status> handle(Call& call) = 0;

 private:
  std::string path_;
  MethodInfo info_;  // views path_, which never moves: Method is neither copied nor moved
  GrpcService* grpc_service_ = nullptr;
  int index_ = -1;
};

// The handler of `method` as a CallService, for the bottom of a middleware stack.
struct HandlerService {
  Method* method;
  Task<Status> operator()(Call& call) const { return method->handle(call); }
};

// Runs a streaming call through `stack` when the server has middleware for the method, else
// straight to the handler.
//
// The server-streaming and bidi methods skip this without middleware and call the handler from
// one coroutine frame of their own, with no Call (with TRELLIS_ASIO_INTERNALS, the thread's bottom
// frame: StreamMethod::run): a stream held open for long (thousands of idle watchers) then costs
// two frames less (docs/performance.md, "Idle streams").
inline Task<Status> run_stack(const BoxService* stack, Method& method, Call& call) {
  return stack != nullptr ? (*stack)(call) : method.handle(call);
}

// A unary method seen untyped: request bytes in, response bytes out. The typed half (parse,
// call the handler, serialize) is the only per-method template code.
class UnaryMethod : public Method {
 public:
  UnaryMethod(std::string path, Idempotency idempotency)
      : Method(std::move(path), RpcKind::kUnary, idempotency) {}
  // Sets *status to the call's outcome (OK: *response holds the reply). The status is an out
  // parameter, not the task's value, so that it is not moved through every layer of the
  // coroutine machinery on each call (a Status is two strings). `stack`: the server's middleware
  // for this method, or nullptr.
  virtual Task<void> invoke(ServerContext& ctx, grpc::ByteBuffer* request,
                            grpc::ByteBuffer* response, Status* status,
                            const BoxService* stack) = 0;
};

// A streaming method (any of the three kinds) seen untyped: the framework hands it the call's
// stream and finishes the call with the returned status.
class StreamMethod : public Method {
 public:
  using Method::Method;
  virtual Task<Status> invoke(ServerContext& ctx, StreamCore& stream, const BoxService* stack) = 0;

#if TRELLIS_ASIO_INTERNALS
  // The bottom frame of the call's awaitable thread (asio_internals::Launch): runs invoke() and
  // tells `stream` how the handler ended. The server-streaming and bidi methods without
  // middleware run the handler in this very frame instead: a held stream costs one frame less
  // (docs/performance.md, "Idle streams").
  virtual asio_internals::EntryPoint run(ServerContext& ctx, ServerStreamCore& stream,
                                         const BoxService* stack) {
    // handler_returned is noexcept: called from the try block, it cannot run twice. No local
    // lives across the co_await (each would be in the frame of every held stream).
    try {
      stream.handler_returned(nullptr, co_await invoke(ctx, stream, stack));
    } catch (...) {
      stream.handler_returned(std::current_exception(), Status());
    }
  }
#endif
};

template <class Svc, class Req, class Resp>
class TypedUnaryMethod final : public UnaryMethod {
 public:
  using Handler = Task<Result<Resp>> (Svc::*)(ServerContext&, const Req&);
  TypedUnaryMethod(std::string path, Idempotency idempotency, Svc* service, Handler handler)
      : UnaryMethod(std::move(path), idempotency), service_(service), handler_(handler) {}

  Task<void> invoke(ServerContext& ctx, grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                    Status* status, const BoxService* stack) override {
    Req req;
    if (*status = parse(request, &req, "request"); !status->ok()) co_return;
    if (stack != nullptr) {
      // In this frame rather than one of its own: a frame costs more than the space.
      Resp resp;
      Call call(info(), ctx, &req, &resp);
      *status = co_await (*stack)(call);
      if (status->ok()) *status = serialize(resp, response);
      co_return;
    }
    Result<Resp> result = co_await (service_->*handler_)(ctx, req);
    if (!result.ok()) {
      *status = result.status();
      co_return;
    }
    *status = serialize(*result, response);
  }

  Task<Status> handle(Call& call) override {
    Result<Resp> result = co_await (service_->*handler_)(*call.server_context(),
                                                         static_cast<const Req&>(*call.request()));
    if (!result.ok()) co_return result.status();
    static_cast<Resp&>(*call.response()) = std::move(*result);
    co_return Status();
  }

 private:
  Svc* service_;
  Handler handler_;
};

template <class Svc, class Req, class Resp>
class TypedServerStreamingMethod final : public StreamMethod {
 public:
  using Handler = Task<Status> (Svc::*)(ServerContext&, const Req&, ServerWriter<Resp>&);
  TypedServerStreamingMethod(std::string path, Idempotency idempotency, Svc* service,
                             Handler handler)
      : StreamMethod(std::move(path), RpcKind::kServerStreaming, idempotency),
        service_(service),
        handler_(handler) {}

  // Without middleware the handler is called from one frame, with no Call (see run_stack).
  Task<Status> invoke(ServerContext& ctx, StreamCore& stream, const BoxService* stack) override {
    return stack == nullptr ? serve(ctx, stream) : serve_layered(ctx, stream, *stack);
  }

#if TRELLIS_ASIO_INTERNALS
  asio_internals::EntryPoint run(ServerContext& ctx, ServerStreamCore& stream,
                                 const BoxService* stack) override {
    return stack == nullptr ? serve_from_bottom(ctx, stream)
                            : StreamMethod::run(ctx, stream, stack);
  }
#endif

  Task<Status> handle(Call& call) override {
    ServerWriter<Resp> writer(stream_core(CallAccess::stream(call)));
    co_return co_await (service_->*handler_)(*call.server_context(),
                                             static_cast<const Req&>(*call.request()), writer);
  }

 private:
#if TRELLIS_ASIO_INTERNALS
  // serve() as the thread's bottom frame.
  asio_internals::EntryPoint serve_from_bottom(ServerContext& ctx, ServerStreamCore& stream) {
    try {
      std::optional<Req> request = co_await async_read<Req>(&stream, use_task);
      if (!request) {
        stream.handler_returned(nullptr, no_request());
        co_return;
      }
      ServerWriter<Resp> writer(&stream);
      stream.handler_returned(nullptr, co_await (service_->*handler_)(ctx, *request, writer));
    } catch (...) {
      stream.handler_returned(std::current_exception(), Status());
    }
  }
#endif

  static Status no_request() { return Status::internal("the client sent no request message"); }

  Task<Status> serve(ServerContext& ctx, StreamCore& stream) {
    std::optional<Req> request = co_await async_read<Req>(&stream, use_task);
    if (!request) co_return no_request();
    ServerWriter<Resp> writer(&stream);
    co_return co_await (service_->*handler_)(ctx, *request, writer);
  }

  Task<Status> serve_layered(ServerContext& ctx, StreamCore& stream, const BoxService& stack) {
    std::optional<Req> request = co_await async_read<Req>(&stream, use_task);
    if (!request) co_return no_request();
    Call call(info(), ctx, &*request, nullptr);
    CallAccess::set_stream(call, &stream);
    co_return co_await stack(call);
  }

  Svc* service_;
  Handler handler_;
};

template <class Svc, class Req, class Resp>
class TypedClientStreamingMethod final : public StreamMethod {
 public:
  using Handler = Task<Result<Resp>> (Svc::*)(ServerContext&, ServerReader<Req>&);
  TypedClientStreamingMethod(std::string path, Idempotency idempotency, Svc* service,
                             Handler handler)
      : StreamMethod(std::move(path), RpcKind::kClientStreaming, idempotency),
        service_(service),
        handler_(handler) {}

  Task<Status> invoke(ServerContext& ctx, StreamCore& stream, const BoxService* stack) override {
    Resp response;
    Call call(info(), ctx, nullptr, &response);
    CallAccess::set_stream(call, &stream);
    if (Status status = co_await run_stack(stack, *this, call); !status.ok()) co_return status;
    ServerWriter<Resp> writer(&stream);
    if (!co_await writer.write(response)) co_return Status::cancelled("the call ended");
    co_return Status();
  }

  Task<Status> handle(Call& call) override {
    ServerReader<Req> reader(stream_core(CallAccess::stream(call)));
    Result<Resp> result = co_await (service_->*handler_)(*call.server_context(), reader);
    if (!result.ok()) co_return result.status();
    static_cast<Resp&>(*call.response()) = std::move(*result);
    co_return Status();
  }

 private:
  Svc* service_;
  Handler handler_;
};

template <class Svc, class Req, class Resp>
class TypedBidiStreamingMethod final : public StreamMethod {
 public:
  using Handler = Task<Status> (Svc::*)(ServerContext&, ServerReader<Req>&, ServerWriter<Resp>&);
  TypedBidiStreamingMethod(std::string path, Idempotency idempotency, Svc* service, Handler handler)
      : StreamMethod(std::move(path), RpcKind::kBidiStreaming, idempotency),
        service_(service),
        handler_(handler) {}

  // Without middleware the handler is called from one frame, with no Call (see run_stack).
  Task<Status> invoke(ServerContext& ctx, StreamCore& stream, const BoxService* stack) override {
    return stack == nullptr ? serve(ctx, stream) : serve_layered(ctx, stream, *stack);
  }

#if TRELLIS_ASIO_INTERNALS
  asio_internals::EntryPoint run(ServerContext& ctx, ServerStreamCore& stream,
                                 const BoxService* stack) override {
    return stack == nullptr ? serve_from_bottom(ctx, stream)
                            : StreamMethod::run(ctx, stream, stack);
  }
#endif

  Task<Status> handle(Call& call) override {
    ServerReader<Req> reader(stream_core(CallAccess::stream(call)));
    ServerWriter<Resp> writer(stream_core(CallAccess::stream(call)));
    co_return co_await (service_->*handler_)(*call.server_context(), reader, writer);
  }

 private:
  Task<Status> serve(ServerContext& ctx, StreamCore& stream) {
    ServerReader<Req> reader(&stream);
    ServerWriter<Resp> writer(&stream);
    co_return co_await (service_->*handler_)(ctx, reader, writer);
  }

#if TRELLIS_ASIO_INTERNALS
  // serve() as the thread's bottom frame.
  asio_internals::EntryPoint serve_from_bottom(ServerContext& ctx, ServerStreamCore& stream) {
    try {
      ServerReader<Req> reader(&stream);
      ServerWriter<Resp> writer(&stream);
      stream.handler_returned(nullptr, co_await (service_->*handler_)(ctx, reader, writer));
    } catch (...) {
      stream.handler_returned(std::current_exception(), Status());
    }
  }
#endif

  Task<Status> serve_layered(ServerContext& ctx, StreamCore& stream, const BoxService& stack) {
    Call call(info(), ctx, nullptr, nullptr);
    CallAccess::set_stream(call, &stream);
    co_return co_await stack(call);
  }

  Svc* service_;
  Handler handler_;
};

// Exposes the protected registration API of grpc::Service to Trellis.
class GrpcService final : public grpc::Service {
 public:
  // Registers a method taking raw bytes; returns its index. Every streaming kind is registered
  // as bidi: the wire format is the same, and Trellis reads a server-streaming request itself.
  int add_raw(const std::string& path, bool streaming);
  using grpc::Service::RequestAsyncBidiStreaming;
  using grpc::Service::RequestAsyncUnary;

 private:
  int method_count_ = 0;
};

}  // namespace detail

// Generated service classes derive from this and register each method in their constructor.
// A Service must outlive every Server it is added to.
class Service {
 public:
  virtual ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // The full service name, "package.Service".
  const std::string& name() const { return name_; }

 protected:
  explicit Service(std::string full_name);

  // Lifecycle hooks: every Server this service is added to calls them, with no lock of its own
  // held. Overrides must be quick and must not call back into the server; the defaults do
  // nothing. Services that follow the server's life use them (trellis/health.hpp,
  // trellis/reflection.hpp).
  //
  // on_server_start: from Server::Builder::build, on the thread that calls it, once the server
  // listens and before any handler of it can run (a handler's calls to this service therefore
  // see what the hook did). `services`: the full names of every service the server serves, this
  // one included, in the order they were added.
  virtual void on_server_start(const std::vector<std::string>& services);
  // on_server_shutdown: from the first Server::shutdown (or the server's destructor), on the
  // thread that calls it (never a runtime worker), before the server stops accepting calls and
  // drains them: the grace period has not started yet, and in-flight calls are still running.
  // A service whose calls would otherwise run until the grace expires (a long-lived watch) ends
  // them here, or makes them end soon, so that they do not hold the drain.
  virtual void on_server_shutdown();

  // Registers `handler` for the unary method `path` ("/package.Service/Method").
  // `idempotency`: the method's idempotency_level option, for middleware.
  template <class Svc, class Req, class Resp>
  void add_unary_method(const char* path,
                        Task<Result<Resp>> (Svc::*handler)(ServerContext&, const Req&),
                        Idempotency idempotency = Idempotency::kUnknown) {
    add(std::make_unique<detail::TypedUnaryMethod<Svc, Req, Resp>>(
        path, idempotency, static_cast<Svc*>(this), handler));
  }
  // Registers a server-streaming handler: one request in, responses written to the writer.
  template <class Svc, class Req, class Resp>
  void add_server_streaming_method(const char* path,
                                   Task<Status> (Svc::*handler)(ServerContext&, const Req&,
                                                                ServerWriter<Resp>&),
                                   Idempotency idempotency = Idempotency::kUnknown) {
    add(std::make_unique<detail::TypedServerStreamingMethod<Svc, Req, Resp>>(
        path, idempotency, static_cast<Svc*>(this), handler));
  }
  // Registers a client-streaming handler: requests read from the reader, one response.
  template <class Svc, class Req, class Resp>
  void add_client_streaming_method(const char* path,
                                   Task<Result<Resp>> (Svc::*handler)(ServerContext&,
                                                                      ServerReader<Req>&),
                                   Idempotency idempotency = Idempotency::kUnknown) {
    add(std::make_unique<detail::TypedClientStreamingMethod<Svc, Req, Resp>>(
        path, idempotency, static_cast<Svc*>(this), handler));
  }
  // Registers a bidi-streaming handler.
  template <class Svc, class Req, class Resp>
  void add_bidi_streaming_method(const char* path,
                                 Task<Status> (Svc::*handler)(ServerContext&, ServerReader<Req>&,
                                                              ServerWriter<Resp>&),
                                 Idempotency idempotency = Idempotency::kUnknown) {
    add(std::make_unique<detail::TypedBidiStreamingMethod<Svc, Req, Resp>>(
        path, idempotency, static_cast<Svc*>(this), handler));
  }

 private:
  friend class Server;
  void add(std::unique_ptr<detail::UnaryMethod> method);
  void add(std::unique_ptr<detail::StreamMethod> method);

  std::string name_;
  std::vector<std::unique_ptr<detail::UnaryMethod>> unary_methods_;
  std::vector<std::unique_ptr<detail::StreamMethod>> stream_methods_;
  detail::GrpcService grpc_service_;
  // Set when a server is built with this service: grpc++ binds a service to one server for good.
  std::atomic<bool> served_{false};
};

}  // namespace trellis
