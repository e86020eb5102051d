// Tests of the synchronisation primitives (trellis/sync/*.hpp): channels and locks used by tasks
// on different workers, their close and drop paths, and their cancellation safety. Part of the
// framework suite that the ThreadSanitizer build runs.
//
// Two ways to wait here. Tasks await the primitives on chosen workers and are joined, bounded by
// run_bounded. Tests that need an operation to be pending at a known point start it from the
// test's thread with a callback bound to a worker's executor: the operation is registered when
// the initiating call returns, so no sleep is needed to know it waits. Its cancellation is then
// emitted on that worker (Asio cancellation signals are not thread-safe).
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/system/system_error.hpp>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "end_to_end.hpp"
#include "trellis/runtime.hpp"
#include "trellis/sync/broadcast.hpp"
#include "trellis/sync/mpsc.hpp"
#include "trellis/sync/mutex.hpp"
#include "trellis/sync/notify.hpp"
#include "trellis/sync/oneshot.hpp"
#include "trellis/sync/semaphore.hpp"
#include "trellis/sync/watch.hpp"
#include "trellis/timer.hpp"

namespace trellis::sync {
namespace {

using namespace std::chrono_literals;
using boost::asio::experimental::awaitable_operators::operator||;
using boost::system::error_code;
using testing::kWaitBound;

constexpr auto tuple_task = boost::asio::as_tuple(use_task);
const error_code kAborted = boost::asio::error::operation_aborted;

std::unique_ptr<Runtime> make_runtime(std::size_t workers = 2) {
  return Runtime::multi_thread().worker_threads(workers).build();
}

template <class T>
T run(Runtime& rt, Task<T> task) {
  return testing::run_bounded(rt, std::move(task));
}

// Joins `handle`, expecting the task to have ended with system_error(`code`).
template <class T>
Task<void> expect_join_error(JoinHandle<T> handle, error_code code) {
  try {
    co_await handle.join();
    ADD_FAILURE() << "the task succeeded; expected " << code.message();
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
  }
}

// The outcome of an operation started with a callback (Pending::handler()), delivered on the
// worker the callback is bound to.
template <class... Args>
class Pending {
 public:
  explicit Pending(Executor ex) : ex_(ex), future_(promise_.get_future()) {}

  // The operation's completion handler: bound to the worker, cancellable through cancel().
  auto handler() {
    return boost::asio::bind_cancellation_slot(
        signal_.slot(), boost::asio::bind_executor(ex_, [this](Args... args) {
          EXPECT_TRUE(ex_.running_in_this_thread());
          promise_.set_value(std::tuple<Args...>(std::move(args)...));
        }));
  }
  // Emits terminal cancellation on the handler's worker.
  void cancel() {
    boost::asio::post(ex_, [this] { signal_.emit(boost::asio::cancellation_type::terminal); });
  }
  bool done() const { return future_.wait_for(0s) == std::future_status::ready; }
  // Waits (bounded) for the outcome.
  std::tuple<Args...> get() {
    if (future_.wait_for(kWaitBound) != std::future_status::ready) {
      ADD_FAILURE() << "the operation did not complete";
      std::abort();
    }
    return future_.get();
  }

 private:
  Executor ex_;
  boost::asio::cancellation_signal signal_;
  std::promise<std::tuple<Args...>> promise_;
  std::future<std::tuple<Args...>> future_;
};

// ---- error category ----

TEST(SyncErrorTest, CodesHaveCategoryAndMessages) {
  error_code ec = Errc::closed;
  EXPECT_EQ(ec.category(), sync_category());
  EXPECT_STREQ(ec.category().name(), "trellis.sync");
  EXPECT_NE(ec.message().find("closed"), std::string::npos);
  EXPECT_NE(error_code(Errc::lagged).message().find("lagged"), std::string::npos);
  EXPECT_NE(error_code(Errc::full).message().find("full"), std::string::npos);
  EXPECT_NE(error_code(Errc::empty).message().find("nothing"), std::string::npos);
  EXPECT_NE(ec, error_code(Errc::lagged));
}

// ---- mpsc ----

TEST(SyncMpscTest, ZeroCapacityThrows) {
  EXPECT_THROW(mpsc::channel<int>(0), std::invalid_argument);
}

TEST(SyncMpscTest, SendAndReceiveOnDifferentWorkersInOrder) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(4);
  auto producer = rt->spawn(rt->executor(0), [](mpsc::Sender<int> tx) -> Task<void> {
    for (int i = 0; i < 1000; ++i) co_await tx.async_send(i);
  }(std::move(tx)));
  auto consumer = rt->spawn(rt->executor(1), [](mpsc::Receiver<int> rx) -> Task<int> {
    int expected = 0;
    for (;;) {
      auto [ec, v] = co_await rx.async_receive(tuple_task);
      if (ec == Errc::closed) break;
      EXPECT_FALSE(ec) << ec.message();
      EXPECT_EQ(v, expected);
      ++expected;
    }
    co_return expected;
  }(std::move(rx)));
  int received = run(*rt, [](JoinHandle<void> p, JoinHandle<int> c) -> Task<int> {
    co_await p.join();
    co_return co_await c.join();
  }(std::move(producer), std::move(consumer)));
  EXPECT_EQ(received, 1000);
}

TEST(SyncMpscTest, TrySendReportsFullAndKeepsTheValue) {
  auto [tx, rx] = mpsc::channel<std::string>(2);
  EXPECT_FALSE(tx.try_send(std::string("a")));
  EXPECT_FALSE(tx.try_send(std::string("b")));
  std::string c = "c";
  EXPECT_EQ(tx.try_send(std::move(c)), Errc::full);
  EXPECT_EQ(c, "c");  // not moved from
  EXPECT_EQ(rx.size(), 2u);
  EXPECT_EQ(rx.capacity(), 2u);
  std::string out;
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, "a");
  EXPECT_FALSE(tx.try_send(c));
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, "b");
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, "c");
  EXPECT_EQ(rx.try_receive(out), Errc::empty);
}

TEST(SyncMpscTest, FullChannelMakesSendersWaitInOrder) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(1);
  ASSERT_FALSE(tx.try_send(0));
  // Three sends wait, registered in this order.
  std::vector<std::unique_ptr<Pending<error_code>>> sends;
  for (int i = 1; i <= 3; ++i) {
    sends.push_back(std::make_unique<Pending<error_code>>(rt->executor(i % 2)));
    tx.async_send(i, sends.back()->handler());
  }
  EXPECT_EQ(tx.try_send(99), Errc::full);  // waiting senders keep their turn
  for (int i = 0; i <= 3; ++i) {
    Pending<error_code, int> recv(rt->executor(1));
    rx.async_receive(recv.handler());
    auto [ec, v] = recv.get();
    EXPECT_FALSE(ec);
    EXPECT_EQ(v, i);
    if (i < 3) {
      auto [send_ec] = sends[i]->get();  // receiving value i let send i+1 in
      EXPECT_FALSE(send_ec);
    }
  }
  EXPECT_EQ(rx.size(), 0u);
}

TEST(SyncMpscTest, CloseDrainsQueuedValuesThenReportsClosed) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(2);
  ASSERT_FALSE(tx.try_send(1));
  ASSERT_FALSE(tx.try_send(2));
  Pending<error_code> blocked(rt->executor(0));
  tx.async_send(3, blocked.handler());
  rx.close();
  EXPECT_EQ(std::get<0>(blocked.get()), Errc::closed);
  EXPECT_TRUE(tx.is_closed());
  EXPECT_EQ(tx.try_send(4), Errc::closed);
  run(*rt, [](mpsc::Sender<int>& tx, mpsc::Receiver<int>& rx) -> Task<void> {
    // The default token throws system_error carrying the code.
    try {
      co_await tx.async_send(5);
      ADD_FAILURE() << "send on a closed channel succeeded";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), Errc::closed);
    }
    EXPECT_EQ(co_await rx.async_receive(), 1);
    EXPECT_EQ(co_await rx.async_receive(), 2);
    auto [ec, v] = co_await rx.async_receive(tuple_task);
    EXPECT_EQ(ec, Errc::closed);
    error_code redirected;
    co_await rx.async_receive(boost::asio::redirect_error(use_task, redirected));
    EXPECT_EQ(redirected, Errc::closed);
  }(tx, rx));
  int out = 0;
  EXPECT_EQ(rx.try_receive(out), Errc::closed);
}

TEST(SyncMpscTest, DroppingEverySenderWakesTheReceiverWithClosed) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(2);
  auto tx2 = std::make_unique<mpsc::Sender<int>>(tx);
  Pending<error_code, int> recv(rt->executor(1));
  rx.async_receive(recv.handler());
  { auto moved = std::move(tx); }  // one sender left
  ASSERT_FALSE(tx2->try_send(7));
  auto [ec, v] = recv.get();
  EXPECT_FALSE(ec);
  EXPECT_EQ(v, 7);
  Pending<error_code, int> recv2(rt->executor(0));
  rx.async_receive(recv2.handler());
  EXPECT_FALSE(recv2.done());
  tx2.reset();
  EXPECT_EQ(std::get<0>(recv2.get()), Errc::closed);
}

TEST(SyncMpscTest, DroppingTheReceiverFailsWaitingSenders) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<std::shared_ptr<int>>(1);
  auto value = std::make_shared<int>(1);
  ASSERT_FALSE(tx.try_send(value));
  Pending<error_code> blocked(rt->executor(1));
  tx.async_send(value, blocked.handler());
  { auto dropped = std::move(rx); }
  EXPECT_EQ(std::get<0>(blocked.get()), Errc::closed);
  EXPECT_EQ(value.use_count(), 1);  // queued and waiting values were destroyed
  EXPECT_EQ(tx.try_send(value), Errc::closed);
}

TEST(SyncMpscTest, CancelledReceiveLosesNoValue) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(2);
  Pending<error_code, int> recv(rt->executor(1));
  rx.async_receive(recv.handler());
  recv.cancel();
  EXPECT_EQ(std::get<0>(recv.get()), kAborted);
  ASSERT_FALSE(tx.try_send(42));
  int out = 0;
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, 42);
}

TEST(SyncMpscTest, AbortedReceivingTaskLosesNoValue) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(2);
  auto task = rt->spawn(rt->executor(1), [](mpsc::Receiver<int>& rx) -> Task<int> {
    co_return co_await rx.async_receive();
  }(rx));
  task.abort();
  run(*rt, expect_join_error(std::move(task), kAborted));
  ASSERT_FALSE(tx.try_send(5));
  int out = 0;
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, 5);
}

TEST(SyncMpscTest, CancelledSendDoesNotDeliver) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(1);
  ASSERT_FALSE(tx.try_send(1));
  auto task = rt->spawn(rt->executor(1),
                        [](mpsc::Sender<int> tx) -> Task<void> { co_await tx.async_send(2); }(tx));
  task.abort();
  run(*rt, expect_join_error(std::move(task), kAborted));
  int out = 0;
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, 1);
  EXPECT_EQ(rx.try_receive(out), Errc::empty);
}

TEST(SyncMpscTest, ReceiveWithTimeoutRacesLoseAndDuplicateNothing) {
  auto rt = make_runtime();
  auto [tx, rx] = mpsc::channel<int>(2);
  static constexpr int kCount = 3000;
  auto producer = rt->spawn(rt->executor(0), [](mpsc::Sender<int> tx) -> Task<void> {
    for (int i = 0; i < kCount; ++i) co_await tx.async_send(i);
  }(std::move(tx)));
  auto consumer = rt->spawn(rt->executor(1), [](mpsc::Receiver<int> rx) -> Task<int> {
    int expected = 0;
    int timeouts = 0;
    for (;;) {
      // The timer is the cancellation trigger, racing with the sends, not a synchronisation.
      auto r = co_await (rx.async_receive(tuple_task) || sleep_for(std::chrono::microseconds(20)));
      if (r.index() == 1) {
        ++timeouts;
        continue;
      }
      auto [ec, v] = std::get<0>(r);
      if (ec == Errc::closed) break;
      EXPECT_FALSE(ec) << ec.message();
      EXPECT_EQ(v, expected);
      expected = v + 1;
    }
    co_return expected;
  }(std::move(rx)));
  int received = run(*rt, [](JoinHandle<void> p, JoinHandle<int> c) -> Task<int> {
    co_await p.join();
    co_return co_await c.join();
  }(std::move(producer), std::move(consumer)));
  EXPECT_EQ(received, kCount);
}

TEST(SyncMpscTest, FourProducersOnFourWorkersStress) {
  auto rt = make_runtime(4);
  static constexpr int kProducers = 4;
  static constexpr std::int64_t kPerProducer = 10000;
  auto [tx, rx] = mpsc::channel<std::int64_t>(16);
  std::vector<JoinHandle<void>> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.push_back(
        rt->spawn(rt->executor(p), [](mpsc::Sender<std::int64_t> tx, int p) -> Task<void> {
          for (std::int64_t i = 0; i < kPerProducer; ++i) {
            co_await tx.async_send(p * kPerProducer + i);
          }
        }(tx, p)));
  }
  { auto dropped = std::move(tx); }
  struct Totals {
    std::int64_t count = 0;
    std::int64_t sum = 0;
  };
  auto consumer = rt->spawn(rt->executor(1), [](mpsc::Receiver<std::int64_t> rx) -> Task<Totals> {
    Totals t;
    std::vector<std::int64_t> next(kProducers, 0);
    for (;;) {
      auto [ec, v] = co_await rx.async_receive(tuple_task);
      if (ec) {
        EXPECT_EQ(ec, Errc::closed);
        break;
      }
      int p = static_cast<int>(v / kPerProducer);
      EXPECT_EQ(v % kPerProducer, next[p]) << "producer " << p << " out of order";
      next[p] = v % kPerProducer + 1;
      ++t.count;
      t.sum += v;
    }
    co_return t;
  }(std::move(rx)));
  Totals t = run(*rt, [](std::vector<JoinHandle<void>> ps, JoinHandle<Totals> c) -> Task<Totals> {
    for (auto& p : ps) co_await p.join();
    co_return co_await c.join();
  }(std::move(producers), std::move(consumer)));
  const std::int64_t n = kProducers * kPerProducer;
  EXPECT_EQ(t.count, n);
  EXPECT_EQ(t.sum, n * (n - 1) / 2);
}

TEST(SyncMpscTest, CallbackWithoutTrellisExecutorCompletes) {
  // A handler with no associated executor completes on Asio's system executor.
  auto [tx, rx] = mpsc::channel<int>(1);
  std::promise<std::tuple<error_code, int>> done;
  rx.async_receive(
      [&done](error_code ec, int v) { done.set_value(std::tuple<error_code, int>(ec, v)); });
  ASSERT_FALSE(tx.try_send(3));
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(kWaitBound), std::future_status::ready);
  auto [ec, v] = f.get();
  EXPECT_FALSE(ec);
  EXPECT_EQ(v, 3);
}

// ---- oneshot ----

TEST(SyncOneshotTest, SendsOneValueAcrossWorkers) {
  auto rt = make_runtime();
  auto [tx, rx] = oneshot::channel<std::string>();
  auto receiver = rt->spawn(rt->executor(1), [](oneshot::Receiver<std::string> rx) -> Task<void> {
    EXPECT_EQ(co_await rx.async_receive(), "hello");
    auto [ec, v] = co_await rx.async_receive(tuple_task);  // already taken
    EXPECT_EQ(ec, Errc::closed);
  }(std::move(rx)));
  auto sender = rt->spawn(rt->executor(0), [](oneshot::Sender<std::string> tx) -> Task<void> {
    EXPECT_FALSE(tx.send(std::string("hello")));
    EXPECT_EQ(tx.send(std::string("again")), Errc::closed);
    co_return;
  }(std::move(tx)));
  run(*rt, [](JoinHandle<void> a, JoinHandle<void> b) -> Task<void> {
    co_await a.join();
    co_await b.join();
  }(std::move(receiver), std::move(sender)));
}

TEST(SyncOneshotTest, SenderDroppedWithoutSendingReportsClosed) {
  auto rt = make_runtime();
  auto [tx, rx] = oneshot::channel<int>();
  Pending<error_code, int> recv(rt->executor(1));
  rx.async_receive(recv.handler());
  EXPECT_FALSE(recv.done());
  { auto dropped = std::move(tx); }
  EXPECT_EQ(std::get<0>(recv.get()), Errc::closed);
  run(*rt, [](oneshot::Receiver<int>& rx) -> Task<void> {
    try {
      co_await rx.async_receive();
      ADD_FAILURE() << "received from a dropped sender";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), Errc::closed);
    }
  }(rx));
}

TEST(SyncOneshotTest, ReceiverDroppedMakesSendFailKeepingTheValue) {
  auto [tx, rx] = oneshot::channel<std::string>();
  EXPECT_FALSE(tx.is_closed());
  { auto dropped = std::move(rx); }
  EXPECT_TRUE(tx.is_closed());
  std::string v = "kept";
  EXPECT_EQ(tx.send(std::move(v)), Errc::closed);
  EXPECT_EQ(v, "kept");
}

TEST(SyncOneshotTest, TryReceiveReportsEmptyValueAndClosed) {
  auto [tx, rx] = oneshot::channel<int>();
  int out = 0;
  EXPECT_EQ(rx.try_receive(out), Errc::empty);
  EXPECT_FALSE(tx.send(9));
  EXPECT_FALSE(rx.try_receive(out));
  EXPECT_EQ(out, 9);
  EXPECT_EQ(rx.try_receive(out), Errc::closed);
  auto [tx2, rx2] = oneshot::channel<int>();
  { auto dropped = std::move(tx2); }
  EXPECT_EQ(rx2.try_receive(out), Errc::closed);
}

TEST(SyncOneshotTest, CancelledReceiveLeavesTheValue) {
  auto rt = make_runtime();
  auto [tx, rx] = oneshot::channel<int>();
  auto task = rt->spawn(rt->executor(1), [](oneshot::Receiver<int>& rx) -> Task<int> {
    co_return co_await rx.async_receive();
  }(rx));
  task.abort();
  run(*rt, expect_join_error(std::move(task), kAborted));
  EXPECT_FALSE(tx.send(11));
  EXPECT_EQ(run(*rt,
                [](oneshot::Receiver<int>& rx) -> Task<int> {
                  co_return co_await rx.async_receive();
                }(rx)),
            11);
}

// ---- watch ----

TEST(SyncWatchTest, WatchersOnOtherWorkersSeeTheLatestValue) {
  auto rt = make_runtime(4);
  auto [tx, rx] = watch::channel<int>(0);
  static constexpr int kLast = 2000;
  std::vector<JoinHandle<int>> watchers;
  for (std::size_t i = 0; i < 3; ++i) {
    watchers.push_back(rt->spawn(rt->executor(i + 1), [](watch::Receiver<int> rx) -> Task<int> {
      int last = 0;
      int wakeups = 0;
      while (last != kLast) {
        co_await rx.async_changed();
        ++wakeups;
        int v = *rx.borrow_and_update();
        EXPECT_GE(v, last);  // never goes back
        last = v;
      }
      auto [ec] = co_await rx.async_changed(tuple_task);  // sender gone, all seen
      EXPECT_EQ(ec, Errc::closed);
      co_return wakeups;
    }(rx)));
  }
  { auto dropped = std::move(rx); }
  auto sender = rt->spawn(rt->executor(0), [](watch::Sender<int> tx) -> Task<void> {
    for (int i = 1; i <= kLast; ++i) tx.send(i);
    co_return;
  }(std::move(tx)));
  run(*rt, [](JoinHandle<void> s, std::vector<JoinHandle<int>> ws) -> Task<void> {
    co_await s.join();
    for (auto& w : ws) {
      int wakeups = co_await w.join();
      EXPECT_GE(wakeups, 1);
      EXPECT_LE(wakeups, kLast);
    }
  }(std::move(sender), std::move(watchers)));
}

TEST(SyncWatchTest, VersionsSeenAndBorrow) {
  auto rt = make_runtime();
  auto [tx, rx] = watch::channel<std::string>("a");
  EXPECT_FALSE(rx.has_changed());
  EXPECT_EQ(*rx.borrow(), "a");
  EXPECT_EQ(tx.receiver_count(), 1u);
  tx.send("b");
  EXPECT_TRUE(rx.has_changed());
  EXPECT_EQ(rx.get(), "b");
  EXPECT_TRUE(rx.has_changed());  // get() does not mark it seen
  EXPECT_EQ(*rx.borrow_and_update(), "b");
  EXPECT_FALSE(rx.has_changed());
  auto late = tx.subscribe();
  EXPECT_EQ(tx.receiver_count(), 2u);
  EXPECT_FALSE(late.has_changed());
  tx.send_modify([](std::string& s) { s += "c"; });
  EXPECT_EQ(*tx.borrow(), "bc");
  auto copy = late;  // same position
  EXPECT_TRUE(copy.has_changed());
  run(*rt, [](watch::Receiver<std::string>& rx) -> Task<void> {
    co_await rx.async_changed();  // unseen version: at once
    EXPECT_EQ(rx.get(), "bc");
    EXPECT_FALSE(rx.has_changed());
  }(late));
}

TEST(SyncWatchTest, SenderDroppedReportsClosedAfterTheLastVersion) {
  auto rt = make_runtime();
  auto [tx, rx] = watch::channel<int>(0);
  auto rx2 = rx;
  Pending<error_code> pending(rt->executor(1));
  rx2.async_changed(pending.handler());
  tx.send(1);
  EXPECT_FALSE(std::get<0>(pending.get()));
  Pending<error_code> pending2(rt->executor(1));
  rx2.async_changed(pending2.handler());
  { auto dropped = std::move(tx); }
  EXPECT_EQ(std::get<0>(pending2.get()), Errc::closed);
  run(*rt, [](watch::Receiver<int>& rx) -> Task<void> {
    co_await rx.async_changed();  // version 1 was not seen yet
    try {
      co_await rx.async_changed();
      ADD_FAILURE() << "changed after the sender was dropped";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), Errc::closed);
    }
    EXPECT_EQ(rx.get(), 1);  // the value stays readable
  }(rx));
}

TEST(SyncWatchTest, CancelledWaitMarksNothingSeen) {
  auto rt = make_runtime();
  auto [tx, rx] = watch::channel<int>(0);
  Pending<error_code> pending(rt->executor(1));
  rx.async_changed(pending.handler());
  pending.cancel();
  EXPECT_EQ(std::get<0>(pending.get()), kAborted);
  tx.send(1);
  EXPECT_TRUE(rx.has_changed());
}

TEST(SyncWatchTest, DroppedReceiverCompletesItsWait) {
  auto rt = make_runtime();
  auto [tx, rx] = watch::channel<int>(0);
  auto other = tx.subscribe();
  Pending<error_code> mine(rt->executor(1));
  Pending<error_code> theirs(rt->executor(0));
  rx.async_changed(mine.handler());
  other.async_changed(theirs.handler());
  { auto dropped = std::move(rx); }
  EXPECT_EQ(std::get<0>(mine.get()), Errc::closed);
  EXPECT_FALSE(theirs.done());
  tx.send(1);
  EXPECT_FALSE(std::get<0>(theirs.get()));
}

// ---- broadcast ----

TEST(SyncBroadcastTest, ZeroCapacityThrows) {
  EXPECT_THROW(broadcast::channel<int>(0), std::invalid_argument);
}

TEST(SyncBroadcastTest, EveryReceiverOnEveryWorkerSeesEveryValue) {
  auto rt = make_runtime(4);
  static constexpr int kCount = 500;
  auto [tx, rx] = broadcast::channel<int>(kCount);
  std::vector<JoinHandle<int>> receivers;
  for (std::size_t i = 0; i < 3; ++i) {
    receivers.push_back(
        rt->spawn(rt->executor(i + 1), [](broadcast::Receiver<int> rx) -> Task<int> {
          int next = 0;
          for (;;) {
            auto [ec, v] = co_await rx.async_receive(tuple_task);
            if (ec == Errc::closed) break;
            EXPECT_FALSE(ec) << ec.message();
            EXPECT_EQ(v, next);
            next = v + 1;
          }
          co_return next;
        }(i == 0 ? std::move(rx) : tx.subscribe())));
  }
  auto sender = rt->spawn(rt->executor(0), [](broadcast::Sender<int> tx) -> Task<void> {
    for (int i = 0; i < kCount; ++i) EXPECT_EQ(tx.send(i), 3u);
    co_return;
  }(std::move(tx)));
  run(*rt, [](JoinHandle<void> s, std::vector<JoinHandle<int>> rs) -> Task<void> {
    co_await s.join();
    for (auto& r : rs) EXPECT_EQ(co_await r.join(), kCount);
  }(std::move(sender), std::move(receivers)));
}

TEST(SyncBroadcastTest, LaggingReceiverGetsLaggedThenTheOldestRetained) {
  auto rt = make_runtime();
  auto [tx, rx] = broadcast::channel<int>(4);
  for (int i = 0; i < 10; ++i) tx.send(i);
  EXPECT_EQ(rx.pending(), 10u);
  run(*rt, [](broadcast::Receiver<int>& rx) -> Task<void> {
    auto [ec, v] = co_await rx.async_receive(tuple_task);
    EXPECT_EQ(ec, Errc::lagged);
    EXPECT_EQ(rx.lagged_by(), 6u);
    for (int i = 6; i < 10; ++i) EXPECT_EQ(co_await rx.async_receive(), i);
    try {
      co_await (rx.async_receive() || sleep_for(1ms));  // nothing more: the timer wins
    } catch (const boost::system::system_error& e) {
      ADD_FAILURE() << e.what();
    }
  }(rx));
  tx.send(10);
  run(*rt, [](broadcast::Receiver<int>& rx) -> Task<void> {
    EXPECT_EQ(co_await rx.async_receive(), 10);  // the timed-out receive took nothing
  }(rx));
}

TEST(SyncBroadcastTest, LaggedIsThrownByTheDefaultToken) {
  auto rt = make_runtime();
  auto [tx, rx] = broadcast::channel<int>(1);
  tx.send(1);
  tx.send(2);
  run(*rt, [](broadcast::Receiver<int>& rx) -> Task<void> {
    try {
      co_await rx.async_receive();
      ADD_FAILURE() << "no lag reported";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), Errc::lagged);
    }
    EXPECT_EQ(rx.lagged_by(), 1u);
    EXPECT_EQ(co_await rx.async_receive(), 2);
  }(rx));
}

TEST(SyncBroadcastTest, SubscriberSeesOnlyLaterValuesAndCopiesShareThePosition) {
  auto [tx, rx] = broadcast::channel<int>(8);
  tx.send(1);
  auto late = tx.subscribe();
  EXPECT_EQ(tx.receiver_count(), 2u);
  EXPECT_EQ(late.pending(), 0u);
  tx.send(2);
  EXPECT_EQ(late.pending(), 1u);
  auto copy = rx;
  EXPECT_EQ(copy.pending(), 2u);
  EXPECT_EQ(tx.receiver_count(), 3u);
}

TEST(SyncBroadcastTest, LastSenderDroppedClosesAfterRetainedValues) {
  auto rt = make_runtime();
  auto [tx, rx] = broadcast::channel<int>(4);
  auto tx2 = tx;
  auto rx2 = tx.subscribe();
  Pending<error_code, int> pending(rt->executor(1));
  rx2.async_receive(pending.handler());
  tx.send(1);
  { auto dropped = std::move(tx); }
  { auto dropped = std::move(tx2); }
  auto [ec, v] = pending.get();
  EXPECT_FALSE(ec);
  EXPECT_EQ(v, 1);
  Pending<error_code, int> closed(rt->executor(0));
  rx2.async_receive(closed.handler());
  EXPECT_EQ(std::get<0>(closed.get()), Errc::closed);
  run(*rt, [](broadcast::Receiver<int>& rx) -> Task<void> {
    EXPECT_EQ(co_await rx.async_receive(), 1);
    auto [ec, v] = co_await rx.async_receive(tuple_task);
    EXPECT_EQ(ec, Errc::closed);
  }(rx));
}

TEST(SyncBroadcastTest, CancelledReceiveConsumesNothing) {
  auto rt = make_runtime();
  auto [tx, rx] = broadcast::channel<int>(4);
  Pending<error_code, int> pending(rt->executor(1));
  rx.async_receive(pending.handler());
  pending.cancel();
  EXPECT_EQ(std::get<0>(pending.get()), kAborted);
  tx.send(3);
  EXPECT_EQ(rx.pending(), 1u);
}

TEST(SyncBroadcastTest, DroppedReceiverCompletesItsWait) {
  auto rt = make_runtime();
  auto [tx, rx] = broadcast::channel<int>(4);
  Pending<error_code, int> pending(rt->executor(1));
  rx.async_receive(pending.handler());
  { auto dropped = std::move(rx); }
  EXPECT_EQ(std::get<0>(pending.get()), Errc::closed);
  EXPECT_EQ(tx.receiver_count(), 0u);
  EXPECT_EQ(tx.send(1), 0u);
}

TEST(SyncBroadcastTest, ReceiveWithTimeoutRacesLoseNothing) {
  auto rt = make_runtime();
  static constexpr int kCount = 3000;
  auto [tx, rx] = broadcast::channel<int>(kCount);
  auto consumer = rt->spawn(rt->executor(1), [](broadcast::Receiver<int> rx) -> Task<int> {
    int next = 0;
    for (;;) {
      auto r = co_await (rx.async_receive(tuple_task) || sleep_for(std::chrono::microseconds(20)));
      if (r.index() == 1) continue;
      auto [ec, v] = std::get<0>(r);
      if (ec == Errc::closed) break;
      EXPECT_FALSE(ec) << ec.message();
      EXPECT_EQ(v, next);
      next = v + 1;
    }
    co_return next;
  }(std::move(rx)));
  auto producer = rt->spawn(rt->executor(0), [](broadcast::Sender<int> tx) -> Task<void> {
    for (int i = 0; i < kCount; ++i) {
      tx.send(i);
      if (i % 16 == 0) co_await sleep_for(0ms);  // let the consumer wait now and then
    }
  }(std::move(tx)));
  EXPECT_EQ(run(*rt,
                [](JoinHandle<void> p, JoinHandle<int> c) -> Task<int> {
                  co_await p.join();
                  co_return co_await c.join();
                }(std::move(producer), std::move(consumer))),
            kCount);
}

// ---- notify ----

TEST(SyncNotifyTest, NotifyOneStoresOnePermit) {
  auto rt = make_runtime();
  Notify notify;
  notify.notify_one();
  notify.notify_one();  // permits do not accumulate
  Pending<error_code> first(rt->executor(1));
  notify.async_wait(first.handler());
  EXPECT_FALSE(std::get<0>(first.get()));
  Pending<error_code> second(rt->executor(1));
  notify.async_wait(second.handler());
  EXPECT_FALSE(second.done());
  notify.notify_one();
  EXPECT_FALSE(std::get<0>(second.get()));
}

TEST(SyncNotifyTest, NotifyOneWakesWaitersInOrderAndNotifyAllWakesTheRest) {
  auto rt = make_runtime();
  Notify notify;
  Pending<error_code> a(rt->executor(0)), b(rt->executor(1)), c(rt->executor(0));
  notify.async_wait(a.handler());
  notify.async_wait(b.handler());
  notify.async_wait(c.handler());
  notify.notify_one();
  EXPECT_FALSE(std::get<0>(a.get()));
  EXPECT_FALSE(b.done());
  notify.notify_all();
  EXPECT_FALSE(std::get<0>(b.get()));
  EXPECT_FALSE(std::get<0>(c.get()));
  // notify_all stored no permit.
  Pending<error_code> d(rt->executor(1));
  notify.async_wait(d.handler());
  d.cancel();
  EXPECT_EQ(std::get<0>(d.get()), kAborted);
}

TEST(SyncNotifyTest, PingPongAcrossWorkers) {
  auto rt = make_runtime();
  Notify ping, pong;
  static constexpr int kRounds = 2000;
  auto a = rt->spawn(rt->executor(0), [](Notify& ping, Notify& pong) -> Task<void> {
    for (int i = 0; i < kRounds; ++i) {
      ping.notify_one();
      co_await pong.async_wait();
    }
  }(ping, pong));
  auto b = rt->spawn(rt->executor(1), [](Notify& ping, Notify& pong) -> Task<void> {
    for (int i = 0; i < kRounds; ++i) {
      co_await ping.async_wait();
      pong.notify_one();
    }
  }(ping, pong));
  run(*rt, [](JoinHandle<void> a, JoinHandle<void> b) -> Task<void> {
    co_await a.join();
    co_await b.join();
  }(std::move(a), std::move(b)));
}

TEST(SyncNotifyTest, DestroyedNotifyCompletesWaitersWithClosed) {
  auto rt = make_runtime();
  auto notify = std::make_unique<Notify>();
  Pending<error_code> pending(rt->executor(1));
  notify->async_wait(pending.handler());
  notify.reset();
  EXPECT_EQ(std::get<0>(pending.get()), Errc::closed);
}

TEST(SyncNotifyTest, AbortedWaitingTaskEndsAborted) {
  auto rt = make_runtime();
  Notify notify;
  auto task =
      rt->spawn(rt->executor(1), [](Notify& n) -> Task<void> { co_await n.async_wait(); }(notify));
  task.abort();
  run(*rt, expect_join_error(std::move(task), kAborted));
}

TEST(SyncNotifyTest, WaitWithTimeoutRacesLoseNoNotification) {
  // Each notify_one is consumed by exactly one wait, even when it races with the wait's timeout:
  // a notification given to a cancelled wait passes on (here: to the permit).
  auto rt = make_runtime();
  Notify notify, ack;
  static constexpr int kRounds = 2000;
  auto waiter = rt->spawn(rt->executor(1), [](Notify& notify, Notify& ack) -> Task<int> {
    int woken = 0;
    while (woken < kRounds) {
      auto r = co_await (notify.async_wait() || sleep_for(std::chrono::microseconds(10)));
      if (r.index() == 0) {
        ++woken;
        ack.notify_one();
      }
    }
    co_return woken;
  }(notify, ack));
  auto notifier = rt->spawn(rt->executor(0), [](Notify& notify, Notify& ack) -> Task<void> {
    for (int i = 0; i < kRounds; ++i) {
      notify.notify_one();
      co_await ack.async_wait();
    }
  }(notify, ack));
  EXPECT_EQ(run(*rt,
                [](JoinHandle<void> n, JoinHandle<int> w) -> Task<int> {
                  co_await n.join();
                  co_return co_await w.join();
                }(std::move(notifier), std::move(waiter))),
            kRounds);
}

// ---- semaphore ----

TEST(SyncSemaphoreTest, AcquireAndReleasePermits) {
  auto rt = make_runtime();
  Semaphore sem(3);
  auto p1 = sem.try_acquire(2);
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1.count(), 2u);
  EXPECT_EQ(sem.available_permits(), 1u);
  EXPECT_FALSE(sem.try_acquire(2));
  EXPECT_FALSE(sem.try_acquire(0));
  p1.release();
  EXPECT_FALSE(p1);
  EXPECT_EQ(sem.available_permits(), 3u);
  run(*rt, [](Semaphore& sem) -> Task<void> {
    SemaphorePermit p = co_await sem.async_acquire(3);
    EXPECT_EQ(sem.available_permits(), 0u);
    SemaphorePermit moved = std::move(p);
    EXPECT_FALSE(p);
    EXPECT_TRUE(moved);
    SemaphorePermit zero = co_await sem.async_acquire(0);
    EXPECT_FALSE(zero);
  }(sem));
  EXPECT_EQ(sem.available_permits(), 3u);
  sem.try_acquire(1).forget();
  EXPECT_EQ(sem.available_permits(), 2u);
  sem.add_permits(1);
  EXPECT_EQ(sem.available_permits(), 3u);
}

TEST(SyncSemaphoreTest, LargeRequestIsNotStarvedBySmallOnes) {
  auto rt = make_runtime();
  Semaphore sem(2);
  auto held = sem.try_acquire(2);
  Pending<error_code, SemaphorePermit> large(rt->executor(0));
  Pending<error_code, SemaphorePermit> small(rt->executor(1));
  sem.async_acquire(2, large.handler());
  sem.async_acquire(1, small.handler());
  EXPECT_FALSE(sem.try_acquire(1));  // FIFO: the queue goes first
  held.release();                    // the large request at the head takes both
  EXPECT_EQ(sem.available_permits(), 0u);
  auto [ec, permit] = large.get();
  EXPECT_FALSE(ec);
  EXPECT_EQ(permit.count(), 2u);
  EXPECT_FALSE(small.done());
  permit.release();
  auto [ec2, permit2] = small.get();
  EXPECT_FALSE(ec2);
  EXPECT_EQ(permit2.count(), 1u);
}

TEST(SyncSemaphoreTest, SmallRequestWaitsBehindALargerOne) {
  auto rt = make_runtime();
  Semaphore sem(3);
  auto held = sem.try_acquire(3);
  Pending<error_code, SemaphorePermit> large(rt->executor(0));
  Pending<error_code, SemaphorePermit> small(rt->executor(1));
  sem.async_acquire(3, large.handler());
  sem.async_acquire(1, small.handler());
  sem.add_permits(1);  // enough for the small one, not for the large one ahead of it
  EXPECT_EQ(sem.available_permits(), 1u);
  EXPECT_FALSE(small.done());
  // Cancelling the large request lets the small one through.
  large.cancel();
  EXPECT_EQ(std::get<0>(large.get()), kAborted);
  auto [ec, permit] = small.get();
  EXPECT_FALSE(ec);
  EXPECT_EQ(sem.available_permits(), 0u);
}

TEST(SyncSemaphoreTest, CloseFailsPendingAndLaterAcquires) {
  auto rt = make_runtime();
  auto sem = std::make_unique<Semaphore>(1);
  auto held = sem->try_acquire();
  Pending<error_code, SemaphorePermit> pending(rt->executor(1));
  sem->async_acquire(1, pending.handler());
  sem->close();
  auto [ec, permit] = pending.get();
  EXPECT_EQ(ec, Errc::closed);
  EXPECT_FALSE(permit);
  EXPECT_FALSE(sem->try_acquire());
  run(*rt, [](Semaphore& sem) -> Task<void> {
    auto [ec, p] = co_await sem.async_acquire(1, tuple_task);
    EXPECT_EQ(ec, Errc::closed);
  }(*sem));
  // Destroying a semaphore with waiters closes them too; a permit outlives it.
  auto sem2 = std::make_unique<Semaphore>(0);
  Pending<error_code, SemaphorePermit> pending2(rt->executor(0));
  sem2->async_acquire(1, pending2.handler());
  sem2.reset();
  EXPECT_EQ(std::get<0>(pending2.get()), Errc::closed);
  sem.reset();
  held.release();
}

TEST(SyncSemaphoreTest, AcquireWithTimeoutRacesLeakNoPermits) {
  auto rt = make_runtime();
  Semaphore sem(2);
  std::atomic<int> holders{0};
  std::atomic<int> max_holders{0};
  static constexpr int kPerTask = 1000;
  std::vector<JoinHandle<int>> tasks;
  for (std::size_t i = 0; i < 4; ++i) {
    tasks.push_back(rt->spawn(
        rt->executor(i % 2),
        [](Semaphore& sem, std::atomic<int>& holders, std::atomic<int>& max) -> Task<int> {
          int acquired = 0;
          while (acquired < kPerTask) {
            auto r = co_await (sem.async_acquire(1) || sleep_for(std::chrono::microseconds(5)));
            if (r.index() == 1) continue;
            SemaphorePermit p = std::move(std::get<0>(r));
            int now = holders.fetch_add(1) + 1;
            int seen = max.load();
            while (now > seen && !max.compare_exchange_weak(seen, now)) {
            }
            holders.fetch_sub(1);
            ++acquired;
          }
          co_return acquired;
        }(sem, holders, max_holders)));
  }
  run(*rt, [](std::vector<JoinHandle<int>> ts) -> Task<void> {
    for (auto& t : ts) EXPECT_EQ(co_await t.join(), kPerTask);
  }(std::move(tasks)));
  EXPECT_LE(max_holders.load(), 2);
  EXPECT_EQ(sem.available_permits(), 2u);
}

// ---- mutex ----

TEST(SyncMutexTest, ExcludesTasksOnAllWorkers) {
  auto rt = make_runtime(4);
  Mutex mutex;
  std::int64_t counter = 0;  // plain: only the mutex protects it (ThreadSanitizer checks)
  static constexpr int kPerTask = 2000;
  std::vector<JoinHandle<void>> tasks;
  for (std::size_t i = 0; i < 4; ++i) {
    tasks.push_back(rt->spawn(rt->executor(i), [](Mutex& m, std::int64_t& counter) -> Task<void> {
      for (int k = 0; k < kPerTask; ++k) {
        MutexGuard guard = co_await m.async_lock();
        std::int64_t v = counter;
        if (k % 64 == 0) co_await sleep_for(0ms);  // hold it across a suspension
        counter = v + 1;
      }
    }(mutex, counter)));
  }
  run(*rt, [](std::vector<JoinHandle<void>> ts) -> Task<void> {
    for (auto& t : ts) co_await t.join();
  }(std::move(tasks)));
  EXPECT_EQ(counter, 4 * kPerTask);
  EXPECT_FALSE(mutex.is_locked());
}

TEST(SyncMutexTest, WaitersGetTheLockInFifoOrder) {
  auto rt = make_runtime();
  Mutex mutex;
  MutexGuard held = mutex.try_lock();
  ASSERT_TRUE(held);
  EXPECT_FALSE(mutex.try_lock());
  std::vector<std::unique_ptr<Pending<error_code, MutexGuard>>> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(std::make_unique<Pending<error_code, MutexGuard>>(rt->executor(i % 2)));
    mutex.async_lock(waiters.back()->handler());
  }
  held.unlock();
  EXPECT_TRUE(mutex.is_locked());  // handed over, not released
  for (std::size_t i = 0; i < waiters.size(); ++i) {
    auto [ec, guard] = waiters[i]->get();  // only waiter i can have it now
    EXPECT_FALSE(ec);
    EXPECT_TRUE(guard);
    for (std::size_t j = i + 1; j < waiters.size(); ++j) EXPECT_FALSE(waiters[j]->done());
    // `guard` goes: the lock passes to waiter i + 1.
  }
  EXPECT_FALSE(mutex.is_locked());
}

TEST(SyncMutexTest, CancelledLockNeverLeavesItLocked) {
  auto rt = make_runtime();
  Mutex mutex;
  MutexGuard held = mutex.try_lock();
  Pending<error_code, MutexGuard> cancelled(rt->executor(1));
  mutex.async_lock(cancelled.handler());
  auto task = rt->spawn(rt->executor(0), [](Mutex& m) -> Task<void> {
    MutexGuard g = co_await m.async_lock();
  }(mutex));
  task.abort();
  run(*rt, expect_join_error(std::move(task), kAborted));
  cancelled.cancel();
  auto [ec, guard] = cancelled.get();
  EXPECT_EQ(ec, kAborted);
  EXPECT_FALSE(guard);
  held.unlock();
  EXPECT_FALSE(mutex.is_locked());
}

TEST(SyncMutexTest, DestroyedMutexFailsWaitersAndGuardsOutliveIt) {
  auto rt = make_runtime();
  auto mutex = std::make_unique<Mutex>();
  MutexGuard held = mutex->try_lock();
  Pending<error_code, MutexGuard> pending(rt->executor(1));
  mutex->async_lock(pending.handler());
  mutex.reset();
  auto [ec, guard] = pending.get();
  EXPECT_EQ(ec, Errc::closed);
  EXPECT_FALSE(guard);
  held.unlock();  // the state outlives the Mutex
  MutexGuard empty;
  EXPECT_FALSE(empty);
  empty = std::move(held);
  EXPECT_FALSE(empty);
}

TEST(SyncMutexTest, LockWithTimeoutRacesNeverLeakTheLock) {
  auto rt = make_runtime();
  Mutex mutex;
  std::atomic<int> owners{0};
  static constexpr int kPerTask = 1000;
  std::vector<JoinHandle<int>> tasks;
  for (std::size_t i = 0; i < 4; ++i) {
    tasks.push_back(
        rt->spawn(rt->executor(i % 2), [](Mutex& m, std::atomic<int>& owners) -> Task<int> {
          int locked = 0;
          while (locked < kPerTask) {
            auto r = co_await (m.async_lock() || sleep_for(std::chrono::microseconds(5)));
            if (r.index() == 1) continue;
            MutexGuard g = std::move(std::get<0>(r));
            EXPECT_EQ(owners.fetch_add(1), 0) << "two owners at once";
            owners.fetch_sub(1);
            ++locked;
          }
          co_return locked;
        }(mutex, owners)));
  }
  run(*rt, [](std::vector<JoinHandle<int>> ts) -> Task<void> {
    for (auto& t : ts) EXPECT_EQ(co_await t.join(), kPerTask);
  }(std::move(tasks)));
  EXPECT_FALSE(mutex.is_locked());
}

}  // namespace
}  // namespace trellis::sync
