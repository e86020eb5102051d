// trellis::Channel::Builder: a channel with typed options (load balancing, compression, message
// size limits, keepalive).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trellis/channel.hpp"
#include "trellis/compression.hpp"
#include "trellis/keepalive.hpp"
#include "trellis/result.hpp"
#include "trellis/tls.hpp"

namespace grpc {
class ChannelArguments;
}  // namespace grpc

namespace trellis {

// How a channel spreads calls over the addresses its target resolves to.
enum class LoadBalancing {
  // One address at a time: the first that connects takes every call, until it fails (gRPC's
  // default).
  kPickFirst,
  // A connection to every address, and calls spread over the ready ones in turn; an address
  // whose connection fails is left out until it reconnects.
  kRoundRobin,
};

// Builds a Channel to `target`, plaintext or TLS (tls()). The target names one or more servers:
//   "host:port", "dns:///host:port"   resolved by DNS (every address of the name), and resolved
//                                     again when a connection fails (at most every
//                                     dns_min_time_between_resolutions);
//   "ipv4:10.0.0.1:50051,10.0.0.2:50051", "ipv6:[::1]:50051"   a fixed list of addresses;
//   "unix:/path/to/socket".
// A policy that a name resolver's service config names (loadBalancingConfig) wins over
// load_balancing(): it is the default for targets whose resolver has none.
//
//   trellis::Channel channel = trellis::Channel::Builder("dns:///greeter.default.svc:50051")
//                                  .load_balancing(trellis::LoadBalancing::kRoundRobin)
//                                  .default_compression(trellis::Compression::kGzip)
//                                  .build()
//                                  .value();
class Channel::Builder {
 public:
  explicit Builder(std::string target);
  ~Builder();
  Builder(Builder&&) noexcept;
  Builder& operator=(Builder&&) noexcept;

  // Default kPickFirst.
  Builder& load_balancing(LoadBalancing policy);
  // How requests are compressed unless a call says otherwise (default kNone).
  Builder& default_compression(Compression compression);
  // The largest message a call may receive (default 4 MiB) and send (default unlimited), in
  // bytes; -1 is unlimited. A larger message fails the call with RESOURCE_EXHAUSTED.
  Builder& max_receive_message_size(int bytes);
  Builder& max_send_message_size(int bytes);
  // Pings the server as `keepalive` says (default: never); a server that stops answering fails
  // the channel's calls with UNAVAILABLE, and the channel reconnects.
  Builder& keepalive(Keepalive keepalive);
  // For dns: targets, the shortest time between two resolutions (default 30 s).
  Builder& dns_min_time_between_resolutions(std::chrono::milliseconds interval);
  // TLS, or mutual TLS when `options` hold a client certificate (trellis/tls.hpp, as
  // Channel::tls); build() reads and checks the PEM files.
  Builder& tls(TlsOptions options);
  // Escape hatch: adjust the grpc::ChannelArguments after the typed options above.
  Builder& configure(std::function<void(grpc::ChannelArguments&)> fn);

  // The channel. It connects lazily, on the first call or wait_until_ready(). Reads the TLS
  // files on the calling thread (keep it off a runtime worker); an error naming the file when
  // one cannot be read or holds no valid PEM.
  Result<Channel> build() const;

 private:
  std::string target_;
  std::vector<std::function<void(grpc::ChannelArguments&)>> options_;
  std::optional<TlsOptions> tls_;
};

}  // namespace trellis
