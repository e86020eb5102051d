// trellis::Runtime: the worker threads, completion queues and task machinery Trellis owns.
#pragma once

#include <array>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "trellis/config.hpp"
#include "trellis/detail/asio_internals.hpp"
#include "trellis/executor.hpp"
#include "trellis/join_handle.hpp"
#include "trellis/task.hpp"

namespace boost::asio {
class io_context;
}

namespace trellis {

class Runtime;

namespace detail {
class RuntimeCore;
class Worker;
// The framework's access to a runtime's internals (a passkey).
struct RuntimeAccess {
  static RuntimeCore& core(const Runtime& runtime);
};
Worker* current_worker() noexcept;
void submit_blocking(RuntimeCore& core, Runnable* work);
}  // namespace detail

// Counters of the runtime's own health, read with Runtime::metrics(); docs/runtime.md explains
// how to read them when something is slow. Counters (the *_total and *time fields, polls,
// events) only grow from the runtime's start; a rate over an interval is the difference of two
// readings. Gauges (depths, pending, alive, open) are the value at the reading.
struct RuntimeMetrics {
  // The upper bounds of the poll-time histogram's buckets; one more bucket counts the polls
  // longer than the last bound.
  static constexpr std::array<std::chrono::nanoseconds, 6> kPollTimeBounds = {
      std::chrono::microseconds(10), std::chrono::microseconds(100), std::chrono::milliseconds(1),
      std::chrono::milliseconds(10), std::chrono::milliseconds(100), std::chrono::seconds(1)};

  struct WorkerMetrics {
    // A poll is one piece of work the worker runs to its next suspension: a queued runnable (a
    // task resumed, a posted function), a completion-queue event, a timer that fired, or on a
    // native server's workers a socket or socket-timer completion.
    std::uint64_t polls = 0;
    std::chrono::nanoseconds busy_time{0};      // the sum of the poll times: busy, not waiting
    std::chrono::nanoseconds max_poll_time{0};  // the longest single poll
    // Polls per bucket of kPollTimeBounds (each counted once, not cumulative); the last entry
    // counts the polls longer than every bound.
    std::array<std::uint64_t, kPollTimeBounds.size() + 1> poll_time_histogram{};
    std::size_t queue_depth = 0;        // local_queue_depth + inbox_depth
    std::size_t local_queue_depth = 0;  // runnables the worker queued itself, ready to run
    std::size_t inbox_depth = 0;        // runnables posted from other threads, not yet taken
    // Completion-queue events handled, and on a native server's workers socket and timer
    // completions too.
    std::uint64_t events = 0;
    std::size_t timers_pending = 0;  // timers scheduled on the worker and not yet fired
  };
  std::uint64_t tasks_spawned = 0;
  std::uint64_t tasks_alive = 0;
  std::uint64_t tasks_completed = 0;
  std::uint64_t tasks_failed = 0;        // ended with an exception (aborted tasks included)
  std::uint64_t tasks_unobserved = 0;    // failed with nobody to join them: sent to the error hook
  std::size_t blocking_threads = 0;      // threads of the spawn_blocking pool now
  std::size_t blocking_threads_max = 0;  // the pool's bound (Builder::max_blocking_threads)
  std::size_t blocking_queue_depth = 0;  // spawn_blocking work waiting for a thread
  std::int64_t server_calls = 0;         // incoming calls accepted and not yet fully finished
  std::int64_t client_calls = 0;         // outgoing calls (unary and streams) not yet freed
  // File descriptors open in the process (each connection takes one) and the limit on them
  // (RLIMIT_NOFILE's soft limit, which the runtime raises to the hard limit when it starts);
  // -1 when unknown (no /proc) or unlimited.
  std::int64_t open_fds = -1;
  std::int64_t fd_limit = -1;
  std::vector<WorkerMetrics> workers;
};

// Called with a task's exception when the task failed and its JoinHandle was dropped without
// being joined, and with worker-level errors (an exception escaping a runnable). Runs on the
// thread where the failure was seen; must not block.
using ErrorHook = std::function<void(std::exception_ptr error, const std::string& what)>;

// Called when a worker spent longer than the watchdog threshold in one resumption: blocking
// code on a worker. Runs on the watchdog thread.
using StallHook = std::function<void(std::size_t worker_index, std::chrono::milliseconds stalled)>;

// The owned async runtime (tokio's role). Each worker thread drives one gRPC completion queue and
// a local ready queue, and is an Asio execution context: Trellis calls started from a worker
// complete on that same worker, so a call's coroutine never hops threads. Build one with
// Runtime::multi_thread() or Runtime::single_thread(); destroying it shuts it down.
//
// Thread safety: every member function may be called from any thread, except where noted.
class Runtime {
 public:
  class Builder {
   public:
    // Number of worker threads; default: std::thread::hardware_concurrency().
    Builder& worker_threads(std::size_t n);
    // Prefix of the worker thread names (shown by top/gdb); default "trellis-wrk".
    Builder& thread_name(std::string name);
    Builder& on_thread_start(std::function<void()> fn);
    Builder& on_thread_stop(std::function<void()> fn);
    // Upper bound of the spawn_blocking pool; default 64. Work beyond it waits in a queue.
    Builder& max_blocking_threads(std::size_t n);
    // Where unobserved task failures go; default: a line on stderr.
    Builder& on_error(ErrorHook hook);
    // A worker stuck longer than `threshold` in one resumption is reported to `hook` (default:
    // a line on stderr). A zero threshold disables the watchdog. Default: 1 second.
    Builder& watchdog(std::chrono::milliseconds threshold, StallHook hook = nullptr);
    std::unique_ptr<Runtime> build();

   private:
    friend class Runtime;
    friend class detail::RuntimeCore;
    std::size_t workers_ = 0;
    std::string name_ = "trellis-wrk";
    std::function<void()> on_start_, on_stop_;
    std::size_t max_blocking_ = 64;
    ErrorHook on_error_;
    std::chrono::milliseconds watchdog_threshold_{1000};
    StallHook on_stall_;
  };

  // A runtime with one worker per hardware thread.
  static Builder multi_thread();
  // A runtime with exactly one worker thread: deterministic ordering for tests and debugging.
  static Builder single_thread();

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  // Shuts down (see shutdown()). Servers built on this runtime must be destroyed first.
  ~Runtime();

  std::size_t worker_count() const;
  // The executor of worker `index` (< worker_count()).
  Executor executor(std::size_t index) const;
  // The executor of the next worker in round-robin order, passing over a worker that has been
  // in one poll for more than a millisecond (blocking code or a long computation on it) unless
  // every worker is. spawn(task) and block_on start tasks there.
  Executor executor() const;

  // Runs `task` on the next worker. The returned handle can be joined (the task's result or
  // exception) or aborted. A task that fails while nobody joins it is reported to the error hook.
  // Throws std::runtime_error if the runtime is shutting down.
  template <class T>
  JoinHandle<T> spawn(Task<T> task) {
    return spawn(executor(), std::move(task));
  }
  // Runs `task` on the worker of `ex`.
  template <class T>
  JoinHandle<T> spawn(Executor ex, Task<T> task);

  // Runs the blocking callable `fn` on the blocking pool, never on a worker, and completes with
  // its result (or exception) on the awaiting coroutine's executor.
  template <class F, class Token = boost::asio::use_awaitable_t<>>
  auto spawn_blocking(F fn, Token&& token = {});

  // Runs `task` on a worker and blocks the calling thread until it finishes, returning its value
  // or rethrowing its exception. Throws std::logic_error when called on a worker thread (that
  // would block the worker); throws std::runtime_error if the runtime shuts down first.
  template <class T>
  T block_on(Task<T> task);

  // Stops the runtime: waits up to `grace` for spawned tasks to finish, then cancels what is
  // left (timers fire with operation_aborted, client calls end CANCELLED), drains the completion
  // queues and joins the threads. Idempotent; must not be called from a worker thread.
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  RuntimeMetrics metrics() const;

  // The runtime's I/O context, for socket I/O that gRPC does not do (the /metrics endpoint of
  // MetricsServer, a user's own Asio clients and servers): the workers drive gRPC completion
  // queues and have no reactor for Asio sockets. One thread the runtime owns runs it ("<thread
  // name>-io"), started on the first call; its handlers run there, never on a worker (post to an
  // Executor to continue on one). The thread stops when the runtime shuts down, after the
  // workers; I/O objects on the context must be destroyed before the runtime is. Throws
  // std::runtime_error once the runtime is shutting down.
  boost::asio::io_context& io_context();

  // The runtime whose worker is the calling thread, or nullptr.
  static Runtime* current() noexcept;

 private:
  friend struct detail::RuntimeAccess;

  explicit Runtime(const Builder& b);
  std::shared_ptr<detail::RuntimeCore> core_;
};

#if TRELLIS_ASIO_INTERNALS
namespace detail {
// The bottom frame of a spawned task's awaitable thread: runs the task and completes its join
// state, as co_spawn's entry point and completion handler do otherwise. Destroyed unfinished (the
// runtime shut down), `completion` completes the state with an error.
template <class T>
asio_internals::EntryPoint run_spawned(Task<T> task, JoinCompletion<T> completion) {
  std::exception_ptr error;
  if constexpr (std::is_void_v<T>) {
    try {
      co_await std::move(task);
    } catch (...) {
      error = std::current_exception();
    }
    completion(error);
  } else {
    std::optional<T> value;
    try {
      value.emplace(co_await std::move(task));
    } catch (...) {
      error = std::current_exception();
    }
    if (error) {
      completion(error);
    } else {
      completion(nullptr, std::move(*value));
    }
  }
}
}  // namespace detail
#endif

template <class T>
JoinHandle<T> Runtime::spawn(Executor ex, Task<T> task) {
  auto state = std::make_shared<detail::JoinState<T>>(core_, ex);
  state->on_spawn();
  auto slot = state->cancel_slot();
#if TRELLIS_ASIO_INTERNALS
  // The task's thread is started directly: co_spawn would add a frame of its own (its entry
  // point holds two tracked-work executors and the handler) and a proxy cancellation signal,
  // about 400 bytes per spawned task (docs/performance.md, "Tasks"). Like co_spawn, it starts at
  // once when spawned from the task's own worker, and is queued there otherwise.
  auto launch = [entry = detail::run_spawned<T>(std::move(task), detail::JoinCompletion<T>(state)),
                 ex, slot]() mutable {
    detail::asio_internals::Launch(std::move(entry), ex, slot).launch();
  };
  if (ex.running_in_this_thread()) {
    launch();
  } else {
    detail::post(ex.worker(), detail::make_runnable(std::move(launch)));
  }
#else
  boost::asio::co_spawn(
      ex, std::move(task),
      boost::asio::bind_cancellation_slot(slot, detail::JoinCompletion<T>(state)));
#endif
  return JoinHandle<T>(std::move(state));
}

template <class F, class Token>
auto Runtime::spawn_blocking(F fn, Token&& token) {
  using R = std::invoke_result_t<F&>;
  return boost::asio::async_initiate<Token, detail::ExceptionSignatureT<R>>(
      [core = core_, fallback = executor()](auto handler, F fn) mutable {
        auto work = [handler = std::move(handler), fn = std::move(fn), fallback]() mutable {
          auto ex = boost::asio::get_associated_executor(handler, fallback);
          std::exception_ptr error;
          if constexpr (std::is_void_v<R>) {
            try {
              fn();
            } catch (...) {
              error = std::current_exception();
            }
            boost::asio::post(ex,
                              [h = std::move(handler), error]() mutable { std::move(h)(error); });
          } else {
            std::optional<R> result;
            try {
              result.emplace(fn());
            } catch (...) {
              error = std::current_exception();
            }
            boost::asio::post(ex, [h = std::move(handler), error, r = std::move(result)]() mutable {
              std::move(h)(error, r ? std::move(*r) : R{});
            });
          }
        };
        detail::submit_blocking(*core, detail::make_runnable(std::move(work)));
      },
      token, std::move(fn));
}

template <class T>
T Runtime::block_on(Task<T> task) {
  if (detail::current_worker() != nullptr) {
    throw std::logic_error(
        "trellis::Runtime::block_on called on a runtime worker thread; co_await the task instead");
  }
  // Held by the completion handler only: if the runtime discards the task unfinished, the
  // promise dies with the handler and get() throws instead of waiting forever.
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  boost::asio::co_spawn(executor(), std::move(task),
                        [promise](std::exception_ptr error, auto&&... value) {
                          if (error) {
                            promise->set_exception(std::move(error));
                          } else {
                            promise->set_value(std::forward<decltype(value)>(value)...);
                          }
                        });
  try {
    return future.get();
  } catch (const std::future_error&) {
    throw std::runtime_error("trellis::Runtime::block_on: the runtime shut down first");
  }
}

}  // namespace trellis
