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
//
// Replay (client-streaming calls a layer may send again, Call::enable_replay): the operations go
// through a Replay (replay.hpp) instead, which keeps a copy of every message written (within the
// limit) and holds back the failure of an attempt that may be retried: an operation that fails is
// held until the stack decides. If the stack calls ChannelService again, a new real stream is sent
// the copies (and the half-close) and the held operations go on there; if the stack returns, they
// fail and finish() gives the stack's status.
#include <google/protobuf/message_lite.h>

#include <boost/asio/co_spawn.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client_stream_core.hpp"
#include "forward.hpp"
#include "log.hpp"
#include "replay.hpp"
#include "trellis/client.hpp"
#include "trellis/client_stream.hpp"
#include "worker.hpp"

namespace trellis::detail {
namespace {

constexpr grpc::ByteBuffer* kNoBytes = nullptr;

class LayeredClientStream final : public ClientStreamCore, public ReplayOwner {
  friend class CallbackScope<LayeredClientStream>;
  using Scope = CallbackScope<LayeredClientStream>;

 public:
  LayeredClientStream(std::shared_ptr<const BoxService> stack, ClientBinding binding,
                      const MethodInfo& info, CallOptions options,
                      std::unique_ptr<google::protobuf::MessageLite> request,
                      const google::protobuf::MessageLite* request_type, Status status)
      : stack_(std::move(stack)),
        binding_(std::move(binding)),
        info_(info),
        options_(std::move(options)),
        request_(std::move(request)),
        request_type_(request_type),
        call_(info_, options_, request_.get(), nullptr) {
    detail::CallAccess::set_binding(call_, &binding_);
    detail::CallAccess::set_stream(call_, this);
    if (!status.ok()) failure_ = std::move(status);
  }

  Worker* bind(Worker* w) override {
    Worker* expected = nullptr;
    // seq_cst, with cancel(): see there.
    if (worker_.compare_exchange_strong(expected, w)) {
      // The first operation: run the stack. Its ops are started after this on w, so the stack's
      // task (posted first) reaches ChannelService, or ends, before or while they queue.
      post(w, make_runnable([this] { launch(); }));
      return w;
    }
    return expected;
  }

  void start(WriteOp* op) override {
    forward_or_queue([this, op](StreamCore* real) {
      if (replay_ != nullptr) {
        replay_->start(op);
      } else if (real != nullptr) {
        real->start(op);
      } else {
        op->complete(false);
      }
    });
  }
  void read(ReadOp* op) override {
    forward_or_queue([this, op](StreamCore* real) {
      if (replay_ != nullptr) {
        replay_->read(op);
      } else if (real != nullptr) {
        forward_read(real, op);
      } else {
        op->complete(false, kNoBytes);
      }
    });
  }
  void write(Bytes message, bool last, WriteOp* op) override {
    auto bytes = std::make_shared<Bytes>(std::move(message));
    forward_or_queue([this, op, bytes, last](StreamCore* real) {
      if ((replay_ != nullptr || real != nullptr) && !observe_sent(*bytes)) {
        complete_later(worker(), op, false);
      } else if (replay_ != nullptr) {
        replay_->write(std::move(*bytes), last, op);
      } else if (real != nullptr) {
        real->write(std::move(*bytes), last, op);
      } else {
        op->complete(false);
      }
    });
  }
  void writes_done(WriteOp* op) override {
    forward_or_queue([this, op](StreamCore* real) {
      if (replay_ != nullptr) {
        replay_->writes_done(op);
      } else if (real != nullptr) {
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

  // Any thread. The flag first and the worker second, both seq_cst, as bind() and launch() do
  // the other way round: either launch() sees the flag, or this sees the worker (or both).
  void cancel() override {
    cancelled_early_.store(true);
    Worker* w = worker_.load();
    if (w != nullptr) run_on_worker(w, [this] { cancel_on_worker(); });
  }

  void fail(Status status) override {
    // With replay, the failure is the call's, not the attempt's: no further attempt is made.
    if (replay_ != nullptr && !failure_) failure_ = status;
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
    run_on_worker(w, [this] {
      released_ = true;
      if (!stack_done_ && !finish_asked_) cancel_on_worker();
      wake_terminal();
    });
  }

  // ChannelService, for a streaming call: the innermost service of the stack. It runs once, or,
  // with replay, once per attempt: each run sends the call on a new real stream.
  Task<Status> run_inner(Call& call) {
    if (failure_) co_return *failure_;
    if (cancelled_) co_return Status::cancelled("the call was cancelled before it started");
    if (attempt_running_ || (inner_ran_ && (replay_ == nullptr || !replay_->can_attach()))) {
      co_return Status::failed_precondition("a stream cannot be sent twice");
    }
    bool first = !inner_ran_;
    inner_ran_ = true;
    CallOptions options = *call.options();
    options.capture_response_metadata(&call.response_metadata());
    std::optional<Bytes> request;
    if (!info_.client_streams()) {
      request.emplace();
      if (Status s = serialize(*call.request(), request->get()); !s.ok()) co_return s;
    }
    if (first && info_.kind == RpcKind::kClientStreaming && call.replay_limit()) {
      replay_ = std::make_unique<Replay>(this, worker(), *call.replay_limit());
    }
    // The previous attempt's stream has finished: nothing refers to it any more.
    if (real_ != nullptr) release_client_stream(std::exchange(real_, nullptr));
    real_ = new_client_stream(binding_.channel, binding_.method, std::move(options),
                              std::move(request), Status());
    real_->bind(worker());
    attempt_running_ = true;
    if (replay_ != nullptr) replay_->attach(real_);
    if (first) {
      std::vector<std::function<void(StreamCore*)>> queued = std::move(queued_);
      for (auto& op : queued) op(real_);
    }
    // Wait until the user asks for the final status, or drops the stream (or, with replay, the
    // attempt has failed while it could still be retried).
    co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(bool)>(
        [this](auto handler) {
          initiate_stream_op(
              this, std::move(handler),
              [this](auto h, Worker* w) {
                return make_stream_op<bool>(std::move(h), w, this, PassBool{});
              },
              [this](WriteOp* op) {
                terminal_ = op;
                wake_terminal();
              },
              false);
        },
        use_task);
    if (user_finish_ != nullptr) finish_asked_ = true;
    if (replay_ != nullptr) replay_->detach();
    Status status = co_await async_finish(real_, use_task);
    attempt_running_ = false;
    // gRFC A6: a call is committed once the server sent response headers (with entries) or a
    // message; with replay, also once the copies no longer hold every message written.
    if (!call.response_metadata().initial.empty()) call.set_committed();
    if (replay_ != nullptr) {
      if (call.committed()) replay_->stop_replaying();
      if (!replay_->replayable()) call.set_committed();
    }
    co_return status;
  }

 private:
  // ReplayOwner: what the Replay asks of this stream.
  void fail_call(Status status) override { fail(std::move(status)); }
  void completion_begins() override { ++callback_depth_; }
  void completion_ends() override {
    if (--callback_depth_ == 0) maybe_free();
  }
  void attempt_progressed() override { wake_terminal(); }

  Worker* worker() const { return worker_.load(std::memory_order_acquire); }

  void launch() {
    if (cancelled_early_.load()) cancelled_ = true;
    boost::asio::co_spawn(Executor(worker()), run_stack(),
                          [this](std::exception_ptr error, Status status) {
                            stack_returned(std::move(error), std::move(status));
                          });
  }

  Task<Status> run_stack() { co_return co_await (*stack_)(call_); }

  // Shows a message the caller wrote to the layers' observers, parsed again from its bytes (the
  // caller's message is gone: write() serialized it before the layers ran). False: an observer
  // rejected it (or it did not parse), and the call has failed with that status.
  bool observe_sent(Bytes& bytes) {
    if (!observed() || request_type_ == nullptr) return true;
    grpc::ByteBuffer copy(*bytes.get());  // parse() consumes its input; the slices are shared
    if (!sent_scratch_) sent_scratch_.reset(request_type_->New());
    Status status = parse(&copy, sent_scratch_.get(), "request");
    if (status.ok()) status = observers_->sent(*sent_scratch_);
    if (status.ok()) return true;
    fail(std::move(status));
    return false;
  }

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
    if (replay_ != nullptr) replay_->close();  // no more attempts: held operations fail
    if (real_ == nullptr) {
      // The call never went out (the stack answered itself, or the call failed or was cancelled
      // before it started): fail what waits for it.
      std::vector<std::function<void(StreamCore*)>> queued = std::move(queued_);
      for (auto& op : queued) post_later(worker(), [op] { op(nullptr); });
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
      post_later(worker(), [op = std::move(op)] { op(nullptr); });
    } else {
      queued_.push_back(std::move(op));
    }
  }

  void cancel_on_worker() {
    cancelled_ = true;
    if (real_ != nullptr) real_->cancel();
  }

  // Lets ChannelService collect the status of the attempt, once the user asked for it (or
  // dropped the stream) or, with replay, once the attempt failed while it could be retried.
  void wake_terminal() {
    if (terminal_ == nullptr) return;
    bool finish_asked = user_finish_ != nullptr;
    bool end = replay_ != nullptr ? replay_->may_end(finish_asked, released_)
                                  : (finish_asked || released_);
    if (!end) return;
    // Nothing more goes to the attempt's stream from now on: an operation that comes before
    // ChannelService resumes waits for the next attempt (or fails when there is none) instead of
    // meeting the attempt's finish.
    if (replay_ != nullptr) replay_->detach();
    complete_later(worker(), std::exchange(terminal_, nullptr), true);
  }

  // Runs `fn` on the stream's worker later; the stream is not freed before it has run.
  template <class F>
  void post_later(Worker* w, F fn) {
    pending_posts_.fetch_add(1);
    post(w, make_runnable([this, fn = std::move(fn)]() mutable {
           Scope scope(this);
           pending_posts_.fetch_sub(1);
           fn();
         }));
  }

  // Runs `fn` on worker `w`: now when this thread is it, else later (post_later).
  template <class F>
  void run_on_worker(Worker* w, F fn) {
    if (!running_in(w)) {
      post_later(w, std::move(fn));
      return;
    }
    Scope scope(this);
    fn();
  }

  // The user's read, handed to the real stream through one op of this stream's, so that the
  // stream is not freed while the read is pending: completing it parses the message and shows it
  // to this stream's observers.
  class ForwardedRead final : public ReadOp {
   public:
    explicit ForwardedRead(LayeredClientStream* owner) : owner_(owner) {}
    bool pending() const { return user_ != nullptr; }
    void start(StreamCore* real, ReadOp* user) {
      user_ = user;
      real->read(this);
    }
    void complete(bool ok, grpc::ByteBuffer* bytes) override {
      Scope scope(owner_);
      std::exchange(user_, nullptr)->complete(ok, bytes);
    }

   private:
    LayeredClientStream* owner_;
    ReadOp* user_ = nullptr;
  };

  void forward_read(StreamCore* real, ReadOp* op) {
    // A second read while one is pending goes as it is: the real stream fails it as a misuse.
    if (forwarded_read_.pending()) {
      real->read(op);
    } else {
      forwarded_read_.start(real, op);
    }
  }

  void maybe_free() {
    if (callback_depth_ > 0 || !released_ || !stack_done_ || pending_posts_.load() != 0) return;
    if (forwarded_read_.pending()) return;              // it refers to this
    if (replay_ != nullptr && replay_->busy()) return;  // its operations refer to this
    if (real_ != nullptr) release_client_stream(real_);
    delete this;
  }

  std::shared_ptr<const BoxService> stack_;
  ClientBinding binding_;
  MethodInfo info_;
  CallOptions options_;
  std::unique_ptr<google::protobuf::MessageLite> request_;
  const google::protobuf::MessageLite* request_type_;  // client and bidi streaming: for observers
  std::unique_ptr<google::protobuf::MessageLite> sent_scratch_;  // what observe_sent parses into
  Call call_;
  std::optional<Status> failure_;

  std::atomic<Worker*> worker_{nullptr};
  std::atomic<bool> cancelled_early_{false};  // cancel() was called (any thread)
  std::atomic<int> pending_posts_{0};         // post_later() runnables not yet run
  ForwardedRead forwarded_read_{this};
  StreamCore* real_ = nullptr;
  std::vector<std::function<void(StreamCore*)>> queued_;
  std::unique_ptr<Replay> replay_;  // client streaming with replay enabled, from the first attempt
  WriteOp* terminal_ = nullptr;     // ChannelService waiting for the user to ask for the status
  FinishOp* user_finish_ = nullptr;
  Status final_status_;
  bool inner_ran_ = false;
  bool attempt_running_ = false;
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
                                      const google::protobuf::MessageLite* request_type,
                                      Status status) {
  return new LayeredClientStream(std::move(stack), std::move(binding), info, std::move(options),
                                 std::move(request), request_type, std::move(status));
}

Task<Status> run_layered_stream_inner(Call& call) {
  auto* layered = dynamic_cast<LayeredClientStream*>(stream_core(CallAccess::stream(call)));
  if (layered == nullptr) {
    co_return Status::internal("trellis: a streaming client call without its stream");
  }
  co_return co_await layered->run_inner(call);
}

}  // namespace trellis::detail
