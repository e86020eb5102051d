// trellis::Span: the record of one traced call, as the tracing layer hands it to an exporter.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "trellis/middleware/trace_context.hpp"
#include "trellis/status.hpp"

namespace trellis {

// Which end of the call the span describes (OpenTelemetry's SpanKind SERVER and CLIENT).
enum class SpanKind { kServer, kClient };

// One span attribute, named after the OpenTelemetry semantic conventions.
struct SpanAttribute {
  using Value = std::variant<std::string, std::int64_t>;
  std::string_view key;  // a string literal
  Value value;

  friend bool operator==(const SpanAttribute&, const SpanAttribute&) = default;
};

// A finished span: one RPC on one side. Plain data: exporters copy what they keep.
struct Span {
  // "package.Service/Method" (the OpenTelemetry RPC span name: the path without its leading '/').
  std::string name;
  SpanKind kind = SpanKind::kServer;
  // The span's own context: its trace id, its span id (the one sent downstream in
  // `traceparent`), the trace flags and the tracestate it carries.
  TraceContext context;
  // The span this one is a child of; invalid (all zero) for the root of a trace.
  SpanId parent_span_id;
  // Wall-clock times (the duration is their difference; the layer never lets end precede start).
  std::chrono::system_clock::time_point start_time;
  std::chrono::system_clock::time_point end_time;
  // The call's final gRPC status. A call whose service threw is recorded as INTERNAL (CANCELLED
  // if the server call had been cancelled), with the exception's message.
  StatusCode status_code = StatusCode::kOk;
  std::string status_message;
  // The peer as gRPC spells it ("ipv4:127.0.0.1:50051", "ipv6:[::1]:50051", "unix:/path"): the
  // client on a server span, the server on a client span; empty when unknown (a client call that
  // never reached a server).
  std::string peer;
  // The `service.name` resource of the process that recorded the span (TracingOptions).
  std::string service_name;

  bool is_root() const { return !parent_span_id.valid(); }
  // "package.Service" and "Method", the rpc.service and rpc.method attributes.
  std::string_view rpc_service() const;
  std::string_view rpc_method() const;
  // OpenTelemetry's span status for gRPC: a client span is an error for every code but OK; a
  // server span only for the codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
  // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), not for a client's mistake.
  bool is_error() const;

  // The span's attributes, after OpenTelemetry's semantic conventions for gRPC spans, in this
  // order: rpc.system ("grpc"), rpc.service, rpc.method, rpc.grpc.status_code (int); then, when
  // the peer is known: network.transport ("tcp" for IP peers, "unix"), network.type ("ipv4",
  // "ipv6"; IP peers only), network.peer.address, network.peer.port (int; IP peers only); and on
  // a client span, server.address and server.port, the same address and port: the conventions
  // want the server's host name there, "otherwise, IP address or Unix domain socket name", and a
  // layer only knows the address the call connected to (so behind a proxy they name the proxy).
  // The trace, span and parent ids, the status and the service name are not attributes.
  std::vector<SpanAttribute> attributes() const;
};

// A gRPC peer string split into the parts OpenTelemetry names.
struct PeerAddress {
  std::string transport;     // network.transport: "tcp" (ipv4, ipv6), "unix"; empty if unknown
  std::string network_type;  // network.type: "ipv4", "ipv6"; empty otherwise
  std::string address;       // "127.0.0.1", "::1", "/run/socket" (the whole string if unknown)
  int port = -1;             // -1 when there is none
};

// Parses "ipv4:127.0.0.1:50051", "ipv6:[::1]:50051" (also percent-encoded, as gRPC writes URIs)
// and "unix:/path"; anything else gives the whole string as the address.
PeerAddress parse_peer(std::string_view peer);

}  // namespace trellis
