// Baseline for the streaming benchmark: trellis.bench.StreamBench (bench/stream.proto) on the
// plain grpc++ async completion-queue API, built like bench/baseline_server.cpp: a state machine
// per call, one ServerCompletionQueue per thread, each thread polling only its own queue, and
// `--prepost` requests of each method outstanding on every queue.
//
// The handlers do exactly what the Trellis ones (bench/stream_server.cpp) do, with the same
// discipline the Trellis API imposes: one Write in flight at a time.
//   ServerStream: build the response once, then Write it, and on each Write's completion Write it
//                 again, `count` times (without end when count is 0); then Finish(OK).
//   Echo:         Read; on its completion Write a response carrying the request's payload; on the
//                 Write's completion Read the next; when a Read fails (half-close), Finish(OK).
// A failed Write (the call is dead: the client cancelled) ends the call with CANCELLED.
//
//   baseline_stream_server [--port N] [--threads T] [--prepost P] [--tls_cert F --tls_key F]
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
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "baseline_tls.hpp"
#include "stream.grpc.pb.h"

namespace {

using trellis::bench::StreamBench;
using trellis::bench::StreamRequest;
using trellis::bench::StreamResponse;

// Whether a call the server accepts may still post the request for the next one. A request may
// be posted while the server shuts down (it then completes with ok=false), but not once its
// queue has been shut down: gRPC asserts. main() clears the flag, under the lock, before either.
std::mutex g_requests_mu;
bool g_requests_open = true;

// What the completion queue hands back: every pending operation's tag is one of these.
class Tag {
 public:
  virtual void Fire(bool ok) = 0;

 protected:
  ~Tag() = default;
};

template <class Call, void (Call::*Fn)(bool)>
class TagOf final : public Tag {
 public:
  explicit TagOf(Call* call) : call_(call) {}
  void Fire(bool ok) override { (call_->*Fn)(ok); }

 private:
  Call* call_;
};

// What both call kinds share: the request for a call, the done notification, Finish, and freeing
// the object once gRPC holds none of its tags.
template <class Derived>
class CallBase {
 protected:
  CallBase(StreamBench::AsyncService* service, grpc::ServerCompletionQueue* cq)
      : service_(service), cq_(cq) {
    ctx_.AsyncNotifyWhenDone(&on_done_);
  }

  // The Finish tag or the done tag arrived; the derived class calls it after its own tags.
  void MaybeFree() {
    if (done_ && finished_ && pending_ == 0) delete static_cast<Derived*>(this);
  }

  void Accepted(bool ok) {
    if (!ok) {  // The server is shutting down: the request never became a call (no done tag).
      delete static_cast<Derived*>(this);
      return;
    }
    {
      std::lock_guard lock(g_requests_mu);  // once per call: nothing next to a stream's messages
      if (g_requests_open) new Derived(service_, cq_);  // keep a request outstanding on this queue
    }
    static_cast<Derived*>(this)->Start();
  }

  template <class Stream>
  void FinishWith(Stream& stream, const grpc::Status& status) {
    ++pending_;
    stream.Finish(status, &on_finished_);
  }

  StreamBench::AsyncService* service_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext ctx_;
  int pending_ = 0;  // reads, writes and Finish in flight
  TagOf<CallBase, &CallBase::Accepted> on_accepted_{this};

 private:
  void Done(bool) {
    done_ = true;
    MaybeFree();
  }
  void Finished(bool) {
    --pending_;
    finished_ = true;
    MaybeFree();
  }

  bool done_ = false;
  bool finished_ = false;
  TagOf<CallBase, &CallBase::Done> on_done_{this};
  TagOf<CallBase, &CallBase::Finished> on_finished_{this};
};

class ServerStreamCall final : public CallBase<ServerStreamCall> {
 public:
  ServerStreamCall(StreamBench::AsyncService* service, grpc::ServerCompletionQueue* cq)
      : CallBase(service, cq), writer_(&ctx_) {
    service_->RequestServerStream(&ctx_, &request_, &writer_, cq_, cq_, &on_accepted_);
  }

 private:
  friend class CallBase<ServerStreamCall>;

  void Start() {
    response_.set_payload(std::string(request_.response_size(), 'x'));
    WriteNext();
  }

  void WriteNext() {
    if (request_.count() != 0 && written_ == request_.count()) {
      FinishWith(writer_, grpc::Status::OK);
      return;
    }
    ++pending_;
    writer_.Write(response_, &on_written_);
  }

  void Written(bool ok) {
    --pending_;
    if (!ok) {
      FinishWith(writer_, grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    ++written_;
    WriteNext();
  }

  grpc::ServerAsyncWriter<StreamResponse> writer_;
  StreamRequest request_;
  StreamResponse response_;
  std::uint64_t written_ = 0;
  TagOf<ServerStreamCall, &ServerStreamCall::Written> on_written_{this};
};

class EchoCall final : public CallBase<EchoCall> {
 public:
  EchoCall(StreamBench::AsyncService* service, grpc::ServerCompletionQueue* cq)
      : CallBase(service, cq), stream_(&ctx_) {
    service_->RequestEcho(&ctx_, &stream_, cq_, cq_, &on_accepted_);
  }

 private:
  friend class CallBase<EchoCall>;

  void Start() { ReadNext(); }

  void ReadNext() {
    ++pending_;
    stream_.Read(&request_, &on_read_);
  }

  void ReadDone(bool ok) {
    --pending_;
    if (!ok) {  // The client half-closed (or the call is dead: Finish then just fails).
      FinishWith(stream_, grpc::Status::OK);
      return;
    }
    StreamResponse response;
    response.set_payload(std::move(*request_.mutable_payload()));
    ++pending_;
    stream_.Write(response, &on_written_);  // serializes now: `response` may go
  }

  void Written(bool ok) {
    --pending_;
    if (!ok) {
      FinishWith(stream_, grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    ReadNext();
  }

  grpc::ServerAsyncReaderWriter<StreamResponse, StreamRequest> stream_;
  StreamRequest request_;
  TagOf<EchoCall, &EchoCall::ReadDone> on_read_{this};
  TagOf<EchoCall, &EchoCall::Written> on_written_{this};
};

void Poll(grpc::ServerCompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    static_cast<Tag*>(tag)->Fire(ok);
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

  StreamBench::AsyncService service;
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
    for (long i = 0; i < prepost; ++i) {
      new ServerStreamCall(&service, cq.get());
      new EchoCall(&service, cq.get());
    }
  }
  std::vector<std::thread> pollers;
  for (auto& cq : cqs) pollers.emplace_back(Poll, cq.get());

  std::printf("listening on port %d\n", selected_port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);

  // Shutdown() waits for in-flight calls, which need the pollers running; the queues are shut
  // down only afterwards, when nothing can be posted to them any more.
  {
    std::lock_guard lock(g_requests_mu);
    g_requests_open = false;
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : pollers) t.join();

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::fprintf(stderr, "baseline_stream_server: signal %d, cpu user %ld.%06ld s, sys %ld.%06ld s\n",
               sig, static_cast<long>(usage.ru_utime.tv_sec),
               static_cast<long>(usage.ru_utime.tv_usec), static_cast<long>(usage.ru_stime.tv_sec),
               static_cast<long>(usage.ru_stime.tv_usec));
  return 0;
}
