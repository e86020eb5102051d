// The helloworld Greeter served by Trellis: a coroutine handler on the Trellis runtime, with the
// health and reflection services, until SIGINT or SIGTERM, then a graceful shutdown (health
// turns NOT_SERVING first, then in-flight calls drain).
#include <cstdio>
#include <iostream>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "helloworld.trellis.h"
#include "trellis/health.hpp"
#include "trellis/reflection.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/tls.hpp"

ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, transport, "grpc",
          "the server transport: grpc (grpc core, the default) or native (Trellis's HTTP/2)");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, threads, 0, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, grace_ms, 5000, "how long in-flight calls may take to finish at shutdown");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain file: serve TLS with it and --tls_key (reloaded when it changes)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA file: require client certificates signed by it (mutual TLS)");
ABSL_FLAG(bool, health, true, "serve grpc.health.v1.Health (--health=false to turn it off)");
ABSL_FLAG(bool, reflection, true,
          "serve grpc.reflection.v1 and v1alpha ServerReflection (--reflection=false: off)");

class Greeter final : public helloworld::GreeterService {
  trellis::Task<trellis::Result<helloworld::HelloReply>> SayHello(
      trellis::ServerContext&, const helloworld::HelloRequest& request) override {
    if (request.name().empty()) co_return trellis::Status::invalid_argument("name is empty");
    helloworld::HelloReply reply;
    reply.set_message("Hello " + request.name());
    co_return reply;
  }
};

// Adds the listening port the flags ask for: plaintext, TLS (--tls_cert, --tls_key) or mutual TLS
// (and --tls_client_ca). False, with a message, for flags that do not go together.
bool add_port(trellis::Server::Builder& builder) {
  const std::string address =
      absl::GetFlag(FLAGS_host) + ":" + std::to_string(absl::GetFlag(FLAGS_port));
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() && key.empty()) {
    if (!client_ca.empty()) {
      std::cerr << "greeter_server: --tls_client_ca needs --tls_cert and --tls_key\n";
      return false;
    }
    builder.add_insecure_port(address);
    return true;
  }
  // A missing or bad file (or only one of the two) fails build() with a message naming it.
  trellis::TlsServerOptions tls = trellis::TlsServerOptions::from_files(cert, key, client_ca);
  tls.require_client_cert = !client_ca.empty();
  builder.add_tls_port(address, std::move(tls));
  return true;
}

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();
  Greeter greeter;
  trellis::HealthService health;
  trellis::ReflectionService reflection;
  auto transport = trellis::parse_transport(absl::GetFlag(FLAGS_transport));
  if (!transport.ok()) {
    std::cerr << "greeter_server: --transport: " << transport.status() << "\n";
    return 2;
  }
  trellis::Server::Builder builder(*runtime);
  builder.transport(*transport);
  if (!add_port(builder)) return 2;
  builder.add_service(greeter);
  if (absl::GetFlag(FLAGS_health)) builder.add_service(health.service());
  if (absl::GetFlag(FLAGS_reflection)) {
    builder.add_service(reflection.v1()).add_service(reflection.v1alpha());
  }
  auto server = builder.build();
  if (!server.ok()) {
    std::cerr << "greeter_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("greeter_server listening on port %d\n", (*server)->port());
  std::fflush(stdout);

  int signo = signals.wait();
  std::fprintf(stderr, "greeter_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::milliseconds(absl::GetFlag(FLAGS_grace_ms)));
  server.value().reset();  // servers go before their runtime
  runtime->shutdown();
  return 0;
}
