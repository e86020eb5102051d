// trellis::ServerContext: what a handler knows about, and can set on, the call it serves.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/extensions.hpp"
#include "trellis/metadata.hpp"

namespace grpc {
class ServerContext;
}

namespace trellis {

// One per incoming call, owned by the framework, valid until the handler's task finishes. Use it
// from the handler's own worker thread (the one the handler runs on).
//
// Cancellation: when the client cancels the call or its deadline passes, is_cancelled() turns
// true and a terminal cancellation is emitted to the handler's task, so whatever the handler is
// awaiting (a timer, an outgoing call) completes with operation_aborted. The handler needs no
// code for this; it can check is_cancelled() before expensive work.
class ServerContext {
 public:
  explicit ServerContext(grpc::ServerContext* grpc_context, std::string_view method)
      : grpc_(grpc_context), method_(method) {}
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // The full method name, "/package.Service/Method".
  std::string_view method() const { return method_; }
  // The call's deadline: the client's, or an earlier one a layer set; time_point::max() when
  // there is none. Calls made with CallOptions::set_parent(*this) inherit it.
  std::chrono::system_clock::time_point deadline() const;
  // Tightens the deadline that deadline() reports and outgoing calls inherit (a later one is
  // ignored). It does not cancel the handler by itself; the server timeout layer does.
  void set_deadline(std::chrono::system_clock::time_point deadline) {
    if (deadline < local_deadline_) local_deadline_ = deadline;
  }
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

  // Adds a response header; takes effect only before the response starts (unary: always).
  void add_initial_metadata(std::string key, std::string value);
  // Adds a response trailer.
  void add_trailing_metadata(std::string key, std::string value);

  // True once the client has cancelled the call or its deadline has passed.
  bool is_cancelled() const;

  // Values middleware attached to the call (for example the tracing layer's span context).
  Extensions& extensions() { return extensions_; }
  const Extensions& extensions() const { return extensions_; }

  // The underlying grpc++ context, for what Trellis does not wrap (auth context, compression).
  grpc::ServerContext& grpc_context() { return *grpc_; }

  // Internal: the signal the framework emits to cancel the handler's task.
  boost::asio::cancellation_signal& cancellation_signal() { return cancel_; }
  void mark_cancelled() { cancelled_ = true; }

 private:
  grpc::ServerContext* grpc_;
  std::string_view method_;
  mutable std::optional<Metadata> request_metadata_;
  bool cancelled_ = false;
  std::chrono::system_clock::time_point local_deadline_ =
      std::chrono::system_clock::time_point::max();
  Extensions extensions_;
  boost::asio::cancellation_signal cancel_;
};

}  // namespace trellis
