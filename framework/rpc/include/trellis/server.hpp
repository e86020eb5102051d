// trellis::Server: serves Trellis services over gRPC on a Runtime's workers.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trellis/compression.hpp"
#include "trellis/keepalive.hpp"
#include "trellis/layer.hpp"
#include "trellis/result.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/stack.hpp"
#include "trellis/tls.hpp"
#include "trellis/transport.hpp"

namespace grpc {
class ServerBuilder;
class ServerCredentials;
}  // namespace grpc

namespace trellis {

class Runtime;
class Service;

// A running gRPC server. Incoming calls are spread over all workers of the runtime: on the grpc
// transport every worker waits for new calls on its own completion queue; on the native
// transport (Builder::transport) each connection belongs to one worker, in turn. A call's
// handler runs on the worker that received it. Unknown methods are answered UNIMPLEMENTED; a
// handler that throws is answered INTERNAL with a generic message (the exception is logged) and
// the server carries on.
//
// Destroy the server (or call shutdown) before its runtime.
class Server {
 public:
  class State;

  class Builder {
   public:
    explicit Builder(Runtime& runtime);
    ~Builder();
    Builder(Builder&&) noexcept;

    // Listens on `address` ("127.0.0.1:0", "[::]:50051", "unix:/tmp/sock") without TLS. With
    // port 0 the system picks a free port; Server::ports() tells which.
    Builder& add_insecure_port(std::string address);
    // Listens on `address` with TLS, or mutual TLS when `options` ask clients for a certificate
    // (trellis/tls.hpp). build() reads and checks the PEM files then, on the calling thread, and
    // fails naming the file when one cannot be read or holds no valid PEM; gRPC then watches them
    // and new connections use what is on disk.
    Builder& add_tls_port(std::string address, TlsServerOptions options);
    // Serves `service`, which must outlive the server. Two services with one name are an error,
    // and so is a service that another server was built with, even (on the grpc transport) one
    // that failed to bind its ports (grpc++ binds a service to the first server started with
    // it, for the rest of the service's life).
    // `layer` (a Layer, a Stack, or a DynStack) wraps this service's methods only, inside the
    // server-wide layers.
    Builder& add_service(Service& service, BoxLayer layer = {});
    // Adds a middleware layer around every method's handler. Layers added first are outermost:
    // they see a call first and its status last. See docs/middleware.md.
    Builder& layer(BoxLayer layer);
    // How many calls per method each worker keeps requested ahead of arrival (default 2). More
    // lowers accept latency under bursts; each one is a pending operation on the worker's queue.
    Builder& requests_per_worker(int n);
    // The largest message a call may receive (default 4 MiB) and send (default unlimited), in
    // bytes; -1 is unlimited. A larger message fails the call with RESOURCE_EXHAUSTED.
    Builder& max_receive_message_size(int bytes);
    Builder& max_send_message_size(int bytes);
    // How responses are compressed unless a handler says otherwise (default kNone).
    Builder& default_compression(Compression compression);
    // Pings every connection's client as `keepalive` says (default: every 2 hours), and
    // cancels the calls of a client that stops answering.
    Builder& keepalive(Keepalive keepalive);
    // Clients' pings are tolerated this often at most (default 5 minutes); see Keepalive.
    Builder& min_ping_interval(std::chrono::milliseconds interval);
    // Closes (with GOAWAY) a connection that carried no call for `idle`, and any connection once
    // it is `age` old, letting its calls run for up to `grace` more. Clients reconnect, and meet
    // new servers behind a load balancer or a DNS name. Default: never.
    Builder& max_connection_idle(std::chrono::milliseconds idle);
    Builder& max_connection_age(std::chrono::milliseconds age, std::chrono::milliseconds grace);
    // Calls one connection may carry at once (default unlimited); a client queues the others.
    Builder& max_concurrent_streams(int streams);
    // The number of file descriptors the server must be able to open: one per connection, a few
    // of its own. The runtime raises the soft limit on open files (RLIMIT_NOFILE) to the hard
    // limit when it starts, and says so on stderr; build() fails with RESOURCE_EXHAUSTED, naming
    // both limits, when the limit is still below `n`, instead of the server refusing connections
    // once it runs out. Default 0: no check.
    Builder& min_open_files(std::size_t n);
    // Escape hatch: adjust the underlying grpc::ServerBuilder before the server starts, after
    // the typed options above (which set channel arguments of the same names). grpc transport
    // only.
    Builder& configure(std::function<void(grpc::ServerBuilder&)> fn);
    // Which HTTP/2 implementation serves the calls (trellis/transport.hpp; default grpc core).
    // With Transport::native, build() fails with UNIMPLEMENTED if configure was called (there is
    // no grpc::ServerBuilder to adjust).
    Builder& transport(Transport transport);

    // Starts the server; an error (for example an address that cannot be bound) as a Status.
    Result<std::unique_ptr<Server>> build();

   private:
    // Applies a typed option to the grpc::ServerBuilder (unlike configure, not user code).
    Builder& grpc_option(std::function<void(grpc::ServerBuilder&)> fn);
    Status check_native() const;
    Status start_grpc(State& state,
                      const std::vector<std::shared_ptr<grpc::ServerCredentials>>& credentials);

    Runtime* runtime_;
    Transport transport_ = Transport::grpc;
    // The typed options as the native transport reads them, and the names of those it cannot
    // honour.
    int max_receive_message_size_ = 4 << 20;
    int max_send_message_size_ = -1;
    Compression default_compression_ = Compression::kNone;
    std::optional<Keepalive> keepalive_;
    std::optional<std::chrono::milliseconds> min_ping_interval_;
    std::optional<int> max_concurrent_streams_;
    std::optional<std::chrono::milliseconds> max_connection_idle_;
    std::optional<std::chrono::milliseconds> max_connection_age_;
    std::chrono::milliseconds max_connection_age_grace_{0};
    bool configured_ = false;  // configure was called: grpc transport only
    std::vector<std::string> addresses_;
    std::vector<std::pair<std::size_t, TlsServerOptions>> tls_ports_;  // (index in addresses_, TLS)
    std::vector<Service*> services_;
    std::vector<BoxLayer> service_layers_;  // one per service
    DynStack layers_;
    int requests_per_worker_ = 2;
    std::size_t min_open_files_ = 0;
    std::vector<std::function<void(grpc::ServerBuilder&)>> configure_;
  };

  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound ports, in the order the addresses were added (0 for unix sockets).
  const std::vector<int>& ports() const;
  // ports().front().
  int port() const;

  // Graceful shutdown: first calls every served service's on_server_shutdown hook (a
  // HealthService turns every status NOT_SERVING and tells its watchers), then stops accepting
  // calls, lets in-flight calls finish for up to `grace`, then cancels the rest (their handlers
  // see cancellation) and waits until they are gone. Blocks; must not be called on a runtime
  // worker thread. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

 private:
  explicit Server(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace trellis
