// trellis::CallOptions: per-call settings of an outgoing RPC.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "trellis/compression.hpp"
#include "trellis/metadata.hpp"

namespace trellis {

class ServerContext;

// What the server sent besides the response message, and where it came from.
struct ResponseMetadata {
  Metadata initial;   // response headers
  Metadata trailing;  // response trailers
  // The server's address as gRPC names it ("ipv4:127.0.0.1:50051", "ipv6:[::1]:50051"); empty
  // when the call never reached a server.
  std::string peer;
};

// Deadline, request metadata and where to put the response metadata of one call. A call without
// a deadline waits as long as the server takes.
class CallOptions {
 public:
  // Deadline = now + timeout (the clock is read here, when the option is set).
  CallOptions& set_timeout(std::chrono::nanoseconds timeout) {
    deadline_ = std::chrono::system_clock::now() +
                std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout);
    return *this;
  }
  CallOptions& set_deadline(std::chrono::system_clock::time_point deadline) {
    deadline_ = deadline;
    return *this;
  }
  // Adds request metadata; keys lower-case, "-bin" keys carry raw bytes.
  CallOptions& add_metadata(std::string key, std::string value) {
    metadata_.add(std::move(key), std::move(value));
    return *this;
  }
  // After the call completes (successfully or not), `out` holds the response metadata. `out`
  // must outlive the call.
  CallOptions& capture_response_metadata(ResponseMetadata* out) {
    response_metadata_ = out;
    return *this;
  }
  // Makes this a call on behalf of the handler of `parent`: the call's deadline is no later than
  // the parent's (its remaining time is inherited), and middleware can find the parent's
  // context (the tracing layer makes the call's span a child of the handler's). `parent` must
  // outlive the call.
  CallOptions& set_parent(const ServerContext& parent) {
    parent_ = &parent;
    return *this;
  }
  // Wait for the channel to become ready instead of failing fast with UNAVAILABLE.
  CallOptions& set_wait_for_ready(bool wait) {
    wait_for_ready_ = wait;
    return *this;
  }
  // Compresses this call's requests with `compression` (if the server accepts it), instead of
  // the channel's default (trellis/compression.hpp). The responses are the server's choice.
  CallOptions& set_compression(Compression compression) {
    compression_ = compression;
    return *this;
  }

  const std::optional<std::chrono::system_clock::time_point>& deadline() const { return deadline_; }
  // The deadline the call carries: the earlier of deadline() and the parent's deadline.
  std::optional<std::chrono::system_clock::time_point> effective_deadline() const;
  const ServerContext* parent() const { return parent_; }
  const Metadata& metadata() const { return metadata_; }
  ResponseMetadata* response_metadata() const { return response_metadata_; }
  bool wait_for_ready() const { return wait_for_ready_; }
  // set_compression's algorithm; nullopt: the channel's default.
  const std::optional<Compression>& compression() const { return compression_; }

 private:
  std::optional<std::chrono::system_clock::time_point> deadline_;
  Metadata metadata_;
  ResponseMetadata* response_metadata_ = nullptr;
  const ServerContext* parent_ = nullptr;
  bool wait_for_ready_ = false;
  std::optional<Compression> compression_;
};

}  // namespace trellis
