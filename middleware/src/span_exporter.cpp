// Span exporters, and the OTLP/JSON encoding (ExportTraceServiceRequest) the file exporter writes.
#include "trellis/middleware/span_exporter.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"

#ifndef TRELLIS_VERSION_STRING
#error "the build defines TRELLIS_VERSION_STRING (middleware/CMakeLists.txt)"
#endif

namespace trellis {

// ----------------------------------------------------------------------------- OTLP/JSON

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// Appends `s` as a JSON string literal. Control characters are escaped; bytes that do not form
// valid UTF-8 become U+FFFD so that the output is always valid JSON text of valid UTF-8.
void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        default:
          if (c < 0x20) {
            out += "\\u00";
            out.push_back(kHexDigits[c >> 4]);
            out.push_back(kHexDigits[c & 0xf]);
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    // A multi-byte sequence: its length from the lead byte, then the RFC 3629 limits (no
    // overlong forms, no surrogates, nothing above U+10FFFF).
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    }
    bool valid = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; valid && k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) valid = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (valid) {
      valid = !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
              !(cp >= 0xd800 && cp <= 0xdfff);
    }
    if (valid) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out.push_back('"');
}

// OTLP/JSON writes trace and span ids in hex, not in the protobuf mapping's base64.
template <std::size_t N>
void append_hex_id(std::string& out, const TraceIdentifier<N>& id) {
  out.push_back('"');
  std::size_t at = out.size();
  out.resize(at + TraceIdentifier<N>::kHexSize);
  id.write_hex(out.data() + at);
  out.push_back('"');
}

// The protobuf JSON mapping writes 64-bit integers as decimal strings.
template <class Int>
void append_int64_string(std::string& out, Int value) {
  out.push_back('"');
  absl::StrAppend(&out, value);
  out.push_back('"');
}

// fixed64 nanoseconds since the Unix epoch (a clock set before 1970 gives 0).
std::uint64_t unix_nanos(std::chrono::system_clock::time_point t) {
  auto n = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return n < 0 ? 0 : static_cast<std::uint64_t>(n);
}

// opentelemetry.proto.trace.v1.Span.SpanKind.
int otlp_span_kind(SpanKind kind) { return kind == SpanKind::kServer ? 2 : 3; }

// opentelemetry.proto.trace.v1.Status.StatusCode.
constexpr int kStatusCodeError = 2;

void append_attribute(std::string& out, const SpanAttribute& attribute) {
  out += R"({"key":)";
  append_json_string(out, attribute.key);
  if (const auto* s = std::get_if<std::string>(&attribute.value)) {
    out += R"(,"value":{"stringValue":)";
    append_json_string(out, *s);
  } else {
    out += R"(,"value":{"intValue":)";
    append_int64_string(out, std::get<std::int64_t>(attribute.value));
  }
  out += "}}";
}

// One opentelemetry.proto.trace.v1.Span object.
void append_span_object(std::string& out, const Span& span) {
  out += R"({"traceId":)";
  append_hex_id(out, span.context.trace_id);
  out += R"(,"spanId":)";
  append_hex_id(out, span.context.span_id);
  if (!span.context.tracestate.empty()) {
    out += R"(,"traceState":)";
    append_json_string(out, span.context.tracestate);
  }
  if (!span.is_root()) {
    out += R"(,"parentSpanId":)";
    append_hex_id(out, span.parent_span_id);
  }
  if (span.context.flags != 0) absl::StrAppend(&out, R"(,"flags":)", unsigned{span.context.flags});
  out += R"(,"name":)";
  append_json_string(out, span.name);
  absl::StrAppend(&out, R"(,"kind":)", otlp_span_kind(span.kind));
  out += R"(,"startTimeUnixNano":)";
  append_int64_string(out, unix_nanos(span.start_time));
  out += R"(,"endTimeUnixNano":)";
  append_int64_string(out, unix_nanos(span.end_time));
  out += R"(,"attributes":[)";
  bool first = true;
  for (const SpanAttribute& a : span.attributes()) {
    if (!first) out.push_back(',');
    first = false;
    append_attribute(out, a);
  }
  out += R"(],"status":{)";
  if (span.is_error()) {
    if (!span.status_message.empty()) {
      out += R"("message":)";
      append_json_string(out, span.status_message);
      out.push_back(',');
    }
    absl::StrAppend(&out, R"("code":)", kStatusCodeError);
  }
  out += "}}";
}

// A request is `kRequestOpen`, then for each resource its opening (resource_open), its span
// objects separated by commas and kResourceClose, the resources separated by commas, then
// kRequestClose.
constexpr std::string_view kRequestOpen = R"({"resourceSpans":[)";
constexpr std::string_view kResourceClose = "]}]}";
constexpr std::string_view kRequestClose = "]}";

// A ResourceSpans up to its first span: the resource (service.name) and the one scope.
void append_resource_open(std::string& out, std::string_view service_name) {
  out += R"({"resource":{)";
  if (!service_name.empty()) {
    out += R"("attributes":[{"key":"service.name","value":{"stringValue":)";
    append_json_string(out, service_name);
    out += "}}]";
  }
  out += R"(},"scopeSpans":[{"scope":{"name":"trellis","version":")" TRELLIS_VERSION_STRING
         R"("},"spans":[)";
}

// Encoded spans waiting to be written: span objects back to back, and which resource (service
// name) each run of them belongs to.
struct SpanBatch {
  struct Resource {
    std::string service_name;
    std::size_t end_span;  // the spans since the previous resource's end_span, up to this one
  };
  std::string json;
  std::vector<std::size_t> span_ends;  // where each span object ends in `json`
  std::vector<Resource> resources;

  bool empty() const { return span_ends.empty(); }
  void clear() {
    json.clear();
    span_ends.clear();
    resources.clear();
  }
  void append(std::string_view span_json, std::string_view service_name) {
    if (resources.empty() || resources.back().service_name != service_name) {
      resources.push_back({std::string(service_name), 0});
    }
    json += span_json;
    span_ends.push_back(json.size());
    resources.back().end_span = span_ends.size();
  }
};

// Writes `batch` to `out` as newline-terminated requests of at most `max_line_bytes` each (a
// request with a single span may be longer).
void append_requests(std::string& out, const SpanBatch& batch, std::size_t max_line_bytes) {
  std::string resource_open;
  std::size_t line_start = 0;
  bool in_line = false;
  bool line_has_resource = false;
  bool in_resource = false;
  std::size_t span = 0;
  std::size_t span_begin = 0;
  auto close_line = [&] {
    if (in_resource) out += kResourceClose;
    out += kRequestClose;
    out.push_back('\n');
    in_line = in_resource = false;
  };
  for (const SpanBatch::Resource& resource : batch.resources) {
    resource_open.clear();
    append_resource_open(resource_open, resource.service_name);
    for (; span < resource.end_span; ++span) {
      std::string_view object(batch.json.data() + span_begin, batch.span_ends[span] - span_begin);
      span_begin = batch.span_ends[span];
      if (in_line) {
        std::size_t opening = in_resource ? 1 : 1 + resource_open.size();
        std::size_t length = out.size() - line_start + opening + object.size() +
                             kResourceClose.size() + kRequestClose.size() + 1;
        if (length > max_line_bytes) close_line();
      }
      if (!in_line) {
        line_start = out.size();
        out += kRequestOpen;
        in_line = true;
        line_has_resource = false;
      }
      if (!in_resource) {
        if (line_has_resource) out.push_back(',');
        out += resource_open;
        in_resource = line_has_resource = true;
      } else {
        out.push_back(',');
      }
      out += object;
    }
    if (in_resource) {
      out += kResourceClose;
      in_resource = false;
    }
  }
  if (in_line) close_line();
}

}  // namespace

std::string span_to_otlp_json(const Span& span) {
  std::string out(kRequestOpen);
  append_resource_open(out, span.service_name);
  append_span_object(out, span);
  out += kResourceClose;
  out += kRequestClose;
  return out;
}

// ------------------------------------------------------------------------------- exporters

void InMemoryExporter::export_span(const Span& span) {
  std::lock_guard lock(mu_);
  spans_.push_back(span);
}

std::vector<Span> InMemoryExporter::spans() const {
  std::lock_guard lock(mu_);
  return spans_;
}

void InMemoryExporter::clear() {
  std::lock_guard lock(mu_);
  spans_.clear();
}

struct OtlpJsonFileExporter::Impl {
  Impl(std::ostream* out, Options options) : out(out), options(options) {
    writer = std::thread([this] { run(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    wake.notify_one();
    writer.join();
  }

  // The writer thread: takes the whole buffer at once, writes and flushes it without the lock.
  void run() {
    SpanBatch batch;
    std::string lines;
    std::unique_lock lock(mu);
    for (;;) {
      wake.wait(lock, [this] { return !pending.empty() || stopping; });
      if (pending.empty()) return;  // stopping, and everything is written
      std::swap(batch, pending);    // `pending` keeps the old batch's capacity
      std::uint64_t upto = accepted;
      lock.unlock();
      lines.clear();
      append_requests(lines, batch, options.max_line_bytes);
      out->write(lines.data(), static_cast<std::streamsize>(lines.size()));
      out->flush();
      if (!out->good()) {
        dropped.fetch_add(batch.span_ends.size(), std::memory_order_relaxed);
        out->clear();
      }
      batch.clear();
      lock.lock();
      written = upto;
      written_cv.notify_all();
    }
  }

  std::unique_ptr<std::ostream> owned;  // the file, when the exporter opened it
  std::ostream* out;
  Options options;
  std::mutex mu;
  std::condition_variable wake;        // the writer waits for spans or the stop
  std::condition_variable written_cv;  // flush() waits for the writer
  SpanBatch pending;                   // spans not yet taken by the writer
  std::uint64_t accepted = 0;          // spans accepted so far
  std::uint64_t written = 0;           // spans written (or lost to the stream) so far
  bool stopping = false;
  std::atomic<std::uint64_t> dropped{0};
  std::thread writer;  // last: starts once the rest is constructed
};

OtlpJsonFileExporter::OtlpJsonFileExporter(std::ostream& out)
    : OtlpJsonFileExporter(out, Options()) {}

OtlpJsonFileExporter::OtlpJsonFileExporter(std::ostream& out, Options options)
    : impl_(std::make_unique<Impl>(&out, options)) {}

Result<std::shared_ptr<OtlpJsonFileExporter>> OtlpJsonFileExporter::open(const std::string& path) {
  return open(path, Options());
}

Result<std::shared_ptr<OtlpJsonFileExporter>> OtlpJsonFileExporter::open(const std::string& path,
                                                                         Options options) {
  errno = 0;
  auto file = std::make_unique<std::ofstream>(path, std::ios::app | std::ios::binary);
  if (!*file) {
    int err = errno;
    StatusCode code = err == ENOENT   ? StatusCode::kNotFound
                      : err == EACCES ? StatusCode::kPermissionDenied
                                      : StatusCode::kUnavailable;
    return Status(code, absl::StrCat("cannot open span file ", path, ": ",
                                     err != 0 ? std::strerror(err) : "unknown error"));
  }
  auto exporter = std::make_shared<OtlpJsonFileExporter>(*file, options);
  exporter->impl_->owned = std::move(file);  // the exporter owns the file it writes to
  return exporter;
}

std::shared_ptr<OtlpJsonFileExporter> OtlpJsonFileExporter::to_stderr() {
  return std::make_shared<OtlpJsonFileExporter>(std::cerr);
}

OtlpJsonFileExporter::~OtlpJsonFileExporter() = default;

void OtlpJsonFileExporter::export_span(const Span& span) {
  // Encoded here, outside the lock, in a per-thread buffer that keeps its capacity.
  thread_local std::string encoded;
  encoded.clear();
  append_span_object(encoded, span);
  bool was_empty;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->pending.json.size() + encoded.size() > impl_->options.max_buffered_bytes) {
      impl_->dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    was_empty = impl_->pending.empty();
    impl_->pending.append(encoded, span.service_name);
    ++impl_->accepted;
  }
  // The writer only sleeps on an empty buffer; whoever fills it wakes it.
  if (was_empty) impl_->wake.notify_one();
}

void OtlpJsonFileExporter::flush() {
  std::unique_lock lock(impl_->mu);
  std::uint64_t target = impl_->accepted;
  impl_->written_cv.wait(lock, [&] { return impl_->written >= target; });
}

std::uint64_t OtlpJsonFileExporter::dropped() const {
  return impl_->dropped.load(std::memory_order_relaxed);
}

}  // namespace trellis
