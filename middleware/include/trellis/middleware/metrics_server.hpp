// trellis::MetricsServer: an HTTP endpoint that serves a MetricsRegistry at GET /metrics for
// Prometheus to scrape (Boost.Beast, on the runtime's I/O thread or a thread of its own). A
// program that already runs a prometheus-cpp Exposer can register the registry with it instead
// (metrics.hpp).
//
//   auto metrics = std::make_shared<trellis::MetricsRegistry>();
//   auto endpoint = trellis::MetricsServer::start(*runtime, metrics, "0.0.0.0:9464");
//   if (!endpoint.ok()) return fail(endpoint.status());
//   // scrape http://HOST:9464/metrics; destroying *endpoint stops it.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "trellis/middleware/metrics.hpp"
#include "trellis/result.hpp"

namespace trellis {

// Serves `GET /metrics` (a query string is ignored) with MetricsRegistry::scrape() (the
// registry's Collect(), written by prometheus-cpp's TextSerializer) and the content type
// `text/plain; version=0.0.4; charset=utf-8`. Any other path answers 404, any other
// method 405 (with `Allow: GET`), a request that is not valid HTTP/1.x 400. Connections are
// kept alive as HTTP/1.1 asks.
//
// Threading: accepting, reading, scraping and writing all happen on one thread, never on a
// Trellis runtime worker (the workers drive gRPC completion queues; Asio sockets need a reactor):
//  - start(runtime, ...): the runtime's I/O thread (Runtime::io_context()), which the runtime
//    owns and may share with other I/O. The endpoint must be stopped (or destroyed) before the
//    runtime shuts down.
//  - start(registry, ...): an io_context and a thread of the endpoint's own; no runtime needed
//    (the registry may export none).
// A scrape reads the registry's atomics and, if a runtime is set, Runtime::metrics(), both safe
// from any thread.
//
// Thread safety: port(), address() and stop() may be called from any thread.
class MetricsServer {
 public:
  struct Options {
    // How long a connection may take to send a request, or to read a response, and how long an
    // idle kept-alive connection stays open. Guards the endpoint's single thread against slow
    // or stuck clients.
    std::chrono::milliseconds io_timeout{10'000};
    // Connections open at once; further ones are closed as soon as they are accepted.
    std::size_t max_connections = 64;
  };

  // Binds `address` ("HOST:PORT", "[IPV6]:PORT"; HOST may be a name, which is resolved here,
  // once; PORT 0 picks a free port, see port()) and starts serving. Errors: INVALID_ARGUMENT for
  // a null registry or a malformed address, UNAVAILABLE when the address cannot be resolved or
  // bound (in use, no permission).
  static Result<std::unique_ptr<MetricsServer>> start(
      std::shared_ptr<const MetricsRegistry> registry, const std::string& address);
  static Result<std::unique_ptr<MetricsServer>> start(
      std::shared_ptr<const MetricsRegistry> registry, const std::string& address, Options options);
  // The same on `runtime`'s I/O thread. Also FAILED_PRECONDITION when the runtime is shutting
  // down.
  static Result<std::unique_ptr<MetricsServer>> start(
      Runtime& runtime, std::shared_ptr<const MetricsRegistry> registry,
      const std::string& address);
  static Result<std::unique_ptr<MetricsServer>> start(
      Runtime& runtime, std::shared_ptr<const MetricsRegistry> registry, const std::string& address,
      Options options);

  // Stops (see stop()).
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the one picked when the address said 0).
  int port() const { return port_; }
  // The bound address, "IP:PORT" ("[IPV6]:PORT").
  const std::string& address() const { return address_; }

  // Stops accepting, closes every open connection (a response being written is cut short), and
  // returns once nothing of the endpoint runs any more (its own thread joined, or its work on
  // the runtime's I/O thread ended). Idempotent; must not be called on the I/O thread.
  void stop();

  // Internal: what the endpoint's thread works on.
  struct State;

 private:
  explicit MetricsServer(std::unique_ptr<State> state);
  // `runtime`: nullptr for an endpoint with a thread of its own.
  static Result<std::unique_ptr<MetricsServer>> launch(
      Runtime* runtime, std::shared_ptr<const MetricsRegistry> registry, const std::string& address,
      Options options);

  std::mutex stop_mu_;            // serialises stop()
  std::unique_ptr<State> state_;  // null once stopped
  int port_ = 0;
  std::string address_;
  std::thread thread_;  // the endpoint's own thread; none on a runtime
};

}  // namespace trellis
