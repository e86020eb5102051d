// The tracing layer: W3C trace context, spans, exporters.
#include "trellis/middleware/tracing.hpp"

#include <grpcpp/server_context.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace trellis {

// ------------------------------------------------------------------------------- trace context

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// The value of one lower-case hex digit, or -1. W3C forbids upper case in traceparent.
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Two lower-case hex digits as a byte, or -1.
int hex_byte(std::string_view two) {
  int hi = hex_value(two[0]);
  int lo = hex_value(two[1]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// xoshiro256** (Blackman and Vigna), one per thread, seeded from the OS's entropy through absl.
// Trace and span ids must be unique and unpredictable enough not to collide, not secret, and the
// layer takes two or three per call, so a cryptographically strong generator such as
// absl::BitGen (Randen) would cost far more than the ids need (docs/performance.md).
class IdGenerator {
 public:
  IdGenerator() {
    absl::BitGen seed;
    for (auto& word : state_) word = absl::Uniform<std::uint64_t>(seed);
  }
  std::uint64_t next() {
    std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t state_[4];
};

std::uint64_t random_u64() {
  thread_local IdGenerator gen;
  return gen.next();
}

}  // namespace

template <std::size_t N>
TraceIdentifier<N> TraceIdentifier<N>::random() {
  static_assert(N % 8 == 0);
  TraceIdentifier id;
  do {
    for (std::size_t i = 0; i < N; i += 8) {
      std::uint64_t v = random_u64();
      std::memcpy(id.bytes_.data() + i, &v, 8);
    }
  } while (!id.valid());
  return id;
}

template <std::size_t N>
std::optional<TraceIdentifier<N>> TraceIdentifier<N>::from_hex(std::string_view hex) {
  if (hex.size() != kHexSize) return std::nullopt;
  TraceIdentifier id;
  for (std::size_t i = 0; i < N; ++i) {
    int b = hex_byte(hex.substr(2 * i, 2));
    if (b < 0) return std::nullopt;
    id.bytes_[i] = static_cast<std::uint8_t>(b);
  }
  if (!id.valid()) return std::nullopt;
  return id;
}

template <std::size_t N>
void TraceIdentifier<N>::write_hex(char* out) const {
  for (std::uint8_t b : bytes_) {
    *out++ = kHexDigits[b >> 4];
    *out++ = kHexDigits[b & 0xf];
  }
}

template <std::size_t N>
std::string TraceIdentifier<N>::hex() const {
  std::string out(kHexSize, '0');
  write_hex(out.data());
  return out;
}

template class TraceIdentifier<16>;
template class TraceIdentifier<8>;

std::optional<TraceContext> parse_traceparent(std::string_view h) {
  // version "-" trace-id "-" parent-id "-" trace-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55.
  constexpr std::size_t kLength = 55;
  if (h.size() < kLength) return std::nullopt;
  if (h[2] != '-' || h[35] != '-' || h[52] != '-') return std::nullopt;
  int version = hex_byte(h.substr(0, 2));
  if (version < 0 || version == 0xff) return std::nullopt;
  // Version 00 is exactly 55 characters; a later version may append "-" and more fields.
  if (h.size() > kLength && (version == 0 || h[kLength] != '-')) return std::nullopt;
  auto trace_id = TraceId::from_hex(h.substr(3, TraceId::kHexSize));
  auto span_id = SpanId::from_hex(h.substr(36, SpanId::kHexSize));
  int flags = hex_byte(h.substr(53, 2));
  if (!trace_id || !span_id || flags < 0) return std::nullopt;
  TraceContext context;
  context.trace_id = *trace_id;
  context.span_id = *span_id;
  context.flags = static_cast<std::uint8_t>(flags);
  return context;
}

std::string format_traceparent(const TraceContext& context) {
  std::string out = "00-";
  out.resize(3 + TraceId::kHexSize + 1 + SpanId::kHexSize + 1 + 2);
  char* p = out.data() + 3;
  context.trace_id.write_hex(p);
  p += TraceId::kHexSize;
  *p++ = '-';
  context.span_id.write_hex(p);
  p += SpanId::kHexSize;
  *p++ = '-';
  *p++ = kHexDigits[context.flags >> 4];
  *p++ = kHexDigits[context.flags & 0xf];
  return out;
}

// ------------------------------------------------------------------------------------- span

std::string_view span_kind_name(SpanKind kind) {
  return kind == SpanKind::kServer ? "server" : "client";
}

std::string_view Span::rpc_service() const {
  std::size_t slash = name.rfind('/');
  return slash == std::string::npos ? std::string_view() : std::string_view(name).substr(0, slash);
}

std::string_view Span::rpc_method() const {
  std::size_t slash = name.rfind('/');
  return slash == std::string::npos ? std::string_view(name)
                                    : std::string_view(name).substr(slash + 1);
}

bool Span::is_error() const {
  if (kind == SpanKind::kClient) return status_code != StatusCode::kOk;
  switch (status_code) {
    case StatusCode::kUnknown:
    case StatusCode::kDeadlineExceeded:
    case StatusCode::kUnimplemented:
    case StatusCode::kInternal:
    case StatusCode::kUnavailable:
    case StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

std::vector<SpanAttribute> Span::attributes() const {
  std::vector<SpanAttribute> out;
  out.reserve(7);
  out.push_back({"rpc.system", std::string("grpc")});
  out.push_back({"rpc.service", std::string(rpc_service())});
  out.push_back({"rpc.method", std::string(rpc_method())});
  out.push_back({"rpc.grpc.status_code", static_cast<std::int64_t>(status_code)});
  if (!peer.empty()) {
    PeerAddress p = parse_peer(peer);
    if (!p.network_type.empty()) out.push_back({"network.type", std::move(p.network_type)});
    out.push_back({"network.peer.address", std::move(p.address)});
    if (p.port >= 0) out.push_back({"network.peer.port", static_cast<std::int64_t>(p.port)});
  }
  return out;
}

namespace {

// gRPC writes peers as URIs, so an IPv6 host may arrive as "%5B::1%5D".
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      char hi = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i + 1])));
      char lo = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i + 2])));
      int a = hex_value(hi);
      int b = hex_value(lo);
      if (a >= 0 && b >= 0) {
        out.push_back(static_cast<char>(a * 16 + b));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

PeerAddress parse_peer(std::string_view peer) {
  PeerAddress out;
  std::size_t colon = peer.find(':');
  std::string_view scheme = colon == std::string_view::npos ? "" : peer.substr(0, colon);
  if (scheme == "ipv4" || scheme == "ipv6") {
    std::string rest = percent_decode(peer.substr(colon + 1));
    std::string_view r = rest;
    std::string_view host = r;
    std::string_view port;
    if (!r.empty() && r.front() == '[') {
      std::size_t close = r.find(']');
      if (close != std::string_view::npos) {
        host = r.substr(1, close - 1);
        if (close + 1 < r.size() && r[close + 1] == ':') port = r.substr(close + 2);
      }
    } else if (std::size_t last = r.rfind(':'); last != std::string_view::npos) {
      host = r.substr(0, last);
      port = r.substr(last + 1);
    }
    int n = 0;
    if (!port.empty() && absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &n) &&
        n >= 0 && n <= 65535)
      out.port = n;
    out.network_type = std::string(scheme);
    out.address = std::string(host);
  } else if (scheme == "unix" || scheme == "unix-abstract") {
    out.network_type = "unix";
    out.address = percent_decode(peer.substr(colon + 1));
  } else {
    out.address = std::string(peer);
  }
  return out;
}

// ----------------------------------------------------------------------------------- JSON

namespace {

// Appends `s` as a JSON string literal. Control characters are escaped; bytes that do not form
// valid UTF-8 become U+FFFD so that the output is always valid JSON text.
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

void append_key(std::string& out, std::string_view key) {
  append_json_string(out, key);
  out.push_back(':');
}

std::int64_t unix_nanos(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void append_span_json(std::string& out, const Span& span) {
  char hex[TraceId::kHexSize];
  out += "{";
  append_key(out, "name");
  append_json_string(out, span.name);
  out += ",";
  append_key(out, "kind");
  append_json_string(out, span_kind_name(span.kind));
  out += ",";
  append_key(out, "trace_id");
  span.context.trace_id.write_hex(hex);
  append_json_string(out, std::string_view(hex, TraceId::kHexSize));
  out += ",";
  append_key(out, "span_id");
  span.context.span_id.write_hex(hex);
  append_json_string(out, std::string_view(hex, SpanId::kHexSize));
  out += ",";
  append_key(out, "parent_span_id");
  if (span.is_root()) {
    out += "\"\"";
  } else {
    span.parent_span_id.write_hex(hex);
    append_json_string(out, std::string_view(hex, SpanId::kHexSize));
  }
  out += ",";
  append_key(out, "trace_flags");
  const char flags[2] = {kHexDigits[span.context.flags >> 4], kHexDigits[span.context.flags & 0xf]};
  append_json_string(out, std::string_view(flags, 2));
  out += ",";
  append_key(out, "tracestate");
  append_json_string(out, span.context.tracestate);
  out += ",";
  append_key(out, "start_time_unix_nano");
  absl::StrAppend(&out, unix_nanos(span.start_time));
  out += ",";
  append_key(out, "end_time_unix_nano");
  absl::StrAppend(&out, unix_nanos(span.end_time));
  out += ",";
  append_key(out, "status");
  out += "{";
  append_key(out, "code");
  append_json_string(out, span.is_error() ? "ERROR" : "UNSET");
  out += ",";
  append_key(out, "message");
  append_json_string(out, span.status_message);
  out += "},";
  append_key(out, "resource");
  out += "{";
  append_key(out, "service.name");
  append_json_string(out, span.service_name);
  out += "},";
  append_key(out, "attributes");
  out += "{";
  bool first = true;
  for (const SpanAttribute& a : span.attributes()) {
    if (!first) out += ",";
    first = false;
    append_key(out, a.key);
    if (const auto* s = std::get_if<std::string>(&a.value)) {
      append_json_string(out, *s);
    } else {
      absl::StrAppend(&out, std::get<std::int64_t>(a.value));
    }
  }
  out += "}}";
}

}  // namespace

std::string span_to_json(const Span& span) {
  std::string out;
  append_span_json(out, span);
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

struct JsonLinesExporter::Impl {
  Impl(std::ostream* out, std::unique_ptr<std::ostream> owned, Options options)
      : owned(std::move(owned)), out(out), options(options) {
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
    std::string batch;
    std::unique_lock lock(mu);
    for (;;) {
      wake.wait(lock, [this] { return !pending.empty() || stopping; });
      if (pending.empty()) return;  // stopping, and everything is written
      batch.swap(pending);          // `pending` keeps the old batch's capacity
      std::uint64_t upto = appended;
      lock.unlock();
      out->write(batch.data(), static_cast<std::streamsize>(batch.size()));
      out->flush();
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
  std::condition_variable wake;        // the writer waits for lines or the stop
  std::condition_variable written_cv;  // flush() waits for the writer
  std::string pending;                 // lines not yet taken by the writer
  std::uint64_t appended = 0;          // bytes accepted so far
  std::uint64_t written = 0;           // bytes written and flushed so far
  bool stopping = false;
  std::atomic<std::uint64_t> dropped{0};
  std::thread writer;  // last: starts once the rest is constructed
};

JsonLinesExporter::JsonLinesExporter(std::ostream& out) : JsonLinesExporter(out, Options()) {}

JsonLinesExporter::JsonLinesExporter(std::ostream& out, Options options)
    : impl_(std::make_unique<Impl>(&out, nullptr, options)) {}

Result<std::shared_ptr<JsonLinesExporter>> JsonLinesExporter::open(const std::string& path) {
  return open(path, Options());
}

Result<std::shared_ptr<JsonLinesExporter>> JsonLinesExporter::open(const std::string& path,
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
  auto exporter = std::make_shared<JsonLinesExporter>(*file, options);
  exporter->impl_->owned = std::move(file);  // the exporter owns the file it writes to
  return exporter;
}

std::shared_ptr<JsonLinesExporter> JsonLinesExporter::to_stderr() {
  return std::make_shared<JsonLinesExporter>(std::cerr);
}

JsonLinesExporter::~JsonLinesExporter() = default;

void JsonLinesExporter::export_span(const Span& span) {
  // Formatted here, outside the lock, in a per-thread buffer that keeps its capacity.
  thread_local std::string line;
  line.clear();
  append_span_json(line, span);
  line.push_back('\n');
  bool was_empty;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->pending.size() + line.size() > impl_->options.max_buffered_bytes) {
      impl_->dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    was_empty = impl_->pending.empty();
    impl_->pending += line;
    impl_->appended += line.size();
  }
  // The writer only sleeps on an empty buffer; whoever fills it wakes it.
  if (was_empty) impl_->wake.notify_one();
}

void JsonLinesExporter::flush() {
  std::unique_lock lock(impl_->mu);
  std::uint64_t target = impl_->appended;
  impl_->written_cv.wait(lock, [&] { return impl_->written >= target; });
}

std::uint64_t JsonLinesExporter::dropped() const {
  return impl_->dropped.load(std::memory_order_relaxed);
}

// ------------------------------------------------------------------------------------ layer

namespace {

// What the server tracing layer stores in the call's extensions: the context of the span being
// recorded, which lives in the layer's coroutine frame. A pointer, so that publishing it does not
// allocate; the layer resets it before its frame goes.
struct ServerTraceSlot {
  const TraceContext* context = nullptr;
};

// The tracestate values of `metadata`, joined as the W3C specification joins repeated headers.
std::string read_tracestate(const Metadata& metadata) {
  std::vector<std::string_view> values = metadata.get_all(kTracestateKey);
  std::string out;
  for (std::string_view v : values) {
    if (!out.empty()) out.push_back(',');
    out.append(v);
  }
  return out;
}

// The valid trace context in `metadata`'s traceparent, with its tracestate; nullopt if none.
std::optional<TraceContext> read_incoming(const Metadata& metadata) {
  std::optional<std::string_view> header = metadata.get(kTraceparentKey);
  if (!header) return std::nullopt;
  std::optional<TraceContext> context = parse_traceparent(*header);
  if (context) context->tracestate = read_tracestate(metadata);
  return context;
}

// The same, read from what gRPC received, without building ServerContext::request_metadata()
// (a copy of every entry): the server layer runs on every call, and most calls carry no trace.
std::optional<TraceContext> read_incoming(const ServerContext& ctx) {
  const auto& received = const_cast<ServerContext&>(ctx).grpc_context().client_metadata();
  auto header = received.find(grpc::string_ref(kTraceparentKey.data(), kTraceparentKey.size()));
  if (header == received.end()) return std::nullopt;
  std::optional<TraceContext> context =
      parse_traceparent(std::string_view(header->second.data(), header->second.size()));
  if (!context) return context;
  auto [first, last] =
      received.equal_range(grpc::string_ref(kTracestateKey.data(), kTracestateKey.size()));
  for (auto it = first; it != last; ++it) {
    if (!context->tracestate.empty()) context->tracestate.push_back(',');
    context->tracestate.append(it->second.data(), it->second.size());
  }
  return context;
}

}  // namespace

const TraceContext* current_trace(const ServerContext& ctx) {
  const auto* slot = ctx.extensions().get<ServerTraceSlot>();
  return slot != nullptr ? slot->context : nullptr;
}

namespace detail {

ActiveSpan::ActiveSpan(const TracingConfig& config, Call& call) : config_(&config) {
  // One clock read at each end: in a VM a clock read is a large part of what a span costs.
  span_.start_time = std::chrono::system_clock::now();

  // First the parent.
  std::optional<TraceContext> parsed;
  const TraceContext* parent = nullptr;
  bool inject = false;
  ServerTraceSlot* slot = nullptr;
  if (call.is_server()) {
    span_.kind = SpanKind::kServer;
    slot = call.extensions().get<ServerTraceSlot>();
    if (slot != nullptr && slot->context != nullptr) {
      parent = slot->context;  // an outer tracing layer's span on this server
    } else if ((parsed = read_incoming(*call.server_context()))) {
      parent = &*parsed;
    }
  } else {
    span_.kind = SpanKind::kClient;
    const CallOptions& options = *call.options();
    if (options.metadata().contains(kTraceparentKey)) {
      // The caller (or this layer, on an earlier attempt) already chose what the server sees.
      if ((parsed = read_incoming(options.metadata()))) parent = &*parsed;
    } else {
      inject = true;
      if (const ServerContext* server = options.parent()) {
        if (const TraceContext* current = current_trace(*server)) {
          parent = current;
        } else if ((parsed = read_incoming(*server))) {
          parent = &*parsed;  // the parent server has no tracing layer: continue its caller's trace
        }
      }
    }
  }

  // Then this span's own context.
  TraceContext& self = span_.context;
  if (parent != nullptr) {
    self.trace_id = parent->trace_id;
    self.flags = parent->flags;
    self.tracestate = parent->tracestate;
    span_.parent_span_id = parent->span_id;
  } else {
    self.trace_id = TraceId::random();
    self.flags = TraceContext::kSampled;
  }
  self.span_id = SpanId::random();

  // Last, publish it.
  if (call.is_server()) {
    if (slot != nullptr) {
      previous_ = slot->context;
      slot->context = &self;
    } else {
      call.extensions().insert(ServerTraceSlot{&self});
    }
  } else if (inject) {
    CallOptions& options = *call.options();
    options.add_metadata(std::string(kTraceparentKey), format_traceparent(self));
    if (!self.tracestate.empty()) {
      options.add_metadata(std::string(kTracestateKey), self.tracestate);
    }
  }
}

void ActiveSpan::finish(Call& call, const Status& status) {
  end(call, status.code(), status.message());
}

void ActiveSpan::finish(Call& call, const std::exception_ptr& error) {
  std::string what = "unknown exception";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  // What the framework answers for a handler that threw.
  bool cancelled = call.is_server() && call.server_context()->is_cancelled();
  end(call, cancelled ? StatusCode::kCancelled : StatusCode::kInternal,
      absl::StrCat("exception: ", what));
}

void ActiveSpan::end(Call& call, StatusCode code, std::string_view message) {
  if (call.is_server()) {
    // The context lives in this frame: unpublish it before the frame goes.
    if (auto* slot = call.extensions().get<ServerTraceSlot>()) slot->context = previous_;
  }
  if (config_->exporter == nullptr) return;
  if (!span_.context.sampled() && !config_->options.export_unsampled) return;
  // The exported span is filled in a span kept per thread, whose strings keep their capacity
  // from call to call (exporters copy what they keep), unless an exporter ends a span while
  // exporting one.
  thread_local Span scratch;
  thread_local bool scratch_busy = false;
  Span& out = scratch_busy ? span_ : scratch;
  if (&out == &scratch) {
    scratch_busy = true;
    out.kind = span_.kind;
    out.context.trace_id = span_.context.trace_id;
    out.context.span_id = span_.context.span_id;
    out.context.flags = span_.context.flags;
    out.context.tracestate.assign(span_.context.tracestate);
    out.parent_span_id = span_.parent_span_id;
    out.start_time = span_.start_time;
  }
  // The wall clock may step back; a span never ends before it starts.
  out.end_time = std::max(span_.start_time, std::chrono::system_clock::now());
  out.status_code = code;
  out.status_message.assign(message);
  std::string_view path = call.method().path;
  if (path.starts_with('/')) path.remove_prefix(1);
  out.name.assign(path);
  out.peer = call.peer();
  out.service_name.assign(config_->options.service_name);
  try {
    config_->exporter->export_span(out);
  } catch (...) {
    // An exporter's failure must not change the call's outcome.
  }
  if (&out == &scratch) scratch_busy = false;
}

}  // namespace detail

HookDecision TracingLayer::before(Call& call, State& state) const {
  state.span.emplace(*config_, call);
  return HookDecision::proceed();
}

void TracingLayer::after(Call& call, State& state, CallOutcome& outcome) const {
  if (outcome.error) {
    state.span->finish(call, outcome.error);
  } else {
    state.span->finish(call, outcome.status);
  }
}

}  // namespace trellis
