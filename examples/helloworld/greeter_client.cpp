// Calls helloworld.Greeter/SayHello on any gRPC server with the Trellis typed client.
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "helloworld.trellis.h"
#include "trellis/channel.hpp"
#include "trellis/compression.hpp"
#include "trellis/runtime.hpp"
#include "trellis/tls.hpp"

ABSL_FLAG(std::string, target, "localhost:50051", "server address (any gRPC target string)");
ABSL_FLAG(std::string, name, "world", "the name to greet");
ABSL_FLAG(int, timeout_ms, 10000, "deadline of the call; 0 for none");
ABSL_FLAG(bool, tls, false,
          "use TLS (implied by any --tls_* flag); without --tls_ca, trust the system's root CAs");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA file the server's certificate must chain to (TLS)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain file of this client (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name to check the server's certificate against, instead of the target's host");
ABSL_FLAG(std::string, compression, "none", "compression of the request: none, deflate or gzip");

// The channel the flags ask for: plaintext, or TLS when any TLS flag is given.
trellis::Result<trellis::Channel> make_channel() {
  const std::string target = absl::GetFlag(FLAGS_target);
  trellis::TlsOptions tls = trellis::TlsOptions::from_files(
      absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key));
  tls.server_name_override = absl::GetFlag(FLAGS_tls_server_name);
  const bool use_tls = absl::GetFlag(FLAGS_tls) || !tls.ca.empty() || !tls.cert_chain.empty() ||
                       !tls.private_key.empty() || !tls.server_name_override.empty();
  if (!use_tls) return trellis::Channel::insecure(target);
  return trellis::Channel::tls(target, tls);  // fails naming a missing or bad file
}

// The --compression flag's algorithm; nullopt for a name that is none of them.
std::optional<trellis::Compression> compression_flag() {
  for (auto c :
       {trellis::Compression::kNone, trellis::Compression::kDeflate, trellis::Compression::kGzip}) {
    const std::string_view name =
        c == trellis::Compression::kNone ? std::string_view("none") : trellis::compression_name(c);
    if (absl::GetFlag(FLAGS_compression) == name) return c;
  }
  return std::nullopt;
}

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::optional<trellis::Compression> compression = compression_flag();
  if (!compression) {
    std::cerr << "greeter_client: --compression must be none, deflate or gzip\n";
    return 2;
  }
  trellis::Result<trellis::Channel> channel = make_channel();
  if (!channel.ok()) {
    std::cerr << trellis::status_code_name(channel.status().code()) << ": "
              << channel.status().message() << "\n";
    return 2;
  }
  auto runtime = trellis::Runtime::single_thread().build();
  helloworld::GreeterClient client(*channel);

  helloworld::HelloRequest request;
  request.set_name(absl::GetFlag(FLAGS_name));
  trellis::CallOptions options;
  options.set_compression(*compression);
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
