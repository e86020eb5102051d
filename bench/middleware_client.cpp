// Closed-loop unary load generator for helloworld.Greeter/SayHello on the Trellis typed client,
// with or without the stock middleware stack on its channels, for measuring what the stack costs
// a client (bench/run-middleware.sh). It takes unary_load's flags and prints unary_load's line of
// JSON, so bench/run-unary.sh runs it in unary_load's place (--load-cmd).
//
//   middleware_client --target HOST:PORT [--layers none|full] [--concurrency C] [--duration-s S]
//                     [--warmup-s W] [--channels K] [--payload N] [--server-pid PID]
//                     [--reactor on|off]
//
// --reactor on also starts a native-transport server (no services, on 127.0.0.1:0) on the
// client's runtime, which switches its worker to waiting on an Asio reactor: every completion of
// the client's calls then comes through the completion-queue thread, the hop this measures
// (docs/architecture.md, "The native transport").
//
// --layers full puts the client stack of issue 4's benchmark on every channel, outermost first:
// tracing (a span per call, a `traceparent` header, a no-op exporter), metrics, a 30 s timeout
// (the call's deadline), retry (UNAVAILABLE, up to 3 attempts, any method, with a retry budget;
// the benchmark's calls succeed, so it never retries) and a concurrency limit of 100000 that is
// never reached.
//
// `--concurrency` coroutines on one runtime worker each make one call after another, spread
// round-robin over `--channels` channels (each with its own connection). The calls completing
// during the S seconds after W seconds of warmup are measured as unary_load measures them: count,
// errors, latency percentiles, this process's CPU time (all its threads), the server's (with
// --server-pid) and the whole machine's, which tells whether something else ran meanwhile.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "helloworld.trellis.h"
#include "proc_stats.hpp"
#include "trellis/channel.hpp"
#include "trellis/middleware/concurrency_limit.hpp"
#include "trellis/middleware/metrics.hpp"
#include "trellis/middleware/retry.hpp"
#include "trellis/middleware/span_exporter.hpp"
#include "trellis/middleware/timeout.hpp"
#include "trellis/middleware/tracing.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/stack.hpp"

namespace {

using bench::MachineCpu;
using bench::PercentileUs;
using bench::ProcessCpuUs;
using bench::ReadMachineCpu;
using bench::SelfCpuUs;

using Clock = std::chrono::steady_clock;

struct Options {
  std::string target;
  std::string layers = "none";
  long concurrency = 64;
  double duration_s = 10;
  double warmup_s = 2;
  long channels = 2;
  long payload = 16;
  long server_pid = 0;
  bool reactor = false;
};

// The measurements (bench/proc_stats.hpp) are unary_load.cpp's, so both programs' figures compare.

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --target HOST:PORT [--layers none|full] [--concurrency C] "
               "[--duration-s S]\n"
               "          [--warmup-s W] [--channels K] [--payload N] [--server-pid PID]\n"
               "          [--reactor on|off]\n",
               argv0);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options opts;
  auto number = [&](std::string_view flag, const char* value, double min) {
    char* end = nullptr;
    double v = std::strtod(value, &end);
    if (end == value || *end != '\0' || !(v >= min)) {
      std::fprintf(stderr, "bad value for %.*s: %s\n", static_cast<int>(flag.size()), flag.data(),
                   value);
      Usage(argv[0]);
    }
    return v;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg;
    const char* value = nullptr;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = argv[i] + eq + 1;
    } else if (i + 1 < argc) {
      value = argv[++i];
    }
    if (value == nullptr) Usage(argv[0]);
    if (name == "--target") {
      opts.target = value;
    } else if (name == "--layers") {
      opts.layers = value;
      if (opts.layers != "none" && opts.layers != "full") Usage(argv[0]);
    } else if (name == "--concurrency") {
      opts.concurrency = static_cast<long>(number(name, value, 1));
    } else if (name == "--duration-s") {
      opts.duration_s = number(name, value, 0.001);
    } else if (name == "--warmup-s") {
      opts.warmup_s = number(name, value, 0);
    } else if (name == "--channels") {
      opts.channels = static_cast<long>(number(name, value, 1));
    } else if (name == "--payload") {
      opts.payload = static_cast<long>(number(name, value, 0));
    } else if (name == "--reactor") {
      if (std::string_view(value) != "on" && std::string_view(value) != "off") Usage(argv[0]);
      opts.reactor = std::string_view(value) == "on";
    } else if (name == "--server-pid") {
      opts.server_pid = static_cast<long>(number(name, value, 1));
    } else {
      Usage(argv[0]);
    }
  }
  if (opts.target.empty()) Usage(argv[0]);
  return opts;
}

enum Phase : int { kWarmup, kMeasure, kStop };

// What one calling coroutine records; touched only by that coroutine until it has finished.
struct Slot {
  std::vector<std::int64_t> latencies_ns;
  long errors = 0;
  long warmup_errors = 0;
};

// One closed-loop caller: a call, then the next, until the phase turns kStop.
trellis::Task<void> CallLoop(const helloworld::GreeterClient& client,
                             const helloworld::HelloRequest& request, const std::atomic<int>& phase,
                             Slot& slot) {
  for (;;) {
    const auto start = Clock::now();
    auto reply = co_await client.SayHello(request);
    const auto now = Clock::now();
    const int p = phase.load(std::memory_order_relaxed);
    if (p == kStop) co_return;
    if (p == kMeasure) {
      if (reply.ok()) {
        slot.latencies_ns.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - start).count());
      } else {
        ++slot.errors;
      }
    } else if (!reply.ok()) {
      ++slot.warmup_errors;
    }
  }
}

trellis::Task<void> JoinAll(std::vector<trellis::JoinHandle<void>>& handles) {
  for (auto& handle : handles) co_await handle.join();
}

}  // namespace

int main(int argc, char** argv) {
  const Options opts = ParseOptions(argc, argv);
  auto runtime = trellis::Runtime::multi_thread().worker_threads(1).build();
  std::unique_ptr<trellis::Server> reactor_server;
  if (opts.reactor) {
    auto server = trellis::Server::Builder(*runtime)
                      .transport(trellis::Transport::native)
                      .add_insecure_port("127.0.0.1:0")
                      .build();
    if (!server.ok()) {
      std::fprintf(stderr, "middleware_client: --reactor: %s\n",
                   server.status().to_string().c_str());
      return 1;
    }
    reactor_server = std::move(server).value();
  }

  // Shared by all channels, as a process-wide tracing/metrics/limits setup would be.
  auto registry = std::make_shared<trellis::MetricsRegistry>();
  trellis::RetryPolicy retry;
  retry.retry_any_method = true;  // helloworld.proto declares no idempotency level
  auto stack = trellis::Stack()
                   .layer(trellis::TracingLayer(std::make_shared<trellis::NoopExporter>()))
                   .layer(trellis::MetricsLayer(registry))
                   .layer(trellis::TimeoutLayer(std::chrono::seconds(30)))
                   .layer(trellis::RetryLayer(retry, std::make_shared<trellis::RetryBudget>()))
                   .layer(trellis::ConcurrencyLimitLayer(100000));

  // One connection per channel: without a local subchannel pool, channels with equal arguments
  // share one subchannel (and so one HTTP/2 connection).
  std::vector<helloworld::GreeterClient> clients;
  for (long i = 0; i < opts.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = trellis::Channel::insecure(opts.target, args);
    if (!channel.grpc_channel()->WaitForConnected(std::chrono::system_clock::now() +
                                                  std::chrono::seconds(10))) {
      std::fprintf(stderr, "middleware_client: cannot connect to %s\n", opts.target.c_str());
      return 1;
    }
    clients.emplace_back(opts.layers == "full" ? channel.with_layer(stack) : channel);
  }

  helloworld::HelloRequest request;
  request.set_name(std::string(static_cast<std::size_t>(opts.payload), 'x'));

  std::atomic<int> phase{kWarmup};
  std::vector<Slot> slots(static_cast<std::size_t>(opts.concurrency));
  for (Slot& slot : slots) slot.latencies_ns.reserve(1 << 16);
  std::vector<trellis::JoinHandle<void>> handles;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    handles.push_back(
        runtime->spawn(CallLoop(clients[i % clients.size()], request, phase, slots[i])));
  }

  auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  std::this_thread::sleep_for(seconds(opts.warmup_s));
  const auto window_start = Clock::now();
  const double self_cpu_start = SelfCpuUs();
  const MachineCpu machine_start = ReadMachineCpu();
  bool server_cpu_ok = opts.server_pid != 0;
  double server_cpu_start = 0;
  if (server_cpu_ok) {
    auto cpu = ProcessCpuUs(opts.server_pid);
    server_cpu_ok = cpu.has_value();
    server_cpu_start = cpu.value_or(0);
  }
  phase.store(kMeasure, std::memory_order_relaxed);
  std::this_thread::sleep_until(window_start + seconds(opts.duration_s));
  phase.store(kStop, std::memory_order_relaxed);
  const auto window_end = Clock::now();
  const double self_cpu_end = SelfCpuUs();
  const MachineCpu machine_end = ReadMachineCpu();
  double server_cpu_end = 0;
  if (server_cpu_ok) {
    auto cpu = ProcessCpuUs(opts.server_pid);
    server_cpu_ok = cpu.has_value();
    server_cpu_end = cpu.value_or(0);
  }
  runtime->block_on(JoinAll(handles));
  reactor_server.reset();  // servers go before their runtime
  runtime->shutdown();

  std::vector<std::int64_t> latencies_ns;
  long errors = 0;
  long warmup_errors = 0;
  for (const Slot& slot : slots) {
    latencies_ns.insert(latencies_ns.end(), slot.latencies_ns.begin(), slot.latencies_ns.end());
    errors += slot.errors;
    warmup_errors += slot.warmup_errors;
  }
  std::sort(latencies_ns.begin(), latencies_ns.end());
  const double window_s = std::chrono::duration<double>(window_end - window_start).count();
  const auto requests = static_cast<long>(latencies_ns.size());
  const double rps = window_s > 0 ? static_cast<double>(requests) / window_s : 0;

  auto util = [&](double us) { return window_s > 0 ? us / 1e6 / window_s : 0.0; };
  const double client_util = util(self_cpu_end - self_cpu_start);
  const double machine_util = util(machine_end.busy_us - machine_start.busy_us);
  const double steal_util = util(machine_end.steal_us - machine_start.steal_us);
  const double server_cpu_us = server_cpu_end - server_cpu_start;
  std::printf(
      "{\"requests\": %ld, \"errors\": %ld, \"warmup_errors\": %ld, \"window_s\": %.3f, "
      "\"rps\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
      "\"max_us\": %.1f, \"concurrency\": %ld, \"channels\": %ld, \"payload\": %ld, "
      "\"client_cpu_util\": %.3f, \"machine_cpu_util\": %.3f, \"steal_util\": %.3f",
      requests, errors, warmup_errors, window_s, rps, PercentileUs(latencies_ns, 0.50),
      PercentileUs(latencies_ns, 0.90), PercentileUs(latencies_ns, 0.99),
      PercentileUs(latencies_ns, 0.999), PercentileUs(latencies_ns, 1.0), opts.concurrency,
      opts.channels, opts.payload, client_util, machine_util, steal_util);
  if (server_cpu_ok) {
    std::printf(
        ", \"server_cpu_util\": %.3f, \"server_cpu_us_per_rpc\": %.2f, \"other_cpu_util\": %.3f",
        util(server_cpu_us), requests > 0 ? server_cpu_us / static_cast<double>(requests) : 0.0,
        std::max(0.0, machine_util - client_util - util(server_cpu_us)));
  }
  std::printf("}\n");
  return 0;
}
