// Closed-loop unary load generator for helloworld.Greeter/SayHello on the plain grpc++ async
// (completion-queue) API. One thread drives one CompletionQueue; `--concurrency` calls are kept
// outstanding at all times, spread round-robin over `--channels` channels (each with its own
// connection); every completed call is immediately replaced by a new one.
//
//   unary_load --target HOST:PORT [--concurrency C] [--duration-s S] [--warmup-s W]
//              [--channels K] [--payload N] [--server-pid PID]
//
// After W seconds of warmup, the calls completing during the next S seconds are measured: their
// count, errors and latencies (start of the call to its completion event; every sample kept and
// sorted for the percentiles). With --server-pid, the server process's CPU time (utime + stime
// from /proc/PID/stat, all threads) is read at both edges of the measured window. Prints one
// line of JSON on stdout and exits 0, or 1 if the target cannot be reached.

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
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
#include <vector>

#include "helloworld.grpc.pb.h"
#include "proc_stats.hpp"

namespace {

using bench::MachineCpu;
using bench::PercentileUs;
using bench::ProcessCpuUs;
using bench::ReadMachineCpu;
using bench::SelfCpuUs;

using Clock = std::chrono::steady_clock;
using helloworld::Greeter;
using helloworld::HelloReply;
using helloworld::HelloRequest;

struct Options {
  std::string target;
  long concurrency = 64;
  double duration_s = 10;
  double warmup_s = 2;
  long channels = 2;
  long payload = 16;
  long server_pid = 0;
};

// One slot of the closed loop: the call currently in flight on it.
struct Call {
  Greeter::Stub* stub = nullptr;
  std::optional<grpc::ClientContext> ctx;
  HelloReply reply;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<HelloReply>> rpc;
  Clock::time_point start;
  bool in_flight = false;
};

void Start(Call& call, const HelloRequest& request, grpc::CompletionQueue* cq) {
  call.ctx.emplace();
  call.reply.Clear();
  call.start = Clock::now();
  call.rpc = call.stub->PrepareAsyncSayHello(&*call.ctx, request, cq);
  call.rpc->StartCall();
  call.rpc->Finish(&call.reply, &call.status, &call);
  call.in_flight = true;
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --target HOST:PORT [--concurrency C] [--duration-s S] [--warmup-s W]\n"
               "          [--channels K] [--payload N] [--server-pid PID]\n",
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
    } else if (name == "--server-pid") {
      opts.server_pid = static_cast<long>(number(name, value, 1));
    } else {
      Usage(argv[0]);
    }
  }
  if (opts.target.empty()) Usage(argv[0]);
  return opts;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opts = ParseOptions(argc, argv);

  // One connection per channel: without a local subchannel pool, channels with equal arguments
  // share one subchannel (and so one HTTP/2 connection).
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<Greeter::Stub>> stubs;
  for (long i = 0; i < opts.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = grpc::CreateCustomChannel(opts.target, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "unary_load: cannot connect to %s\n", opts.target.c_str());
      return 1;
    }
    stubs.push_back(Greeter::NewStub(channel));
    channels.push_back(std::move(channel));
  }

  HelloRequest request;
  request.set_name(std::string(static_cast<std::size_t>(opts.payload), 'x'));

  grpc::CompletionQueue cq;
  std::vector<Call> calls(static_cast<std::size_t>(opts.concurrency));
  std::vector<std::int64_t> latencies_ns;
  latencies_ns.reserve(1 << 20);

  const auto begin = Clock::now();
  const auto measure_from = begin + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(opts.warmup_s));
  const auto measure_until = measure_from + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(opts.duration_s));
  // Calls still outstanding this long after the window are cancelled.
  const auto drain_until = measure_until + std::chrono::seconds(5);

  long outstanding = 0;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    calls[i].stub = stubs[i % stubs.size()].get();
    Start(calls[i], request, &cq);
    ++outstanding;
  }

  enum class Phase { kWarmup, kMeasure, kDrain };
  Phase phase = Phase::kWarmup;
  Clock::time_point window_start;
  Clock::time_point window_end;
  double server_cpu_start = 0;
  double server_cpu_end = 0;
  bool server_cpu_ok = opts.server_pid != 0;
  double self_cpu_start = 0;
  double self_cpu_end = 0;
  MachineCpu machine_start;
  MachineCpu machine_end;
  long errors = 0;
  long warmup_errors = 0;
  bool cancelled = false;

  auto advance = [&](Clock::time_point now) {
    if (phase == Phase::kWarmup && now >= measure_from) {
      phase = Phase::kMeasure;
      window_start = now;
      self_cpu_start = SelfCpuUs();
      machine_start = ReadMachineCpu();
      if (server_cpu_ok) {
        auto cpu = ProcessCpuUs(opts.server_pid);
        server_cpu_ok = cpu.has_value();
        server_cpu_start = cpu.value_or(0);
      }
    }
    if (phase == Phase::kMeasure && now >= measure_until) {
      phase = Phase::kDrain;
      window_end = now;
      self_cpu_end = SelfCpuUs();
      machine_end = ReadMachineCpu();
      if (server_cpu_ok) {
        auto cpu = ProcessCpuUs(opts.server_pid);
        server_cpu_ok = cpu.has_value();
        server_cpu_end = cpu.value_or(0);
      }
    }
  };

  while (outstanding > 0) {
    void* tag = nullptr;
    bool ok = false;
    // Wake up at the next phase edge even if no call completes (a stalled server).
    Clock::time_point wake = phase == Phase::kWarmup    ? measure_from
                             : phase == Phase::kMeasure ? measure_until
                                                        : drain_until;
    // (grpc++ takes only system_clock deadlines; the phases are kept on the steady clock.)
    auto next = cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + (wake - Clock::now()));
    Clock::time_point now = Clock::now();
    advance(now);
    if (next == grpc::CompletionQueue::TIMEOUT) {
      if (phase == Phase::kDrain && now >= drain_until && !cancelled) {
        for (Call& c : calls) {
          if (c.in_flight) c.ctx->TryCancel();
        }
        cancelled = true;
      }
      continue;
    }
    if (next == grpc::CompletionQueue::SHUTDOWN) break;  // Not reached: shut down below.
    Call& call = *static_cast<Call*>(tag);
    call.in_flight = false;
    --outstanding;
    bool success = ok && call.status.ok();
    if (phase == Phase::kMeasure) {
      if (success) {
        latencies_ns.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - call.start).count());
      } else {
        ++errors;
      }
    } else if (phase == Phase::kWarmup && !success) {
      ++warmup_errors;
    }
    if (phase != Phase::kDrain) {
      Start(call, request, &cq);
      ++outstanding;
    }
  }
  if (phase != Phase::kDrain) {  // Only if every call vanished; keep the report well formed.
    window_end = Clock::now();
    self_cpu_end = SelfCpuUs();
    machine_end = ReadMachineCpu();
  }
  cq.Shutdown();
  {
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
    }
  }

  std::sort(latencies_ns.begin(), latencies_ns.end());
  const double window_s = std::chrono::duration<double>(window_end - window_start).count();
  const auto requests = static_cast<long>(latencies_ns.size());
  const double rps = window_s > 0 ? static_cast<double>(requests) / window_s : 0;

  // CPU used during the window, in cores: this process, the server, the whole machine, and what
  // the rest of the machine used (other processes; a busy neighbour spoils the comparison).
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
