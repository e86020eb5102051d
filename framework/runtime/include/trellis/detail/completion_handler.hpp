// Internal: how Trellis operations hand their outcome to an Asio completion handler.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/post.hpp>
#include <tuple>
#include <type_traits>
#include <utility>

#include "trellis/executor.hpp"

namespace trellis::detail {

// The threading rule every Trellis operation follows. An operation runs on a worker (the one
// that owns its gRPC call, timer or queue); its handler belongs to an executor, usually the
// worker of the task that awaits it, which may be another one. Asio's cancellation slots and
// signals are not thread-safe: the handler's slot is signalled on the handler's executor, so the
// operation installs its cancellation handler there (at initiation) and removes it there (at
// completion, with take_handler). A cancellation handler therefore runs on the handler's
// executor, and may only do what is safe from any thread (cancel a gRPC call) or post to the
// operation's worker; it never resumes the awaiting coroutine inline, inside the signal's
// emit(), whose caller may not survive that.

// Moves the handler out of an operation, first disconnecting the operation's cancellation
// handler from the handler's slot (it must not outlive the operation). Only on the handler's
// executor (see above).
template <class Handler>
Handler take_handler(Handler& handler) {
  auto slot = boost::asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) slot.clear();
  return Handler(std::move(handler));
}

// Whether `ex` is worker `w`'s own executor (the one that may run work inline).
template <class Ex>
bool is_worker_executor(const Ex& ex, Worker* w) {
  if constexpr (std::is_same_v<Ex, Executor>) {
    return ex == Executor(w);
  } else if constexpr (std::is_same_v<Ex, boost::asio::any_io_executor>) {
    const Executor* te = ex.template target<Executor>();
    return te != nullptr && *te == Executor(w);
  } else {
    return false;
  }
}

// Whether an operation completing on worker `w` may invoke `handler` right there: the handler's
// executor (by default: w's) is w's own and this is w's thread. The common case: an operation
// completing on the worker of the coroutine that awaits it.
template <class Handler>
bool completes_inline(const Handler& handler, Worker* w) {
  return running_in(w) &&
         is_worker_executor(boost::asio::get_associated_executor(handler, Executor(w)), w);
}

// The completion of operation `Op` posted to its handler's executor: there it takes the handler
// (clearing the slot), frees the operation and invokes the handler. An executor that drops it
// unrun (it is shutting down) frees the operation without invoking the handler.
template <class Op, class... Args>
class DeferredCompletion {
 public:
  explicit DeferredCompletion(Op* op, Args... args) : op_(op), args_(std::move(args)...) {}
  DeferredCompletion(DeferredCompletion&& other) noexcept
      : op_(std::exchange(other.op_, nullptr)), args_(std::move(other.args_)) {}
  DeferredCompletion& operator=(DeferredCompletion&&) = delete;
  ~DeferredCompletion() {
    if (op_ != nullptr) {
      take_handler(op_->handler);
      delete op_;
    }
  }

  void operator()() {
    Op* op = std::exchange(op_, nullptr);
    auto handler = take_handler(op->handler);
    delete op;
    std::apply([&](auto&... args) { std::move(handler)(std::move(args)...); }, args_);
  }

 private:
  Op* op_;
  std::tuple<Args...> args_;
};

// Completes operation `op` on worker `w` with `args...`. `op` owns its handler (`op->handler`);
// deleting it frees both. Inline when completes_inline(); otherwise on the handler's executor
// (DeferredCompletion), and `op` stays alive until then with `op->completed` set, so that a
// cancellation handler signalled in between can tell that the outcome is decided.
template <class Op, class... Args>
void complete_op(Op* op, Worker* w, Args... args) {
  if (completes_inline(op->handler, w)) {
    auto handler = take_handler(op->handler);
    delete op;
    std::move(handler)(std::move(args)...);
    return;
  }
  op->completed.store(true, std::memory_order_release);
  auto ex = boost::asio::get_associated_executor(op->handler, Executor(w));
  boost::asio::post(ex, DeferredCompletion<Op, Args...>(op, std::move(args)...));
}

}  // namespace trellis::detail
