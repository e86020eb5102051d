// Round trip between two tasks on different workers of one Trellis runtime: task A (worker 0)
// sends a number on one channel, task B (worker 1) receives it and sends it back on another,
// and A receives it; one round trip is two sends and two receives, two cross-thread wake-ups.
// Compares trellis::sync::mpsc (capacity 1) with boost::asio::experimental::concurrent_channel
// (capacity 1, its executor the receiving worker's), both driven by the same runtime and the
// same awaitable coroutines, so only the channel differs. Prints one JSON line with the median
// ns per round trip of --runs runs of --round_trips each.
#include <algorithm>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "trellis/runtime.hpp"
#include "trellis/sync/mpsc.hpp"

namespace {

using trellis::Task;
using AsioChannel =
    boost::asio::experimental::concurrent_channel<void(boost::system::error_code, int)>;

Task<void> trellis_ping(trellis::sync::mpsc::Sender<int>& out,
                        trellis::sync::mpsc::Receiver<int>& in, int n) {
  for (int i = 0; i < n; ++i) {
    co_await out.async_send(i);
    if (co_await in.async_receive() != i) std::abort();
  }
}
Task<void> trellis_pong(trellis::sync::mpsc::Receiver<int>& in,
                        trellis::sync::mpsc::Sender<int>& out, int n) {
  for (int i = 0; i < n; ++i) co_await out.async_send(co_await in.async_receive());
}
Task<void> asio_ping(AsioChannel& out, AsioChannel& in, int n) {
  for (int i = 0; i < n; ++i) {
    co_await out.async_send(boost::system::error_code(), i, trellis::use_task);
    if (co_await in.async_receive(trellis::use_task) != i) std::abort();
  }
}
Task<void> asio_pong(AsioChannel& in, AsioChannel& out, int n) {
  for (int i = 0; i < n; ++i) {
    int v = co_await in.async_receive(trellis::use_task);
    co_await out.async_send(boost::system::error_code(), v, trellis::use_task);
  }
}

template <class Start>
double ns_per_round_trip(trellis::Runtime& rt, int n, Start start) {
  auto t0 = std::chrono::steady_clock::now();
  auto [a, b] = start();
  rt.block_on([](trellis::JoinHandle<void> a, trellis::JoinHandle<void> b) -> Task<void> {
    co_await a.join();
    co_await b.join();
  }(std::move(a), std::move(b)));
  auto dt = std::chrono::steady_clock::now() - t0;
  return std::chrono::duration<double, std::nano>(dt).count() / n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int n = 20000;
  int runs = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--round_trips") == 0) n = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  auto rt = trellis::Runtime::multi_thread().worker_threads(2).build();
  std::vector<double> sync_ns, asio_ns;
  for (int r = 0; r < runs; ++r) {  // interleaved, so that drift affects both alike
    auto [tx1, rx1] = trellis::sync::mpsc::channel<int>(1);
    auto [tx2, rx2] = trellis::sync::mpsc::channel<int>(1);
    sync_ns.push_back(ns_per_round_trip(*rt, n, [&] {
      return std::make_pair(rt->spawn(rt->executor(0), trellis_ping(tx1, rx2, n)),
                            rt->spawn(rt->executor(1), trellis_pong(rx1, tx2, n)));
    }));
    AsioChannel to_b(rt->executor(1), 1), to_a(rt->executor(0), 1);
    asio_ns.push_back(ns_per_round_trip(*rt, n, [&] {
      return std::make_pair(rt->spawn(rt->executor(0), asio_ping(to_b, to_a, n)),
                            rt->spawn(rt->executor(1), asio_pong(to_b, to_a, n)));
    }));
  }
  std::printf(
      "{\"bench\":\"sync_channel_ping_pong\",\"round_trips\":%d,\"runs\":%d,"
      "\"trellis_mpsc_ns\":%.0f,\"asio_concurrent_channel_ns\":%.0f}\n",
      n, runs, median(sync_ns), median(asio_ns));
  return 0;
}
