// Links trellis::runtime alone, no RPC library: 100 tasks on two workers each sleep on a runtime
// timer, then send their number through a trellis::sync::mpsc channel to a task that sums them.
// Prints "sum 4950" and exits 0.
#include <chrono>
#include <cstdio>
#include <utility>

#include "trellis/runtime.hpp"
#include "trellis/sync/mpsc.hpp"
#include "trellis/timer.hpp"

namespace mpsc = trellis::sync::mpsc;

int main() {
  auto runtime = trellis::Runtime::multi_thread().worker_threads(2).build();
  auto [tx, rx] = mpsc::channel<int>(8);
  constexpr int kTasks = 100;
  for (int i = 0; i < kTasks; ++i) {
    runtime->spawn([](mpsc::Sender<int> tx, int i) -> trellis::Task<void> {
      co_await trellis::sleep_for(std::chrono::milliseconds(1));
      co_await tx.async_send(i);
    }(tx, i));
  }
  int sum = runtime->block_on([](mpsc::Receiver<int> rx) -> trellis::Task<int> {
    int total = 0;
    for (int n = 0; n < kTasks; ++n) total += co_await rx.async_receive();
    co_return total;
  }(std::move(rx)));
  std::printf("sum %d\n", sum);
  return sum == kTasks * (kTasks - 1) / 2 ? 0 : 1;
}
