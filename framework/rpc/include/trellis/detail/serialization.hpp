// Internal: protobuf messages to and from gRPC byte buffers, done once, outside templates.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include "trellis/status.hpp"

namespace google::protobuf {
class MessageLite;
}

namespace trellis::detail {

// A grpc::ByteBuffer that moves. grpc::ByteBuffer (grpc++ 1.51) has no move operations, so
// std::move of one is a deep copy (a new grpc_byte_buffer, an allocation, slice refs); Bytes
// moves by swapping, which is how serialized messages travel through Trellis to gRPC.
class Bytes {
 public:
  Bytes() = default;
  Bytes(Bytes&& other) noexcept { buffer_.Swap(&other.buffer_); }
  Bytes& operator=(Bytes&& other) noexcept {
    buffer_.Swap(&other.buffer_);
    return *this;
  }
  grpc::ByteBuffer* get() { return &buffer_; }

 private:
  grpc::ByteBuffer buffer_;
};

// Serializes `message` into `out`; a failure yields INTERNAL.
Status serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out);
// Parses `in` (consumed) into `message`; a failure yields INTERNAL naming `what`.
Status parse(grpc::ByteBuffer* in, google::protobuf::MessageLite* message, const char* what);

}  // namespace trellis::detail
