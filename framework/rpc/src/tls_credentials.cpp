#include "tls_credentials.hpp"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/support/channel_arguments.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace trellis::detail {
namespace {

using grpc::experimental::CertificateProviderInterface;
using grpc::experimental::FileWatcherCertificateProvider;
using grpc::experimental::IdentityKeyCertPair;
using grpc::experimental::StaticDataCertificateProvider;

// One PEM source of a set of options: what it is for, for messages, and where it comes from.
struct Source {
  const char* what;  // "cert_chain"
  const PemSource* source;
};

// "cert_chain file '/etc/tls.crt'" or "cert_chain (inline PEM)".
std::string describe(const Source& s) {
  if (s.source->is_file()) return absl::StrCat(s.what, " file '", s.source->path(), "'");
  return absl::StrCat(s.what, " (inline PEM)");
}

// The PEM of a source: a string's text, or a file's content read now.
Result<std::string> read_pem(const Source& s) {
  if (!s.source->is_file()) return s.source->pem();
  const std::string& path = s.source->path();
  std::FILE* file = std::fopen(path.c_str(), "rb");
  std::string content;
  int error = 0;
  if (file == nullptr) {
    error = errno;
  } else {
    char buffer[8192];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) content.append(buffer, n);
    if (std::ferror(file)) error = errno != 0 ? errno : EIO;
    std::fclose(file);
  }
  if (error != 0) {
    std::string message = absl::StrCat("cannot read the ", describe(s), ": ", std::strerror(error));
    if (error == ENOENT) return Status::not_found(std::move(message));
    if (error == EACCES || error == EPERM) return Status::permission_denied(std::move(message));
    return Status::failed_precondition(std::move(message));
  }
  return content;
}

// OpenSSL's reason for the last error of this thread, and the error queue cleared.
std::string openssl_error() {
  unsigned long code = ERR_peek_last_error();
  char text[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return text;
}

// Never prompts for a passphrase (OpenSSL's default would ask on the terminal): an encrypted key
// fails to load.
int no_passphrase(char*, int, int, void*) { return 0; }

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Certificate = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

Bio memory_bio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The certificates of a PEM bundle, in order: at least one, each well-formed.
Result<std::vector<Certificate>> parse_certificates(const Source& s, const std::string& pem) {
  ERR_clear_error();
  Bio bio = memory_bio(pem);
  std::vector<Certificate> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr)) {
    certs.emplace_back(cert);
  }
  // The loop ends at the end of the input (PEM "no start line") or at a malformed certificate.
  unsigned long code = ERR_peek_last_error();
  bool at_end = code == 0 ||
                (ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE);
  if (!at_end) {
    return Status::invalid_argument(
        absl::StrCat("the ", describe(s), " holds a malformed certificate: ", openssl_error()));
  }
  ERR_clear_error();
  if (certs.empty()) {
    return Status::invalid_argument(
        absl::StrCat("the ", describe(s), " holds no PEM certificate (BEGIN CERTIFICATE)"));
  }
  return certs;
}

Result<Key> parse_private_key(const Source& s, const std::string& pem) {
  ERR_clear_error();
  Bio bio = memory_bio(pem);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (key == nullptr) {
    return Status::invalid_argument(absl::StrCat(
        "the ", describe(s), " holds no unencrypted PEM private key: ", openssl_error()));
  }
  return key;
}

// The PEM of an identity (certificate chain and key), checked: both well-formed, and the key the
// one of the first certificate.
Result<IdentityKeyCertPair> read_identity(const Source& chain, const Source& key) {
  Result<std::string> chain_pem = read_pem(chain);
  if (!chain_pem.ok()) return chain_pem.status();
  Result<std::string> key_pem = read_pem(key);
  if (!key_pem.ok()) return key_pem.status();
  auto certs = parse_certificates(chain, *chain_pem);
  if (!certs.ok()) return certs.status();
  auto parsed_key = parse_private_key(key, *key_pem);
  if (!parsed_key.ok()) return parsed_key.status();
  if (X509_check_private_key(certs->front().get(), parsed_key->get()) != 1) {
    ERR_clear_error();
    return Status::invalid_argument(absl::StrCat("the ", describe(key),
                                                 " is not the key of the first certificate of the ",
                                                 describe(chain)));
  }
  return IdentityKeyCertPair{std::move(key_pem).value(), std::move(chain_pem).value()};
}

// The PEM of a CA bundle, checked; empty for an empty source.
Result<std::string> read_roots(const Source& ca) {
  if (ca.source->empty()) return std::string();
  Result<std::string> pem = read_pem(ca);
  if (!pem.ok()) return pem;
  auto certs = parse_certificates(ca, *pem);
  if (!certs.ok()) return certs.status();
  return pem;
}

// Whether the given (non-empty) sources are all files; an error when files and inline PEM mix.
Result<bool> all_files(std::initializer_list<Source> sources) {
  const Source* file = nullptr;
  const Source* string = nullptr;
  for (const Source& s : sources) {
    if (s.source->empty()) continue;
    (s.source->is_file() ? file : string) = &s;
  }
  if (file != nullptr && string != nullptr) {
    return Status::invalid_argument(absl::StrCat(
        "the ", describe(*file), " and the ", describe(*string),
        " mix files and inline PEM: give all as files (which are watched for changes) or all "
        "inline"));
  }
  return file != nullptr;
}

Result<unsigned int> refresh_seconds(std::chrono::seconds interval) {
  if (interval.count() < 1) {
    return Status::invalid_argument(
        absl::StrCat("refresh_interval must be at least 1 s, not ", interval.count(), " s"));
  }
  return static_cast<unsigned int>(std::min<std::chrono::seconds::rep>(interval.count(), 1 << 30));
}

}  // namespace

Result<ServerTlsPem> read_server_tls(const TlsServerOptions& options) {
  const Source chain{"cert_chain", &options.cert_chain};
  const Source key{"private_key", &options.private_key};
  const Source client_ca{"client_ca", &options.client_ca};
  if (options.cert_chain.empty() || options.private_key.empty()) {
    return Status::invalid_argument(
        "a TLS port needs a cert_chain and a private_key (TlsServerOptions)");
  }
  if (options.require_client_cert && options.client_ca.empty()) {
    return Status::invalid_argument(
        "require_client_cert needs a client_ca to verify client certificates against");
  }
  Result<bool> files = all_files({chain, key, client_ca});
  if (!files.ok()) return files.status();
  Result<unsigned int> refresh = refresh_seconds(options.refresh_interval);
  if (!refresh.ok()) return refresh.status();
  Result<IdentityKeyCertPair> identity = read_identity(chain, key);
  if (!identity.ok()) return identity.status();
  Result<std::string> roots = read_roots(client_ca);
  if (!roots.ok()) return roots.status();
  ServerTlsPem pem;
  pem.cert_chain = std::move(identity->certificate_chain);
  pem.private_key = std::move(identity->private_key);
  pem.client_ca = std::move(roots).value();
  pem.files = *files;
  pem.refresh_seconds = *refresh;
  return pem;
}

Result<std::shared_ptr<grpc::ServerCredentials>> make_server_credentials(
    const TlsServerOptions& options) {
  Result<ServerTlsPem> pem = read_server_tls(options);
  if (!pem.ok()) return pem.status();
  std::shared_ptr<CertificateProviderInterface> provider;
  if (pem->files) {
    provider = std::make_shared<FileWatcherCertificateProvider>(
        options.private_key.path(), options.cert_chain.path(), options.client_ca.path(),
        pem->refresh_seconds);
  } else {
    provider = std::make_shared<StaticDataCertificateProvider>(
        pem->client_ca,
        std::vector<IdentityKeyCertPair>{IdentityKeyCertPair{pem->private_key, pem->cert_chain}});
  }
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.client_ca.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(options.require_client_cert
                                  ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                  : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::experimental::TlsServerCredentials(tls);
  if (credentials == nullptr) return Status::internal("gRPC made no TLS server credentials");
  return credentials;
}

Result<std::shared_ptr<grpc::ChannelCredentials>> make_channel_credentials(
    const TlsOptions& options, grpc::ChannelArguments& args) {
  const Source ca{"ca", &options.ca};
  const Source chain{"cert_chain", &options.cert_chain};
  const Source key{"private_key", &options.private_key};
  if (options.cert_chain.empty() != options.private_key.empty()) {
    return Status::invalid_argument(
        "a client certificate needs both a cert_chain and a private_key (TlsOptions)");
  }
  const bool has_identity = !options.cert_chain.empty();
  Result<bool> files = all_files({ca, chain, key});
  if (!files.ok()) return files.status();
  Result<unsigned int> refresh = refresh_seconds(options.refresh_interval);
  if (!refresh.ok()) return refresh.status();
  std::vector<IdentityKeyCertPair> identity;
  if (has_identity) {
    Result<IdentityKeyCertPair> pair = read_identity(chain, key);
    if (!pair.ok()) return pair.status();
    identity.push_back(std::move(pair).value());
  }
  Result<std::string> roots = read_roots(ca);
  if (!roots.ok()) return roots.status();

  grpc::experimental::TlsChannelCredentialsOptions tls;
  // Without a provider (no CA, no identity), gRPC trusts the system's roots.
  if (!options.ca.empty() || has_identity) {
    std::shared_ptr<CertificateProviderInterface> provider;
    if (*files) {
      provider = std::make_shared<FileWatcherCertificateProvider>(
          options.private_key.path(), options.cert_chain.path(), options.ca.path(), *refresh);
    } else {
      provider = std::make_shared<StaticDataCertificateProvider>(*roots, identity);
    }
    tls.set_certificate_provider(std::move(provider));
    if (!options.ca.empty()) tls.watch_root_certs();
    if (has_identity) tls.watch_identity_key_cert_pairs();
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::experimental::TlsCredentials(tls);
  if (credentials == nullptr) return Status::internal("gRPC made no TLS channel credentials");
  if (!options.server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.server_name_override);
  }
  return credentials;
}

std::optional<PeerIdentity> peer_identity_of(const grpc::AuthContext& auth_context) {
  if (!auth_context.IsPeerAuthenticated()) return std::nullopt;
  auto values = [&](const char* name) {
    std::vector<std::string> out;
    for (const grpc::string_ref& v : auth_context.FindPropertyValues(name)) {
      out.emplace_back(v.data(), v.size());
    }
    return out;
  };
  std::vector<std::string> subject = values(GRPC_X509_SUBJECT_PROPERTY_NAME);
  if (subject.empty()) return std::nullopt;  // authenticated, but not by an X.509 certificate
  PeerIdentity identity;
  identity.subject = std::move(subject.front());
  if (auto cn = values(GRPC_X509_CN_PROPERTY_NAME); !cn.empty()) {
    identity.common_name = std::move(cn.front());
  }
  identity.dns_sans = values(GRPC_PEER_DNS_PROPERTY_NAME);
  identity.uri_sans = values(GRPC_PEER_URI_PROPERTY_NAME);
  identity.ip_sans = values(GRPC_PEER_IP_PROPERTY_NAME);
  identity.email_sans = values(GRPC_PEER_EMAIL_PROPERTY_NAME);
  return identity;
}

}  // namespace trellis::detail
