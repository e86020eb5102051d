// Internal: the message type Trellis hands to grpc++ for sending.
#pragma once

#include <grpcpp/impl/serialization_traits.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include "trellis/detail/serialization.hpp"

namespace trellis::detail {

// An already serialized message for grpc++'s typed send operations. grpc++ serializes a
// grpc::ByteBuffer message by copying it (SerializationTraits<ByteBuffer>); the traits below
// hand this buffer over instead. A send consumes the buffer: it is empty afterwards.
struct OutgoingBytes {
  OutgoingBytes() = default;
  // Takes the bytes of `b`.
  explicit OutgoingBytes(Bytes b) { buffer.Swap(b.get()); }
  void take(Bytes&& b) { buffer.Swap(b.get()); }
  // Mutable: grpc++ passes the message to Serialize as const.
  mutable grpc::ByteBuffer buffer;
};

}  // namespace trellis::detail

template <>
class grpc::SerializationTraits<trellis::detail::OutgoingBytes, void> {
 public:
  static grpc::Status Serialize(const trellis::detail::OutgoingBytes& message,
                                grpc::ByteBuffer* out, bool* own_buffer) {
    out->Clear();
    out->Swap(&message.buffer);
    *own_buffer = true;
    return grpc::Status();  // OK; not a copy of grpc::Status::OK, which copies two strings
  }
  // Never received: Trellis receives grpc::ByteBuffer.
  static grpc::Status Deserialize(grpc::ByteBuffer*, trellis::detail::OutgoingBytes*) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "OutgoingBytes is for sending only");
  }
};
