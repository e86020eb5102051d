// trellis::TraceContext: the W3C Trace Context (https://www.w3.org/TR/trace-context/) of a call:
// the `traceparent` and `tracestate` headers, parsed and formatted.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis {

// An identifier of N random bytes, written as 2N lower-case hex digits. All-zero is the invalid
// value (W3C: "all bytes as zero is considered an invalid value"); a default-constructed id is
// invalid. TraceId (16 bytes) and SpanId (8 bytes) are its two uses.
template <std::size_t N>
class TraceIdentifier {
 public:
  static constexpr std::size_t kSize = N;
  static constexpr std::size_t kHexSize = 2 * N;

  TraceIdentifier() = default;
  explicit TraceIdentifier(const std::array<std::uint8_t, N>& bytes) : bytes_(bytes) {}

  // A fresh random id, never all-zero. Cheap: a per-thread generator, no lock.
  static TraceIdentifier random();
  // Parses exactly kHexSize lower-case hex digits (W3C forbids upper case); nullopt for any
  // other input, including the all-zero id.
  static std::optional<TraceIdentifier> from_hex(std::string_view hex);

  bool valid() const {
    for (std::uint8_t b : bytes_) {
      if (b != 0) return true;
    }
    return false;
  }
  const std::array<std::uint8_t, N>& bytes() const { return bytes_; }
  // kHexSize lower-case hex digits.
  std::string hex() const;
  // Writes the kHexSize hex digits to `out` (no allocation).
  void write_hex(char* out) const;

  friend bool operator==(const TraceIdentifier&, const TraceIdentifier&) = default;

 private:
  std::array<std::uint8_t, N> bytes_{};
};

using TraceId = TraceIdentifier<16>;
using SpanId = TraceIdentifier<8>;

extern template class TraceIdentifier<16>;
extern template class TraceIdentifier<8>;

// The trace a span belongs to and its place in it: what `traceparent` carries (trace id, the
// span id of the sender's span, trace flags) plus the opaque vendor data of `tracestate`.
struct TraceContext {
  // The W3C "sampled" trace flag: the caller may have recorded its span.
  static constexpr std::uint8_t kSampled = 0x01;

  TraceId trace_id;
  SpanId span_id;
  std::uint8_t flags = 0;
  // The `tracestate` header, carried unchanged (several headers joined with ","); empty if none.
  std::string tracestate;

  bool valid() const { return trace_id.valid() && span_id.valid(); }
  bool sampled() const { return (flags & kSampled) != 0; }

  friend bool operator==(const TraceContext&, const TraceContext&) = default;
};

// The metadata keys of the two headers.
inline constexpr std::string_view kTraceparentKey = "traceparent";
inline constexpr std::string_view kTracestateKey = "tracestate";

// Parses a `traceparent` header value: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>".
// Returns nullopt (the header must then be ignored, and `tracestate` with it) for: a wrong length
// or separator, a hex digit that is not lower-case hex, an all-zero trace or parent id, version
// "ff", or a version-00 header with trailing data. A later version (01..fe) is parsed by the
// version-00 layout, its trailing "-..." fields ignored, as the specification asks. The result's
// tracestate is empty.
std::optional<TraceContext> parse_traceparent(std::string_view header);

// Formats `context` as a version-00 `traceparent` value (55 characters). `context` must be valid.
std::string format_traceparent(const TraceContext& context);

// The `tracestate` of a request that carried the header once per value in `values`: W3C treats
// several `tracestate` headers as one list, so they are joined with "," in the order received.
std::string join_tracestate(const std::vector<std::string_view>& values);

}  // namespace trellis
