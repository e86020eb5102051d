#include "replay.hpp"

#include <utility>

#include "forward.hpp"
#include "worker.hpp"

namespace trellis::detail {
namespace {

constexpr grpc::ByteBuffer* kNoBytes = nullptr;

// Brackets a completion of an operation the Replay issued (ReplayOwner::completion_begins).
class CompletionScope {
 public:
  explicit CompletionScope(ReplayOwner* owner) : owner_(owner) { owner_->completion_begins(); }
  ~CompletionScope() { owner_->completion_ends(); }
  CompletionScope(const CompletionScope&) = delete;
  CompletionScope& operator=(const CompletionScope&) = delete;

 private:
  ReplayOwner* owner_;
};

}  // namespace

void Replay::start(WriteOp* op) {
  if (closed_) return complete_later(worker_, op, false);
  if (user_start_ != nullptr) return misuse(op, "start() was called while another is pending");
  user_start_ = op;
  pump();
}

void Replay::read(ReadOp* op) {
  if (stash_) {  // the response, read ahead after a write failed
    Bytes message = std::move(*stash_);
    stash_.reset();
    return deliver(op, std::move(message));
  }
  if (closed_) return complete_later(worker_, op, false, kNoBytes);
  if (user_read_ != nullptr) {
    owner_->fail_call(Status::failed_precondition("a read was started while another is pending"));
    return complete_later(worker_, op, false, kNoBytes);
  }
  user_read_ = op;
  pump();
}

void Replay::write(Bytes message, bool last, WriteOp* op) {
  if (closed_) return complete_later(worker_, op, false);
  if (user_write_ != nullptr) return misuse(op, "a write was started while another is pending");
  if (half_closed_) return misuse(op, "write() after writes_done()");
  written_bytes_ += message.get()->Length();
  if (written_bytes_ > limit_) stop_replaying();
  log_.push_back(std::move(message));
  if (last) half_closed_ = true;
  user_write_ = op;
  pump();
}

void Replay::writes_done(WriteOp* op) {
  if (closed_) return complete_later(worker_, op, false);
  if (user_write_ != nullptr) {
    return misuse(op, "writes_done() was started while a write is pending");
  }
  half_closed_ = true;
  user_write_ = op;
  pump();
}

void Replay::attach(StreamCore* real) {
  real_ = real;
  sent_ = 0;
  half_close_sent_ = false;
  write_failed_ = false;
  reads_ended_ = false;
  failed_ = false;
  pump();
}

void Replay::close() {
  closed_ = true;
  real_ = nullptr;
  if (user_start_ != nullptr) complete_later(worker_, std::exchange(user_start_, nullptr), false);
  if (user_write_ != nullptr) complete_later(worker_, std::exchange(user_write_, nullptr), false);
  if (user_read_ != nullptr) {
    complete_later(worker_, std::exchange(user_read_, nullptr), false, kNoBytes);
  }
  log_.clear();
}

void Replay::misuse(WriteOp* op, const char* what) {
  owner_->fail_call(Status::failed_precondition(what));
  complete_later(worker_, op, false);
}

void Replay::deliver(ReadOp* op, Bytes message) {
  post(worker_, make_runnable([op, message = std::move(message)]() mutable {
         op->complete(true, message.get());
       }));
}

// Drops the copies the attempt's stream has taken, once they are no longer needed.
void Replay::trim() {
  if (replayable_ || real_ == nullptr || sent_ == 0) return;
  log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(sent_));
  sent_ = 0;
  complete_log_ = false;
}

// Issues on the attempt's stream what is due, one operation of each kind at a time; and
// completes the user's write once the stream has taken everything written.
void Replay::pump() {
  if (real_ == nullptr || failed_ || closed_) return;
  if (user_start_ != nullptr && !start_busy_) {
    start_busy_ = true;
    real_->start(&start_done_);
  }
  if (!write_busy_) {
    if (write_failed_) {
      // The last attempt's write side has failed: so does what the user writes.
      if (user_write_ != nullptr)
        complete_later(worker_, std::exchange(user_write_, nullptr), false);
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
      complete_later(worker_, std::exchange(user_write_, nullptr), true);
    }
  }
  if (user_read_ != nullptr && !read_busy_) {
    if (reads_ended_) {
      complete_later(worker_, std::exchange(user_read_, nullptr), false, kNoBytes);
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
void Replay::attempt_failed() {
  if (!replayable_) return;
  failed_ = true;
  if (!read_busy_ && !reads_ended_ && real_ != nullptr) {
    read_busy_ = true;
    real_->read(&read_done_);
  }
}

void Replay::started(bool ok) {
  CompletionScope scope(owner_);
  start_busy_ = false;
  if (ok) {
    if (user_start_ != nullptr) complete_later(worker_, std::exchange(user_start_, nullptr), true);
  } else if (replayable_) {
    attempt_failed();
  } else if (user_start_ != nullptr) {
    complete_later(worker_, std::exchange(user_start_, nullptr), false);
  }
  after_completion();
}

void Replay::written(bool ok) {
  CompletionScope scope(owner_);
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

void Replay::read_done(bool ok, grpc::ByteBuffer* bytes) {
  CompletionScope scope(owner_);
  read_busy_ = false;
  if (ok) {
    // The response: the server has committed, and this attempt is the last (the owner marks the
    // call committed). It goes on.
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

void Replay::after_completion() {
  if (closed_) return;
  pump();
  owner_->attempt_progressed();
}

}  // namespace trellis::detail
