// Unit tests of the owned runtime: tasks, join handles, blocking pool, timers, shutdown.
#include "trellis/runtime.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <csignal>
#include <future>
#include <set>
#include <thread>
#include <variant>
#include <vector>

#include "end_to_end.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/timer.hpp"

namespace trellis {
namespace {

using namespace std::chrono_literals;
using boost::asio::experimental::awaitable_operators::operator||;
using testing::kWaitBound;

// Runs `task` on `rt` and waits for it, bounded (testing::run_bounded). Tests of block_on itself
// call it directly.
template <class T>
T run(Runtime& rt, Task<T> task) {
  return testing::run_bounded(rt, std::move(task));
}

std::unique_ptr<Runtime> make_runtime(std::size_t workers = 2) {
  return Runtime::multi_thread().worker_threads(workers).build();
}

TEST(RuntimeTest, BuilderSetsWorkerCount) {
  EXPECT_EQ(make_runtime(3)->worker_count(), 3u);
  EXPECT_EQ(Runtime::single_thread().build()->worker_count(), 1u);
}

TEST(RuntimeTest, BlockOnReturnsValue) {
  auto rt = make_runtime();
  int v = rt->block_on([]() -> Task<int> { co_return 42; }());
  EXPECT_EQ(v, 42);
}

TEST(RuntimeTest, BlockOnRethrows) {
  auto rt = make_runtime();
  EXPECT_THROW(rt->block_on([]() -> Task<void> {
    throw std::runtime_error("boom");
    co_return;
  }()),
               std::runtime_error);
}

TEST(RuntimeTest, BlockOnFromWorkerIsRejected) {
  auto rt = make_runtime();
  bool rejected = rt->block_on([&]() -> Task<bool> {
    try {
      rt->block_on([]() -> Task<int> { co_return 1; }());
    } catch (const std::logic_error&) {
      co_return true;
    }
    co_return false;
  }());
  EXPECT_TRUE(rejected);
}

TEST(RuntimeTest, TasksRunOnWorkersAndKnowTheirRuntime) {
  auto rt = make_runtime();
  EXPECT_EQ(Runtime::current(), nullptr);
  Runtime* seen = run(*rt, []() -> Task<Runtime*> { co_return Runtime::current(); }());
  EXPECT_EQ(seen, rt.get());
}

TEST(RuntimeTest, SpawnJoinYieldsValue) {
  auto rt = make_runtime();
  auto handle = rt->spawn([]() -> Task<std::string> { co_return "done"; }());
  std::string v = run(*rt, [&]() -> Task<std::string> { co_return co_await handle.join(); }());
  EXPECT_EQ(v, "done");
  EXPECT_TRUE(handle.is_finished());
}

// The stack address of the caller's frame (a coroutine's locals live in its frame, not there).
[[gnu::noinline]] std::uintptr_t stack_position() {
  return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

// Joining a task that has already finished completes through the joiner's queue, not inside
// join() (Asio's rule for initiating functions): a loop over finished handles resumes at the same
// stack depth each time instead of nesting one frame per handle until the stack overflows.
TEST(RuntimeTest, JoiningFinishedTasksDoesNotNestResumptions) {
  auto rt = make_runtime(1);
  constexpr int kTasks = 1000;
  auto depth_range = run(*rt, [&]() -> Task<std::ptrdiff_t> {
    std::vector<JoinHandle<int>> handles;
    for (int i = 0; i < kTasks; ++i) {
      handles.push_back(rt->spawn([](int v) -> Task<int> { co_return v; }(i)));
    }
    for (auto& h : handles) {
      while (!h.is_finished()) co_await boost::asio::post(use_task);  // a yield, not a sleep
    }
    std::uintptr_t lowest = UINTPTR_MAX;
    std::uintptr_t highest = 0;
    int sum = 0;
    for (auto& h : handles) {
      sum += co_await h.join();
      const std::uintptr_t at = stack_position();
      lowest = std::min(lowest, at);
      highest = std::max(highest, at);
    }
    EXPECT_EQ(sum, kTasks * (kTasks - 1) / 2);
    co_return static_cast<std::ptrdiff_t>(highest - lowest);
  }());
  // Nested resumptions would take at least a few hundred bytes of stack per handle.
  EXPECT_LT(depth_range, 4096);
}

TEST(RuntimeTest, SpawnJoinRethrowsTaskException) {
  auto rt = make_runtime();
  auto handle = rt->spawn([]() -> Task<int> {
    throw std::invalid_argument("bad");
    co_return 0;
  }());
  EXPECT_THROW(run(*rt, handle.join()), std::invalid_argument);
  auto m = rt->metrics();
  EXPECT_EQ(m.tasks_failed, 1u);
}

TEST(RuntimeTest, UnobservedFailureReachesErrorHook) {
  std::promise<std::string> reported;
  auto rt = Runtime::multi_thread()
                .worker_threads(1)
                .on_error([&](std::exception_ptr e, const std::string&) {
                  try {
                    std::rethrow_exception(e);
                  } catch (const std::exception& ex) {
                    reported.set_value(ex.what());
                  }
                })
                .build();
  {
    // Dropping the handle detaches the task; its failure must still be seen.
    rt->spawn([]() -> Task<void> {
      throw std::runtime_error("lost?");
      co_return;
    }());
  }
  auto f = reported.get_future();
  ASSERT_EQ(f.wait_for(kWaitBound), std::future_status::ready);
  EXPECT_EQ(f.get(), "lost?");
  EXPECT_EQ(rt->metrics().tasks_unobserved, 1u);
}

TEST(RuntimeTest, AbortCancelsSuspendedTask) {
  auto rt = make_runtime();
  std::promise<void> started;
  auto handle = rt->spawn([](std::promise<void>& started) -> Task<int> {
    started.set_value();
    co_await sleep_for(1h);
    co_return 1;
  }(started));
  ASSERT_EQ(started.get_future().wait_for(kWaitBound), std::future_status::ready);
  handle.abort();
  try {
    run(*rt, handle.join());
    FAIL() << "an aborted task must not yield a value";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), boost::asio::error::operation_aborted);
  }
}

TEST(RuntimeTest, SleepForCompletes) {
  auto rt = make_runtime();
  auto start = std::chrono::steady_clock::now();
  run(*rt, []() -> Task<void> { co_await sleep_for(20ms); }());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
}

// Three timers armed in one resumption of a task, in an order other than their deadlines': they
// complete in the order of their deadlines, however late the worker gets to fire them.
TEST(RuntimeTest, TimersFireInDeadlineOrder) {
  auto rt = Runtime::single_thread().build();
  auto order = run(*rt, []() -> Task<std::array<std::size_t, 3>> {
    const auto start = std::chrono::steady_clock::now();
    auto [order, e0, e1, e2] = co_await boost::asio::experimental::make_parallel_group(
                                   sleep_until(start + 30ms, boost::asio::deferred),
                                   sleep_until(start + 10ms, boost::asio::deferred),
                                   sleep_until(start + 20ms, boost::asio::deferred))
                                   .async_wait(boost::asio::experimental::wait_for_all(), use_task);
    if (e0 || e1 || e2) throw boost::system::system_error(e0 ? e0 : e1 ? e1 : e2);
    co_return order;
  }());
  EXPECT_EQ(order, (std::array<std::size_t, 3>{1, 2, 0}));
}

TEST(RuntimeTest, AwaitableOrCancelsTheSlowerTimer) {
  auto rt = make_runtime();
  auto result = run(*rt, []() -> Task<std::variant<int, int>> {
    auto fast = []() -> Task<int> {
      co_await sleep_for(1ms);
      co_return 1;
    };
    auto slow = []() -> Task<int> {
      co_await sleep_for(1h);
      co_return 2;
    };
    co_return co_await (fast() || slow());
  }());
  EXPECT_EQ(result.index(), 0u);
}

TEST(RuntimeTest, SleepOffTheRuntimeFailsClearly) {
  boost::asio::io_context io;
  boost::system::error_code result;
  boost::asio::co_spawn(
      io, []() -> Task<void> { co_await sleep_for(1ms); }(),
      [&](std::exception_ptr e) {
        try {
          if (e) std::rethrow_exception(e);
        } catch (const boost::system::system_error& err) {
          result = err.code();
        }
      });
  io.run();
  EXPECT_EQ(result, boost::asio::error::operation_not_supported);
}

// A WorkerTimer that records which timers expired, and whether on `worker`.
class RecordingTimer final : public WorkerTimer {
 public:
  RecordingTimer(int id, std::vector<int>& expired, Executor worker = {})
      : id_(id), expired_(expired), worker_(worker) {}
  bool expired_on_its_worker = false;

 private:
  void expired() override {
    expired_on_its_worker = worker_.running_in_this_thread();
    expired_.push_back(id_);
  }

  int id_;
  std::vector<int>& expired_;
  Executor worker_;
};

// Timers fire in deadline order, so once a later sleep has completed, every armed timer with an
// earlier deadline has expired, and a disarmed one would have.
TEST(RuntimeTest, WorkerTimerExpiresOnItsWorkerUnlessDisarmed) {
  auto rt = Runtime::single_thread().build();
  struct Seen {
    std::vector<int> expired;
    bool kept_armed_flag = false;
    bool on_worker = false;
  };
  Seen seen = run(*rt, [](Executor worker) -> Task<Seen> {
    Seen seen;
    RecordingTimer disarmed(1, seen.expired, worker);
    RecordingTimer kept(2, seen.expired, worker);
    const auto now = std::chrono::steady_clock::now();
    EXPECT_TRUE(disarmed.arm(now));
    EXPECT_TRUE(kept.arm(now + 1ms));
    disarmed.disarm();
    seen.kept_armed_flag = kept.armed();
    co_await sleep_until(now + 2ms);
    EXPECT_FALSE(kept.armed());
    seen.on_worker = kept.expired_on_its_worker;
    co_return seen;
  }(rt->executor(0)));
  EXPECT_EQ(seen.expired, std::vector<int>{2});
  EXPECT_TRUE(seen.kept_armed_flag);
  EXPECT_TRUE(seen.on_worker);
}

TEST(RuntimeTest, WorkerTimerCannotBeArmedOffTheRuntime) {
  std::vector<int> expired;
  RecordingTimer timer(1, expired);
  EXPECT_FALSE(timer.arm(std::chrono::steady_clock::now()));
  EXPECT_FALSE(timer.armed());
}

TEST(RuntimeTest, CoroutineStaysOnItsWorker) {
  auto rt = make_runtime(2);
  bool same = run(*rt, []() -> Task<bool> {
    auto id = std::this_thread::get_id();
    for (int i = 0; i < 5; ++i) {
      co_await sleep_for(1ms);
      if (std::this_thread::get_id() != id) co_return false;
    }
    co_return true;
  }());
  EXPECT_TRUE(same);
}

TEST(RuntimeTest, SpawnBlockingRunsOffWorkers) {
  auto rt = make_runtime();
  auto [value, on_worker] = run(*rt, [&]() -> Task<std::pair<int, bool>> {
    auto worker_thread = std::this_thread::get_id();
    int v = co_await rt->spawn_blocking([&] {
      return Runtime::current() == nullptr && std::this_thread::get_id() != worker_thread ? 7 : -1;
    });
    co_return std::pair{v, std::this_thread::get_id() == worker_thread};
  }());
  EXPECT_EQ(value, 7);
  EXPECT_TRUE(on_worker) << "the awaiting task resumes on its own worker";
}

// The name of the calling thread.
std::string thread_name() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

TEST(RuntimeTest, IoContextRunsOnAThreadOfItsOwnAndTasksAwaitItsTimers) {
  auto rt = Runtime::multi_thread().worker_threads(1).thread_name("iotest").build();
  boost::asio::io_context& io = rt->io_context();
  EXPECT_EQ(&io, &rt->io_context());  // one per runtime
  std::promise<std::pair<bool, std::string>> ran;
  boost::asio::post(io, [&] { ran.set_value({Runtime::current() == nullptr, thread_name()}); });
  auto f = ran.get_future();
  ASSERT_EQ(f.wait_for(kWaitBound), std::future_status::ready);
  auto [off_workers, name] = f.get();
  EXPECT_TRUE(off_workers);
  EXPECT_EQ(name, "iotest-io");
  // An Asio I/O object on the context, awaited by a task: the task resumes on its worker.
  bool back_on_worker = run(*rt, [&]() -> Task<bool> {
    auto worker = std::this_thread::get_id();
    boost::asio::steady_timer timer(io, std::chrono::milliseconds(1));
    co_await timer.async_wait(use_task);
    co_return std::this_thread::get_id() == worker;
  }());
  EXPECT_TRUE(back_on_worker);
  rt->shutdown();
  EXPECT_THROW(rt->io_context(), std::runtime_error);
}

TEST(RuntimeTest, IoContextReportsAnExceptionAndGoesOn) {
  std::promise<std::string> reported;
  auto rt = Runtime::multi_thread()
                .worker_threads(1)
                .on_error([&](std::exception_ptr e, const std::string& what) {
                  try {
                    std::rethrow_exception(e);
                  } catch (const std::exception& ex) {
                    reported.set_value(what + ": " + ex.what());
                  }
                })
                .build();
  boost::asio::io_context& io = rt->io_context();
  boost::asio::post(io, [] { throw std::runtime_error("handler exploded"); });
  std::promise<void> next_ran;
  boost::asio::post(io, [&] { next_ran.set_value(); });
  auto report = reported.get_future();
  ASSERT_EQ(report.wait_for(kWaitBound), std::future_status::ready);
  EXPECT_EQ(report.get(), "an exception escaped a handler on the I/O thread: handler exploded");
  EXPECT_EQ(next_ran.get_future().wait_for(kWaitBound), std::future_status::ready);
}

TEST(RuntimeTest, SpawnBlockingRethrows) {
  auto rt = make_runtime();
  EXPECT_THROW(run(*rt,
                   [&]() -> Task<void> {
                     co_await rt->spawn_blocking([]() -> void { throw std::out_of_range("x"); });
                   }()),
               std::out_of_range);
}

TEST(RuntimeTest, ShutdownAbortsPendingTimers) {
  auto rt = make_runtime();
  std::promise<void> started;
  auto handle = rt->spawn([](std::promise<void>& started) -> Task<bool> {
    started.set_value();
    auto [ec] = co_await sleep_for(1h, boost::asio::as_tuple(use_task));
    co_return ec == boost::asio::error::operation_aborted;
  }(started));
  ASSERT_EQ(started.get_future().wait_for(kWaitBound), std::future_status::ready);
  // The joiner lives outside the runtime being shut down.
  auto other = make_runtime(1);
  auto joined = std::async(std::launch::async, [&] { return run(*other, handle.join()); });
  rt->shutdown();
  ASSERT_EQ(joined.wait_for(kWaitBound), std::future_status::ready);
  EXPECT_TRUE(joined.get());
}

TEST(RuntimeTest, ShutdownGraceLetsTasksFinish) {
  auto rt = make_runtime();
  std::atomic<bool> finished{false};
  rt->spawn([](std::atomic<bool>& finished) -> Task<void> {
    co_await sleep_for(20ms);
    finished = true;
  }(finished));
  rt->shutdown(30s);
  EXPECT_TRUE(finished.load());
}

TEST(RuntimeTest, WatchdogReportsBlockedWorker) {
  std::promise<std::size_t> stalled;
  auto rt = Runtime::multi_thread()
                .worker_threads(1)
                .watchdog(20ms, [&](std::size_t worker,
                                    std::chrono::milliseconds) { stalled.set_value(worker); })
                .build();
  auto report = stalled.get_future().share();
  run(*rt, [&]() -> Task<void> {
    // Deliberately block the worker until the watchdog has noticed (bounded).
    report.wait_for(kWaitBound);
    co_return;
  }());
  ASSERT_EQ(report.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(report.get(), 0u);
}

TEST(RuntimeTest, MetricsCountTasks) {
  auto rt = make_runtime();
  for (int i = 0; i < 3; ++i) {
    auto h = rt->spawn([]() -> Task<int> { co_return 1; }());
    EXPECT_EQ(run(*rt, h.join()), 1);
  }
  auto failing = rt->spawn([]() -> Task<void> {
    throw std::runtime_error("counted as failed");
    co_return;
  }());
  EXPECT_THROW(run(*rt, failing.join()), std::runtime_error);
  // A task is counted as finished before its joiner resumes, and block_on and run_bounded do not
  // spawn: the counts are exact.
  auto m = rt->metrics();
  EXPECT_EQ(m.tasks_spawned, 4u);
  EXPECT_EQ(m.tasks_completed, 4u);
  EXPECT_EQ(m.tasks_failed, 1u);
  EXPECT_EQ(m.tasks_alive, 0u);
  EXPECT_EQ(m.workers.size(), 2u);
}

// A worker blocked on purpose (the test's own latch) while the test looks at what queues up.
// Returns once the worker is inside the blocking runnable; release() lets it go.
class BlockedWorker {
 public:
  explicit BlockedWorker(Executor ex) {
    boost::asio::post(ex, [this] {
      entered_.set_value();
      release_.get_future().wait();
    });
    EXPECT_EQ(entered_.get_future().wait_for(kWaitBound), std::future_status::ready);
  }
  ~BlockedWorker() { release(); }
  void release() {
    if (!released_) release_.set_value();
    released_ = true;
  }

 private:
  std::promise<void> entered_, release_;
  bool released_ = false;
};

TEST(RuntimeTest, ExecutorPassesOverAWorkerStuckInOnePoll) {
  auto rt = Runtime::multi_thread().worker_threads(2).watchdog(0ms).build();
  auto on_worker = [&](Executor ex) { return ex.worker() == rt->executor(1).worker() ? 1 : 0; };
  std::uint64_t polls_before = 0;
  {
    BlockedWorker blocked(rt->executor(0));  // worker 0 is inside one poll from here on
    const auto since = std::chrono::steady_clock::now();
    ASSERT_TRUE(testing::wait_until([&] { return std::chrono::steady_clock::now() - since > 5ms; },
                                    "the blocked poll to outlast the 1 ms threshold"));
    for (int i = 0; i < 10; ++i) EXPECT_EQ(on_worker(rt->executor()), 1);
    // spawn() follows: the task runs on worker 1 while worker 0 is stuck.
    auto where = rt->spawn([]() -> Task<bool> {
      co_return Runtime::current()->executor(1).running_in_this_thread();
    }());
    EXPECT_TRUE(run(*rt, where.join()));
    polls_before = rt->metrics().workers[0].polls;
  }
  // Free again (its poll has ended), worker 0 is back in the rotation.
  ASSERT_TRUE(testing::wait_until([&] { return rt->metrics().workers[0].polls > polls_before; },
                                  "the blocked poll to end"));
  EXPECT_NE(on_worker(rt->executor()), on_worker(rt->executor()));
}

TEST(RuntimeTest, MetricsShowTheInboxOfABusyWorker) {
  auto rt = Runtime::single_thread().watchdog(0ms).build();
  BlockedWorker blocked(rt->executor(0));
  std::atomic<int> ran{0};
  for (int i = 0; i < 3; ++i) boost::asio::post(rt->executor(0), [&] { ++ran; });
  auto m = rt->metrics().workers.at(0);
  EXPECT_EQ(m.inbox_depth, 3u);
  EXPECT_EQ(m.local_queue_depth, 0u);
  EXPECT_EQ(m.queue_depth, 3u);
  blocked.release();
  ASSERT_TRUE(testing::wait_until([&] { return ran.load() == 3; }, "the posted work to run"));
  ASSERT_TRUE(testing::wait_until([&] { return rt->metrics().workers[0].queue_depth == 0; },
                                  "the queue to empty"));
  EXPECT_EQ(rt->metrics().workers[0].inbox_depth, 0u);
}

TEST(RuntimeTest, MetricsShowLocalQueueTimersAndPolls) {
  auto rt = Runtime::single_thread().watchdog(0ms).build();
  auto before = rt->metrics().workers.at(0);
  // Work a task queues on its own worker waits in the local queue until the task suspends.
  auto local = run(*rt, []() -> Task<RuntimeMetrics::WorkerMetrics> {
    auto ex = co_await boost::asio::this_coro::executor;
    for (int i = 0; i < 5; ++i) boost::asio::post(ex, [] {});
    co_return Runtime::current()->metrics().workers.at(0);
  }());
  EXPECT_EQ(local.local_queue_depth, 5u);
  EXPECT_EQ(local.inbox_depth, 0u);

  // A timer is pending until it fires or is cancelled.
  auto sleeper = rt->spawn([]() -> Task<void> { co_await sleep_for(1h); }());
  ASSERT_TRUE(testing::wait_until([&] { return rt->metrics().workers[0].timers_pending == 1; },
                                  "the timer to be scheduled"));
  sleeper.abort();
  ASSERT_TRUE(testing::wait_until([&] { return rt->metrics().workers[0].timers_pending == 0; },
                                  "the timer to be cancelled"));

  // One long poll: it is the maximum, and the histogram puts it in the (10 ms, 100 ms] bucket.
  run(*rt, []() -> Task<void> {
    auto end = std::chrono::steady_clock::now() + 20ms;
    while (std::chrono::steady_clock::now() < end) {
    }
    co_return;
  }());
  auto after = rt->metrics().workers.at(0);
  EXPECT_GT(after.polls, before.polls);
  EXPECT_GE(after.max_poll_time, 20ms);
  EXPECT_GT(after.busy_time, before.busy_time + 20ms);
  EXPECT_GE(after.poll_time_histogram[4], 1u);  // bounds: 10us 100us 1ms 10ms [100ms] 1s
  std::uint64_t counted = 0;
  for (auto n : after.poll_time_histogram) counted += n;
  // Each poll lands in exactly one bucket (read after the polls above, while the worker may go on
  // polling: at least as many).
  EXPECT_GE(counted, after.polls);
}

TEST(RuntimeTest, MetricsShowTheBlockingPool) {
  auto rt = Runtime::single_thread().max_blocking_threads(1).build();
  std::promise<void> entered, release;
  auto release_future = release.get_future().share();
  // The tasks take what they use as parameters: a lambda's captures die with the temporary.
  auto first =
      rt->spawn([](std::promise<void>* entered, std::shared_future<void> release) -> Task<void> {
        // Named, not a temporary inside co_await: GCC 12 destroys such a temporary twice.
        auto job = [entered, release] {
          entered->set_value();
          release.wait();
        };
        co_await Runtime::current()->spawn_blocking(std::move(job));
      }(&entered, release_future));
  ASSERT_EQ(entered.get_future().wait_for(kWaitBound), std::future_status::ready);
  auto queued = rt->spawn([]() -> Task<void> {
    co_await Runtime::current()->spawn_blocking([] {});
    co_await Runtime::current()->spawn_blocking([] {});
  }());
  ASSERT_TRUE(testing::wait_until([&] { return rt->metrics().blocking_queue_depth == 1; },
                                  "the second job to queue behind the first"));
  auto m = rt->metrics();
  EXPECT_EQ(m.blocking_threads, 1u);
  EXPECT_EQ(m.blocking_threads_max, 1u);
  release.set_value();
  run(*rt, first.join());
  run(*rt, queued.join());
  EXPECT_EQ(rt->metrics().blocking_queue_depth, 0u);
}

TEST(RuntimeTest, MetricsCountOpenFilesAgainstTheLimit) {
  auto rt = make_runtime(1);
  auto before = rt->metrics();
  ASSERT_GT(before.open_fds, 0);
  rlimit lim{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur != RLIM_INFINITY) {
    EXPECT_EQ(before.fd_limit, static_cast<std::int64_t>(lim.rlim_cur));
  }
  std::array<int, 2> fds[5];
  for (auto& p : fds) ASSERT_EQ(pipe(p.data()), 0);
  auto after = rt->metrics();
  for (auto& p : fds) {
    close(p[0]);
    close(p[1]);
  }
  // gRPC's own threads may open descriptors meanwhile, never close ours.
  EXPECT_GE(after.open_fds, before.open_fds + 10);
}

// ShutdownSignals::wait() on a thread of its own, bounded: if it does not return in time, one more
// SIGTERM unblocks it and the test fails.
int wait_bounded(ShutdownSignals& signals) {
  auto received = std::async(std::launch::async, [&signals] { return signals.wait(); });
  if (received.wait_for(kWaitBound) != std::future_status::ready) {
    ADD_FAILURE() << "ShutdownSignals::wait() did not return";
    std::raise(SIGTERM);
  }
  return received.get();
}

TEST(ShutdownSignalsTest, KeepsASignalThatArrivesBeforeWait) {
  ShutdownSignals signals;
  ASSERT_EQ(std::raise(SIGTERM), 0);  // would kill the test without `signals`
  EXPECT_EQ(wait_bounded(signals), SIGTERM);
}

TEST(ShutdownSignalsTest, ReturnsEachSignalOnce) {
  ShutdownSignals signals;
  ASSERT_EQ(std::raise(SIGINT), 0);
  ASSERT_EQ(std::raise(SIGTERM), 0);
  std::set<int> received{wait_bounded(signals), wait_bounded(signals)};
  EXPECT_EQ(received, (std::set<int>{SIGINT, SIGTERM}));
}

TEST(ShutdownSignalsTest, DestroyingItRestoresTheDefaultAction) {
  auto handler = [] {
    struct sigaction action {};
    EXPECT_EQ(sigaction(SIGTERM, nullptr, &action), 0);
    return action.sa_handler;
  };
  ASSERT_EQ(handler(), SIG_DFL);
  {
    ShutdownSignals signals;
    EXPECT_NE(handler(), SIG_DFL);
  }
  EXPECT_EQ(handler(), SIG_DFL);
}

}  // namespace
}  // namespace trellis
