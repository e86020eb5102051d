// Internal: what every client-side stream core has besides StreamCore: the release of the user's
// handle. Both kinds (a plain call, and one behind a middleware stack) derive from it, and every
// ClientStreamHandle holds one of them.
#pragma once

#include "trellis/detail/stream_core.hpp"

namespace trellis::detail {

class ClientStreamCore : public StreamCore {
 public:
  // The handle is gone: cancel the call unless it has finished, free the object once nothing
  // refers to it any more. Any thread.
  virtual void release() noexcept = 0;

 protected:
  ~ClientStreamCore() = default;
};

}  // namespace trellis::detail
