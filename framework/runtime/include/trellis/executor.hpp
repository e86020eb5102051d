// trellis::Executor: the Asio executor of one runtime worker thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/execution_context.hpp>

#include "trellis/detail/runnable.hpp"

namespace trellis {

class Runtime;
namespace detail {
class Worker;
// Queues `r` on `w`: a lock-free local queue from w's own thread, a locked inbox and a
// completion-queue wakeup from any other thread.
void post(Worker* w, Runnable* r);
bool running_in(const Worker* w) noexcept;
boost::asio::execution_context& context_of(Worker* w) noexcept;
Runtime& runtime_of(Worker* w) noexcept;
// The worker an operation whose handler is bound to `ex` runs on: the Trellis worker behind
// `ex`, else the calling thread's worker, else nullptr (the operation then fails at once with an
// error saying it must run on a Trellis runtime).
Worker* worker_for(const boost::asio::any_io_executor& ex) noexcept;
}  // namespace detail

// Satisfies Asio's executor requirements (and converts to boost::asio::any_io_executor), so
// `co_spawn(executor, ...)`, `post`, `dispatch` and awaitables run on the worker. Work submitted
// with blocking.possibly from the worker's own thread (what `dispatch` does) runs inline;
// everything else is queued. Cheap to copy: a pointer and a flag.
class Executor {
 public:
  Executor() noexcept = default;
  explicit Executor(detail::Worker* worker, bool never_block = false) noexcept
      : worker_(worker), never_block_(never_block) {}

  template <class F>
  void execute(F&& f) const {
    if (!never_block_ && detail::running_in(worker_)) {
      std::decay_t<F> local(std::forward<F>(f));
      std::move(local)();
      return;
    }
    detail::post(worker_, detail::make_runnable(std::forward<F>(f)));
  }

  boost::asio::execution_context& query(boost::asio::execution::context_t) const noexcept {
    return detail::context_of(worker_);
  }
  boost::asio::execution::blocking_t query(boost::asio::execution::blocking_t) const noexcept {
    return never_block_
               ? boost::asio::execution::blocking_t(boost::asio::execution::blocking.never)
               : boost::asio::execution::blocking_t(boost::asio::execution::blocking.possibly);
  }
  Executor require(boost::asio::execution::blocking_t::never_t) const noexcept {
    return Executor(worker_, true);
  }
  Executor require(boost::asio::execution::blocking_t::possibly_t) const noexcept {
    return Executor(worker_, false);
  }

  // True when called from this executor's worker thread.
  bool running_in_this_thread() const noexcept { return detail::running_in(worker_); }
  Runtime& runtime() const noexcept { return detail::runtime_of(worker_); }
  detail::Worker* worker() const noexcept { return worker_; }

  friend bool operator==(const Executor& a, const Executor& b) noexcept {
    return a.worker_ == b.worker_ && a.never_block_ == b.never_block_;
  }
  friend bool operator!=(const Executor& a, const Executor& b) noexcept { return !(a == b); }

 private:
  detail::Worker* worker_ = nullptr;
  bool never_block_ = false;
};

}  // namespace trellis
