// trellis_echo_server: the Trellis test server (trellis.testing.Echo) as a process of its own,
// for tests that need a backend they can kill. Listens on 127.0.0.1 on a free port, prints
// "listening on port N", and serves until SIGTERM or SIGINT (a graceful shutdown) or SIGKILL.
//
//   trellis_echo_server [--min-open-files N]   (Server::Builder::min_open_files)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "echo_service.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"

int main(int argc, char** argv) {
  std::size_t min_open_files = 0;
  if (argc == 3 && std::strcmp(argv[1], "--min-open-files") == 0) {
    min_open_files = std::strtoull(argv[2], nullptr, 10);
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: %s [--min-open-files N]\n", argv[0]);
    return 2;
  }
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread().worker_threads(1).build();
  trellis::testing::EchoImpl echo;
  auto server = trellis::Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(echo)
                    .min_open_files(min_open_files)
                    .build();
  if (!server.ok()) {
    std::fprintf(stderr, "trellis_echo_server: %s\n", server.status().to_string().c_str());
    return 1;
  }
  std::printf("listening on port %d\n", (*server)->port());
  std::fflush(stdout);
  signals.wait();
  (*server)->shutdown(std::chrono::seconds(5));
  server->reset();
  runtime->shutdown();
  return 0;
}
