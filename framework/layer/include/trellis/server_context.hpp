// trellis::ServerContext: what a handler knows about, and can set on, the call it serves.
#pragma once

#include <atomic>
#include <boost/asio/cancellation_signal.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/compression.hpp"
#include "trellis/extensions.hpp"
#include "trellis/metadata.hpp"
#include "trellis/peer_identity.hpp"
#include "trellis/status.hpp"

namespace grpc {
class ServerContext;
}

namespace trellis {

class ServerContext;

namespace detail {

// What a ServerContext asks of the call object it belongs to (server.cpp).
class ServerCall {
 public:
  // See ServerContext::cancel_with. Any thread.
  virtual void cancel_with(Status status) = 0;

 protected:
  ~ServerCall() = default;
};

// What a call of the native transport knows and collects for its ServerContext, in place of a
// grpc::ServerContext: filled from the request's headers before the handler starts; the response
// side is read by the call when it sends headers and trailers. Owned by the call object.
struct NativeCallState {
  std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
  Metadata request_metadata;
  std::string_view peer;  // the connection's, which outlives its calls
  const std::optional<PeerIdentity>* peer_identity = nullptr;  // the connection's too
  Metadata initial_metadata;
  Metadata trailing_metadata;
  std::optional<Compression> compression;
};

// The framework's access to a ServerContext's internals (a passkey: handlers cannot use it).
struct ServerContextAccess {
  // The signal that cancels the handler's task. Emitted only on the call's worker.
  static boost::asio::cancellation_signal& signal(ServerContext& ctx);
  // Records that the call is cancelled (is_cancelled() turns true). Any thread.
  static void mark_cancelled(ServerContext& ctx);
};

}  // namespace detail

// One per incoming call, owned by the framework, valid until the handler's task finishes.
//
// Cancellation: when the client cancels the call, its deadline passes or cancel_with() is called,
// is_cancelled() turns true and a terminal cancellation is emitted to the handler's task, so
// whatever the handler is awaiting (a timer, an outgoing call, a stream operation) completes with
// operation_aborted. The handler needs no code for this; it can check is_cancelled() before
// expensive work.
//
// Threads: the handler runs on the call's worker, and so do the framework's writes to the
// context. method(), deadline(), is_cancelled(), peer() and cancel_with() may be called from
// any thread (a task the handler spawned on another worker, for instance). Everything else
// (metadata, extensions, set_deadline, grpc_context) belongs to the handler: use it from the
// handler's task, or from tasks the handler awaits, never from two threads at once.
class ServerContext {
 public:
  // `method` (the full method name) must outlive the context.
  ServerContext(grpc::ServerContext* grpc_context, const std::string& method,
                detail::ServerCall* call)
      : grpc_(grpc_context), method_(&method), call_(call) {}
  // A call of the native transport (Server::Builder::transport): `state` outlives the context.
  ServerContext(detail::NativeCallState* state, const std::string& method, detail::ServerCall* call)
      : native_(state), method_(&method), call_(call) {}
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // The full method name, "/package.Service/Method".
  std::string_view method() const { return *method_; }
  // The call's deadline: the client's, or an earlier one a layer set; time_point::max() when
  // there is none. Calls made with CallOptions::set_parent(*this) inherit it.
  std::chrono::system_clock::time_point deadline() const;
  // Tightens the deadline that deadline() reports and outgoing calls inherit (a later one is
  // ignored). It does not cancel the handler by itself; the server timeout layer does.
  void set_deadline(std::chrono::system_clock::time_point deadline);
  // The client's metadata, without gRPC's reserved keys. Built on first use.
  const Metadata& request_metadata() const;
  // The first value, or every value in the order received, of the client's metadata entry
  // `key` (lower case: gRPC lower-cases every key); nullopt or empty when there is none. Read in
  // place from what gRPC received, without building request_metadata() (which copies every
  // entry): for a layer that looks at one key on every call. The views are valid until the
  // handler's task finishes.
  std::optional<std::string_view> request_metadata_value(std::string_view key) const;
  std::vector<std::string_view> request_metadata_values(std::string_view key) const;
  // The peer's address, as gRPC spells it ("ipv4:127.0.0.1:51234").
  std::string peer() const;
  // The client's verified certificate on a mutual-TLS port (trellis/peer_identity.hpp); nullopt
  // for a client without one, and on insecure and plain TLS ports. On the grpc transport it is
  // computed from gRPC's auth context each time it is asked for (keep the result), never before:
  // calls that do not ask pay nothing for it; on the native transport, once per connection.
  // Belongs to the handler's thread, like the metadata.
  std::optional<PeerIdentity> peer_identity() const;

  // Adds a response header; takes effect only before the response starts (unary: always).
  void add_initial_metadata(std::string key, std::string value);
  // Adds a response trailer.
  void add_trailing_metadata(std::string key, std::string value);
  // Compresses this call's responses with `compression` (if the client accepts it), instead of
  // the server's default (trellis/compression.hpp). Takes effect only before the response
  // starts: in a unary handler, any time before it returns; in a streaming one, before its
  // first write.
  void set_compression(Compression compression);

  // True once the call is cancelled (by the client, by cancel_with) or its deadline has passed.
  bool is_cancelled() const;

  // Ends the call with `status` (not OK) now: the client gets `status` (its code and message;
  // binary details and trailers are not sent), whatever the handler returns afterwards, and the
  // handler is cancelled as by a client cancellation. No effect once the call has ended or been
  // cancelled. What a server time limit does (TimeoutLayer); a layer or a handler may use it to
  // abort a call on its own terms. Returns at once: the cancellation reaches the handler's task
  // on the call's worker, never inside this call.
  void cancel_with(Status status);

  // Values middleware attached to the call (for example the tracing layer's span context).
  Extensions& extensions() { return extensions_; }
  const Extensions& extensions() const { return extensions_; }

  // The underlying grpc++ context, for what Trellis does not wrap. Only on the grpc transport
  // (the default): on the native transport there is none, and this throws std::logic_error.
  grpc::ServerContext& grpc_context();

 private:
  friend struct detail::ServerContextAccess;

  // Exactly one is set: the call is grpc core's or the native transport's.
  grpc::ServerContext* grpc_ = nullptr;
  detail::NativeCallState* native_ = nullptr;
  const std::string* method_;
  detail::ServerCall* call_;
  // Made on first use: most calls never ask, and a held stream's context is smaller without it.
  mutable std::unique_ptr<Metadata> request_metadata_;
  std::atomic<bool> cancelled_{false};
  // set_deadline's deadline (system_clock ticks since the epoch); read from any thread.
  std::atomic<std::int64_t> local_deadline_{
      std::chrono::system_clock::time_point::max().time_since_epoch().count()};
  Extensions extensions_;
  boost::asio::cancellation_signal cancel_;
};

}  // namespace trellis
