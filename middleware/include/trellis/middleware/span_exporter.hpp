// trellis::SpanExporter: where finished spans go. Stock exporters: OTLP/JSON lines (a file or
// stderr, for an OpenTelemetry Collector), in memory (tests), no-op (benchmarks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "trellis/middleware/span.hpp"
#include "trellis/result.hpp"

namespace trellis {

// Receives every span the tracing layer records (sampled spans only, see TracingOptions).
//
// Thread-safety contract: export_span() is called on the runtime worker that finished the call,
// concurrently from every worker, so it must be thread-safe. It runs on the call's path before
// the call's status is sent (a server span is exported before the client can see the response),
// so it must be quick and must not block: no I/O, no waiting on a lock held for long. Hand
// anything slow to a thread of your own, as OtlpJsonFileExporter does. The Span is only lent for
// the duration of the call; copy what you keep.
class SpanExporter {
 public:
  virtual ~SpanExporter() = default;

  virtual void export_span(const Span& span) = 0;

  // Makes every span exported so far visible at its destination (written, sent). May block: call
  // it from a thread of your own or at shutdown, never on a runtime worker. Default: nothing to do.
  virtual void flush() {}
};

// Drops every span. For measuring what tracing costs without an exporter's own cost.
class NoopExporter final : public SpanExporter {
 public:
  void export_span(const Span&) override {}
};

// Keeps every span in memory, in export order. For tests.
class InMemoryExporter final : public SpanExporter {
 public:
  void export_span(const Span& span) override;

  // A copy of the spans exported so far.
  std::vector<Span> spans() const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::vector<Span> spans_;
};

// The OTLP/JSON line OtlpJsonFileExporter writes for `span` alone (without the newline): one
// `ExportTraceServiceRequest` of the OpenTelemetry protocol (opentelemetry-proto
// collector/trace/v1), in OTLP's JSON encoding, which is what the OpenTelemetry Collector's
// `otlpjsonfile` receiver reads, one request per line. Shown here on several lines:
//
//   {"resourceSpans":[{"resource":{"attributes":[
//      {"key":"service.name","value":{"stringValue":"greeter"}}]},
//    "scopeSpans":[{"scope":{"name":"trellis","version":"0.1.0"},"spans":[
//     {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"53995c3f42cd8ad8",
//      "traceState":"congo=t61rcWkgMzE","parentSpanId":"00f067aa0ba902b7","flags":1,
//      "name":"helloworld.Greeter/SayHello","kind":2,
//      "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000120000",
//      "attributes":[{"key":"rpc.system","value":{"stringValue":"grpc"}},
//       {"key":"rpc.service","value":{"stringValue":"helloworld.Greeter"}},
//       {"key":"rpc.method","value":{"stringValue":"SayHello"}},
//       {"key":"rpc.grpc.status_code","value":{"intValue":"0"}},
//       {"key":"network.transport","value":{"stringValue":"tcp"}},
//       {"key":"network.type","value":{"stringValue":"ipv4"}},
//       {"key":"network.peer.address","value":{"stringValue":"127.0.0.1"}},
//       {"key":"network.peer.port","value":{"intValue":"51234"}}],
//      "status":{}}]}]}]}
//
// The encoding follows the OTLP specification's "JSON Protobuf Encoding": the protobuf JSON
// mapping with lowerCamelCase keys, except that traceId, spanId and parentSpanId are hex (here
// always lower case: 32, 16 and 16 digits), not base64, and enums are integers: kind 2 is
// SPAN_KIND_SERVER, 3 SPAN_KIND_CLIENT; status code 2 is STATUS_CODE_ERROR (Span::is_error()),
// and an unset status is "status":{} (this layer never sets OK, as OpenTelemetry asks of
// instrumentation). 64-bit integers (the times, in nanoseconds since the Unix epoch, and every
// intValue) are decimal strings. flags carries the W3C trace flags (1: sampled). Fields at their
// default are left out, as the protobuf JSON mapping does: parentSpanId of a root span,
// traceState when there is none, flags 0, the resource's attributes when service_name is empty,
// and the status message unless the status is an error (OpenTelemetry only keeps a description
// for errors). Attributes are Span::attributes(), each value a {"stringValue":...} or
// {"intValue":"..."} AnyValue.
//
// Strings are escaped per RFC 8259 (quotes, backslashes, control characters); bytes that are not
// valid UTF-8 (a status message may hold any bytes) become U+FFFD, so every line is valid JSON
// and every string valid UTF-8, as protobuf strings must be.
std::string span_to_otlp_json(const Span& span);

// Writes spans as OTLP/JSON lines (span_to_otlp_json's format) to a stream or a file: the
// OpenTelemetry "OTLP File Exporter" serialization, a JSON lines file with one
// `ExportTraceServiceRequest` per line, that the Collector's `otlpjsonfile` receiver reads. A
// Collector (contrib distribution) configured with
//
//   receivers:
//     otlpjsonfile:
//       include: ["/var/log/greeter/spans.jsonl"]  # the path given to open()
//       start_at: beginning                         # the default, end, skips existing lines
//   service:
//     pipelines:
//       traces: {receivers: [otlpjsonfile], exporters: [otlp]}
//
// takes every span written there on to its `otlp` exporter (docs/middleware.md, "OTLP/JSON
// lines for an OpenTelemetry Collector").
//
// export_span() does not write: it encodes the span on the calling worker and appends it to a
// buffer under a mutex held only for the append; a writer thread of the exporter's own takes the
// whole buffer at once, writes it to the stream and flushes the stream, so no runtime worker ever
// blocks on the file. Each line is one request holding the spans the writer took together (at
// least one), grouped under one resource per service name, up to Options::max_line_bytes; so a
// busy process writes few lines of many spans, and an idle one a line per span. When the writer
// falls behind by more than Options::max_buffered_bytes, new spans are dropped (and counted in
// dropped()) rather than letting memory grow or calls wait.
class OtlpJsonFileExporter final : public SpanExporter {
 public:
  struct Options {
    // The encoded spans waiting for the writer, at most.
    std::size_t max_buffered_bytes = std::size_t{16} << 20;
    // The length of a line (one request) the writer starts another line before exceeding, unless
    // the line holds a single span. The Collector's file reader takes lines of up to 1 MiB by
    // default (its max_log_size), and cuts longer ones.
    std::size_t max_line_bytes = std::size_t{256} << 10;
  };

  // Writes to `out` (std::cerr, std::clog, a std::ostringstream...), which must outlive the
  // exporter. Only the exporter's thread writes to `out` while the exporter lives.
  explicit OtlpJsonFileExporter(std::ostream& out);
  OtlpJsonFileExporter(std::ostream& out, Options options);
  // Appends to the file at `path`, creating it if needed; an error status if it cannot be opened.
  static Result<std::shared_ptr<OtlpJsonFileExporter>> open(const std::string& path);
  static Result<std::shared_ptr<OtlpJsonFileExporter>> open(const std::string& path,
                                                            Options options);
  // Writes to stderr.
  static std::shared_ptr<OtlpJsonFileExporter> to_stderr();

  // Writes what is still buffered, then stops the writer thread.
  ~OtlpJsonFileExporter() override;
  OtlpJsonFileExporter(const OtlpJsonFileExporter&) = delete;
  OtlpJsonFileExporter& operator=(const OtlpJsonFileExporter&) = delete;

  void export_span(const Span& span) override;
  // Blocks until every span exported before the call is written and the stream flushed.
  void flush() override;

  // Spans lost: dropped because the buffer was full, or written to a stream that failed (the
  // exporter clears the stream's error state and goes on with the next spans).
  std::uint64_t dropped() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis
