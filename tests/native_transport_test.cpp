// The native transport's building blocks (issue 13): the gRPC wire rules
// (framework/transport/src/grpc_wire.hpp) and the server session (h2_server_session.hpp),
// first driven by an nghttp2 client session in the same thread (the bytes between them are what
// a socket would carry, so every check is about what a client sees on the wire: HTTP status,
// grpc-status, GOAWAY codes), then over real sockets (asio_server_connection.hpp) against
// clients nobody here wrote: python3-grpcio's Echo battery and stubs of the stock
// grpc_cpp_plugin.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "asio_server_connection.hpp"
#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "grpc_wire.hpp"
#include "h2_server_session.hpp"
#include "python_peer.hpp"
#include "streamer_service.hpp"
#include "subprocess.hpp"
#include "trellis/client.hpp"
#include "trellis/detail/percent_encoding.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/testing/echo.grpc.pb.h"
#include "trellis/testing/streamer.grpc.pb.h"
#include "trellis/testing/streamer.trellis.h"

namespace trellis::transport {
namespace {

using namespace std::chrono_literals;
using testing::deadline_in;
using testing::Echo;
using testing::EchoRequest;
using testing::EchoResponse;
using testing::python;
using testing::python_env;
using testing::run_with_deadline;
using testing::Streamer;
using trellis::detail::percent_decode;
using trellis::detail::percent_encode;

// ------------------------------------------------------------------------ the wire rules

TEST(GrpcWireTest, ParsesEveryTimeoutUnit) {
  EXPECT_EQ(parse_grpc_timeout("2H"), std::chrono::hours(2));
  EXPECT_EQ(parse_grpc_timeout("3M"), std::chrono::minutes(3));
  EXPECT_EQ(parse_grpc_timeout("4S"), std::chrono::seconds(4));
  EXPECT_EQ(parse_grpc_timeout("500m"), std::chrono::milliseconds(500));
  EXPECT_EQ(parse_grpc_timeout("12345678u"), std::chrono::microseconds(12345678));
  EXPECT_EQ(parse_grpc_timeout("0n"), std::chrono::nanoseconds(0));
}

TEST(GrpcWireTest, RefusesMalformedTimeouts) {
  for (const char* bad : {"", "S", "1", "1x", "123456789S", "-1S", " 1S", "1 S", "1.5S", "1s"}) {
    EXPECT_FALSE(parse_grpc_timeout(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(GrpcWireTest, ATimeoutTooLongForNanosecondsIsClamped) {
  EXPECT_EQ(parse_grpc_timeout("99999999H"), std::chrono::nanoseconds::max());
}

TEST(GrpcWireTest, RecognisesGrpcContentTypes) {
  EXPECT_TRUE(is_grpc_content_type("application/grpc"));
  EXPECT_TRUE(is_grpc_content_type("application/grpc+proto"));
  EXPECT_TRUE(is_grpc_content_type("application/grpc;charset=utf-8"));
  EXPECT_FALSE(is_grpc_content_type("application/grpcx"));
  EXPECT_FALSE(is_grpc_content_type("application/json"));
  EXPECT_FALSE(is_grpc_content_type("text/plain"));
  EXPECT_FALSE(is_grpc_content_type(""));
}

TEST(GrpcWireTest, PercentEncodingRoundTripsAnyBytes) {
  std::string message = "50% done\n\xc3\xa9t\xc3\xa9 \x01";
  std::string encoded = percent_encode(message);
  EXPECT_EQ(encoded, "50%25 done%0A%C3%A9t%C3%A9 %01");
  EXPECT_EQ(percent_decode(encoded), message);
}

TEST(GrpcWireTest, PercentDecodingKeepsMalformedEscapes) {
  EXPECT_EQ(percent_decode("100%"), "100%");
  EXPECT_EQ(percent_decode("%zz%4"), "%zz%4");
  EXPECT_EQ(percent_decode("%41%4a"), "AJ");
}

TEST(GrpcWireTest, CompressionRoundTripsWithBothAlgorithms) {
  std::string message(10'000, 'a');
  for (Compression c : {Compression::kDeflate, Compression::kGzip}) {
    std::string packed = compress(c, message);
    EXPECT_LT(packed.size(), 200u) << compression_name(c);
    std::string unpacked;
    ASSERT_TRUE(decompress(c, packed, 1 << 20, &unpacked).ok()) << compression_name(c);
    EXPECT_EQ(unpacked, message);
  }
  // gzip and deflate are different formats: one does not decompress as the other.
  std::string unpacked;
  EXPECT_EQ(
      decompress(Compression::kDeflate, compress(Compression::kGzip, message), 1 << 20, &unpacked)
          .code(),
      StatusCode::kInternal);
}

TEST(GrpcWireTest, CorruptOrTruncatedCompressedMessagesAreInternal) {
  std::string packed = compress(Compression::kGzip, std::string(1000, 'z'));
  std::string out;
  EXPECT_EQ(
      decompress(Compression::kGzip, packed.substr(0, packed.size() / 2), 1 << 20, &out).code(),
      StatusCode::kInternal);
  EXPECT_EQ(decompress(Compression::kGzip, "not gzip at all", 1 << 20, &out).code(),
            StatusCode::kInternal);
}

TEST(GrpcWireTest, AZipBombStopsAtTheLimit) {
  // 100 MB of zeros compress to about 100 KB; the limit is 1 MB.
  std::string bomb = compress(Compression::kDeflate, std::string(100 << 20, '\0'));
  ASSERT_LT(bomb.size(), 200'000u);
  std::string out;
  Status status = decompress(Compression::kDeflate, bomb, 1 << 20, &out);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status;
  EXPECT_LE(out.size(), 1u << 20);
}

TEST(GrpcWireTest, ParsesTheAcceptedEncodingsAndSkipsUnknownOnes) {
  EXPECT_EQ(parse_grpc_accept_encoding("identity,deflate,gzip"),
            compression_bit(Compression::kNone) | compression_bit(Compression::kDeflate) |
                compression_bit(Compression::kGzip));
  EXPECT_EQ(parse_grpc_accept_encoding(" gzip , br"), compression_bit(Compression::kGzip));
  EXPECT_EQ(parse_grpc_accept_encoding(""), 0);
  EXPECT_EQ(parse_grpc_accept_encoding("zstd,,"), 0);
}

TEST(GrpcWireTest, ParsesTheThreeEncodings) {
  EXPECT_EQ(parse_grpc_encoding("identity"), Compression::kNone);
  EXPECT_EQ(parse_grpc_encoding("deflate"), Compression::kDeflate);
  EXPECT_EQ(parse_grpc_encoding("gzip"), Compression::kGzip);
  EXPECT_FALSE(parse_grpc_encoding("br").has_value());
  EXPECT_FALSE(parse_grpc_encoding("GZIP").has_value());
}

std::string framed(std::string_view body, bool compressed = false) {
  std::string out;
  append_message_prefix(out, compressed, static_cast<std::uint32_t>(body.size()));
  out.append(body);
  return out;
}

TEST(MessageReaderTest, ReassemblesMessagesSplitAcrossChunks) {
  MessageReader reader(100);
  std::string bytes = framed("hello") + framed("") + framed("world");
  for (char c : bytes) ASSERT_TRUE(reader.feed(std::string_view(&c, 1)).ok());
  std::vector<std::string> got;
  while (auto m = reader.next()) {
    EXPECT_FALSE(m->compressed);
    got.push_back(m->bytes);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"hello", "", "world"}));
  EXPECT_TRUE(reader.finish().ok());
}

TEST(MessageReaderTest, RefusesAnOversizedMessageFromItsPrefix) {
  MessageReader reader(10);
  std::string prefix;
  append_message_prefix(prefix, false, 11);
  Status fed = reader.feed(prefix);  // the body has not arrived: refused from the length alone
  EXPECT_EQ(fed.code(), StatusCode::kResourceExhausted) << fed;
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_FALSE(reader.feed("more").ok());
}

TEST(MessageReaderTest, RefusesAnInvalidFlag) {
  MessageReader reader(10);
  std::string bytes = framed("x");
  bytes[0] = 2;
  EXPECT_EQ(reader.feed(bytes).code(), StatusCode::kInternal);
}

TEST(MessageReaderTest, AStreamEndingInsideAMessageIsInternal) {
  MessageReader reader(100);
  ASSERT_TRUE(reader.feed(framed("complete") + framed("cut short").substr(0, 8)).ok());
  ASSERT_TRUE(reader.next().has_value());
  EXPECT_EQ(reader.finish().code(), StatusCode::kInternal);
}

// ------------------------------------------------------------------ a client, and a server

// What a client saw of one stream.
struct Response {
  std::multimap<std::string, std::string> headers;
  std::multimap<std::string, std::string> trailers;
  std::string data;
  bool closed = false;
  std::uint32_t reset_code = 0;  // RST_STREAM's error code, if the stream was reset
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::string trailer(const std::string& name) const {
    auto it = trailers.find(name);
    return it == trailers.end() ? "" : it->second;
  }
  // grpc-status, from the trailers or a trailers-only response.
  std::string grpc_status() const {
    std::string s = trailer("grpc-status");
    return s.empty() ? header("grpc-status") : s;
  }
  // The messages in `data`.
  std::vector<std::string> messages() const {
    MessageReader reader(1 << 20);
    EXPECT_TRUE(reader.feed(data).ok());
    std::vector<std::string> out;
    while (auto m = reader.next()) out.push_back(m->bytes);
    return out;
  }
};

// An nghttp2 client session, driven by hand.
class TestClient {
 public:
  TestClient() {
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &on_close);
    nghttp2_session_client_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~TestClient() { nghttp2_session_del(session_); }

  // Starts a request with the usual gRPC headers, `extra` added (or replacing one of them when
  // its name is the same), and `body` as its DATA; ends the stream if `end`.
  std::int32_t request(const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& extra = {},
                       std::string body = "", bool end = true) {
    std::vector<std::pair<std::string, std::string>> fields = {{":method", "POST"},
                                                               {":scheme", "http"},
                                                               {":path", path},
                                                               {":authority", "localhost"},
                                                               {"content-type", "application/grpc"},
                                                               {"te", "trailers"}};
    for (const auto& [name, value] : extra) {
      bool replaced = false;
      for (auto& field : fields) {
        if (field.first == name) {
          field.second = value;
          replaced = true;
        }
      }
      if (value.empty() && replaced) {
        const std::string& key = name;  // clang 14 cannot capture a structured binding
        std::erase_if(fields, [&key](const auto& f) { return f.first == key; });
      } else if (!replaced) {
        fields.emplace_back(name, value);
      }
    }
    std::vector<nghttp2_nv> nva;
    for (auto& [name, value] : fields) {
      nva.push_back({reinterpret_cast<std::uint8_t*>(name.data()),
                     reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                     NGHTTP2_NV_FLAG_NONE});
    }
    auto* source = new Body{std::move(body), end};
    nghttp2_data_provider provider;
    provider.source.ptr = source;
    provider.read_callback = &read_body;
    std::int32_t id =
        nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), &provider, source);
    bodies_[id] = std::unique_ptr<Body>(source);
    return id;
  }
  // Sends more DATA on a stream started with end = false; ends it if `end`.
  void send(std::int32_t id, std::string bytes, bool end) {
    Body& body = *bodies_.at(id);
    body.bytes += bytes;
    body.end = end;
    nghttp2_session_resume_data(session_, id);
  }
  void reset(std::int32_t id) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  }
  std::string output() {
    std::string out;
    for (;;) {
      const std::uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
    }
    return out;
  }
  void input(const std::string& bytes) {
    ASSERT_GE(nghttp2_session_mem_recv(
                  session_, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
              0);
  }

  std::map<std::int32_t, Response> responses;
  std::optional<std::uint32_t> goaway_code;
  std::int32_t goaway_last_stream = -1;

 private:
  struct Body {
    std::string bytes;
    bool end;
  };
  static TestClient& of(void* user) { return *static_cast<TestClient*>(user); }
  static ssize_t read_body(nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length,
                           std::uint32_t* flags, nghttp2_data_source* source, void*) {
    auto& body = *static_cast<Body*>(source->ptr);
    std::size_t n = std::min(length, body.bytes.size());
    std::memcpy(buf, body.bytes.data(), n);
    body.bytes.erase(0, n);
    if (body.bytes.empty()) {
      if (!body.end) return n > 0 ? static_cast<ssize_t>(n) : ssize_t{NGHTTP2_ERR_DEFERRED};
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
  }
  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                       std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                       std::uint8_t, void* user) {
    Response& r = of(user).responses[frame->hd.stream_id];
    auto& target = frame->headers.cat == NGHTTP2_HCAT_HEADERS ? r.trailers : r.headers;
    target.emplace(std::string(reinterpret_cast<const char*>(name), namelen),
                   std::string(reinterpret_cast<const char*>(value), valuelen));
    return 0;
  }
  static int on_data(nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t* data,
                     std::size_t len, void* user) {
    of(user).responses[id].data.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }
  static int on_frame(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      of(user).goaway_code = frame->goaway.error_code;
      of(user).goaway_last_stream = frame->goaway.last_stream_id;
    }
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
      of(user).responses[frame->hd.stream_id].reset_code = frame->rst_stream.error_code;
    }
    return 0;
  }
  static int on_close(nghttp2_session*, std::int32_t id, std::uint32_t error_code, void* user) {
    Response& r = of(user).responses[id];
    r.closed = true;
    if (error_code != 0 && r.reset_code == 0) r.reset_code = error_code;
    return 0;
  }

  nghttp2_session* session_ = nullptr;
  std::map<std::int32_t, std::unique_ptr<Body>> bodies_;
};

// A listener that records the calls and answers as a test tells it to.
class Recorder final : public ServerSessionListener {
 public:
  struct Call {
    RequestHead head;
    std::vector<std::string> messages;
    bool half_closed = false;
    std::optional<Status> aborted;
  };

  void on_call(StreamId stream, RequestHead head) override {
    calls[stream].head = std::move(head);
    if (on_call_hook) on_call_hook(stream);
  }
  void on_message(StreamId stream, std::string message) override {
    calls[stream].messages.push_back(message);
    if (release) session->release(stream);
    if (echo) session->send_message(stream, message);
  }
  void on_half_close(StreamId stream) override {
    calls[stream].half_closed = true;
    if (echo) session->finish(stream, Status(), {{"trailer-key", "trailer value"}});
  }
  void on_abort(StreamId stream, const Status& why) override { calls[stream].aborted = why; }

  ServerSession* session = nullptr;
  bool echo = true;
  bool release = true;  // release every message at once
  std::function<void(StreamId)> on_call_hook;
  std::map<StreamId, Call> calls;
};

class ServerSessionTest : public ::testing::Test {
 protected:
  void SetUp() override { make_session({}); }
  void make_session(ServerSessionOptions options) {
    session_ = std::make_unique<ServerSession>(recorder_, options);
    recorder_.session = session_.get();
  }
  // Moves bytes both ways until neither side has anything to send. Returns the status of the
  // server's last receive.
  Status exchange() {
    Status last;
    for (int round = 0; round < 100; ++round) {
      std::string to_server = client_.output();
      if (!to_server.empty()) last = session_->receive(to_server, now_);
      std::string to_client;
      session_->take_output(to_client);
      if (!to_client.empty()) client_.input(to_client);
      if (to_server.empty() && to_client.empty()) break;
    }
    return last;
  }

  Recorder recorder_;
  std::unique_ptr<ServerSession> session_;
  TestClient client_;
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::now();
};

TEST_F(ServerSessionTest, AnswersAUnaryCallWithItsMetadataAndTrailers) {
  auto id = client_.request(
      "/pkg.Svc/Echo", {{"grpc-timeout", "250m"}, {"x-text", "value"}, {"x-blob-bin", "AAEC/w=="}},
      framed("ping"));
  ASSERT_TRUE(exchange().ok());

  const Recorder::Call& call = recorder_.calls.at(id);
  EXPECT_EQ(call.head.method, "/pkg.Svc/Echo");
  EXPECT_EQ(call.head.authority, "localhost");
  EXPECT_EQ(call.head.timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(call.head.metadata.get("x-text"), "value");
  EXPECT_EQ(call.head.metadata.get("x-blob-bin"), std::string("\x00\x01\x02\xff", 4));
  EXPECT_FALSE(call.head.metadata.contains("content-type"));
  EXPECT_FALSE(call.head.metadata.contains("grpc-timeout"));
  EXPECT_EQ(call.messages, std::vector<std::string>{"ping"});
  EXPECT_TRUE(call.half_closed);

  const Response& r = client_.responses.at(id);
  EXPECT_EQ(r.header(":status"), "200");
  EXPECT_EQ(r.header("content-type"), "application/grpc");
  EXPECT_EQ(r.messages(), std::vector<std::string>{"ping"});
  EXPECT_EQ(r.trailer("grpc-status"), "0");
  EXPECT_EQ(r.trailer("trailer-key"), "trailer value");
  EXPECT_TRUE(r.closed);
}

TEST_F(ServerSessionTest, AnErrorStatusTravelsEncodedWithItsDetails) {
  recorder_.echo = false;
  recorder_.on_call_hook = [this](StreamId stream) {
    session_->finish(stream, Status(StatusCode::kNotFound, "no such thing: 100%\n", "\x08\x05"),
                     {{"why-bin", std::string("\x00\xff", 2)}});
  };
  auto id = client_.request("/pkg.Svc/Get", {}, framed("x"));
  ASSERT_TRUE(exchange().ok());
  const Response& r = client_.responses.at(id);
  // Finished before any message: a trailers-only response.
  EXPECT_EQ(r.header("grpc-status"), "5");
  EXPECT_EQ(r.header("grpc-message"), "no such thing: 100%25%0A");
  EXPECT_EQ(r.header("grpc-status-details-bin"), "CAU=");
  EXPECT_EQ(r.header("why-bin"), "AP8=");
  EXPECT_TRUE(r.data.empty());
}

TEST_F(ServerSessionTest, ResponsesToOneReadLeaveInOneWrite) {
  // Bidi: 50 requests arrive in one read; their echoes leave together, in one output.
  std::string body;
  for (int i = 0; i < 50; ++i) body += framed("message " + std::to_string(i));
  auto id = client_.request("/pkg.Svc/Chat", {}, body, /*end=*/false);
  std::string to_server = client_.output();
  ASSERT_TRUE(session_->receive(to_server, now_).ok());
  std::string to_client;
  ASSERT_TRUE(session_->take_output(to_client));
  client_.input(to_client);
  EXPECT_EQ(client_.responses[id].messages().size(), 50u);
  EXPECT_FALSE(session_->take_output(to_client));  // nothing was left for a second write

  client_.send(id, "", /*end=*/true);
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses[id].trailer("grpc-status"), "0");
}

TEST_F(ServerSessionTest, QueuedBytesShowWhatFlowControlHolds) {
  ServerSessionOptions options;
  make_session(options);
  recorder_.echo = false;
  StreamId stream = 0;
  recorder_.on_call_hook = [&](StreamId s) { stream = s; };
  client_.request("/pkg.Svc/Download", {}, framed("go"));
  ASSERT_TRUE(exchange().ok());
  // The client's window is HTTP/2's default 64 KB: 200 KB stays queued on the server.
  session_->send_message(stream, std::string(200'000, 'z'));
  std::string out;
  session_->take_output(out);
  EXPECT_GT(session_->queued_bytes(stream), 100'000u);
}

// ------------------------------------------------------------------ strict request checks

TEST_F(ServerSessionTest, ANonGrpcContentTypeIsAnswered415) {
  auto id = client_.request("/pkg.Svc/Echo", {{"content-type", "application/json"}}, "{}");
  ASSERT_TRUE(exchange().ok());
  const Response& r = client_.responses.at(id);
  EXPECT_EQ(r.header(":status"), "415");
  EXPECT_EQ(r.header("grpc-status"), "13");
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, AMissingContentTypeIsAnswered415) {
  auto id = client_.request("/pkg.Svc/Echo", {{"content-type", ""}}, framed("x"));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).header(":status"), "415");
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, AMethodOtherThanPostIsAnswered405) {
  auto id = client_.request("/pkg.Svc/Echo", {{":method", "PUT"}}, framed("x"));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).header(":status"), "405");
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, AMalformedTimeoutIsInternal) {
  auto id = client_.request("/pkg.Svc/Echo", {{"grpc-timeout", "soon"}}, framed("x"));
  ASSERT_TRUE(exchange().ok());
  const Response& r = client_.responses.at(id);
  EXPECT_EQ(r.header(":status"), "200");
  EXPECT_EQ(r.grpc_status(), "13");
  EXPECT_NE(r.header("grpc-message").find("grpc-timeout"), std::string::npos);
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, AnUnknownEncodingIsUnimplementedAndListsWhatIsAccepted) {
  auto id = client_.request("/pkg.Svc/Echo", {{"grpc-encoding", "br"}}, framed("x", true));
  ASSERT_TRUE(exchange().ok());
  const Response& r = client_.responses.at(id);
  EXPECT_EQ(r.grpc_status(), "12");
  EXPECT_EQ(r.header("grpc-accept-encoding"), "identity,deflate,gzip");
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, CompressedRequestsAndResponsesInBothDirections) {
  recorder_.echo = false;
  recorder_.on_call_hook = [this](StreamId stream) {
    session_->set_response_compression(stream, Compression::kGzip);
  };
  std::string big(5000, 'q');
  auto id = client_.request("/pkg.Svc/Echo", {{"grpc-encoding", "deflate"}},
                            framed(compress(Compression::kDeflate, big), /*compressed=*/true) +
                                framed("small, sent plain"));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(recorder_.calls.at(id).messages, (std::vector<std::string>{big, "small, sent plain"}));
  session_->send_message(id, big);
  session_->send_message(id, "tiny");  // gzip would make it larger: sent plain
  session_->finish(id, Status());
  ASSERT_TRUE(exchange().ok());
  const Response& r = client_.responses.at(id);
  EXPECT_EQ(r.header("grpc-encoding"), "gzip");
  MessageReader reader(1 << 20);
  ASSERT_TRUE(reader.feed(r.data).ok());
  auto first = reader.next();
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->compressed);
  std::string unpacked;
  ASSERT_TRUE(decompress(Compression::kGzip, first->bytes, 1 << 20, &unpacked).ok());
  EXPECT_EQ(unpacked, big);
  auto second = reader.next();
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->compressed);
  EXPECT_EQ(second->bytes, "tiny");
}

TEST_F(ServerSessionTest, AMessageThatInflatesPastTheLimitIsResourceExhausted) {
  ServerSessionOptions options;
  options.max_receive_message_size = 4096;
  make_session(options);
  auto id = client_.request(
      "/pkg.Svc/Echo", {{"grpc-encoding", "gzip"}},
      framed(compress(Compression::kGzip, std::string(1 << 20, 'x')), /*compressed=*/true));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).grpc_status(), "8");
  EXPECT_EQ(recorder_.calls.at(id).aborted->code(), StatusCode::kResourceExhausted);
}

TEST_F(ServerSessionTest, ACompressedMessageWithoutEncodingIsInternal) {
  auto id = client_.request("/pkg.Svc/Echo", {}, framed("x", /*compressed=*/true));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).grpc_status(), "13");
  ASSERT_TRUE(recorder_.calls.at(id).aborted.has_value());
  EXPECT_EQ(recorder_.calls.at(id).aborted->code(), StatusCode::kInternal);
  EXPECT_TRUE(recorder_.calls.at(id).messages.empty());
}

TEST_F(ServerSessionTest, AnOversizedMessageIsResourceExhausted) {
  ServerSessionOptions options;
  options.max_receive_message_size = 1000;
  make_session(options);
  auto id = client_.request("/pkg.Svc/Echo", {}, framed(std::string(1001, 'x')));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).grpc_status(), "8");
  EXPECT_EQ(recorder_.calls.at(id).aborted->code(), StatusCode::kResourceExhausted);
}

TEST_F(ServerSessionTest, OversizedHeadersAreResourceExhausted) {
  ServerSessionOptions options;
  options.max_header_list_size = 1024;
  make_session(options);
  auto id = client_.request("/pkg.Svc/Echo", {{"x-big", std::string(2000, 'h')}}, framed("x"));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).grpc_status(), "8");
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, InvalidBase64InABinaryHeaderIsInternal) {
  auto id = client_.request("/pkg.Svc/Echo", {{"x-blob-bin", "not base64!"}}, framed("x"));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).grpc_status(), "13");
  EXPECT_TRUE(recorder_.calls.empty());
}

TEST_F(ServerSessionTest, AStreamEndingInsideAMessageIsInternal) {
  auto id = client_.request("/pkg.Svc/Echo", {}, framed("truncated").substr(0, 7));
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(id).grpc_status(), "13");
  EXPECT_EQ(recorder_.calls.at(id).aborted->code(), StatusCode::kInternal);
  EXPECT_FALSE(recorder_.calls.at(id).half_closed);
}

// ------------------------------------------------------------ cancellation and shutdown

TEST_F(ServerSessionTest, AClientResetAbortsTheCall) {
  recorder_.echo = false;
  auto id = client_.request("/pkg.Svc/Chat", {}, framed("hello"), /*end=*/false);
  ASSERT_TRUE(exchange().ok());
  ASSERT_FALSE(recorder_.calls.at(id).aborted.has_value());
  client_.reset(id);
  ASSERT_TRUE(exchange().ok());
  ASSERT_TRUE(recorder_.calls.at(id).aborted.has_value());
  EXPECT_EQ(recorder_.calls.at(id).aborted->code(), StatusCode::kCancelled);
  // The call is gone: what the server still does with it is ignored.
  session_->send_message(id, "late");
  session_->finish(id, Status());
  std::string out;
  EXPECT_FALSE(session_->take_output(out));
}

TEST_F(ServerSessionTest, ClosingAbortsEveryOpenCall) {
  recorder_.echo = false;
  auto a = client_.request("/pkg.Svc/Chat", {}, "", /*end=*/false);
  auto b = client_.request("/pkg.Svc/Chat", {}, "", /*end=*/false);
  ASSERT_TRUE(exchange().ok());
  session_->close(Status::unavailable("connection lost"));
  EXPECT_EQ(recorder_.calls.at(a).aborted->code(), StatusCode::kUnavailable);
  EXPECT_EQ(recorder_.calls.at(b).aborted->code(), StatusCode::kUnavailable);
}

TEST_F(ServerSessionTest, ShutdownRefusesNewStreamsAndLetsOpenCallsFinish) {
  recorder_.echo = false;
  auto open = client_.request("/pkg.Svc/Chat", {}, "", /*end=*/false);
  ASSERT_TRUE(exchange().ok());
  session_->shutdown();
  ASSERT_TRUE(exchange().ok());
  ASSERT_TRUE(client_.goaway_code.has_value());
  EXPECT_EQ(*client_.goaway_code, static_cast<std::uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_EQ(client_.goaway_last_stream, open);

  session_->finish(open, Status());
  ASSERT_TRUE(exchange().ok());
  EXPECT_EQ(client_.responses.at(open).grpc_status(), "0");
}

// ------------------------------------------------------------------------ hostile peers

TEST_F(ServerSessionTest, HttpOneIsRefused) {
  Status status = session_->receive("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", now_);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("preface"), std::string::npos) << status;
  EXPECT_FALSE(session_->receive("more", now_).ok());
}

TEST_F(ServerSessionTest, ARapidResetFloodEndsTheConnectionWithEnhanceYourCalm) {
  ServerSessionOptions options;
  options.reset_burst = 100;
  options.resets_per_second = 10;
  make_session(options);
  recorder_.echo = false;
  // 10,000 HEADERS + RST_STREAM pairs, as fast as the client can write them (time stands still).
  Status status;
  int sent = 0;
  while (sent < 10'000 && status.ok()) {
    std::string burst;
    for (int i = 0; i < 100; ++i, ++sent) {
      // The HEADERS must leave before the reset: nghttp2 drops a stream reset before it is sent.
      auto id = client_.request("/pkg.Svc/Chat", {}, "", /*end=*/false);
      burst += client_.output();
      client_.reset(id);
      burst += client_.output();
    }
    status = session_->receive(burst, now_);
    std::string out;
    session_->take_output(out);
    client_.input(out);
  }
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status;
  ASSERT_TRUE(client_.goaway_code.has_value());
  EXPECT_EQ(*client_.goaway_code, static_cast<std::uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  // The work done is bounded by the burst, not by what the client sent.
  EXPECT_LE(recorder_.calls.size(), 101u);
  EXPECT_LT(sent, 10'000);
  EXPECT_FALSE(session_->alive());
}

TEST_F(ServerSessionTest, ResetsWithinTheRateAreServed) {
  ServerSessionOptions options;
  options.reset_burst = 10;
  options.resets_per_second = 10;
  make_session(options);
  recorder_.echo = false;
  // 100 resets, one every 200 ms of (simulated) time: twice under the rate.
  for (int i = 0; i < 100; ++i) {
    auto id = client_.request("/pkg.Svc/Chat", {}, "", /*end=*/false);
    ASSERT_TRUE(exchange().ok());
    client_.reset(id);
    now_ += 200ms;
    ASSERT_TRUE(exchange().ok()) << i;
  }
  EXPECT_FALSE(client_.goaway_code.has_value());
  EXPECT_TRUE(session_->alive());
  EXPECT_EQ(recorder_.calls.size(), 100u);
  for (const auto& [id, call] : recorder_.calls) EXPECT_TRUE(call.aborted.has_value()) << id;
}

// ------------------------------------------------------------ raw frames from a hostile peer

// Frames written by hand, for what no well-behaved client library sends.
std::string raw_frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                      std::string_view payload) {
  std::string out;
  auto size = static_cast<std::uint32_t>(payload.size());
  out += {static_cast<char>(size >> 16),   static_cast<char>(size >> 8),
          static_cast<char>(size),         static_cast<char>(type),
          static_cast<char>(flags),        static_cast<char>(stream >> 24),
          static_cast<char>(stream >> 16), static_cast<char>(stream >> 8),
          static_cast<char>(stream)};
  out += payload;
  return out;
}

// An HPACK integer with an N-bit prefix, its first byte or-ed with `first`.
std::string hpack_integer(std::uint8_t first, int prefix_bits, std::size_t value) {
  std::string out;
  std::size_t max = (1u << prefix_bits) - 1;
  if (value < max) return std::string(1, static_cast<char>(first | value));
  out += static_cast<char>(first | max);
  value -= max;
  while (value >= 128) {
    out += static_cast<char>(0x80 | (value & 0x7f));
    value >>= 7;
  }
  out += static_cast<char>(value);
  return out;
}

// HPACK literals, new name: without indexing (0x00) or with incremental indexing (0x40).
std::string hpack_literal(std::string_view name, std::string_view value, bool index = false) {
  std::string out(1, static_cast<char>(index ? 0x40 : 0x00));
  out += hpack_integer(0, 7, name.size());
  out += name;
  out += hpack_integer(0, 7, value.size());
  out += value;
  return out;
}

std::string grpc_request_headers(std::string_view path = "/pkg.Svc/Echo") {
  return hpack_literal(":method", "POST") + hpack_literal(":scheme", "http") +
         hpack_literal(":path", path) + hpack_literal(":authority", "localhost") +
         hpack_literal("content-type", "application/grpc") + hpack_literal("te", "trailers");
}

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr std::uint8_t kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6,
                       kGoaway = 7, kWindowUpdate = 8;
constexpr std::uint8_t kEndStream = 1, kEndHeaders = 4;

// What the server wrote, frame by frame, header blocks decoded.
struct ServerFrame {
  std::uint8_t type;
  std::uint8_t flags;
  std::uint32_t stream;
  std::string payload;
  std::map<std::string, std::string> headers;
  // The error code of a RST_STREAM or GOAWAY (after its last-stream id); the increment of a
  // WINDOW_UPDATE.
  std::uint32_t word() const {
    std::size_t at = type == kGoaway ? 4 : 0;
    auto byte = [&](std::size_t i) {
      return static_cast<std::uint32_t>(static_cast<unsigned char>(payload[at + i]));
    };
    return byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
  }
};

class FrameReader {
 public:
  FrameReader() { nghttp2_hd_inflate_new(&inflater_); }
  ~FrameReader() { nghttp2_hd_inflate_del(inflater_); }
  std::vector<ServerFrame> read(std::string_view bytes) {
    std::vector<ServerFrame> frames;
    while (bytes.size() >= 9) {
      auto u = [&](std::size_t i) {
        return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i]));
      };
      std::uint32_t length = u(0) << 16 | u(1) << 8 | u(2);
      ServerFrame frame{static_cast<std::uint8_t>(bytes[3]),
                        static_cast<std::uint8_t>(bytes[4]),
                        (u(5) & 0x7f) << 24 | u(6) << 16 | u(7) << 8 | u(8),
                        std::string(bytes.substr(9, length)),
                        {}};
      if (frame.type == kHeaders) decode(frame);
      frames.push_back(std::move(frame));
      bytes.remove_prefix(9 + length);
    }
    return frames;
  }

 private:
  void decode(ServerFrame& frame) {
    auto* in = reinterpret_cast<const std::uint8_t*>(frame.payload.data());
    std::size_t left = frame.payload.size();
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      ssize_t used = nghttp2_hd_inflate_hd2(inflater_, &nv, &flags, in, left, 1);
      ASSERT_GE(used, 0);
      in += used;
      left -= static_cast<std::size_t>(used);
      if (flags & NGHTTP2_HD_INFLATE_EMIT) {
        frame.headers[std::string(reinterpret_cast<char*>(nv.name), nv.namelen)] =
            std::string(reinterpret_cast<char*>(nv.value), nv.valuelen);
      }
      if (flags & NGHTTP2_HD_INFLATE_FINAL) {
        nghttp2_hd_inflate_end_headers(inflater_);
        return;
      }
      if (used == 0 && left == 0) return;
    }
  }
  nghttp2_hd_inflater* inflater_ = nullptr;
};

class HostilePeerTest : public ::testing::Test {
 protected:
  HostilePeerTest() { recorder_.session = &session_; }

  // Sends `bytes` after the preface and an empty SETTINGS; returns the server's frames.
  std::vector<ServerFrame> send(std::string_view bytes, std::chrono::steady_clock::time_point now =
                                                            std::chrono::steady_clock::now()) {
    std::string all;
    if (!started_) {
      all = std::string(kPreface) + raw_frame(kSettings, 0, 0, "");
      started_ = true;
    }
    all += bytes;
    last_status_ = session_.receive(all, now);
    std::string out;
    session_.take_output(out);
    return reader_.read(out);
  }
  static const ServerFrame* find(const std::vector<ServerFrame>& frames, std::uint8_t type,
                                 std::uint32_t stream) {
    for (const auto& f : frames) {
      if (f.type == type && f.stream == stream) return &f;
    }
    return nullptr;
  }

  Recorder recorder_;
  ServerSession session_{recorder_, [] {
                           ServerSessionOptions options;
                           options.max_header_list_size = 8192;
                           options.initial_window_size = 65535;  // HTTP/2's default
                           return options;
                         }()};
  FrameReader reader_;
  bool started_ = false;
  Status last_status_;
};

TEST_F(HostilePeerTest, AnHpackBombIsRefusedAndTheConnectionServesOn) {
  // One 4,000-byte header put in the decoder's table, then referenced 3,000 times: 12 MB of
  // headers from a 7 KB block.
  std::string block =
      grpc_request_headers() + hpack_literal("x-bomb", std::string(4000, 'b'), true);
  for (int i = 0; i < 3000; ++i) block += static_cast<char>(0x80 | 62);  // indexed: the new entry
  auto frames = send(raw_frame(kHeaders, kEndHeaders | kEndStream, 1, block));
  ASSERT_TRUE(last_status_.ok()) << last_status_;
  const ServerFrame* answer = find(frames, kHeaders, 1);
  ASSERT_NE(answer, nullptr);
  EXPECT_EQ(answer->headers.at("grpc-status"), "8");
  EXPECT_TRUE(recorder_.calls.empty());

  // The connection goes on: the next request is served.
  std::string body;
  append_message_prefix(body, false, 2);
  body += "hi";
  frames = send(raw_frame(kHeaders, kEndHeaders, 3, grpc_request_headers()) +
                raw_frame(kData, kEndStream, 3, body));
  ASSERT_TRUE(last_status_.ok()) << last_status_;
  EXPECT_EQ(recorder_.calls.at(3).messages, std::vector<std::string>{"hi"});
}

TEST_F(HostilePeerTest, MessagesNobodyReadsCloseTheWindowAndSendingPastItIsAnError) {
  recorder_.echo = false;
  recorder_.release = false;  // the handler reads nothing
  // 16,000-byte DATA frames, each one whole message, never acknowledged by a release: once a
  // window's worth (65,535 bytes, as HTTP/2's default) is held, the window stops reopening,
  // and the client, which ignores it, overruns it.
  std::string message;
  append_message_prefix(message, false, 15995);
  message += std::string(15995, 'd');
  std::string data;
  for (int i = 0; i < 12; ++i) data += raw_frame(kData, 0, 1, message);
  auto frames = send(raw_frame(kHeaders, kEndHeaders, 1, grpc_request_headers()) + data);
  const ServerFrame* reset = find(frames, kRstStream, 1);
  const ServerFrame* goaway = find(frames, kGoaway, 0);
  ASSERT_TRUE(reset != nullptr || goaway != nullptr) << frames.size() << " frames";
  EXPECT_EQ((reset != nullptr ? reset : goaway)->word(),
            static_cast<std::uint32_t>(NGHTTP2_FLOW_CONTROL_ERROR));
  // Fewer messages than were sent reached the listener: the rest were refused, not buffered.
  EXPECT_LT(recorder_.calls.at(1).messages.size(), 12u);
}

TEST_F(HostilePeerTest, ReleasedMessagesKeepTheWindowOpen) {
  recorder_.echo = false;
  std::string message;
  append_message_prefix(message, false, 15995);
  message += std::string(15995, 'd');
  auto frames = send(raw_frame(kHeaders, kEndHeaders, 1, grpc_request_headers()));
  std::uint64_t granted = 65535;  // the client's view of the stream's window
  int sent = 0;
  // The client sends only what the window allows, reading the WINDOW_UPDATEs the server sends.
  for (int round = 0; round < 100 && sent < 40; ++round) {
    std::string data;
    while (granted >= 16000 && sent < 40) {
      data += raw_frame(kData, 0, 1, message);
      granted -= 16000;
      ++sent;
    }
    frames = send(data);
    ASSERT_TRUE(last_status_.ok()) << last_status_;
    for (const auto& f : frames) {
      ASSERT_NE(f.type, kRstStream);
      ASSERT_NE(f.type, kGoaway);
      if (f.type == kWindowUpdate && f.stream == 1) granted += f.word();
    }
  }
  EXPECT_EQ(sent, 40);
  EXPECT_EQ(recorder_.calls.at(1).messages.size(), 40u);
}

TEST_F(HostilePeerTest, AnOversizedFrameEndsTheConnection) {
  auto frames = send(raw_frame(kHeaders, kEndHeaders, 1, grpc_request_headers()) +
                     raw_frame(kData, 0, 1, std::string(20000, 'x')));  // max frame: 16,384
  const ServerFrame* goaway = find(frames, kGoaway, 0);
  ASSERT_NE(goaway, nullptr);
  EXPECT_EQ(goaway->word(), static_cast<std::uint32_t>(NGHTTP2_FRAME_SIZE_ERROR));
  EXPECT_FALSE(session_.alive());
}

TEST_F(HostilePeerTest, AFrameCutShortByTheConnectionAbortsItsCall) {
  recorder_.echo = false;
  std::string message;
  append_message_prefix(message, false, 995);
  message += std::string(995, 'x');
  std::string data = raw_frame(kData, 0, 1, message);
  send(raw_frame(kHeaders, kEndHeaders, 1, grpc_request_headers()) + data.substr(0, 100));
  ASSERT_TRUE(last_status_.ok()) << last_status_;
  ASSERT_FALSE(recorder_.calls.at(1).aborted.has_value());
  session_.close(Status::unavailable("the peer went away"));
  ASSERT_TRUE(recorder_.calls.at(1).aborted.has_value());
  EXPECT_EQ(recorder_.calls.at(1).aborted->code(), StatusCode::kUnavailable);
}

TEST_F(HostilePeerTest, PingsWithoutCallsEndTheConnectionAfterTwoStrikes) {
  std::string ping = raw_frame(kPing, 0, 0, "12345678");
  auto frames = send(ping + ping);
  ASSERT_TRUE(last_status_.ok()) << last_status_;
  int acks = 0;
  for (const auto& f : frames) acks += f.type == kPing && (f.flags & 1);
  EXPECT_EQ(acks, 2);
  frames = send(ping);
  EXPECT_EQ(last_status_.code(), StatusCode::kResourceExhausted) << last_status_;
  const ServerFrame* goaway = find(frames, kGoaway, 0);
  ASSERT_NE(goaway, nullptr);
  EXPECT_EQ(goaway->word(), static_cast<std::uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_EQ(goaway->payload.substr(8), "too_many_pings");
}

TEST_F(HostilePeerTest, PingsWithinThePolicyAreAnswered) {
  recorder_.echo = false;
  auto now = std::chrono::steady_clock::now();
  send(raw_frame(kHeaders, kEndHeaders, 1, grpc_request_headers()), now);  // a call is open
  for (int i = 0; i < 10; ++i) {
    now += std::chrono::minutes(5);  // the default minimum interval
    auto frames = send(raw_frame(kPing, 0, 0, "abcdefgh"), now);
    ASSERT_TRUE(last_status_.ok()) << i << ": " << last_status_;
    EXPECT_EQ(find(frames, kGoaway, 0), nullptr);
  }
}

TEST_F(HostilePeerTest, GarbageInsteadOfThePrefaceIsRefused) {
  Status status = session_.receive(std::string(64, '\xff'));
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
}

// ----------------------------------------------------- over sockets, against stock clients

// trellis.testing.Echo/Echo, IdempotentEcho and trellis.testing.Streamer/Chat, written on the
// session's callbacks as the Trellis server will drive them, for one connection.
class EchoOverSession final : public ServerSessionListener {
 public:
  explicit EchoOverSession(boost::asio::io_context& io) : io_(io) {}
  void attach(std::shared_ptr<AsioServerConnection> connection,
              boost::asio::ip::tcp::endpoint peer) {
    connection_ = connection;
    peer_ = peer;
  }

  void on_call(StreamId stream, RequestHead head) override {
    ++calls_started;
    Call& call = calls_[stream];
    call.head = std::move(head);
    if (call.head.metadata.get("x-compress-response") == "gzip") {
      session().set_response_compression(stream, Compression::kGzip);
    }
    call.seen = std::chrono::steady_clock::now();
    const std::string& m = call.head.method;
    if (m != "/trellis.testing.Echo/Echo" && m != "/trellis.testing.Echo/IdempotentEcho" &&
        m != "/trellis.testing.Streamer/Chat") {
      session().finish(stream, Status::unimplemented("unknown method " + m));
      calls_.erase(stream);
    }
  }
  void on_message(StreamId stream, std::string message) override {
    Call& call = calls_.at(stream);
    session().release(stream);
    EchoRequest request;
    if (!request.ParseFromString(message)) {
      session().finish(stream, Status::internal("unparsable request"));
      calls_.erase(stream);
      return;
    }
    if (call.head.method == "/trellis.testing.Streamer/Chat") {
      EchoResponse response;
      response.set_message(request.message());
      session().send_message(stream, response.SerializeAsString());
      ++chat_messages;
    } else {
      call.request = std::move(request);
    }
  }
  void on_half_close(StreamId stream) override {
    Call& call = calls_.at(stream);
    if (call.head.method == "/trellis.testing.Streamer/Chat") {
      session().finish(stream, Status());
      calls_.erase(stream);
      return;
    }
    if (call.request.delay_ms() > 0) {
      call.timer = std::make_unique<boost::asio::steady_timer>(
          io_, std::chrono::milliseconds(call.request.delay_ms()));
      call.timer->async_wait([this, stream](const boost::system::error_code& error) {
        if (error) return;  // aborted
        answer(stream);
        connection_.lock()->flush();
      });
      return;
    }
    answer(stream);
  }
  void on_abort(StreamId stream, const Status&) override {
    ++aborted;
    calls_.erase(stream);  // its timer, if any, is cancelled with it
  }

  int calls_started = 0;
  int chat_messages = 0;
  int aborted = 0;

 private:
  struct Call {
    RequestHead head;
    EchoRequest request;
    std::chrono::steady_clock::time_point seen;
    std::unique_ptr<boost::asio::steady_timer> timer;
  };
  ServerSession& session() { return connection_.lock()->session(); }

  void answer(StreamId stream) {
    Call& call = calls_.at(stream);
    const EchoRequest& request = call.request;
    Metadata echoed;
    if (request.echo_metadata()) {
      for (const auto& [key, value] : call.head.metadata) {
        if (key.rfind("echo-", 0) == 0) echoed.add(key, value);
      }
      session().send_initial_metadata(stream, echoed);
    }
    if (request.throw_exception()) {
      session().finish(stream, Status::internal("internal error"));
    } else if (request.status_code() != 0) {
      session().finish(stream,
                       Status(static_cast<StatusCode>(request.status_code()),
                              request.status_message(), request.status_details()),
                       echoed);
    } else {
      EchoResponse response;
      response.set_message(request.message());
      response.set_remaining_deadline_ms(
          call.head.timeout
              ? std::chrono::duration_cast<std::chrono::milliseconds>(
                    *call.head.timeout - (std::chrono::steady_clock::now() - call.seen))
                    .count()
              : -1);
      response.set_peer("ipv4:" + peer_.address().to_string() + ":" + std::to_string(peer_.port()));
      session().send_message(stream, response.SerializeAsString());
      session().finish(stream, Status(), echoed);
    }
    calls_.erase(stream);
  }

  boost::asio::io_context& io_;
  std::weak_ptr<AsioServerConnection> connection_;
  boost::asio::ip::tcp::endpoint peer_;
  std::map<StreamId, Call> calls_;
};

// A loopback server on one thread of its own: an acceptor, and per connection an
// EchoOverSession driven by an AsioServerConnection.
class NativeEchoServer {
 public:
  explicit NativeEchoServer(ConnectionOptions options = {})
      : options_(options), acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~NativeEchoServer() {
    io_.stop();
    thread_.join();
  }
  int port() const { return acceptor_.local_endpoint().port(); }
  // Sums over every connection, read on the server's thread.
  // Counters over every connection, read on the server's thread.
  int chat_messages() { return sum(&EchoOverSession::chat_messages); }
  int aborted() { return sum(&EchoOverSession::aborted); }
  int calls_started() { return sum(&EchoOverSession::calls_started); }
  int pings_sent() {
    return on_server([this] {
      int n = 0;
      for (auto& c : connections_) n += c->session().pings_sent();
      return n;
    });
  }

 private:
  int sum(int EchoOverSession::*counter) {
    return on_server([this, counter] {
      int n = 0;
      for (auto& h : handlers_) n += *h.*counter;
      return n;
    });
  }
  template <typename F>
  int on_server(F f) {
    std::promise<int> result;
    boost::asio::post(io_, [&] { result.set_value(f()); });
    return result.get_future().get();
  }
  void accept() {
    acceptor_.async_accept(
        [this](const boost::system::error_code& error, boost::asio::ip::tcp::socket socket) {
          if (error) return;
          auto& handler = handlers_.emplace_back(std::make_unique<EchoOverSession>(io_));
          boost::system::error_code ignored;
          auto peer = socket.remote_endpoint(ignored);
          auto connection =
              std::make_shared<AsioServerConnection>(std::move(socket), *handler, options_);
          handler->attach(connection, peer);
          connections_.push_back(connection);
          connection->start();
          accept();
        });
  }

  ConnectionOptions options_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  // Kept until the io_context is gone: a connection's callbacks use its handler.
  std::vector<std::unique_ptr<EchoOverSession>> handlers_;
  std::vector<std::shared_ptr<AsioServerConnection>> connections_;
  std::thread thread_;
};

constexpr auto kPeerBound = std::chrono::seconds(120);

// A blocking TCP connection to 127.0.0.1:`port`, or -1.
int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

struct Received {
  std::string bytes;
  bool closed = false;  // the server closed the connection (end of file, or a reset)
};

// Reads what the server sends until it closes the connection or `deadline` passes.
Received read_until_closed(int fd, std::chrono::steady_clock::time_point deadline) {
  Received received;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      return received;
    }
    char buffer[16384];
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      received.closed = true;
      return received;
    }
    received.bytes.append(buffer, static_cast<std::size_t>(n));
  }
}

TEST(NativeSessionInteropTest, PythonGrpcioBatteryPasses) {
  NativeEchoServer server;
  // The battery's deadline check must see its deadline pass inside the handler (which waits a
  // minute), not before the call reaches it: a second, not the default 50 ms, however loaded
  // the machine.
  auto run = run_with_deadline(
      python("echo_client.py",
             {"--target", "127.0.0.1:" + std::to_string(server.port()), "--deadline-ms", "1000"}),
      python_env(), deadline_in(kPeerBound));
  EXPECT_TRUE(run.status.success())
      << "echo_client.py " << run.status.describe() << "; its output:\n"
      << run.output;
  EXPECT_NE(run.output.find(" passed, 0 failed"), std::string::npos) << run.output;
}

std::unique_ptr<grpc::ClientContext> bounded_context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + kPeerBound);
  return ctx;
}

TEST(NativeSessionInteropTest, StockGrpcCppClientCallsUnaryAndBidi) {
  NativeEchoServer server;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                                     grpc::InsecureChannelCredentials());
  auto echo = Echo::NewStub(channel);
  {
    auto ctx = bounded_context();
    ctx->AddMetadata("echo-key-bin", std::string("\x00\x01\xff", 3));
    EchoRequest request;
    request.set_message("from grpc++");
    request.set_echo_metadata(true);
    EchoResponse response;
    grpc::Status status = echo->Echo(ctx.get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.message(), "from grpc++");
    EXPECT_GT(response.remaining_deadline_ms(), 0);
    auto initial = ctx->GetServerInitialMetadata();
    auto it = initial.find("echo-key-bin");
    ASSERT_NE(it, initial.end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()), std::string("\x00\x01\xff", 3));
  }
  {
    auto ctx = bounded_context();
    EchoRequest request;
    request.set_status_code(static_cast<int>(StatusCode::kFailedPrecondition));
    request.set_status_message("not now: 100%");
    request.set_status_details("\x08\x09");
    EchoResponse response;
    grpc::Status status = echo->Echo(ctx.get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(status.error_message(), "not now: 100%");
    EXPECT_EQ(status.error_details(), "\x08\x09");
  }
  {
    // gzip both ways: grpc++ compresses the request; the server answers compressed.
    auto ctx = bounded_context();
    ctx->set_compression_algorithm(GRPC_COMPRESS_GZIP);
    ctx->AddMetadata("x-compress-response", "gzip");
    EchoRequest request;
    request.set_message(std::string(20'000, 'g'));
    EchoResponse response;
    grpc::Status status = echo->Echo(ctx.get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.message(), request.message());
  }
  {
    auto ctx = bounded_context();
    auto streamer = Streamer::NewStub(channel);
    auto chat = streamer->Chat(ctx.get());
    constexpr int kMessages = 100;
    for (int i = 0; i < kMessages; ++i) {
      EchoRequest request;
      request.set_message("m" + std::to_string(i));
      ASSERT_TRUE(chat->Write(request));
    }
    ASSERT_TRUE(chat->WritesDone());
    EchoResponse response;
    int read = 0;
    while (chat->Read(&response)) {
      EXPECT_EQ(response.message(), "m" + std::to_string(read));
      ++read;
    }
    EXPECT_EQ(read, kMessages);
    grpc::Status status = chat->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(server.chat_messages(), 100);
}

TEST(NativeSessionInteropTest, AStockClientsCancellationAbortsTheCall) {
  NativeEchoServer server;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                                     grpc::InsecureChannelCredentials());
  auto streamer = Streamer::NewStub(channel);
  auto ctx = bounded_context();
  auto chat = streamer->Chat(ctx.get());
  EchoRequest request;
  request.set_message("first");
  ASSERT_TRUE(chat->Write(request));
  EchoResponse response;
  ASSERT_TRUE(chat->Read(&response));  // the call is open on the server
  ctx->TryCancel();
  EXPECT_EQ(chat->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The RST_STREAM reaches the server after Finish returns: wait for it, bounded.
  auto deadline = std::chrono::steady_clock::now() + kPeerBound;
  while (server.aborted() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(server.aborted(), 1);
}

// A slowloris: 1,000 connections that never send the preface. Each is closed once the handshake
// timeout passes, and a real client is served meanwhile.
TEST(NativeSessionInteropTest, SilentConnectionsAreClosedAndOthersServed) {
  constexpr int kSilent = 1000;
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < 2 * kSilent + 200) {
    files.rlim_cur = std::min<rlim_t>(files.rlim_max, 2 * kSilent + 200);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  }
  if (files.rlim_cur < 2 * kSilent + 200) {
    GTEST_SKIP() << "RLIMIT_NOFILE's hard limit (" << files.rlim_max << ") is below the "
                 << 2 * kSilent + 200 << " descriptors this test needs";
  }
  ConnectionOptions options;
  options.handshake_timeout = std::chrono::seconds(2);
  NativeEchoServer server(options);

  std::vector<int> silent;
  for (int i = 0; i < kSilent; ++i) {
    int fd = connect_loopback(server.port());
    ASSERT_GE(fd, 0) << i;
    silent.push_back(fd);
  }

  // A client that does speak HTTP/2 is served while they hang on (it waits for a connection if
  // a loaded machine makes it miss the handshake deadline once).
  auto echo = Echo::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                                                grpc::InsecureChannelCredentials()));
  auto ctx = bounded_context();
  ctx->set_wait_for_ready(true);
  EchoRequest request;
  request.set_message("still served");
  EchoResponse response;
  grpc::Status status = echo->Echo(ctx.get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.message(), "still served");

  // Every silent connection is closed by the server: it reads as end-of-file (the server may
  // have written its SETTINGS first).
  auto deadline = std::chrono::steady_clock::now() + kPeerBound;
  int closed = 0;
  for (int fd : silent) {
    if (read_until_closed(fd, deadline).closed) ++closed;
    ::close(fd);
  }
  EXPECT_EQ(closed, kSilent);
}

TEST(NativeSessionInteropTest, HttpOneOnThePortIsClosed) {
  NativeEchoServer server;
  int fd = connect_loopback(server.port());
  ASSERT_GE(fd, 0);
  std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  EXPECT_TRUE(read_until_closed(fd, std::chrono::steady_clock::now() + kPeerBound).closed);
  ::close(fd);
  EXPECT_EQ(server.calls_started(), 0);
}

// The CVE-2023-44487 pattern over a real socket: sends 10,000 HEADERS + RST_STREAM pairs for
// `path` on a new connection to `port`, and checks that the server ends the connection with
// GOAWAY ENHANCE_YOUR_CALM.
void expect_rapid_reset_flood_refused(int port, const std::string& path) {
  int fd = connect_loopback(port);
  ASSERT_GE(fd, 0);
  std::string flood = std::string(kPreface) + raw_frame(kSettings, 0, 0, "");
  std::string headers = grpc_request_headers(path);
  std::string cancel("\0\0\0\x08", 4);
  for (std::uint32_t i = 0; i < 10'000; ++i) {
    flood += raw_frame(kHeaders, kEndHeaders, 2 * i + 1, headers);
    flood += raw_frame(kRstStream, 0, 2 * i + 1, cancel);
  }
  // Written until the server stops reading (it closes after its GOAWAY and a linger).
  for (std::size_t sent = 0; sent < flood.size();) {
    ssize_t n = ::send(fd, flood.data() + sent, flood.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  Received received = read_until_closed(fd, std::chrono::steady_clock::now() + kPeerBound);
  ::close(fd);
  EXPECT_TRUE(received.closed);
  FrameReader reader;
  const ServerFrame* goaway = nullptr;
  auto frames = reader.read(received.bytes);
  for (const auto& frame : frames) {
    if (frame.type == kGoaway) goaway = &frame;
  }
  ASSERT_NE(goaway, nullptr) << frames.size() << " frames, no GOAWAY";
  EXPECT_EQ(goaway->word(), static_cast<std::uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
}

// The calls the server began are bounded by the reset burst (1,000 by default), not by what the
// client sent. The bucket's refill is off here: at the default 100 a second, the time a loaded
// machine takes over the flood would add a token per 10 ms to the bound.
TEST(NativeSessionInteropTest, ARapidResetFloodOverASocketEndsWithEnhanceYourCalm) {
  ConnectionOptions options;
  options.session.resets_per_second = 0;
  NativeEchoServer server(options);
  expect_rapid_reset_flood_refused(server.port(), "/trellis.testing.Streamer/Chat");
  EXPECT_LE(server.calls_started(), 1001);
  EXPECT_GE(server.calls_started(), 1);
}

// Keepalive: a client that keeps a call open but never answers the server's pings is
// disconnected, and its call aborted.
TEST(NativeSessionInteropTest, AClientThatDoesNotAnswerPingsIsDisconnected) {
  ConnectionOptions options;
  options.keepalive_time = std::chrono::milliseconds(200);
  options.keepalive_timeout = std::chrono::milliseconds(200);
  NativeEchoServer server(options);
  int fd = connect_loopback(server.port());
  ASSERT_GE(fd, 0);
  std::string hello =
      std::string(kPreface) + raw_frame(kSettings, 0, 0, "") +
      raw_frame(kHeaders, kEndHeaders, 1, grpc_request_headers("/trellis.testing.Streamer/Chat"));
  ASSERT_EQ(::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(hello.size()));
  Received received = read_until_closed(fd, std::chrono::steady_clock::now() + kPeerBound);
  ::close(fd);
  EXPECT_TRUE(received.closed);
  FrameReader reader;
  int pings = 0;
  for (const auto& frame : reader.read(received.bytes)) pings += frame.type == kPing;
  EXPECT_GE(pings, 1);
  EXPECT_EQ(server.calls_started(), 1);
  EXPECT_EQ(server.aborted(), 1);
}

// A stock grpc++ client answers the pings: its stream outlives keepalive rounds. (grpc 1.51's
// client answers a ping about 5 s late when it has nothing else to send: a second ping, sent
// only once the first is answered, takes that long; the timeout must exceed it.)
TEST(NativeSessionInteropTest, AStockClientAnswersKeepalivePings) {
  ConnectionOptions options;
  options.keepalive_time = std::chrono::milliseconds(100);
  options.keepalive_timeout = std::chrono::seconds(60);  // far above the client's ~5 s
  NativeEchoServer server(options);
  auto streamer = Streamer::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server.port()), grpc::InsecureChannelCredentials()));
  auto ctx = bounded_context();
  auto chat = streamer->Chat(ctx.get());
  EchoRequest request;
  request.set_message("before");
  ASSERT_TRUE(chat->Write(request));
  EchoResponse response;
  ASSERT_TRUE(chat->Read(&response));
  auto deadline = std::chrono::steady_clock::now() + kPeerBound;
  while (server.pings_sent() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_GE(server.pings_sent(), 2);
  request.set_message("after the pings");
  ASSERT_TRUE(chat->Write(request));
  ASSERT_TRUE(chat->Read(&response));
  EXPECT_EQ(response.message(), "after the pings");
  ASSERT_TRUE(chat->WritesDone());
  EXPECT_TRUE(chat->Finish().ok());
  EXPECT_EQ(server.aborted(), 0);
}

// ------------------------------------------------------------------ through trellis::Server
//
// The checks above drive the session and the socket driver with test listeners; these run the
// same hostile and malformed input against a trellis::Server built with Transport::native, the
// generated Echo service behind it.

// Sends what `client` has queued and feeds it what the server answers, until stream `id` has
// closed (true) or the connection ends or `deadline` passes (false).
bool exchange_until_closed(int fd, TestClient& client, std::int32_t id,
                           std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    std::string out = client.output();
    for (std::size_t sent = 0; sent < out.size();) {
      ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    if (client.responses[id].closed) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return false;
    char buffer[16384];
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return false;
    client.input(std::string(buffer, static_cast<std::size_t>(n)));
  }
}

class NativeServerTest : public testing::EndToEndTest {
 protected:
  void SetUp() override {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    auto server = Server::Builder(*runtime_)
                      .transport(Transport::native)
                      .add_insecure_port("127.0.0.1:0")
                      .add_service(echo_)
                      .build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  // A Trellis client's Echo call on a fresh connection: the server still serves.
  void expect_served() {
    testing::EchoClient client(Channel::insecure("127.0.0.1:" + std::to_string(server_->port())));
    EchoRequest request;
    request.set_message("still served");
    auto response = run(client.Echo(request, CallOptions().set_timeout(kPeerBound)));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->message(), "still served");
  }

  testing::EchoImpl echo_;
};

TEST_F(NativeServerTest,
       MalformedRequestsAreAnsweredAsTheSpecificationSaysAndNeverReachTheHandler) {
  int fd = connect_loopback(server_->port());
  ASSERT_GE(fd, 0);
  TestClient client;
  const std::string path = "/trellis.testing.Echo/Echo";
  EchoRequest request;
  request.set_message("hello");
  const std::string body = framed(request.SerializeAsString());
  auto deadline = std::chrono::steady_clock::now() + kPeerBound;
  struct Case {
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string grpc_status;
    std::string http_status;
  };
  const std::vector<Case> cases = {
      {{{"content-type", "text/plain"}}, body, "13", "415"},
      {{{"grpc-encoding", "br"}}, body, "12", "200"},
      {{{"grpc-timeout", "1x"}}, body, "13", "200"},
      {{}, framed(request.SerializeAsString(), /*compressed=*/true), "13", "200"},
  };
  for (const Case& c : cases) {
    std::int32_t id = client.request(path, c.headers, c.body);
    ASSERT_TRUE(exchange_until_closed(fd, client, id, deadline));
    const Response& r = client.responses[id];
    EXPECT_EQ(r.grpc_status(), c.grpc_status) << c.headers.empty();
    EXPECT_EQ(r.header(":status"), c.http_status);
  }
  EXPECT_EQ(client.responses.rbegin()->second.grpc_status(), "13");
  // The same connection serves a well-formed call, and only it reached the handler.
  std::int32_t id = client.request(path, {}, body);
  ASSERT_TRUE(exchange_until_closed(fd, client, id, deadline));
  EXPECT_EQ(client.responses[id].grpc_status(), "0");
  ASSERT_EQ(client.responses[id].messages().size(), 1u);
  EchoResponse response;
  ASSERT_TRUE(response.ParseFromString(client.responses[id].messages()[0]));
  EXPECT_EQ(response.message(), "hello");
  ::close(fd);
  EXPECT_EQ(echo_.observed.calls.load(), 1);
}

TEST_F(NativeServerTest, ARapidResetFloodEndsTheConnectionAndTheServerServesOn) {
  expect_rapid_reset_flood_refused(server_->port(), "/trellis.testing.Echo/Echo");
  expect_served();
  // Every call the flood began was freed (TearDown checks the runtime's live call count).
}

TEST_F(NativeServerTest, HttpOneAndGarbageAreClosedAndTheServerServesOn) {
  for (std::string bytes :
       {std::string("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), std::string(64, '\xff')}) {
    int fd = connect_loopback(server_->port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
    EXPECT_TRUE(read_until_closed(fd, std::chrono::steady_clock::now() + kPeerBound).closed);
    ::close(fd);
  }
  expect_served();
  EXPECT_EQ(echo_.observed.calls.load(), 1);
}

// A Chat handler that, on its first message, says it blocks (`blocking`), then blocks its worker
// until the watchdog has reported the stall (bounded): the read completes inside the socket
// handler that received the message, and resumes the handler there.
class BlockingChat final : public testing::ChatOnlyStreamer {
 public:
  BlockingChat(std::shared_future<void> reported, std::atomic<bool>& blocking)
      : reported_(std::move(reported)), blocking_(blocking) {}

  Task<Status> Chat(ServerContext&, ServerReader<EchoRequest>& reader,
                    ServerWriter<EchoResponse>&) override {
    std::optional<EchoRequest> first = co_await reader.read();
    if (first) {
      blocking_ = true;
      reported_.wait_for(testing::kWaitBound);  // deliberately blocks the worker
    }
    co_return Status();
  }

 private:
  std::shared_future<void> reported_;
  std::atomic<bool>& blocking_;
};

// The socket handlers of a native server (and the handler code they resume) run as the worker's
// timed callbacks: the stall watchdog sees a handler blocking there, and the poll metrics count
// the poll.
TEST(NativeServerRuntimeTest, TheWatchdogAndThePollMetricsSeeWhatSocketHandlersRun) {
  std::promise<void> stalled;
  std::atomic<bool> blocking{false};
  std::atomic<bool> reported{false};
  std::shared_future<void> report = stalled.get_future().share();
  // Only a stall while the handler blocks counts: on a loaded machine an earlier poll may be
  // slow too, and must not release the handler before it blocks.
  auto runtime = Runtime::single_thread()
                     .watchdog(100ms,
                               [&](std::size_t, std::chrono::milliseconds) {
                                 if (blocking && !reported.exchange(true)) stalled.set_value();
                               })
                     .build();
  BlockingChat chat(report, blocking);
  auto server = Server::Builder(*runtime)
                    .transport(Transport::native)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(chat)
                    .build();
  ASSERT_TRUE(server.ok()) << server.status();
  testing::StreamerClient client(
      Channel::insecure("127.0.0.1:" + std::to_string((*server)->port())));
  Status status =
      testing::run_bounded(*runtime, [](testing::StreamerClient& client) -> Task<Status> {
        auto stream = client.Chat(CallOptions().set_timeout(kPeerBound));
        EchoRequest request;
        request.set_message("block");
        co_await stream.write(request);
        co_return co_await stream.finish();
      }(client));
  EXPECT_TRUE(status.ok()) << status;
  ASSERT_EQ(report.wait_for(0s), std::future_status::ready) << "the watchdog saw no stall";
  // The stalled poll lasted past the watchdog's threshold, and was counted.
  EXPECT_GE(runtime->metrics().workers[0].max_poll_time, 100ms);
  (*server)->shutdown(testing::kShutdownGrace);
}

}  // namespace
}  // namespace trellis::transport
