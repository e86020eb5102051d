// TLS and mutual TLS (trellis/tls.hpp) over real loopback sockets, with certificates that openssl
// makes for each test suite in a temporary directory (nothing secret lives in the repository):
//  - Trellis against Trellis, and against python3-grpcio on both sides (tests/python/tls_peer.py);
//  - refusals: a client without a certificate where one is required, a client certificate or a
//    server certificate from a CA the other side does not trust (UNAVAILABLE);
//  - the client's identity as the handler and a layer see it, and an AuthLayer that refuses a
//    client by its common name (PERMISSION_DENIED);
//  - certificate files replaced on disk and picked up by new connections without a restart (a
//    server's certificate and key, a channel's CA);
//  - every way the options can be wrong, each failing build() or Channel::tls() with a status that
//    names the file or the option.
#include "trellis/tls.hpp"

#include <grpc/grpc.h>
#include <grpcpp/support/channel_arguments.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "end_to_end.hpp"
#include "python_peer.hpp"
#include "subprocess.hpp"
#include "trellis/channel.hpp"
#include "trellis/middleware/auth.hpp"
#include "trellis/peer_identity.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/testing/echo.trellis.h"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr auto kCallTimeout = 30s;  // deadline of every call
constexpr auto kPeerBound = 60s;    // a python peer's whole run, or its start
constexpr auto kOpensslBound = 60s;
constexpr char kClientCn[] = "trellis-client";
constexpr char kClientSpiffeId[] = "spiffe://trellis.test/client";

// ------------------------------------------------------------------------- the test PKI

// `name` on the PATH, as an absolute path; empty if it is not there.
std::string find_program(std::string_view name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return fs::absolute(candidate).string();
  }
  return {};
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

void write_file(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// Two unrelated CAs and certificates they signed, made by openssl (EC P-256 keys, valid two
// days) in a fresh directory under the test's temporary directory:
//   ca_a, ca_b            the CAs ("Trellis Test CA A", "... B")
//   server_a, server_b    servers: CN localhost (server_b: CN server-b), SAN DNS:localhost and
//                         IP:127.0.0.1; signed by A and by B
//   client                CN trellis-client, SAN URI:spiffe://trellis.test/client and
//                         DNS:client.trellis.test; signed by A
//   intruder              CN intruder, SAN URI:spiffe://trellis.test/intruder; signed by A
//   client_b              CN trellis-client like client, but signed by B
// Each X has X.pem (the certificate) and X.key (its unencrypted key).
class TestPki {
 public:
  TestPki() {
    std::string openssl = find_program("openssl");
    if (openssl.empty()) {
      error_ = "openssl is not on the PATH (Debian package openssl): cannot make test certificates";
      return;
    }
    std::string pattern = ::testing::TempDir() + "trellis-tls-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      error_ = "mkdtemp " + pattern + " failed";
      return;
    }
    dir_ = pattern;
    ca(openssl, "ca_a", "Trellis Test CA A") && ca(openssl, "ca_b", "Trellis Test CA B") &&
        leaf(openssl, "server_a", "ca_a", "localhost", "DNS:localhost,IP:127.0.0.1",
             "serverAuth") &&
        leaf(openssl, "server_b", "ca_b", "server-b", "DNS:localhost,IP:127.0.0.1", "serverAuth") &&
        leaf(openssl, "client", "ca_a", kClientCn,
             std::string("URI:") + kClientSpiffeId + ",DNS:client.trellis.test", "clientAuth") &&
        leaf(openssl, "intruder", "ca_a", "intruder", "URI:spiffe://trellis.test/intruder",
             "clientAuth") &&
        leaf(openssl, "client_b", "ca_b", kClientCn, std::string("URI:") + kClientSpiffeId,
             "clientAuth") &&
        run(openssl, {"pkey", "-in", path("client.key"), "-aes256", "-passout", "pass:secret",
                      "-out", path("encrypted.key")});
  }
  ~TestPki() {
    std::error_code ignored;
    if (!dir_.empty()) fs::remove_all(dir_, ignored);
  }

  // Why the PKI could not be made; empty when it was.
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }
  // The path of a file in the PKI's directory: "client.pem".
  std::string path(std::string_view file) const { return dir_ + "/" + std::string(file); }
  std::string pem(std::string_view file) const { return read_file(path(file)); }

 private:
  bool ca(const std::string& openssl, const std::string& name, const std::string& cn) {
    return run(openssl,
               {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", path(name + ".key"), "-out", path(name + ".pem"), "-days", "2",
                "-subj", "/O=Trellis Test/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  }

  bool leaf(const std::string& openssl, const std::string& name, const std::string& ca,
            const std::string& cn, const std::string& san, const std::string& usage) {
    return run(openssl, {"req",
                         "-x509",
                         "-newkey",
                         "ec",
                         "-pkeyopt",
                         "ec_paramgen_curve:prime256v1",
                         "-nodes",
                         "-keyout",
                         path(name + ".key"),
                         "-out",
                         path(name + ".pem"),
                         "-days",
                         "2",
                         "-subj",
                         "/O=Trellis Test/CN=" + cn,
                         "-CA",
                         path(ca + ".pem"),
                         "-CAkey",
                         path(ca + ".key"),
                         "-addext",
                         "subjectAltName=" + san,
                         "-addext",
                         "basicConstraints=critical,CA:FALSE",
                         "-addext",
                         "extendedKeyUsage=" + usage});
  }

  bool run(const std::string& openssl, std::vector<std::string> args) {
    args.insert(args.begin(), openssl);
    RunResult result = run_with_deadline(args, {}, deadline_in(kOpensslBound));
    if (result.status.success()) return true;
    error_ = "openssl " + args[1] + " " + result.status.describe() + ":\n" + result.output;
    return false;
  }

  std::string error_;
  std::string dir_;
};

// ------------------------------------------------------------------------- the service

// trellis.testing.Echo that records the identity each call's handler saw, and answers
// "<message> from <common name>" ("anonymous" without a client certificate).
class IdentityEcho final : public EchoService {
 public:
  Task<Result<EchoResponse>> Echo(ServerContext& ctx, const EchoRequest& req) override {
    co_return answer(ctx, req);
  }
  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest& req) override {
    co_return answer(ctx, req);
  }

  std::vector<std::optional<PeerIdentity>> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  EchoResponse answer(ServerContext& ctx, const EchoRequest& req) {
    std::optional<PeerIdentity> identity = ctx.peer_identity();
    EchoResponse response;
    response.set_message(req.message() + " from " +
                         (identity ? identity->common_name : std::string("anonymous")));
    std::lock_guard lock(mu_);
    seen_.push_back(std::move(identity));
    return response;
  }

  mutable std::mutex mu_;
  std::vector<std::optional<PeerIdentity>> seen_;
};

// Arguments that give every channel connections of its own (gRPC shares them between channels
// with equal arguments otherwise): each channel of a test makes a new TLS handshake.
grpc::ChannelArguments own_connections() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return args;
}

EchoRequest with_message(std::string message) {
  EchoRequest req;
  req.set_message(std::move(message));
  return req;
}

// ------------------------------------------------------------------------- the fixture

class TlsTest : public EndToEndTest {
 protected:
  static void SetUpTestSuite() { pki_ = new TestPki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(pki_->error().empty()) << pki_->error();
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
  }

  static const TestPki& pki() { return *pki_; }

  // Server options from the PKI's files.
  static TlsServerOptions server_tls(std::string_view cert = "server_a",
                                     std::string_view client_ca = {}, bool require = false) {
    TlsServerOptions tls = TlsServerOptions::from_files(
        pki().path(std::string(cert) + ".pem"), pki().path(std::string(cert) + ".key"),
        client_ca.empty() ? std::string() : pki().path(std::string(client_ca) + ".pem"));
    tls.require_client_cert = require;
    return tls;
  }

  // Client options from the PKI's files: trusting `ca`, with the certificate `cert` if given.
  static TlsOptions client_tls(std::string_view ca = "ca_a", std::string_view cert = {}) {
    if (cert.empty()) return TlsOptions::from_files(pki().path(std::string(ca) + ".pem"));
    return TlsOptions::from_files(pki().path(std::string(ca) + ".pem"),
                                  pki().path(std::string(cert) + ".pem"),
                                  pki().path(std::string(cert) + ".key"));
  }

  // Starts server_ with `tls` on a loopback port, serving echo_ behind `layer` (if any).
  void start_server(TlsServerOptions tls, BoxLayer layer = {}) {
    Server::Builder builder(*runtime_);
    builder.transport(transport_).add_tls_port("127.0.0.1:0", std::move(tls)).add_service(echo_);
    if (layer) builder.layer(std::move(layer));
    auto server = builder.build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  std::string target() const { return "127.0.0.1:" + std::to_string(server_->port()); }

  // One Echo call on a new TLS channel to `target` (by default the server's) with `tls`.
  Result<EchoResponse> call(const TlsOptions& tls, std::string message = "hello",
                            const std::string& to = {}) {
    Result<Channel> channel = Channel::tls(to.empty() ? target() : to, tls, own_connections());
    if (!channel.ok()) return channel.status();
    return call_on(*channel, std::move(message));
  }

  Result<EchoResponse> call_on(const Channel& channel, std::string message = "hello") {
    CallOptions options;
    options.set_timeout(kCallTimeout);
    return run(EchoClient(channel).Echo(with_message(std::move(message)), std::move(options)));
  }

  static inline TestPki* pki_ = nullptr;
  IdentityEcho echo_;
  Transport transport_ = Transport::grpc;  // of the servers the test builds
};

// The tests of a Trellis TLS server, run on both transports.
class TlsServerTest : public TlsTest, public ::testing::WithParamInterface<Transport> {
 protected:
  void SetUp() override {
    TlsTest::SetUp();
    transport_ = GetParam();
  }
};
TRELLIS_BOTH_TRANSPORTS(TlsServerTest);

// ------------------------------------------------------------------------- Trellis and Trellis

TEST_P(TlsServerTest, TrellisClientCallsTrellisServerOverTls) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls()));
  Result<EchoResponse> reply = call(client_tls());
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "hello from anonymous");
  // A plain TLS port asks for no client certificate: the handler sees no identity.
  ASSERT_EQ(echo_.seen().size(), 1u);
  EXPECT_EQ(echo_.seen()[0], std::nullopt);
}

TEST_P(TlsServerTest, ServerNameOverrideChecksTheCertificateAgainstThatName) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls()));
  TlsOptions tls = client_tls();
  tls.server_name_override = "localhost";  // in server_a's SANs
  Result<EchoResponse> reply = call(tls);
  ASSERT_TRUE(reply.ok()) << reply.status();
  // A name the certificate does not hold fails the handshake.
  tls.server_name_override = "elsewhere.trellis.test";
  reply = call(tls);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
}

TEST_P(TlsServerTest, InlinePemWorksOnBothSides) {
  TlsServerOptions server;
  server.cert_chain = PemSource::from_string(pki().pem("server_a.pem"));
  server.private_key = PemSource::from_string(pki().pem("server_a.key"));
  server.client_ca = PemSource::from_string(pki().pem("ca_a.pem"));
  server.require_client_cert = true;
  ASSERT_NO_FATAL_FAILURE(start_server(std::move(server)));
  TlsOptions client;
  client.ca = PemSource::from_string(pki().pem("ca_a.pem"));
  client.cert_chain = PemSource::from_string(pki().pem("client.pem"));
  client.private_key = PemSource::from_string(pki().pem("client.key"));
  Result<EchoResponse> reply = call(client);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "hello from trellis-client");
}

TEST_P(TlsServerTest, PlaintextClientCannotTalkToATlsPort) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls()));
  Channel plain = Channel::insecure(target(), own_connections());
  Result<EchoResponse> reply = call_on(plain);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  EXPECT_TRUE(echo_.seen().empty());
}

// ------------------------------------------------------------------------- refusals

TEST_P(TlsServerTest, ClientWithoutCertificateIsRefusedWhereMutualTlsIsRequired) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls("server_a", "ca_a", /*require=*/true)));
  Result<EchoResponse> reply = call(client_tls());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  EXPECT_TRUE(echo_.seen().empty()) << "the handler ran for a client without a certificate";
  // The same server serves a client with a certificate.
  reply = call(client_tls("ca_a", "client"));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "hello from trellis-client");
}

TEST_P(TlsServerTest, ClientCertificateFromAnUntrustedCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls("server_a", "ca_a", /*require=*/true)));
  Result<EchoResponse> reply = call(client_tls("ca_a", "client_b"));
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  EXPECT_TRUE(echo_.seen().empty());
}

TEST_P(TlsServerTest, ServerCertificateFromAnotherCaFailsUnavailable) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls("server_a")));
  // Trusting only B, the client rejects server_a (signed by A).
  Result<EchoResponse> reply = call(client_tls("ca_b"));
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  // Trusting the system's roots (no ca), it rejects it too: no public CA signed it.
  reply = call(TlsOptions{});
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  EXPECT_TRUE(echo_.seen().empty());
}

// Without require_client_cert, a client_ca makes the client certificate optional: a client
// without one is served anonymously, one with a certificate is verified and identified.
TEST_P(TlsServerTest, OptionalClientCertificateIsVerifiedWhenPresented) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls("server_a", "ca_a", /*require=*/false)));
  Result<EchoResponse> reply = call(client_tls());
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "hello from anonymous");
  reply = call(client_tls("ca_a", "client"));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "hello from trellis-client");
  // A certificate that does not verify is refused even though none is required.
  reply = call(client_tls("ca_a", "client_b"));
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  EXPECT_EQ(echo_.seen().size(), 2u);
}

// ------------------------------------------------------------------------- identity

TEST_P(TlsServerTest, HandlerAndLayerSeeTheClientIdentity) {
  std::mutex mu;
  std::vector<std::optional<PeerIdentity>> layer_saw;
  ASSERT_NO_FATAL_FAILURE(
      start_server(server_tls("server_a", "ca_a", /*require=*/true), AuthLayer([&](Call& call) {
                     std::lock_guard lock(mu);
                     layer_saw.push_back(call.peer_identity());
                     return Status();
                   })));
  Result<EchoResponse> reply = call(client_tls("ca_a", "client"));
  ASSERT_TRUE(reply.ok()) << reply.status();

  PeerIdentity expected;
  expected.subject = "CN=trellis-client,O=Trellis Test";
  expected.common_name = kClientCn;
  expected.dns_sans = {"client.trellis.test"};
  expected.uri_sans = {kClientSpiffeId};
  ASSERT_EQ(echo_.seen().size(), 1u);
  ASSERT_TRUE(echo_.seen()[0].has_value());
  EXPECT_EQ(echo_.seen()[0]->subject, expected.subject);
  EXPECT_EQ(echo_.seen()[0]->common_name, expected.common_name);
  EXPECT_EQ(echo_.seen()[0]->dns_sans, expected.dns_sans);
  EXPECT_EQ(echo_.seen()[0]->uri_sans, expected.uri_sans);
  EXPECT_TRUE(echo_.seen()[0]->ip_sans.empty());
  EXPECT_TRUE(echo_.seen()[0]->email_sans.empty());
  EXPECT_EQ(echo_.seen()[0], expected);
  std::lock_guard lock(mu);
  ASSERT_EQ(layer_saw.size(), 1u);
  EXPECT_EQ(layer_saw[0], expected);
}

TEST_P(TlsServerTest, InsecurePortHasNoIdentity) {
  auto server = Server::Builder(*runtime_)
                    .transport(transport_)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(echo_)
                    .build();
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(server).value();
  Result<EchoResponse> reply = call_on(Channel::insecure(target(), own_connections()));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "hello from anonymous");
}

// What tonic#511 asks for: authorize on the client's certificate in a layer. Only trellis-client
// (by CN) may call; intruder's certificate is valid (signed by the trusted CA) but not allowed.
TEST_P(TlsServerTest, AuthLayerRefusesAClientWhoseCommonNameIsNotAllowed) {
  ASSERT_NO_FATAL_FAILURE(start_server(
      server_tls("server_a", "ca_a", /*require=*/true), AuthLayer([](Call& call) -> Status {
        std::optional<PeerIdentity> peer = call.peer_identity();
        if (!peer) return Status::unauthenticated("no client certificate");
        if (peer->common_name != kClientCn) {
          return Status::permission_denied("client " + peer->common_name + " may not call " +
                                           std::string(call.method().path));
        }
        return Status();
      })));
  Result<EchoResponse> refused = call(client_tls("ca_a", "intruder"));
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status();
  EXPECT_EQ(refused.status().message(), "client intruder may not call /trellis.testing.Echo/Echo");
  EXPECT_TRUE(echo_.seen().empty()) << "the handler ran for a refused client";

  Result<EchoResponse> allowed = call(client_tls("ca_a", "client"));
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(allowed->message(), "hello from trellis-client");
}

// ------------------------------------------------------------------------- reloading

// The server's certificate files are replaced on disk (each written aside, then renamed over the
// old one) by a certificate from another CA with another CN. New connections see it within the
// refresh interval, without a restart; a connection made before keeps working.
TEST_P(TlsServerTest, ServerPicksUpReplacedCertificateFilesForNewConnections) {
  fs::path live = fs::path(pki().dir()) / ("live-" + std::to_string(::getpid()));
  fs::create_directories(live);
  fs::copy_file(pki().path("server_a.pem"), live / "tls.crt", fs::copy_options::overwrite_existing);
  fs::copy_file(pki().path("server_a.key"), live / "tls.key", fs::copy_options::overwrite_existing);
  TlsServerOptions tls =
      TlsServerOptions::from_files((live / "tls.crt").string(), (live / "tls.key").string());
  tls.refresh_interval = 1s;
  ASSERT_NO_FATAL_FAILURE(start_server(std::move(tls)));

  TlsOptions trusts_a;
  trusts_a.ca = PemSource::from_string(pki().pem("ca_a.pem"));
  TlsOptions trusts_b;
  trusts_b.ca = PemSource::from_string(pki().pem("ca_b.pem"));
  // Before: the server presents server_a.
  Result<Channel> connected_before = Channel::tls(target(), trusts_a, own_connections());
  ASSERT_TRUE(connected_before.ok()) << connected_before.status();
  Result<EchoResponse> reply = call_on(*connected_before, "before");
  ASSERT_TRUE(reply.ok()) << reply.status();
  reply = call(trusts_b);
  ASSERT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();

  // The key first, then the certificate: each file is replaced whole, by a rename.
  for (std::string_view file : {"key", "crt"}) {
    fs::path aside = live / (std::string("next.") + std::string(file));
    fs::path dest = live / (std::string("tls.") + std::string(file));
    write_file(aside, pki().pem(file == "key" ? "server_b.key" : "server_b.pem"));
    fs::rename(aside, dest);
  }

  // Fresh connections until one trusts what the server presents; each attempt is a new channel,
  // so a new TLS handshake. Bounded by the deadline; no sleeping.
  const auto end = std::chrono::steady_clock::now() + kWaitBound;
  int attempts = 0;
  do {
    ++attempts;
    reply = call(trusts_b, "after");
  } while (!reply.ok() && std::chrono::steady_clock::now() < end);
  ASSERT_TRUE(reply.ok()) << "no new connection saw the replaced certificate in "
                          << kWaitBound.count() << " s (" << attempts
                          << " attempts); last: " << reply.status();
  EXPECT_EQ(reply->message(), "after from anonymous");
  // New connections now get server_b only...
  reply = call(trusts_a);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  // ...while the connection made before the change goes on with what it was made with.
  reply = call_on(*connected_before, "still");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message(), "still from anonymous");
}

// The same on the client: a channel whose CA file is replaced trusts the new CA on its next
// connection, without being made again.
TEST_F(TlsTest, ChannelPicksUpAReplacedCaFileForNewConnections) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls("server_b")));
  fs::path live = fs::path(pki().dir()) / ("client-live-" + std::to_string(::getpid()));
  fs::create_directories(live);
  fs::copy_file(pki().path("ca_a.pem"), live / "ca.crt", fs::copy_options::overwrite_existing);
  TlsOptions tls = TlsOptions::from_files((live / "ca.crt").string());
  tls.refresh_interval = 1s;
  // Reconnect quickly after a failed handshake: the test waits for the channel's own next
  // connection.
  grpc::ChannelArguments args = own_connections();
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
  Result<Channel> channel = Channel::tls(target(), tls, args);
  ASSERT_TRUE(channel.ok()) << channel.status();
  Result<EchoResponse> reply = call_on(*channel, "before");
  ASSERT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();

  write_file(live / "next.crt", pki().pem("ca_b.pem"));
  fs::rename(live / "next.crt", live / "ca.crt");

  const auto end = std::chrono::steady_clock::now() + kWaitBound;
  int attempts = 0;
  do {
    ++attempts;
    reply = call_on(*channel, "after");
  } while (!reply.ok() && std::chrono::steady_clock::now() < end);
  ASSERT_TRUE(reply.ok()) << "the channel did not trust the replaced CA file in "
                          << kWaitBound.count() << " s (" << attempts
                          << " attempts); last: " << reply.status();
  EXPECT_EQ(reply->message(), "after from anonymous");
}

// ------------------------------------------------------------------------- ALPN

// The native transport speaks HTTP/2 over TLS only to a client that negotiates it by ALPN (RFC
// 7540 9.2): a client offering h2 gets it, one offering only http/1.1 fails the handshake with
// the no_application_protocol alert. (grpc core lets that handshake finish and closes after.)
TEST_F(TlsTest, NativeTransportNegotiatesH2AndRefusesAClientThatDoesNotOfferIt) {
  transport_ = Transport::native;
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls()));
  // The TLS handshake of a raw client offering `protocols`: its error, and the protocol chosen.
  auto handshake = [&](std::string_view protocols) {
    namespace ssl = boost::asio::ssl;
    boost::asio::io_context io;
    ssl::context context(ssl::context::tls_client);
    context.load_verify_file(pki().path("ca_a.pem"));
    context.set_verify_mode(ssl::verify_peer);
    ssl::stream<boost::asio::ip::tcp::socket> stream(io, context);
    SSL_set_alpn_protos(stream.native_handle(),
                        reinterpret_cast<const unsigned char*>(protocols.data()),
                        static_cast<unsigned int>(protocols.size()));
    boost::system::error_code result = boost::asio::error::timed_out;
    boost::asio::ip::tcp::endpoint server(boost::asio::ip::make_address("127.0.0.1"),
                                          static_cast<unsigned short>(server_->port()));
    stream.next_layer().async_connect(server, [&](const boost::system::error_code& error) {
      if (error) {
        result = error;
        return;
      }
      stream.async_handshake(ssl::stream_base::client,
                             [&](const boost::system::error_code& e) { result = e; });
    });
    io.run_for(kWaitBound);
    const unsigned char* chosen = nullptr;
    unsigned int size = 0;
    SSL_get0_alpn_selected(stream.native_handle(), &chosen, &size);
    return std::make_pair(result, std::string(reinterpret_cast<const char*>(chosen), size));
  };
  using namespace std::string_view_literals;
  auto [error, protocol] = handshake("\x08http/1.1\x02h2"sv);
  EXPECT_FALSE(error) << error.message();
  EXPECT_EQ(protocol, "h2");
  std::tie(error, protocol) = handshake("\x08http/1.1"sv);
  EXPECT_TRUE(error) << "a client without h2 finished the handshake";
  EXPECT_NE(error, boost::asio::error::timed_out);
  EXPECT_NE(error.message().find("no application protocol"), std::string::npos) << error.message();
  EXPECT_EQ(protocol, "");
  // The server serves on.
  Result<EchoResponse> reply = call(client_tls());
  ASSERT_TRUE(reply.ok()) << reply.status();
}

// ------------------------------------------------------------------------- python3-grpcio peers

class TlsPythonPeerTest : public TlsTest {};
class TlsPythonClientTest : public TlsServerTest {};
TRELLIS_BOTH_TRANSPORTS(TlsPythonClientTest);

// A python3-grpcio client (grpc.ssl_channel_credentials) against a Trellis mTLS server: the
// handler sees the python client's certificate; without a certificate it is refused.
TEST_P(TlsPythonClientTest, PythonClientCallsTrellisServer) {
  ASSERT_NO_FATAL_FAILURE(start_server(server_tls("server_a", "ca_a", /*require=*/true)));
  auto client = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "client", "--target", target(), "--ca", pki().path("ca_a.pem"), "--message", "py"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_with_deadline(python("tls_peer.py", std::move(args)), python_env(),
                             deadline_in(kPeerBound));
  };
  RunResult run = client({"--cert", pki().path("client.pem"), "--key", pki().path("client.key")});
  EXPECT_TRUE(run.status.success()) << run.status.describe() << "; output:\n" << run.output;
  EXPECT_EQ(run.output, "reply: py from trellis-client\n");
  ASSERT_EQ(echo_.seen().size(), 1u);
  ASSERT_TRUE(echo_.seen()[0].has_value());
  EXPECT_EQ(echo_.seen()[0]->uri_sans, std::vector<std::string>{kClientSpiffeId});

  run = client({});
  EXPECT_EQ(run.status.exit_code, 1) << run.status.describe() << "; output:\n" << run.output;
  // grpcio may log the failed handshake on stderr first (it does against the native transport,
  // whose alert it reports).
  EXPECT_TRUE(run.output.starts_with("error: UNAVAILABLE") ||
              run.output.find("\nerror: UNAVAILABLE") != std::string::npos)
      << run.output;

  // Over the name in the certificate rather than the address.
  run = client({"--cert", pki().path("client.pem"), "--key", pki().path("client.key"),
                "--server-name", "localhost"});
  EXPECT_EQ(run.output, "reply: py from trellis-client\n") << run.status.describe();
  EXPECT_EQ(echo_.seen().size(), 2u);
}

// The Trellis client against a python3-grpcio mTLS server (grpc.ssl_server_credentials with
// require_client_auth): the python side verifies and names the Trellis client's certificate.
TEST_F(TlsPythonPeerTest, TrellisClientCallsPythonServer) {
  std::string error;
  auto server =
      Subprocess::start(python("tls_peer.py", {"server", "--cert", pki().path("server_a.pem"),
                                               "--key", pki().path("server_a.key"), "--client-ca",
                                               pki().path("ca_a.pem"), "--require-client-cert"}),
                        python_env(), &error);
  ASSERT_NE(server, nullptr) << error;
  std::optional<std::string> line =
      server->wait_for_line("listening on port ", deadline_in(kPeerBound));
  ASSERT_TRUE(line.has_value()) << "tls_peer.py server did not start; output:\n"
                                << server->output();
  std::string python_target = "127.0.0.1:" + line->substr(std::string("listening on port ").size());

  Result<EchoResponse> reply = call(client_tls("ca_a", "client"), "trellis", python_target);
  ASSERT_TRUE(reply.ok()) << reply.status() << "; server output:\n" << server->output();
  EXPECT_EQ(reply->message(), "trellis from trellis-client");

  // Without a client certificate, or trusting another CA: UNAVAILABLE.
  reply = call(client_tls("ca_a"), "anonymous", python_target);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  reply = call(client_tls("ca_b", "client"), "wrong ca", python_target);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();

  ASSERT_TRUE(server->send_signal(SIGTERM));
  ExitStatus status = server->wait(deadline_in(kPeerBound));
  EXPECT_TRUE(status.success()) << status.describe() << "; output:\n" << server->output();
}

// ------------------------------------------------------------------------- wrong options

// Run on both transports: each reads the server's options itself.
class TlsOptionsErrorTest : public TlsServerTest {
 protected:
  // The status build() fails with for a TLS port with `tls`.
  Status build_error(TlsServerOptions tls) {
    auto server = Server::Builder(*runtime_)
                      .transport(transport_)
                      .add_tls_port("127.0.0.1:0", std::move(tls))
                      .add_service(echo_)
                      .build();
    if (server.ok()) return Status::internal("build() succeeded");
    return server.status();
  }
  // The status Channel::tls fails with.
  static Status channel_error(const TlsOptions& tls) {
    Result<Channel> channel = Channel::tls("127.0.0.1:1", tls);
    if (channel.ok()) return Status::internal("Channel::tls succeeded");
    return channel.status();
  }
  static bool mentions(const Status& status, std::string_view text) {
    return status.message().find(text) != std::string_view::npos;
  }
};
TRELLIS_BOTH_TRANSPORTS(TlsOptionsErrorTest);

TEST_P(TlsOptionsErrorTest, MissingFileNamesTheFile) {
  const std::string missing = pki().dir() + "/no-such.pem";
  Status s = build_error(TlsServerOptions::from_files(missing, pki().path("server_a.key")));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(mentions(s, "cert_chain file '" + missing + "'")) << s;
  EXPECT_TRUE(mentions(s, "No such file or directory")) << s;
  EXPECT_TRUE(mentions(s, "TLS port 127.0.0.1:0")) << s;

  s = build_error(TlsServerOptions::from_files(pki().path("server_a.pem"), missing));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(mentions(s, "private_key file '" + missing + "'")) << s;

  s = build_error(TlsServerOptions::from_files(pki().path("server_a.pem"),
                                               pki().path("server_a.key"), missing));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(mentions(s, "client_ca file '" + missing + "'")) << s;

  s = channel_error(TlsOptions::from_files(missing));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(mentions(s, "ca file '" + missing + "'")) << s;
  s = channel_error(
      TlsOptions::from_files(pki().path("ca_a.pem"), missing, pki().path("client.key")));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(mentions(s, "cert_chain file '" + missing + "'")) << s;
}

TEST_P(TlsOptionsErrorTest, UnreadableFileFails) {
  // A directory opens but cannot be read.
  Status s = build_error(TlsServerOptions::from_files(pki().dir(), pki().path("server_a.key")));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(mentions(s, "cert_chain file '" + pki().dir() + "'")) << s;
}

TEST_P(TlsOptionsErrorTest, BadPemNamesTheFile) {
  const std::string garbage = pki().dir() + "/garbage.pem";
  write_file(garbage, "this is not PEM\n");
  Status s = build_error(TlsServerOptions::from_files(garbage, pki().path("server_a.key")));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "cert_chain file '" + garbage + "' holds no PEM certificate")) << s;

  // A certificate whose body is damaged.
  const std::string damaged = pki().dir() + "/damaged.pem";
  std::string pem = pki().pem("server_a.pem");
  pem.replace(pem.find('\n') + 20, 8, "!!!!!!!!");
  write_file(damaged, pem);
  s = build_error(TlsServerOptions::from_files(damaged, pki().path("server_a.key")));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "cert_chain file '" + damaged + "'")) << s;

  // A certificate where the key should be, and an encrypted key.
  s = build_error(
      TlsServerOptions::from_files(pki().path("server_a.pem"), pki().path("server_a.pem")));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "private_key file '" + pki().path("server_a.pem") +
                              "' holds no unencrypted PEM private key"))
      << s;
  s = build_error(
      TlsServerOptions::from_files(pki().path("server_a.pem"), pki().path("encrypted.key")));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "private_key file '" + pki().path("encrypted.key") + "'")) << s;

  // A client CA bundle without a certificate.
  s = build_error(TlsServerOptions::from_files(pki().path("server_a.pem"),
                                               pki().path("server_a.key"), garbage));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "client_ca file '" + garbage + "'")) << s;

  s = channel_error(TlsOptions::from_files(garbage));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "ca file '" + garbage + "' holds no PEM certificate")) << s;

  // Inline PEM is named as such.
  TlsOptions inline_garbage;
  inline_garbage.ca = PemSource::from_string("not PEM either");
  s = channel_error(inline_garbage);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "ca (inline PEM) holds no PEM certificate")) << s;
}

TEST_P(TlsOptionsErrorTest, KeyThatDoesNotMatchTheCertificateFails) {
  Status s = build_error(
      TlsServerOptions::from_files(pki().path("server_a.pem"), pki().path("client.key")));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "private_key file '" + pki().path("client.key") +
                              "' is not the key of the first certificate of the cert_chain file '" +
                              pki().path("server_a.pem") + "'"))
      << s;
  s = channel_error(TlsOptions::from_files(pki().path("ca_a.pem"), pki().path("client.pem"),
                                           pki().path("intruder.key")));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "is not the key of the first certificate")) << s;
}

TEST_P(TlsOptionsErrorTest, InconsistentOptionsFail) {
  // Mutual TLS without a CA to verify clients against: never a silently open port.
  TlsServerOptions no_ca =
      TlsServerOptions::from_files(pki().path("server_a.pem"), pki().path("server_a.key"));
  no_ca.require_client_cert = true;
  Status s = build_error(no_ca);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "require_client_cert needs a client_ca")) << s;

  // No certificate or no key.
  s = build_error(TlsServerOptions{});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "needs a cert_chain and a private_key")) << s;

  // Files and inline PEM mixed.
  TlsServerOptions mixed =
      TlsServerOptions::from_files(pki().path("server_a.pem"), pki().path("server_a.key"));
  mixed.client_ca = PemSource::from_string(pki().pem("ca_a.pem"));
  s = build_error(mixed);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "mix files and inline PEM")) << s;

  // A refresh interval under a second.
  TlsServerOptions zero =
      TlsServerOptions::from_files(pki().path("server_a.pem"), pki().path("server_a.key"));
  zero.refresh_interval = 0s;
  s = build_error(zero);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "refresh_interval")) << s;

  // A client certificate without its key.
  TlsOptions half = TlsOptions::from_files(pki().path("ca_a.pem"), pki().path("client.pem"));
  s = channel_error(half);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(mentions(s, "both a cert_chain and a private_key")) << s;
}

// A failed TLS port starts nothing and claims nothing: the other ports of the same builder are
// not bound, and its services can serve the server built next.
TEST_P(TlsOptionsErrorTest, FailedTlsPortLeavesNoServer) {
  auto server =
      Server::Builder(*runtime_)
          .transport(transport_)
          .add_insecure_port("127.0.0.1:0")
          .add_tls_port("127.0.0.1:0", TlsServerOptions::from_files(pki().dir() + "/none.pem",
                                                                    pki().dir() + "/none.key"))
          .add_service(echo_)
          .build();
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), StatusCode::kNotFound) << server.status();

  ASSERT_NO_FATAL_FAILURE(start_server(server_tls()));
  Result<EchoResponse> reply = call(client_tls());
  ASSERT_TRUE(reply.ok()) << reply.status();
}

}  // namespace
}  // namespace trellis::testing
