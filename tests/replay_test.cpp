// Unit tests of Replay (framework/rpc/src/replay.hpp), the part of a layered client-streaming call
// that keeps copies of the messages written so that a new attempt can be sent them again. Replay
// talks to a fake attempt stream that records the operations it is given and is completed by the
// test, and to a fake owner; it runs on a real runtime worker, because it completes the caller's
// operations through the worker's queue.
#include "replay.hpp"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "trellis/runtime.hpp"

namespace trellis::detail {
namespace {

Bytes bytes_of(std::string_view text) {
  grpc::Slice slice(std::string{text});
  grpc::ByteBuffer buffer(&slice, 1);
  Bytes out;
  out.get()->Swap(&buffer);
  return out;
}

std::string text_of(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return "<unreadable>";
  std::string out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// The stream of one attempt: records what it is asked to do, in order, and leaves each operation
// pending until the test completes it. Replay issues at most one operation of each kind at a time
// (start, write side, read); a second one is a test failure.
class FakeAttempt final : public StreamCore {
 public:
  Worker* bind(Worker* w) override { return w; }
  void start(WriteOp* op) override { issue("start", start_, op); }
  void read(ReadOp* op) override { issue("read", read_, op); }
  void write(Bytes message, bool last, WriteOp* op) override {
    issue("write " + text_of(*message.get()) + (last ? " +half-close" : ""), write_, op);
  }
  void writes_done(WriteOp* op) override { issue("writes_done", write_, op); }
  void finish(FinishOp*) override { ADD_FAILURE() << "Replay finished an attempt's stream"; }
  void cancel() override { ADD_FAILURE() << "Replay cancelled an attempt's stream"; }
  void fail(Status status) override { ADD_FAILURE() << "Replay failed an attempt: " << status; }

  // What was issued since the last call, in order.
  std::vector<std::string> issued() { return std::exchange(issued_, {}); }

  bool start_pending() const { return start_ != nullptr; }
  bool write_pending() const { return write_ != nullptr; }
  bool read_pending() const { return read_ != nullptr; }

  void complete_start(bool ok) {
    if (start_ == nullptr) return ADD_FAILURE() << "no start is pending";
    std::exchange(start_, nullptr)->complete(ok);
  }
  void complete_write(bool ok) {
    if (write_ == nullptr) return ADD_FAILURE() << "no write is pending";
    std::exchange(write_, nullptr)->complete(ok);
  }
  // A message, or the end of the reads (nullopt).
  void complete_read(std::optional<std::string> message) {
    if (read_ == nullptr) return ADD_FAILURE() << "no read is pending";
    Bytes received = bytes_of(message.value_or(""));
    std::exchange(read_, nullptr)->complete(message.has_value(), received.get());
  }

 private:
  template <class Op>
  void issue(std::string what, Op*& slot, Op* op) {
    if (slot != nullptr) ADD_FAILURE() << what << " while another is pending";
    issued_.push_back(std::move(what));
    slot = op;
  }

  std::vector<std::string> issued_;
  WriteOp* start_ = nullptr;
  WriteOp* write_ = nullptr;
  ReadOp* read_ = nullptr;
};

// The owner's side: the call's failures, and the completions Replay reports.
class FakeOwner final : public ReplayOwner {
 public:
  void fail_call(Status status) override { failures.push_back(std::move(status)); }
  void completion_begins() override { ++depth; }
  void completion_ends() override {
    if (depth == 0) return ADD_FAILURE() << "completion_ends() without completion_begins()";
    --depth;
    ++completions;
  }
  void attempt_progressed() override {
    EXPECT_GT(depth, 0) << "progress reported outside a completion";
    ++progressed;
  }

  std::vector<Status> failures;
  int depth = 0;
  int completions = 0;  // completions of operations Replay issued, bracketed
  int progressed = 0;
};

// A caller's write-side operation (start, write, writes_done).
struct UserWrite final : WriteOp {
  void complete(bool ok) override {
    EXPECT_FALSE(result.has_value()) << "completed twice";
    result = ok;
  }
  std::optional<bool> result;  // unset while pending
};

struct UserRead final : ReadOp {
  void complete(bool ok, grpc::ByteBuffer* bytes) override {
    EXPECT_FALSE(got.has_value()) << "completed twice";
    got = ok;
    if (ok) message = text_of(*bytes);
  }
  std::optional<bool> got;  // unset while pending; false: no message
  std::string message;
};

using Issued = std::vector<std::string>;

// Lets the worker run what was queued before: Replay completes the caller's operations by
// posting them to the worker's queue, and the queue runs in order, so once this resumes they have
// all run.
Task<void> settle() {
  co_await boost::asio::post(co_await boost::asio::this_coro::executor, use_task);
}

class ReplayTest : public ::testing::Test {
 protected:
  // Runs `body` as a task on the runtime's only worker, where Replay lives.
  template <class Body>
  void on_worker(Body body) {
    runtime_->block_on(body());
  }

  std::unique_ptr<Runtime> runtime_ = Runtime::single_thread().build();
  FakeOwner owner_;
};

TEST_F(ReplayTest, ForwardsTheCallersOperationsAndCompletesThemFromTheQueue) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite start, write, done;
    UserRead read;
    replay.start(&start);
    replay.write(bytes_of("a"), false, &write);
    replay.read(&read);
    EXPECT_EQ(attempt.issued(), (Issued{"start", "write a", "read"}));

    attempt.complete_start(true);
    attempt.complete_write(true);
    attempt.complete_read("response");
    // Never inline: the caller's task may still be starting the operation.
    EXPECT_FALSE(start.result.has_value());
    EXPECT_FALSE(write.result.has_value());
    EXPECT_FALSE(read.got.has_value());
    co_await settle();
    EXPECT_EQ(start.result, true);
    EXPECT_EQ(write.result, true);
    EXPECT_EQ(read.got, true);
    EXPECT_EQ(read.message, "response");

    replay.writes_done(&done);
    EXPECT_EQ(attempt.issued(), (Issued{"writes_done"}));
    attempt.complete_write(true);
    co_await settle();
    EXPECT_EQ(done.result, true);
    EXPECT_EQ(owner_.completions, 4);
    EXPECT_EQ(owner_.progressed, 4);
    EXPECT_EQ(owner_.depth, 0);
    EXPECT_TRUE(owner_.failures.empty());
    // The server answered: this attempt is the last.
    EXPECT_FALSE(replay.replayable());
  });
}

TEST_F(ReplayTest, ANewAttemptIsSentTheCopiesInOrderAndTheHalfClose) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt first;
    replay.attach(&first);
    for (const char* m : {"one", "two", "three"}) {
      UserWrite w;
      replay.write(bytes_of(m), false, &w);
      first.complete_write(true);
      co_await settle();
      EXPECT_EQ(w.result, true) << m;
    }
    UserWrite done;
    replay.writes_done(&done);
    first.complete_write(true);
    co_await settle();
    EXPECT_EQ(done.result, true);
    EXPECT_EQ(first.issued(), (Issued{"write one", "write two", "write three", "writes_done"}));

    // finish() reads the response: the attempt ends without one, and may be retried.
    UserRead read;
    replay.read(&read);
    EXPECT_EQ(first.issued(), (Issued{"read"}));
    first.complete_read(std::nullopt);
    EXPECT_TRUE(replay.replayable());
    EXPECT_TRUE(replay.may_end(/*finish_asked=*/true, /*released=*/false));
    replay.detach();
    co_await settle();
    EXPECT_FALSE(read.got.has_value()) << "the failure of a retriable attempt reached the caller";

    EXPECT_TRUE(replay.can_attach());
    FakeAttempt second;
    replay.attach(&second);
    // The held read goes out at once, beside the first copy; one write at a time.
    EXPECT_EQ(second.issued(), (Issued{"write one", "read"}));
    second.complete_write(true);
    EXPECT_EQ(second.issued(), (Issued{"write two"}));
    second.complete_write(true);
    // The caller had half-closed: the last copy carries the half-close.
    EXPECT_EQ(second.issued(), (Issued{"write three +half-close"}));
    second.complete_write(true);
    EXPECT_TRUE(second.issued().empty());
    second.complete_read("summary");
    co_await settle();
    EXPECT_EQ(read.got, true);
    EXPECT_EQ(read.message, "summary");
    EXPECT_TRUE(owner_.failures.empty());
  });
}

TEST_F(ReplayTest, AMessageWrittenLastCarriesTheHalfCloseOnEveryAttempt) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt first;
    replay.attach(&first);
    UserWrite a, b;
    replay.write(bytes_of("a"), false, &a);
    first.complete_write(true);
    replay.write(bytes_of("b"), true, &b);
    EXPECT_EQ(first.issued(), (Issued{"write a", "write b +half-close"}));
    first.complete_write(false);  // the attempt broke: b is held
    EXPECT_EQ(first.issued(), (Issued{"read"})) << "a failed write looks for a response";
    first.complete_read(std::nullopt);
    replay.detach();
    co_await settle();
    EXPECT_EQ(a.result, true);
    EXPECT_FALSE(b.result.has_value());

    FakeAttempt second;
    replay.attach(&second);
    EXPECT_EQ(second.issued(), (Issued{"write a"}));
    second.complete_write(true);
    EXPECT_EQ(second.issued(), (Issued{"write b +half-close"}));
    second.complete_write(true);
    EXPECT_TRUE(second.issued().empty()) << "no second half-close";
    co_await settle();
    EXPECT_EQ(b.result, true);
  });
}

TEST_F(ReplayTest, WritingPastTheLimitEndsReplayAndDropsTheCopies) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 5);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite w1, w2, w3;
    replay.write(bytes_of("abc"), false, &w1);
    attempt.complete_write(true);
    EXPECT_TRUE(replay.replayable());
    EXPECT_TRUE(replay.can_attach());

    replay.write(bytes_of("defg"), false, &w2);  // 7 bytes in all
    EXPECT_FALSE(replay.replayable());
    EXPECT_FALSE(replay.can_attach()) << "the copy of the message sent was not dropped";
    attempt.complete_write(true);
    co_await settle();
    EXPECT_EQ(w2.result, true);
    EXPECT_EQ(attempt.issued(), (Issued{"write abc", "write defg"}));

    // Not replayable: a failure is the caller's at once, nothing is held.
    replay.write(bytes_of("h"), false, &w3);
    attempt.complete_write(false);
    EXPECT_EQ(attempt.issued(), (Issued{"write h"})) << "no read ahead";
    co_await settle();
    EXPECT_EQ(w3.result, false);
    EXPECT_FALSE(replay.may_end(false, false));
  });
}

TEST_F(ReplayTest, WritingExactlyTheLimitKeepsTheCallReplayable) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 6);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite w1, w2;
    replay.write(bytes_of("abc"), false, &w1);
    attempt.complete_write(true);
    replay.write(bytes_of("def"), false, &w2);
    attempt.complete_write(true);
    co_await settle();
    EXPECT_TRUE(replay.replayable());
    EXPECT_TRUE(replay.can_attach());
  });
}

TEST_F(ReplayTest, PassingTheLimitBetweenAttemptsKeepsEveryCopyForTheNextOne) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 4);
    FakeAttempt first;
    replay.attach(&first);
    UserWrite w1, w2;
    UserRead read;
    replay.write(bytes_of("abc"), false, &w1);
    first.complete_write(true);
    replay.read(&read);
    first.complete_read(std::nullopt);  // the attempt failed
    replay.detach();
    // The next attempt is decided; a write that passes the limit meanwhile makes it the last one.
    replay.write(bytes_of("de"), false, &w2);
    EXPECT_FALSE(replay.replayable());
    EXPECT_TRUE(replay.can_attach());

    FakeAttempt second;
    replay.attach(&second);
    EXPECT_EQ(second.issued(), (Issued{"write abc", "read"}));
    second.complete_write(true);
    EXPECT_EQ(second.issued(), (Issued{"write de"}));
    EXPECT_FALSE(replay.can_attach()) << "the copies the last attempt took are dropped";
    second.complete_write(true);
    second.complete_read("r");
    co_await settle();
    EXPECT_EQ(w1.result, true);
    EXPECT_EQ(w2.result, true);
    EXPECT_EQ(read.message, "r");
  });
}

TEST_F(ReplayTest, AHeldWriteGoesOnOnTheNextAttempt) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt first;
    replay.attach(&first);
    UserWrite w1, w2;
    replay.write(bytes_of("m1"), false, &w1);
    first.complete_write(true);
    replay.write(bytes_of("m2"), false, &w2);
    first.complete_write(false);
    EXPECT_EQ(first.issued(), (Issued{"write m1", "write m2", "read"}));
    EXPECT_FALSE(replay.may_end(false, false)) << "the read ahead is pending";
    first.complete_read(std::nullopt);
    EXPECT_TRUE(replay.may_end(false, false)) << "the attempt failed: it may be finished";
    co_await settle();
    EXPECT_EQ(w1.result, true);
    EXPECT_FALSE(w2.result.has_value());

    replay.detach();
    FakeAttempt second;
    replay.attach(&second);
    second.complete_write(true);
    co_await settle();
    EXPECT_FALSE(w2.result.has_value()) << "done before the new attempt took m2";
    second.complete_write(true);
    co_await settle();
    EXPECT_EQ(w2.result, true);
    EXPECT_EQ(second.issued(), (Issued{"write m1", "write m2"}));
    EXPECT_TRUE(owner_.failures.empty());
  });
}

TEST_F(ReplayTest, HeldOperationsFailWhenTheCallCloses) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite start, write;
    UserRead read;
    replay.start(&start);
    replay.write(bytes_of("m"), false, &write);
    replay.read(&read);
    attempt.complete_start(false);
    attempt.complete_write(false);
    attempt.complete_read(std::nullopt);
    co_await settle();
    EXPECT_FALSE(start.result.has_value());
    EXPECT_FALSE(write.result.has_value());
    EXPECT_FALSE(read.got.has_value());

    replay.close();  // the layer gave up
    EXPECT_FALSE(start.result.has_value()) << "close() completed an operation inline";
    co_await settle();
    EXPECT_EQ(start.result, false);
    EXPECT_EQ(write.result, false);
    EXPECT_EQ(read.got, false);
    EXPECT_FALSE(replay.can_attach());

    // And so does everything after.
    UserWrite later_write, later_done, later_start;
    UserRead later_read;
    replay.write(bytes_of("n"), false, &later_write);
    replay.writes_done(&later_done);
    replay.start(&later_start);
    replay.read(&later_read);
    co_await settle();
    EXPECT_EQ(later_write.result, false);
    EXPECT_EQ(later_done.result, false);
    EXPECT_EQ(later_start.result, false);
    EXPECT_EQ(later_read.got, false);
    EXPECT_EQ(attempt.issued(), (Issued{"start", "write m", "read"}));
    EXPECT_TRUE(owner_.failures.empty());
  });
}

TEST_F(ReplayTest, ACompletionAfterCloseReachesNobody) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite write;
    replay.write(bytes_of("m"), false, &write);
    replay.close();
    EXPECT_TRUE(replay.busy()) << "the write is still pending on the stream";
    attempt.complete_write(true);
    EXPECT_FALSE(replay.busy());
    co_await settle();
    EXPECT_EQ(write.result, false);  // failed by close(), once
    EXPECT_EQ(owner_.completions, 1) << "the owner must see the completion, to free itself";
    EXPECT_EQ(owner_.progressed, 0);
  });
}

TEST_F(ReplayTest, AResponseReadAfterAFailedWriteGoesToTheNextRead) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite write;
    replay.write(bytes_of("m"), false, &write);
    attempt.complete_write(false);
    // The server may have answered before it read everything: the response is read before the
    // attempt's status would discard it, and it commits the call.
    EXPECT_EQ(attempt.issued(), (Issued{"write m", "read"}));
    attempt.complete_read("early answer");
    EXPECT_FALSE(replay.replayable());
    co_await settle();
    EXPECT_EQ(write.result, false) << "the failed write is the caller's once the call committed";

    UserRead read;
    replay.read(&read);
    EXPECT_TRUE(attempt.issued().empty()) << "the stashed response is delivered, not read again";
    EXPECT_FALSE(read.got.has_value());
    co_await settle();
    EXPECT_EQ(read.got, true);
    EXPECT_EQ(read.message, "early answer");

    UserRead next;
    replay.read(&next);
    EXPECT_EQ(attempt.issued(), (Issued{"read"}));
    attempt.complete_read(std::nullopt);
    co_await settle();
    EXPECT_EQ(next.got, false);
  });
}

TEST_F(ReplayTest, ASecondPendingWriteFailsTheCall) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite first, second, done;
    replay.write(bytes_of("a"), false, &first);
    replay.write(bytes_of("b"), false, &second);
    replay.writes_done(&done);
    co_await settle();
    EXPECT_EQ(second.result, false);
    EXPECT_EQ(done.result, false);
    EXPECT_FALSE(first.result.has_value());
    EXPECT_EQ(attempt.issued(), (Issued{"write a"}));
    EXPECT_EQ(owner_.failures.size(), 2u);
    for (const Status& s : owner_.failures) {
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
    }
    if (owner_.failures.size() == 2) {
      EXPECT_EQ(owner_.failures[0].message(), "a write was started while another is pending");
      EXPECT_EQ(owner_.failures[1].message(), "writes_done() was started while a write is pending");
    }
  });
}

TEST_F(ReplayTest, AWriteAfterWritesDoneFailsTheCall) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserWrite done, write;
    replay.writes_done(&done);
    attempt.complete_write(true);
    replay.write(bytes_of("late"), false, &write);
    co_await settle();
    EXPECT_EQ(done.result, true);
    EXPECT_EQ(write.result, false);
    EXPECT_EQ(attempt.issued(), (Issued{"writes_done"}));
    EXPECT_EQ(owner_.failures.size(), 1u);
    if (owner_.failures.size() == 1) {
      EXPECT_EQ(owner_.failures[0].code(), StatusCode::kFailedPrecondition);
      EXPECT_EQ(owner_.failures[0].message(), "write() after writes_done()");
    }
  });
}

TEST_F(ReplayTest, ASecondPendingReadOrStartFailsTheCall) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    UserRead read1, read2;
    UserWrite start1, start2;
    replay.read(&read1);
    replay.read(&read2);
    replay.start(&start1);
    replay.start(&start2);
    co_await settle();
    EXPECT_EQ(read2.got, false);
    EXPECT_EQ(start2.result, false);
    EXPECT_FALSE(read1.got.has_value());
    EXPECT_FALSE(start1.result.has_value());
    EXPECT_EQ(attempt.issued(), (Issued{"read", "start"}));
    EXPECT_EQ(owner_.failures.size(), 2u);
    if (owner_.failures.size() == 2) {
      EXPECT_EQ(owner_.failures[0].message(), "a read was started while another is pending");
      EXPECT_EQ(owner_.failures[1].message(), "start() was called while another is pending");
    }
  });
}

TEST_F(ReplayTest, StartWaitsForAnAttemptAndIsHeldThroughAFailedOne) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    UserWrite start;
    replay.start(&start);  // no attempt yet: it waits
    co_await settle();
    EXPECT_FALSE(start.result.has_value());

    FakeAttempt first;
    replay.attach(&first);
    EXPECT_EQ(first.issued(), (Issued{"start"}));
    first.complete_start(false);  // the call could not start: retriable, so held
    EXPECT_EQ(first.issued(), (Issued{"read"}));
    first.complete_read(std::nullopt);
    EXPECT_TRUE(replay.may_end(false, false));
    replay.detach();
    co_await settle();
    EXPECT_FALSE(start.result.has_value());

    FakeAttempt second;
    replay.attach(&second);
    EXPECT_EQ(second.issued(), (Issued{"start"}));
    second.complete_start(true);
    co_await settle();
    EXPECT_EQ(start.result, true);
  });
}

TEST_F(ReplayTest, AFailedStartOfTheLastAttemptFailsTheStart) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    replay.stop_replaying();  // committed: this attempt is the last
    UserWrite start;
    replay.start(&start);
    attempt.complete_start(false);
    co_await settle();
    EXPECT_EQ(start.result, false);
    EXPECT_EQ(attempt.issued(), (Issued{"start"}));
  });
}

TEST_F(ReplayTest, ADetachedAttemptIsSentNothingMore) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt first;
    replay.attach(&first);
    UserWrite w1;
    replay.write(bytes_of("a"), false, &w1);
    first.complete_write(true);
    replay.detach();  // its finish is under way

    UserWrite w2, done;
    UserRead read;
    replay.write(bytes_of("b"), false, &w2);
    replay.read(&read);
    co_await settle();
    EXPECT_EQ(first.issued(), (Issued{"write a"}));
    EXPECT_FALSE(w2.result.has_value());
    EXPECT_FALSE(read.got.has_value());

    FakeAttempt second;
    replay.attach(&second);
    EXPECT_EQ(second.issued(), (Issued{"write a", "read"}));
    second.complete_write(true);
    EXPECT_EQ(second.issued(), (Issued{"write b"}));
    second.complete_write(true);
    replay.writes_done(&done);
    EXPECT_EQ(second.issued(), (Issued{"writes_done"}));
    second.complete_write(true);
    second.complete_read("r");
    co_await settle();
    EXPECT_EQ(w2.result, true);
    EXPECT_EQ(done.result, true);
    EXPECT_EQ(read.got, true);
    EXPECT_TRUE(first.issued().empty());
  });
}

TEST_F(ReplayTest, MayEndOnlyWhenNothingIsPendingOnTheAttempt) {
  on_worker([&]() -> Task<void> {
    Replay replay(&owner_, current_worker(), 1024);
    FakeAttempt attempt;
    replay.attach(&attempt);
    EXPECT_FALSE(replay.may_end(false, false));
    EXPECT_TRUE(replay.may_end(false, /*released=*/true));
    EXPECT_TRUE(replay.may_end(/*finish_asked=*/true, false)) << "nothing was asked";

    UserWrite write;
    replay.write(bytes_of("m"), false, &write);
    EXPECT_TRUE(replay.busy());
    EXPECT_FALSE(replay.may_end(true, true)) << "a write is pending on the stream";
    attempt.complete_write(true);
    EXPECT_TRUE(replay.may_end(true, false));

    UserWrite done;
    UserRead read;
    replay.writes_done(&done);
    replay.read(&read);
    EXPECT_FALSE(replay.may_end(true, false));
    attempt.complete_write(true);
    EXPECT_FALSE(replay.may_end(true, false)) << "a read is pending on the stream";
    attempt.complete_read("r");
    EXPECT_TRUE(replay.may_end(true, false));
    EXPECT_FALSE(replay.may_end(false, false));
    co_await settle();
    EXPECT_EQ(done.result, true);
    EXPECT_EQ(read.got, true);
  });
}

}  // namespace
}  // namespace trellis::detail
