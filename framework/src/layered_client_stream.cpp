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
// through a Replay instead, which keeps a copy of every message written (within the limit) and
// holds back the failure of an attempt that may be retried: an operation that fails is held until
// the stack decides. If the stack calls ChannelService again, a new real stream is sent the
// copies (and the half-close) and the held operations go on there; if the stack returns, they
// fail and finish() gives the stack's status.
#include <google/protobuf/message_lite.h>

#include <boost/asio/co_spawn.hpp>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
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
                      std::unique_ptr<google::protobuf::MessageLite> request,
                      const google::protobuf::MessageLite* request_type, Status status)
      : stack_(std::move(stack)),
        binding_(std::move(binding)),
        info_(info),
        options_(std::move(options)),
        request_(std::move(request)),
        request_type_(request_type),
        call_(info_, options_, request_.get(), nullptr) {
    call_.set_binding(&binding_);
    call_.set_stream(this);
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
      replay_ = std::make_unique<Replay>(this, *call.replay_limit());
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
  // Between the user's operations and the real stream of each attempt of a client-streaming call
  // that may be sent again. It keeps a copy of every message written while their total size is
  // within the limit, sends the copies (and the half-close) to each new attempt before the
  // user's next operations, and completes the user's operations itself, always from the
  // worker's queue (never inline: the operation may be being started, and the user's task may
  // end the call). While the attempt may still be retried (the copies are whole and the server
  // has not answered), a failed operation is not completed: it is held until the stack has
  // decided. Another attempt (attach) re-issues it; the end of the call (close) fails it.
  // Everything runs on the stream's worker.
  class Replay {
   public:
    Replay(LayeredClientStream* owner, std::size_t limit) : owner_(owner), limit_(limit) {}

    // The user's operations, forwarded by the stream.
    void start(WriteOp* op) {
      if (closed_) return complete_later(owner_->worker(), op, false);
      if (user_start_ != nullptr) return misuse(op, "start() was called while another is pending");
      user_start_ = op;
      pump();
    }
    void read(ReadOp* op) {
      if (stash_) {  // the response, read ahead after a write failed
        Bytes message = std::move(*stash_);
        stash_.reset();
        return deliver(op, std::move(message));
      }
      if (closed_) return complete_later(owner_->worker(), op, false, kNoBytes);
      if (user_read_ != nullptr) {
        owner_->fail(Status::failed_precondition("a read was started while another is pending"));
        return complete_later(owner_->worker(), op, false, kNoBytes);
      }
      user_read_ = op;
      pump();
    }
    void write(Bytes message, bool last, WriteOp* op) {
      if (closed_) return complete_later(owner_->worker(), op, false);
      if (user_write_ != nullptr) return misuse(op, "a write was started while another is pending");
      if (half_closed_) return misuse(op, "write() after writes_done()");
      written_bytes_ += message.get()->Length();
      if (written_bytes_ > limit_) stop_replaying();
      log_.push_back(std::move(message));
      if (last) half_closed_ = true;
      user_write_ = op;
      pump();
    }
    void writes_done(WriteOp* op) {
      if (closed_) return complete_later(owner_->worker(), op, false);
      if (user_write_ != nullptr) {
        return misuse(op, "writes_done() was started while a write is pending");
      }
      half_closed_ = true;
      user_write_ = op;
      pump();
    }

    // An attempt starts on `real`: it is sent the copies, then what the user asks.
    void attach(StreamCore* real) {
      real_ = real;
      sent_ = 0;
      half_close_sent_ = false;
      write_failed_ = false;
      reads_ended_ = false;
      failed_ = false;
      pump();
    }
    // The attempt's stream is being finished: nothing more is sent to it.
    void detach() { real_ = nullptr; }
    // The stack has returned: no more attempts. Held and later operations fail.
    void close() {
      closed_ = true;
      real_ = nullptr;
      Worker* w = owner_->worker();
      if (user_start_ != nullptr) complete_later(w, std::exchange(user_start_, nullptr), false);
      if (user_write_ != nullptr) complete_later(w, std::exchange(user_write_, nullptr), false);
      if (user_read_ != nullptr) {
        complete_later(w, std::exchange(user_read_, nullptr), false, kNoBytes);
      }
      log_.clear();
    }

    // Whether the attempt may be followed by another: the copies hold every message written
    // and the server has not answered. Once false, it stays false.
    bool replayable() const { return replayable_; }
    // Whether a new attempt can be sent everything written so far.
    bool can_attach() const { return complete_log_ && !closed_; }
    // Whether an operation is pending on the real stream.
    bool busy() const { return start_busy_ || write_busy_ || read_busy_; }
    // Whether ChannelService may finish the attempt's stream: nothing pending on it, and the
    // attempt failed while it could be retried, or the user dropped the stream, or asked for
    // the status and everything asked before has been done.
    bool may_end(bool finish_asked, bool released) const {
      if (busy()) return false;
      return failed_ || released || (finish_asked && drained());
    }

    // The call can no longer be retried (over the limit, or the server answered): the copies of
    // what the attempt's stream has taken are dropped. Between attempts nothing is dropped: the
    // next attempt, already decided, needs them all.
    void stop_replaying() {
      replayable_ = false;
      trim();
    }

   private:
    struct StartDone final : WriteOp {
      explicit StartDone(Replay* r) : replay(r) {}
      void complete(bool ok) override { replay->started(ok); }
      Replay* replay;
    };
    struct WriteDone final : WriteOp {
      explicit WriteDone(Replay* r) : replay(r) {}
      void complete(bool ok) override { replay->written(ok); }
      Replay* replay;
    };
    struct ReadDone final : ReadOp {
      explicit ReadDone(Replay* r) : replay(r) {}
      void complete(bool ok, grpc::ByteBuffer* bytes) override { replay->read_done(ok, bytes); }
      Replay* replay;
    };

    bool drained() const {
      return user_start_ == nullptr && user_read_ == nullptr && user_write_ == nullptr &&
             (write_failed_ || (sent_ == log_.size() && (!half_closed_ || half_close_sent_)));
    }

    void misuse(WriteOp* op, const char* what) {
      owner_->fail(Status::failed_precondition(what));
      complete_later(owner_->worker(), op, false);
    }

    void deliver(ReadOp* op, Bytes message) {
      post(owner_->worker(), make_runnable([op, message = std::move(message)]() mutable {
             op->complete(true, message.get());
           }));
    }

    // Drops the copies the attempt's stream has taken, once they are no longer needed.
    void trim() {
      if (replayable_ || real_ == nullptr || sent_ == 0) return;
      log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(sent_));
      sent_ = 0;
      complete_log_ = false;
    }

    // Issues on the attempt's stream what is due, one operation of each kind at a time; and
    // completes the user's write once the stream has taken everything written.
    void pump() {
      if (real_ == nullptr || failed_ || closed_) return;
      Worker* w = owner_->worker();
      if (user_start_ != nullptr && !start_busy_) {
        start_busy_ = true;
        real_->start(&start_done_);
      }
      if (!write_busy_) {
        if (write_failed_) {
          // The last attempt's write side has failed: so does what the user writes.
          if (user_write_ != nullptr) complete_later(w, std::exchange(user_write_, nullptr), false);
        } else if (sent_ < log_.size()) {
          bool last = half_closed_ && sent_ + 1 == log_.size();
          Bytes message;
          if (replayable_) {
            grpc::ByteBuffer copy(*log_[sent_].get());  // shares the slices
            message.get()->Swap(&copy);
          } else {
            message = std::move(log_[sent_]);
          }
          write_busy_ = true;
          sending_message_ = true;
          sending_last_ = last;
          real_->write(std::move(message), last, &write_done_);
        } else if (half_closed_ && !half_close_sent_) {
          write_busy_ = true;
          sending_message_ = false;
          sending_last_ = true;
          real_->writes_done(&write_done_);
        } else if (user_write_ != nullptr) {
          complete_later(w, std::exchange(user_write_, nullptr), true);
        }
      }
      if (user_read_ != nullptr && !read_busy_) {
        if (reads_ended_) {
          complete_later(w, std::exchange(user_read_, nullptr), false, kNoBytes);
        } else {
          read_busy_ = true;
          real_->read(&read_done_);
        }
      }
    }

    // The attempt failed: while it may be retried, what the user asked waits for the stack's
    // decision. A write fails when the call has ended, possibly with the server's response
    // (a server may answer before reading everything): read it before the status, which would
    // discard it.
    void attempt_failed() {
      if (!replayable_) return;
      failed_ = true;
      if (!read_busy_ && !reads_ended_ && real_ != nullptr) {
        read_busy_ = true;
        real_->read(&read_done_);
      }
    }

    void started(bool ok) {
      Scope scope(owner_);
      start_busy_ = false;
      if (ok) {
        if (user_start_ != nullptr) {
          complete_later(owner_->worker(), std::exchange(user_start_, nullptr), true);
        }
      } else if (replayable_) {
        attempt_failed();
      } else if (user_start_ != nullptr) {
        complete_later(owner_->worker(), std::exchange(user_start_, nullptr), false);
      }
      after_completion();
    }

    void written(bool ok) {
      Scope scope(owner_);
      write_busy_ = false;
      if (ok) {
        if (sending_message_) ++sent_;
        if (sending_last_) half_close_sent_ = true;
        trim();
      } else {
        write_failed_ = true;
        attempt_failed();
      }
      after_completion();
    }

    void read_done(bool ok, grpc::ByteBuffer* bytes) {
      Scope scope(owner_);
      read_busy_ = false;
      if (ok) {
        // The response: the server has committed, and this attempt is the last (run_inner marks
        // the call committed). It goes on.
        Bytes message;
        message.get()->Swap(bytes);
        stop_replaying();
        failed_ = false;
        if (user_read_ != nullptr) {
          deliver(std::exchange(user_read_, nullptr), std::move(message));
        } else {
          stash_ = std::move(message);
        }
      } else {
        reads_ended_ = true;
        attempt_failed();
      }
      after_completion();
    }

    void after_completion() {
      if (closed_) return;
      pump();
      owner_->wake_terminal();
    }

    LayeredClientStream* owner_;
    std::size_t limit_;
    StreamCore* real_ = nullptr;  // the attempt's stream while it may be sent operations

    std::deque<Bytes> log_;  // the copies; without replay, the messages not sent yet
    std::size_t sent_ = 0;   // entries of log_ the attempt's stream has taken
    std::size_t written_bytes_ = 0;
    bool replayable_ = true;
    bool complete_log_ = true;  // log_ holds every message written
    bool half_closed_ = false;  // the user half-closed

    WriteOp* user_start_ = nullptr;
    WriteOp* user_write_ = nullptr;  // a write or writes_done, done once everything is sent
    ReadOp* user_read_ = nullptr;
    std::optional<Bytes> stash_;  // the response, read ahead

    // The attempt.
    bool half_close_sent_ = false;
    bool write_failed_ = false;
    bool reads_ended_ = false;
    bool failed_ = false;  // it failed while it could be retried: operations are held
    bool closed_ = false;
    bool start_busy_ = false;
    bool write_busy_ = false;
    bool read_busy_ = false;
    bool sending_message_ = false;
    bool sending_last_ = false;
    StartDone start_done_{this};
    WriteDone write_done_{this};
    ReadDone read_done_{this};
  };

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
    if (observers_.empty() || request_type_ == nullptr) return true;
    grpc::ByteBuffer copy(*bytes.get());  // parse() consumes its input; the slices are shared
    if (!sent_scratch_) sent_scratch_.reset(request_type_->New());
    Status status = parse(&copy, sent_scratch_.get(), "request");
    if (status.ok()) status = observers_.sent(*sent_scratch_);
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
  auto* layered = dynamic_cast<LayeredClientStream*>(call.stream());
  if (layered == nullptr) {
    co_return Status::internal("trellis: a streaming client call without its stream");
  }
  co_return co_await layered->run_inner(call);
}

}  // namespace trellis::detail
