#include "trellis/call.hpp"

namespace trellis {

void Call::observe_messages(MessageObserver& observer) {
  if (stream_ != nullptr) stream_->observe(observer, is_server());
}

}  // namespace trellis
