// Internal: the replay of a client-streaming call's messages to a new attempt of the call.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <cstddef>
#include <deque>
#include <optional>

#include "trellis/detail/serialization.hpp"
#include "trellis/detail/stream_core.hpp"
#include "trellis/status.hpp"

namespace trellis::detail {

class Worker;

// What a Replay needs from the stream that owns it (LayeredClientStream). All of it is called on
// the stream's worker.
class ReplayOwner {
 public:
  // The caller broke the stream's rules (a second write or read while one is pending): the call
  // fails with `status` (as StreamCore::fail does).
  virtual void fail_call(Status status) = 0;
  // Every completion of an operation the Replay issued on an attempt's stream runs between these
  // two calls. The owner is not freed in between; the end is where it may free itself (and the
  // Replay with it) if the completion let go of the last thing that kept it.
  virtual void completion_begins() = 0;
  virtual void completion_ends() = 0;
  // A completion changed the state of the attempt or of the caller's operations: the owner may
  // now be able to end the attempt (Replay::may_end).
  virtual void attempt_progressed() = 0;

 protected:
  ~ReplayOwner() = default;
};

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
  // `worker`: the stream's worker, where the user's operations are completed. `limit`: the most
  // bytes of messages kept for replay (Call::enable_replay).
  Replay(ReplayOwner* owner, Worker* worker, std::size_t limit)
      : owner_(owner), worker_(worker), limit_(limit) {}
  Replay(const Replay&) = delete;
  Replay& operator=(const Replay&) = delete;

  // The user's operations, forwarded by the stream.
  void start(WriteOp* op);
  void read(ReadOp* op);
  void write(Bytes message, bool last, WriteOp* op);
  void writes_done(WriteOp* op);

  // An attempt starts on `real`: it is sent the copies, then what the user asks.
  void attach(StreamCore* real);
  // The attempt's stream is being finished: nothing more is sent to it.
  void detach() { real_ = nullptr; }
  // The stack has returned: no more attempts. Held and later operations fail.
  void close();

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

  void misuse(WriteOp* op, const char* what);
  void deliver(ReadOp* op, Bytes message);
  void trim();
  void pump();
  void attempt_failed();
  void started(bool ok);
  void written(bool ok);
  void read_done(bool ok, grpc::ByteBuffer* bytes);
  void after_completion();

  ReplayOwner* owner_;
  Worker* worker_;
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

}  // namespace trellis::detail
