// The helloworld Greeter of examples/helloworld/greeter_server.cpp with or without the stock
// middleware stack around its handler, for measuring what the stack costs a server
// (bench/run-middleware.sh).
//
//   middleware_server [--port N] [--host ADDR] [--threads T] [--grace_ms MS] [--layers none|full]
//
// --layers full puts the server stack of issue 4's benchmark around every method, outermost
// first: tracing (a span per call, handed to a no-op exporter), metrics (per-method counters and
// a latency histogram), a 30 s timeout (an arming timer per call: the load generator sends no
// deadline, so the layer's own is the earlier one), and a concurrency limit of 100000 that the
// benchmark never reaches. Retry is a client-side layer (it passes server calls through
// untouched), so it is not in this stack; bench/middleware_client.cpp measures it.
//
// Prints "middleware_server listening on port N" on stdout; SIGINT or SIGTERM shut it down, after
// which the call counts the metrics layer recorded go to stderr (a check that the stack ran).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "helloworld.trellis.h"
#include "trellis/middleware/concurrency_limit.hpp"
#include "trellis/middleware/metrics.hpp"
#include "trellis/middleware/span_exporter.hpp"
#include "trellis/middleware/timeout.hpp"
#include "trellis/middleware/tracing.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/stack.hpp"

ABSL_FLAG(int, port, 0, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, transport, "grpc",
          "the server transport: grpc (grpc core, the default) or native (Trellis's HTTP/2)");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on");
ABSL_FLAG(int, threads, 1, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, grace_ms, 5000, "how long in-flight calls may take to finish at shutdown");
ABSL_FLAG(std::string, layers, "none",
          "none: no middleware; full: tracing (no-op exporter), metrics, timeout 30s and a "
          "concurrency limit of 100000, in that order, around every method");

namespace {

// The handler of examples/helloworld/greeter_server.cpp.
class Greeter final : public helloworld::GreeterService {
  trellis::Task<trellis::Result<helloworld::HelloReply>> SayHello(
      trellis::ServerContext&, const helloworld::HelloRequest& request) override {
    if (request.name().empty()) co_return trellis::Status::invalid_argument("name is empty");
    helloworld::HelloReply reply;
    reply.set_message("Hello " + request.name());
    co_return reply;
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string layers = absl::GetFlag(FLAGS_layers);
  if (layers != "none" && layers != "full") {
    std::cerr << "middleware_server: --layers must be none or full, not " << layers << "\n";
    return 2;
  }
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();
  Greeter greeter;
  auto registry = std::make_shared<trellis::MetricsRegistry>();
  auto transport = trellis::parse_transport(absl::GetFlag(FLAGS_transport));
  if (!transport.ok()) {
    std::cerr << "middleware_server: --transport: " << transport.status() << "\n";
    return 2;
  }
  trellis::Server::Builder builder(*runtime);
  builder.transport(*transport);
  builder.add_insecure_port(absl::GetFlag(FLAGS_host) + ":" +
                            std::to_string(absl::GetFlag(FLAGS_port)));
  builder.add_service(greeter);
  if (layers == "full") {
    builder.layer(trellis::Stack()
                      .layer(trellis::TracingLayer(std::make_shared<trellis::NoopExporter>()))
                      .layer(trellis::MetricsLayer(registry))
                      .layer(trellis::TimeoutLayer(std::chrono::seconds(30)))
                      .layer(trellis::ConcurrencyLimitLayer(100000)));
  }
  auto server = builder.build();
  if (!server.ok()) {
    std::cerr << "middleware_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("middleware_server listening on port %d (layers: %s)\n", (*server)->port(),
              layers.c_str());
  std::fflush(stdout);

  int signo = signals.wait();
  std::fprintf(stderr, "middleware_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::milliseconds(absl::GetFlag(FLAGS_grace_ms)));
  server.value().reset();  // servers go before their runtime
  runtime->shutdown();
  if (layers == "full") {
    std::istringstream exposition(registry->scrape());
    for (std::string line; std::getline(exposition, line);) {
      if (line.find("SayHello") != std::string::npos && line.find("_total{") != std::string::npos)
        std::fprintf(stderr, "middleware_server: %s\n", line.c_str());
    }
  }
  return 0;
}
