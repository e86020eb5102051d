// Streaming load generator for trellis.bench.StreamBench (bench/stream.proto) on the plain grpc++
// async (completion-queue) API, so that the client side is the same whatever the server. One
// thread drives one CompletionQueue and `--streams` streams (default 1), all on one channel
// (one HTTP/2 connection).
//
//   stream_load --target HOST:PORT --workload server-stream|bidi [--payload N] [--window W]
//               [--streams K] [--duration-s S] [--warmup-s W] [--server-pid PID]
//               [--messages N]
//
// Workloads (messages of --payload bytes, default 16):
//   server-stream  each stream is one ServerStream call asking for responses without end
//                  (count 0) of N bytes; the client keeps one Read pending and counts the
//                  responses. The server writes as fast as its one write in flight and HTTP/2
//                  flow control allow. The call is cancelled when the window ends.
//   bidi           each stream is one Echo call: the client writes requests of N bytes (one
//                  Write in flight, as the grpc++ API requires) as long as fewer than --window
//                  (default 64) requests are unanswered, and keeps one Read pending; every
//                  response frees a slot. The server answers each request in order. Counted:
//                  responses received (each a request and its echo); also their round-trip
//                  times (write started to response read). The call is cancelled when the
//                  window ends.
//
// After W seconds of warmup (default 2), the messages received during the next S seconds
// (default 10) are counted. With --server-pid, the server process's CPU time (utime + stime from
// /proc/PID/stat, all threads) is read at both edges of the measured window, and so is the whole
// machine's (/proc/stat), which gives the CPU other processes used. With --messages N the run
// instead ends (the window closes and the streams are cancelled) as soon as N responses have
// been received in all, warmup included, whichever comes first: bench/callgrind-stream.sh uses
// it for runs of a fixed size. Prints one line of JSON on stdout and exits 0, or 1 if the target
// cannot be reached.

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "proc_stats.hpp"
#include "stream.grpc.pb.h"

namespace {

using bench::MachineCpu;
using bench::PercentileUs;
using bench::ProcessCpuUs;
using bench::ReadMachineCpu;
using bench::SelfCpuUs;

using Clock = std::chrono::steady_clock;
using trellis::bench::StreamBench;
using trellis::bench::StreamRequest;
using trellis::bench::StreamResponse;

enum class Workload { kServerStream, kBidi };

struct Options {
  std::string target;
  Workload workload = Workload::kServerStream;
  long payload = 16;
  long window = 64;
  long streams = 1;
  double duration_s = 10;
  double warmup_s = 2;
  long server_pid = 0;
  long max_messages = 0;  // 0: no limit
};

// The run's phase; messages are counted only in kMeasure.
enum class Phase { kWarmup, kMeasure, kDrain };

struct Counters {
  Phase phase = Phase::kWarmup;
  long messages = 0;                 // received in the window
  long warmup_messages = 0;          // received before it
  long early_ends = 0;               // streams that ended before the window did (an error)
  std::vector<std::int64_t> rtt_ns;  // bidi, in the window
  long outstanding = 0;              // operations in flight in gRPC, all streams
};

// A completion-queue tag: the stream it belongs to and what completed.
struct Stream;
enum class Op { kStart, kRead, kWrite, kFinish };
struct Tag {
  Stream* stream;
  Op op;
};

struct Stream {
  StreamBench::Stub* stub = nullptr;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientAsyncReader<StreamResponse>> reader;  // server-stream
  std::unique_ptr<grpc::ClientAsyncReaderWriter<StreamRequest, StreamResponse>> rw;  // bidi
  StreamResponse response;
  grpc::Status status;
  bool started = false;
  bool write_pending = false;
  bool reads_ended = false;
  bool finishing = false;
  bool finished = false;
  std::deque<Clock::time_point> sent;  // bidi: when each unanswered request was written
  Tag on_start{this, Op::kStart};
  Tag on_read{this, Op::kRead};
  Tag on_write{this, Op::kWrite};
  Tag on_finish{this, Op::kFinish};
};

class Driver {
 public:
  Driver(const Options& opts, grpc::CompletionQueue* cq, Counters* counters)
      : opts_(opts), cq_(cq), c_(counters) {
    request_.set_payload(std::string(static_cast<std::size_t>(opts.payload), 'x'));
  }

  void Open(Stream& s) {
    if (opts_.workload == Workload::kServerStream) {
      StreamRequest req;
      req.set_count(0);  // without end
      req.set_response_size(static_cast<std::uint32_t>(opts_.payload));
      s.reader = s.stub->PrepareAsyncServerStream(&s.ctx, req, cq_);
      s.reader->StartCall(&s.on_start);
    } else {
      s.rw = s.stub->PrepareAsyncEcho(&s.ctx, cq_);
      s.rw->StartCall(&s.on_start);
    }
    ++c_->outstanding;
  }

  void OnEvent(Tag* tag, bool ok, Clock::time_point now) {
    Stream& s = *tag->stream;
    --c_->outstanding;
    switch (tag->op) {
      case Op::kStart:
        s.started = true;
        if (!ok) {
          EndReads(s);
          break;
        }
        Read(s);
        MaybeWrite(s);
        break;
      case Op::kRead:
        if (!ok) {
          EndReads(s);
          break;
        }
        if (c_->phase == Phase::kMeasure) {
          ++c_->messages;
        } else if (c_->phase == Phase::kWarmup) {
          ++c_->warmup_messages;
        }
        if (opts_.workload == Workload::kBidi && !s.sent.empty()) {
          if (c_->phase == Phase::kMeasure) {
            c_->rtt_ns.push_back(
                std::chrono::duration_cast<std::chrono::nanoseconds>(now - s.sent.front()).count());
          }
          s.sent.pop_front();
        }
        Read(s);
        MaybeWrite(s);
        break;
      case Op::kWrite:
        s.write_pending = false;
        if (ok) MaybeWrite(s);
        // A failed write means the call is dead: the pending read fails too and ends it.
        break;
      case Op::kFinish:
        s.finished = true;
        break;
    }
  }

  // The window has ended: cancel every stream (their reads then fail and Finish follows).
  void CancelAll(std::vector<std::unique_ptr<Stream>>& streams) {
    for (auto& s : streams) s->ctx.TryCancel();
  }

 private:
  void Read(Stream& s) {
    if (s.reader) {
      s.reader->Read(&s.response, &s.on_read);
    } else {
      s.rw->Read(&s.response, &s.on_read);
    }
    ++c_->outstanding;
  }

  void MaybeWrite(Stream& s) {
    if (opts_.workload != Workload::kBidi || s.write_pending || s.reads_ended ||
        c_->phase == Phase::kDrain || static_cast<long>(s.sent.size()) >= opts_.window) {
      return;
    }
    s.sent.push_back(Clock::now());
    s.write_pending = true;
    s.rw->Write(request_, &s.on_write);
    ++c_->outstanding;
  }

  // The stream's reads are over (the call ended or was cancelled): get its status.
  void EndReads(Stream& s) {
    s.reads_ended = true;
    if (c_->phase != Phase::kDrain) ++c_->early_ends;
    if (s.finishing) return;
    s.finishing = true;
    if (s.reader) {
      s.reader->Finish(&s.status, &s.on_finish);
    } else {
      s.rw->Finish(&s.status, &s.on_finish);
    }
    ++c_->outstanding;
  }

  const Options& opts_;
  grpc::CompletionQueue* cq_;
  Counters* c_;
  StreamRequest request_;
};

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --target HOST:PORT --workload server-stream|bidi [--payload N]\n"
               "          [--window W] [--streams K] [--duration-s S] [--warmup-s W]\n"
               "          [--server-pid PID] [--messages N]\n",
               argv0);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options opts;
  bool have_workload = false;
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
    } else if (name == "--workload") {
      std::string_view w = value;
      if (w == "server-stream") {
        opts.workload = Workload::kServerStream;
      } else if (w == "bidi") {
        opts.workload = Workload::kBidi;
      } else {
        std::fprintf(stderr, "bad value for --workload: %s\n", value);
        Usage(argv[0]);
      }
      have_workload = true;
    } else if (name == "--payload") {
      opts.payload = static_cast<long>(number(name, value, 0));
    } else if (name == "--window") {
      opts.window = static_cast<long>(number(name, value, 1));
    } else if (name == "--streams") {
      opts.streams = static_cast<long>(number(name, value, 1));
    } else if (name == "--duration-s") {
      opts.duration_s = number(name, value, 0.001);
    } else if (name == "--warmup-s") {
      opts.warmup_s = number(name, value, 0);
    } else if (name == "--server-pid") {
      opts.server_pid = static_cast<long>(number(name, value, 1));
    } else if (name == "--messages") {
      opts.max_messages = static_cast<long>(number(name, value, 1));
    } else {
      Usage(argv[0]);
    }
  }
  if (opts.target.empty() || !have_workload) Usage(argv[0]);
  return opts;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opts = ParseOptions(argc, argv);

  auto channel = grpc::CreateChannel(opts.target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "stream_load: cannot connect to %s\n", opts.target.c_str());
    return 1;
  }
  auto stub = StreamBench::NewStub(channel);

  grpc::CompletionQueue cq;
  Counters counters;
  counters.rtt_ns.reserve(opts.workload == Workload::kBidi ? (1 << 22) : 0);
  Driver driver(opts, &cq, &counters);
  std::vector<std::unique_ptr<Stream>> streams;
  for (long i = 0; i < opts.streams; ++i) {
    streams.push_back(std::make_unique<Stream>());
    streams.back()->stub = stub.get();
    driver.Open(*streams.back());
  }

  const auto begin = Clock::now();
  const auto measure_from = begin + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(opts.warmup_s));
  const auto measure_until = measure_from + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(opts.duration_s));
  // The streams are cancelled at the end of the window; give them this long to report it.
  const auto drain_until = measure_until + std::chrono::seconds(10);

  Clock::time_point window_start;
  Clock::time_point window_end;
  double server_cpu_start = 0;
  double server_cpu_end = 0;
  bool server_cpu_ok = opts.server_pid != 0;
  double self_cpu_start = 0;
  double self_cpu_end = 0;
  MachineCpu machine_start;
  MachineCpu machine_end;

  auto advance = [&](Clock::time_point now) {
    const bool enough =
        opts.max_messages > 0 && counters.messages + counters.warmup_messages >= opts.max_messages;
    if (counters.phase == Phase::kWarmup && (now >= measure_from || enough)) {
      counters.phase = Phase::kMeasure;
      window_start = now;
      self_cpu_start = SelfCpuUs();
      machine_start = ReadMachineCpu();
      if (server_cpu_ok) {
        auto cpu = ProcessCpuUs(opts.server_pid);
        server_cpu_ok = cpu.has_value();
        server_cpu_start = cpu.value_or(0);
      }
    }
    if (counters.phase == Phase::kMeasure && (now >= measure_until || enough)) {
      counters.phase = Phase::kDrain;
      window_end = now;
      self_cpu_end = SelfCpuUs();
      machine_end = ReadMachineCpu();
      if (server_cpu_ok) {
        auto cpu = ProcessCpuUs(opts.server_pid);
        server_cpu_ok = cpu.has_value();
        server_cpu_end = cpu.value_or(0);
      }
      driver.CancelAll(streams);
    }
  };

  while (counters.outstanding > 0) {
    void* tag = nullptr;
    bool ok = false;
    // Wake up at the next phase edge even if nothing completes (a stalled server).
    Clock::time_point wake = counters.phase == Phase::kWarmup    ? measure_from
                             : counters.phase == Phase::kMeasure ? measure_until
                                                                 : drain_until;
    // (grpc++ takes only system_clock deadlines; the phases are kept on the steady clock.)
    auto next = cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + (wake - Clock::now()));
    Clock::time_point now = Clock::now();
    advance(now);
    if (next == grpc::CompletionQueue::TIMEOUT) {
      if (counters.phase == Phase::kDrain && now >= drain_until) {
        std::fprintf(stderr, "stream_load: %ld operations still pending 10 s after the window\n",
                     counters.outstanding);
        break;
      }
      continue;
    }
    if (next == grpc::CompletionQueue::SHUTDOWN) break;  // Not reached: shut down below.
    driver.OnEvent(static_cast<Tag*>(tag), ok, now);
  }
  if (counters.phase != Phase::kDrain) {  // Only if every stream ended early.
    window_end = Clock::now();
    self_cpu_end = SelfCpuUs();
    machine_end = ReadMachineCpu();
    server_cpu_ok = false;
    if (window_start == Clock::time_point()) window_start = window_end;
  }
  long bad_status = 0;
  for (auto& s : streams) {
    // After our own cancellation a stream ends CANCELLED; anything else is an error.
    if (s->finished && !s->status.ok() && s->status.error_code() != grpc::StatusCode::CANCELLED) {
      std::fprintf(stderr, "stream_load: stream ended with status %d: %s\n",
                   static_cast<int>(s->status.error_code()), s->status.error_message().c_str());
      ++bad_status;
    }
  }
  cq.Shutdown();
  {
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
    }
  }

  std::sort(counters.rtt_ns.begin(), counters.rtt_ns.end());
  const double window_s = std::chrono::duration<double>(window_end - window_start).count();
  const double mps = window_s > 0 ? static_cast<double>(counters.messages) / window_s : 0;
  auto util = [&](double us) { return window_s > 0 ? us / 1e6 / window_s : 0.0; };
  const double client_util = util(self_cpu_end - self_cpu_start);
  const double machine_util = util(machine_end.busy_us - machine_start.busy_us);
  const double steal_util = util(machine_end.steal_us - machine_start.steal_us);
  const double server_cpu_us = server_cpu_end - server_cpu_start;
  std::printf(
      "{\"workload\": \"%s\", \"messages\": %ld, \"warmup_messages\": %ld, \"errors\": %ld, "
      "\"window_s\": %.3f, \"msgs_per_s\": %.1f, \"payload\": %ld, \"window\": %ld, "
      "\"streams\": %ld, \"rtt_p50_us\": %.1f, \"rtt_p99_us\": %.1f, "
      "\"client_cpu_util\": %.3f, \"machine_cpu_util\": %.3f, \"steal_util\": %.3f",
      opts.workload == Workload::kBidi ? "bidi" : "server-stream", counters.messages,
      counters.warmup_messages, counters.early_ends + bad_status, window_s, mps, opts.payload,
      opts.workload == Workload::kBidi ? opts.window : 0, opts.streams,
      PercentileUs(counters.rtt_ns, 0.50), PercentileUs(counters.rtt_ns, 0.99), client_util,
      machine_util, steal_util);
  if (server_cpu_ok) {
    std::printf(
        ", \"server_cpu_util\": %.3f, \"server_cpu_us_per_msg\": %.3f, \"other_cpu_util\": %.3f",
        util(server_cpu_us),
        counters.messages > 0 ? server_cpu_us / static_cast<double>(counters.messages) : 0.0,
        std::max(0.0, machine_util - client_util - util(server_cpu_us)));
  }
  std::printf("}\n");
  return 0;
}
