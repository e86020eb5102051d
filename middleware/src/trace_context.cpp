// W3C Trace Context: trace and span ids (random, hex) and the `traceparent` header.
#include "trellis/middleware/trace_context.hpp"

#include <cstring>

#include "absl/random/random.h"

namespace trellis {

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

std::string join_tracestate(const std::vector<std::string_view>& values) {
  std::string out;
  for (std::string_view v : values) {
    if (!out.empty()) out.push_back(',');
    out.append(v);
  }
  return out;
}

}  // namespace trellis
