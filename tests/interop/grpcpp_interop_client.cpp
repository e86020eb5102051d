// grpcpp_interop_client: gRPC's interop test cases (doc/interop-test-descriptions.md in the gRPC
// repository) run on the stock grpc++ sync API, against any grpc.testing.TestService server.
// Nothing of Trellis is in it: the stubs come from protoc + grpc_cpp_plugin (see
// tests/interop/CMakeLists.txt), so the Trellis server is also checked against a client whose
// stack nobody here wrote. It mirrors examples/interop/interop_client.cpp (the Trellis client):
// the same flags, cases, checks and output.
//
//   grpcpp_interop_client --server_port=N [--server_host=localhost] [--test_case=all|NAME]
//                         [--rpc_timeout_ms=10000]
//                         [--use_tls --tls_ca=FILE [--server_host_override=NAME]]
//
// Cases: empty_unary, large_unary, client_streaming, server_streaming, ping_pong, empty_stream,
// cancel_after_begin, cancel_after_first_response, timeout_on_sleeping_server, custom_metadata,
// status_code_and_message, special_status_message, unimplemented_method, unimplemented_service;
// each asserts what the descriptions say it asserts. Prints "PASS name" or "FAIL name: reason"
// per case and exits 0 only if every case passed. Every call has a deadline (--rpc_timeout_ms,
// timeout_on_sleeping_server's own 1 ms), so a run always ends. --use_tls calls over TLS
// (grpc::SslCredentials), trusting the PEM CAs in --tls_ca, and checks the server's certificate
// against --server_host_override when given.
#include <grpc/grpc.h>
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/string_ref.h>
#include <grpcpp/support/sync_stream.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/testing/test.grpc.pb.h"

ABSL_FLAG(std::string, server_host, "localhost", "host of the server under test");
ABSL_FLAG(int, server_port, 0, "port of the server under test (required)");
ABSL_FLAG(std::string, test_case, "all", "the case to run, or all");
ABSL_FLAG(bool, use_tls, false, "call over TLS, trusting --tls_ca");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA file the server's certificate must chain to");
ABSL_FLAG(std::string, server_host_override, "",
          "the name the server's certificate is checked against, in place of --server_host");
ABSL_FLAG(int, rpc_timeout_ms, 10000, "deadline of every call that is expected to finish");

namespace {

using grpc::testing::EchoStatus;
using grpc::testing::Empty;
using grpc::testing::Payload;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

// The sizes and values the descriptions prescribe.
constexpr int kLargeRequestSize = 271828;
constexpr int kLargeResponseSize = 314159;
constexpr int kRequestSizes[] = {27182, 8, 1828, 45904};
constexpr int kResponseSizes[] = {31415, 9, 2653, 58979};
constexpr char kEchoInitialKey[] = "x-grpc-test-echo-initial";
constexpr char kEchoInitialValue[] = "test_initial_metadata_value";
constexpr char kEchoTrailingKey[] = "x-grpc-test-echo-trailing-bin";
constexpr char kEchoTrailingValue[] = "\xab\xab\xab";
constexpr char kStatusMessage[] = "test status message";
constexpr char kSpecialStatusMessage[] =
    "\t\ntest with whitespace\r\nand Unicode BMP \u263A and non-BMP \U0001F608\t\n";

// A failed check; its text is the reason printed after "FAIL name: ".
class CheckFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void expect(bool condition, const std::string& why) {
  if (!condition) throw CheckFailed(why);
}

std::string quoted(const std::string& text) { return "\"" + absl::CHexEscape(text) + "\""; }

// grpc++ has no public name for a status code.
std::string code_name(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  int value = static_cast<int>(code);
  if (value >= 0 && value < static_cast<int>(std::size(kNames))) return kNames[value];
  return absl::StrCat("code ", value);
}

std::string describe(const grpc::Status& status) {
  std::string text = code_name(status.error_code());
  if (!status.error_message().empty()) {
    absl::StrAppend(&text, ": ", quoted(status.error_message()));
  }
  return text;
}

void expect_ok(const grpc::Status& status, const std::string& what) {
  expect(status.ok(), absl::StrCat(what, " failed: ", describe(status)));
}

void expect_status(const grpc::Status& status, grpc::StatusCode code, const std::string& what) {
  expect(status.error_code() == code,
         absl::StrCat(what, ": expected ", code_name(code), ", got ", describe(status)));
}

void expect_payload(const Payload& payload, int size, const std::string& what) {
  expect(payload.body().size() == static_cast<std::size_t>(size),
         absl::StrCat(what, " payload size: expected ", size, ", got ", payload.body().size()));
  expect(payload.body().find_first_not_of('\0') == std::string::npos,
         absl::StrCat(what, " payload is not all zeros"));
  expect(payload.type() == grpc::testing::COMPRESSABLE,
         absl::StrCat(what, " payload type: expected COMPRESSABLE, got ", payload.type()));
}

// The metadata `key` carried exactly once, with `value`.
void expect_metadata(const Metadata& metadata, const std::string& key, const std::string& value,
                     const std::string& what) {
  std::vector<std::string> values;
  auto [begin, end] = metadata.equal_range(grpc::string_ref(key));
  for (auto it = begin; it != end; ++it) values.emplace_back(it->second.data(), it->second.size());
  expect(values.size() == 1 && values[0] == value,
         absl::StrCat(
             what, " ", key, ": expected [", quoted(value), "], got [",
             absl::StrJoin(values, ", ",
                           [](std::string* out, const std::string& v) { out->append(quoted(v)); }),
             "]"));
}

Payload zeros(int size) {
  Payload payload;
  payload.set_type(grpc::testing::COMPRESSABLE);
  payload.set_body(std::string(static_cast<std::size_t>(size), '\0'));
  return payload;
}

// One response of `response_size` asked for with a request payload of `request_size`.
StreamingOutputCallRequest streaming_request(int response_size, int request_size) {
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(response_size);
  *request.mutable_payload() = zeros(request_size);
  return request;
}

// The server's EchoStatus feature: the call is to end with code 2 (UNKNOWN) and `message`.
EchoStatus echo_status(const std::string& message) {
  EchoStatus status;
  status.set_code(static_cast<int>(grpc::StatusCode::UNKNOWN));
  status.set_message(message);
  return status;
}

using DuplexStream =
    grpc::ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse>;

// Half-closes, then expects no further response and an OK status.
void expect_end(DuplexStream& stream, const std::string& what) {
  stream.WritesDone();
  StreamingOutputCallResponse extra;
  bool got_extra = stream.Read(&extra);
  grpc::Status status = stream.Finish();
  expect(!got_extra, absl::StrCat(what, ": unexpected extra response of ",
                                  extra.payload().body().size(), " bytes"));
  expect_ok(status, what);
}

class Cases {
 public:
  Cases(const std::shared_ptr<grpc::Channel>& channel, std::chrono::milliseconds rpc_timeout)
      : stub_(grpc::testing::TestService::NewStub(channel)),
        unimplemented_stub_(grpc::testing::UnimplementedService::NewStub(channel)),
        rpc_timeout_(rpc_timeout) {}

  void empty_unary() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    Empty response;
    expect_ok(stub_->EmptyCall(&ctx, Empty(), &response), "EmptyCall");
  }

  void large_unary() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    SimpleRequest request;
    request.set_response_size(kLargeResponseSize);
    *request.mutable_payload() = zeros(kLargeRequestSize);
    SimpleResponse response;
    expect_ok(stub_->UnaryCall(&ctx, request, &response), "UnaryCall");
    expect_payload(response.payload(), kLargeResponseSize, "response");
  }

  void client_streaming() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    StreamingInputCallResponse response;
    std::unique_ptr<grpc::ClientWriter<StreamingInputCallRequest>> stream =
        stub_->StreamingInputCall(&ctx, &response);
    for (int size : kRequestSizes) {
      StreamingInputCallRequest request;
      *request.mutable_payload() = zeros(size);
      // A refused write means the call ended; Finish says how.
      if (!stream->Write(request)) break;
    }
    stream->WritesDone();
    expect_ok(stream->Finish(), "StreamingInputCall");
    expect(response.aggregated_payload_size() == 74922,
           absl::StrCat("aggregated_payload_size: expected 74922, got ",
                        response.aggregated_payload_size()));
  }

  void server_streaming() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    StreamingOutputCallRequest request;
    for (int size : kResponseSizes) request.add_response_parameters()->set_size(size);
    std::unique_ptr<grpc::ClientReader<StreamingOutputCallResponse>> stream =
        stub_->StreamingOutputCall(&ctx, request);
    std::vector<int> sizes;
    StreamingOutputCallResponse response;
    while (stream->Read(&response)) {
      int size = static_cast<int>(response.payload().body().size());
      expect_payload(response.payload(), size, absl::StrCat("response ", sizes.size()));
      sizes.push_back(size);
    }
    expect_ok(stream->Finish(), "StreamingOutputCall");
    expect(sizes == std::vector<int>(std::begin(kResponseSizes), std::end(kResponseSizes)),
           absl::StrCat("response sizes: expected 31415,9,2653,58979, got ",
                        absl::StrJoin(sizes, ",")));
  }

  void ping_pong() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    std::unique_ptr<DuplexStream> stream = stub_->FullDuplexCall(&ctx);
    for (std::size_t i = 0; i < std::size(kRequestSizes); ++i) {
      bool written = stream->Write(streaming_request(kResponseSizes[i], kRequestSizes[i]));
      if (!written) expect_ok(stream->Finish(), absl::StrCat("write ", i));
      expect(written, absl::StrCat("write ", i, " was refused"));
      StreamingOutputCallResponse response;
      bool read = stream->Read(&response);
      if (!read) expect_ok(stream->Finish(), absl::StrCat("read ", i));
      expect(read, absl::StrCat("the stream ended before response ", i));
      expect_payload(response.payload(), kResponseSizes[i], absl::StrCat("response ", i));
    }
    expect_end(*stream, "FullDuplexCall");
  }

  void empty_stream() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    std::unique_ptr<DuplexStream> stream = stub_->FullDuplexCall(&ctx);
    expect_end(*stream, "FullDuplexCall");
  }

  // "Client starts StreamingInputCall, client immediately cancels". The sync ClientWriter sends
  // the request headers before StreamingInputCall returns (the context is not corked), so the
  // call has begun on the wire, with no message, when it is cancelled.
  void cancel_after_begin() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    StreamingInputCallResponse response;
    std::unique_ptr<grpc::ClientWriter<StreamingInputCallRequest>> stream =
        stub_->StreamingInputCall(&ctx, &response);
    ctx.TryCancel();
    expect_status(stream->Finish(), grpc::StatusCode::CANCELLED, "StreamingInputCall");
  }

  void cancel_after_first_response() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    std::unique_ptr<DuplexStream> stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallResponse response;
    bool read = stream->Write(streaming_request(31415, 27182)) && stream->Read(&response);
    if (!read) expect_ok(stream->Finish(), "FullDuplexCall");
    expect(read, "the stream ended before the first response");
    expect_payload(response.payload(), 31415, "first response");
    ctx.TryCancel();
    expect_status(stream->Finish(), grpc::StatusCode::CANCELLED, "FullDuplexCall");
  }

  // The 1 ms deadline is the interop description's. The case expects that deadline to pass,
  // whether or not the call reached the server first (the server never answers this request),
  // so a slow machine cannot make it fail; the channel is connected before any case runs.
  void timeout_on_sleeping_server() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1));
    std::unique_ptr<DuplexStream> stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    *request.mutable_payload() = zeros(27182);
    // The write may be refused: the deadline may have passed already.
    stream->Write(request);
    // "Client waits": the server answers nothing, so the read ends with the call.
    StreamingOutputCallResponse response;
    expect(!stream->Read(&response), "the server answered a request without response_parameters");
    expect_status(stream->Finish(), grpc::StatusCode::DEADLINE_EXCEEDED, "FullDuplexCall");
  }

  void custom_metadata() {
    grpc::ClientContext unary_ctx;
    set_echo_metadata(unary_ctx);
    SimpleRequest request;
    request.set_response_size(kLargeResponseSize);
    *request.mutable_payload() = zeros(kLargeRequestSize);
    SimpleResponse response;
    expect_ok(stub_->UnaryCall(&unary_ctx, request, &response), "UnaryCall");
    expect_payload(response.payload(), kLargeResponseSize, "UnaryCall response");
    expect_metadata(unary_ctx.GetServerInitialMetadata(), kEchoInitialKey, kEchoInitialValue,
                    "UnaryCall initial metadata");
    expect_metadata(unary_ctx.GetServerTrailingMetadata(), kEchoTrailingKey, kEchoTrailingValue,
                    "UnaryCall trailing metadata");

    grpc::ClientContext stream_ctx;
    set_echo_metadata(stream_ctx);
    std::unique_ptr<DuplexStream> stream = stub_->FullDuplexCall(&stream_ctx);
    stream->Write(streaming_request(kLargeResponseSize, kLargeRequestSize));
    stream->WritesDone();
    std::vector<StreamingOutputCallResponse> responses;
    StreamingOutputCallResponse r;
    while (stream->Read(&r)) responses.push_back(r);
    // Finish receives the initial metadata too if no response did.
    expect_ok(stream->Finish(), "FullDuplexCall");
    expect(responses.size() == 1,
           absl::StrCat("FullDuplexCall: expected 1 response, got ", responses.size()));
    expect_payload(responses[0].payload(), kLargeResponseSize, "FullDuplexCall response");
    expect_metadata(stream_ctx.GetServerInitialMetadata(), kEchoInitialKey, kEchoInitialValue,
                    "FullDuplexCall initial metadata");
    expect_metadata(stream_ctx.GetServerTrailingMetadata(), kEchoTrailingKey, kEchoTrailingValue,
                    "FullDuplexCall trailing metadata");
  }

  void status_code_and_message() {
    expect_echoed_status(kStatusMessage, /*with_full_duplex=*/true);
  }

  void special_status_message() {
    expect_echoed_status(kSpecialStatusMessage, /*with_full_duplex=*/false);
  }

  void unimplemented_method() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    Empty response;
    expect_status(stub_->UnimplementedCall(&ctx, Empty(), &response),
                  grpc::StatusCode::UNIMPLEMENTED, "TestService/UnimplementedCall");
  }

  void unimplemented_service() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    Empty response;
    expect_status(unimplemented_stub_->UnimplementedCall(&ctx, Empty(), &response),
                  grpc::StatusCode::UNIMPLEMENTED, "UnimplementedService/UnimplementedCall");
  }

 private:
  void set_deadline(grpc::ClientContext& ctx) const {
    ctx.set_deadline(std::chrono::system_clock::now() + rpc_timeout_);
  }

  // The deadline and the Echo Metadata request keys (the -bin value goes as raw bytes: grpc++
  // encodes it).
  void set_echo_metadata(grpc::ClientContext& ctx) const {
    set_deadline(ctx);
    ctx.AddMetadata(kEchoInitialKey, kEchoInitialValue);
    ctx.AddMetadata(kEchoTrailingKey, kEchoTrailingValue);
  }

  void expect_echoed_status(const std::string& message, bool with_full_duplex) {
    grpc::ClientContext unary_ctx;
    set_deadline(unary_ctx);
    SimpleRequest request;
    *request.mutable_response_status() = echo_status(message);
    SimpleResponse response;
    grpc::Status unary_status = stub_->UnaryCall(&unary_ctx, request, &response);
    expect_status(unary_status, grpc::StatusCode::UNKNOWN, "UnaryCall");
    expect(unary_status.error_message() == message,
           absl::StrCat("UnaryCall status message: expected ", quoted(message), ", got ",
                        quoted(unary_status.error_message())));
    if (!with_full_duplex) return;

    grpc::ClientContext stream_ctx;
    set_deadline(stream_ctx);
    std::unique_ptr<DuplexStream> stream = stub_->FullDuplexCall(&stream_ctx);
    StreamingOutputCallRequest streaming;
    *streaming.mutable_response_status() = echo_status(message);
    // The server may end the call as soon as it reads the request, so the write and the
    // half-close may be refused; the status is what counts.
    if (stream->Write(streaming)) stream->WritesDone();
    StreamingOutputCallResponse extra;
    bool got_extra = stream->Read(&extra);
    grpc::Status status = stream->Finish();
    expect(!got_extra, "FullDuplexCall: unexpected response");
    expect_status(status, grpc::StatusCode::UNKNOWN, "FullDuplexCall");
    expect(status.error_message() == message,
           absl::StrCat("FullDuplexCall status message: expected ", quoted(message), ", got ",
                        quoted(status.error_message())));
  }

  std::unique_ptr<grpc::testing::TestService::Stub> stub_;
  std::unique_ptr<grpc::testing::UnimplementedService::Stub> unimplemented_stub_;
  std::chrono::milliseconds rpc_timeout_;
};

struct Case {
  const char* name;
  void (Cases::*run)();
};

constexpr Case kCases[] = {
    {"empty_unary", &Cases::empty_unary},
    {"large_unary", &Cases::large_unary},
    {"client_streaming", &Cases::client_streaming},
    {"server_streaming", &Cases::server_streaming},
    {"ping_pong", &Cases::ping_pong},
    {"empty_stream", &Cases::empty_stream},
    {"cancel_after_begin", &Cases::cancel_after_begin},
    {"cancel_after_first_response", &Cases::cancel_after_first_response},
    {"timeout_on_sleeping_server", &Cases::timeout_on_sleeping_server},
    {"custom_metadata", &Cases::custom_metadata},
    {"status_code_and_message", &Cases::status_code_and_message},
    {"special_status_message", &Cases::special_status_message},
    {"unimplemented_method", &Cases::unimplemented_method},
    {"unimplemented_service", &Cases::unimplemented_service},
};

// Runs one case; prints its PASS / FAIL line.
bool run_case(Cases& cases, const Case& c) {
  std::string failure;
  try {
    (cases.*c.run)();
  } catch (const CheckFailed& e) {
    failure = e.what();
  } catch (const std::exception& e) {
    failure = absl::StrCat("unexpected exception: ", e.what());
  }
  if (failure.empty()) {
    std::printf("PASS %s\n", c.name);
  } else {
    std::printf("FAIL %s: %s\n", c.name, failure.c_str());
  }
  std::fflush(stdout);
  return failure.empty();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::cerr << "grpcpp_interop_client: unexpected argument " << rest[1]
              << " (flags take --flag=value)\n";
    return 2;
  }
  const bool use_tls = absl::GetFlag(FLAGS_use_tls);
  const std::string tls_ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string server_host_override = absl::GetFlag(FLAGS_server_host_override);
  if (!use_tls && (!tls_ca.empty() || !server_host_override.empty())) {
    std::cerr << "grpcpp_interop_client: --tls_ca and --server_host_override need --use_tls\n";
    return 2;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (use_tls) {
    std::ifstream file(tls_ca);
    std::string ca((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (!file || ca.empty()) {
      std::cerr << "grpcpp_interop_client: --use_tls needs a readable --tls_ca, not '" << tls_ca
                << "'\n";
      return 2;
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca;
    credentials = grpc::SslCredentials(ssl);
  }
  int port = absl::GetFlag(FLAGS_server_port);
  if (port <= 0 || port > 65535) {
    std::cerr << "grpcpp_interop_client: --server_port=N is required\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_rpc_timeout_ms) <= 0) {
    std::cerr << "grpcpp_interop_client: --rpc_timeout_ms must be positive\n";
    return 2;
  }
  std::string test_case = absl::GetFlag(FLAGS_test_case);
  std::vector<const Case*> selected;
  for (const Case& c : kCases) {
    if (test_case == "all" || test_case == c.name) selected.push_back(&c);
  }
  if (selected.empty()) {
    std::cerr << "grpcpp_interop_client: unknown --test_case " << test_case << "; one of: all";
    for (const Case& c : kCases) std::cerr << ", " << c.name;
    std::cerr << "\n";
    return 2;
  }

  std::string host = absl::GetFlag(FLAGS_server_host);
  if (host.find(':') != std::string::npos && !host.starts_with("[")) host = "[" + host + "]";
  grpc::ChannelArguments args;
  // No proxy may stand between the client and the server under test.
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  if (!server_host_override.empty()) args.SetSslTargetNameOverride(server_host_override);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(host + ":" + std::to_string(port), credentials, args);

  // Connect before the first case (bounded; an unreachable server fails the cases instead), so
  // that every case, run alone too, starts on a ready channel.
  std::chrono::milliseconds rpc_timeout(absl::GetFlag(FLAGS_rpc_timeout_ms));
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + rpc_timeout)) {
    std::cerr << "grpcpp_interop_client: could not connect to " << host << ":" << port << " within "
              << rpc_timeout.count() << " ms\n";
  }

  Cases cases(channel, rpc_timeout);
  int failed = 0;
  for (const Case* c : selected) {
    if (!run_case(cases, *c)) ++failed;
  }
  return failed == 0 ? 0 : 1;
}
