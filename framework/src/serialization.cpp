#include "trellis/detail/serialization.hpp"

#include <google/protobuf/message_lite.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/strings/str_cat.h"
#include "grpc_convert.hpp"

namespace trellis::detail {

using Traits = grpc::SerializationTraits<google::protobuf::MessageLite>;

Status serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out) {
  bool own_buffer = false;
  grpc::Status s = Traits::Serialize(message, out, &own_buffer);
  if (!s.ok()) return Status::internal(absl::StrCat("failed to serialize message: ", s.error_message()));
  return Status();
}

Status parse(grpc::ByteBuffer* in, google::protobuf::MessageLite* message, const char* what) {
  grpc::Status s = Traits::Deserialize(in, message);
  if (!s.ok()) {
    return Status::internal(absl::StrCat("failed to parse ", what, " ", message->GetTypeName(),
                                         ": ", s.error_message()));
  }
  return Status();
}

}  // namespace trellis::detail
