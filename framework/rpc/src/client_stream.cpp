#include "trellis/client_stream.hpp"

#include <grpcpp/client_context.h>
#include <grpcpp/support/async_stream.h>

#include <atomic>

#include "client_stream_core.hpp"
#include "forward.hpp"
#include "grpc_convert.hpp"
#include "outgoing_bytes.hpp"
#include "worker.hpp"

namespace trellis::detail {
namespace {

constexpr grpc::ByteBuffer* kNoBytes = nullptr;

using Stream = grpc::ClientAsyncReaderWriter<OutgoingBytes, grpc::ByteBuffer>;

// The client side of one streaming call. Created unbound; the first operation binds it to a
// worker and starts the gRPC call there. Every member below the atomics is touched only on that
// worker. The object frees itself once the handle is released and no gRPC operation is pending.
class ClientStreamCall final : public ClientStreamCore, public CancellableOp {
  friend class CallbackScope<ClientStreamCall>;
  using Scope = CallbackScope<ClientStreamCall>;

 public:
  ClientStreamCall(const std::shared_ptr<grpc::Channel>& channel,
                   const grpc::internal::RpcMethod& method, CallOptions options,
                   std::optional<Bytes> request, Status status)
      : channel_(channel),
        method_(method),
        options_(std::move(options)),
        request_(std::move(request)) {
    if (!status.ok()) failure_ = std::move(status);
  }

  Worker* bind(Worker* w) override {
    if (Worker* bound = worker_.load(std::memory_order_acquire)) return bound;
    Worker* expected = nullptr;
    if (worker_.compare_exchange_strong(expected, w, std::memory_order_acq_rel)) return w;
    return expected;
  }

  void start(WriteOp* op) override {
    if (start_op_ != nullptr) {
      misuse("start() was called while another start() is pending");
      complete_later(worker(), op, false);
      return;
    }
    if (!ensure_started()) {
      complete_later(worker(), op, false);
      return;
    }
    if (headers_sent_) {
      complete_later(worker(), op, true);
      return;
    }
    start_op_ = op;
  }

  void read(ReadOp* op) override {
    if (read_op_ != nullptr || finishing_) {
      misuse("a read was started while another read or finish() is pending on the stream");
      complete_later(worker(), op, false, kNoBytes);
      return;
    }
    if (!ensure_started() || reads_ended_ || !may_start_ops()) {
      complete_later(worker(), op, false, kNoBytes);
      return;
    }
    read_op_ = op;
    start_read();
  }

  void write(Bytes message, bool last, WriteOp* op) override {
    if (write_pending_ || finishing_) {
      misuse("a write was started while another write, writes_done() or finish() is pending");
      complete_later(worker(), op, false);
      return;
    }
    if (!ensure_started() || ended_ || failure_) {
      complete_later(worker(), op, false);
      return;
    }
    if (half_closed_) {
      misuse("write() after writes_done()");
      complete_later(worker(), op, false);
      return;
    }
    if (!may_start_ops()) {
      complete_later(worker(), op, false);
      return;
    }
    write_op_ = op;
    start_write(std::move(message), last);
  }

  void writes_done(WriteOp* op) override {
    if (write_pending_ || finishing_) {
      misuse("writes_done() was started while a write or finish() is pending");
      complete_later(worker(), op, false);
      return;
    }
    if (!ensure_started() || ended_) {
      complete_later(worker(), op, false);
      return;
    }
    if (half_closed_) {
      complete_later(worker(), op, true);
      return;
    }
    if (!may_start_ops()) {
      complete_later(worker(), op, false);
      return;
    }
    write_op_ = op;
    start_writes_done();
  }

  void finish(FinishOp* op) override {
    if (finishing_ || read_op_ != nullptr || write_op_ != nullptr) {
      misuse("finish() was started while a read, write or finish() is pending");
      complete_later(worker(), op, final_status());
      return;
    }
    if (!ensure_started() || ended_) {
      complete_later(worker(), op, final_status());
      return;
    }
    finishing_ = true;
    finish_op_ = op;
    advance_finish();
  }

  // Any thread. The flag first and `started_` second, both seq_cst, as ensure_started() does the
  // other way round: either the worker sees the flag after starting the call, or this sees the
  // call started (or both), so a cancel racing the start is never lost.
  void cancel() override {
    cancel_requested_.store(true);
    if (started_.load()) ctx_.TryCancel();
  }

  void fail(Status status) override {
    if (!failure_) failure_ = std::move(status);
    cancel();
  }

  void release() noexcept override {
    Worker* w = worker_.load(std::memory_order_acquire);
    if (w == nullptr) {
      delete this;  // never used: no gRPC call exists
      return;
    }
    auto on_worker = [this] {
      Scope scope(this);
      released_ = true;
      if (started_.load(std::memory_order_relaxed) && !ended_) ctx_.TryCancel();
    };
    if (running_in(w)) {
      on_worker();
    } else {
      post(w, make_runnable(on_worker));
    }
  }

 private:
  ~ClientStreamCall() {
    if (started_.load(std::memory_order_relaxed))
      Worker::count_call(worker()->live_client_calls, -1);
  }

  Worker* worker() const { return worker_.load(std::memory_order_relaxed); }

  // Starts the gRPC call on the first operation. False when the call cannot run (it failed or
  // was cancelled before it started, or the runtime is stopping); operations then fail.
  bool ensure_started() {
    if (started_.load(std::memory_order_relaxed)) return true;
    if (failure_) return false;
    if (cancel_requested_.load(std::memory_order_acquire)) {
      failure_ = Status::cancelled("the call was cancelled before it started");
      return false;
    }
    Worker* w = worker();
    if (!w->accepting_ops()) {
      failure_ = Status::cancelled("the Trellis runtime is shutting down");
      return false;
    }
    configure(ctx_, options_);
    // With its one request known, a server-streaming call sends headers, request and
    // half-close in one batch (corked headers); other calls send their headers at once, so a
    // server that speaks first is not kept waiting.
    if (request_) ctx_.set_initial_metadata_corked(true);
    stream_ =
        grpc::internal::ClientAsyncReaderWriterFactory<OutgoingBytes, grpc::ByteBuffer>::Create(
            channel_.get(), w->cq(), method_, &ctx_, /*start=*/false, nullptr);
    Worker::count_call(w->live_client_calls, 1);
    w->track(this);
    tracked_ = true;
    started_.store(true);  // seq_cst, with cancel()
    if (request_) {
      stream_->StartCall(nullptr);  // corked: no operation, no tag
      headers_sent_ = true;
      start_write(std::move(*request_), /*last=*/true);
      request_.reset();
    } else {
      stream_->StartCall(&on_started_);
      ++outstanding_;
    }
    if (cancel_requested_.load()) ctx_.TryCancel();
    return true;
  }

  void start_read() {
    stream_->Read(&read_buffer_, &on_read_);
    ++outstanding_;
  }

  // grpc++ sends the headers with the same operation set as writes, so a write waits until
  // StartCall has completed (started()).
  void start_write(Bytes message, bool last) {
    if (last) half_closed_ = true;
    write_pending_ = true;
    if (!headers_sent_) {
      write_buffer_.take(std::move(message));
      queued_write_ = QueuedWrite{last, false};
      return;
    }
    write_buffer_.take(std::move(message));
    grpc::WriteOptions options;
    if (last) options.set_last_message();
    stream_->Write(write_buffer_, options, &on_written_);
    ++outstanding_;
  }

  void start_writes_done() {
    half_closed_ = true;
    write_pending_ = true;
    if (!headers_sent_) {
      queued_write_ = QueuedWrite{true, true};
      return;
    }
    stream_->WritesDone(&on_written_);
    ++outstanding_;
  }

  void started(bool ok) {
    Scope scope(this);
    --outstanding_;
    headers_sent_ = true;
    if (std::optional<QueuedWrite> q = std::exchange(queued_write_, std::nullopt)) {
      if (!may_start_ops()) {
        write_pending_ = false;
        if (WriteOp* op = std::exchange(write_op_, nullptr)) op->complete(false);
        advance_finish();
      } else if (q->writes_done) {
        stream_->WritesDone(&on_written_);
        ++outstanding_;
      } else {
        grpc::WriteOptions options;
        if (q->last) options.set_last_message();
        stream_->Write(write_buffer_, options, &on_written_);
        ++outstanding_;
      }
    }
    if (WriteOp* op = std::exchange(start_op_, nullptr)) op->complete(ok);
  }

  void read_done(bool ok) {
    Scope scope(this);
    --outstanding_;
    draining_read_ = false;
    if (ok) {
      // The message leaves read_buffer_ first: completing may start the next read into it.
      grpc::ByteBuffer message;
      message.Swap(&read_buffer_);
      if (ReadOp* op = std::exchange(read_op_, nullptr)) {
        op->complete(true, &message);
      } else {
        advance_finish();  // finish() discarding what the server still sends
      }
      return;
    }
    // The server has ended the stream (or the call failed): the status tells which. A waiting
    // read completes once it is known.
    reads_ended_ = true;
    start_receive_status();
  }

  void written(bool ok) {
    Scope scope(this);
    --outstanding_;
    write_pending_ = false;
    if (WriteOp* op = std::exchange(write_op_, nullptr)) op->complete(ok);
    advance_finish();
  }

  void status_received(bool) {
    Scope scope(this);
    --outstanding_;
    ended_ = true;
    if (ResponseMetadata* capture = options_.response_metadata()) {
      capture->initial = from_grpc(ctx_.GetServerInitialMetadata());
      capture->trailing = from_grpc(ctx_.GetServerTrailingMetadata());
      capture->peer = ctx_.peer();
    }
    untrack();
    if (ReadOp* op = std::exchange(read_op_, nullptr)) op->complete(false, kNoBytes);
    advance_finish();
  }

  void start_receive_status() {
    if (status_requested_) return;
    if (!may_start_ops()) {
      if (ReadOp* op = std::exchange(read_op_, nullptr)) op->complete(false, kNoBytes);
      advance_finish();
      return;
    }
    status_requested_ = true;
    stream_->Finish(&status_, &on_status_);
    ++outstanding_;
  }

  // finish(): half-close, drain the reads, wait for the status; each step resumes from the
  // completion that unblocks it.
  void advance_finish() {
    if (!finishing_) return;
    if (!ended_) {
      const bool half_close = !half_closed_ && !write_pending_;
      const bool drain = !reads_ended_ && read_op_ == nullptr && !draining_read_;
      if (!half_close && !drain) return;  // what is in flight will call back
      if (may_start_ops()) {
        if (half_close) start_writes_done();
        if (drain) {
          draining_read_ = true;
          start_read();
        }
        return;
      }
      if (!ended_) return;  // the status on its way ends the call
    }
    finishing_ = false;
    std::exchange(finish_op_, nullptr)->complete(final_status());
  }

  // Every operation after the first starts only if this holds. Once the runtime is stopping, it
  // shuts the worker's queue down as soon as nothing is left to run, and grpc core aborts the
  // process on an operation started on a queue that has shut down; yet completions still come
  // in then (the stop cancelled the call): on a native server's runtime through the reactor,
  // where the worker does not see them coming, and on any runtime from the queue's last
  // events. So when this is false, the call ends here, CANCELLED, unless it has ended already or
  // its status is on the way (a Finish in flight ends it, and fills the caller's response
  // metadata, which must stay alive until then).
  bool may_start_ops() {
    if (worker()->accepting_ops()) return true;
    if (!ended_ && !status_requested_) {
      if (!failure_) failure_ = Status::cancelled("the Trellis runtime is shutting down");
      ended_ = true;
      reads_ended_ = true;
      untrack();
    }
    return false;
  }

  Status final_status() const {
    if (failure_) return *failure_;
    if (!ended_) return Status::cancelled("the call has not finished");
    return from_grpc(status_);
  }

  void misuse(const char* what) { fail(Status::failed_precondition(what)); }

  void untrack() {
    if (tracked_) {
      worker()->untrack(this);
      tracked_ = false;
    }
  }

  void maybe_free() {
    if (callback_depth_ == 0 && released_ && outstanding_ == 0) {
      untrack();
      delete this;
    }
  }

  std::shared_ptr<grpc::Channel> channel_;
  grpc::internal::RpcMethod method_;
  CallOptions options_;
  std::optional<Bytes> request_;

  std::atomic<Worker*> worker_{nullptr};
  std::atomic<bool> started_{false};
  std::atomic<bool> cancel_requested_{false};

  grpc::ClientContext ctx_;
  Stream* stream_ = nullptr;  // arena-owned by the call
  grpc::ByteBuffer read_buffer_;
  grpc::Status status_;
  std::optional<Status> failure_;  // a local failure; overrides what gRPC reports

  struct QueuedWrite {
    bool last;
    bool writes_done;
  };
  std::optional<QueuedWrite> queued_write_;  // a write waiting for StartCall to complete
  OutgoingBytes write_buffer_;               // the message of the write in flight or queued
  bool headers_sent_ = false;

  WriteOp* start_op_ = nullptr;
  ReadOp* read_op_ = nullptr;
  WriteOp* write_op_ = nullptr;
  FinishOp* finish_op_ = nullptr;
  bool draining_read_ = false;
  bool write_pending_ = false;
  bool finishing_ = false;
  bool half_closed_ = false;
  bool reads_ended_ = false;
  bool status_requested_ = false;
  bool ended_ = false;
  bool released_ = false;
  bool tracked_ = false;
  int outstanding_ = 0;  // gRPC operations whose tags have not come back
  int callback_depth_ = 0;

  Forward<ClientStreamCall, &ClientStreamCall::started> on_started_{this};
  Forward<ClientStreamCall, &ClientStreamCall::read_done> on_read_{this};
  Forward<ClientStreamCall, &ClientStreamCall::written> on_written_{this};
  Forward<ClientStreamCall, &ClientStreamCall::status_received> on_status_{this};
};

}  // namespace

StreamCore* new_client_stream(const std::shared_ptr<grpc::Channel>& channel,
                              const grpc::internal::RpcMethod& method, CallOptions options,
                              std::optional<Bytes> request, Status status) {
  return new ClientStreamCall(channel, method, std::move(options), std::move(request),
                              std::move(status));
}

void release_client_stream(StreamCore* core) noexcept {
  // Every handle holds a core made by new_client_stream or new_layered_client_stream.
  if (core != nullptr) static_cast<ClientStreamCore*>(core)->release();
}

void cancel_client_stream(StreamCore* core) noexcept {
  if (core != nullptr) core->cancel();
}

}  // namespace trellis::detail
