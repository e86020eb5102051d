// trellis::SpanExporter: where finished spans go. Stock exporters: JSON lines (a file or stderr),
// in memory (tests), no-op (benchmarks).
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
// anything slow to a thread of your own, as JsonLinesExporter does. The Span is only lent for
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

// The JSON object that JsonLinesExporter writes for `span`, without a newline:
//
//   {"name":"helloworld.Greeter/SayHello","kind":"server",
//    "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",
//    "parent_span_id":"" (root) or 16 hex digits,"trace_flags":"01","tracestate":"",
//    "start_time_unix_nano":1700000000000000000,"end_time_unix_nano":1700000000000120000,
//    "status":{"code":"UNSET" or "ERROR","message":"..."},
//    "resource":{"service.name":"..."},
//    "attributes":{"rpc.system":"grpc","rpc.service":"helloworld.Greeter",
//                  "rpc.method":"SayHello","rpc.grpc.status_code":0,"network.type":"ipv4",
//                  "network.peer.address":"127.0.0.1","network.peer.port":51234}}
//
// Strings are escaped per RFC 8259 (quotes, backslashes, control characters); bytes that are not
// valid UTF-8 (a status message may hold any bytes) become U+FFFD, so every line is valid JSON.
std::string span_to_json(const Span& span);

// Writes each span as one line of JSON (span_to_json) to a stream or a file: the "JSON lines"
// format, one object per line, easy to tail, grep and load.
//
// export_span() does not write: it formats the line on the calling worker and appends it to a
// buffer under a mutex held only for the append; a writer thread of the exporter's own writes the
// buffer to the stream and flushes the stream, so no runtime worker ever blocks on the file.
// When the writer falls behind by more than Options::max_buffered_bytes, new spans are dropped
// (and counted in dropped()) rather than letting memory grow or calls wait.
class JsonLinesExporter final : public SpanExporter {
 public:
  struct Options {
    std::size_t max_buffered_bytes = std::size_t{16} << 20;
  };

  // Writes to `out` (std::cerr, std::clog, a std::ostringstream...), which must outlive the
  // exporter. Only the exporter's thread writes to `out` while the exporter lives.
  explicit JsonLinesExporter(std::ostream& out);
  JsonLinesExporter(std::ostream& out, Options options);
  // Appends to the file at `path`, creating it if needed; an error status if it cannot be opened.
  static Result<std::shared_ptr<JsonLinesExporter>> open(const std::string& path);
  static Result<std::shared_ptr<JsonLinesExporter>> open(const std::string& path, Options options);
  // Writes to stderr.
  static std::shared_ptr<JsonLinesExporter> to_stderr();

  // Writes what is still buffered, then stops the writer thread.
  ~JsonLinesExporter() override;
  JsonLinesExporter(const JsonLinesExporter&) = delete;
  JsonLinesExporter& operator=(const JsonLinesExporter&) = delete;

  void export_span(const Span& span) override;
  // Blocks until every span exported before the call is written and the stream flushed.
  void flush() override;

  // Spans dropped because the buffer was full.
  std::uint64_t dropped() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis
