// trellis::PeerIdentity: who is at the other end of a mutual-TLS connection, from the X.509
// certificate it presented and the server verified.
#pragma once

#include <string>
#include <vector>

namespace trellis {

// The verified certificate of a client, as a handler sees it in ServerContext::peer_identity() and
// a server layer in Call::peer_identity(). Only a server that asks clients for a certificate
// (TlsServerOptions::client_ca) ever has one, and only for a client that presented one the server
// verified against client_ca: an insecure port, a TLS port without client_ca and a client without
// a certificate all yield std::nullopt.
//
// Authorize on the subject alternative names when you can (a SPIFFE ID in uri_sans, a DNS name),
// on common_name otherwise: names are what a CA vouches for, and the same CN may appear under
// several CAs (only the CAs in client_ca are trusted, though).
struct PeerIdentity {
  // The subject's distinguished name as gRPC renders it (RFC 2253, most specific first):
  // "CN=client,O=Trellis Test".
  std::string subject;
  // The subject's common name (CN); empty if it has none.
  std::string common_name;
  // The subject alternative names by type, each in the certificate's order.
  std::vector<std::string> dns_sans;    // "client.trellis.test"
  std::vector<std::string> uri_sans;    // "spiffe://trellis.test/client"
  std::vector<std::string> ip_sans;     // "127.0.0.1", "::1"
  std::vector<std::string> email_sans;  // "ops@trellis.test"

  friend bool operator==(const PeerIdentity&, const PeerIdentity&) = default;
};

}  // namespace trellis
