// The client side of a streaming call whose channel has a middleware stack.
//
// The user's reader/writer talks to a LayeredClientStream. On its first operation the stream
// runs the channel's stack as a task on its worker; the stack's innermost service (ChannelService)
// creates the real gRPC stream with the options the layers shaped, hands it the operations
// queued so far, and from then on operations go straight to it. The stack's task waits in
// ChannelService until the user asks for the final status (finish(), or dropping the handle),
// collects it from the real stream, and the status the stack returns is what finish() gives.
// A layer that answers without calling its inner service (auth, limits) ends the call: queued
// and later operations fail, and finish() gives the layer's status.
#include <google/protobuf/message_lite.h>

#include <boost/asio/co_spawn.hpp>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client_stream_core.hpp"
#include "forward.hpp"
#include "log.hpp"
#include "trellis/client.hpp"
#include "trellis/client_stream.hpp"
#include "worker.hpp"

namespace trellis::detail {
namespace {

constexpr grpc::ByteBuffer* kNoBytes = nullptr;

class LayeredClientStream final : public ClientStreamCore {
  friend class CallbackScope<LayeredClientStream>;
  using Scope = CallbackScope<LayeredClientStream>;

 public:
  LayeredClientStream(std::shared_ptr<const BoxService> stack, ClientBinding binding,
                      const MethodInfo& info, CallOptions options,
                      std::unique_ptr<google::protobuf::MessageLite> request, Status status)
      : stack_(std::move(stack)),
        binding_(std::move(binding)),
        info_(info),
        options_(std::move(options)),
        request_(std::move(request)),
        call_(info_, options_, request_.get(), nullptr) {
    call_.set_binding(&binding_);
    call_.set_stream(this);
    if (!status.ok()) failure_ = std::move(status);
  }

  Worker* bind(Worker* w) override {
    Worker* expected = nullptr;
    if (worker_.compare_exchange_strong(expected, w, std::memory_order_acq_rel)) {
      // The first operation: run the stack. Its ops are started after this on w, so the stack's
      // task (posted first) reaches ChannelService, or ends, before or while they queue.
      post(w, make_runnable([this] { launch(); }));
      return w;
    }
    return expected;
  }

  void start(WriteOp* op) override {
    forward_or_queue([op](StreamCore* real) {
      if (real != nullptr) {
        real->start(op);
      } else {
        op->complete(false);
      }
    });
  }
  void read(ReadOp* op) override {
    forward_or_queue([op](StreamCore* real) {
      if (real != nullptr) {
        real->read(op);
      } else {
        op->complete(false, kNoBytes);
      }
    });
  }
  void write(Bytes message, bool last, WriteOp* op) override {
    auto bytes = std::make_shared<Bytes>(std::move(message));
    forward_or_queue([op, bytes, last](StreamCore* real) {
      if (real != nullptr) {
        real->write(std::move(*bytes), last, op);
      } else {
        op->complete(false);
      }
    });
  }
  void writes_done(WriteOp* op) override {
    forward_or_queue([op](StreamCore* real) {
      if (real != nullptr) {
        real->writes_done(op);
      } else {
        op->complete(false);
      }
    });
  }

  // The user wants the final status: it is the stack's, once the stack has returned.
  void finish(FinishOp* op) override {
    Scope scope(this);
    if (user_finish_ != nullptr) {
      complete_later(worker(), op,
                     Status::failed_precondition("finish() is already pending on this stream"));
      return;
    }
    if (stack_done_) {
      complete_later(worker(), op, final_status_);
      return;
    }
    user_finish_ = op;
    wake_terminal();
  }

  // Any thread.
  void cancel() override {
    Worker* w = worker_.load(std::memory_order_acquire);
    if (w == nullptr) {
      cancelled_early_.store(true, std::memory_order_release);
      return;
    }
    auto on_worker = [this] {
      Scope scope(this);
      cancel_on_worker();
    };
    if (running_in(w)) {
      on_worker();
    } else {
      post(w, make_runnable(on_worker));
    }
  }

  void fail(Status status) override {
    if (real_ != nullptr) {
      real_->fail(std::move(status));
      return;
    }
    if (!failure_) failure_ = std::move(status);
  }

  void release() noexcept override {
    Worker* w = worker_.load(std::memory_order_acquire);
    if (w == nullptr) {
      delete this;  // never used: the stack never ran
      return;
    }
    auto on_worker = [this] {
      Scope scope(this);
      released_ = true;
      if (!stack_done_ && !finish_asked_) cancel_on_worker();
      wake_terminal();
    };
    if (running_in(w)) {
      on_worker();
    } else {
      post(w, make_runnable(on_worker));
    }
  }

  // ChannelService, for a streaming call: the innermost service of the stack.
  Task<Status> run_inner(Call& call) {
    if (inner_ran_) co_return Status::failed_precondition("a stream cannot be sent twice");
    inner_ran_ = true;
    if (failure_) co_return *failure_;
    if (cancelled_) co_return Status::cancelled("the call was cancelled before it started");
    CallOptions options = *call.options();
    options.capture_response_metadata(&call.response_metadata());
    std::optional<Bytes> request;
    if (!info_.client_streams()) {
      request.emplace();
      if (Status s = serialize(*call.request(), request->get()); !s.ok()) co_return s;
    }
    real_ = new_client_stream(binding_.channel, binding_.method, std::move(options),
                              std::move(request), Status());
    real_->bind(worker());
    std::vector<std::function<void(StreamCore*)>> queued = std::move(queued_);
    for (auto& op : queued) op(real_);
    // Wait until the user asks for the final status, or drops the stream.
    co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(bool)>(
        [this](auto handler) {
          initiate_stream_op(
              this, std::move(handler),
              [this](auto h, Worker* w) {
                return make_stream_op<bool>(std::move(h), w, this, PassBool{});
              },
              [this](WriteOp* op) {
                terminal_ = op;
                if (user_finish_ != nullptr || released_) wake_terminal();
              },
              false);
        },
        use_task);
    finish_asked_ = true;
    co_return co_await async_finish(real_, use_task);
  }

 private:
  Worker* worker() const { return worker_.load(std::memory_order_acquire); }

  void launch() {
    if (cancelled_early_.load(std::memory_order_acquire)) cancelled_ = true;
    boost::asio::co_spawn(Executor(worker()), run_stack(),
                          [this](std::exception_ptr error, Status status) {
                            stack_returned(std::move(error), std::move(status));
                          });
  }

  Task<Status> run_stack() { co_return co_await (*stack_)(call_); }

  void stack_returned(std::exception_ptr error, Status status) {
    Scope scope(this);
    if (error) {
      std::string what = exception_text(error);
      log(LogLevel::kError,
          absl::StrCat("client middleware of ", std::string(info_.path), " threw: ", what));
      status = Status::internal(absl::StrCat("client middleware threw: ", what));
    }
    stack_done_ = true;
    final_status_ = std::move(status);
    if (!inner_ran_) {
      // The call never went out: fail what waits for it.
      std::vector<std::function<void(StreamCore*)>> queued = std::move(queued_);
      for (auto& op : queued) post(worker(), make_runnable([op] { op(nullptr); }));
    }
    if (ResponseMetadata* capture = options_.response_metadata()) {
      *capture = call_.response_metadata();
    }
    if (user_finish_ != nullptr) {
      complete_later(worker(), std::exchange(user_finish_, nullptr), final_status_);
    }
  }

  void forward_or_queue(std::function<void(StreamCore*)> op) {
    Scope scope(this);
    if (real_ != nullptr) {
      op(real_);
    } else if (stack_done_) {
      post(worker(), make_runnable([op = std::move(op)] { op(nullptr); }));
    } else {
      queued_.push_back(std::move(op));
    }
  }

  void cancel_on_worker() {
    cancelled_ = true;
    if (real_ != nullptr) real_->cancel();
  }

  void wake_terminal() {
    if (terminal_ != nullptr) complete_later(worker(), std::exchange(terminal_, nullptr), true);
  }

  void maybe_free() {
    if (callback_depth_ > 0 || !released_ || !stack_done_) return;
    if (real_ != nullptr) release_client_stream(real_);
    delete this;
  }

  std::shared_ptr<const BoxService> stack_;
  ClientBinding binding_;
  MethodInfo info_;
  CallOptions options_;
  std::unique_ptr<google::protobuf::MessageLite> request_;
  Call call_;
  std::optional<Status> failure_;

  std::atomic<Worker*> worker_{nullptr};
  std::atomic<bool> cancelled_early_{false};
  StreamCore* real_ = nullptr;
  std::vector<std::function<void(StreamCore*)>> queued_;
  WriteOp* terminal_ = nullptr;  // ChannelService waiting for the user to ask for the status
  FinishOp* user_finish_ = nullptr;
  Status final_status_;
  bool inner_ran_ = false;
  bool finish_asked_ = false;
  bool stack_done_ = false;
  bool cancelled_ = false;
  bool released_ = false;
  int callback_depth_ = 0;
};

}  // namespace

StreamCore* new_layered_client_stream(std::shared_ptr<const BoxService> stack,
                                      ClientBinding binding, const MethodInfo& info,
                                      CallOptions options,
                                      std::unique_ptr<google::protobuf::MessageLite> request,
                                      Status status) {
  return new LayeredClientStream(std::move(stack), std::move(binding), info, std::move(options),
                                 std::move(request), std::move(status));
}

Task<Status> run_layered_stream_inner(Call& call) {
  auto* layered = dynamic_cast<LayeredClientStream*>(call.stream());
  if (layered == nullptr) {
    co_return Status::internal("trellis: a streaming client call without its stream");
  }
  co_return co_await layered->run_inner(call);
}

}  // namespace trellis::detail
