// The Trellis side of the streaming benchmark: trellis.bench.StreamBench (bench/stream.proto)
// served by coroutine handlers on the Trellis runtime, doing what bench/baseline_stream_server.cpp
// does on the plain grpc++ async API:
//   ServerStream: build the response once, write it `count` times (without end when count is 0),
//                 each write awaited before the next (the one write in flight Trellis allows).
//   Echo:         read a request, write a response carrying its payload, await the write, read
//                 the next; OK after the client's half-close. One request object is reused, read
//                 with read(request), as the baseline reuses its own.
// The operations are awaited with the token boost::asio::deferred (no coroutine frame each), the
// cheapest way the API offers; with the default token (a Task each) see docs/performance.md.
// A failed write (the client cancelled) ends the call with CANCELLED.
//
//   stream_server [--port N] [--host ADDR] [--threads T] [--grace_ms MS]
//                 [--transport grpc|native] [--tls_cert FILE --tls_key FILE]
//
// Prints "stream_server listening on port N" on stdout; SIGINT or SIGTERM shut it down.
#include <boost/asio/deferred.hpp>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "stream.trellis.h"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/tls.hpp"

ABSL_FLAG(int, port, 0, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, transport, "grpc",
          "the server transport: grpc (grpc core, the default) or native (Trellis's HTTP/2)");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on");
ABSL_FLAG(int, threads, 1, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, grace_ms, 5000, "how long in-flight calls may take to finish at shutdown");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain file: serve TLS with it and --tls_key");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file of --tls_cert");

namespace {

using trellis::bench::StreamRequest;
using trellis::bench::StreamResponse;

class StreamBench final : public trellis::bench::StreamBenchService {
  trellis::Task<trellis::Status> ServerStream(
      trellis::ServerContext&, const StreamRequest& request,
      trellis::ServerWriter<StreamResponse>& writer) override {
    StreamResponse response;
    response.set_payload(std::string(request.response_size(), 'x'));
    for (std::uint64_t i = 0; request.count() == 0 || i < request.count(); ++i) {
      if (!co_await writer.write(response, boost::asio::deferred))
        co_return trellis::Status::cancelled("the client went away");
    }
    co_return trellis::Status();
  }

  trellis::Task<trellis::Status> Echo(trellis::ServerContext&,
                                      trellis::ServerReader<StreamRequest>& reader,
                                      trellis::ServerWriter<StreamResponse>& writer) override {
    // One request object for the whole stream, as the baseline has.
    StreamRequest request;
    // boost::asio::deferred: the reads and writes are co_awaited without a coroutine frame each.
    while (co_await reader.read(request, boost::asio::deferred)) {
      StreamResponse response;
      response.set_payload(std::move(*request.mutable_payload()));
      if (!co_await writer.write(response, boost::asio::deferred))
        co_return trellis::Status::cancelled("the client went away");
    }
    co_return trellis::Status();
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();
  auto transport = trellis::parse_transport(absl::GetFlag(FLAGS_transport));
  if (!transport.ok()) {
    std::cerr << "stream_server: --transport: " << transport.status() << "\n";
    return 2;
  }
  StreamBench service;
  trellis::Server::Builder builder(*runtime);
  builder.transport(*transport).add_service(service);
  const std::string address =
      absl::GetFlag(FLAGS_host) + ":" + std::to_string(absl::GetFlag(FLAGS_port));
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (cert.empty() && key.empty()) {
    builder.add_insecure_port(address);
  } else {  // build() fails naming a missing file, or a key without a certificate
    builder.add_tls_port(address, trellis::TlsServerOptions::from_files(cert, key));
  }
  auto server = builder.build();
  if (!server.ok()) {
    std::cerr << "stream_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("stream_server listening on port %d\n", (*server)->port());
  std::fflush(stdout);

  int signo = signals.wait();
  std::fprintf(stderr, "stream_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::milliseconds(absl::GetFlag(FLAGS_grace_ms)));
  server.value().reset();  // servers go before their runtime
  runtime->shutdown();
  return 0;
}
