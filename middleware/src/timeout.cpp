#include "trellis/middleware/timeout.hpp"

#include "trellis/detail/stream_core.hpp"
#include "trellis/runtime.hpp"

namespace trellis::detail {

void ServerTimeout::arm(std::chrono::steady_clock::time_point at) {
  worker = current_worker();
  if (worker == nullptr) return;
  deadline = at;
  armed_ = try_schedule_timer(this);
}

void ServerTimeout::disarm() {
  if (armed_) unschedule_timer(this);
  armed_ = false;
  ctx_ = nullptr;
}

void ServerTimeout::fire(boost::system::error_code ec) {
  armed_ = false;
  if (ec || ctx_ == nullptr) return;
  expired_ = true;
  if (stream_ != nullptr) stream_->fail(deadline_exceeded_by_layer());
  ctx_->mark_cancelled();
  // Last: what the signal resumes may end the handler and this frame with it.
  ctx_->cancellation_signal().emit(boost::asio::cancellation_type::terminal);
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
  state.timer.emplace(ctx, call.stream());
  state.timer->arm(std::chrono::steady_clock::now() + timeout_);
  return HookDecision::proceed();
}

void TimeoutLayer::after(Call&, State& state, CallOutcome& outcome) const {
  if (!state.timer) return;
  state.timer->disarm();
  // What the handler returned or threw once its time ran out is the timeout, not its answer.
  if (state.timer->expired()) {
    outcome.error = nullptr;
    outcome.status = detail::deadline_exceeded_by_layer();
  }
}

}  // namespace trellis
