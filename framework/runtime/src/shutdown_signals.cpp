#include "trellis/shutdown_signals.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>

namespace trellis {

// Asio's signal_set queues a signal that arrives while no wait is pending, and hands it to the
// next async_wait: that is what keeps a signal sent before wait().
struct ShutdownSignals::State {
  boost::asio::io_context io;
  boost::asio::signal_set signals{io, SIGINT, SIGTERM};
};

ShutdownSignals::ShutdownSignals() : state_(std::make_unique<State>()) {}

ShutdownSignals::~ShutdownSignals() = default;

int ShutdownSignals::wait() {
  int received = 0;
  state_->signals.async_wait(
      [&](const boost::system::error_code&, int signo) { received = signo; });
  state_->io.restart();
  state_->io.run();
  return received;
}

int wait_for_shutdown_signal() { return ShutdownSignals().wait(); }

}  // namespace trellis
