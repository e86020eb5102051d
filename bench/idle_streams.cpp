// Many idle bidi streams against one trellis.bench.StreamBench server (issue 12, goal 1), on the
// plain grpc++ async API so that the client is the same whatever the server.
//
//   idle_streams --target HOST:PORT --streams N [--connections C] [--server-pid PID]
//                [--probes P] [--in-flight F]
//
// Reads the server's resident set (VmRSS of /proc/PID/status), opens C connections (default 100;
// each channel has its own subchannel pool, so its own TCP connection) and one more for the
// probe, and reads it again: the difference over C + 1 is the memory per idle connection. Then
// opens N Echo streams spread over them, at most F (default 1000) being set up at once; a stream
// counts as established once one request has been echoed on it, so the server's handler for it is
// running. Reads the server's resident set again: the difference over N is the memory per idle
// stream. While all N are held, P (default 2000) request/response round trips on one more stream of
// a connection of its own measure the latency others see. Finally every stream is half-closed and
// must end with OK. Prints one JSON line: streams, connections, establish_s,
// server_bytes_per_connection, server_rss_before_bytes, server_rss_held_bytes,
// server_bytes_per_stream, probe_p50_us, probe_p99_us, closed_ok; exits 1 if a stream failed.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proc_stats.hpp"
#include "stream.grpc.pb.h"

namespace {

using trellis::bench::StreamBench;
using trellis::bench::StreamRequest;
using trellis::bench::StreamResponse;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string target;
  long streams = 100000;
  int connections = 100;
  long server_pid = 0;
  int probes = 2000;
  long in_flight = 1000;
};

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --target HOST:PORT --streams N [--connections C] [--server-pid PID]\n"
               "          [--probes P] [--in-flight F]\n",
               argv0);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    if (i + 1 >= argc) Usage(argv[0]);
    const char* v = argv[++i];
    if (std::strcmp(argv[i - 1], "--target") == 0) {
      o.target = v;
    } else if (std::strcmp(argv[i - 1], "--streams") == 0) {
      o.streams = std::atol(v);
    } else if (std::strcmp(argv[i - 1], "--connections") == 0) {
      o.connections = std::atoi(v);
    } else if (std::strcmp(argv[i - 1], "--server-pid") == 0) {
      o.server_pid = std::atol(v);
    } else if (std::strcmp(argv[i - 1], "--probes") == 0) {
      o.probes = std::atoi(v);
    } else if (std::strcmp(argv[i - 1], "--in-flight") == 0) {
      o.in_flight = std::atol(v);
    } else {
      Usage(argv[0]);
    }
  }
  if (o.target.empty() || o.streams <= 0 || o.connections <= 0 || o.in_flight <= 0) {
    Usage(argv[0]);
  }
  return o;
}

// One Echo stream and where it is in its life: start, write one request, read its echo (then
// idle), and at the end half-close and finish.
struct Stream {
  enum class Step { kStart, kWrite, kRead, kWritesDone, kFinish };
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<StreamRequest, StreamResponse>> rpc;
  StreamResponse response;
  grpc::Status status;
  Step step = Step::kStart;
};

std::shared_ptr<grpc::Channel> Connect(const std::string& target, int index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("trellis.bench.connection", index);  // distinct arguments: distinct channels
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
    return nullptr;
  return channel;
}

// Runs the completion queue until `done()` holds; false if an operation failed.
template <class Done>
bool Drive(grpc::CompletionQueue& cq, StreamRequest& request, Done done,
           const std::function<void(Stream*)>& on_established) {
  while (!done()) {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) return false;
    auto* s = static_cast<Stream*>(tag);
    if (!ok && s->step != Stream::Step::kFinish) {
      std::fprintf(stderr, "idle_streams: a stream operation failed\n");
      return false;
    }
    switch (s->step) {
      case Stream::Step::kStart:
        s->step = Stream::Step::kWrite;
        s->rpc->Write(request, s);
        break;
      case Stream::Step::kWrite:
        s->step = Stream::Step::kRead;
        s->rpc->Read(&s->response, s);
        break;
      case Stream::Step::kRead:
        on_established(s);
        break;
      case Stream::Step::kWritesDone:
        s->step = Stream::Step::kFinish;
        s->rpc->Finish(&s->status, s);
        break;
      case Stream::Step::kFinish:
        on_established(s);
        break;
    }
  }
  return true;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  const std::int64_t rss_start = bench::StatusBytes("VmRSS", o.server_pid);
  std::vector<std::unique_ptr<StreamBench::Stub>> stubs;
  for (int i = 0; i < o.connections; ++i) {
    auto channel = Connect(o.target, i);
    if (!channel) {
      std::fprintf(stderr, "idle_streams: cannot connect to %s\n", o.target.c_str());
      return 1;
    }
    stubs.push_back(StreamBench::NewStub(channel));
  }
  auto probe_channel = Connect(o.target, o.connections);
  if (!probe_channel) return 1;
  auto probe_stub = StreamBench::NewStub(probe_channel);
  const std::int64_t rss_before = bench::StatusBytes("VmRSS", o.server_pid);

  grpc::CompletionQueue cq;
  StreamRequest request;
  request.set_payload("idle");
  std::vector<std::unique_ptr<Stream>> streams;
  streams.reserve(static_cast<std::size_t>(o.streams));
  long started = 0, established = 0;
  auto start_more = [&] {
    while (started < o.streams && started - established < o.in_flight) {
      auto s = std::make_unique<Stream>();
      s->rpc =
          stubs[static_cast<std::size_t>(started % o.connections)]->PrepareAsyncEcho(&s->ctx, &cq);
      s->rpc->StartCall(s.get());
      streams.push_back(std::move(s));
      ++started;
    }
  };
  const auto establish_start = Clock::now();
  start_more();
  if (!Drive(
          cq, request, [&] { return established == o.streams; },
          [&](Stream*) {
            ++established;
            start_more();
          })) {
    return 1;
  }
  const double establish_s = std::chrono::duration<double>(Clock::now() - establish_start).count();
  const std::int64_t rss_held = bench::StatusBytes("VmRSS", o.server_pid);

  // Round trips on one more stream while the others are held.
  grpc::ClientContext probe_ctx;
  grpc::CompletionQueue probe_cq;
  auto probe = probe_stub->PrepareAsyncEcho(&probe_ctx, &probe_cq);
  void* tag = nullptr;
  bool ok = false;
  probe->StartCall(&probe_ctx);
  if (!probe_cq.Next(&tag, &ok) || !ok) return 1;
  std::vector<double> rtt_us;
  StreamResponse echo;
  for (int i = 0; i < o.probes; ++i) {
    auto t0 = Clock::now();
    probe->Write(request, &probe_ctx);
    if (!probe_cq.Next(&tag, &ok) || !ok) return 1;
    probe->Read(&echo, &probe_ctx);
    if (!probe_cq.Next(&tag, &ok) || !ok) return 1;
    rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  probe_ctx.TryCancel();

  // Half-close every stream; each must end OK.
  long finished = 0, closed_ok = 0;
  for (auto& s : streams) {
    s->step = Stream::Step::kWritesDone;
    s->rpc->WritesDone(s.get());
  }
  if (!Drive(
          cq, request, [&] { return finished == o.streams; },
          [&](Stream* s) {
            ++finished;
            if (s->status.ok()) ++closed_ok;
          })) {
    return 1;
  }

  std::printf(
      "{\"streams\":%ld,\"connections\":%d,\"establish_s\":%.2f,"
      "\"server_bytes_per_connection\":%.0f,\"server_rss_before_bytes\":%lld,"
      "\"server_rss_held_bytes\":%lld,\"server_bytes_per_stream\":%.0f,\"probe_p50_us\":%.0f,"
      "\"probe_p99_us\":%.0f,\"closed_ok\":%ld}\n",
      o.streams, o.connections, establish_s,
      static_cast<double>(rss_before - rss_start) / static_cast<double>(o.connections + 1),
      static_cast<long long>(rss_before), static_cast<long long>(rss_held),
      static_cast<double>(rss_held - rss_before) / static_cast<double>(o.streams),
      Percentile(rtt_us, 0.5), Percentile(rtt_us, 0.99), closed_ok);
  probe_cq.Shutdown();
  while (probe_cq.Next(&tag, &ok)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return closed_ok == o.streams ? 0 : 1;
}
