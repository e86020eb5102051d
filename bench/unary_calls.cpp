// Fixed-count unary client for helloworld.Greeter/SayHello: makes exactly `--calls` calls,
// `--concurrency` outstanding at a time over `--channels` channels (each with its own
// connection), then exits. Unlike unary_load (time-based), the amount of work it gives a server
// does not depend on how fast the server runs, which is what an instruction count under
// valgrind needs (bench/callgrind-unary.sh).
//
//   unary_calls --target HOST:PORT [--calls N] [--concurrency C] [--channels K] [--payload N]
//
// Prints "calls N errors E" on stdout; exits 1 if the target cannot be reached or a call failed.

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "helloworld.grpc.pb.h"

namespace {

using helloworld::Greeter;
using helloworld::HelloReply;
using helloworld::HelloRequest;

struct Call {
  Greeter::Stub* stub = nullptr;
  std::optional<grpc::ClientContext> ctx;
  HelloReply reply;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<HelloReply>> rpc;
};

void Start(Call& call, const HelloRequest& request, grpc::CompletionQueue* cq) {
  call.ctx.emplace();
  call.reply.Clear();
  call.rpc = call.stub->PrepareAsyncSayHello(&*call.ctx, request, cq);
  call.rpc->StartCall();
  call.rpc->Finish(&call.reply, &call.status, &call);
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --target HOST:PORT [--calls N] [--concurrency C] [--channels K] "
               "[--payload N]\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string target;
  long calls_total = 10000;
  long concurrency = 64;
  long channel_count = 2;
  long payload = 16;
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
      target = value;
      continue;
    }
    char* end = nullptr;
    long v = std::strtol(value, &end, 10);
    if (end == value || *end != '\0' || v < 0) Usage(argv[0]);
    if (name == "--calls") {
      calls_total = v;
    } else if (name == "--concurrency" && v > 0) {
      concurrency = v;
    } else if (name == "--channels" && v > 0) {
      channel_count = v;
    } else if (name == "--payload") {
      payload = v;
    } else {
      Usage(argv[0]);
    }
  }
  if (target.empty()) Usage(argv[0]);

  // One connection per channel: without a local subchannel pool, channels with equal arguments
  // share one subchannel (and so one HTTP/2 connection).
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<Greeter::Stub>> stubs;
  for (long i = 0; i < channel_count; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(60))) {
      std::fprintf(stderr, "unary_calls: cannot connect to %s\n", target.c_str());
      return 1;
    }
    stubs.push_back(Greeter::NewStub(channel));
    channels.push_back(std::move(channel));
  }

  HelloRequest request;
  request.set_name(std::string(static_cast<std::size_t>(payload), 'x'));
  grpc::CompletionQueue cq;
  std::vector<Call> calls(static_cast<std::size_t>(std::min(concurrency, calls_total)));
  long started = 0, done = 0, errors = 0;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    calls[i].stub = stubs[i % stubs.size()].get();
    Start(calls[i], request, &cq);
    ++started;
  }
  void* tag = nullptr;
  bool ok = false;
  while (done < calls_total && cq.Next(&tag, &ok)) {
    Call& call = *static_cast<Call*>(tag);
    ++done;
    if (!ok || !call.status.ok()) ++errors;
    if (started < calls_total) {
      Start(call, request, &cq);
      ++started;
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  std::printf("calls %ld errors %ld\n", done, errors);
  return errors == 0 ? 0 : 1;
}
