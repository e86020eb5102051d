// Calls helloworld.Greeter/SayHello on any gRPC server with the Trellis typed client.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "helloworld.trellis.h"
#include "trellis/runtime.hpp"

ABSL_FLAG(std::string, target, "localhost:50051", "server address (any gRPC target string)");
ABSL_FLAG(std::string, name, "world", "the name to greet");
ABSL_FLAG(int, timeout_ms, 10000, "deadline of the call; 0 for none");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto runtime = trellis::Runtime::single_thread().build();
  helloworld::GreeterClient client(trellis::Channel::insecure(absl::GetFlag(FLAGS_target)));

  helloworld::HelloRequest request;
  request.set_name(absl::GetFlag(FLAGS_name));
  trellis::CallOptions options;
  if (int ms = absl::GetFlag(FLAGS_timeout_ms); ms > 0) {
    options.set_timeout(std::chrono::milliseconds(ms));
  }
  auto reply = runtime->block_on(client.SayHello(request, options));
  if (!reply.ok()) {
    std::cerr << trellis::status_code_name(reply.status().code()) << ": "
              << reply.status().message() << "\n";
    return 1;
  }
  std::cout << reply->message() << "\n";
  return 0;
}
