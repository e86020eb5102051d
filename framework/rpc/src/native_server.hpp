// Internal: the server side of Trellis on the native transport (Server::Builder::transport):
// listening sockets on the workers' reactors, one HTTP/2 session per connection
// (trellis_transport), and the call objects that run the generated services' handlers on it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "trellis/compression.hpp"
#include "trellis/keepalive.hpp"
#include "trellis/result.hpp"
#include "trellis/stack.hpp"
#include "trellis/tls.hpp"

namespace trellis {
class Runtime;
}

namespace trellis::detail {

class UnaryMethod;
class StreamMethod;

// A method the server serves: one of unary and stream is set.
struct NativeMethod {
  UnaryMethod* unary = nullptr;
  StreamMethod* stream = nullptr;
  const BoxService* stack = nullptr;  // the server's middleware for the method, or nullptr
};

// An address to listen on, and its TLS options (nullptr: in the clear).
struct NativePort {
  std::string address;
  const TlsServerOptions* tls = nullptr;
};

struct NativeServerOptions {
  int max_receive_message_size = 4 << 20;  // -1: unlimited
  int max_send_message_size = -1;          // -1: unlimited
  Compression default_compression = Compression::kNone;
  std::optional<Keepalive> keepalive;
  std::optional<std::chrono::milliseconds> min_ping_interval;
  std::optional<int> max_concurrent_streams;
  std::optional<std::chrono::milliseconds> max_connection_idle;
  std::optional<std::chrono::milliseconds> max_connection_age;
  std::chrono::milliseconds max_connection_age_grace{0};
};

class NativeServer {
 public:
  // Binds `ports` ("host:port", port 0 picking a free one; "unix:path"; "unix-abstract:name")
  // for a server on the workers of `runtime`; nothing is accepted before serve(). A TLS port's
  // files are read and checked first (the status names the port and the file). UNAVAILABLE
  // when an address cannot be bound, INVALID_ARGUMENT when it cannot be parsed or resolved.
  static Result<std::unique_ptr<NativeServer>> bind(Runtime& runtime,
                                                    const std::vector<NativePort>& ports,
                                                    NativeServerOptions options);
  // Starts accepting connections and serving `methods` (by path) on every worker.
  void serve(std::unordered_map<std::string, NativeMethod> methods);
  ~NativeServer();
  NativeServer(const NativeServer&) = delete;
  NativeServer& operator=(const NativeServer&) = delete;

  // Each port's number, in bind's order (0 for a unix socket).
  const std::vector<int>& ports() const;
  // Stops accepting, sends every connection a GOAWAY, lets the calls run for up to `grace`,
  // then closes the connections (their calls are cancelled) and waits until every connection
  // and call object is gone. Blocks: never on a runtime worker.
  void shutdown(std::chrono::milliseconds grace);

  struct State;

 private:
  explicit NativeServer(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace trellis::detail
