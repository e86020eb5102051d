// trellis::UnaryClientMethod: a typed unary method on a channel, what generated clients hold.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/byte_buffer.h>

#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <utility>

#include "trellis/call.hpp"
#include "trellis/call_options.hpp"
#include "trellis/channel.hpp"
#include "trellis/detail/async_task.hpp"
#include "trellis/detail/completion_handler.hpp"
#include "trellis/detail/serialization.hpp"
#include "trellis/executor.hpp"
#include "trellis/layer.hpp"
#include "trellis/method_info.hpp"
#include "trellis/result.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis {

namespace detail {

// One outgoing unary call on bytes. The gRPC half is compiled once in the library; the
// completion-handler half is the template below.
class UnaryClientCall {
 public:
  virtual ~UnaryClientCall();
  // Starts the call on worker `w`; must run on w's thread.
  void start(Worker* w, const std::shared_ptr<grpc::Channel>& channel,
             const grpc::internal::RpcMethod& method, Bytes request, CallOptions options);
  // Asks gRPC to cancel; the call then completes CANCELLED (unless already done).
  void try_cancel();

 protected:
  UnaryClientCall();
  // Called once, on the worker thread, with the outcome; must free the object.
  virtual void finish(Status status, Bytes response) = 0;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  friend class Impl;
};

template <class Handler>
class UnaryClientCallOp final : public UnaryClientCall {
 public:
  UnaryClientCallOp(Handler h, Worker* w) : handler(std::move(h)), worker_(w) {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<Cancel>(this);
  }

  Handler handler;
  std::atomic<bool> completed{false};  // for complete_op

 private:
  // Runs where the handler's cancellation is signalled; TryCancel may be called from any thread.
  struct Cancel {
    explicit Cancel(UnaryClientCallOp* op) : op(op) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none &&
          !op->completed.load(std::memory_order_acquire)) {
        op->try_cancel();
      }
    }
    UnaryClientCallOp* op;
  };

  void finish(Status status, Bytes response) override {
    complete_op(this, worker_, std::move(status), std::move(response));
  }

  Worker* worker_;
};

// Starts a unary call of `method` with serialized `request`; completes with
// void(Status, Bytes response).
template <class Token>
auto async_unary_call(std::shared_ptr<grpc::Channel> channel,
                      const grpc::internal::RpcMethod& method, Bytes request, CallOptions options,
                      Token&& token) {
  return boost::asio::async_initiate<Token, void(Status, Bytes)>(
      [](auto handler, std::shared_ptr<grpc::Channel> channel,
         const grpc::internal::RpcMethod* method, Bytes request, CallOptions options) {
        Worker* w = worker_for(boost::asio::get_associated_executor(handler));
        if (w == nullptr) {
          auto ex = boost::asio::get_associated_executor(handler);
          boost::asio::post(ex, [h = std::move(handler)]() mutable {
            std::move(h)(Status::failed_precondition(
                             "Trellis calls must be awaited on a Trellis runtime (spawn them, "
                             "or use Runtime::block_on)"),
                         Bytes());
          });
          return;
        }
        auto* op = new UnaryClientCallOp<decltype(handler)>(std::move(handler), w);
        if (running_in(w)) {
          op->start(w, channel, *method, std::move(request), std::move(options));
        } else {
          post(w, make_runnable([op, w, channel, method, request = std::move(request),
                                 options = std::move(options)]() mutable {
                 op->start(w, channel, *method, std::move(request), std::move(options));
               }));
        }
      },
      token, std::move(channel), &method, std::move(request), std::move(options));
}

// What the innermost client service needs to make a call: the channel and the method.
struct ClientBinding {
  std::shared_ptr<grpc::Channel> channel;
  grpc::internal::RpcMethod method;
};

// The innermost service of every client stack: makes the call on the channel (Call::binding()),
// with the call's options, and fills in the response, the response metadata and the commit flag.
struct ChannelService {
  Task<Status> operator()(Call& call) const;
};

}  // namespace detail

// A unary method of a service, bound to a channel. Generated clients hold one per method.
// Calling it serializes the request at once (the request need not outlive the call) and returns
// a task that performs the call when awaited. The task must be awaited on a Trellis runtime.
template <class Req, class Resp>
class UnaryClientMethod {
 public:
  // `path` is "/package.Service/Method"; it must outlive this object and every call made with it
  // (generated code passes a string literal).
  UnaryClientMethod(const Channel& channel, const char* path,
                    Idempotency idempotency = Idempotency::kUnknown)
      : channel_(channel.grpc_channel()),
        method_(path, grpc::internal::RpcMethod::NORMAL_RPC, channel_),
        info_{path, RpcKind::kUnary, idempotency},
        stack_(channel.stack()) {}

  Task<Result<Resp>> operator()(const Req& request, CallOptions options = {}) const {
    if (stack_) return call_stack(stack_, {channel_, method_}, info_, request, std::move(options));
    detail::Bytes bytes;
    Status status = detail::serialize(request, bytes.get());
    return call(channel_, method_, std::move(status), std::move(bytes), std::move(options));
  }
  // The same call for any Asio completion token (use_future, deferred, a callback): completes
  // with void(Result<Resp>) like a stream read, on the token's executor. The call runs on the
  // Trellis worker of that executor (else the calling worker); an exception from a client layer
  // completes it with INTERNAL, where the Task rethrows it. Off any runtime the call fails with
  // FAILED_PRECONDITION, as awaiting its Task there does.
  template <class Token>
  auto operator()(const Req& request, CallOptions options, Token&& token) const {
    return detail::async_task((*this)(request, std::move(options)), std::forward<Token>(token));
  }

  const MethodInfo& info() const { return info_; }

 private:
  // The request is copied into the task: layers see it, and a retry sends it again.
  static Task<Result<Resp>> call_stack(std::shared_ptr<const BoxService> stack,
                                       detail::ClientBinding binding, MethodInfo info, Req request,
                                       CallOptions options) {
    Resp response;
    ResponseMetadata* capture = options.response_metadata();
    Call call(info, options, &request, &response);
    detail::CallAccess::set_binding(call, &binding);
    Status status = co_await (*stack)(call);
    if (capture != nullptr) *capture = std::move(call.response_metadata());
    if (!status.ok()) co_return status;
    co_return response;
  }

  // Takes everything by value: the task may outlive this object's caller's temporaries.
  static Task<Result<Resp>> call(std::shared_ptr<grpc::Channel> channel,
                                 grpc::internal::RpcMethod method, Status serialized,
                                 detail::Bytes request, CallOptions options) {
    if (!serialized.ok()) co_return serialized;
    auto [status, bytes] = co_await detail::async_unary_call(
        std::move(channel), method, std::move(request), std::move(options), use_task);
    if (!status.ok()) co_return status;
    Resp response;
    if (Status s = detail::parse(bytes.get(), &response, "response"); !s.ok()) co_return s;
    co_return response;
  }

  std::shared_ptr<grpc::Channel> channel_;
  grpc::internal::RpcMethod method_;
  MethodInfo info_;
  std::shared_ptr<const BoxService> stack_;
};

}  // namespace trellis
