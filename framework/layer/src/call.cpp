#include "trellis/call.hpp"

namespace trellis {

void Call::observe_messages(MessageObserver& observer) {
  if (stream_ != nullptr) stream_->observers().add(&observer, is_server());
}

}  // namespace trellis
