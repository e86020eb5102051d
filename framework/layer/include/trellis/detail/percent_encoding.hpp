// Percent-encoding as gRPC uses it: in grpc-message, and in the peer URIs grpc core reports.
#pragma once

#include <string>
#include <string_view>

namespace trellis::detail {

// Encodes bytes outside printable ASCII (0x20-0x7E) and '%' as %XX, as grpc-message requires.
std::string percent_encode(std::string_view text);

// Decodes every %XX; a '%' not followed by two hex digits is kept as it is, as the gRPC
// specification asks of a grpc-message receiver.
std::string percent_decode(std::string_view encoded);

}  // namespace trellis::detail
