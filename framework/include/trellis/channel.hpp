// trellis::Channel: a connection (pool) to a gRPC target, shared by typed clients.
#pragma once

#include <memory>
#include <string>

#include "trellis/layer.hpp"

namespace grpc {
class Channel;
class ChannelArguments;
}  // namespace grpc

namespace trellis {

// A cheap-to-copy handle on a grpc::Channel. It connects lazily and reconnects by itself; name
// resolution and load balancing are gRPC's.
class Channel {
 public:
  // A plaintext channel to `target`: "host:port", "dns:///host:port", "ipv4:127.0.0.1:50051",
  // "unix:/path/to/socket", or any other gRPC target string.
  static Channel insecure(const std::string& target);
  static Channel insecure(const std::string& target, const grpc::ChannelArguments& args);

  // Wraps a channel made with grpc++ directly (for example with TLS credentials).
  explicit Channel(std::shared_ptr<grpc::Channel> channel) : channel_(std::move(channel)) {}

  const std::shared_ptr<grpc::Channel>& grpc_channel() const { return channel_; }

  // A handle on the same connection whose calls pass through `layer` (a Layer, a Stack or a
  // DynStack), outside any layers this handle already has. Clients made from the result run
  // every call through the stack; clients made from this handle do not. See docs/middleware.md.
  Channel with_layer(BoxLayer layer) const;

  // The middleware stack of this handle's calls, ending in the call on the channel; nullptr when
  // it has no layers.
  const std::shared_ptr<const BoxService>& stack() const { return stack_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<const BoxService> stack_;
};

}  // namespace trellis
