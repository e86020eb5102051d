// trellis::Task<T>: the coroutine type of handlers, client calls and spawned tasks.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace trellis {

// A Trellis task is a plain Boost.Asio awaitable on the type-erased I/O executor, so everything
// written for Asio (co_spawn, awaitable operators such as `a || b`, cancellation slots, Asio's
// own I/O objects) composes with it. Inside a task, `co_await boost::asio::this_coro::executor`
// yields an executor wrapping the Trellis worker the task runs on.
template <class T = void>
using Task = boost::asio::awaitable<T>;

// The completion token that turns an asynchronous operation into a Task.
inline constexpr boost::asio::use_awaitable_t<> use_task{};

}  // namespace trellis
