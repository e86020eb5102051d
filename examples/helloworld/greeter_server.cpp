// The helloworld Greeter served by Trellis: a coroutine handler on the Trellis runtime, until
// SIGINT or SIGTERM, then a graceful shutdown.
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "helloworld.trellis.h"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, threads, 0, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, grace_ms, 5000, "how long in-flight calls may take to finish at shutdown");

class Greeter final : public helloworld::GreeterService {
  trellis::Task<trellis::Result<helloworld::HelloReply>> SayHello(
      trellis::ServerContext&, const helloworld::HelloRequest& request) override {
    if (request.name().empty()) co_return trellis::Status::invalid_argument("name is empty");
    helloworld::HelloReply reply;
    reply.set_message("Hello " + request.name());
    co_return reply;
  }
};

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();
  Greeter greeter;
  auto server = trellis::Server::Builder(*runtime)
                    .add_insecure_port(absl::GetFlag(FLAGS_host) + ":" +
                                       std::to_string(absl::GetFlag(FLAGS_port)))
                    .add_service(greeter)
                    .build();
  if (!server.ok()) {
    std::cerr << "greeter_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("greeter_server listening on port %d\n", (*server)->port());
  std::fflush(stdout);

  int signo = trellis::wait_for_shutdown_signal();
  std::fprintf(stderr, "greeter_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::milliseconds(absl::GetFlag(FLAGS_grace_ms)));
  server.value().reset();  // servers go before their runtime
  runtime->shutdown();
  return 0;
}
