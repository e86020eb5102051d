// interop_client: gRPC's interop test cases (doc/interop-test-descriptions.md in the gRPC
// repository) run with the Trellis generated clients against any grpc.testing.TestService
// server.
//
//   interop_client --server_port=N [--server_host=localhost] [--test_case=all|NAME]
//                  [--rpc_timeout_ms=10000]
//                  [--use_tls --tls_ca=FILE [--server_host_override=NAME]]
//
// Cases: empty_unary, large_unary, client_streaming, server_streaming, ping_pong, empty_stream,
// cancel_after_begin, cancel_after_first_response, timeout_on_sleeping_server, custom_metadata,
// status_code_and_message, special_status_message, unimplemented_method, unimplemented_service;
// each asserts what the descriptions say it asserts. Prints "PASS name" or "FAIL name: reason"
// per case and exits 0 only if every case passed. Every call has a deadline (--rpc_timeout_ms,
// timeout_on_sleeping_server's own 1 ms), so a run always ends. --use_tls calls over TLS,
// trusting the PEM CAs in --tls_ca (gRPC's own interop client has a test CA built in; this one
// is handed it), and checks the server's certificate against --server_host_override when given.
#include <grpc/grpc.h>
#include <grpcpp/channel.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/testing/test.trellis.h"
#include "trellis/runtime.hpp"
#include "trellis/tls.hpp"

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
using trellis::CallOptions;
using trellis::Result;
using trellis::Status;
using trellis::StatusCode;
using trellis::Task;

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

// Debian's Abseil has its own string_view, which std::string_view does not convert to.
std::string quoted(std::string_view text) {
  return "\"" + absl::CHexEscape(absl::string_view(text.data(), text.size())) + "\"";
}

void expect_ok(const Status& status, const std::string& what) {
  expect(status.ok(), absl::StrCat(what, " failed: ", status.to_string()));
}

void expect_status(const Status& status, StatusCode code, const std::string& what) {
  expect(status.code() == code, absl::StrCat(what, ": expected ", trellis::status_code_name(code),
                                             ", got ", status.to_string()));
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
void expect_metadata(const trellis::Metadata& metadata, const std::string& key,
                     const std::string& value, const std::string& what) {
  std::vector<std::string_view> values = metadata.get_all(key);
  expect(values.size() == 1 && values[0] == value,
         absl::StrCat(
             what, " ", key, ": expected [", quoted(value), "], got [",
             absl::StrJoin(values, ", ",
                           [](std::string* out, std::string_view v) { out->append(quoted(v)); }),
             "]"));
}

Payload zeros(int size) {
  Payload payload;
  payload.set_type(grpc::testing::COMPRESSABLE);
  payload.set_body(std::string(static_cast<std::size_t>(size), '\0'));
  return payload;
}

// One response of `response_size` asked for with a request payload of `request_size`. (One
// size, not a list: GCC 12 miscompiles a braced list inside a co_await expression.)
StreamingOutputCallRequest streaming_request(int response_size, int request_size) {
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(response_size);
  *request.mutable_payload() = zeros(request_size);
  return request;
}

// The server's EchoStatus feature: the call is to end with `code` 2 (UNKNOWN) and `message`.
EchoStatus echo_status(const std::string& message) {
  EchoStatus status;
  status.set_code(static_cast<int>(StatusCode::kUnknown));
  status.set_message(message);
  return status;
}

class Cases {
 public:
  Cases(const trellis::Channel& channel, std::chrono::milliseconds rpc_timeout)
      : channel_(channel),
        stub_(channel),
        unimplemented_stub_(channel),
        rpc_timeout_(rpc_timeout) {}

  Task<void> empty_unary() {
    Result<Empty> response = co_await stub_.EmptyCall(Empty(), options());
    expect_ok(response.status(), "EmptyCall");
  }

  Task<void> large_unary() {
    SimpleRequest request;
    request.set_response_size(kLargeResponseSize);
    *request.mutable_payload() = zeros(kLargeRequestSize);
    Result<SimpleResponse> response = co_await stub_.UnaryCall(request, options());
    expect_ok(response.status(), "UnaryCall");
    expect_payload(response->payload(), kLargeResponseSize, "response");
  }

  Task<void> client_streaming() {
    auto stream = stub_.StreamingInputCall(options());
    for (int size : kRequestSizes) {
      StreamingInputCallRequest request;
      *request.mutable_payload() = zeros(size);
      // A refused write means the call ended; finish() says how.
      if (!co_await stream.write(request)) break;
    }
    Result<StreamingInputCallResponse> response = co_await stream.finish();
    expect_ok(response.status(), "StreamingInputCall");
    expect(response->aggregated_payload_size() == 74922,
           absl::StrCat("aggregated_payload_size: expected 74922, got ",
                        response->aggregated_payload_size()));
  }

  Task<void> server_streaming() {
    StreamingOutputCallRequest request;
    for (int size : kResponseSizes) request.add_response_parameters()->set_size(size);
    auto stream = stub_.StreamingOutputCall(request, options());
    std::vector<int> sizes;
    while (std::optional<StreamingOutputCallResponse> response = co_await stream.read()) {
      expect_payload(response->payload(), static_cast<int>(response->payload().body().size()),
                     absl::StrCat("response ", sizes.size()));
      sizes.push_back(static_cast<int>(response->payload().body().size()));
    }
    expect_ok(co_await stream.finish(), "StreamingOutputCall");
    expect(sizes == std::vector<int>(std::begin(kResponseSizes), std::end(kResponseSizes)),
           absl::StrCat("response sizes: expected 31415,9,2653,58979, got ",
                        absl::StrJoin(sizes, ",")));
  }

  Task<void> ping_pong() {
    auto stream = stub_.FullDuplexCall(options());
    for (std::size_t i = 0; i < std::size(kRequestSizes); ++i) {
      bool written = co_await stream.write(streaming_request(kResponseSizes[i], kRequestSizes[i]));
      if (!written) expect_ok(co_await stream.finish(), absl::StrCat("write ", i));
      expect(written, absl::StrCat("write ", i, " was refused"));
      std::optional<StreamingOutputCallResponse> response = co_await stream.read();
      if (!response) expect_ok(co_await stream.finish(), absl::StrCat("read ", i));
      expect(response.has_value(), absl::StrCat("the stream ended before response ", i));
      expect_payload(response->payload(), kResponseSizes[i], absl::StrCat("response ", i));
    }
    co_await expect_end(stream, "FullDuplexCall");
  }

  Task<void> empty_stream() {
    auto stream = stub_.FullDuplexCall(options());
    co_await expect_end(stream, "FullDuplexCall");
  }

  // "Client starts StreamingInputCall, client immediately cancels": the call must be under way,
  // its headers sent but no message, when it is cancelled. The generated ClientWriter cannot
  // start a call without sending a message or half-closing (it starts with its first write,
  // writes_done or finish; cancel() before that ends it locally, before gRPC ever sees it), so
  // the call is opened on the same method path as a bidi stream, whose read() starts the call
  // and sends nothing but the headers. The wire is the same either way.
  Task<void> cancel_after_begin() {
    auto stream = stub_.StreamingInputCall(options());
    // Headers only: the call has begun on the wire, and no request has been sent.
    expect(co_await stream.start(), "StreamingInputCall did not start");
    stream.cancel();
    expect_status((co_await stream.finish()).status(), StatusCode::kCancelled,
                  "StreamingInputCall");
  }

  Task<void> cancel_after_first_response() {
    auto stream = stub_.FullDuplexCall(options());
    bool written = co_await stream.write(streaming_request(31415, 27182));
    std::optional<StreamingOutputCallResponse> response;
    if (written) response = co_await stream.read();
    if (!response) expect_ok(co_await stream.finish(), "FullDuplexCall");
    expect(response.has_value(), "the stream ended before the first response");
    expect_payload(response->payload(), 31415, "first response");
    stream.cancel();
    expect_status(co_await stream.finish(), StatusCode::kCancelled, "FullDuplexCall");
  }

  Task<void> timeout_on_sleeping_server() {
    CallOptions one_ms;
    one_ms.set_timeout(std::chrono::milliseconds(1));
    auto stream = stub_.FullDuplexCall(std::move(one_ms));
    StreamingOutputCallRequest request;
    *request.mutable_payload() = zeros(27182);
    // The write may be refused: the deadline may have passed already.
    co_await stream.write(request);
    // "Client waits": the server answers nothing, so the read ends with the call.
    std::optional<StreamingOutputCallResponse> response = co_await stream.read();
    expect(!response.has_value(), "the server answered a request without response_parameters");
    expect_status(co_await stream.finish(), StatusCode::kDeadlineExceeded, "FullDuplexCall");
  }

  Task<void> custom_metadata() {
    trellis::ResponseMetadata unary_metadata;
    SimpleRequest request;
    request.set_response_size(kLargeResponseSize);
    *request.mutable_payload() = zeros(kLargeRequestSize);
    Result<SimpleResponse> response =
        co_await stub_.UnaryCall(request, echo_options(&unary_metadata));
    expect_ok(response.status(), "UnaryCall");
    expect_payload(response->payload(), kLargeResponseSize, "UnaryCall response");
    expect_metadata(unary_metadata.initial, kEchoInitialKey, kEchoInitialValue,
                    "UnaryCall initial metadata");
    expect_metadata(unary_metadata.trailing, kEchoTrailingKey, kEchoTrailingValue,
                    "UnaryCall trailing metadata");

    trellis::ResponseMetadata stream_metadata;
    auto stream = stub_.FullDuplexCall(echo_options(&stream_metadata));
    co_await stream.write(streaming_request(kLargeResponseSize, kLargeRequestSize));
    co_await stream.writes_done();
    std::vector<StreamingOutputCallResponse> responses;
    while (auto r = co_await stream.read()) responses.push_back(std::move(*r));
    expect_ok(co_await stream.finish(), "FullDuplexCall");
    expect(responses.size() == 1,
           absl::StrCat("FullDuplexCall: expected 1 response, got ", responses.size()));
    expect_payload(responses[0].payload(), kLargeResponseSize, "FullDuplexCall response");
    expect_metadata(stream_metadata.initial, kEchoInitialKey, kEchoInitialValue,
                    "FullDuplexCall initial metadata");
    expect_metadata(stream_metadata.trailing, kEchoTrailingKey, kEchoTrailingValue,
                    "FullDuplexCall trailing metadata");
  }

  Task<void> status_code_and_message() {
    co_await expect_echoed_status(kStatusMessage, /*with_full_duplex=*/true);
  }

  Task<void> special_status_message() {
    co_await expect_echoed_status(kSpecialStatusMessage, /*with_full_duplex=*/false);
  }

  Task<void> unimplemented_method() {
    Result<Empty> response = co_await stub_.UnimplementedCall(Empty(), options());
    expect_status(response.status(), StatusCode::kUnimplemented, "TestService/UnimplementedCall");
  }

  Task<void> unimplemented_service() {
    Result<Empty> response = co_await unimplemented_stub_.UnimplementedCall(Empty(), options());
    expect_status(response.status(), StatusCode::kUnimplemented,
                  "UnimplementedService/UnimplementedCall");
  }

 private:
  CallOptions options() const {
    CallOptions options;
    options.set_timeout(rpc_timeout_);
    return options;
  }

  // The Echo Metadata request keys, and where the response metadata goes.
  CallOptions echo_options(trellis::ResponseMetadata* out) const {
    CallOptions options = this->options();
    options.add_metadata(kEchoInitialKey, kEchoInitialValue);
    options.add_metadata(kEchoTrailingKey, kEchoTrailingValue);
    options.capture_response_metadata(out);
    return options;
  }

  // Half-closes, then expects no further response and an OK status.
  template <class Stream>
  static Task<void> expect_end(Stream& stream, const std::string& what) {
    co_await stream.writes_done();
    std::optional<StreamingOutputCallResponse> extra = co_await stream.read();
    Status status = co_await stream.finish();
    expect(!extra.has_value(), absl::StrCat(what, ": unexpected extra response of ",
                                            extra ? extra->payload().body().size() : 0, " bytes"));
    expect_ok(status, what);
  }

  Task<void> expect_echoed_status(std::string message, bool with_full_duplex) {
    SimpleRequest request;
    *request.mutable_response_status() = echo_status(message);
    Result<SimpleResponse> response = co_await stub_.UnaryCall(request, options());
    expect_status(response.status(), StatusCode::kUnknown, "UnaryCall");
    expect(response.status().message() == message,
           absl::StrCat("UnaryCall status message: expected ", quoted(message), ", got ",
                        quoted(response.status().message())));
    if (!with_full_duplex) co_return;

    auto stream = stub_.FullDuplexCall(options());
    StreamingOutputCallRequest streaming;
    *streaming.mutable_response_status() = echo_status(message);
    // The server may end the call as soon as it reads the request, so the write and the
    // half-close may be refused; the status is what counts.
    if (co_await stream.write(streaming)) co_await stream.writes_done();
    std::optional<StreamingOutputCallResponse> extra = co_await stream.read();
    Status status = co_await stream.finish();
    expect(!extra.has_value(), "FullDuplexCall: unexpected response");
    expect_status(status, StatusCode::kUnknown, "FullDuplexCall");
    expect(status.message() == message,
           absl::StrCat("FullDuplexCall status message: expected ", quoted(message), ", got ",
                        quoted(status.message())));
  }

  trellis::Channel channel_;
  grpc::testing::TestServiceClient stub_;
  grpc::testing::UnimplementedServiceClient unimplemented_stub_;
  std::chrono::milliseconds rpc_timeout_;
};

struct Case {
  const char* name;
  Task<void> (Cases::*run)();
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

// Runs one case to completion on the runtime; prints its PASS / FAIL line.
bool run_case(trellis::Runtime& runtime, Cases& cases, const Case& c) {
  std::string failure;
  try {
    runtime.block_on((cases.*c.run)());
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
    std::cerr << "interop_client: unexpected argument " << rest[1]
              << " (flags take --flag=value)\n";
    return 2;
  }
  const bool use_tls = absl::GetFlag(FLAGS_use_tls);
  if (!use_tls && (!absl::GetFlag(FLAGS_tls_ca).empty() ||
                   !absl::GetFlag(FLAGS_server_host_override).empty())) {
    std::cerr << "interop_client: --tls_ca and --server_host_override need --use_tls\n";
    return 2;
  }
  if (use_tls && absl::GetFlag(FLAGS_tls_ca).empty()) {
    std::cerr << "interop_client: --use_tls needs --tls_ca\n";
    return 2;
  }
  int port = absl::GetFlag(FLAGS_server_port);
  if (port <= 0 || port > 65535) {
    std::cerr << "interop_client: --server_port=N is required\n";
    return 2;
  }
  std::string test_case = absl::GetFlag(FLAGS_test_case);
  std::vector<const Case*> selected;
  for (const Case& c : kCases) {
    if (test_case == "all" || test_case == c.name) selected.push_back(&c);
  }
  if (selected.empty()) {
    std::cerr << "interop_client: unknown --test_case " << test_case << "; one of: all";
    for (const Case& c : kCases) std::cerr << ", " << c.name;
    std::cerr << "\n";
    return 2;
  }

  std::string host = absl::GetFlag(FLAGS_server_host);
  if (host.find(':') != std::string::npos && !host.starts_with("[")) host = "[" + host + "]";
  grpc::ChannelArguments args;
  // No proxy may stand between the client and the server under test.
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  const std::string target = host + ":" + std::to_string(port);
  auto make_channel = [&]() -> Result<trellis::Channel> {
    if (!use_tls) return trellis::Channel::insecure(target, args);
    trellis::TlsOptions tls = trellis::TlsOptions::from_files(absl::GetFlag(FLAGS_tls_ca));
    tls.server_name_override = absl::GetFlag(FLAGS_server_host_override);
    return trellis::Channel::tls(target, tls, args);
  };
  Result<trellis::Channel> made = make_channel();
  if (!made.ok()) {
    std::cerr << "interop_client: " << made.status() << "\n";  // names a bad --tls_ca
    return 2;
  }
  trellis::Channel& channel = *made;

  // Connect before the first case (bounded; an unreachable server fails the cases instead), so
  // that every case, run alone too, starts on a ready channel.
  std::chrono::milliseconds rpc_timeout(absl::GetFlag(FLAGS_rpc_timeout_ms));
  if (!channel.grpc_channel()->WaitForConnected(std::chrono::system_clock::now() + rpc_timeout)) {
    std::cerr << "interop_client: could not connect to " << host << ":" << port << " within "
              << rpc_timeout.count() << " ms\n";
  }

  auto runtime = trellis::Runtime::single_thread().build();
  Cases cases(channel, rpc_timeout);
  int failed = 0;
  for (const Case* c : selected) {
    if (!run_case(*runtime, cases, *c)) ++failed;
  }
  return failed == 0 ? 0 : 1;
}
