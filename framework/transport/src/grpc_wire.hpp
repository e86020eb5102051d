// The rules of gRPC over HTTP/2 that sit above HTTP/2 itself: the request headers a server
// accepts, the encodings, and the length-prefixed message framing (grpc-message's
// percent-encoding is trellis/detail/percent_encoding.hpp, shared with the middleware). Pure
// functions and one incremental parser, shared by the native transport's server session and its
// fuzz target. The reference is the gRPC over HTTP/2 protocol specification
// (doc/PROTOCOL-HTTP2.md in the grpc repository) and doc/compression.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "trellis/compression.hpp"
#include "trellis/status.hpp"

namespace trellis::transport {

// Parses a grpc-timeout header value: 1 to 8 ASCII digits and a unit (H, M, S, m, u or n).
// Returns nullopt for anything else, which the server answers INTERNAL, as grpc-go does (the
// specification names no status for it; grpc core ignores a malformed value).
std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view value);

// Whether a content-type names gRPC: "application/grpc" alone or followed by "+" (a message
// format such as "+proto") or ";" (parameters). Anything else is answered with HTTP 415.
bool is_grpc_content_type(std::string_view value);

// The encoding a grpc-encoding value names: identity, deflate or gzip; nullopt for anything
// else, which the server answers UNIMPLEMENTED with the list it accepts.
std::optional<Compression> parse_grpc_encoding(std::string_view value);
// The encodings a grpc-accept-encoding value lists ("identity,deflate,gzip"), as a set of
// compression_bit()s; names it does not know are skipped.
std::uint8_t parse_grpc_accept_encoding(std::string_view value);
constexpr std::uint8_t compression_bit(Compression compression) {
  return static_cast<std::uint8_t>(1u << static_cast<unsigned>(compression));
}
// What a server accepts, as it says in grpc-accept-encoding.
inline constexpr std::string_view kAcceptedEncodings = "identity,deflate,gzip";

// Compresses one message with `compression` (deflate: zlib format; gzip: gzip format, as gRPC
// means them).
std::string compress(Compression compression, std::string_view message);
// Decompresses one message, refusing to produce more than `max_size` bytes: a small message
// that inflates past the limit (a zip bomb) is RESOURCE_EXHAUSTED once the limit is reached,
// not after. A message that does not decompress is INTERNAL.
Status decompress(Compression compression, std::string_view message, std::size_t max_size,
                  std::string* out);

// The five-byte prefix of a message on the wire: the compressed flag, then the length
// (big-endian).
inline constexpr std::size_t kMessagePrefixSize = 5;
void append_message_prefix(std::string& out, bool compressed, std::uint32_t length);

// Splits a stream's DATA bytes into messages. Bytes are fed as they arrive; each complete
// message is handed out whole. A message whose prefix announces more than the limit is refused
// before its body is buffered.
class MessageReader {
 public:
  explicit MessageReader(std::size_t max_message_size) : max_message_size_(max_message_size) {}

  // One message, as it was on the wire (still compressed if `compressed`).
  struct Message {
    bool compressed;
    std::string bytes;
  };

  // Appends `data`. Returns an error status (RESOURCE_EXHAUSTED for a message over the limit,
  // INTERNAL for a compressed flag other than 0 or 1) once the stream cannot go on; the reader
  // then refuses everything.
  Status feed(std::string_view data);
  // The next complete message, if there is one.
  std::optional<Message> next();
  // At the end of the stream: INTERNAL if a message was cut short, else OK.
  Status finish() const;

 private:
  std::size_t max_message_size_;
  std::string buffer_;
  std::size_t consumed_ = 0;  // bytes of buffer_ already handed out
  std::size_t complete_ = 0;  // end of the complete (and checked) messages in buffer_
  bool failed_ = false;
};

}  // namespace trellis::transport
