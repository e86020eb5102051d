// trellis::Channel: a connection (pool) to a gRPC target, shared by typed clients.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "trellis/layer.hpp"
#include "trellis/result.hpp"
#include "trellis/task.hpp"
#include "trellis/tls.hpp"

namespace grpc {
class Channel;
class ChannelArguments;
class ChannelCredentials;
}  // namespace grpc

namespace trellis {

// The connectivity of a channel, as gRPC defines it (doc/connectivity-semantics-and-api.md).
enum class ConnectivityState {
  kIdle,              // no connection, and none wanted until a call or a connect request
  kConnecting,        // connecting (resolving, handshaking)
  kReady,             // connected: calls go out at once
  kTransientFailure,  // the last attempt failed; the channel retries with backoff
  kShutdown,          // the channel is closed for good
};

// "IDLE", "CONNECTING", "READY", "TRANSIENT_FAILURE" or "SHUTDOWN".
std::string_view connectivity_state_name(ConnectivityState state);

// A cheap-to-copy handle on a grpc::Channel. It connects lazily and reconnects by itself; name
// resolution and load balancing are gRPC's.
class Channel {
 public:
  // Typed options: load balancing, compression, limits, keepalive (trellis/channel_builder.hpp).
  class Builder;

  // A plaintext channel to `target`: "host:port", "dns:///host:port", "ipv4:127.0.0.1:50051",
  // "unix:/path/to/socket", or any other gRPC target string.
  static Channel insecure(const std::string& target);
  static Channel insecure(const std::string& target, const grpc::ChannelArguments& args);
  // A TLS channel to `target`, or a mutual-TLS one when `options` hold a client certificate
  // (trellis/tls.hpp), with `args` if given. Reads and checks the PEM files now, on the calling
  // thread (keep it off a runtime worker), and fails naming the file when one cannot be read or
  // holds no valid PEM. A server whose certificate does not chain to `options.ca` (or to the
  // system's roots) fails the calls with UNAVAILABLE.
  static Result<Channel> tls(const std::string& target, const TlsOptions& options);
  static Result<Channel> tls(const std::string& target, const TlsOptions& options,
                             const grpc::ChannelArguments& args);
  // A channel to `target` with `credentials` (TLS, for example) and `args`. Trellis keeps what the
  // channel was made with, so that with_layer() can make it again without gRPC's own retries.
  static Channel create(const std::string& target,
                        std::shared_ptr<grpc::ChannelCredentials> credentials,
                        const grpc::ChannelArguments& args);

  // Wraps a channel made with grpc++ directly. Trellis cannot make it again with other arguments:
  // with_layer() uses it as it is (see there).
  explicit Channel(std::shared_ptr<grpc::Channel> channel) : channel_(std::move(channel)) {}

  const std::shared_ptr<grpc::Channel>& grpc_channel() const { return channel_; }

  // The channel's state now. With `try_to_connect`, an idle channel starts connecting.
  ConnectivityState state(bool try_to_connect = false) const;
  // Completes with true once the state differs from `last_observed`, or with false when
  // `deadline` passes first. Runs on the awaiting task's runtime and never blocks its worker.
  // Cancelling the awaiting task (a cancellation slot) ends the wait with
  // boost::system::system_error (operation_aborted) within half a second: gRPC has no way to
  // take the watch back, so Trellis renews it every half second and looks between renewals
  // (for the same reason a runtime shutdown may wait that long for a pending watch).
  Task<bool> wait_for_state_change(ConnectivityState last_observed,
                                   std::chrono::system_clock::time_point deadline) const;
  // Connects, and completes with true once the channel is READY, or with false if it is not by
  // `deadline` (a server that cannot be reached leaves it CONNECTING or TRANSIENT_FAILURE).
  Task<bool> wait_until_ready(std::chrono::system_clock::time_point deadline) const;

  // A handle on the same target whose calls pass through `layer` (a Layer, a Stack or a
  // DynStack), outside any layers this handle already has. Clients made from the result run
  // every call through the stack; clients made from this handle do not. See docs/middleware.md.
  //
  // gRPC retries a call by itself when the channel's service config (the grpc.service_config
  // argument, or the name resolver's) has a retryPolicy or hedgingPolicy for its method. A layer
  // that sends a call again (RetryLayer, HedgingLayer: note_layer_repeats_calls() in layer.hpp)
  // on top of that would multiply the attempts: 3 of the layer's, each retried 3 times by gRPC,
  // make 9. So when `layer` sends calls again, the returned handle (and every handle made from
  // it) uses a second grpc::Channel to the same target, made by Trellis with the same credentials
  // and arguments plus GRPC_ARG_ENABLE_RETRIES = 0: gRPC retries none of its calls (transparent
  // retries included), the layer alone decides. It is made once per channel that insecure() or
  // create() made, shared by the handles that need it, and has connections of its own; this
  // handle, and handles without such a layer, keep gRPC's retries. A channel wrapped from a
  // grpc::Channel cannot be made again: it keeps them, so make it with GRPC_ARG_ENABLE_RETRIES = 0
  // when its service config may retry and a layer retries too.
  Channel with_layer(BoxLayer layer) const;

  // The middleware stack of this handle's calls, ending in the call on the channel; nullptr when
  // it has no layers.
  const std::shared_ptr<const BoxService>& stack() const { return stack_; }

 private:
  class Origin;

  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<const BoxService> stack_;
  // How channel_ was made, while gRPC may retry its calls; nullptr for a wrapped grpc::Channel
  // and for a channel whose retries are off already.
  std::shared_ptr<const Origin> origin_;
};

}  // namespace trellis
