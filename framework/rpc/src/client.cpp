#include "trellis/client.hpp"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/async_unary_call.h>

#include "absl/strings/str_cat.h"
#include "grpc_convert.hpp"
#include "log.hpp"
#include "outgoing_bytes.hpp"
#include "trellis/client_stream.hpp"
#include "worker.hpp"

namespace trellis::detail {

class UnaryClientCall::Impl final : public Completion, public CancellableOp {
 public:
  explicit Impl(UnaryClientCall* owner) : owner_(owner) {}

  void start(Worker* w, const std::shared_ptr<grpc::Channel>& channel,
             const grpc::internal::RpcMethod& method, Bytes request, CallOptions options) {
    worker_ = w;
    if (!w->accepting_ops()) {
      // The queue is about to shut down; starting an operation on it now is not allowed.
      w->post(make_runnable([owner = owner_] {
        owner->finish(Status::cancelled("the Trellis runtime is shutting down"), {});
      }));
      return;
    }
    configure(ctx_, options);
    capture_ = options.response_metadata();
    // Create serializes (takes) the request at once.
    reader_ =
        grpc::internal::ClientAsyncResponseReaderHelper::Create<grpc::ByteBuffer, OutgoingBytes>(
            channel.get(), w->cq(), method, &ctx_, OutgoingBytes(std::move(request)));
    reader_->StartCall();
    reader_->Finish(response_.get(), &status_, static_cast<Completion*>(this));
    w->track(this);
    Worker::count_call(w->live_client_calls, 1);
  }

  void try_cancel() { ctx_.TryCancel(); }

 private:
  void cancel() override { ctx_.TryCancel(); }

  void complete(bool) override {
    // Finish always completes with ok=true; the outcome is in status_.
    worker_->untrack(this);
    Worker::count_call(worker_->live_client_calls, -1);
    if (capture_ != nullptr) {
      capture_->initial = from_grpc(ctx_.GetServerInitialMetadata());
      capture_->trailing = from_grpc(ctx_.GetServerTrailingMetadata());
      capture_->peer = ctx_.peer();
    }
    // finish() frees the owner, and with it this object: nothing may touch members after it.
    owner_->finish(from_grpc(status_), std::move(response_));
  }

  UnaryClientCall* owner_;
  Worker* worker_ = nullptr;
  grpc::ClientContext ctx_;
  Bytes response_;
  grpc::Status status_;
  grpc::ClientAsyncResponseReader<grpc::ByteBuffer>* reader_ = nullptr;  // arena-owned by the call
  ResponseMetadata* capture_ = nullptr;
};

UnaryClientCall::UnaryClientCall() : impl_(std::make_unique<Impl>(this)) {}
UnaryClientCall::~UnaryClientCall() = default;

void UnaryClientCall::start(Worker* w, const std::shared_ptr<grpc::Channel>& channel,
                            const grpc::internal::RpcMethod& method, Bytes request,
                            CallOptions options) {
  impl_->start(w, channel, method, std::move(request), std::move(options));
}

void UnaryClientCall::try_cancel() { impl_->try_cancel(); }

Task<Status> ChannelService::operator()(Call& call) const {
  const ClientBinding* binding = CallAccess::binding(call);
  if (binding == nullptr) co_return Status::internal("trellis: a client call without its channel");
  if (call.method().kind != RpcKind::kUnary) co_return co_await run_layered_stream_inner(call);
  Bytes request;
  if (Status s = serialize(*call.request(), request.get()); !s.ok()) co_return s;
  CallOptions options = *call.options();
  options.capture_response_metadata(&call.response_metadata());
  auto [status, response] = co_await async_unary_call(
      binding->channel, binding->method, std::move(request), std::move(options), use_task);
  if (!call.response_metadata().initial.empty()) call.set_committed();
  if (!status.ok()) co_return status;
  call.set_committed();
  co_return parse(response.get(), call.response(), "response");
}

Status client_layer_threw(const std::exception_ptr& error) {
  return Status::internal(absl::StrCat("a client layer threw: ", exception_text(error)));
}

}  // namespace trellis::detail
