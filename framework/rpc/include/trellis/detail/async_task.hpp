// Internal: a call's Task as an Asio asynchronous operation for any completion token.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/associator.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <exception>
#include <utility>

#include "trellis/executor.hpp"
#include "trellis/result.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis::detail {

// INTERNAL, naming what a client layer threw.
Status client_layer_threw(const std::exception_ptr& error);

// Adapts co_spawn's void(std::exception_ptr, Result<R>) to the void(Result<R>) of Trellis
// operations, keeping the handler's executor, cancellation slot and allocator (the associator
// below).
template <class Handler>
struct ResultCompletion {
  Handler handler;

  template <class R>
  void operator()(std::exception_ptr error, Result<R> result) {
    if (error) result = client_layer_threw(error);
    std::move(handler)(std::move(result));
  }
};

// Runs a call's `task` for `token`, completing with void(Result<R>) like every stream operation.
// An exception from the task (a client layer threw) completes it with INTERNAL naming it. The task
// runs on the Trellis worker of the handler's associated executor, else on the calling worker. Off
// any runtime it runs on the handler's executor, as awaiting it there would, and the call fails
// with FAILED_PRECONDITION.
template <class R, class Token>
auto async_task(Task<Result<R>> task, Token&& token) {
  return boost::asio::async_initiate<Token, void(Result<R>)>(
      [](auto handler, Task<Result<R>> task) {
        auto handler_executor = boost::asio::get_associated_executor(handler);
        ResultCompletion<decltype(handler)> completion{std::move(handler)};
        if (Worker* w = worker_for(handler_executor); w != nullptr) {
          boost::asio::co_spawn(Executor(w), std::move(task), std::move(completion));
        } else {
          boost::asio::co_spawn(handler_executor, std::move(task), std::move(completion));
        }
      },
      token, std::move(task));
}

}  // namespace trellis::detail

template <template <class, class> class Associator, class Handler, class DefaultCandidate>
struct boost::asio::associator<Associator, trellis::detail::ResultCompletion<Handler>,
                               DefaultCandidate> : Associator<Handler, DefaultCandidate> {
  static typename Associator<Handler, DefaultCandidate>::type get(
      const trellis::detail::ResultCompletion<Handler>& h) noexcept {
    return Associator<Handler, DefaultCandidate>::get(h.handler);
  }
  static auto get(const trellis::detail::ResultCompletion<Handler>& h,
                  const DefaultCandidate& c) noexcept
      -> decltype(Associator<Handler, DefaultCandidate>::get(h.handler, c)) {
    return Associator<Handler, DefaultCandidate>::get(h.handler, c);
  }
};
