// Internal: every use Trellis makes of Boost.Asio's internal interfaces (boost::asio::detail),
// and only here. Compiled in when TRELLIS_ASIO_INTERNALS is 1 (trellis/config.hpp, from the
// CMake option of that name, default on), which requires the Boost version this was checked
// against. With 0, Trellis takes the portable paths everywhere: co_spawn to start a handler's
// task, async_initiate for every stream operation, and workers without Asio's per-thread
// recycling cache. docs/performance.md records what each path costs.
//
// What is used, all from boost/asio/impl/awaitable.hpp and boost/asio/detail/ of Boost 1.81:
//  - awaitable_thread: the object co_spawn makes to run a coroutine; launched directly, it starts
//    a handler's task on the accepting worker without co_spawn's dispatch, post and completion
//    dispatch (Launch);
//  - awaitable_frame_base::await_transform for a function of the frame, detach_thread,
//    attach_thread, pop_frame and pump, and awaitable_frame<R>::return_value: what
//    async_result<use_awaitable_t> itself uses, to suspend a task in an operation and resume it
//    from the operation's completion without a handler object in between (SuspendedTask);
//  - awaitable_handler, the handler use_awaitable's initiation makes (TaskHandler), and
//    awaitable_async_op_handler, the handler co_await of an asynchronous operation passes
//    (AsyncOpHandler), which both are awaitable threads;
//  - thread_context's call stack and thread_info_base: what io_context threads push so that
//    Asio recycles the memory of coroutine frames and handlers per thread (WorkerThreadInfo).
#pragma once

#include "trellis/config.hpp"

#if TRELLIS_ASIO_INTERNALS

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/detail/thread_context.hpp>
#include <boost/asio/detail/thread_info_base.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/version.hpp>
#include <optional>
#include <type_traits>
#include <utility>

#if BOOST_VERSION != 108100
#error \
    "TRELLIS_ASIO_INTERNALS is checked against Boost 1.81 only; configure with -DTRELLIS_ASIO_INTERNALS=OFF"
#endif

namespace trellis::detail::asio_internals {

using Thread = boost::asio::detail::awaitable_thread<boost::asio::any_io_executor>;
using FrameBase = boost::asio::detail::awaitable_frame_base<boost::asio::any_io_executor>;
template <class R>
using Frame = boost::asio::detail::awaitable_frame<R, boost::asio::any_io_executor>;

// The identity of an awaitable thread, the same for the thread object and every handler made
// from it: its bottom frame.
inline const void* thread_id(Thread& thread) { return thread.entry_point(); }

// ---------------------------------------------------------------------------------- Launch

// The return type of the bottom frame of a thread started with Launch.
using EntryPoint = boost::asio::awaitable<boost::asio::detail::awaitable_thread_entry_point,
                                          boost::asio::any_io_executor>;

// A new awaitable thread running `entry` on `ex`, with `slot` as its cancellation slot and
// co_spawn's default filter (terminal cancellation only). launch() runs it on the calling thread
// until it first suspends, as co_spawn does underneath.
class Launch {
 public:
  Launch(EntryPoint entry, boost::asio::any_io_executor ex, boost::asio::cancellation_slot slot)
      : thread_(std::move(entry), std::move(ex), slot, boost::asio::cancellation_state(slot)) {}
  const void* id() { return thread_id(thread_); }
  void launch() { thread_.launch(); }

 private:
  Thread thread_;
};

// ------------------------------------------------------------------------------ Suspension

// The handler use_awaitable's initiation makes: completing it resumes the awaiting task.
template <class R>
using TaskHandler = boost::asio::detail::awaitable_handler<boost::asio::any_io_executor, R>;

// A task suspended in a coroutine returning awaitable<R>, which the operation resumes itself
// (as TaskHandler would, without being a handler).
template <class R>
class SuspendedTask {
 public:
  SuspendedTask(Thread* thread, FrameBase* frame)
      : thread_(std::move(*thread)), frame_(static_cast<Frame<R>*>(frame)) {}
  SuspendedTask(SuspendedTask&&) = default;

  const void* id() { return thread_id(thread_); }
  boost::asio::any_io_executor executor() const { return thread_.get_executor(); }
  boost::asio::cancellation_slot cancellation_slot() const {
    return thread_.get_cancellation_slot();
  }
  // The handler to use instead, for an operation that cannot resume the task itself.
  TaskHandler<R> into_handler() && { return TaskHandler<R>(&thread_); }

  // Clears the cancellation slot, makes `result` the frame's result, pops the frame and runs the
  // task on the calling thread until it next suspends. The frame (and what lives in it) is gone
  // when this returns.
  void resume(R result) && {
    Resumer thread(std::move(thread_));
    auto slot = thread.get_cancellation_slot();
    if (slot.is_connected()) slot.clear();
    frame_->return_value(std::move(result));
    thread.resume(frame_);
  }

 private:
  class Resumer : public Thread {
   public:
    explicit Resumer(Thread&& thread) : Thread(std::move(thread)) {}
    void resume(FrameBase* top) {
      top->attach_thread(this);
      top->pop_frame();
      this->pump();
    }
  };

  Thread thread_;
  Frame<R>* frame_;
};

// Suspends the calling task in a new frame returning R, with an `Op` of storage in that frame,
// and calls `start(SuspendedTask<R>&&, std::optional<Op>&)` once it is suspended (the operation
// may complete at once, on another thread). The operation resumes the task with its result
// (SuspendedTask::resume), or hands the task on as a TaskHandler.
template <class R, class Op, class Start>
boost::asio::awaitable<R> suspend(Start start) {
  std::optional<Op> op;
  co_await [&](FrameBase* frame) -> Thread* {
    start(SuspendedTask<R>(frame->detach_thread(), frame), op);
    return nullptr;
  };
  // Not reached: the operation's completion pops this frame with its result.
  co_return R{};
}

// What co_await of an Asio asynchronous operation in a task passes the operation: calling it with
// the result clears the task's cancellation slot and resumes it, on the calling thread.
template <class R>
using AsyncOpHandler =
    boost::asio::detail::awaitable_async_op_handler<void(R), boost::asio::any_io_executor>;

template <class Token, class R>
inline constexpr bool kIsAsyncOpHandler = std::is_same_v<std::decay_t<Token>, AsyncOpHandler<R>>;

// ------------------------------------------------------------------- Worker thread context

// Asio recycles the memory of coroutine frames, type-erased handlers and cancellation handlers
// through a small per-thread cache, only on threads that have a thread_info_base on Asio's
// thread call stack, as io_context threads do. A worker pushes one for its whole life.
class WorkerThreadInfo : public boost::asio::detail::thread_context {
 public:
  WorkerThreadInfo() : entry_(this, info_) {}
  WorkerThreadInfo(const WorkerThreadInfo&) = delete;
  WorkerThreadInfo& operator=(const WorkerThreadInfo&) = delete;

 private:
  boost::asio::detail::thread_info_base info_;
  thread_call_stack::context entry_;
};

}  // namespace trellis::detail::asio_internals

#endif  // TRELLIS_ASIO_INTERNALS
