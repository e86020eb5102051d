// Internal: conversions between Trellis and grpc++ types.
#pragma once

#include <grpc/compression.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/string_ref.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <map>

#include "trellis/call_options.hpp"
#include "trellis/compression.hpp"
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

// A duration as the milliseconds of an int channel argument, clamped to [0, INT_MAX].
inline int to_grpc_ms(std::chrono::milliseconds d) {
  return static_cast<int>(std::clamp<std::int64_t>(d.count(), 0, INT_MAX));
}

inline grpc_compression_algorithm to_grpc(Compression c) {
  switch (c) {
    case Compression::kNone:
      return GRPC_COMPRESS_NONE;
    case Compression::kDeflate:
      return GRPC_COMPRESS_DEFLATE;
    case Compression::kGzip:
      return GRPC_COMPRESS_GZIP;
  }
  return GRPC_COMPRESS_NONE;
}

// Sets up a client call's context from its options: deadline, wait-for-ready, compression and
// request metadata.
inline void configure(grpc::ClientContext& ctx, const CallOptions& options) {
  if (auto deadline = options.effective_deadline()) ctx.set_deadline(*deadline);
  if (options.wait_for_ready()) ctx.set_wait_for_ready(true);
  if (options.compression()) ctx.set_compression_algorithm(to_grpc(*options.compression()));
  for (const auto& [k, v] : options.metadata()) ctx.AddMetadata(k, v);
}

}  // namespace trellis::detail
