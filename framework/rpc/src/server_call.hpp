// Internal: what every kind of server call object shares, whichever transport carries the call.
#pragma once

#include <atomic>
#include <boost/asio/cancellation_type.hpp>
#include <exception>
#include <string>

#include "absl/strings/str_cat.h"
#include "log.hpp"
#include "trellis/server_context.hpp"
#include "trellis/status.hpp"
#include "worker.hpp"

namespace trellis::detail {

// The status a call ends with when its handler's task has completed with `error` or `status`.
// An exception is logged and answered INTERNAL with a generic message (the client must not see
// server internals), or CANCELLED when it came from the call's own cancellation.
inline Status handler_outcome(const std::exception_ptr& error, Status status,
                              const ServerContext& ctx) {
  if (!error) return status;
  if (ctx.is_cancelled()) return Status::cancelled("call cancelled");
  log(LogLevel::kError,
      absl::StrCat("handler of ", std::string(ctx.method()), " threw: ", exception_text(error)));
  return Status::internal("internal error");
}

// Marks the context cancelled and emits the terminal cancellation to the handler's task. On the
// call's worker, where the task's cancellation is signalled. What the handler awaits is not
// resumed inside emit(): every operation's cancellation handler only cancels or posts.
inline void cancel_handler(ServerContext& ctx) {
  ServerContextAccess::mark_cancelled(ctx);
  ServerContextAccess::signal(ctx).emit(boost::asio::cancellation_type::terminal);
}

// How a call object runs ServerContext::cancel_with from any thread: on its worker, at once when
// called there, else posted; the object stays alive until a posted one has run (pending_posts()
// is part of its condition to free itself).
template <class Call>
void run_cancel_with(Call* call, Worker* worker, std::atomic<int>& pending, Status status) {
  if (worker->in_this_thread()) {
    call->cancel_now(std::move(status));
    return;
  }
  pending.fetch_add(1, std::memory_order_relaxed);
  worker->post(make_runnable([call, &pending, status = std::move(status)]() mutable {
    pending.fetch_sub(1, std::memory_order_relaxed);
    call->cancel_now(std::move(status));
    call->maybe_free();
  }));
}

}  // namespace trellis::detail
