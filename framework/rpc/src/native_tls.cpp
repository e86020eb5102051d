#include "native_tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio/buffer.hpp>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "log.hpp"
#include "thread_setup.hpp"

namespace trellis::detail {
namespace {

namespace ssl = boost::asio::ssl;

// ALPN (RFC 7301): the server picks "h2" from the protocols the client offers. A client that
// offers others but not h2 is refused with the no_application_protocol alert, as RFC 7540 9.2
// wants for HTTP/2 over TLS; one that offers none is served (the callback is not called).
int select_h2(SSL*, const unsigned char** out, unsigned char* out_size, const unsigned char* in,
              unsigned int in_size, void*) {
  for (unsigned int i = 0; i < in_size;) {
    const unsigned int size = in[i];
    if (i + 1 + size > in_size) break;
    if (size == 2 && std::memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *out_size = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + size;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

Result<std::shared_ptr<ssl::context>> make_context(const ServerTlsPem& pem,
                                                   bool require_client_cert) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code error;
  // HTTP/2 needs TLS 1.2 or later and forbids renegotiation (RFC 7540 9.2).
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1 | ssl::context::no_compression,
                       error);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
  if (!error) context->use_certificate_chain(boost::asio::buffer(pem.cert_chain), error);
  if (!error) {
    context->use_private_key(boost::asio::buffer(pem.private_key), ssl::context::pem, error);
  }
  if (!error && !pem.client_ca.empty()) {
    context->add_certificate_authority(boost::asio::buffer(pem.client_ca), error);
  }
  if (error) {
    ERR_clear_error();
    return Status::invalid_argument(
        absl::StrCat("OpenSSL refused the TLS port's PEM: ", error.message()));
  }
  if (pem.client_ca.empty()) {
    context->set_verify_mode(ssl::verify_none);
  } else {
    context->set_verify_mode(ssl::verify_peer |
                             (require_client_cert ? ssl::verify_fail_if_no_peer_cert : 0));
  }
  // Session resumption with client certificates needs a context id (OpenSSL refuses to resume
  // without one).
  static constexpr unsigned char kSessionContext[] = "trellis";
  SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1);
  SSL_CTX_set_alpn_select_cb(native, select_h2, nullptr);
  return context;
}

std::string text_of(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

}  // namespace

Result<std::unique_ptr<NativeTlsPort>> NativeTlsPort::make(const TlsServerOptions& options) {
  Result<ServerTlsPem> pem = read_server_tls(options);
  if (!pem.ok()) return pem.status();
  auto context = make_context(*pem, options.require_client_cert);
  if (!context.ok()) return context.status();
  return std::unique_ptr<NativeTlsPort>(
      new NativeTlsPort(options, std::move(pem).value(), std::move(context).value()));
}

NativeTlsPort::NativeTlsPort(TlsServerOptions options, ServerTlsPem pem,
                             std::shared_ptr<boost::asio::ssl::context> context)
    : options_(std::move(options)), pem_(std::move(pem)), context_(std::move(context)) {
  if (pem_.files) watcher_ = std::thread([this] { watch(); });
}

NativeTlsPort::~NativeTlsPort() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

std::shared_ptr<boost::asio::ssl::context> NativeTlsPort::context() const {
  std::lock_guard lock(mu_);
  return context_;
}

void NativeTlsPort::watch() {
  block_termination_signals();
  name_thread("trellis-tls", 0);
  const auto interval = std::chrono::seconds(pem_.refresh_seconds);
  std::string last_error;  // logged once, not every interval
  std::unique_lock lock(mu_);
  while (!wake_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    Result<ServerTlsPem> pem = read_server_tls(options_);
    Status failed = pem.status();
    if (pem.ok() && (pem->cert_chain != pem_.cert_chain || pem->private_key != pem_.private_key ||
                     pem->client_ca != pem_.client_ca)) {
      auto context = make_context(*pem, options_.require_client_cert);
      if (context.ok()) {
        pem_ = std::move(pem).value();
        last_error.clear();
        lock.lock();
        context_ = std::move(context).value();
        continue;
      }
      failed = context.status();
    }
    if (!failed.ok()) {
      std::string text =
          absl::StrCat("TLS port: the changed certificate files are not used: ", failed.message(),
                       " (new connections keep the last good ones)");
      if (text != last_error) log(LogLevel::kWarning, text);
      last_error = std::move(text);
    }
    lock.lock();
  }
}

std::optional<PeerIdentity> verified_peer_identity(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  PeerIdentity identity;
  X509_NAME* subject = X509_get_subject_name(cert);
  // As gRPC renders it: RFC 2253, most specific first.
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (X509_NAME_print_ex(bio, subject, 0, XN_FLAG_RFC2253) >= 0) {
      BUF_MEM* text = nullptr;
      BIO_get_mem_ptr(bio, &text);
      if (text != nullptr) identity.subject.assign(text->data, text->length);
    }
    BIO_free(bio);
  }
  if (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0) {
    unsigned char* utf8 = nullptr;
    int size =
        ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
    if (size >= 0) {
      identity.common_name.assign(reinterpret_cast<const char*>(utf8),
                                  static_cast<std::size_t>(size));
      OPENSSL_free(utf8);
    }
  }
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    switch (name->type) {
      case GEN_DNS:
        identity.dns_sans.push_back(text_of(name->d.dNSName));
        break;
      case GEN_URI:
        identity.uri_sans.push_back(text_of(name->d.uniformResourceIdentifier));
        break;
      case GEN_EMAIL:
        identity.email_sans.push_back(text_of(name->d.rfc822Name));
        break;
      case GEN_IPADD: {
        const int size = ASN1_STRING_length(name->d.iPAddress);
        char text[INET6_ADDRSTRLEN] = {};
        if ((size == 4 || size == 16) &&
            inet_ntop(size == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(name->d.iPAddress),
                      text, sizeof text) != nullptr) {
          identity.ip_sans.emplace_back(text);
        }
        break;
      }
      default:
        break;
    }
  }
  GENERAL_NAMES_free(names);
  return identity;
}

}  // namespace trellis::detail
