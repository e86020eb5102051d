// Internal: how Trellis operations hand their outcome to an Asio completion handler.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <type_traits>
#include <utility>

#include "trellis/executor.hpp"

namespace trellis::detail {

// Moves the handler out of an operation, first disconnecting the operation's cancellation
// handler from the handler's slot (it must not outlive the operation).
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

// Invokes `handler(args...)` on its associated executor (by default worker `w`'s): inline when
// that is the calling worker, which is the common case of an operation completing on the worker
// of the coroutine that awaits it.
template <class Handler, class... Args>
void complete(Handler handler, Worker* w, Args&&... args) {
  auto ex = boost::asio::get_associated_executor(handler, Executor(w));
  // The common case, spelled out: dispatch would run the handler inline too, but only after
  // moving it and the arguments (a whole message) into a function object.
  if (is_worker_executor(ex, w) && running_in(w)) {
    std::move(handler)(std::forward<Args>(args)...);
    return;
  }
  boost::asio::dispatch(ex, [h = std::move(handler), ... a = std::move(args)]() mutable {
    std::move(h)(std::move(a)...);
  });
}

}  // namespace trellis::detail
