// Internal: protobuf messages to and from gRPC byte buffers, done once, outside templates.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include "trellis/status.hpp"

namespace google::protobuf {
class MessageLite;
}

namespace trellis::detail {

// Serializes `message` into `out`; a failure yields INTERNAL.
Status serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out);
// Parses `in` (consumed) into `message`; a failure yields INTERNAL naming `what`.
Status parse(grpc::ByteBuffer* in, google::protobuf::MessageLite* message, const char* what);

}  // namespace trellis::detail
