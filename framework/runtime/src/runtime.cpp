#include "trellis/runtime.hpp"

#include <dirent.h>
#include <grpcpp/server_builder.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "log.hpp"
#include "runtime_core.hpp"
#include "thread_setup.hpp"
#include "timed_executor.hpp"
#include "trellis/detail/asio_internals.hpp"

namespace trellis {
namespace detail {

void block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void name_thread(const std::string& prefix, std::size_t index) {
  std::string name = absl::StrCat(prefix, "-", index).substr(0, 15);
  pthread_setname_np(pthread_self(), name.c_str());
}

namespace {

thread_local Worker* tl_worker = nullptr;

// steady_clock::now() without the call into libstdc++ around it (libstdc++'s steady_clock is
// CLOCK_MONOTONIC): a worker reads the clock twice per event.
std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A process serving many streams runs out of descriptors at the default soft limit of 1024.
void raise_fd_limit_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
    rlim_t old = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) == 0) {
      log(LogLevel::kInfo, absl::StrCat("raised the open-file limit (RLIMIT_NOFILE) from ", old,
                                        " to its hard limit ", lim.rlim_cur));
    } else {
      log(LogLevel::kWarning,
          absl::StrCat("could not raise the open-file limit (RLIMIT_NOFILE) from ", old,
                       " to its hard limit ", lim.rlim_max, ": ", std::strerror(errno)));
    }
  });
}

// A poll this long makes Runtime::executor() pass over its worker: far beyond a normal poll (a
// few microseconds), short enough that work handed elsewhere gains.
constexpr std::int64_t kLongPollNs = 1'000'000;

// RuntimeMetrics::kPollTimeBounds in nanoseconds, for the comparison on every poll.
constexpr auto kPollBoundsNs = [] {
  std::array<std::int64_t, RuntimeMetrics::kPollTimeBounds.size()> ns{};
  for (std::size_t i = 0; i < ns.size(); ++i) ns[i] = RuntimeMetrics::kPollTimeBounds[i].count();
  return ns;
}();

// Descriptors open in this process (the entries of /proc/self/fd, less the one reading it), and
// RLIMIT_NOFILE's soft limit; -1 where unknown or unlimited.
std::int64_t count_open_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  std::int64_t n = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;
}

std::int64_t open_file_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return -1;
  return static_cast<std::int64_t>(lim.rlim_cur);
}

gpr_timespec to_gpr_deadline(std::chrono::steady_clock::time_point when) {
  auto delta =
      std::chrono::duration_cast<std::chrono::nanoseconds>(when - std::chrono::steady_clock::now())
          .count();
  if (delta <= 0) return gpr_inf_past(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(delta, GPR_TIMESPAN));
}

}  // namespace

Worker* current_worker() noexcept { return tl_worker; }

Worker* worker_for(const boost::asio::any_io_executor& ex) noexcept {
  if (const Executor* te = ex.target<Executor>(); te != nullptr && te->worker() != nullptr) {
    return te->worker();
  }
  return current_worker();
}

// ---------------------------------------------------------------------------------- Worker

Worker::Worker(RuntimeCore* core, std::size_t index,
               std::unique_ptr<grpc::ServerCompletionQueue> cq)
    : core_(core), index_(index), cq_(std::move(cq)) {}

Worker::~Worker() = default;

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::request_stop() {
  post(make_runnable([this] { begin_stop(); }));
}

bool Worker::in_this_thread() const noexcept { return tl_worker == this; }

void Worker::post(Runnable* r) {
  if (tl_worker == this) {
    local_.push(r);
    depth_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  {
    std::lock_guard lock(inbox_mu_);
    if (exited_) {
      r->discard();
      return;
    }
    inbox_.push(r);
    depth_.fetch_add(1, std::memory_order_relaxed);
    inbox_depth_.store(inbox_.size(), std::memory_order_relaxed);
    // One pending wakeup (an alarm on the queue, or a handler on the reactor) wakes the worker
    // for any number of posts; it is re-armed only after the worker has taken the inbox, so no
    // post is ever left without a wakeup. An alarm set before the switch to the reactor still
    // wakes the worker: the forwarder hands its completion over.
    if (reactor_mode_) {
      if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
        boost::asio::post(reactor_, [this] { wakeup_.complete(true); });
      }
    } else if (!cq_closed_ && !wake_pending_.exchange(true, std::memory_order_acq_rel)) {
      wake_alarm_.Set(cq_.get(), gpr_inf_past(GPR_CLOCK_MONOTONIC), &wakeup_);
    }
  }
}

void Worker::use_reactor() {
  {
    std::lock_guard lock(inbox_mu_);
    if (reactor_requested_) return;
    reactor_requested_ = true;
  }
  post(make_runnable([this] {
    {
      std::lock_guard lock(inbox_mu_);
      reactor_mode_ = true;
    }
    cq_forwarder_ = std::thread([this] { forward_completions(); });
  }));
}

void Worker::forward_completions() {
  block_termination_signals();
  name_thread(core_->thread_name + "-cq", index_);
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) {
    boost::asio::post(reactor_, [this, tag, ok] {
      events_.store(events_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      timed([tag, ok] { static_cast<Completion*>(tag)->complete(ok); });
    });
  }
  boost::asio::post(reactor_, [this] { cq_drained_ = true; });
}

boost::asio::any_io_executor Worker::reactor_executor() {
  return TimedExecutor<boost::asio::io_context::executor_type>(this, reactor_.get_executor());
}

void Worker::run_timed(void (*fn)(void*), void* arg) {
  if (resumption_start_.load(std::memory_order_relaxed) != 0) {
    fn(arg);
    return;
  }
  events_.store(events_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  timed([fn, arg] { fn(arg); });
}

void Worker::wait_on_reactor() {
  try {
    if (!local_.empty()) {
      reactor_.poll();
    } else if (!heap_.empty()) {
      reactor_.run_one_until(heap_.front()->deadline);
    } else {
      reactor_.run_one();
    }
  } catch (...) {
    core_->report(std::current_exception(), "exception escaped a handler on a worker's reactor");
  }
}

void Worker::Wakeup::complete(bool) {
  worker_->wake_pending_.store(false, std::memory_order_release);
  worker_->drain_inbox();
}

void Worker::drain_inbox() {
  std::lock_guard lock(inbox_mu_);
  local_.append(inbox_);
  inbox_depth_.store(0, std::memory_order_relaxed);
}

void Worker::track(CancellableOp* op) {
  op->prev = nullptr;
  op->next = live_ops_;
  if (live_ops_ != nullptr) live_ops_->prev = op;
  live_ops_ = op;
}

void Worker::untrack(CancellableOp* op) {
  if (op->prev != nullptr) {
    op->prev->next = op->next;
  } else if (live_ops_ == op) {
    live_ops_ = op->next;
  }
  if (op->next != nullptr) op->next->prev = op->prev;
  op->prev = op->next = nullptr;
}

template <class Fn>
void Worker::timed(Fn&& fn) {
  std::int64_t start = now_ns();
  resumption_start_.store(start, std::memory_order_relaxed);
  try {
    fn();
  } catch (...) {
    core_->report(std::current_exception(), "exception escaped a runtime worker callback");
  }
  resumption_start_.store(0, std::memory_order_relaxed);
  const std::int64_t elapsed = now_ns() - start;
  // Single writer (this worker): plain loads and stores, no locked read-modify-write per poll.
  auto add = [](auto& counter, auto n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  };
  add(busy_ns_, elapsed);
  if (elapsed > max_poll_ns_.load(std::memory_order_relaxed)) {
    max_poll_ns_.store(elapsed, std::memory_order_relaxed);
  }
  std::size_t bucket = 0;
  while (bucket < kPollBoundsNs.size() && elapsed > kPollBoundsNs[bucket]) ++bucket;
  add(poll_buckets_[bucket], 1);
}

RuntimeMetrics::WorkerMetrics Worker::metrics() const {
  RuntimeMetrics::WorkerMetrics m;
  m.busy_time = std::chrono::nanoseconds(busy_ns_.load(std::memory_order_relaxed));
  m.max_poll_time = std::chrono::nanoseconds(max_poll_ns_.load(std::memory_order_relaxed));
  // Every poll is counted in exactly one bucket: their sum is the poll count.
  for (std::size_t i = 0; i < poll_buckets_.size(); ++i) {
    m.poll_time_histogram[i] = poll_buckets_[i].load(std::memory_order_relaxed);
    m.polls += m.poll_time_histogram[i];
  }
  m.queue_depth = depth_.load(std::memory_order_relaxed);
  m.inbox_depth = std::min(m.queue_depth, inbox_depth_.load(std::memory_order_relaxed));
  m.local_queue_depth = m.queue_depth - m.inbox_depth;
  m.events = events_.load(std::memory_order_relaxed);
  m.timers_pending = timers_pending_.load(std::memory_order_relaxed);
  return m;
}

void Worker::run_ready() {
  // Bounded so that a task that keeps re-posting itself cannot starve the completion queue.
  for (int budget = 1024; budget > 0; --budget) {
    Runnable* r = local_.pop();
    if (r == nullptr) return;
    depth_.fetch_sub(1, std::memory_order_relaxed);
    timed([r] { r->run(); });
  }
}

// --- timer heap: a binary min-heap on deadline, each op knowing its index ---

void Worker::heap_up(std::size_t i) {
  while (i > 0) {
    std::size_t parent = (i - 1) / 2;
    if (heap_[parent]->deadline <= heap_[i]->deadline) break;
    std::swap(heap_[parent], heap_[i]);
    heap_[parent]->heap_index = parent;
    heap_[i]->heap_index = i;
    i = parent;
  }
}

void Worker::heap_down(std::size_t i) {
  for (;;) {
    std::size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < heap_.size() && heap_[l]->deadline < heap_[m]->deadline) m = l;
    if (r < heap_.size() && heap_[r]->deadline < heap_[m]->deadline) m = r;
    if (m == i) return;
    std::swap(heap_[m], heap_[i]);
    heap_[m]->heap_index = m;
    heap_[i]->heap_index = i;
    i = m;
  }
}

void Worker::heap_remove(std::size_t i) {
  std::size_t last = heap_.size() - 1;
  if (i != last) {
    heap_[i] = heap_[last];
    heap_[i]->heap_index = i;
  }
  heap_.pop_back();
  timers_pending_.store(heap_.size(), std::memory_order_relaxed);
  if (i < heap_.size()) {
    heap_down(i);
    heap_up(i);
  }
}

void Worker::schedule(TimerOp* op) {
  if (stopping_) {
    // A stopping runtime fires new timers as aborted rather than letting them hold it open.
    post(op);
    return;
  }
  try_schedule(op);
}

bool Worker::try_schedule(TimerOp* op) {
  if (stopping_) return false;
  op->heap_index = heap_.size();
  heap_.push_back(op);
  timers_pending_.store(heap_.size(), std::memory_order_relaxed);
  heap_up(op->heap_index);
  return true;
}

bool Worker::unschedule(TimerOp* op) {
  if (op->heap_index >= heap_.size() || heap_[op->heap_index] != op) return false;
  heap_remove(op->heap_index);
  return true;
}

void Worker::fire_due_timers() {
  if (heap_.empty()) return;
  auto now = std::chrono::steady_clock::now();
  while (!heap_.empty() && heap_.front()->deadline <= now) {
    TimerOp* op = heap_.front();
    heap_remove(0);
    timed([op] { op->fire({}); });
  }
}

void Worker::begin_stop() {
  stopping_ = true;
  // Cancel what would otherwise keep the queue from draining: outgoing calls end CANCELLED,
  // timers complete with operation_aborted.
  for (CancellableOp* op = live_ops_; op != nullptr; op = op->next) op->cancel();
  std::vector<TimerOp*> timers;
  timers.swap(heap_);
  timers_pending_.store(0, std::memory_order_relaxed);
  for (TimerOp* op : timers) {
    op->heap_index = static_cast<std::size_t>(-1);
    timed([op] { op->fire(boost::asio::error::operation_aborted); });
  }
}

void Worker::run() {
  tl_worker = this;
#if TRELLIS_ASIO_INTERNALS
  detail::asio_internals::WorkerThreadInfo asio_thread_info;
#endif
  block_termination_signals();
  name_thread(core_->thread_name, index_);
  if (core_->on_thread_start) core_->on_thread_start();

  // What AsyncNext waits for: nothing (work is queued), or an event without end.
  const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  const gpr_timespec no_deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  for (;;) {
    if (!local_.empty()) run_ready();
    if (!heap_.empty()) fire_due_timers();
    if (stopping_ && !cq_shutdown_called_ && local_.empty()) {
      // Everything the stop released has run; now let the queue drain to SHUTDOWN.
      std::lock_guard lock(inbox_mu_);
      if (inbox_.empty()) {
        cq_closed_ = true;
        cq_shutdown_called_ = true;
        cq_->Shutdown();
      }
    }
    if (reactor_mode_) {
      // Stop once the queue has drained and what its last completions released has run (at the
      // loop's top), as when the worker reads the queue itself.
      if (cq_drained_ && local_.empty()) break;
      wait_on_reactor();
      continue;
    }
    gpr_timespec deadline;
    if (!local_.empty()) {
      deadline = no_wait;
    } else if (!heap_.empty()) {
      deadline = to_gpr_deadline(heap_.front()->deadline);
    } else {
      deadline = no_deadline;
    }
    void* tag = nullptr;
    bool ok = false;
    auto status = cq_->AsyncNext(&tag, &ok, deadline);
    if (status == grpc::CompletionQueue::SHUTDOWN) break;
    if (status == grpc::CompletionQueue::GOT_EVENT) {
      events_.store(events_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      timed([tag, ok] { static_cast<Completion*>(tag)->complete(ok); });
    }
  }

  if (cq_forwarder_.joinable()) cq_forwarder_.join();
  reactor_work_.reset();
  // The queue is drained: nothing can complete any more. Free what is left unrun; freeing may
  // queue more (destructors of coroutine frames), so repeat until empty.
  for (;;) {
    RunQueue rest;
    {
      std::lock_guard lock(inbox_mu_);
      rest.append(inbox_);
      if (local_.empty() && rest.empty()) {
        exited_ = true;
        break;
      }
    }
    rest.append(local_);  // keep order irrelevant: all are discarded
    local_.append(rest);
    local_.discard_all();
  }
  depth_.store(0, std::memory_order_relaxed);
  inbox_depth_.store(0, std::memory_order_relaxed);
  for (TimerOp* op : heap_) op->discard();
  heap_.clear();
  timers_pending_.store(0, std::memory_order_relaxed);
  if (core_->on_thread_stop) core_->on_thread_stop();
  tl_worker = nullptr;
}

// ----------------------------------------------------------------------------- RuntimeCore

struct RuntimeCore::IoThread {
  boost::asio::io_context context{1};
  // Keeps run() going while the context has nothing to do.
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
      context.get_executor()};
  std::thread thread;
};

RuntimeCore::RuntimeCore(Runtime* owner_in, const Runtime::Builder& b)
    : owner(owner_in),
      thread_name(b.name_),
      on_thread_start(b.on_start_),
      on_thread_stop(b.on_stop_),
      on_error(b.on_error_),
      max_blocking_(std::max<std::size_t>(1, b.max_blocking_)),
      watchdog_threshold_(b.watchdog_threshold_),
      on_stall_(b.on_stall_) {
  std::size_t n = b.workers_ != 0 ? b.workers_ : std::max(1u, std::thread::hardware_concurrency());
  // ServerCompletionQueues can only be made by a ServerBuilder. This builder is never built:
  // it only mints the queues, which the workers own and every Server registers (server.cpp).
  grpc::ServerBuilder mint;
  for (std::size_t i = 0; i < n; ++i) {
    workers.push_back(std::make_unique<Worker>(this, i, mint.AddCompletionQueue(true)));
  }
}

RuntimeCore::~RuntimeCore() = default;

void RuntimeCore::start() {
  raise_fd_limit_once();
  for (auto& w : workers) w->start();
  if (watchdog_threshold_.count() > 0) {
    watchdog_ = std::thread([this] { watchdog_loop(); });
  }
}

void RuntimeCore::watchdog_loop() {
  block_termination_signals();
  pthread_setname_np(pthread_self(), "trellis-watch");
  std::vector<std::int64_t> reported(workers.size(), 0);
  std::unique_lock lock(watchdog_mu_);
  const auto period = std::max(watchdog_threshold_ / 4, std::chrono::milliseconds(1));
  while (!watchdog_cv_.wait_for(lock, period, [this] { return watchdog_stop_; })) {
    std::int64_t now = now_ns();
    for (std::size_t i = 0; i < workers.size(); ++i) {
      std::int64_t start = workers[i]->resumption_start();
      auto stalled = std::chrono::nanoseconds(now - start);
      if (start == 0 || start == reported[i] || stalled < watchdog_threshold_) continue;
      reported[i] = start;
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(stalled);
      if (on_stall_) {
        on_stall_(i, ms);
      } else {
        log(LogLevel::kWarning,
            absl::StrCat("worker ", i, " has been busy in one resumption for ", ms.count(),
                         " ms: blocking code on a runtime worker? use spawn_blocking"));
      }
    }
  }
}

void RuntimeCore::submit_blocking(Runnable* work) {
  std::lock_guard lock(blocking_mu_);
  if (blocking_stop_) {
    work->discard();
    return;
  }
  blocking_queue_.push_back(work);
  if (blocking_idle_ == 0 && blocking_threads_.size() < max_blocking_) {
    blocking_threads_.emplace_back([this] { blocking_loop(); });
  } else {
    blocking_cv_.notify_one();
  }
}

void RuntimeCore::blocking_loop() {
  block_termination_signals();
  pthread_setname_np(pthread_self(), "trellis-blk");
  std::unique_lock lock(blocking_mu_);
  for (;;) {
    ++blocking_idle_;
    blocking_cv_.wait(lock, [this] { return blocking_stop_ || !blocking_queue_.empty(); });
    --blocking_idle_;
    if (blocking_queue_.empty()) return;  // stopping and nothing left
    Runnable* work = blocking_queue_.front();
    blocking_queue_.pop_front();
    lock.unlock();
    try {
      work->run();
    } catch (...) {
      report(std::current_exception(), "exception escaped spawn_blocking plumbing");
    }
    lock.lock();
  }
}

void RuntimeCore::report(std::exception_ptr error, const std::string& what) noexcept {
  try {
    if (on_error) {
      on_error(error, what);
      return;
    }
    std::string detail = "unknown exception";
    try {
      if (error) std::rethrow_exception(error);
    } catch (const std::exception& e) {
      detail = e.what();
    } catch (...) {
    }
    log(LogLevel::kError, absl::StrCat(what, ": ", detail));
  } catch (...) {
    // The error hook itself failed; there is nowhere left to report to.
  }
}

boost::asio::io_context& RuntimeCore::io_context() {
  std::lock_guard lock(io_mu_);
  if (io_closed_) {
    throw std::runtime_error("trellis::Runtime::io_context: the runtime is shutting down");
  }
  if (!io_) {
    io_ = std::make_unique<IoThread>();
    io_->thread = std::thread([this, context = &io_->context] {
      block_termination_signals();
      std::string name = (thread_name + "-io").substr(0, 15);
      pthread_setname_np(pthread_self(), name.c_str());
      // An exception escaping a handler is reported, and the thread goes on serving the rest.
      for (;;) {
        try {
          context->run();
          return;
        } catch (...) {
          report(std::current_exception(), "an exception escaped a handler on the I/O thread");
        }
      }
    });
  }
  return io_->context;
}

void RuntimeCore::shutdown(std::chrono::milliseconds grace) {
  std::call_once(shutdown_once_, [&] {
    if (live_servers.load() != 0) {
      log(LogLevel::kError,
          "trellis::Runtime destroyed while a Server built on it is alive; destroy servers first");
      std::abort();
    }
    if (grace.count() > 0) {
      std::unique_lock lock(alive_mu);
      alive_cv.wait_for(lock, grace, [this] { return tasks_alive.load() == 0; });
    }
    for (auto& w : workers) w->request_stop();
    for (auto& w : workers) w->join();
    {
      std::lock_guard lock(watchdog_mu_);
      watchdog_stop_ = true;
    }
    watchdog_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(blocking_mu_);
      blocking_stop_ = true;
      threads.swap(blocking_threads_);
    }
    blocking_cv_.notify_all();
    for (auto& t : threads) t.join();
    {
      std::lock_guard lock(io_mu_);
      io_closed_ = true;
    }
    if (io_) {
      io_->work.reset();
      io_->context.stop();
      io_->thread.join();
    }
  });
}

// ---------------------------------------------------------------- detail free functions

void post(Worker* w, Runnable* r) { w->post(r); }
bool running_in(const Worker* w) noexcept { return w != nullptr && tl_worker == w; }
boost::asio::execution_context& context_of(Worker* w) noexcept { return w->core().context; }
Runtime& runtime_of(Worker* w) noexcept { return *w->core().owner; }
void submit_blocking(RuntimeCore& core, Runnable* work) { core.submit_blocking(work); }

void count_spawn(RuntimeCore& core) noexcept {
  core.tasks_spawned.fetch_add(1, std::memory_order_relaxed);
  core.tasks_alive.fetch_add(1, std::memory_order_relaxed);
}

void count_finish(RuntimeCore& core, bool failed) noexcept {
  core.tasks_completed.fetch_add(1, std::memory_order_relaxed);
  if (failed) core.tasks_failed.fetch_add(1, std::memory_order_relaxed);
  if (core.tasks_alive.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(core.alive_mu);
    core.alive_cv.notify_all();
  }
}

void report_unobserved(RuntimeCore& core, std::exception_ptr error) noexcept {
  core.tasks_unobserved.fetch_add(1, std::memory_order_relaxed);
  core.report(std::move(error), "a spawned task failed and its JoinHandle was never joined");
}

void schedule_timer(TimerOp* op) { op->worker->schedule(op); }
bool try_schedule_timer(TimerOp* op) { return op->worker->try_schedule(op); }
bool unschedule_timer(TimerOp* op) { return op->worker->unschedule(op); }

void report_foreign_timer_cancel() noexcept {
  log(LogLevel::kError,
      "trellis: a timer was cancelled from a thread other than its worker's; the cancellation "
      "is ignored (await Trellis timers from tasks on a Trellis runtime)");
}

}  // namespace detail

// ----------------------------------------------------------------------------- WorkerTimer

bool WorkerTimer::arm(std::chrono::steady_clock::time_point deadline) {
  disarm();
  detail::Worker* worker = detail::current_worker();
  if (worker == nullptr) return false;
  entry_.worker = worker;
  entry_.deadline = deadline;
  armed_ = detail::try_schedule_timer(&entry_);
  return armed_;
}

void WorkerTimer::disarm() {
  if (armed_) detail::unschedule_timer(&entry_);
  armed_ = false;
}

// --------------------------------------------------------------------------------- Runtime

Runtime::Builder& Runtime::Builder::worker_threads(std::size_t n) {
  workers_ = n;
  return *this;
}
Runtime::Builder& Runtime::Builder::thread_name(std::string name) {
  name_ = std::move(name);
  return *this;
}
Runtime::Builder& Runtime::Builder::on_thread_start(std::function<void()> fn) {
  on_start_ = std::move(fn);
  return *this;
}
Runtime::Builder& Runtime::Builder::on_thread_stop(std::function<void()> fn) {
  on_stop_ = std::move(fn);
  return *this;
}
Runtime::Builder& Runtime::Builder::max_blocking_threads(std::size_t n) {
  max_blocking_ = n;
  return *this;
}
Runtime::Builder& Runtime::Builder::on_error(ErrorHook hook) {
  on_error_ = std::move(hook);
  return *this;
}
Runtime::Builder& Runtime::Builder::watchdog(std::chrono::milliseconds threshold, StallHook hook) {
  watchdog_threshold_ = threshold;
  on_stall_ = std::move(hook);
  return *this;
}
std::unique_ptr<Runtime> Runtime::Builder::build() {
  return std::unique_ptr<Runtime>(new Runtime(*this));
}

Runtime::Builder Runtime::multi_thread() { return Builder(); }
Runtime::Builder Runtime::single_thread() { return Builder().worker_threads(1); }

Runtime::Runtime(const Builder& b) : core_(std::make_shared<detail::RuntimeCore>(this, b)) {
  core_->start();
}

Runtime::~Runtime() { shutdown(); }

void Runtime::shutdown(std::chrono::milliseconds grace) {
  if (detail::tl_worker != nullptr && &detail::tl_worker->core() == core_.get()) {
    throw std::logic_error("trellis::Runtime::shutdown called on one of its own workers");
  }
  core_->shutdown(grace);
}

std::size_t Runtime::worker_count() const { return core_->workers.size(); }

Executor Runtime::executor(std::size_t index) const {
  return Executor(core_->workers.at(index).get());
}

Executor Runtime::executor() const {
  const std::size_t n = core_->workers.size();
  const std::size_t i = core_->next_worker.fetch_add(1, std::memory_order_relaxed);
  // Work queued on a worker stuck in one long poll (blocking code, a long computation) waits for
  // all of it while the others may idle (bench/skewed_load: 200 ms against 0.3 ms): pass over
  // such a worker. When every worker is, round robin stands.
  if (n > 1) {
    const std::int64_t now = detail::now_ns();
    for (std::size_t k = 0; k < n; ++k) {
      detail::Worker* w = core_->workers[(i + k) % n].get();
      const std::int64_t start = w->resumption_start();
      if (start == 0 || now - start < detail::kLongPollNs) return Executor(w);
    }
  }
  return Executor(core_->workers[i % n].get());
}

detail::RuntimeCore& detail::RuntimeAccess::core(const Runtime& runtime) { return *runtime.core_; }

boost::asio::io_context& Runtime::io_context() { return core_->io_context(); }

RuntimeMetrics Runtime::metrics() const {
  RuntimeMetrics m;
  m.tasks_spawned = core_->tasks_spawned.load();
  m.tasks_alive = core_->tasks_alive.load();
  m.tasks_completed = core_->tasks_completed.load();
  m.tasks_failed = core_->tasks_failed.load();
  m.tasks_unobserved = core_->tasks_unobserved.load();
  core_->read_blocking_pool(m);
  m.open_fds = detail::count_open_fds();
  m.fd_limit = detail::open_file_limit();
  for (auto& w : core_->workers) {
    m.workers.push_back(w->metrics());
    m.server_calls += w->live_server_calls.load(std::memory_order_relaxed);
    m.client_calls += w->live_client_calls.load(std::memory_order_relaxed);
  }
  return m;
}

Runtime* Runtime::current() noexcept {
  return detail::tl_worker != nullptr ? detail::tl_worker->core().owner : nullptr;
}

}  // namespace trellis
