// TLS and mutual TLS: the options of a server's TLS port (Server::Builder::add_tls_port) and of a
// TLS channel (Channel::tls), and where their PEM comes from.
#pragma once

#include <chrono>
#include <string>
#include <utility>

namespace trellis {

// Where one piece of PEM comes from: a file, or the PEM text itself. A default-constructed
// source is empty (none).
//
// A server or channel reads its files when it is made, on the calling thread: a file that cannot
// be read, or holds no valid PEM of the expected kind, fails Server::Builder::build() or
// Channel::tls() with a status naming the file. When every source of the options is a file, gRPC
// then checks them for changes every `refresh_interval` and new connections use what is on disk
// (see TlsServerOptions); inline PEM is fixed.
//
//   TlsServerOptions tls;
//   tls.cert_chain = PemSource::from_file("/etc/greeter/tls.crt");
//   tls.private_key = PemSource::from_file("/etc/greeter/tls.key");
//   TlsOptions client;
//   client.ca = PemSource::from_string(kCaPem);  // "-----BEGIN CERTIFICATE-----\n..."
class PemSource {
 public:
  PemSource() = default;

  // The PEM file at `path`; an empty path is an empty source.
  static PemSource from_file(std::string path) {
    const Kind kind = path.empty() ? Kind::kNone : Kind::kFile;
    return PemSource(kind, std::move(path));
  }
  // `pem`, the PEM text itself; an empty string is an empty source.
  static PemSource from_string(std::string pem) {
    const Kind kind = pem.empty() ? Kind::kNone : Kind::kString;
    return PemSource(kind, std::move(pem));
  }

  bool empty() const { return kind_ == Kind::kNone; }
  bool is_file() const { return kind_ == Kind::kFile; }
  // The path of a file source; empty for the others.
  const std::string& path() const { return kind_ == Kind::kFile ? value_ : kEmpty; }
  // The PEM text of a string source; empty for the others (a file is read by the server or
  // channel that uses it).
  const std::string& pem() const { return kind_ == Kind::kString ? value_ : kEmpty; }

 private:
  enum class Kind { kNone, kFile, kString };
  PemSource(Kind kind, std::string value) : kind_(kind), value_(std::move(value)) {}

  static inline const std::string kEmpty;
  Kind kind_ = Kind::kNone;
  std::string value_;
};

// How often gRPC checks watched PEM files for changes, unless the options say otherwise.
inline constexpr std::chrono::seconds kDefaultTlsRefreshInterval{60};

// A server's TLS port (Server::Builder::add_tls_port): its certificate and key, and whether and
// how it verifies client certificates (mutual TLS).
//
//  - cert_chain and private_key are required: the server's certificate (then any intermediates)
//    and its private key (unencrypted PEM; PKCS#8, RSA or EC), which must match.
//  - client_ca empty: clients are not asked for a certificate (plain TLS).
//  - client_ca set: clients are asked for a certificate, and one they present must chain to a CA
//    in client_ca or the handshake fails. A verified client's identity is
//    ServerContext::peer_identity(). With require_client_cert a client without a certificate is
//    refused too (mutual TLS); without it, such a client is served with no identity.
//  - require_client_cert without client_ca is an error (there is nothing to verify against).
//
// Reloading: when all three sources are files, gRPC re-reads them every refresh_interval (when
// they have changed) and new connections use the new certificate, key and client CAs; existing
// connections keep what they were made with. Replace a file atomically (write a new file, then
// rename it over the old one), the key first when both change: a connection made in the moment
// between the two renames may fail its handshake, and the client reconnects. Mixing files and
// inline PEM is an error, since only files can be watched.
struct TlsServerOptions {
  PemSource cert_chain;
  PemSource private_key;
  PemSource client_ca;
  bool require_client_cert = false;
  // How often gRPC checks watched files for changes (whole seconds, at least 1).
  std::chrono::seconds refresh_interval = kDefaultTlsRefreshInterval;

  // Options whose sources are the files at these paths (an empty client_ca: none), with
  // require_client_cert false: set it for mutual TLS.
  static TlsServerOptions from_files(std::string cert_chain, std::string private_key,
                                     std::string client_ca = {}) {
    TlsServerOptions options;
    options.cert_chain = PemSource::from_file(std::move(cert_chain));
    options.private_key = PemSource::from_file(std::move(private_key));
    options.client_ca = PemSource::from_file(std::move(client_ca));
    return options;
  }
};

// A TLS channel (Channel::tls): whom it trusts, and its own certificate for mutual TLS.
//
//  - ca: the CAs that the server's certificate must chain to; empty: the system's roots.
//  - cert_chain and private_key: the client's certificate and key, for a server that asks for
//    one; both or neither.
//  - server_name_override: the name the server's certificate is checked against and sent as the
//    TLS server name (SNI) and the calls' :authority, in place of the target's host. For testing,
//    and for servers reached by an address their certificate does not name.
// The server's certificate must name the target's host (or server_name_override) in a DNS or IP
// subject alternative name.
//
// Reloading: when every source given is a file, gRPC re-reads them every refresh_interval (when
// they have changed), for the connections the channel makes from then on. Mixing files and inline
// PEM is an error.
struct TlsOptions {
  PemSource ca;
  PemSource cert_chain;
  PemSource private_key;
  std::string server_name_override;
  // How often gRPC checks watched files for changes (whole seconds, at least 1).
  std::chrono::seconds refresh_interval = kDefaultTlsRefreshInterval;

  // Options whose sources are the files at these paths (empty paths: none).
  static TlsOptions from_files(std::string ca, std::string cert_chain = {},
                               std::string private_key = {}) {
    TlsOptions options;
    options.ca = PemSource::from_file(std::move(ca));
    options.cert_chain = PemSource::from_file(std::move(cert_chain));
    options.private_key = PemSource::from_file(std::move(private_key));
    return options;
  }
};

}  // namespace trellis
