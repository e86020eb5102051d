// The tracing layer: W3C trace context parsing, spans on both sides, propagation across hops,
// and the exporters, over real loopback calls.
#include "trellis/middleware/tracing.hpp"

#include <gtest/gtest.h>

// Boost.JSON, header-only, to check that exported lines parse back as JSON.
#include <boost/json/src.hpp>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
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
  // Captures the traceparent and tracestate the server receives (outermost server layer).
  struct Seen {
    std::mutex mu;
    std::vector<std::string> traceparents;
    std::vector<std::string> tracestates;
  };
  static auto capture(std::shared_ptr<Seen> seen) {
    return layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
      {
        std::lock_guard lock(seen->mu);
        for (auto v : call.request_metadata().get_all("traceparent"))
          seen->traceparents.emplace_back(v);
        for (auto v : call.request_metadata().get_all("tracestate"))
          seen->tracestates.emplace_back(v);
      }
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
  EXPECT_EQ(v4.network_type, "ipv4");
  EXPECT_EQ(v4.address, "127.0.0.1");
  EXPECT_EQ(v4.port, 50051);
  PeerAddress v6 = parse_peer("ipv6:[::1]:443");
  EXPECT_EQ(v6.network_type, "ipv6");
  EXPECT_EQ(v6.address, "::1");
  EXPECT_EQ(v6.port, 443);
  PeerAddress encoded = parse_peer("ipv6:%5B::1%5D:8080");
  EXPECT_EQ(encoded.address, "::1");
  EXPECT_EQ(encoded.port, 8080);
  PeerAddress unix_socket = parse_peer("unix:/run/app.sock");
  EXPECT_EQ(unix_socket.network_type, "unix");
  EXPECT_EQ(unix_socket.address, "/run/app.sock");
  EXPECT_EQ(unix_socket.port, -1);
  PeerAddress other = parse_peer("vsock:3:1234");
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
  EXPECT_EQ(string_attribute(span, "network.type"), "ipv4");
  EXPECT_EQ(string_attribute(span, "network.peer.address"), "127.0.0.1");
  EXPECT_GT(int_attribute(span, "network.peer.port"), 0);
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
  EXPECT_EQ(seen->traceparents, std::vector<std::string>{format_traceparent(caller.context)});
  EXPECT_TRUE(seen->tracestates.empty());  // none to carry
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
  EXPECT_EQ(seen->traceparents, std::vector<std::string>{kTraceparent});  // not doubled
  EXPECT_EQ(seen->tracestates, std::vector<std::string>{"a=1"});
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
  EXPECT_EQ(seen_at_b->traceparents,
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
  EXPECT_EQ(seen_at_b->tracestates, std::vector<std::string>{"congo=t61rcWkgMzE"});
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
  EXPECT_EQ(seen_at_b->traceparents,
            std::vector<std::string>{format_traceparent(a_client.context)});
  EXPECT_EQ(seen_at_b->tracestates, std::vector<std::string>{"k=v"});
  a->shutdown(kShutdownGrace);
}

// ------------------------------------------------------------------------- exporters

TEST_F(TracingTest, JsonLinesExporterOutputParsesBack) {
  std::ostringstream out;
  auto exporter = std::make_shared<JsonLinesExporter>(out);
  start([&](Server::Builder& b) {
    b.layer(TracingLayer(exporter, {.service_name = "svc \"quoted\""}));
  });
  // Quotes, a newline, a tab, a backslash, a control character and UTF-8 (the request's proto3
  // string must be valid UTF-8; invalid bytes are covered by
  // SpanToJsonEscapesEveryControlCharacter).
  const std::string message = "bad \"input\"\nline two\ttab\\ \x01 caf\xc3\xa9 end";
  EchoRequest req;
  req.set_status_code(static_cast<int>(StatusCode::kInvalidArgument));
  req.set_status_message(message);
  EchoClient client(channel_);
  auto r = run(
      client.Echo(req, CallOptions().set_timeout(30s).add_metadata("traceparent", kTraceparent)));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(run(client.Echo(with_message("ok"), CallOptions().set_timeout(30s))).ok());
  exporter->flush();

  std::vector<std::string> lines;
  std::istringstream in(out.str());
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u) << out.str();

  boost::json::error_code ec;
  boost::json::value first = boost::json::parse(lines[0], ec);
  ASSERT_FALSE(ec) << ec.message() << ": " << lines[0];
  const boost::json::object& o = first.as_object();
  EXPECT_EQ(o.at("name").as_string(), "trellis.testing.Echo/Echo");
  EXPECT_EQ(o.at("kind").as_string(), "server");
  EXPECT_EQ(o.at("trace_id").as_string(), kTraceId);
  EXPECT_EQ(o.at("parent_span_id").as_string(), kSpanId);
  EXPECT_EQ(o.at("span_id").as_string().size(), 16u);
  EXPECT_EQ(o.at("trace_flags").as_string(), "01");
  EXPECT_LE(o.at("start_time_unix_nano").as_int64(), o.at("end_time_unix_nano").as_int64());
  EXPECT_GT(o.at("start_time_unix_nano").as_int64(), 1'600'000'000'000'000'000);
  EXPECT_EQ(o.at("status").at("message").as_string(), message);  // byte for byte
  EXPECT_EQ(o.at("status").at("code").as_string(),
            "UNSET");  // INVALID_ARGUMENT: not a server error
  EXPECT_EQ(o.at("resource").at("service.name").as_string(), "svc \"quoted\"");
  const boost::json::object& attrs = o.at("attributes").as_object();
  EXPECT_EQ(attrs.at("rpc.system").as_string(), "grpc");
  EXPECT_EQ(attrs.at("rpc.service").as_string(), "trellis.testing.Echo");
  EXPECT_EQ(attrs.at("rpc.method").as_string(), "Echo");
  EXPECT_EQ(attrs.at("rpc.grpc.status_code").as_int64(), 3);
  EXPECT_EQ(attrs.at("network.peer.address").as_string(), "127.0.0.1");
  EXPECT_TRUE(attrs.at("network.peer.port").is_int64());

  boost::json::value second = boost::json::parse(lines[1], ec);
  ASSERT_FALSE(ec) << ec.message() << ": " << lines[1];
  EXPECT_EQ(second.at("parent_span_id").as_string(), "");  // a root span
  EXPECT_EQ(second.at("attributes").at("rpc.grpc.status_code").as_int64(), 0);
  EXPECT_EQ(exporter->dropped(), 0u);
}

TEST_F(TracingTest, SpanToJsonEscapesEveryControlCharacter) {
  Span span;
  span.name = "p.S/M";
  span.context = *parse_traceparent(kTraceparent);
  std::string message;
  for (int c = 0; c < 0x20; ++c) message.push_back(static_cast<char>(c));
  message += "\"\\/\x7f";
  message += "\xe2\x82\xac";      // U+20AC, valid
  message += "\xc0\xaf";          // overlong '/': invalid
  message += "\xed\xa0\x80";      // a surrogate: invalid
  message += "\xf4\x90\x80\x80";  // above U+10FFFF: invalid
  message += "\xe2\x82";          // truncated
  span.status_message = message;
  std::string json = span_to_json(span);
  for (char c : json) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << json;
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(json, ec);
  ASSERT_FALSE(ec) << ec.message() << ": " << json;
  std::string expected = message.substr(0, 0x20 + 4) + "\xe2\x82\xac";
  // Every byte of each invalid sequence becomes one U+FFFD.
  for (int i = 0; i < 2 + 3 + 4 + 2; ++i) expected += "\xef\xbf\xbd";
  EXPECT_EQ(v.at("status").at("message").as_string(), expected);
  EXPECT_EQ(v.at("kind").as_string(), "server");
  EXPECT_EQ(v.at("attributes").as_object().count("network.peer.address"), 0u);  // no peer
}

TEST_F(TracingTest, JsonLinesExporterWritesToAFile) {
  std::string path =
      ::testing::TempDir() + "/trellis_tracing_test_" + std::to_string(::getpid()) + ".jsonl";
  std::remove(path.c_str());
  Span span;
  span.name = "p.S/M";
  span.kind = SpanKind::kClient;
  span.context = *parse_traceparent(kTraceparent);
  {
    auto exporter = JsonLinesExporter::open(path);
    ASSERT_TRUE(exporter.ok()) << exporter.status();
    (*exporter)->export_span(span);
    (*exporter)->export_span(span);
  }  // the destructor writes what is buffered
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u);
  for (const std::string& line : lines) {
    boost::json::error_code ec;
    boost::json::value v = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << line;
    EXPECT_EQ(v.at("kind").as_string(), "client");
    EXPECT_EQ(v.at("status").at("code").as_string(), "UNSET");
  }
  std::remove(path.c_str());

  auto missing = JsonLinesExporter::open("/nonexistent-directory-for-trellis/spans.jsonl");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status();
}

TEST_F(TracingTest, JsonLinesExporterDropsWhatDoesNotFitItsBuffer) {
  std::ostringstream out;
  Span span;
  span.name = "p.S/M";
  span.context = *parse_traceparent(kTraceparent);
  {
    // A buffer smaller than one line: every span is dropped, none is written.
    JsonLinesExporter exporter(out, {.max_buffered_bytes = 16});
    exporter.export_span(span);
    exporter.export_span(span);
    exporter.flush();
    EXPECT_EQ(exporter.dropped(), 2u);
  }
  EXPECT_EQ(out.str(), "");
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
