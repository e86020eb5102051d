// trellis::MetricsServer: an HTTP endpoint that serves a MetricsRegistry at GET /metrics for
// Prometheus to scrape.
//
//   auto metrics = std::make_shared<trellis::MetricsRegistry>();
//   auto endpoint = trellis::MetricsServer::start(metrics, "0.0.0.0:9464");
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

// Serves `GET /metrics` (a query string is ignored) with the registry's exposition and the
// content type `text/plain; version=0.0.4; charset=utf-8`. Any other path answers 404, any other
// method 405 (with `Allow: GET`), a request that is not valid HTTP/1.x 400. Connections are
// kept alive as HTTP/1.1 asks.
//
// Threading: the endpoint owns one Asio io_context and one thread that runs it; accepting,
// reading, scraping and writing all happen there. It never runs on, or blocks, a Trellis runtime
// worker, and the runtime need not exist (the registry may export none). The registry's scrape
// reads atomics and, if a runtime is set, Runtime::metrics(), both safe from any thread.
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

  // Stops (see stop()).
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the one picked when the address said 0).
  int port() const { return port_; }
  // The bound address, "IP:PORT" ("[IPV6]:PORT").
  const std::string& address() const { return address_; }

  // Stops accepting, closes every open connection (a response being written is cut short) and
  // joins the endpoint's thread. Idempotent.
  void stop();

  // Internal: what the endpoint's thread works on.
  struct State;

 private:
  explicit MetricsServer(std::unique_ptr<State> state);

  std::mutex stop_mu_;            // serialises stop()
  std::unique_ptr<State> state_;  // null once stopped
  int port_ = 0;
  std::string address_;
  std::thread thread_;
};

}  // namespace trellis
