// How many tasks the Trellis runtime holds and how fast it spawns them (issue 12, goal 2).
//
//   task_scale --tasks N [--workers W] [--wait timer|channel] [--spawn-join M] [--batch B]
//
// Held tasks: a driver task spawns N tasks spread round-robin over the W workers; each one
// suspends on a runtime timer (sleep_until a far deadline) or, with --wait channel, on an Asio
// concurrent_channel receive (one channel per worker). Once all N are suspended the resident set
// (VmRSS) is read and compared with the reading taken before the spawn; the tasks are then
// released (the timers by JoinHandle::abort, the channels by close) and joined, and every one
// must have finished. The JoinHandles wait in a vector reserved before the first reading, so
// their 16 bytes each are not in rss_bytes_per_task.
//
// Spawn and join: a task on worker 0 spawns M trivial tasks onto its own worker in batches of B,
// joining each batch before it spawns the next (tokio's "spawn many" shape).
//
// Prints one JSON line: tasks, workers, wait, rss_bytes_per_task, rss_before_bytes,
// rss_held_bytes, peak_rss_bytes, spawn_held_per_s (spawning the N held tasks), release_s,
// spawn_join, spawn_join_per_s.
#include <atomic>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proc_stats.hpp"
#include "trellis/runtime.hpp"
#include "trellis/timer.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using Channel = boost::asio::experimental::concurrent_channel<void(boost::system::error_code)>;

struct Options {
  std::size_t tasks = 1'000'000;
  std::size_t workers = 1;
  std::string wait = "timer";
  std::size_t spawn_join = 2'000'000;
  std::size_t batch = 1024;
};

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--tasks N] [--workers W] [--wait timer|channel] [--spawn-join M]"
               " [--batch B]\n",
               argv0);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    auto count = [&] { return static_cast<std::size_t>(std::strtoull(value(), nullptr, 10)); };
    if (std::strcmp(argv[i], "--tasks") == 0) {
      o.tasks = count();
    } else if (std::strcmp(argv[i], "--workers") == 0) {
      o.workers = count();
    } else if (std::strcmp(argv[i], "--wait") == 0) {
      o.wait = value();
    } else if (std::strcmp(argv[i], "--spawn-join") == 0) {
      o.spawn_join = count();
    } else if (std::strcmp(argv[i], "--batch") == 0) {
      o.batch = count();
    } else {
      Usage(argv[0]);
    }
  }
  if (o.workers == 0 || o.batch == 0 || (o.wait != "timer" && o.wait != "channel")) {
    Usage(argv[0]);
  }
  return o;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Suspends on a timer that would fire in a day; ends normally when aborted.
trellis::Task<void> WaitOnTimer(std::atomic<std::size_t>& suspended) {
  suspended.fetch_add(1, std::memory_order_relaxed);
  try {
    co_await trellis::sleep_for(std::chrono::hours(24));
  } catch (const boost::system::system_error&) {
  }
}

// Suspends on a channel receive; ends normally when the channel is closed.
trellis::Task<void> WaitOnChannel(Channel& channel, std::atomic<std::size_t>& suspended) {
  suspended.fetch_add(1, std::memory_order_relaxed);
  try {
    co_await channel.async_receive(trellis::use_task);
  } catch (const boost::system::system_error&) {
  }
}

trellis::Task<void> Trivial() { co_return; }

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  auto runtime = trellis::Runtime::multi_thread().worker_threads(options.workers).build();

  std::vector<std::unique_ptr<Channel>> channels;
  for (std::size_t w = 0; w < options.workers; ++w) {
    channels.push_back(std::make_unique<Channel>(runtime->executor(w)));
  }
  std::vector<trellis::JoinHandle<void>> handles;
  handles.reserve(options.tasks);
  // Warm the allocator and the workers up before the first reading.
  runtime->block_on(Trivial());

  const std::int64_t rss_before = bench::StatusBytes("VmRSS");
  std::atomic<std::size_t> suspended{0};
  const auto spawn_start = Clock::now();
  runtime->block_on([&]() -> trellis::Task<void> {
    for (std::size_t i = 0; i < options.tasks; ++i) {
      const std::size_t w = i % options.workers;
      auto task =
          options.wait == "timer" ? WaitOnTimer(suspended) : WaitOnChannel(*channels[w], suspended);
      handles.push_back(runtime->spawn(runtime->executor(w), std::move(task)));
      // Let the spawned tasks run (and suspend) now and then, and keep each resumption of this
      // driver short enough for the watchdog.
      if (i % 4096 == 4095) co_await boost::asio::post(trellis::use_task);
    }
  }());
  while (suspended.load(std::memory_order_relaxed) < options.tasks) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const auto spawn_elapsed = Clock::now() - spawn_start;
  // Let the workers go idle: the last spawned tasks' resumptions have returned.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::int64_t rss_held = bench::StatusBytes("VmRSS");

  const auto release_start = Clock::now();
  if (options.wait == "timer") {
    for (auto& handle : handles) handle.abort();
  } else {
    for (auto& channel : channels) channel->close();
  }
  std::size_t joined = runtime->block_on([&]() -> trellis::Task<std::size_t> {
    std::size_t n = 0;
    for (auto& handle : handles) {
      co_await handle.join();
      ++n;
    }
    co_return n;
  }());
  const auto release_elapsed = Clock::now() - release_start;
  handles.clear();
  handles.shrink_to_fit();
  if (joined != options.tasks) {
    std::fprintf(stderr, "task_scale: joined %zu of %zu tasks\n", joined, options.tasks);
    return 1;
  }

  const auto spawn_join_start = Clock::now();
  runtime->block_on([&]() -> trellis::Task<void> {
    auto ex = runtime->executor(0);
    std::vector<trellis::JoinHandle<void>> batch;
    batch.reserve(options.batch);
    for (std::size_t done = 0; done < options.spawn_join;) {
      const std::size_t n = std::min(options.batch, options.spawn_join - done);
      for (std::size_t i = 0; i < n; ++i) batch.push_back(runtime->spawn(ex, Trivial()));
      for (auto& handle : batch) co_await handle.join();
      batch.clear();
      done += n;
    }
  }());
  const auto spawn_join_elapsed = Clock::now() - spawn_join_start;

  const double per_task =
      static_cast<double>(rss_held - rss_before) / static_cast<double>(options.tasks);
  std::printf(
      "{\"tasks\":%zu,\"workers\":%zu,\"wait\":\"%s\",\"rss_bytes_per_task\":%.1f,"
      "\"rss_before_bytes\":%lld,\"rss_held_bytes\":%lld,\"peak_rss_bytes\":%lld,"
      "\"spawn_held_per_s\":%.0f,\"release_s\":%.3f,\"spawn_join\":%zu,"
      "\"spawn_join_per_s\":%.0f}\n",
      options.tasks, options.workers, options.wait.c_str(), per_task,
      static_cast<long long>(rss_before), static_cast<long long>(rss_held),
      static_cast<long long>(bench::StatusBytes("VmHWM")),
      static_cast<double>(options.tasks) / Seconds(spawn_elapsed), Seconds(release_elapsed),
      options.spawn_join, static_cast<double>(options.spawn_join) / Seconds(spawn_join_elapsed));
  return 0;
}
