// trellis::Service: the base of generated service classes; maps methods to handlers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/impl/service_type.h>
#include <grpcpp/support/byte_buffer.h>

#include "trellis/detail/serialization.hpp"
#include "trellis/result.hpp"
#include "trellis/server_context.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis {

class Server;

namespace detail {

// A unary method seen untyped: request bytes in, response bytes out. The typed half (parse,
// call the handler, serialize) is the only per-method template code.
class UnaryMethod {
 public:
  explicit UnaryMethod(std::string path) : path_(std::move(path)) {}
  virtual ~UnaryMethod() = default;
  const std::string& path() const { return path_; }
  // Sets *status to the call's outcome (OK: *response holds the reply). The status is an out
  // parameter, not the task's value, so that it is not moved through every layer of the
  // coroutine machinery on each call (a Status is two strings).
  virtual Task<void> invoke(ServerContext& ctx, grpc::ByteBuffer* request,
                            grpc::ByteBuffer* response, Status* status) = 0;

 private:
  std::string path_;
};

template <class Svc, class Req, class Resp>
class TypedUnaryMethod final : public UnaryMethod {
 public:
  using Handler = Task<Result<Resp>> (Svc::*)(ServerContext&, const Req&);
  TypedUnaryMethod(std::string path, Svc* service, Handler handler)
      : UnaryMethod(std::move(path)), service_(service), handler_(handler) {}

  Task<void> invoke(ServerContext& ctx, grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                    Status* status) override {
    Req req;
    if (*status = parse(request, &req, "request"); !status->ok()) co_return;
    Result<Resp> result = co_await (service_->*handler_)(ctx, req);
    if (!result.ok()) {
      *status = result.status();
      co_return;
    }
    *status = serialize(*result, response);
  }

 private:
  Svc* service_;
  Handler handler_;
};

// Exposes the protected registration API of grpc::Service to Trellis.
class GrpcService final : public grpc::Service {
 public:
  int add_raw_unary(const std::string& path);
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

  // Registers `handler` for the unary method `path` ("/package.Service/Method").
  template <class Svc, class Req, class Resp>
  void add_unary_method(const char* path, Task<Result<Resp>> (Svc::*handler)(ServerContext&,
                                                                             const Req&)) {
    add(std::make_unique<detail::TypedUnaryMethod<Svc, Req, Resp>>(
        path, static_cast<Svc*>(this), handler));
  }

 private:
  friend class Server;
  void add(std::unique_ptr<detail::UnaryMethod> method);

  std::string name_;
  std::vector<std::unique_ptr<detail::UnaryMethod>> unary_methods_;
  detail::GrpcService grpc_service_;
};

}  // namespace trellis
