// The helloworld Greeter behind a middleware stack: tracing (OTLP/JSON lines on stderr, or in a
// file an OpenTelemetry Collector reads), Prometheus metrics on an HTTP /metrics endpoint, load
// shedding, a time limit per call, and a request log.
//
// Names with a meaning, to see the layers at work:
//   "slow"     the handler waits 10 s (cancellably): a client timeout ends it DEADLINE_EXCEEDED
//   "flaky"    every other "flaky" call fails UNAVAILABLE (the first one fails): retries help
#include <atomic>
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "helloworld.trellis.h"
#include "request_log_layer.hpp"
#include "trellis/middleware/load_shed.hpp"
#include "trellis/middleware/metrics.hpp"
#include "trellis/middleware/metrics_server.hpp"
#include "trellis/middleware/span_exporter.hpp"
#include "trellis/middleware/timeout.hpp"
#include "trellis/middleware/tracing.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/stack.hpp"
#include "trellis/timer.hpp"

ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, metrics_port, 9464, "port of the HTTP /metrics endpoint; 0 picks a free one");
ABSL_FLAG(int, threads, 0, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, max_concurrent, 100, "calls served at once; more are answered RESOURCE_EXHAUSTED");
ABSL_FLAG(int, time_limit_ms, 30000, "the longest a call may take on this server");
ABSL_FLAG(bool, trace, true, "export a span per call as OTLP/JSON lines on stderr");
ABSL_FLAG(std::string, trace_file, "",
          "with --trace: append the spans to this file instead (the OTLP/JSON lines an "
          "OpenTelemetry Collector's otlpjsonfile receiver reads)");
ABSL_FLAG(bool, log_requests, false, "log one line per call on stderr");

class Greeter final : public helloworld::GreeterService {
  trellis::Task<trellis::Result<helloworld::HelloReply>> SayHello(
      trellis::ServerContext& ctx, const helloworld::HelloRequest& request) override {
    if (request.name().empty()) co_return trellis::Status::invalid_argument("name is empty");
    if (request.name() == "slow") co_await trellis::sleep_for(std::chrono::seconds(10));
    if (request.name() == "flaky" && flaky_calls_.fetch_add(1) % 2 == 0) {
      co_return trellis::Status::unavailable("flaky on purpose; try again");
    }
    // The trace id of the call, for the handler's own logging.
    if (const trellis::TraceContext* trace = trellis::current_trace(ctx)) {
      std::fprintf(stderr, "SayHello(%s) trace_id=%s\n", request.name().c_str(),
                   trace->trace_id.hex().c_str());
    }
    helloworld::HelloReply reply;
    reply.set_message("Hello " + request.name());
    co_return reply;
  }

  std::atomic<int> flaky_calls_{0};
};

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();

  auto registry = std::make_shared<trellis::MetricsRegistry>();
  registry->set_runtime(runtime.get());
  // Served on the runtime's I/O thread; stopped (destroyed) before the runtime, at the end of main.
  // The registry is a prometheus::Collectable: a program that already runs a prometheus-cpp
  // Exposer for its own metrics would call exposer.RegisterCollectable(registry) instead.
  auto metrics = trellis::MetricsServer::start(
      *runtime, registry,
      absl::GetFlag(FLAGS_host) + ":" + std::to_string(absl::GetFlag(FLAGS_metrics_port)));
  if (!metrics.ok()) {
    std::cerr << "middleware_server: " << metrics.status() << "\n";
    return 1;
  }

  std::shared_ptr<trellis::SpanExporter> exporter = std::make_shared<trellis::NoopExporter>();
  if (absl::GetFlag(FLAGS_trace) && absl::GetFlag(FLAGS_trace_file).empty()) {
    exporter = trellis::OtlpJsonFileExporter::to_stderr();
  } else if (absl::GetFlag(FLAGS_trace)) {
    auto file = trellis::OtlpJsonFileExporter::open(absl::GetFlag(FLAGS_trace_file));
    if (!file.ok()) {
      std::cerr << "middleware_server: " << file.status() << "\n";
      return 1;
    }
    exporter = std::move(file).value();
  }
  // The order of the stack, outermost first: the span and the metrics cover everything below,
  // including calls the shedder refuses; the time limit covers only the handler.
  auto stack =
      trellis::Stack()
          .layer(trellis::TracingLayer(exporter, {.service_name = "greeter"}))
          .layer(trellis::MetricsLayer(registry))
          .layer(
              trellis::LoadShedLayer(static_cast<std::size_t>(absl::GetFlag(FLAGS_max_concurrent))))
          .layer(
              trellis::TimeoutLayer(std::chrono::milliseconds(absl::GetFlag(FLAGS_time_limit_ms))));

  Greeter greeter;
  trellis::Server::Builder builder(*runtime);
  builder.add_insecure_port(absl::GetFlag(FLAGS_host) + ":" +
                            std::to_string(absl::GetFlag(FLAGS_port)));
  if (absl::GetFlag(FLAGS_log_requests)) builder.layer(RequestLogLayer("middleware_server"));
  auto server = builder.layer(stack).add_service(greeter).build();
  if (!server.ok()) {
    std::cerr << "middleware_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("middleware_server listening on port %d\n", (*server)->port());
  std::printf("metrics on http://%s/metrics\n", (*metrics)->address().c_str());
  std::fflush(stdout);

  int signo = signals.wait();
  std::fprintf(stderr, "middleware_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::seconds(5));
  server.value().reset();
  (*metrics)->stop();
  runtime->shutdown();
  exporter->flush();
  return 0;
}
