// gRPC credentials from Trellis's TLS options (trellis/tls.hpp), for every part of the framework
// that makes a server port or a channel: Server::Builder::add_tls_port, Channel::tls, and any
// other channel or server builder.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "trellis/peer_identity.hpp"
#include "trellis/result.hpp"
#include "trellis/tls.hpp"

namespace grpc {
class AuthContext;
class ChannelArguments;
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace trellis::detail {

// The PEM of a server's TLS options, read and checked.
struct ServerTlsPem {
  std::string cert_chain;
  std::string private_key;
  std::string client_ca;  // empty: clients are not asked for a certificate
  bool files = false;     // every source is a file: watch them
  unsigned int refresh_seconds = 60;
};

// Reads every source of `options` now, on the calling thread, and checks them as
// make_server_credentials says.
Result<ServerTlsPem> read_server_tls(const TlsServerOptions& options);

// Credentials for a server's TLS port. Reads every file of `options` now, on the calling thread,
// and checks it: a file that cannot be read (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION),
// PEM that is not what it should be, a key that does not match the certificate, or inconsistent
// options (INVALID_ARGUMENT) yield a status whose message names the file or the option. When all
// sources are files, gRPC watches them (grpc::experimental::FileWatcherCertificateProvider);
// otherwise the PEM is fixed (StaticDataCertificateProvider).
Result<std::shared_ptr<grpc::ServerCredentials>> make_server_credentials(
    const TlsServerOptions& options);

// Credentials for a TLS channel, checked as make_server_credentials does, and the channel
// arguments they need added to `args` (server_name_override is GRPC_SSL_TARGET_NAME_OVERRIDE_ARG).
Result<std::shared_ptr<grpc::ChannelCredentials>> make_channel_credentials(
    const TlsOptions& options, grpc::ChannelArguments& args);

// The identity of the certificate the peer presented and gRPC verified, from a call's auth
// context; nullopt when the peer is not authenticated by a certificate.
std::optional<PeerIdentity> peer_identity_of(const grpc::AuthContext& auth_context);

}  // namespace trellis::detail
