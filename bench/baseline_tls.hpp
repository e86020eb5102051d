// Server credentials for the plain grpc++ baselines (--tls_cert and --tls_key), so that they can
// be measured over TLS as the Trellis servers are.
#pragma once

#include <grpcpp/security/server_credentials.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

namespace trellis::bench {

// TLS with the PEM certificate chain and key in the files `cert` and `key`, or plaintext when
// both are empty. Exits with status 2, naming the file, when one is given and cannot be read.
inline std::shared_ptr<grpc::ServerCredentials> baseline_credentials(const std::string& cert,
                                                                     const std::string& key) {
  if (cert.empty() && key.empty()) return grpc::InsecureServerCredentials();
  auto read = [](const std::string& path) {
    std::ifstream file(path);
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (!file || text.empty()) {
      std::fprintf(stderr, "cannot read the PEM file '%s' (--tls_cert and --tls_key go together)\n",
                   path.c_str());
      std::exit(2);
    }
    return text;
  };
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({read(key), read(cert)});
  return grpc::SslServerCredentials(options);
}

}  // namespace trellis::bench
