// trellis::Call: one RPC as middleware sees it, on the server or on the client.
#pragma once

#include <google/protobuf/message_lite.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "trellis/call_options.hpp"
#include "trellis/extensions.hpp"
#include "trellis/message_observer.hpp"
#include "trellis/metadata.hpp"
#include "trellis/method_info.hpp"
#include "trellis/server_context.hpp"

namespace trellis {

class Call;

namespace detail {
class ObservedStream;
struct ClientBinding;

// The framework's access to what the innermost service of each side needs (a passkey: layers
// cannot use it).
struct CallAccess {
  static ObservedStream* stream(const Call& call);
  static void set_stream(Call& call, ObservedStream* stream);
  static const ClientBinding* binding(const Call& call);
  static void set_binding(Call& call, const ClientBinding* binding);
};
}  // namespace detail

// Which end of the call a layer runs on.
enum class Side { kServer, kClient };

// A call passed down a middleware stack (see layer.hpp). The framework makes one per RPC and
// keeps it alive until the stack's task completes; layers read it and, on the client, shape the
// call before handing it to the inner service.
//
// What a layer sees:
//  - method(): the path, the kind, the idempotency level;
//  - the request metadata and the deadline;
//  - request(): the request message of unary and server-streaming calls;
//  - response(): the response message of unary and client-streaming calls, set once the inner
//    service has returned OK;
//  - the final status: the value of the inner service's task;
//  - each message of a stream, through a MessageObserver (observe_messages());
//  - on the server, the handler's ServerContext; on the client, the CallOptions the call will be
//    made with (a layer may add metadata or tighten the deadline), and afterwards the response
//    metadata.
// Messages are seen as google::protobuf::MessageLite (size, serialization, type name);
// dynamic_cast to google::protobuf::Message for reflection, or cast to the generated type when
// the method is known.
class Call {
 public:
  // Server side: `ctx` is the handler's context.
  Call(const MethodInfo& method, ServerContext& ctx, const google::protobuf::MessageLite* request,
       google::protobuf::MessageLite* response)
      : method_(&method),
        side_(Side::kServer),
        server_(&ctx),
        request_(request),
        response_(response) {}
  // Client side: `options` are the options of the call, which the innermost service uses.
  Call(const MethodInfo& method, CallOptions& options, const google::protobuf::MessageLite* request,
       google::protobuf::MessageLite* response)
      : method_(&method),
        side_(Side::kClient),
        options_(&options),
        request_(request),
        response_(response) {}
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  const MethodInfo& method() const { return *method_; }
  Side side() const { return side_; }
  bool is_server() const { return side_ == Side::kServer; }
  bool is_client() const { return side_ == Side::kClient; }

  // Server: what the client sent (without gRPC's reserved keys). Client: what the call will send.
  const Metadata& request_metadata() const {
    return server_ != nullptr ? server_->request_metadata() : options_->metadata();
  }
  // Server: the incoming deadline (possibly tightened by a layer, ServerContext::set_deadline).
  // Client: the deadline the call will carry, including the one inherited from a parent
  // ServerContext (CallOptions::set_parent). nullopt: none.
  std::optional<std::chrono::system_clock::time_point> deadline() const;

  // The request message of a unary or server-streaming call; nullptr for the other kinds.
  const google::protobuf::MessageLite* request() const { return request_; }
  // Server: the response of a unary or client-streaming call, the handler's reply once the inner
  // service has returned OK. Client: the parsed reply of a unary call (a client-streaming call's
  // reply is read from the stream: see observe_messages()). nullptr otherwise.
  google::protobuf::MessageLite* response() const { return response_; }

  // Server side: the handler's context (add response metadata, see cancellation); else nullptr.
  ServerContext* server_context() const { return server_; }
  // Client side: the options the call will be made with; else nullptr.
  CallOptions* options() const { return options_; }

  // Client side, once the inner service has returned: the server's response headers and
  // trailers.
  ResponseMetadata& response_metadata() { return response_metadata_; }
  // Client side: whether the server committed to a response (sent response headers with at least
  // one entry, or a message) before the call ended. gRFC A6: a committed call is not retried.
  bool committed() const { return committed_; }
  void set_committed() { committed_ = true; }
  // Client side, client-streaming calls: asks the stream to keep a copy of the messages the
  // caller writes, up to `max_bytes` (serialized) in all, so that the inner service may be
  // called again after a failed attempt and the new attempt is sent them all again (RetryLayer
  // does this before its first attempt). While the attempt may still be retried, the caller's
  // operations do not see its failure: they wait for the next attempt, or fail once the layer
  // gives up. Beyond `max_bytes` the copies are dropped and the attempt in flight counts as
  // committed (committed(), gRFC A6): it is the last one. Ignored for other kinds of call.
  void enable_replay(std::size_t max_bytes) { replay_limit_ = max_bytes; }
  // Streaming calls: `observer` sees each message of the stream from now until it is destroyed
  // (keep it in the layer's frame), and may reject it (message_observer.hpp). Call it before the
  // inner service. Ignored for unary calls, whose messages are request() and response().
  void observe_messages(MessageObserver& observer);
  // What enable_replay() asked for; nullopt: no replay.
  std::optional<std::size_t> replay_limit() const { return replay_limit_; }
  // Client side: forgets what the previous attempt received (response, response metadata, commit
  // flag), before a layer sends the call again.
  void reset_response();

  // The peer: on the server, the client's address; on the client, the server's address once the
  // inner service has returned (response_metadata().peer; empty before, or when the call never
  // reached a server).
  std::string peer() const {
    return server_ != nullptr ? server_->peer() : response_metadata_.peer;
  }
  // Server side: the client's verified certificate on a mutual-TLS port, for a layer that
  // authorizes on it (ServerContext::peer_identity). nullopt on the client side.
  std::optional<PeerIdentity> peer_identity() const {
    return server_ != nullptr ? server_->peer_identity() : std::nullopt;
  }

  // Values layers attach to the call. On the server these are the ServerContext's, so the
  // handler sees them too.
  Extensions& extensions() { return server_ != nullptr ? server_->extensions() : extensions_; }

  // Client side, unary calls: another call of the same method on the same channel, with its own
  // `options` and `response` (both must outlive it), the same request and extensions empty: for a
  // layer that sends attempts concurrently (HedgingLayer) rather than one after the other.
  Call new_attempt(CallOptions& options, google::protobuf::MessageLite* response) const {
    return Call(*method_, options, request_, response, binding_);
  }

 private:
  friend struct detail::CallAccess;

  Call(const MethodInfo& method, CallOptions& options, const google::protobuf::MessageLite* request,
       google::protobuf::MessageLite* response, const detail::ClientBinding* binding)
      : Call(method, options, request, response) {
    binding_ = binding;
  }

  const MethodInfo* method_;
  Side side_;
  ServerContext* server_ = nullptr;
  CallOptions* options_ = nullptr;
  const google::protobuf::MessageLite* request_;
  google::protobuf::MessageLite* response_;
  ResponseMetadata response_metadata_;
  bool committed_ = false;
  std::optional<std::size_t> replay_limit_;
  Extensions extensions_;
  detail::ObservedStream* stream_ = nullptr;
  const detail::ClientBinding* binding_ = nullptr;
};

inline detail::ObservedStream* detail::CallAccess::stream(const Call& call) { return call.stream_; }
inline void detail::CallAccess::set_stream(Call& call, ObservedStream* stream) {
  call.stream_ = stream;
}
inline const detail::ClientBinding* detail::CallAccess::binding(const Call& call) {
  return call.binding_;
}
inline void detail::CallAccess::set_binding(Call& call, const ClientBinding* binding) {
  call.binding_ = binding;
}

inline void Call::reset_response() {
  response_metadata_ = {};
  committed_ = false;
  if (response_ != nullptr) response_->Clear();
}

inline std::optional<std::chrono::system_clock::time_point> Call::deadline() const {
  if (server_ != nullptr) {
    auto d = server_->deadline();
    if (d == std::chrono::system_clock::time_point::max()) return std::nullopt;
    return d;
  }
  return options_->effective_deadline();
}

}  // namespace trellis
