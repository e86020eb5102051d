// Internal: the state a Runtime shares with its workers, tasks and servers.
#pragma once

#include <atomic>
#include <boost/asio/execution_context.hpp>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "trellis/runtime.hpp"
#include "worker.hpp"

namespace trellis::detail {

class RuntimeCore {
 public:
  RuntimeCore(Runtime* owner, const Runtime::Builder& b);
  ~RuntimeCore();

  void start();
  void shutdown(std::chrono::milliseconds grace);
  void submit_blocking(Runnable* work);
  void report(std::exception_ptr error, const std::string& what) noexcept;

  Runtime* owner;
  boost::asio::execution_context context;
  std::vector<std::unique_ptr<Worker>> workers;
  std::atomic<std::size_t> next_worker{0};

  std::string thread_name;
  std::function<void()> on_thread_start, on_thread_stop;
  ErrorHook on_error;

  std::atomic<std::uint64_t> tasks_spawned{0}, tasks_completed{0}, tasks_failed{0};
  std::atomic<std::uint64_t> tasks_alive{0};
  std::atomic<std::uint64_t> tasks_unobserved{0};
  std::mutex alive_mu;
  std::condition_variable alive_cv;

  std::atomic<int> live_servers{0};

  // Runtime::io_context(): the context, its thread started on first use.
  boost::asio::io_context& io_context();

 private:
  void blocking_loop();
  void watchdog_loop();

  // The spawn_blocking pool: threads are created on demand up to max_blocking_.
  std::mutex blocking_mu_;
  std::condition_variable blocking_cv_;
  std::deque<Runnable*> blocking_queue_;
  std::vector<std::thread> blocking_threads_;
  std::size_t blocking_idle_ = 0;
  std::size_t max_blocking_;
  bool blocking_stop_ = false;

  std::chrono::milliseconds watchdog_threshold_;
  StallHook on_stall_;
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;

  std::once_flag shutdown_once_;

  struct IoThread;
  std::mutex io_mu_;
  std::unique_ptr<IoThread> io_;  // kept until the core is destroyed: I/O objects refer to it
  bool io_closed_ = false;

 public:
  // The spawn_blocking pool's part of Runtime::metrics().
  void read_blocking_pool(RuntimeMetrics& m) {
    std::lock_guard lock(blocking_mu_);
    m.blocking_threads = blocking_threads_.size();
    m.blocking_threads_max = max_blocking_;
    m.blocking_queue_depth = blocking_queue_.size();
  }
};

}  // namespace trellis::detail
