// Internal: conversions between Trellis and grpc++ types.
#pragma once

#include <grpcpp/support/status.h>
#include <grpcpp/support/string_ref.h>

#include <map>

#include "trellis/metadata.hpp"
#include "trellis/status.hpp"

namespace trellis::detail {

inline grpc::Status to_grpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message(), s.details());
}

inline Status from_grpc(const grpc::Status& s) {
  if (s.ok()) return Status();
  return Status(static_cast<StatusCode>(s.error_code()), s.error_message(), s.error_details());
}

// Copies received metadata, leaving out gRPC's own reserved keys, except the server's retry
// pushback (gRFC A6), which is for the client's retry policy: the retry layer reads it.
inline Metadata from_grpc(const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
  Metadata out;
  for (const auto& [k, v] : md) {
    std::string_view key(k.data(), k.size());
    if ((key.starts_with("grpc-") && key != "grpc-retry-pushback-ms") || key.starts_with(":")) {
      continue;
    }
    out.add(std::string(key), std::string(v.data(), v.size()));
  }
  return out;
}

}  // namespace trellis::detail
