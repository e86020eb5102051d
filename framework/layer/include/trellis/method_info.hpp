// trellis::MethodInfo: what middleware knows about the method of a call.
#pragma once

#include <string_view>

namespace trellis {

// The four kinds of gRPC method.
enum class RpcKind { kUnary, kClientStreaming, kServerStreaming, kBidiStreaming };

// The standard protobuf method option `idempotency_level` (google.protobuf.MethodOptions), which
// generated code copies here. Retry and hedging layers use it to decide what is safe to send
// twice.
enum class Idempotency {
  kUnknown,        // IDEMPOTENCY_UNKNOWN, the default: the method may have side effects
  kNoSideEffects,  // NO_SIDE_EFFECTS: safe to repeat, changes nothing
  kIdempotent,     // IDEMPOTENT: repeating it has the effect of calling it once
};

// One method of a service. Generated code makes these; they live as long as the service or
// client that owns them.
struct MethodInfo {
  std::string_view path;  // "/package.Service/Method"
  RpcKind kind = RpcKind::kUnary;
  Idempotency idempotency = Idempotency::kUnknown;

  // "package.Service" (empty when the path is malformed).
  std::string_view service() const {
    std::size_t slash = path.rfind('/');
    if (path.size() < 2 || path[0] != '/' || slash == 0 || slash == std::string_view::npos)
      return {};
    return path.substr(1, slash - 1);
  }
  // "Method".
  std::string_view name() const {
    std::size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
  }
  // Whether the client sends a stream of messages (client-streaming or bidi).
  bool client_streams() const {
    return kind == RpcKind::kClientStreaming || kind == RpcKind::kBidiStreaming;
  }
  // Whether the server sends a stream of messages (server-streaming or bidi).
  bool server_streams() const {
    return kind == RpcKind::kServerStreaming || kind == RpcKind::kBidiStreaming;
  }
  // Whether repeating the call is safe (IDEMPOTENT or NO_SIDE_EFFECTS).
  bool safe_to_repeat() const { return idempotency != Idempotency::kUnknown; }
};

}  // namespace trellis
