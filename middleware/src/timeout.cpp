#include "trellis/middleware/timeout.hpp"

namespace trellis::detail {

void ServerTimeout::expire(boost::system::error_code ec) {
  if (ec || ctx_ == nullptr) return;  // disarmed first
  expired_ = true;
  ctx_->mark_cancelled();
  ctx_->cancellation_signal().emit(boost::asio::cancellation_type::terminal);
}

void ServerTimeout::disarm() {
  ctx_ = nullptr;
  timer_cancel_.emit(boost::asio::cancellation_type::terminal);
}

Status deadline_exceeded_by_layer() {
  return Status::deadline_exceeded("the server's time limit for the call ran out");
}

}  // namespace trellis::detail
