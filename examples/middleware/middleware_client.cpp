// Calls helloworld.Greeter/SayHello on any gRPC server, through a client middleware stack:
//
//   middleware_client --target HOST:PORT --name NAME [--timeout-ms MS] [--max-attempts N] [--trace]
//
// --timeout-ms   the call's deadline (TimeoutLayer); 0: none. Default 10000.
// --max-attempts retry with exponential backoff, up to N attempts in all (RetryLayer). It is
//                set for SayHello explicitly, because helloworld.proto declares no
//                idempotency_level and the retry layer only retries idempotent methods unless
//                told otherwise. Default 1 (no retry).
// --trace        a span for the call as an OTLP/JSON line on stderr, and a traceparent to the
//                server.
// Prints the reply and exits 0, or prints the status code name (UNAVAILABLE,
// DEADLINE_EXCEEDED, ...) on stdout, the message on stderr, and exits 1. Bad flags exit 2.
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "helloworld.trellis.h"
#include "trellis/middleware/retry.hpp"
#include "trellis/middleware/span_exporter.hpp"
#include "trellis/middleware/timeout.hpp"
#include "trellis/middleware/tracing.hpp"
#include "trellis/runtime.hpp"
#include "trellis/scoped_layer.hpp"
#include "trellis/stack.hpp"

namespace {

struct Flags {
  std::string target = "localhost:50051";
  std::string name = "world";
  long timeout_ms = 10000;
  long max_attempts = 1;
  bool trace = false;
};

int usage(const std::string& problem) {
  std::cerr << "middleware_client: " << problem
            << "\nusage: middleware_client --target HOST:PORT --name NAME [--timeout-ms MS] "
               "[--max-attempts N] [--trace]\n";
  return 2;
}

// Reads "--flag value" and "--flag=value"; returns false with a message on a bad command line.
bool parse(int argc, char** argv, Flags* flags, std::string* problem) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool inline_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    if (arg == "--trace") {
      flags->trace = !inline_value || value == "true" || value == "1";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) {
        *problem = arg + " needs a value";
        return false;
      }
      value = argv[++i];
    }
    char* end = nullptr;
    if (arg == "--target") {
      flags->target = value;
    } else if (arg == "--name") {
      flags->name = value;
    } else if (arg == "--timeout-ms" || arg == "--max-attempts") {
      long n = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || n < 0 || (arg == "--max-attempts" && n < 1)) {
        *problem = arg + " wants a non-negative number" +
                   (arg == "--max-attempts" ? std::string(" of at least 1") : "");
        return false;
      }
      (arg == "--timeout-ms" ? flags->timeout_ms : flags->max_attempts) = n;
    } else {
      *problem = "unknown flag " + arg;
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  std::string problem;
  if (!parse(argc, argv, &flags, &problem)) return usage(problem);

  // The client stack, outermost first: one span for the whole call; the deadline bounds every
  // attempt together; retries inside it.
  trellis::DynStack stack;
  std::shared_ptr<trellis::OtlpJsonFileExporter> exporter;
  if (flags.trace) {
    exporter = trellis::OtlpJsonFileExporter::to_stderr();
    stack.push(trellis::TracingLayer(exporter, {.service_name = "middleware_client"}));
  }
  if (flags.timeout_ms > 0) {
    stack.push(trellis::TimeoutLayer(std::chrono::milliseconds(flags.timeout_ms)));
  }
  if (flags.max_attempts > 1) {
    trellis::RetryPolicy policy;
    policy.max_attempts = static_cast<int>(flags.max_attempts);
    policy.initial_backoff = std::chrono::milliseconds(50);
    policy.max_backoff = std::chrono::milliseconds(1000);
    policy.retry_any_method = true;  // scoped to SayHello below
    stack.push(trellis::for_methods({"/helloworld.Greeter/SayHello"}, trellis::RetryLayer(policy)));
  }

  auto runtime = trellis::Runtime::single_thread().build();
  trellis::Channel channel = trellis::Channel::insecure(flags.target).with_layer(stack);
  helloworld::GreeterClient client(channel);
  helloworld::HelloRequest request;
  request.set_name(flags.name);
  auto reply = runtime->block_on(client.SayHello(request));
  runtime->shutdown();
  if (exporter) exporter->flush();
  if (!reply.ok()) {
    std::cout << trellis::status_code_name(reply.status().code()) << "\n";
    std::cerr << reply.status().message() << "\n";
    return 1;
  }
  std::cout << reply->message() << "\n";
  return 0;
}
