#include "grpc_wire.hpp"

#include <zlib.h>

#include <algorithm>
#include <limits>

namespace trellis::transport {

std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) return std::nullopt;
  std::int64_t amount = 0;
  for (char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    amount = amount * 10 + (c - '0');
  }
  std::int64_t unit_ns;
  switch (value.back()) {
    case 'H':
      unit_ns = 3'600'000'000'000;
      break;
    case 'M':
      unit_ns = 60'000'000'000;
      break;
    case 'S':
      unit_ns = 1'000'000'000;
      break;
    case 'm':
      unit_ns = 1'000'000;
      break;
    case 'u':
      unit_ns = 1'000;
      break;
    case 'n':
      unit_ns = 1;
      break;
    default:
      return std::nullopt;
  }
  // 99,999,999 hours do not fit in 64-bit nanoseconds: such a deadline is as good as none.
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  if (amount > kMax / unit_ns) return std::chrono::nanoseconds(kMax);
  return std::chrono::nanoseconds(amount * unit_ns);
}

bool is_grpc_content_type(std::string_view value) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (value.substr(0, kGrpc.size()) != kGrpc) return false;
  return value.size() == kGrpc.size() || value[kGrpc.size()] == '+' || value[kGrpc.size()] == ';';
}

std::optional<Compression> parse_grpc_encoding(std::string_view value) {
  if (value == "identity") return Compression::kNone;
  if (value == "deflate") return Compression::kDeflate;
  if (value == "gzip") return Compression::kGzip;
  return std::nullopt;
}

std::uint8_t parse_grpc_accept_encoding(std::string_view value) {
  std::uint8_t bits = 0;
  while (!value.empty()) {
    std::size_t comma = std::min(value.find(','), value.size());
    std::string_view name = value.substr(0, comma);
    value.remove_prefix(std::min(comma + 1, value.size()));
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (auto encoding = parse_grpc_encoding(name)) bits |= compression_bit(*encoding);
  }
  return bits;
}

namespace {

std::uint32_t read_length(const char* p) {
  auto byte = [p](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])); };
  return byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
}

// zlib's window bits: 15 for the zlib format, +16 for gzip's.
int window_bits(Compression compression) { return compression == Compression::kGzip ? 31 : 15; }

}  // namespace

std::string compress(Compression compression, std::string_view message) {
  if (compression == Compression::kNone) return std::string(message);
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits(compression), 8,
               Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, message.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
  z.avail_in = static_cast<uInt>(message.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);  // deflateBound leaves room for all of it
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

Status decompress(Compression compression, std::string_view message, std::size_t max_size,
                  std::string* out) {
  out->clear();
  if (compression == Compression::kNone) {
    if (message.size() > max_size) return Status::resource_exhausted("message too large");
    out->assign(message);
    return {};
  }
  z_stream z{};
  if (inflateInit2(&z, window_bits(compression)) != Z_OK) {
    return Status::internal("zlib failed to start");
  }
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
  z.avail_in = static_cast<uInt>(message.size());
  char chunk[16384];
  int result = Z_OK;
  while (result == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    result = inflate(&z, Z_NO_FLUSH);
    std::size_t produced = sizeof chunk - z.avail_out;
    if (out->size() + produced > max_size) {
      inflateEnd(&z);
      return Status::resource_exhausted("received message larger than max (over " +
                                        std::to_string(max_size) + " bytes decompressed)");
    }
    out->append(chunk, produced);
    if (result == Z_BUF_ERROR && z.avail_in == 0) break;  // input ended before the stream did
  }
  inflateEnd(&z);
  if (result != Z_STREAM_END || z.avail_in != 0) {
    return Status::internal(std::string("the message does not decompress with ") +
                            std::string(compression_name(compression)));
  }
  return {};
}

void append_message_prefix(std::string& out, bool compressed, std::uint32_t length) {
  char prefix[kMessagePrefixSize] = {
      static_cast<char>(compressed ? 1 : 0), static_cast<char>(length >> 24),
      static_cast<char>(length >> 16), static_cast<char>(length >> 8), static_cast<char>(length)};
  out.append(prefix, kMessagePrefixSize);
}

Status MessageReader::feed(std::string_view data) {
  if (failed_) return Status::internal("the stream's messages failed earlier");
  // Handed-out messages are dropped once they are at least half of the buffer: amortized O(1)
  // per byte, and a stream of small messages keeps a small buffer.
  if (consumed_ > 0 && consumed_ * 2 >= buffer_.size()) {
    buffer_.erase(0, consumed_);
    complete_ -= consumed_;
    consumed_ = 0;
  }
  buffer_.append(data);
  while (buffer_.size() - complete_ >= kMessagePrefixSize) {
    auto flag = static_cast<unsigned char>(buffer_[complete_]);
    std::uint32_t length = read_length(buffer_.data() + complete_ + 1);
    if (flag > 1) {
      failed_ = true;
      return Status::internal("invalid message prefix: compressed flag " + std::to_string(flag));
    }
    if (length > max_message_size_) {
      failed_ = true;
      return Status::resource_exhausted("received message larger than max (" +
                                        std::to_string(length) + " vs. " +
                                        std::to_string(max_message_size_) + ")");
    }
    if (buffer_.size() - complete_ - kMessagePrefixSize < length) break;
    complete_ += kMessagePrefixSize + length;
  }
  return {};
}

std::optional<MessageReader::Message> MessageReader::next() {
  if (failed_ || consumed_ == complete_) return std::nullopt;
  const char* p = buffer_.data() + consumed_;
  std::uint32_t length = read_length(p + 1);
  Message message{p[0] == 1, std::string(p + kMessagePrefixSize, length)};
  consumed_ += kMessagePrefixSize + length;
  return message;
}

Status MessageReader::finish() const {
  if (!failed_ && buffer_.size() > complete_) {
    return Status::internal("the stream ended inside a message (" +
                            std::to_string(buffer_.size() - complete_) + " bytes of it)");
  }
  return {};
}

}  // namespace trellis::transport
