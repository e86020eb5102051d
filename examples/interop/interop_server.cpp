// interop_server: grpc.testing.TestService served by Trellis, the server half of gRPC's interop
// tests (doc/interop-test-descriptions.md in the gRPC repository), for any interop client.
//
//   interop_server --port=N [--host=0.0.0.0] [--transport=grpc|native] [--threads=0]
//                  [--grace_ms=5000] [--use_tls --tls_cert=FILE --tls_key=FILE]
//
// --port=0 picks a free port. Prints "interop_server listening on port N" once serving and
// stops gracefully on SIGINT or SIGTERM (exit status 0). --use_tls serves TLS with the PEM
// certificate chain and key given (gRPC's own interop server has test certificates built in;
// this one is handed them).
//
// Server features: EmptyCall, UnaryCall, StreamingOutputCall, StreamingInputCall,
// FullDuplexCall, HalfDuplexCall, Echo Status, Echo Metadata and
// ResponseParameters.interval_us, in every method they apply to. CacheableUnaryCall answers as
// UnaryCall does (there is no caching proxy to test against). UnimplementedCall answers
// UNIMPLEMENTED, and grpc.testing.UnimplementedService is deliberately not served. Not
// implemented: the compression features (CompressedRequest, CompressedResponse) and the
// auth echo features.
#include <boost/asio/as_tuple.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "grpc/testing/test.trellis.h"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"
#include "trellis/timer.hpp"
#include "trellis/tls.hpp"

ABSL_FLAG(int, port, 0, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, transport, "grpc",
          "the server transport: grpc (grpc core, the default) or native (Trellis's HTTP/2)");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(bool, use_tls, false, "serve TLS with --tls_cert and --tls_key");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain file of the server (--use_tls)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file of --tls_cert (--use_tls)");
ABSL_FLAG(int, threads, 0, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, grace_ms, 5000, "how long in-flight calls may take to finish at shutdown");

namespace {

using grpc::testing::EchoStatus;
using grpc::testing::Empty;
using grpc::testing::Payload;
using grpc::testing::PayloadType;
using grpc::testing::ResponseParameters;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using trellis::Result;
using trellis::ServerContext;
using trellis::ServerReader;
using trellis::ServerWriter;
using trellis::Status;
using trellis::Task;

constexpr std::string_view kEchoInitialKey = "x-grpc-test-echo-initial";
constexpr std::string_view kEchoTrailingKey = "x-grpc-test-echo-trailing-bin";

// Echo Metadata: the echo keys of the request go back as response headers / trailers. Each
// implemented method calls it first: headers must be added before the first response message is
// written, and trailers set now also reach the client when the call ends with an error.
void echo_metadata(ServerContext& ctx) {
  const trellis::Metadata& received = ctx.request_metadata();
  for (std::string_view value : received.get_all(kEchoInitialKey)) {
    ctx.add_initial_metadata(std::string(kEchoInitialKey), std::string(value));
  }
  for (std::string_view value : received.get_all(kEchoTrailingKey)) {
    ctx.add_trailing_metadata(std::string(kEchoTrailingKey), std::string(value));
  }
}

// Echo Status: the status a request asks the call to end with, if it asks for one. A code
// outside gRPC's 17 is answered UNKNOWN, as grpc++ would turn it into on the wire anyway.
std::optional<Status> echoed_status(bool has_status, const EchoStatus& echo) {
  if (!has_status || echo.code() == 0) return std::nullopt;
  auto code = trellis::StatusCode::kUnknown;
  if (echo.code() > 0 && echo.code() <= static_cast<int>(trellis::StatusCode::kUnauthenticated)) {
    code = static_cast<trellis::StatusCode>(echo.code());
  }
  return Status(code, echo.message());
}

// A payload of `size` zero bytes. COMPRESSABLE is the only payload type test.proto defines; any
// other value is INVALID_ARGUMENT, as the UnaryCall description asks.
Result<Payload> zeros(PayloadType type, int size) {
  if (type != grpc::testing::COMPRESSABLE) {
    return Status::invalid_argument("unsupported response_type " + std::to_string(type));
  }
  if (size < 0) return Status::invalid_argument("negative size " + std::to_string(size));
  Payload payload;
  payload.set_type(grpc::testing::COMPRESSABLE);
  payload.set_body(std::string(static_cast<std::size_t>(size), '\0'));
  return payload;
}

Result<SimpleResponse> simple_response(const SimpleRequest& request) {
  if (auto status = echoed_status(request.has_response_status(), request.response_status())) {
    return *status;
  }
  Result<Payload> payload = zeros(request.response_type(), request.response_size());
  if (!payload.ok()) return payload.status();
  SimpleResponse response;
  *response.mutable_payload() = std::move(*payload);
  return response;
}

// Answers one StreamingOutputCallRequest: one response per response_parameters entry, each
// after its interval_us (a sleep relative to the previous response), or the call's end with
// the request's response_status. A non-OK result ends the call.
Task<Status> respond(const StreamingOutputCallRequest& request,
                     ServerWriter<StreamingOutputCallResponse>& writer) {
  if (auto status = echoed_status(request.has_response_status(), request.response_status())) {
    co_return *status;
  }
  for (const ResponseParameters& parameters : request.response_parameters()) {
    Result<Payload> payload = zeros(request.response_type(), parameters.size());
    if (!payload.ok()) co_return payload.status();
    if (parameters.interval_us() > 0) {
      // The call's cancellation (client gone, deadline passed) cuts the wait short.
      auto [error] =
          co_await trellis::sleep_for(std::chrono::microseconds(parameters.interval_us()),
                                      boost::asio::as_tuple(trellis::use_task));
      if (error) co_return Status::cancelled("the call ended during interval_us");
    }
    StreamingOutputCallResponse response;
    *response.mutable_payload() = std::move(*payload);
    if (!co_await writer.write(response)) co_return Status::cancelled("the call ended");
  }
  co_return Status();
}

class TestServiceImpl final : public grpc::testing::TestServiceService {
 public:
  Task<Result<Empty>> EmptyCall(ServerContext& ctx, const Empty&) override {
    echo_metadata(ctx);
    co_return Empty();
  }

  Task<Result<SimpleResponse>> UnaryCall(ServerContext& ctx,
                                         const SimpleRequest& request) override {
    echo_metadata(ctx);
    co_return simple_response(request);
  }

  // Meant to be answered by a caching proxy in front of the server; without one it is UnaryCall.
  Task<Result<SimpleResponse>> CacheableUnaryCall(ServerContext& ctx,
                                                  const SimpleRequest& request) override {
    echo_metadata(ctx);
    co_return simple_response(request);
  }

  Task<Status> StreamingOutputCall(ServerContext& ctx, const StreamingOutputCallRequest& request,
                                   ServerWriter<StreamingOutputCallResponse>& writer) override {
    echo_metadata(ctx);
    co_return co_await respond(request, writer);
  }

  Task<Result<StreamingInputCallResponse>> StreamingInputCall(
      ServerContext& ctx, ServerReader<StreamingInputCallRequest>& reader) override {
    echo_metadata(ctx);
    std::size_t total = 0;
    while (std::optional<StreamingInputCallRequest> request = co_await reader.read()) {
      total += request->payload().body().size();
    }
    // read() also ends when the call does; only a half-close means "that was all".
    if (ctx.is_cancelled()) co_return Status::cancelled("the call ended before the half-close");
    StreamingInputCallResponse response;
    response.set_aggregated_payload_size(static_cast<std::int32_t>(total));
    co_return response;
  }

  // Answers each request as it arrives.
  Task<Status> FullDuplexCall(ServerContext& ctx, ServerReader<StreamingOutputCallRequest>& reader,
                              ServerWriter<StreamingOutputCallResponse>& writer) override {
    echo_metadata(ctx);
    while (std::optional<StreamingOutputCallRequest> request = co_await reader.read()) {
      if (Status status = co_await respond(*request, writer); !status.ok()) co_return status;
    }
    if (ctx.is_cancelled()) co_return Status::cancelled("the call ended before the half-close");
    co_return Status();
  }

  // Buffers every request until the half-close, then answers them in order.
  Task<Status> HalfDuplexCall(ServerContext& ctx, ServerReader<StreamingOutputCallRequest>& reader,
                              ServerWriter<StreamingOutputCallResponse>& writer) override {
    echo_metadata(ctx);
    std::vector<StreamingOutputCallRequest> requests;
    while (std::optional<StreamingOutputCallRequest> request = co_await reader.read()) {
      requests.push_back(std::move(*request));
    }
    if (ctx.is_cancelled()) co_return Status::cancelled("the call ended before the half-close");
    for (const StreamingOutputCallRequest& request : requests) {
      if (Status status = co_await respond(request, writer); !status.ok()) co_return status;
    }
    co_return Status();
  }

  // The interop test unimplemented_method expects exactly this answer.
  Task<Result<Empty>> UnimplementedCall(ServerContext&, const Empty&) override {
    co_return Status::unimplemented(
        "grpc.testing.TestService/UnimplementedCall is not implemented");
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::cerr << "interop_server: unexpected argument " << rest[1]
              << " (flags take --flag=value)\n";
    return 2;
  }
  const bool use_tls = absl::GetFlag(FLAGS_use_tls);
  if (use_tls != !absl::GetFlag(FLAGS_tls_cert).empty() ||
      use_tls != !absl::GetFlag(FLAGS_tls_key).empty()) {
    std::cerr << "interop_server: --use_tls needs --tls_cert and --tls_key, and they need it\n";
    return 2;
  }
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();
  auto transport = trellis::parse_transport(absl::GetFlag(FLAGS_transport));
  if (!transport.ok()) {
    std::cerr << "interop_server: --transport: " << transport.status() << "\n";
    return 2;
  }
  TestServiceImpl service;
  trellis::Server::Builder builder(*runtime);
  builder.transport(*transport).add_service(service);
  const std::string address =
      absl::GetFlag(FLAGS_host) + ":" + std::to_string(absl::GetFlag(FLAGS_port));
  if (use_tls) {
    builder.add_tls_port(address, trellis::TlsServerOptions::from_files(
                                      absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)));
  } else {
    builder.add_insecure_port(address);
  }
  auto server = builder.build();  // fails naming a missing or bad certificate file
  if (!server.ok()) {
    std::cerr << "interop_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("interop_server listening on port %d\n", (*server)->port());
  std::fflush(stdout);  // a driver script waits for this line on a pipe

  int signo = signals.wait();
  std::fprintf(stderr, "interop_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::milliseconds(absl::GetFlag(FLAGS_grace_ms)));
  server.value().reset();  // servers go before their runtime
  runtime->shutdown();
  return 0;
}
