#include "trellis/detail/serialization.hpp"

#include <google/protobuf/message_lite.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>
#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpc_convert.hpp"

namespace trellis::detail {

// Both are grpc++'s own SerializationTraits for protobuf (GenericSerialize, GenericDeserialize)
// without the grpc::Status values they copy and return for every message (a copy of
// grpc::Status::OK is two strings).
Status serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out) {
  const std::size_t size = message.ByteSizeLong();
  if (size <= GRPC_SLICE_INLINED_SIZE) {
    // A message this small fits in the slice itself: serialize straight into it.
    grpc::Slice slice(size);
    message.SerializeWithCachedSizesToArray(const_cast<std::uint8_t*>(slice.begin()));
    grpc::ByteBuffer bytes(&slice, 1);
    out->Swap(&bytes);
    return Status();
  }
  grpc::ProtoBufferWriter writer(out, grpc::kProtoBufferWriterMaxBufferLength,
                                 static_cast<int>(size));
  if (!message.SerializeToZeroCopyStream(&writer)) {
    return Status::internal("failed to serialize message: Failed to serialize message");
  }
  return Status();
}

Status parse(grpc::ByteBuffer* in, google::protobuf::MessageLite* message, const char* what) {
  auto failed = [&](const std::string& why) {
    return Status::internal(
        absl::StrCat("failed to parse ", what, " ", message->GetTypeName(), ": ", why));
  };
  if (in == nullptr) return failed("No payload");
  bool parsed = false;
  {
    grpc::ProtoBufferReader reader(in);
    if (!reader.status().ok()) return failed(reader.status().error_message());
    parsed = message->ParseFromZeroCopyStream(&reader);
  }
  in->Clear();
  if (!parsed) return failed(message->InitializationErrorString());
  return Status();
}

}  // namespace trellis::detail
