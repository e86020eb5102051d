// Internal: what every thread the framework starts does first.
#pragma once

#include <cstddef>
#include <string>

namespace trellis::detail {

// Framework threads never take SIGINT/SIGTERM: those belong to the application's main thread
// (ShutdownSignals), and a signal landing on another thread would kill the process.
void block_termination_signals();

// Names the calling thread "<prefix>-<index>" (cut to the 15 characters Linux keeps).
void name_thread(const std::string& prefix, std::size_t index);

}  // namespace trellis::detail
