// trellis::ReflectionService (grpc.reflection.v1 and v1alpha ServerReflection):
//  - ReflectionProtocolTest: every request kind and every error, for both versions, through the
//    Trellis client of the generated stubs, against a pool with a chain of imports and extensions;
//  - BufReflectionTest: the stock `buf curl` (npm @bufbuild/buf) lists the services and methods
//    of a Trellis server and calls a method with only what reflection told it, over v1 and
//    v1alpha, and falls back to v1alpha where v1 is not served;
//  - PythonReflectionTest: a python3-grpcio client of each version lists, fetches the echo
//    service's file, gets NOT_FOUND errors, and calls Echo with types built from that file alone.
// Real loopback sockets; the peers run as child processes (tests/subprocess.hpp), each bounded.
#include "trellis/reflection.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "grpc/reflection/v1/reflection.trellis.h"
#include "grpc/reflection/v1alpha/reflection.trellis.h"
#include "python_peer.hpp"
#include "subprocess.hpp"
#include "trellis/channel.hpp"
#include "trellis/health.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

#ifndef TRELLIS_BUF
#error "TRELLIS_BUF (the buf CLI, npm @bufbuild/buf) must be defined by the build"
#endif

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
namespace pb = ::google::protobuf;

constexpr auto kPeerBound = 60s;  // a buf or python client's whole run

// The services every test server serves, in the order they are added.
const std::vector<std::string> kServices = {
    "trellis.testing.Echo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
};

// Two files built at run time on top of the generated pool: extras imports base (which imports
// echo.proto) and descriptor.proto, and declares extensions of its own message and a custom
// method option. Nothing linked into the test declares an extension, hence these.
constexpr char kBaseFile[] = "trellis/testing/reflection_base.proto";
constexpr char kExtrasFile[] = "trellis/testing/reflection_extras.proto";
constexpr char kEchoFile[] = "trellis/testing/echo.proto";
constexpr char kDescriptorFile[] = "google/protobuf/descriptor.proto";

constexpr char kBaseText[] = R"pb(
  name: "trellis/testing/reflection_base.proto"
  package: "trellis.testing.extras"
  dependency: "trellis/testing/echo.proto"
  message_type {
    name: "Wrapper"
    field {
      name: "request"
      number: 1
      label: LABEL_OPTIONAL
      type: TYPE_MESSAGE
      type_name: ".trellis.testing.EchoRequest"
    }
  }
  syntax: "proto3"
)pb";

constexpr char kExtrasText[] = R"pb(
  name: "trellis/testing/reflection_extras.proto"
  package: "trellis.testing.extras"
  dependency: "trellis/testing/reflection_base.proto"
  dependency: "google/protobuf/descriptor.proto"
  message_type {
    name: "Extendable"
    field {
      name: "wrapper"
      number: 1
      label: LABEL_OPTIONAL
      type: TYPE_MESSAGE
      type_name: ".trellis.testing.extras.Wrapper"
    }
    extension_range { start: 100 end: 200 }
  }
  enum_type {
    name: "Color"
    value { name: "COLOR_RED" number: 0 }
  }
  extension {
    name: "weight"
    number: 150
    label: LABEL_OPTIONAL
    type: TYPE_INT32
    extendee: ".trellis.testing.extras.Extendable"
  }
  extension {
    name: "tag"
    number: 100
    label: LABEL_OPTIONAL
    type: TYPE_STRING
    extendee: ".trellis.testing.extras.Extendable"
  }
  extension {
    name: "audit"
    number: 50001
    label: LABEL_OPTIONAL
    type: TYPE_BOOL
    extendee: ".google.protobuf.MethodOptions"
  }
  syntax: "proto2"
)pb";

// The generated pool plus the two files above. Built once, never freed (a service may use it
// until the end of the process).
const pb::DescriptorPool& extras_pool() {
  static const pb::DescriptorPool* pool = [] {
    auto* p = new pb::DescriptorPool(pb::DescriptorPool::generated_pool());
    for (const char* text : {kBaseText, kExtrasText}) {
      pb::FileDescriptorProto file;
      if (!pb::TextFormat::ParseFromString(text, &file) || p->BuildFile(file) == nullptr) {
        std::abort();
      }
    }
    return p;
  }();
  return *pool;
}

// One version of the protocol: its client and messages.
struct V1 {
  using Client = ::grpc::reflection::v1::ServerReflectionClient;
  using Request = ::grpc::reflection::v1::ServerReflectionRequest;
  using Response = ::grpc::reflection::v1::ServerReflectionResponse;
};
struct V1Alpha {
  using Client = ::grpc::reflection::v1alpha::ServerReflectionClient;
  using Request = ::grpc::reflection::v1alpha::ServerReflectionRequest;
  using Response = ::grpc::reflection::v1alpha::ServerReflectionResponse;
};

// A server serving the echo service, a HealthService and the reflection services (both, unless
// told otherwise), on a runtime of two workers.
class ReflectionServerTest : public EndToEndTest {
 protected:
  void start(ReflectionService& reflection, bool v1 = true, bool v1alpha = true,
             Transport transport = Transport::grpc) {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    Server::Builder builder(*runtime_);
    builder.transport(transport)
        .add_insecure_port("127.0.0.1:0")
        .add_service(echo_)
        .add_service(health_.service());
    if (v1) builder.add_service(reflection.v1());
    if (v1alpha) builder.add_service(reflection.v1alpha());
    auto server = builder.build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }

  EchoImpl echo_;
  HealthService health_;
};

// ------------------------------------------------------------------ the protocol, both versions

template <class Api>
class ReflectionProtocolTest : public ReflectionServerTest {
 protected:
  using Request = typename Api::Request;
  using Response = typename Api::Response;

  // What one stream answered, and how it ended.
  struct Exchange {
    std::vector<Response> responses;
    Status status;
  };

  void SetUp() override {
    start(reflection_);
    client_ = std::make_unique<typename Api::Client>(Channel::insecure(address()));
  }

  // Sends `requests` on one ServerReflectionInfo stream, reading the response to each before
  // sending the next, then half-closes and finishes the call.
  Exchange exchange(std::vector<Request> requests) {
    return run(
        [](const typename Api::Client* client, std::vector<Request> requests) -> Task<Exchange> {
          Exchange out;
          auto stream = client->ServerReflectionInfo();
          for (const Request& request : requests) {
            if (!co_await stream.write(request)) break;
            std::optional<Response> response = co_await stream.read();
            if (!response) break;
            out.responses.push_back(std::move(*response));
          }
          co_await stream.writes_done();
          // The stream has no more responses once the requests are answered.
          std::optional<Response> extra = co_await stream.read();
          if (extra) out.responses.push_back(std::move(*extra));
          out.status = co_await stream.finish();
          co_return out;
        }(client_.get(), std::move(requests)));
  }

  // Requests of each kind.
  static Request list_services() {
    Request r;
    r.set_host("reflection.test");
    r.set_list_services("*");
    return r;
  }
  static Request file_by_filename(std::string name) {
    Request r;
    r.set_file_by_filename(std::move(name));
    return r;
  }
  static Request file_containing_symbol(std::string symbol) {
    Request r;
    r.set_file_containing_symbol(std::move(symbol));
    return r;
  }
  static Request file_containing_extension(std::string type, int number) {
    Request r;
    r.mutable_file_containing_extension()->set_containing_type(std::move(type));
    r.mutable_file_containing_extension()->set_extension_number(number);
    return r;
  }
  static Request all_extension_numbers_of_type(std::string type) {
    Request r;
    r.set_all_extension_numbers_of_type(std::move(type));
    return r;
  }

  // The names of the files a response carries, in order; every file must parse.
  static std::vector<std::string> file_names(const Response& response) {
    EXPECT_TRUE(response.has_file_descriptor_response()) << response.DebugString();
    std::vector<std::string> names;
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      pb::FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      names.push_back(file.name());
    }
    return names;
  }

  // Whether `response` is an error_response with `code`.
  static ::testing::AssertionResult is_error(const Response& response, StatusCode code) {
    if (!response.has_error_response()) {
      return ::testing::AssertionFailure() << "not an error: " << response.DebugString();
    }
    if (response.error_response().error_code() != static_cast<int>(code)) {
      return ::testing::AssertionFailure()
             << "error code " << response.error_response().error_code() << ", expected "
             << status_code_name(code) << ": " << response.error_response().error_message();
    }
    return ::testing::AssertionSuccess();
  }

  ReflectionService reflection_{extras_pool()};
  std::unique_ptr<typename Api::Client> client_;
};

using Versions = ::testing::Types<V1, V1Alpha>;
TYPED_TEST_SUITE(ReflectionProtocolTest, Versions);

TYPED_TEST(ReflectionProtocolTest, ListsEveryServiceInTheOrderAdded) {
  auto ex = this->exchange({this->list_services()});
  ASSERT_TRUE(ex.status.ok()) << ex.status;
  ASSERT_EQ(ex.responses.size(), 1u);
  const auto& response = ex.responses[0];
  ASSERT_TRUE(response.has_list_services_response()) << response.DebugString();
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  EXPECT_EQ(names, kServices);
  // Every response carries its request's host and the request itself.
  EXPECT_EQ(response.valid_host(), "reflection.test");
  EXPECT_EQ(response.original_request().SerializeAsString(),
            this->list_services().SerializeAsString());
}

// The requested file first, then its imports, transitively: enough to rebuild the file
// elsewhere. On the same stream each dependency is sent once; the requested file every time.
TYPED_TEST(ReflectionProtocolTest, SendsAFileWithItsDependenciesOncePerStream) {
  auto ex = this->exchange({
      this->file_by_filename(kExtrasFile),
      this->file_by_filename(kBaseFile),    // sent as a dependency already: itself only
      this->file_by_filename(kExtrasFile),  // sent already: itself only
      this->file_containing_symbol("trellis.testing.EchoRequest"),
  });
  ASSERT_TRUE(ex.status.ok()) << ex.status;
  ASSERT_EQ(ex.responses.size(), 4u);
  EXPECT_EQ(this->file_names(ex.responses[0]),
            (std::vector<std::string>{kExtrasFile, kBaseFile, kDescriptorFile, kEchoFile}));
  EXPECT_EQ(this->file_names(ex.responses[1]), std::vector<std::string>{kBaseFile});
  EXPECT_EQ(this->file_names(ex.responses[2]), std::vector<std::string>{kExtrasFile});
  EXPECT_EQ(this->file_names(ex.responses[3]), std::vector<std::string>{kEchoFile});
  EXPECT_EQ(ex.responses[3].original_request().file_containing_symbol(),
            "trellis.testing.EchoRequest");

  // What the first response carried is the whole of extras.proto: a pool of those files alone
  // builds it.
  pb::SimpleDescriptorDatabase database;
  for (const std::string& bytes :
       ex.responses[0].file_descriptor_response().file_descriptor_proto()) {
    pb::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    ASSERT_TRUE(database.Add(file));
  }
  pb::DescriptorPool rebuilt(&database);
  const pb::FileDescriptor* extras = rebuilt.FindFileByName(kExtrasFile);
  ASSERT_NE(extras, nullptr);
  EXPECT_NE(rebuilt.FindMessageTypeByName("trellis.testing.EchoRequest"), nullptr);
  EXPECT_EQ(extras->extension_count(), 3);

  // A new stream starts afresh.
  auto again = this->exchange({this->file_by_filename(kBaseFile)});
  ASSERT_EQ(again.responses.size(), 1u);
  EXPECT_EQ(this->file_names(again.responses[0]), (std::vector<std::string>{kBaseFile, kEchoFile}));
}

TYPED_TEST(ReflectionProtocolTest, FindsTheFileOfEveryKindOfSymbol) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"trellis.testing.Echo", kEchoFile},                       // service
      {"trellis.testing.Echo.IdempotentEcho", kEchoFile},        // method
      {"trellis.testing.EchoResponse", kEchoFile},               // message
      {"trellis.testing.EchoRequest.delay_ms", kEchoFile},       // field
      {"trellis.testing.extras.Color", kExtrasFile},             // enum
      {"trellis.testing.extras.COLOR_RED", kExtrasFile},         // enum value
      {"trellis.testing.extras.audit", kExtrasFile},             // extension
      {"grpc.health.v1.Health", "grpc/health/v1/health.proto"},  // the stock services
      {"grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"},
      {"grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"},
  };
  for (const auto& [symbol, file] : cases) {
    // One stream per symbol, so that each answer is a fresh one.
    auto ex = this->exchange({this->file_containing_symbol(symbol)});
    ASSERT_TRUE(ex.status.ok()) << symbol << ": " << ex.status;
    ASSERT_EQ(ex.responses.size(), 1u) << symbol;
    std::vector<std::string> names = this->file_names(ex.responses[0]);
    ASSERT_FALSE(names.empty()) << symbol;
    EXPECT_EQ(names.front(), file) << symbol;
  }
}

TYPED_TEST(ReflectionProtocolTest, AnswersExtensionsByTypeAndNumber) {
  auto ex = this->exchange({
      this->file_containing_extension("trellis.testing.extras.Extendable", 150),
      this->file_containing_extension("google.protobuf.MethodOptions", 50001),
      this->all_extension_numbers_of_type("trellis.testing.extras.Extendable"),
      this->all_extension_numbers_of_type("google.protobuf.MethodOptions"),
      this->all_extension_numbers_of_type("trellis.testing.EchoRequest"),  // none: not an error
  });
  ASSERT_TRUE(ex.status.ok()) << ex.status;
  ASSERT_EQ(ex.responses.size(), 5u);
  EXPECT_EQ(this->file_names(ex.responses[0]),
            (std::vector<std::string>{kExtrasFile, kBaseFile, kDescriptorFile, kEchoFile}));
  EXPECT_EQ(this->file_names(ex.responses[1]), std::vector<std::string>{kExtrasFile});

  auto numbers = [](const auto& response) {
    EXPECT_TRUE(response.has_all_extension_numbers_response()) << response.DebugString();
    const auto& r = response.all_extension_numbers_response();
    return std::pair{r.base_type_name(),
                     std::vector<int>(r.extension_number().begin(), r.extension_number().end())};
  };
  EXPECT_EQ(numbers(ex.responses[2]), std::pair(std::string("trellis.testing.extras.Extendable"),
                                                std::vector<int>{100, 150}));
  EXPECT_EQ(numbers(ex.responses[3]),
            std::pair(std::string("google.protobuf.MethodOptions"), std::vector<int>{50001}));
  EXPECT_EQ(numbers(ex.responses[4]),
            std::pair(std::string("trellis.testing.EchoRequest"), std::vector<int>{}));
}

// Every error is an error_response on a stream that stays open and ends OK.
TYPED_TEST(ReflectionProtocolTest, AnswersErrorsOnTheStreamAndCarriesOn) {
  auto ex = this->exchange({
      this->file_by_filename("no/such.proto"),
      this->file_containing_symbol("no.such.Symbol"),
      this->file_containing_symbol(""),
      this->file_containing_extension("no.such.Message", 100),
      this->file_containing_extension("trellis.testing.extras.Extendable", 199),
      this->file_containing_extension("trellis.testing.extras.COLOR_RED", 100),  // not a message
      this->all_extension_numbers_of_type("no.such.Message"),
      typename TestFixture::Request(),  // sets no message_request
      this->list_services(),
  });
  ASSERT_TRUE(ex.status.ok()) << ex.status;
  ASSERT_EQ(ex.responses.size(), 9u);
  for (int i = 0; i < 7; ++i) {
    EXPECT_TRUE(this->is_error(ex.responses[i], StatusCode::kNotFound)) << "request " << i;
    EXPECT_FALSE(ex.responses[i].error_response().error_message().empty()) << "request " << i;
  }
  EXPECT_EQ(ex.responses[0].error_response().error_message(), "file not found: no/such.proto");
  EXPECT_EQ(ex.responses[1].error_response().error_message(), "symbol not found: no.such.Symbol");
  EXPECT_EQ(ex.responses[4].error_response().error_message(),
            "extension not found: trellis.testing.extras.Extendable 199");
  EXPECT_TRUE(this->is_error(ex.responses[7], StatusCode::kUnimplemented));
  EXPECT_TRUE(ex.responses[8].has_list_services_response());
}

// A stream the client opens and closes without a request ends OK at once.
TYPED_TEST(ReflectionProtocolTest, EndsAnEmptyStreamWithOk) {
  auto ex = this->exchange({});
  EXPECT_TRUE(ex.status.ok()) << ex.status;
  EXPECT_TRUE(ex.responses.empty());
}

// The default pool is the generated one: what is linked in, and nothing built at run time.
class DefaultPoolReflectionTest : public ReflectionProtocolTest<V1> {
 protected:
  void SetUp() override {
    start(generated_);
    client_ = std::make_unique<V1::Client>(Channel::insecure(address()));
  }

  ReflectionService generated_;
};

TEST_F(DefaultPoolReflectionTest, ReflectsTheGeneratedPool) {
  auto ex = exchange({file_containing_symbol("trellis.testing.Echo"), file_by_filename(kExtrasFile),
                      list_services()});
  ASSERT_TRUE(ex.status.ok()) << ex.status;
  ASSERT_EQ(ex.responses.size(), 3u);
  EXPECT_EQ(file_names(ex.responses[0]), std::vector<std::string>{kEchoFile});
  EXPECT_TRUE(is_error(ex.responses[1], StatusCode::kNotFound));
  EXPECT_EQ(ex.responses[2].list_services_response().service_size(),
            static_cast<int>(kServices.size()));
}

// ------------------------------------------------------------------------------ the buf CLI

class BufReflectionTest : public ReflectionServerTest {
 protected:
  void SetUp() override {
    if (access(TRELLIS_BUF, X_OK) != 0) {
      GTEST_SKIP() << "buf CLI not installed: run scripts/install-deps.sh (needs npm); looked for "
                   << TRELLIS_BUF;
    }
  }

  // Runs `buf curl --protocol grpc --http2-prior-knowledge [--reflect-protocol P] args... URL`,
  // where URL is the server's base URL followed by `path`.
  RunResult buf_run(const std::string& reflect_protocol, std::vector<std::string> args,
                    const std::string& path = "") {
    std::vector<std::string> argv = {TRELLIS_BUF, "curl", "--protocol", "grpc",
                                     "--http2-prior-knowledge"};
    if (!reflect_protocol.empty())
      argv.insert(argv.end(), {"--reflect-protocol", reflect_protocol});
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("http://" + address() + path);
    // buf keeps a cache under $HOME; a test's own keeps it out of the user's.
    return run_with_deadline(argv, {{"BUF_CACHE_DIR", cache_dir()}}, deadline_in(kPeerBound));
  }
  // buf_run's output; fails the test unless buf succeeds.
  std::string buf_curl(const std::string& reflect_protocol, std::vector<std::string> args,
                       const std::string& path = "") {
    RunResult run = buf_run(reflect_protocol, std::move(args), path);
    EXPECT_TRUE(run.status.success()) << run.status.describe() << "; output:\n" << run.output;
    return run.output;
  }

  static std::string cache_dir() { return ::testing::TempDir() + "trellis-reflection-buf-cache"; }

  static std::vector<std::string> sorted_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (end > start) lines.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    std::sort(lines.begin(), lines.end());
    return lines;
  }

  ReflectionService reflection_;
};

class BufReflectionVersionTest : public BufReflectionTest,
                                 public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    BufReflectionTest::SetUp();
    if (!IsSkipped()) start(reflection_);
  }
};

INSTANTIATE_TEST_SUITE_P(BothVersions, BufReflectionVersionTest,
                         ::testing::Values("grpc-v1", "grpc-v1alpha"), [](const auto& info) {
                           return info.param == "grpc-v1" ? "V1" : "V1Alpha";
                         });

TEST_P(BufReflectionVersionTest, ListsServices) {
  std::vector<std::string> expected = kServices;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(sorted_lines(buf_curl(GetParam(), {"--list-services"})), expected);
}

TEST_P(BufReflectionVersionTest, ListsMethods) {
  EXPECT_EQ(sorted_lines(buf_curl(GetParam(), {"--list-methods"})),
            (std::vector<std::string>{
                "grpc.health.v1.Health/Check",
                "grpc.health.v1.Health/Watch",
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                "trellis.testing.Echo/Echo",
                "trellis.testing.Echo/IdempotentEcho",
            }));
}

// buf learns the request and response types by reflection alone, encodes the JSON request and
// decodes the binary response.
TEST_P(BufReflectionVersionTest, CallsAMethodItLearnedByReflection) {
  std::string out =
      buf_curl(GetParam(), {"-d", R"({"message": "hi from buf"})"}, "/trellis.testing.Echo/Echo");
  EXPECT_NE(out.find(R"("message": "hi from buf")"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("peer": "ipv4:127.0.0.1:)"), std::string::npos) << out;
  EXPECT_EQ(echo_.observed.calls.load(), 1);

  out = buf_curl(GetParam(), {"-d", R"({"service": ""})"}, "/grpc.health.v1.Health/Check");
  EXPECT_NE(out.find(R"("status": "SERVING")"), std::string::npos) << out;
}

// Without --reflect-protocol buf asks v1 first.
TEST_F(BufReflectionTest, CallsWithTheDefaultProtocol) {
  start(reflection_);
  std::string out = buf_curl("", {"-d", R"({"message": "default"})"}, "/trellis.testing.Echo/Echo");
  EXPECT_NE(out.find(R"("message": "default")"), std::string::npos) << out;
}

// A server that serves v1alpha alone: buf asks v1, is told UNIMPLEMENTED and falls back, so what
// it lists and calls came over v1alpha; asked for v1 only, it fails.
TEST_F(BufReflectionTest, FallsBackToV1AlphaWhereV1IsNotServed) {
  start(reflection_, /*v1=*/false);
  EXPECT_EQ(
      sorted_lines(buf_curl("", {"--list-services"})),
      (std::vector<std::string>{"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                                "trellis.testing.Echo"}));
  std::string out = buf_curl("", {"-d", R"({"message": "old"})"}, "/trellis.testing.Echo/Echo");
  EXPECT_NE(out.find(R"("message": "old")"), std::string::npos) << out;

  RunResult v1 = buf_run("grpc-v1", {"--list-services"});
  EXPECT_FALSE(v1.status.success()) << v1.output;
  EXPECT_NE(v1.output.find("unimplemented"), std::string::npos) << v1.output;
}

// ------------------------------------------------------------------------ a python3-grpcio peer

// Each protocol version, on each server transport.
class PythonReflectionTest
    : public ReflectionServerTest,
      public ::testing::WithParamInterface<std::tuple<std::string, Transport>> {
 protected:
  void SetUp() override { start(reflection_, true, true, std::get<1>(GetParam())); }
  static const std::string& version() { return std::get<0>(GetParam()); }

  ReflectionService reflection_;
};

INSTANTIATE_TEST_SUITE_P(BothVersions, PythonReflectionTest,
                         ::testing::Combine(::testing::Values("v1", "v1alpha"),
                                            ::testing::Values(Transport::grpc, Transport::native)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == "v1" ? "V1" : "V1Alpha") +
                                  (std::get<1>(info.param) == Transport::native ? "Native"
                                                                                : "Grpc");
                         });

// The python client lists the services, fetches the echo service's file, sees the errors, and
// calls Echo with message types it built from the reflected file alone.
TEST_P(PythonReflectionTest, ListsFetchesAndCallsWhatItLearned) {
  auto run = run_with_deadline(
      python("reflection_client.py", {"--target", address(), "--version", version()}), python_env(),
      deadline_in(kPeerBound));
  ASSERT_TRUE(run.status.success()) << run.status.describe() << "; output:\n" << run.output;
  EXPECT_EQ(run.output,
            "services: trellis.testing.Echo grpc.health.v1.Health "
            "grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection\n"
            "file trellis.testing.Echo: trellis/testing/echo.proto\n"
            "error file_by_filename: NOT_FOUND\n"
            "error file_containing_symbol: NOT_FOUND\n"
            "error file_containing_extension: NOT_FOUND\n"
            "error all_extension_numbers_of_type: NOT_FOUND\n"
            "methods trellis.testing.Echo: Echo IdempotentEcho\n"
            "call Echo: hi from python\n");
  EXPECT_EQ(echo_.observed.calls.load(), 1);
}

}  // namespace
}  // namespace trellis::testing
