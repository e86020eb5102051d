// One busy worker, the others idle (issue 12, goal 4): how long the work queued behind it waits.
//
//   skewed_load [--burn-ms B] [--tasks K] [--calls C] [--watchdog-ms T] [--spawn-after-ms S]
//
// A two-worker runtime serves helloworld.Greeter; a request named "burn" makes its handler burn
// B ms of CPU on its worker (default 200), any other answers at once with the index of the
// worker it ran on. The program, with a client runtime of its own:
//  1. tasks: starts the burn on worker 0 (a spawned task), S ms later (default 10) spawns K tiny
//     tasks with spawn(task) from the main thread and records, per worker, how long each waited
//     from spawn() to its first instruction;
//  2. calls: starts a burning call, waits until its handler runs, then makes C unary calls at
//     once and records each one's latency and the worker that answered it.
// Both phases also record what the watchdog (threshold T ms, default 100) reported. Prints one
// JSON line: per phase and worker, the count, median and maximum wait in microseconds, and the
// watchdog reports.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "helloworld.trellis.h"
#include "trellis/channel.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int burn_ms = 200;
  int tasks = 1000;
  int calls = 200;
  int watchdog_ms = 100;
  int spawn_after_ms = 10;
};

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    int v = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--burn-ms") == 0) {
      o.burn_ms = v;
    } else if (std::strcmp(argv[i], "--tasks") == 0) {
      o.tasks = v;
    } else if (std::strcmp(argv[i], "--calls") == 0) {
      o.calls = v;
    } else if (std::strcmp(argv[i], "--watchdog-ms") == 0) {
      o.watchdog_ms = v;
    } else if (std::strcmp(argv[i], "--spawn-after-ms") == 0) {
      o.spawn_after_ms = v;
    } else {
      std::fprintf(stderr, "skewed_load: unknown flag %s\n", argv[i]);
      std::exit(2);
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr,
                 "usage: %s [--burn-ms B] [--tasks K] [--calls C] [--watchdog-ms T]"
                 " [--spawn-after-ms S]\n",
                 argv[0]);
    std::exit(2);
  }
  return o;
}

void Burn(std::chrono::milliseconds how_long) {
  const auto end = Clock::now() + how_long;
  while (Clock::now() < end) {
  }
}

// The index of the worker the calling task runs on.
trellis::Task<int> WorkerIndex() {
  trellis::Runtime* rt = trellis::Runtime::current();
  for (std::size_t i = 0; i < rt->worker_count(); ++i) {
    if (rt->executor(i).running_in_this_thread()) co_return static_cast<int>(i);
  }
  co_return -1;
}

class Greeter final : public helloworld::GreeterService {
 public:
  explicit Greeter(int burn_ms) : burn_ms_(burn_ms) {}
  std::atomic<bool> burning{false};

  trellis::Task<trellis::Result<helloworld::HelloReply>> SayHello(
      trellis::ServerContext&, const helloworld::HelloRequest& request) override {
    if (request.name() == "burn") {
      burning = true;
      Burn(std::chrono::milliseconds(burn_ms_));
      burning = false;
    }
    helloworld::HelloReply reply;
    reply.set_message(std::to_string(co_await WorkerIndex()));
    co_return reply;
  }

 private:
  int burn_ms_;
};

// Waits (microseconds) per worker index.
struct Waits {
  std::mutex mu;
  std::vector<std::vector<double>> by_worker = std::vector<std::vector<double>>(2);
  void add(int worker, double us) {
    std::lock_guard lock(mu);
    if (worker >= 0 && worker < 2) by_worker[worker].push_back(us);
  }
  std::string json() {
    std::string out = "[";
    for (std::size_t w = 0; w < by_worker.size(); ++w) {
      auto v = by_worker[w];
      std::sort(v.begin(), v.end());
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "%s{\"worker\":%zu,\"n\":%zu,\"median_us\":%.0f,\"max_us\":%.0f}",
                    w == 0 ? "" : ",", w, v.size(), v.empty() ? 0.0 : v[v.size() / 2],
                    v.empty() ? 0.0 : v.back());
      out += buf;
    }
    return out + "]";
  }
};

struct Stalls {
  std::mutex mu;
  std::vector<std::pair<std::size_t, long>> reports;
  std::string json() {
    std::lock_guard lock(mu);
    std::string out = "[";
    for (std::size_t i = 0; i < reports.size(); ++i) {
      char buf[80];
      std::snprintf(buf, sizeof buf, "%s{\"worker\":%zu,\"stalled_ms\":%ld}", i == 0 ? "" : ",",
                    reports[i].first, reports[i].second);
      out += buf;
    }
    return out + "]";
  }
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  Stalls stalls;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(2)
                     .watchdog(std::chrono::milliseconds(o.watchdog_ms),
                               [&](std::size_t worker, std::chrono::milliseconds stalled) {
                                 std::lock_guard lock(stalls.mu);
                                 stalls.reports.push_back({worker, stalled.count()});
                               })
                     .build();

  // 1. Tasks queued behind a busy worker.
  std::atomic<bool> burning{false};
  auto burner = runtime->spawn(runtime->executor(0),
                               [](std::atomic<bool>* flag, int ms) -> trellis::Task<void> {
                                 *flag = true;
                                 Burn(std::chrono::milliseconds(ms));
                                 co_return;
                               }(&burning, o.burn_ms));
  while (!burning) std::this_thread::yield();
  // Spawn once the burn is under way, as work arriving during a long poll would: within its first
  // millisecond the worker still counts as free (Runtime::executor()).
  std::this_thread::sleep_for(std::chrono::milliseconds(o.spawn_after_ms));
  Waits task_waits;
  std::vector<trellis::JoinHandle<void>> handles;
  for (int i = 0; i < o.tasks; ++i) {
    handles.push_back(
        runtime->spawn([](Waits* waits, Clock::time_point spawned) -> trellis::Task<void> {
          double us = std::chrono::duration<double, std::micro>(Clock::now() - spawned).count();
          waits->add(co_await WorkerIndex(), us);
        }(&task_waits, Clock::now())));
  }
  for (auto& h : handles) runtime->block_on(h.join());
  runtime->block_on(burner.join());
  std::string task_stalls = stalls.json();
  {
    std::lock_guard lock(stalls.mu);
    stalls.reports.clear();
  }

  // 2. Calls accepted by a busy worker.
  Greeter greeter(o.burn_ms);
  auto server = trellis::Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(greeter)
                    .build();
  if (!server.ok()) {
    std::fprintf(stderr, "skewed_load: %s\n", server.status().to_string().c_str());
    return 1;
  }
  auto client_runtime = trellis::Runtime::single_thread().build();
  helloworld::GreeterClient client(
      trellis::Channel::insecure("127.0.0.1:" + std::to_string((*server)->port())));
  helloworld::HelloRequest burn;
  burn.set_name("burn");
  auto burning_call = client_runtime->spawn(client.SayHello(burn));
  while (!greeter.burning) std::this_thread::yield();
  Waits call_waits;
  int failed = 0;
  // All at once, as independent clients would: gRPC hands each to a request some worker posted.
  std::vector<trellis::JoinHandle<bool>> calls;
  for (int i = 0; i < o.calls; ++i) {
    calls.push_back(client_runtime->spawn(
        [](helloworld::GreeterClient* client, Waits* waits) -> trellis::Task<bool> {
          helloworld::HelloRequest quick;
          quick.set_name("quick");
          auto start = Clock::now();
          auto reply = co_await client->SayHello(quick);
          double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
          if (!reply.ok()) co_return false;
          waits->add(std::atoi(reply->message().c_str()), us);
          co_return true;
        }(&client, &call_waits)));
  }
  for (auto& call : calls) {
    if (!client_runtime->block_on(call.join())) ++failed;
  }
  if (!client_runtime->block_on(burning_call.join()).ok()) ++failed;
  (*server)->shutdown(std::chrono::seconds(5));

  std::printf(
      "{\"burn_ms\":%d,\"tasks\":%s,\"task_watchdog\":%s,\"calls\":%s,\"calls_failed\":%d,"
      "\"call_watchdog\":%s}\n",
      o.burn_ms, task_waits.json().c_str(), task_stalls.c_str(), call_waits.json().c_str(), failed,
      stalls.json().c_str());
  return failed == 0 ? 0 : 1;
}
