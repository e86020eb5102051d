// Baseline for the unary benchmark: a plain grpc++ async completion-queue Greeter server, written
// the way gRPC's own examples/cpp/helloworld/greeter_async_server.cc is (a CallData state machine
// per call), extended to T threads the way gRPC's qps async server is: one ServerCompletionQueue
// per thread, each thread polling only its own queue, and `--prepost` requests outstanding on
// every queue.
//
//   baseline_server [--port N] [--threads T] [--prepost P] [--tls_cert F --tls_key F]
//
// --port 0 (the default) lets the kernel pick a free port; the chosen one is printed on stdout as
// "listening on port N". Listens on 127.0.0.1 only. SIGINT or SIGTERM shut the server down
// (grace period of 5 s for in-flight calls) and the process exits 0; the process's CPU time
// (getrusage) is then printed on stderr.

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "baseline_tls.hpp"
#include "helloworld.grpc.pb.h"

namespace {

using helloworld::Greeter;
using helloworld::HelloReply;
using helloworld::HelloRequest;

// One call's life: request it from the server, answer it, then free itself.
class CallData {
 public:
  CallData(Greeter::AsyncService* service, grpc::ServerCompletionQueue* cq)
      : service_(service), cq_(cq), responder_(&ctx_) {
    service_->RequestSayHello(&ctx_, &request_, &responder_, cq_, cq_, this);
  }

  // Called by the polling thread with the event of this call's pending operation.
  void Proceed(bool ok) {
    if (state_ == State::kRequested) {
      if (!ok) {  // The server is shutting down: the request was never matched to a call.
        delete this;
        return;
      }
      // Keep a request outstanding on this queue before serving this one.
      new CallData(service_, cq_);
      reply_.set_message("Hello " + request_.name());
      state_ = State::kFinishing;
      responder_.Finish(reply_, grpc::Status::OK, this);
    } else {
      delete this;  // Finish is done (or the call was cancelled): nothing left pending.
    }
  }

 private:
  enum class State { kRequested, kFinishing };

  Greeter::AsyncService* service_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext ctx_;
  HelloRequest request_;
  HelloReply reply_;
  grpc::ServerAsyncResponseWriter<HelloReply> responder_;
  State state_ = State::kRequested;
};

void Poll(grpc::ServerCompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    static_cast<CallData*>(tag)->Proceed(ok);
  }
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--port N] [--threads T] [--prepost P] [--tls_cert F --tls_key F]\n",
               argv0);
  std::exit(2);
}

long ParseInt(std::string_view flag, const char* value, long min, const char* argv0) {
  char* end = nullptr;
  long v = std::strtol(value, &end, 10);
  if (end == value || *end != '\0' || v < min) {
    std::fprintf(stderr, "bad value for %.*s: %s\n", static_cast<int>(flag.size()), flag.data(),
                 value);
    Usage(argv0);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  long port = 0;
  long threads = 1;
  long prepost = 1;
  std::string tls_cert, tls_key;
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
    if (name == "--port") {
      port = ParseInt(name, value, 0, argv[0]);
    } else if (name == "--threads") {
      threads = ParseInt(name, value, 1, argv[0]);
    } else if (name == "--prepost") {
      prepost = ParseInt(name, value, 1, argv[0]);
    } else if (name == "--tls_cert") {
      tls_cert = value;
    } else if (name == "--tls_key") {
      tls_key = value;
    } else {
      Usage(argv[0]);
    }
  }

  // Block the shutdown signals in every thread (gRPC's own threads inherit this mask) so that
  // only sigwait() below receives them, outside of any signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Greeter::AsyncService service;
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port),
                           trellis::bench::baseline_credentials(tls_cert, tls_key), &selected_port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (long i = 0; i < threads; ++i) cqs.push_back(builder.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    std::fprintf(stderr, "failed to listen on 127.0.0.1:%ld\n", port);
    return 1;
  }

  for (auto& cq : cqs) {
    for (long i = 0; i < prepost; ++i) new CallData(&service, cq.get());
  }
  std::vector<std::thread> pollers;
  for (auto& cq : cqs) pollers.emplace_back(Poll, cq.get());

  std::printf("listening on port %d\n", selected_port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);

  // Shutdown() waits for in-flight calls, which need the pollers running; the queues are shut
  // down only afterwards, when nothing can be posted to them any more.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : pollers) t.join();

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::fprintf(stderr, "baseline_server: signal %d, cpu user %ld.%06ld s, sys %ld.%06ld s\n", sig,
               static_cast<long>(usage.ru_utime.tv_sec), static_cast<long>(usage.ru_utime.tv_usec),
               static_cast<long>(usage.ru_stime.tv_sec), static_cast<long>(usage.ru_stime.tv_usec));
  return 0;
}
