// Internal: TLS on the native transport. A TLS port's OpenSSL context (TLS 1.2 and up, ALPN "h2",
// client certificates as TlsServerOptions asks), kept current with the options' files, and the
// identity of the client certificate a connection verified.
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "tls_credentials.hpp"
#include "trellis/peer_identity.hpp"
#include "trellis/result.hpp"
#include "trellis/tls.hpp"

namespace trellis::detail {

class NativeTlsPort {
 public:
  // Reads and checks the options' PEM now, on the calling thread (the same checks and messages
  // as make_server_credentials), and makes the context. When every source is a file, a thread
  // of the port's own re-reads them every refresh_interval: a change that reads and checks
  // cleanly becomes the context of the connections accepted from then on; one that does not
  // (a certificate replaced before its key) is logged, and the last good context stays.
  static Result<std::unique_ptr<NativeTlsPort>> make(const TlsServerOptions& options);
  ~NativeTlsPort();
  NativeTlsPort(const NativeTlsPort&) = delete;
  NativeTlsPort& operator=(const NativeTlsPort&) = delete;

  // The context a new connection handshakes with. Any thread.
  std::shared_ptr<boost::asio::ssl::context> context() const;

 private:
  NativeTlsPort(TlsServerOptions options, ServerTlsPem pem,
                std::shared_ptr<boost::asio::ssl::context> context);
  void watch();

  const TlsServerOptions options_;
  ServerTlsPem pem_;  // what context_ was made from; the watcher's after construction
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::shared_ptr<boost::asio::ssl::context> context_;
  std::thread watcher_;  // last: started once the rest is made
};

// The identity in the certificate the client of `ssl` presented and the handshake verified;
// nullopt without one.
std::optional<PeerIdentity> verified_peer_identity(SSL* ssl);

}  // namespace trellis::detail
