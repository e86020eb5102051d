// trellis::ShutdownSignals: SIGINT and SIGTERM, caught from the start, waited for at the end.
#pragma once

#include <memory>

namespace trellis {

// Catches SIGINT and SIGTERM from its construction until its destruction: a signal that arrives
// in between is kept for wait() instead of killing the process. Construct it before the server
// starts listening, so that a SIGTERM sent as soon as the process is up (an orchestrator that
// gives up on a starting pod, a test harness) starts the drain rather than killing the process
// with calls in flight. Destroying it restores the signals' previous handling.
//
// One at a time per process (Asio's signal_set, underneath, shares the signals between its
// sets). Trellis's own threads never take these signals, so the thread that waits sees them.
class ShutdownSignals {
 public:
  ShutdownSignals();
  ~ShutdownSignals();
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;

  // Blocks until SIGINT or SIGTERM has arrived since construction (returns at once if one
  // already has) and returns its number. Each signal is returned once: a second wait() waits for
  // the next.
  int wait();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Blocks the calling thread until the process receives SIGINT or SIGTERM and returns the signal
// number. It catches them only from its call on: a signal that arrives before kills the process
// with the default action. A server constructs a ShutdownSignals before it listens instead.
int wait_for_shutdown_signal();

}  // namespace trellis
