// Internal: one runtime worker thread, its completion queue, ready queues and timer heap.
#pragma once

#include <grpcpp/alarm.h>
#include <grpcpp/completion_queue.h>

#include <array>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "trellis/detail/runnable.hpp"
#include "trellis/runtime.hpp"
#include "trellis/timer.hpp"

namespace trellis::detail {

class RuntimeCore;

// A pending operation that must be cancelled when the runtime stops (an outgoing RPC).
// Linked into its worker's list while pending; touched only on the worker thread.
class CancellableOp {
 public:
  virtual void cancel() = 0;
  CancellableOp* prev = nullptr;
  CancellableOp* next = nullptr;

 protected:
  ~CancellableOp() = default;
};

// A FIFO of Runnables linked through Runnable::next.
class RunQueue {
 public:
  void push(Runnable* r) {
    r->next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = r;
    } else {
      head_ = r;
    }
    tail_ = r;
    ++size_;
  }
  Runnable* pop() {
    Runnable* r = head_;
    if (r == nullptr) return nullptr;
    head_ = r->next;
    if (head_ == nullptr) tail_ = nullptr;
    --size_;
    return r;
  }
  void append(RunQueue& other) {
    if (other.head_ == nullptr) return;
    if (tail_ != nullptr) {
      tail_->next = other.head_;
    } else {
      head_ = other.head_;
    }
    tail_ = other.tail_;
    size_ += other.size_;
    other.head_ = other.tail_ = nullptr;
    other.size_ = 0;
  }
  bool empty() const { return head_ == nullptr; }
  std::size_t size() const { return size_; }
  void discard_all() {
    while (Runnable* r = pop()) r->discard();
  }

 private:
  Runnable* head_ = nullptr;
  Runnable* tail_ = nullptr;
  std::size_t size_ = 0;
};

class Worker {
 public:
  Worker(RuntimeCore* core, std::size_t index, std::unique_ptr<grpc::ServerCompletionQueue> cq);
  ~Worker();

  void start();
  void join();
  // Begins the stop sequence on the worker thread (posted).
  void request_stop();

  void post(Runnable* r);
  bool in_this_thread() const noexcept;

  // Operations may be started on the queue only while this holds (worker thread only).
  bool accepting_ops() const { return !stopping_; }
  void track(CancellableOp* op);
  void untrack(CancellableOp* op);

  void schedule(TimerOp* op);
  bool try_schedule(TimerOp* op);
  bool unschedule(TimerOp* op);

  RuntimeCore& core() const { return *core_; }
  std::size_t index() const { return index_; }
  grpc::ServerCompletionQueue* cq() const { return cq_.get(); }

  // The executor of the worker's own Asio reactor, for sockets and timers that live on this
  // worker (the native transport); their handlers run as the worker's other callbacks do
  // (run_timed). The worker waits on its completion queue until use_reactor() is first called;
  // from then on it waits on the reactor, whose handlers run on the worker thread, and a thread
  // of its own waits on the completion queue and posts each completion to the worker. The
  // switch is made once, for the worker's life: the default (grpc-only) runtime never pays for
  // the hop. Any thread; the reactor may be used at once (what it completes runs once the
  // switch is made).
  boost::asio::any_io_executor reactor_executor();
  void use_reactor();
  // Runs fn(arg) as a callback of the worker: timed for the poll metrics and the watchdog, an
  // escaping exception reported. Inside another such callback (a handler dispatched from one),
  // it simply calls fn. On the worker thread.
  void run_timed(void (*fn)(void*), void* arg);

  // Nanoseconds since the steady epoch at which the current resumption began, 0 when idle.
  std::int64_t resumption_start() const {
    return resumption_start_.load(std::memory_order_relaxed);
  }
  // A reading of the worker's counters for Runtime::metrics(); from any thread.
  RuntimeMetrics::WorkerMetrics metrics() const;

  // Call objects alive on this worker: accepted server calls and started client calls. Written
  // only by the worker thread (count_call), read by Runtime::metrics; tests use them to find
  // leaks.
  std::atomic<std::int64_t> live_server_calls{0};
  std::atomic<std::int64_t> live_client_calls{0};
  static void count_call(std::atomic<std::int64_t>& counter, std::int64_t delta) {
    // Single writer: a plain load and store, no locked read-modify-write on the hot path.
    counter.store(counter.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }

 private:
  class Wakeup final : public Completion {
   public:
    explicit Wakeup(Worker* w) : worker_(w) {}
    void complete(bool ok) override;

   private:
    Worker* worker_;
  };

  void run();
  void wait_on_reactor();
  void forward_completions();
  void run_ready();
  void fire_due_timers();
  void begin_stop();
  void drain_inbox();
  void heap_up(std::size_t i);
  void heap_down(std::size_t i);
  void heap_remove(std::size_t i);
  template <class Fn>
  void timed(Fn&& fn);

  RuntimeCore* core_;
  std::size_t index_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;

  RunQueue local_;  // worker thread only

  std::mutex inbox_mu_;
  RunQueue inbox_;          // guarded by inbox_mu_
  bool cq_closed_ = false;  // guarded by inbox_mu_: no alarm may be set once the queue shuts down
  bool exited_ = false;     // guarded by inbox_mu_: posts after exit are discarded at once
  std::atomic<bool> wake_pending_{false};
  grpc::Alarm wake_alarm_;
  Wakeup wakeup_{this};

  // The reactor, and the switch to it (see use_reactor). reactor_mode_ is written by the worker
  // thread under inbox_mu_, read under it by posters and freely by the worker thread.
  boost::asio::io_context reactor_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> reactor_work_{
      reactor_.get_executor()};
  bool reactor_requested_ = false;  // guarded by inbox_mu_
  bool reactor_mode_ = false;
  bool cq_drained_ = false;  // worker thread only: the forwarder saw the queue's SHUTDOWN
  std::thread cq_forwarder_;

  std::vector<TimerOp*> heap_;  // worker thread only
  CancellableOp* live_ops_ = nullptr;

  bool stopping_ = false;  // worker thread only
  bool cq_shutdown_called_ = false;

  // Written by the worker thread only (single writer: plain loads and stores, no locked
  // read-modify-write per poll), read by metrics() from any thread.
  std::atomic<std::int64_t> resumption_start_{0};
  std::atomic<std::int64_t> busy_ns_{0};
  std::atomic<std::int64_t> max_poll_ns_{0};
  std::array<std::atomic<std::uint64_t>, RuntimeMetrics::kPollTimeBounds.size() + 1>
      poll_buckets_{};
  std::atomic<std::uint64_t> events_{0};
  std::atomic<std::size_t> timers_pending_{0};
  // Runnables queued (local and inbox) and in the inbox alone: the inbox's is written under
  // inbox_mu_.
  std::atomic<std::size_t> depth_{0};
  std::atomic<std::size_t> inbox_depth_{0};
};

Worker* current_worker() noexcept;

}  // namespace trellis::detail
