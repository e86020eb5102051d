// The tracing layer: W3C trace context parsing, spans on both sides, propagation across hops,
// and the exporters and their OTLP/JSON lines, over real loopback calls.
#include "trellis/middleware/tracing.hpp"

#include <gtest/gtest.h>

// Boost.JSON, header-only, to parse the exported OTLP/JSON lines.
#include <boost/json/src.hpp>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <vector>

#include "fixture.hpp"
#include "trellis/client_stream.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kTraceId[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kSpanId[] = "00f067aa0ba902b7";
constexpr char kTraceparent[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ------------------------------------------------------------------------ helpers

std::optional<SpanAttribute::Value> attribute(const Span& span, std::string_view key) {
  for (const SpanAttribute& a : span.attributes()) {
    if (a.key == key) return a.value;
  }
  return std::nullopt;
}

std::string string_attribute(const Span& span, std::string_view key) {
  auto v = attribute(span, key);
  return v && std::holds_alternative<std::string>(*v) ? std::get<std::string>(*v) : "<missing>";
}

std::int64_t int_attribute(const Span& span, std::string_view key) {
  auto v = attribute(span, key);
  return v && std::holds_alternative<std::int64_t>(*v) ? std::get<std::int64_t>(*v) : -12345;
}

// The only span in `exporter`, failing the test if there is not exactly one.
Span only_span(const InMemoryExporter& exporter) {
  std::vector<Span> spans = exporter.spans();
  EXPECT_EQ(spans.size(), 1u);
  return spans.empty() ? Span{} : spans.front();
}

// A test service whose Echo relays the request to another Echo server as the handler's child
// call (CallOptions::set_parent), and whose IdempotentEcho answers with the trace context the
// handler sees: "<trace id>/<span id>/<tracestate>", or "none".
class RelayImpl final : public EchoService {
 public:
  explicit RelayImpl(Channel downstream) : downstream_(std::move(downstream)) {}

  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    auto reply =
        co_await EchoClient(downstream_).Echo(req, CallOptions().set_parent(ctx).set_timeout(30s));
    if (!reply.ok()) co_return reply.status();
    EchoResponse resp = std::move(reply).value();
    resp.set_message("relayed: " + resp.message());
    co_return resp;
  }

  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest&) override {
    EchoResponse resp;
    const TraceContext* trace = current_trace(ctx);
    resp.set_message(trace == nullptr ? "none"
                                      : trace->trace_id.hex() + "/" + trace->span_id.hex() + "/" +
                                            trace->tracestate);
    co_return resp;
  }

 private:
  Channel downstream_;
};

// An exporter that always throws.
class ThrowingExporter final : public SpanExporter {
 public:
  void export_span(const Span&) override { throw std::runtime_error("exporter exploded"); }
};

class TracingTest : public MiddlewareTest {
 protected:
  // Captures the traceparent and tracestate the server receives (outermost server layer). The
  // test reads them under the lock the layer wrote them under: the response that orders the two
  // travels through libgrpc, where ThreadSanitizer cannot see it.
  class Seen {
   public:
    void record(const Call& call) {
      std::lock_guard lock(mu_);
      for (auto v : call.request_metadata().get_all("traceparent")) traceparents_.emplace_back(v);
      for (auto v : call.request_metadata().get_all("tracestate")) tracestates_.emplace_back(v);
    }
    std::vector<std::string> traceparents() {
      std::lock_guard lock(mu_);
      return traceparents_;
    }
    std::vector<std::string> tracestates() {
      std::lock_guard lock(mu_);
      return tracestates_;
    }

   private:
    std::mutex mu_;
    std::vector<std::string> traceparents_;
    std::vector<std::string> tracestates_;
  };
  static auto capture(std::shared_ptr<Seen> seen) {
    return layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
      seen->record(call);
      co_return co_await next(call);
    });
  }
};

// ------------------------------------------------------------------ trace context

TEST_F(TracingTest, TraceparentRoundTrip) {
  auto parsed = parse_traceparent(kTraceparent);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->trace_id.hex(), kTraceId);
  EXPECT_EQ(parsed->span_id.hex(), kSpanId);
  EXPECT_EQ(parsed->flags, 0x01);
  EXPECT_TRUE(parsed->sampled());
  EXPECT_TRUE(parsed->tracestate.empty());
  EXPECT_EQ(format_traceparent(*parsed), kTraceparent);

  auto unsampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled());

  for (int i = 0; i < 100; ++i) {
    TraceContext context{TraceId::random(), SpanId::random(), static_cast<std::uint8_t>(i % 4), {}};
    std::string header = format_traceparent(context);
    EXPECT_EQ(header.size(), 55u);
    auto back = parse_traceparent(header);
    ASSERT_TRUE(back.has_value()) << header;
    EXPECT_EQ(*back, context);
  }
}

TEST_F(TracingTest, TraceparentOfALaterVersionIsReadByTheVersion00Layout) {
  // The specification: parse a higher version as 00, ignoring fields after the flags.
  auto v1 = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  ASSERT_TRUE(v1.has_value());
  EXPECT_EQ(v1->trace_id.hex(), kTraceId);
  auto extended =
      parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future");
  ASSERT_TRUE(extended.has_value());
  EXPECT_EQ(extended->span_id.hex(), kSpanId);
  // Re-emitted as version 00.
  EXPECT_EQ(format_traceparent(*extended), kTraceparent);
}

TEST_F(TracingTest, TraceparentInvalidFormsAreRejected) {
  const std::vector<std::string> invalid = {
      "",
      "00",
      // Wrong lengths.
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",     // trace id 31 digits
      "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",   // trace id 33 digits
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",     // span id 15 digits
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",   // span id 17 digits
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",     // flags 1 digit
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",   // flags 3 digits
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",   // version 00 with more
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // version 00 with more
      "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",     // version 1 digit
      // All-zero ids.
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      // Bad hex: upper case, non-hex, in each field.
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-FF",
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      // Version ff is forbidden.
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      // Wrong separators.
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
      // A later version must separate what follows the flags with '-'.
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
      // Surrounding whitespace is not part of the format.
      " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  };
  for (const std::string& header : invalid) {
    EXPECT_FALSE(parse_traceparent(header).has_value()) << "accepted: \"" << header << "\"";
  }
}

TEST_F(TracingTest, IdsParseFromHexAndRandomIdsAreNeverZero) {
  EXPECT_EQ(TraceId::from_hex(kTraceId)->hex(), kTraceId);
  EXPECT_EQ(SpanId::from_hex(kSpanId)->hex(), kSpanId);
  EXPECT_FALSE(TraceId::from_hex(kSpanId).has_value());
  EXPECT_FALSE(SpanId::from_hex("0000000000000000").has_value());
  EXPECT_FALSE(TraceId().valid());
  EXPECT_FALSE(SpanId().valid());
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    TraceId t = TraceId::random();
    SpanId s = SpanId::random();
    EXPECT_TRUE(t.valid());
    EXPECT_TRUE(s.valid());
    seen.insert(t.hex());
    seen.insert(s.hex());
  }
  EXPECT_EQ(seen.size(), 2000u);  // 64 and 128 random bits: a repeat means a broken generator
}

TEST_F(TracingTest, PeerStringsSplitIntoNetworkAttributes) {
  PeerAddress v4 = parse_peer("ipv4:127.0.0.1:50051");
  EXPECT_EQ(v4.transport, "tcp");
  EXPECT_EQ(v4.network_type, "ipv4");
  EXPECT_EQ(v4.address, "127.0.0.1");
  EXPECT_EQ(v4.port, 50051);
  PeerAddress v6 = parse_peer("ipv6:[::1]:443");
  EXPECT_EQ(v6.transport, "tcp");
  EXPECT_EQ(v6.network_type, "ipv6");
  EXPECT_EQ(v6.address, "::1");
  EXPECT_EQ(v6.port, 443);
  PeerAddress encoded = parse_peer("ipv6:%5b::1%5D:8080");  // either case of hex digit
  EXPECT_EQ(encoded.address, "::1");
  EXPECT_EQ(encoded.port, 8080);
  PeerAddress unix_socket = parse_peer("unix:/run/app.sock");
  EXPECT_EQ(unix_socket.transport, "unix");
  EXPECT_EQ(unix_socket.network_type, "");  // network.type names IP versions only
  EXPECT_EQ(unix_socket.address, "/run/app.sock");
  EXPECT_EQ(unix_socket.port, -1);
  PeerAddress other = parse_peer("vsock:3:1234");
  EXPECT_EQ(other.transport, "");
  EXPECT_EQ(other.network_type, "");
  EXPECT_EQ(other.address, "vsock:3:1234");
  PeerAddress bad_port = parse_peer("ipv4:10.0.0.1:99999");
  EXPECT_EQ(bad_port.address, "10.0.0.1");
  EXPECT_EQ(bad_port.port, -1);
}

// --------------------------------------------------------------------- server side

TEST_F(TracingTest, ServerContinuesAnIncomingTrace) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) {
    b.layer(TracingLayer(spans, TracingOptions{.service_name = "echo-server"}));
  });
  auto r = run(EchoClient(channel_).Echo(with_message("x"),
                                         CallOptions()
                                             .set_timeout(30s)
                                             .add_metadata("traceparent", kTraceparent)
                                             .add_metadata("tracestate", "vendor=abc,other=1")));
  ASSERT_TRUE(r.ok()) << r.status();
  Span span = only_span(*spans);
  EXPECT_EQ(span.name, "trellis.testing.Echo/Echo");
  EXPECT_EQ(span.kind, SpanKind::kServer);
  EXPECT_EQ(span.context.trace_id.hex(), kTraceId);
  EXPECT_EQ(span.parent_span_id.hex(), kSpanId);
  EXPECT_FALSE(span.is_root());
  EXPECT_TRUE(span.context.span_id.valid());
  EXPECT_NE(span.context.span_id.hex(), kSpanId);
  EXPECT_EQ(span.context.flags, 0x01);
  EXPECT_EQ(span.context.tracestate, "vendor=abc,other=1");
  EXPECT_EQ(span.status_code, StatusCode::kOk);
  EXPECT_FALSE(span.is_error());
  EXPECT_EQ(span.service_name, "echo-server");
  EXPECT_LE(span.start_time, span.end_time);
  EXPECT_EQ(string_attribute(span, "rpc.system"), "grpc");
  EXPECT_EQ(string_attribute(span, "rpc.service"), "trellis.testing.Echo");
  EXPECT_EQ(string_attribute(span, "rpc.method"), "Echo");
  EXPECT_EQ(int_attribute(span, "rpc.grpc.status_code"), 0);
  EXPECT_EQ(span.peer, r->peer());  // the server's view of the client, as the handler saw it
  EXPECT_EQ(string_attribute(span, "network.transport"), "tcp");
  EXPECT_EQ(string_attribute(span, "network.type"), "ipv4");
  EXPECT_EQ(string_attribute(span, "network.peer.address"), "127.0.0.1");
  EXPECT_GT(int_attribute(span, "network.peer.port"), 0);
  // server.* name the server; a server span knows only its client.
  EXPECT_FALSE(attribute(span, "server.address").has_value());
  EXPECT_FALSE(attribute(span, "server.port").has_value());
}

TEST_F(TracingTest, ServerJoinsRepeatedTracestateHeadersInOrder) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(spans)); });
  auto r = run(
      EchoClient(channel_).Echo(with_message("x"), CallOptions()
                                                       .set_timeout(30s)
                                                       .add_metadata("traceparent", kTraceparent)
                                                       .add_metadata("tracestate", "a=1,b=2")
                                                       .add_metadata("tracestate", "c=3")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(only_span(*spans).context.tracestate, "a=1,b=2,c=3");
}

// The accessor the server layer reads traceparent and tracestate with.
TEST_F(TracingTest, ServerContextLooksUpOneMetadataKeyInPlace) {
  struct Seen {
    std::optional<std::string> first, absent;
    std::vector<std::string> all, none, from_copy;
  };
  auto seen = std::make_shared<Seen>();
  start([&](Server::Builder& b) {
    b.layer(layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
      const ServerContext& ctx = *call.server_context();
      if (auto v = ctx.request_metadata_value("x-key")) seen->first = std::string(*v);
      if (auto v = ctx.request_metadata_value("x-absent")) seen->absent = std::string(*v);
      for (auto v : ctx.request_metadata_values("x-key")) seen->all.emplace_back(v);
      for (auto v : ctx.request_metadata_values("x-absent")) seen->none.emplace_back(v);
      for (auto v : ctx.request_metadata().get_all("x-key")) seen->from_copy.emplace_back(v);
      co_return co_await next(call);
    }));
  });
  auto r = run(EchoClient(channel_).Echo(
      with_message("x"),
      CallOptions().set_timeout(30s).add_metadata("x-key", "one").add_metadata("x-key", "two")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(seen->first, "one");
  EXPECT_EQ(seen->absent, std::nullopt);
  EXPECT_EQ(seen->all, (std::vector<std::string>{"one", "two"}));
  EXPECT_TRUE(seen->none.empty());
  EXPECT_EQ(seen->all, seen->from_copy);
}

TEST_F(TracingTest, ServerStartsANewTraceWithoutAValidTraceparent) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(spans)); });
  EchoClient client(channel_);
  ASSERT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  // An invalid traceparent (all-zero trace id) is ignored, and its tracestate with it.
  ASSERT_TRUE(
      run(client.Echo(with_message("x"),
                      CallOptions()
                          .set_timeout(30s)
                          .add_metadata("traceparent",
                                        "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                          .add_metadata("tracestate", "vendor=abc")))
          .ok());
  std::vector<Span> got = spans->spans();
  ASSERT_EQ(got.size(), 2u);
  for (const Span& span : got) {
    EXPECT_TRUE(span.is_root());
    EXPECT_TRUE(span.context.valid());
    EXPECT_TRUE(span.context.sampled());  // a trace this layer starts is sampled
    EXPECT_TRUE(span.context.tracestate.empty());
  }
  EXPECT_NE(got[0].context.trace_id, got[1].context.trace_id);
}

TEST_F(TracingTest, HandlerReadsTheTraceIdOfItsCall) {
  auto spans = std::make_shared<InMemoryExporter>();
  start();
  RelayImpl relay(channel_);
  auto traced = start_other(relay, TracingLayer(spans));
  ASSERT_NE(traced, nullptr);
  EchoClient client(Channel::insecure("127.0.0.1:" + std::to_string(traced->port())));
  auto r =
      run(client.IdempotentEcho(with_message("x"), CallOptions()
                                                       .set_timeout(30s)
                                                       .add_metadata("traceparent", kTraceparent)
                                                       .add_metadata("tracestate", "k=v")));
  ASSERT_TRUE(r.ok()) << r.status();
  Span span = only_span(*spans);
  EXPECT_EQ(r->message(), std::string(kTraceId) + "/" + span.context.span_id.hex() + "/k=v");

  // Without a tracing layer the handler sees no trace.
  RelayImpl untraced_relay(channel_);
  auto untraced = start_other(untraced_relay, {});
  ASSERT_NE(untraced, nullptr);
  auto u = run(EchoClient(Channel::insecure("127.0.0.1:" + std::to_string(untraced->port())))
                   .IdempotentEcho(with_message("x"), CallOptions().set_timeout(30s).add_metadata(
                                                          "traceparent", kTraceparent)));
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->message(), "none");
}

TEST_F(TracingTest, StatusCodeIsRecordedOnErrors) {
  auto server_spans = std::make_shared<InMemoryExporter>();
  auto client_spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(server_spans)); });
  EchoClient client(channel_.with_layer(TracingLayer(client_spans)));

  EchoRequest not_found;
  not_found.set_status_code(static_cast<int>(StatusCode::kNotFound));
  not_found.set_status_message("no such thing");
  EXPECT_EQ(run(client.Echo(not_found, CallOptions().set_timeout(30s))).status().code(),
            StatusCode::kNotFound);
  Span server = only_span(*server_spans);
  Span caller = only_span(*client_spans);
  EXPECT_EQ(server.status_code, StatusCode::kNotFound);
  EXPECT_EQ(server.status_message, "no such thing");
  EXPECT_EQ(int_attribute(server, "rpc.grpc.status_code"), 5);
  EXPECT_EQ(int_attribute(caller, "rpc.grpc.status_code"), 5);
  // OpenTelemetry: NOT_FOUND is the client's problem, not a server error; the client's span fails.
  EXPECT_FALSE(server.is_error());
  EXPECT_TRUE(caller.is_error());

  server_spans->clear();
  client_spans->clear();
  EchoRequest unavailable;
  unavailable.set_status_code(static_cast<int>(StatusCode::kUnavailable));
  EXPECT_EQ(run(client.Echo(unavailable, CallOptions().set_timeout(30s))).status().code(),
            StatusCode::kUnavailable);
  server = only_span(*server_spans);
  EXPECT_EQ(int_attribute(server, "rpc.grpc.status_code"), 14);
  EXPECT_TRUE(server.is_error());
}

TEST_F(TracingTest, HandlerExceptionIsRecordedAndTheCallAnswersInternal) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(spans)); });
  EchoRequest req;
  req.set_throw_exception(true);
  EchoClient client(channel_);
  auto r = run(client.Echo(req, CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  Span span = only_span(*spans);
  EXPECT_EQ(span.status_code, StatusCode::kInternal);
  EXPECT_NE(span.status_message.find("handler exploded on purpose"), std::string::npos)
      << span.status_message;
  EXPECT_EQ(int_attribute(span, "rpc.grpc.status_code"), 13);
  EXPECT_TRUE(span.is_error());
  // The server lives on.
  EXPECT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  EXPECT_EQ(spans->spans().size(), 2u);
}

TEST_F(TracingTest, ClientLayerRecordsAnExceptionAndRethrows) {
  start();
  auto spans = std::make_shared<InMemoryExporter>();
  // A layer inside the tracing layer that throws: the tracing layer records it and lets it go.
  Channel throwing = channel_
                         .with_layer(layer_fn([](Call&, const auto&) -> Task<Status> {
                           throw std::runtime_error("client layer exploded");
                           co_return Status();
                         }))
                         .with_layer(TracingLayer(spans));
  EXPECT_THROW(run(EchoClient(throwing).Echo(with_message("x"), CallOptions().set_timeout(30s))),
               std::runtime_error);
  Span span = only_span(*spans);
  EXPECT_EQ(span.kind, SpanKind::kClient);
  EXPECT_EQ(span.status_code, StatusCode::kInternal);
  EXPECT_NE(span.status_message.find("client layer exploded"), std::string::npos);
}

TEST_F(TracingTest, ServerStreamingCallsGetASpan) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(spans)); });
  auto split = StreamerClient(channel_).Split(
      with_message("a b"),
      CallOptions().set_timeout(30s).add_metadata("traceparent", kTraceparent));
  Status status = run([&]() -> Task<Status> {
    while (co_await split.read()) {
    }
    co_return co_await split.finish();
  }());
  ASSERT_TRUE(status.ok()) << status;
  Span span = only_span(*spans);
  EXPECT_EQ(span.name, "trellis.testing.Streamer/Split");
  EXPECT_EQ(string_attribute(span, "rpc.service"), "trellis.testing.Streamer");
  EXPECT_EQ(span.context.trace_id.hex(), kTraceId);
  EXPECT_EQ(span.parent_span_id.hex(), kSpanId);
}

TEST_F(TracingTest, UnsampledTracesPropagateButAreNotExportedUnlessAsked) {
  auto spans = std::make_shared<InMemoryExporter>();
  auto all_spans = std::make_shared<InMemoryExporter>();
  TracingOptions export_all;
  export_all.export_unsampled = true;
  start([&](Server::Builder& b) {
    b.layer(TracingLayer(spans)).layer(TracingLayer(all_spans, export_all));
  });
  auto r = run(EchoClient(channel_).Echo(
      with_message("x"),
      CallOptions().set_timeout(30s).add_metadata(
          "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(spans->spans().empty());
  Span inner = only_span(*all_spans);
  EXPECT_EQ(inner.context.trace_id.hex(), kTraceId);
  EXPECT_FALSE(inner.context.sampled());
}

TEST_F(TracingTest, NestedServerTracingLayersNestTheirSpans) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(spans)); }, TracingLayer(spans));
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  std::vector<Span> got = spans->spans();
  ASSERT_EQ(got.size(), 2u);
  const Span& inner = got[0];  // ends first
  const Span& outer = got[1];
  EXPECT_TRUE(outer.is_root());
  EXPECT_EQ(inner.context.trace_id, outer.context.trace_id);
  EXPECT_EQ(inner.parent_span_id, outer.context.span_id);
}

TEST_F(TracingTest, ExporterThatThrowsDoesNotFailTheCall) {
  start([&](Server::Builder& b) { b.layer(TracingLayer(std::make_shared<ThrowingExporter>())); });
  Channel traced = channel_.with_layer(TracingLayer(std::make_shared<ThrowingExporter>()));
  auto r = run(EchoClient(traced).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_TRUE(r.ok()) << r.status();
}

// --------------------------------------------------------------------- client side

TEST_F(TracingTest, ClientLayerInjectsTheTraceparentTheServerSees) {
  auto seen = std::make_shared<Seen>();
  auto server_spans = std::make_shared<InMemoryExporter>();
  auto client_spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(capture(seen)).layer(TracingLayer(server_spans)); });
  auto r = run(EchoClient(channel_.with_layer(TracingLayer(client_spans)))
                   .Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  Span caller = only_span(*client_spans);
  Span server = only_span(*server_spans);
  EXPECT_EQ(caller.kind, SpanKind::kClient);
  EXPECT_EQ(caller.name, "trellis.testing.Echo/Echo");
  EXPECT_TRUE(caller.is_root());
  EXPECT_EQ(string_attribute(caller, "rpc.method"), "Echo");
  // The peer of a client span is the server.
  EXPECT_EQ(caller.peer, "ipv4:127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_EQ(string_attribute(caller, "network.peer.address"), "127.0.0.1");
  EXPECT_EQ(int_attribute(caller, "network.peer.port"), server_->port());
  // The layer only sees the address it connected to: that is the server's.
  EXPECT_EQ(string_attribute(caller, "server.address"), "127.0.0.1");
  EXPECT_EQ(int_attribute(caller, "server.port"), server_->port());
  EXPECT_EQ(seen->traceparents(), std::vector<std::string>{format_traceparent(caller.context)});
  EXPECT_TRUE(seen->tracestates().empty());  // none to carry
  EXPECT_EQ(server.context.trace_id, caller.context.trace_id);
  EXPECT_EQ(server.parent_span_id, caller.context.span_id);
}

TEST_F(TracingTest, ClientStreamSpansNameTheServerAsPeer) {
  auto spans = std::make_shared<InMemoryExporter>();
  start();
  ResponseMetadata md;
  auto split = StreamerClient(channel_.with_layer(TracingLayer(spans)))
                   .Split(with_message("a b"),
                          CallOptions().set_timeout(30s).capture_response_metadata(&md));
  Status status = run([&]() -> Task<Status> {
    while (co_await split.read()) {
    }
    co_return co_await split.finish();
  }());
  ASSERT_TRUE(status.ok()) << status;
  Span span = only_span(*spans);
  EXPECT_EQ(span.kind, SpanKind::kClient);
  EXPECT_EQ(span.peer, "ipv4:127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_EQ(int_attribute(span, "network.peer.port"), server_->port());
  EXPECT_EQ(md.peer, span.peer);  // the caller's capture has it too
}

TEST_F(TracingTest, CallsWithoutLayersReportThePeerInTheirResponseMetadata) {
  start();
  ResponseMetadata md;
  auto r = run(EchoClient(channel_).Echo(
      with_message("x"), CallOptions().set_timeout(30s).capture_response_metadata(&md)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(md.peer, "ipv4:127.0.0.1:" + std::to_string(server_->port()));
}

TEST_F(TracingTest, ClientLayerKeepsATraceparentTheCallerSet) {
  auto seen = std::make_shared<Seen>();
  auto client_spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(capture(seen)); });
  auto r = run(EchoClient(channel_.with_layer(TracingLayer(client_spans)))
                   .Echo(with_message("x"), CallOptions()
                                                .set_timeout(30s)
                                                .add_metadata("traceparent", kTraceparent)
                                                .add_metadata("tracestate", "a=1")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(seen->traceparents(), std::vector<std::string>{kTraceparent});  // not doubled
  EXPECT_EQ(seen->tracestates(), std::vector<std::string>{"a=1"});
  Span caller = only_span(*client_spans);
  EXPECT_EQ(caller.context.trace_id.hex(), kTraceId);
  EXPECT_EQ(caller.parent_span_id.hex(), kSpanId);
  EXPECT_EQ(caller.context.tracestate, "a=1");
}

// client -> A -> B: one trace, each span the child of the one before, tracestate carried along.
TEST_F(TracingTest, ThreeHopsShareOneTraceWithCorrectParents) {
  auto seen_at_b = std::make_shared<Seen>();
  auto b_spans = std::make_shared<InMemoryExporter>();
  auto a_spans = std::make_shared<InMemoryExporter>();
  auto client_spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) {
    b.layer(capture(seen_at_b)).layer(TracingLayer(b_spans, {.service_name = "b"}));
  });
  TracingLayer a_tracing(a_spans, {.service_name = "a"});
  RelayImpl relay(channel_.with_layer(a_tracing));
  auto a = start_other(relay, a_tracing);
  ASSERT_NE(a, nullptr);
  EchoClient client(Channel::insecure("127.0.0.1:" + std::to_string(a->port()))
                        .with_layer(TracingLayer(client_spans, {.service_name = "client"})));

  auto r = run(client.Echo(with_message("hop"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "relayed: hop");

  Span c = only_span(*client_spans);
  std::vector<Span> a_got = a_spans->spans();
  ASSERT_EQ(a_got.size(), 2u);
  // A's client span ends (and is exported) before A's server span.
  const Span& a_client = a_got[0];
  const Span& a_server = a_got[1];
  Span b = only_span(*b_spans);
  EXPECT_EQ(a_client.kind, SpanKind::kClient);
  EXPECT_EQ(a_server.kind, SpanKind::kServer);
  EXPECT_EQ(b.kind, SpanKind::kServer);

  EXPECT_TRUE(c.is_root());
  for (const Span* s : std::initializer_list<const Span*>{&a_server, &a_client, &b}) {
    EXPECT_EQ(s->context.trace_id, c.context.trace_id) << s->name;
  }
  EXPECT_EQ(a_server.parent_span_id, c.context.span_id);
  EXPECT_EQ(a_client.parent_span_id, a_server.context.span_id);
  EXPECT_EQ(b.parent_span_id, a_client.context.span_id);
  EXPECT_EQ(seen_at_b->traceparents(),
            std::vector<std::string>{format_traceparent(a_client.context)});
  std::set<std::string> ids = {c.context.span_id.hex(), a_server.context.span_id.hex(),
                               a_client.context.span_id.hex(), b.context.span_id.hex()};
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(c.service_name, "client");
  EXPECT_EQ(a_server.service_name, "a");
  EXPECT_EQ(b.service_name, "b");

  // A trace that comes in with a tracestate carries it to B unchanged.
  a_spans->clear();
  b_spans->clear();
  auto plain = EchoClient(Channel::insecure("127.0.0.1:" + std::to_string(a->port())));
  auto t =
      run(plain.Echo(with_message("hop"), CallOptions()
                                              .set_timeout(30s)
                                              .add_metadata("traceparent", kTraceparent)
                                              .add_metadata("tracestate", "congo=t61rcWkgMzE")));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(seen_at_b->tracestates(), std::vector<std::string>{"congo=t61rcWkgMzE"});
  b = only_span(*b_spans);
  EXPECT_EQ(b.context.trace_id.hex(), kTraceId);
  EXPECT_EQ(b.context.tracestate, "congo=t61rcWkgMzE");
  a->shutdown(kShutdownGrace);
}

TEST_F(TracingTest, ChildCallOfAnUntracedServerContinuesItsCallersTrace) {
  auto seen_at_b = std::make_shared<Seen>();
  start([&](Server::Builder& b) { b.layer(capture(seen_at_b)); });
  auto a_client_spans = std::make_shared<InMemoryExporter>();
  // A has no server tracing layer, only a traced channel to B.
  RelayImpl relay(channel_.with_layer(TracingLayer(a_client_spans)));
  auto a = start_other(relay, {});
  ASSERT_NE(a, nullptr);
  auto r = run(EchoClient(Channel::insecure("127.0.0.1:" + std::to_string(a->port())))
                   .Echo(with_message("x"), CallOptions()
                                                .set_timeout(30s)
                                                .add_metadata("traceparent", kTraceparent)
                                                .add_metadata("tracestate", "k=v")));
  ASSERT_TRUE(r.ok()) << r.status();
  Span a_client = only_span(*a_client_spans);
  EXPECT_EQ(a_client.context.trace_id.hex(), kTraceId);
  EXPECT_EQ(a_client.parent_span_id.hex(), kSpanId);
  EXPECT_EQ(seen_at_b->traceparents(),
            std::vector<std::string>{format_traceparent(a_client.context)});
  EXPECT_EQ(seen_at_b->tracestates(), std::vector<std::string>{"k=v"});
  a->shutdown(kShutdownGrace);
}

// ------------------------------------------------------------------ OTLP/JSON lines

// A span with every field set, for the encoding tests.
Span full_server_span() {
  Span span;
  span.name = "helloworld.Greeter/SayHello";
  span.kind = SpanKind::kServer;
  span.context = *parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01");
  span.context.tracestate = "congo=t61rcWkgMzE";
  span.parent_span_id = *SpanId::from_hex(kSpanId);
  span.start_time = std::chrono::system_clock::time_point(1'700'000'000'000'000'000ns);
  span.end_time = span.start_time + 120us;
  span.status_code = StatusCode::kInvalidArgument;
  span.status_message = "not a server error: no description";
  span.peer = "ipv6:[::1]:51234";
  span.service_name = "greeter";
  return span;
}

TEST_F(TracingTest, SpanToOtlpJsonWritesOneExportTraceServiceRequest) {
  const std::string scope =
      R"("scope":{"name":"trellis","version":")" TRELLIS_VERSION_STRING R"("})";
  EXPECT_EQ(span_to_otlp_json(full_server_span()),
            R"({"resourceSpans":[{"resource":{"attributes":[)"
            R"({"key":"service.name","value":{"stringValue":"greeter"}}]},)"
            R"("scopeSpans":[{)" +
                scope +
                R"(,"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736",)"
                R"("spanId":"53995c3f42cd8ad8","traceState":"congo=t61rcWkgMzE",)"
                R"("parentSpanId":"00f067aa0ba902b7","flags":1,)"
                R"("name":"helloworld.Greeter/SayHello","kind":2,)"
                R"("startTimeUnixNano":"1700000000000000000",)"
                R"("endTimeUnixNano":"1700000000000120000","attributes":[)"
                R"({"key":"rpc.system","value":{"stringValue":"grpc"}},)"
                R"({"key":"rpc.service","value":{"stringValue":"helloworld.Greeter"}},)"
                R"({"key":"rpc.method","value":{"stringValue":"SayHello"}},)"
                R"({"key":"rpc.grpc.status_code","value":{"intValue":"3"}},)"
                R"({"key":"network.transport","value":{"stringValue":"tcp"}},)"
                R"({"key":"network.type","value":{"stringValue":"ipv6"}},)"
                R"({"key":"network.peer.address","value":{"stringValue":"::1"}},)"
                R"({"key":"network.peer.port","value":{"intValue":"51234"}}],)"
                R"("status":{}}]}]}]})");

  // A client root span of an unsampled trace that failed, over a Unix socket, with no service
  // name: no parentSpanId, traceState, flags or resource attributes; server.address; an error
  // status with its description.
  Span client;
  client.name = "p.S/M";
  client.kind = SpanKind::kClient;
  client.context = *parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
  client.start_time = std::chrono::system_clock::time_point(1'700'000'000'000'000'001ns);
  client.end_time = client.start_time;
  client.status_code = StatusCode::kNotFound;
  client.status_message = "no such thing";
  client.peer = "unix:/run/greeter.sock";
  EXPECT_EQ(span_to_otlp_json(client),
            R"({"resourceSpans":[{"resource":{},"scopeSpans":[{)" + scope +
                R"(,"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c",)"
                R"("spanId":"b7ad6b7169203331","name":"p.S/M","kind":3,)"
                R"("startTimeUnixNano":"1700000000000000001",)"
                R"("endTimeUnixNano":"1700000000000000001","attributes":[)"
                R"({"key":"rpc.system","value":{"stringValue":"grpc"}},)"
                R"({"key":"rpc.service","value":{"stringValue":"p.S"}},)"
                R"({"key":"rpc.method","value":{"stringValue":"M"}},)"
                R"({"key":"rpc.grpc.status_code","value":{"intValue":"5"}},)"
                R"({"key":"network.transport","value":{"stringValue":"unix"}},)"
                R"({"key":"network.peer.address","value":{"stringValue":"/run/greeter.sock"}},)"
                R"({"key":"server.address","value":{"stringValue":"/run/greeter.sock"}}],)"
                R"("status":{"message":"no such thing","code":2}}]}]}]})");
}

// One span of an OTLP/JSON line, with the resource and scope it came under.
struct OtlpSpan {
  std::string service_name;  // "" when the resource has no attributes
  boost::json::object span;
};

bool is_lower_hex(const boost::json::value& v, std::size_t digits) {
  if (!v.is_string() || v.as_string().size() != digits) return false;
  for (char c : v.as_string()) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The value of a protobuf-JSON 64-bit integer: a string of decimal digits; -1 if it is not one.
std::int64_t int64_string(const boost::json::value& v) {
  if (!v.is_string() || v.as_string().empty() || v.as_string().size() > 19) return -1;
  std::int64_t n = 0;
  for (char c : v.as_string()) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

std::set<std::string> keys_of(const boost::json::object& o) {
  std::set<std::string> keys;
  for (const auto& kv : o) keys.emplace(kv.key());
  return keys;
}

// Parses `text` as OTLP/JSON lines (Boost.JSON: strict RFC 8259, rejects invalid UTF-8) and
// checks every line is one ExportTraceServiceRequest in OTLP's JSON encoding: only the fields of
// the protocol, lowerCamelCase, ids as lower-case hex of the right length, enums as integers,
// 64-bit integers as decimal strings, attribute values as AnyValue objects. Returns the spans in
// the order of the file.
std::vector<OtlpSpan> parse_otlp_lines(const std::string& text) {
  std::vector<OtlpSpan> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    boost::json::error_code ec;
    boost::json::value request = boost::json::parse(line, ec);
    EXPECT_FALSE(ec) << ec.message() << ": " << line;
    if (ec) continue;
    EXPECT_EQ(keys_of(request.as_object()), std::set<std::string>{"resourceSpans"}) << line;
    for (const auto& resource_spans : request.at("resourceSpans").as_array()) {
      const auto& rs = resource_spans.as_object();
      EXPECT_EQ(keys_of(rs), (std::set<std::string>{"resource", "scopeSpans"})) << line;
      std::string service_name;
      const auto& resource = rs.at("resource").as_object();
      if (!resource.empty()) {
        EXPECT_EQ(keys_of(resource), std::set<std::string>{"attributes"});
        const auto& attrs = resource.at("attributes").as_array();
        EXPECT_EQ(attrs.size(), 1u) << line;
        EXPECT_EQ(attrs.at(0).at("key").as_string(), "service.name");
        service_name = attrs.at(0).at("value").at("stringValue").as_string();
      }
      const auto& scope_spans = rs.at("scopeSpans").as_array();
      EXPECT_EQ(scope_spans.size(), 1u) << line;
      for (const auto& ss : scope_spans) {
        EXPECT_EQ(keys_of(ss.as_object()), (std::set<std::string>{"scope", "spans"}));
        EXPECT_EQ(ss.at("scope").at("name").as_string(), "trellis");
        EXPECT_EQ(ss.at("scope").at("version").as_string(), TRELLIS_VERSION_STRING);
        EXPECT_FALSE(ss.at("spans").as_array().empty()) << line;
        for (const auto& span_value : ss.at("spans").as_array()) {
          const auto& span = span_value.as_object();
          const std::set<std::string> allowed = {
              "traceId", "spanId", "traceState", "parentSpanId",      "flags",          "name",
              "kind",    "status", "attributes", "startTimeUnixNano", "endTimeUnixNano"};
          for (const std::string& key : keys_of(span)) {
            EXPECT_TRUE(allowed.contains(key)) << "field " << key << " in " << line;
          }
          EXPECT_TRUE(is_lower_hex(span.at("traceId"), 32)) << line;
          EXPECT_TRUE(is_lower_hex(span.at("spanId"), 16)) << line;
          if (span.contains("parentSpanId")) {
            EXPECT_TRUE(is_lower_hex(span.at("parentSpanId"), 16)) << line;
          }
          if (span.contains("traceState")) {
            EXPECT_TRUE(span.at("traceState").is_string());
          }
          if (span.contains("flags")) {
            EXPECT_TRUE(span.at("flags").is_int64());
          }
          EXPECT_TRUE(span.at("name").is_string());
          EXPECT_TRUE(span.at("kind").is_int64()) << "kind must be an integer: " << line;
          std::int64_t start = int64_string(span.at("startTimeUnixNano"));
          std::int64_t end = int64_string(span.at("endTimeUnixNano"));
          EXPECT_GT(start, 1'600'000'000'000'000'000) << line;
          EXPECT_LE(start, end) << line;
          for (const auto& a : span.at("attributes").as_array()) {
            EXPECT_EQ(keys_of(a.as_object()), (std::set<std::string>{"key", "value"})) << line;
            const auto& value = a.at("value").as_object();
            EXPECT_EQ(value.size(), 1u) << line;
            if (value.contains("intValue")) {
              EXPECT_GE(int64_string(value.at("intValue")), 0) << line;
            } else {
              EXPECT_TRUE(value.at("stringValue").is_string()) << line;
            }
          }
          const auto& status = span.at("status").as_object();
          for (const std::string& key : keys_of(status)) {
            EXPECT_TRUE(key == "code" || key == "message") << line;
          }
          if (status.contains("code")) {
            EXPECT_TRUE(status.at("code").is_int64()) << line;
          }
          out.push_back({service_name, span});
        }
      }
    }
  }
  return out;
}

// The attributes of an OTLP/JSON span as "key=value" strings, ints as "key=int:N".
std::vector<std::string> otlp_attributes(const boost::json::object& span) {
  std::vector<std::string> out;
  for (const auto& a : span.at("attributes").as_array()) {
    const auto& value = a.at("value").as_object();
    std::string key(a.at("key").as_string());
    if (value.contains("intValue")) {
      out.push_back(key + "=int:" + std::string(value.at("intValue").as_string()));
    } else {
      out.push_back(key + "=" + std::string(value.at("stringValue").as_string()));
    }
  }
  return out;
}

TEST_F(TracingTest, ExportedLinesAreOtlpJsonForServerAndClientSpans) {
  std::ostringstream server_out;
  std::ostringstream client_out;
  auto server_exporter = std::make_shared<OtlpJsonFileExporter>(server_out);
  auto client_exporter = std::make_shared<OtlpJsonFileExporter>(client_out);
  start([&](Server::Builder& b) {
    b.layer(TracingLayer(server_exporter, {.service_name = "svc \"quoted\""}));
  });
  EchoClient traced(channel_.with_layer(TracingLayer(client_exporter, {.service_name = "caller"})));
  const std::string port = std::to_string(server_->port());

  // 1. A traced client's root span, and the server's span, its child.
  auto r = run(traced.Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  // 2. An untraced caller's traceparent: the server span is its child, and fails UNAVAILABLE with
  // a description that needs escaping (quotes, a newline, a tab, a backslash, a control
  // character, UTF-8; the request's proto3 string must be valid UTF-8: invalid bytes are in
  // SpanToOtlpJsonEscapesControlCharactersAndInvalidUtf8).
  const std::string message = "bad \"input\"\nline two\ttab\\ \x01 caf\xc3\xa9 end";
  EchoRequest unavailable;
  unavailable.set_status_code(static_cast<int>(StatusCode::kUnavailable));
  unavailable.set_status_message(message);
  EXPECT_EQ(run(EchoClient(channel_).Echo(unavailable,
                                          CallOptions()
                                              .set_timeout(30s)
                                              .add_metadata("traceparent", kTraceparent)
                                              .add_metadata("tracestate", "congo=t61rcWkgMzE")))
                .status()
                .code(),
            StatusCode::kUnavailable);
  // 3. NOT_FOUND: an error for the client span only.
  EchoRequest not_found;
  not_found.set_status_code(static_cast<int>(StatusCode::kNotFound));
  not_found.set_status_message("no such thing");
  EXPECT_EQ(run(traced.Echo(not_found, CallOptions().set_timeout(30s))).status().code(),
            StatusCode::kNotFound);
  server_exporter->flush();
  client_exporter->flush();

  std::vector<OtlpSpan> server_spans = parse_otlp_lines(server_out.str());
  std::vector<OtlpSpan> client_spans = parse_otlp_lines(client_out.str());
  ASSERT_EQ(server_spans.size(), 3u) << server_out.str();
  ASSERT_EQ(client_spans.size(), 2u) << client_out.str();
  for (const OtlpSpan& s : server_spans) {
    EXPECT_EQ(s.service_name, "svc \"quoted\"");
    EXPECT_EQ(s.span.at("kind").as_int64(), 2);  // SPAN_KIND_SERVER
    EXPECT_EQ(s.span.at("name").as_string(), "trellis.testing.Echo/Echo");
    EXPECT_EQ(s.span.at("flags").as_int64(), 1);  // sampled
  }
  for (const OtlpSpan& s : client_spans) {
    EXPECT_EQ(s.service_name, "caller");
    EXPECT_EQ(s.span.at("kind").as_int64(), 3);  // SPAN_KIND_CLIENT
  }

  // 1: the client's root span and the server's child span.
  const boost::json::object& root = client_spans[0].span;
  const boost::json::object& child = server_spans[0].span;
  EXPECT_FALSE(root.contains("parentSpanId"));  // a root: the empty id is left out
  EXPECT_FALSE(root.contains("traceState"));    // none
  EXPECT_EQ(child.at("traceId"), root.at("traceId"));
  EXPECT_EQ(child.at("parentSpanId"), root.at("spanId"));
  EXPECT_NE(child.at("spanId"), root.at("spanId"));
  EXPECT_TRUE(root.at("status").as_object().empty());  // UNSET
  EXPECT_TRUE(child.at("status").as_object().empty());
  EXPECT_EQ(otlp_attributes(root),
            (std::vector<std::string>{
                "rpc.system=grpc", "rpc.service=trellis.testing.Echo", "rpc.method=Echo",
                "rpc.grpc.status_code=int:0", "network.transport=tcp", "network.type=ipv4",
                "network.peer.address=127.0.0.1", "network.peer.port=int:" + port,
                "server.address=127.0.0.1", "server.port=int:" + port}));
  std::vector<std::string> child_attributes = otlp_attributes(child);
  ASSERT_EQ(child_attributes.size(), 8u);
  EXPECT_EQ(std::vector<std::string>(child_attributes.begin(), child_attributes.begin() + 7),
            (std::vector<std::string>{"rpc.system=grpc", "rpc.service=trellis.testing.Echo",
                                      "rpc.method=Echo", "rpc.grpc.status_code=int:0",
                                      "network.transport=tcp", "network.type=ipv4",
                                      "network.peer.address=127.0.0.1"}));
  EXPECT_TRUE(child_attributes[7].starts_with("network.peer.port=int:")) << child_attributes[7];

  // 2: a child of the incoming traceparent, with its tracestate; an error with its description.
  const boost::json::object& failed = server_spans[1].span;
  EXPECT_EQ(failed.at("traceId").as_string(), kTraceId);
  EXPECT_EQ(failed.at("parentSpanId").as_string(), kSpanId);
  EXPECT_EQ(failed.at("traceState").as_string(), "congo=t61rcWkgMzE");
  EXPECT_EQ(failed.at("status").at("code").as_int64(), 2);            // STATUS_CODE_ERROR
  EXPECT_EQ(failed.at("status").at("message").as_string(), message);  // byte for byte
  EXPECT_EQ(otlp_attributes(failed)[3], "rpc.grpc.status_code=int:14");

  // 3: NOT_FOUND fails the client span; the server span stays UNSET, without a description.
  EXPECT_EQ(client_spans[1].span.at("status").at("code").as_int64(), 2);
  EXPECT_EQ(client_spans[1].span.at("status").at("message").as_string(), "no such thing");
  EXPECT_TRUE(server_spans[2].span.at("status").as_object().empty());
  EXPECT_EQ(otlp_attributes(server_spans[2].span)[3], "rpc.grpc.status_code=int:5");
  EXPECT_EQ(server_spans[2].span.at("parentSpanId"), client_spans[1].span.at("spanId"));

  EXPECT_EQ(server_exporter->dropped(), 0u);
  EXPECT_EQ(client_exporter->dropped(), 0u);
}

TEST_F(TracingTest, SpanToOtlpJsonEscapesControlCharactersAndInvalidUtf8) {
  Span span;
  span.name = "p.S/M";
  span.kind = SpanKind::kClient;  // every code but OK is an error: the message is kept
  span.status_code = StatusCode::kInternal;
  span.context = *parse_traceparent(kTraceparent);
  span.start_time = std::chrono::system_clock::now();
  span.end_time = span.start_time;
  std::string message;
  for (int c = 0; c < 0x20; ++c) message.push_back(static_cast<char>(c));
  message += "\"\\/\x7f";
  message += "\xe2\x82\xac";      // U+20AC, valid
  message += "\xc0\xaf";          // overlong '/': invalid
  message += "\xed\xa0\x80";      // a surrogate: invalid
  message += "\xf4\x90\x80\x80";  // above U+10FFFF: invalid
  message += "\xe2\x82";          // truncated
  span.status_message = message;
  span.service_name = "caf\xc3\xa9 \xff";
  std::string json = span_to_otlp_json(span);
  for (char c : json) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << json;
  std::vector<OtlpSpan> spans = parse_otlp_lines(json);
  ASSERT_EQ(spans.size(), 1u);
  std::string expected = message.substr(0, 0x20 + 4) + "\xe2\x82\xac";
  // Every byte of each invalid sequence becomes one U+FFFD.
  for (int i = 0; i < 2 + 3 + 4 + 2; ++i) expected += "\xef\xbf\xbd";
  EXPECT_EQ(spans[0].span.at("status").at("message").as_string(), expected);
  EXPECT_EQ(spans[0].service_name, "caf\xc3\xa9 \xef\xbf\xbd");
  EXPECT_EQ(otlp_attributes(spans[0].span).size(), 4u);  // no peer: no network attributes
}

TEST_F(TracingTest, DefaultServiceNameIsUnknownServiceAndTheProgramName) {
  auto spans = std::make_shared<InMemoryExporter>();
  start([&](Server::Builder& b) { b.layer(TracingLayer(spans)); });
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  EXPECT_EQ(only_span(*spans).service_name, "unknown_service:trellis_middleware_tests");
}

TEST_F(TracingTest, OtlpJsonFileExporterAppendsToAFile) {
  std::string path =
      ::testing::TempDir() + "/trellis_tracing_test_" + std::to_string(::getpid()) + ".jsonl";
  std::remove(path.c_str());
  Span span = full_server_span();
  for (int round = 0; round < 2; ++round) {  // the second exporter appends
    auto exporter = OtlpJsonFileExporter::open(path);
    ASSERT_TRUE(exporter.ok()) << exporter.status();
    (*exporter)->export_span(span);
  }  // the destructor writes what is buffered
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, span_to_otlp_json(span) + "\n" + span_to_otlp_json(span) + "\n");
  std::remove(path.c_str());

  auto missing = OtlpJsonFileExporter::open("/nonexistent-directory-for-trellis/spans.jsonl");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status();
}

// A stream buffer whose first write blocks until release(): it holds the exporter's writer while
// the test exports more spans, so that they are taken together. Every wait is bounded.
class BlockingBuffer final : public std::streambuf {
 public:
  // Waits until the writer is blocked in its first write; false after 30 s.
  bool wait_until_blocked() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return blocked_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::string text() {
    std::lock_guard lock(mu_);
    return text_;
  }

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::unique_lock lock(mu_);
    blocked_ = true;
    cv_.notify_all();
    if (!cv_.wait_for(lock, 30s, [&] { return released_; })) return 0;  // fails the write
    text_.append(s, static_cast<std::size_t>(n));
    return n;
  }
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    char ch = traits_type::to_char_type(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool blocked_ = false;
  bool released_ = false;
  std::string text_;
};

// Exports span "a1" alone, then, while the writer is busy with it, "a2", "a3" (service "a") and
// "b1" (service "b"), which the writer then takes together. Returns the lines written.
std::vector<std::string> export_while_the_writer_is_busy(OtlpJsonFileExporter::Options options) {
  BlockingBuffer buffer;
  std::ostream out(&buffer);
  OtlpJsonFileExporter exporter(out, options);
  Span span = full_server_span();
  span.service_name = "a";
  span.name = "p.S/a1";
  exporter.export_span(span);
  EXPECT_TRUE(buffer.wait_until_blocked());
  for (const char* name : {"p.S/a2", "p.S/a3"}) {
    span.name = name;
    exporter.export_span(span);
  }
  span.service_name = "b";
  span.name = "p.S/b1";
  exporter.export_span(span);
  buffer.release();
  exporter.flush();
  EXPECT_EQ(exporter.dropped(), 0u);
  std::vector<std::string> lines;
  std::istringstream in(buffer.text());
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// "service: span names" for each resource of an OTLP/JSON line, e.g. "a: a2 a3".
std::vector<std::string> line_summary(const std::string& line) {
  std::vector<std::string> out;
  boost::json::value request = boost::json::parse(line);
  for (const auto& rs : request.at("resourceSpans").as_array()) {
    std::string s(
        rs.at("resource").at("attributes").at(0).at("value").at("stringValue").as_string());
    s += ":";
    for (const auto& span : rs.at("scopeSpans").at(0).at("spans").as_array()) {
      s += " " + std::string(span.at("name").as_string()).substr(4);
    }
    out.push_back(s);
  }
  return out;
}

TEST_F(TracingTest, OtlpJsonFileExporterWritesSpansTakenTogetherAsOneRequest) {
  std::vector<std::string> lines = export_while_the_writer_is_busy({});
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(parse_otlp_lines(lines[0] + "\n" + lines[1]).size(), 4u);  // the checks of the format
  EXPECT_EQ(line_summary(lines[0]), std::vector<std::string>{"a: a1"});
  EXPECT_EQ(line_summary(lines[1]), (std::vector<std::string>{"a: a2 a3", "b: b1"}));
}

TEST_F(TracingTest, OtlpJsonFileExporterStartsANewLineBeforeMaxLineBytes) {
  // Room for one span per line only: a line still holds one span however long it is.
  std::vector<std::string> lines = export_while_the_writer_is_busy({.max_line_bytes = 1});
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(line_summary(lines[1]), std::vector<std::string>{"a: a2"});
  EXPECT_EQ(line_summary(lines[2]), std::vector<std::string>{"a: a3"});
  EXPECT_EQ(line_summary(lines[3]), std::vector<std::string>{"b: b1"});

  // Room for exactly the two spans of "a": "b1" goes on a line of its own.
  std::vector<std::string> together = export_while_the_writer_is_busy({});
  ASSERT_EQ(together.size(), 2u);
  std::string two_spans = together[1].substr(0, together[1].find(R"(]}]},{"resource")")) + "]}]}]}";
  EXPECT_EQ(line_summary(two_spans), std::vector<std::string>{"a: a2 a3"});
  lines = export_while_the_writer_is_busy({.max_line_bytes = two_spans.size() + 1});
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1], two_spans);
  EXPECT_EQ(line_summary(lines[2]), std::vector<std::string>{"b: b1"});
}

TEST_F(TracingTest, OtlpJsonFileExporterDropsWhatDoesNotFitItsBuffer) {
  std::ostringstream out;
  Span span = full_server_span();
  {
    // A buffer smaller than one span: every span is dropped, none is written.
    OtlpJsonFileExporter exporter(out, {.max_buffered_bytes = 16});
    exporter.export_span(span);
    exporter.export_span(span);
    exporter.flush();
    EXPECT_EQ(exporter.dropped(), 2u);
  }
  EXPECT_EQ(out.str(), "");
}

// A stream buffer that fails every write (a full disk).
class FailingBuffer final : public std::streambuf {
 protected:
  std::streamsize xsputn(const char*, std::streamsize) override { return 0; }
  int_type overflow(int_type) override { return traits_type::eof(); }
};

TEST_F(TracingTest, OtlpJsonFileExporterCountsSpansTheStreamFailedToWrite) {
  FailingBuffer buffer;
  std::ostream out(&buffer);
  OtlpJsonFileExporter exporter(out);
  Span span = full_server_span();
  exporter.export_span(span);
  exporter.flush();
  EXPECT_EQ(exporter.dropped(), 1u);
  // The exporter clears the stream's error and goes on: each span lost is counted once.
  exporter.export_span(span);
  exporter.export_span(span);
  exporter.flush();
  EXPECT_EQ(exporter.dropped(), 3u);
}

TEST_F(TracingTest, InMemoryExporterKeepsAndClears) {
  InMemoryExporter exporter;
  Span span;
  span.name = "p.S/M";
  exporter.export_span(span);
  ASSERT_EQ(exporter.spans().size(), 1u);
  EXPECT_EQ(exporter.spans()[0].name, "p.S/M");
  exporter.clear();
  EXPECT_TRUE(exporter.spans().empty());
  NoopExporter noop;
  noop.export_span(span);  // accepts and drops
}

}  // namespace
}  // namespace trellis::testing
