// The TLS parts of the public API: TLS ports, TLS channels and the peer's identity. The
// credentials themselves are made in tls_credentials.cpp.
#include "trellis/tls.hpp"

#include <grpcpp/security/auth_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/channel_arguments.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "tls_credentials.hpp"
#include "trellis/channel.hpp"
#include "trellis/peer_identity.hpp"
#include "trellis/server.hpp"
#include "trellis/server_context.hpp"

namespace trellis {

Server::Builder& Server::Builder::add_tls_port(std::string address, TlsServerOptions options) {
  tls_ports_.emplace_back(addresses_.size(), std::move(options));
  addresses_.push_back(std::move(address));
  return *this;
}

Result<Channel> Channel::tls(const std::string& target, const TlsOptions& options) {
  return tls(target, options, grpc::ChannelArguments());
}

Result<Channel> Channel::tls(const std::string& target, const TlsOptions& options,
                             const grpc::ChannelArguments& args) {
  grpc::ChannelArguments tls_args = args;
  auto credentials = detail::make_channel_credentials(options, tls_args);
  if (!credentials.ok()) return credentials.status();
  return create(target, std::move(credentials).value(), tls_args);
}

std::optional<PeerIdentity> ServerContext::peer_identity() const {
  if (grpc_ == nullptr) {
    return native_->peer_identity != nullptr ? *native_->peer_identity : std::nullopt;
  }
  // grpc++ builds the auth context on first use and keeps it with the call.
  std::shared_ptr<const grpc::AuthContext> auth = grpc_->auth_context();
  if (auth == nullptr) return std::nullopt;
  return detail::peer_identity_of(*auth);
}

}  // namespace trellis
