// trellis::Compression: the message compression algorithms gRPC negotiates on a call.
#pragma once

#include <string_view>

namespace trellis {

// How the messages of a call are compressed on the wire. A sender compresses only with an
// algorithm its peer announced it accepts (the grpc-accept-encoding header; Trellis, grpc++ and
// grpcio accept all three), and sends a message uncompressed when compressing would not make it
// smaller. The receiver decompresses whatever the call's grpc-encoding says, whatever its own
// setting.
//
// Where it is set, the narrower setting wins:
//   - a channel's default (Channel::Builder::default_compression) and a server's default
//     (Server::Builder::default_compression) apply to every call they carry;
//   - CallOptions::set_compression sets one client call's requests;
//   - ServerContext::set_compression sets one handler's responses.
enum class Compression {
  kNone,     // identity: messages go as they are
  kDeflate,  // deflate (zlib)
  kGzip,     // gzip
};

// "identity", "deflate" or "gzip": the name in the grpc-encoding header.
std::string_view compression_name(Compression compression);

}  // namespace trellis
