#include "trellis/middleware/timeout.hpp"

#include "trellis/runtime.hpp"

namespace trellis::detail {

void ServerTimeout::expired() {
  expired_ = true;
  ctx_->cancel_with(deadline_exceeded_by_layer());
}

Status deadline_exceeded_by_layer() {
  return Status::deadline_exceeded("the server's time limit for the call ran out");
}

}  // namespace trellis::detail

namespace trellis {

HookDecision TimeoutLayer::before(Call& call, State& state) const {
  auto deadline = std::chrono::system_clock::now() +
                  std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout_);
  if (call.is_client()) {
    auto current = call.deadline();
    if (!current || deadline < *current) call.options()->set_deadline(deadline);
    return HookDecision::proceed();
  }
  ServerContext& ctx = *call.server_context();
  // gRPC enforces the client's deadline by itself; the layer only adds an earlier one.
  if (ctx.deadline() <= deadline) return HookDecision::proceed();
  ctx.set_deadline(deadline);
  state.timer.emplace(ctx);
  state.timer->arm(std::chrono::steady_clock::now() + timeout_);
  return HookDecision::proceed();
}

void TimeoutLayer::after(Call&, State& state, CallOutcome& outcome) const {
  if (!state.timer) return;
  state.timer->disarm();
  // What the handler returned or threw once its time ran out is the timeout, not its answer.
  if (state.timer->expired_before()) {
    outcome.error = nullptr;
    outcome.status = detail::deadline_exceeded_by_layer();
  }
}

}  // namespace trellis
