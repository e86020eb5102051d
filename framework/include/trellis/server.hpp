// trellis::Server: serves Trellis services over gRPC on a Runtime's workers.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trellis/layer.hpp"
#include "trellis/result.hpp"
#include "trellis/stack.hpp"

namespace grpc {
class ServerBuilder;
}

namespace trellis {

class Runtime;
class Service;

// A running gRPC server. Incoming calls are spread over all workers of the runtime: every worker
// waits for new calls on its own completion queue, and a call's handler runs on the worker that
// received it. Unknown methods are answered UNIMPLEMENTED; a handler that throws is answered
// INTERNAL with a generic message (the exception is logged) and the server carries on.
//
// Destroy the server (or call shutdown) before its runtime.
class Server {
 public:
  class Builder {
   public:
    explicit Builder(Runtime& runtime);
    ~Builder();
    Builder(Builder&&) noexcept;

    // Listens on `address` ("127.0.0.1:0", "[::]:50051", "unix:/tmp/sock") without TLS. With
    // port 0 the system picks a free port; Server::ports() tells which.
    Builder& add_insecure_port(std::string address);
    // Serves `service`, which must outlive the server. Two services with one name are an error.
    // `layer` (a Layer, a Stack, or a DynStack) wraps this service's methods only, inside the
    // server-wide layers.
    Builder& add_service(Service& service, BoxLayer layer = {});
    // Adds a middleware layer around every method's handler. Layers added first are outermost:
    // they see a call first and its status last. See docs/middleware.md.
    Builder& layer(BoxLayer layer);
    // How many calls per method each worker keeps requested ahead of arrival (default 2). More
    // lowers accept latency under bursts; each one is a pending operation on the worker's queue.
    Builder& requests_per_worker(int n);
    // Escape hatch: adjust the underlying grpc::ServerBuilder (message size limits, channel
    // arguments, keepalive) before the server starts.
    Builder& configure(std::function<void(grpc::ServerBuilder&)> fn);

    // Starts the server; an error (for example an address that cannot be bound) as a Status.
    Result<std::unique_ptr<Server>> build();

   private:
    Runtime* runtime_;
    std::vector<std::string> addresses_;
    std::vector<Service*> services_;
    std::vector<BoxLayer> service_layers_;  // one per service
    DynStack layers_;
    int requests_per_worker_ = 2;
    std::vector<std::function<void(grpc::ServerBuilder&)>> configure_;
  };

  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound ports, in the order the addresses were added (0 for unix sockets).
  const std::vector<int>& ports() const;
  // ports().front().
  int port() const;

  // Graceful shutdown: stops accepting calls at once, lets in-flight calls finish for up to
  // `grace`, then cancels the rest (their handlers see cancellation) and waits until they are
  // gone. Blocks; must not be called on a runtime worker thread. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  class State;

 private:
  explicit Server(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Blocks the calling thread until the process receives SIGINT or SIGTERM and returns the signal
// number. Trellis's own threads never take these signals, so the caller sees them.
int wait_for_shutdown_signal();

}  // namespace trellis
