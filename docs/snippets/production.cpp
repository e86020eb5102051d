// The snippets of docs/production.md, compiled by the build (target docs_snippets); the test
// docs_snippets checks that every region between "[START name]" and "[END name]" appears in the
// document word for word. Edit them here, then copy them there.
#include <chrono>
#include <memory>
#include <string>

#include "trellis/call.hpp"
#include "trellis/call_options.hpp"
#include "trellis/channel.hpp"
#include "trellis/channel_builder.hpp"
#include "trellis/health.hpp"
#include "trellis/middleware/auth.hpp"
#include "trellis/middleware/retry.hpp"
#include "trellis/peer_identity.hpp"
#include "trellis/reflection.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/server_context.hpp"
#include "trellis/tls.hpp"

namespace snippets {

using namespace std::chrono_literals;

trellis::Result<std::unique_ptr<trellis::Server>> serve_tls(trellis::Runtime& runtime,
                                                            trellis::Service& greeter) {
  // [START tls server]
  trellis::TlsServerOptions tls = trellis::TlsServerOptions::from_files(
      "/etc/greeter/tls/tls.crt", "/etc/greeter/tls/tls.key", "/etc/greeter/tls/ca.crt");
  tls.require_client_cert = true;  // mutual TLS: a client without a certificate is refused
  auto server = trellis::Server::Builder(runtime)
                    .add_tls_port("0.0.0.0:50051", std::move(tls))
                    .add_service(greeter)
                    .build();
  // A missing file fails here, naming it: "NOT_FOUND: TLS port 0.0.0.0:50051: cannot read the
  // cert_chain file '/etc/greeter/tls/tls.crt': No such file or directory".
  // [END tls server]
  return server;
}

trellis::Result<trellis::Channel> tls_channel() {
  // [START tls client]
  trellis::TlsOptions tls = trellis::TlsOptions::from_files(
      "/etc/greeter/tls/ca.crt",  // whom to trust; "": system roots
      "/etc/greeter/tls/client.crt", "/etc/greeter/tls/client.key");  // mutual TLS only
  trellis::Result<trellis::Channel> channel = trellis::Channel::tls("greeter:50051", tls);
  // [END tls client]
  return channel;
}

trellis::Status inline_pem(const std::string& ca_pem) {
  // [START tls inline]
  trellis::TlsOptions tls;
  tls.ca = trellis::PemSource::from_string(ca_pem);  // "-----BEGIN CERTIFICATE-----\n..."
  tls.server_name_override = "greeter.internal";     // the name in the server's certificate
  auto channel = trellis::Channel::tls("10.0.0.7:50051", tls);
  // [END tls inline]
  return channel.status();
}

trellis::Task<trellis::Result<std::string>> who(trellis::ServerContext& ctx) {
  // [START tls identity handler]
  // In a handler: the verified client certificate (nullopt without mutual TLS).
  std::optional<trellis::PeerIdentity> peer = ctx.peer_identity();
  if (!peer) co_return trellis::Status::unauthenticated("a client certificate is required");
  // peer->subject      "CN=billing,O=Example"
  // peer->common_name  "billing"
  // peer->uri_sans     {"spiffe://example.org/billing"}; also dns_sans, ip_sans, email_sans
  co_return "Hello " + peer->common_name;
  // [END tls identity handler]
}

void authorize(trellis::Server::Builder& builder) {
  // [START tls identity layer]
  // Every call of the server: only workloads of the example.org trust domain.
  builder.layer(trellis::AuthLayer([](trellis::Call& call) -> trellis::Status {
    std::optional<trellis::PeerIdentity> peer = call.peer_identity();
    if (!peer) return trellis::Status::unauthenticated("a client certificate is required");
    for (const std::string& uri : peer->uri_sans) {
      if (uri.starts_with("spiffe://example.org/")) return trellis::Status();
    }
    return trellis::Status::permission_denied("client " + peer->common_name + " is not allowed");
  }));
  // [END tls identity layer]
}

void reload() {
  // [START tls reload]
  trellis::TlsServerOptions tls =
      trellis::TlsServerOptions::from_files("/etc/greeter/tls/tls.crt", "/etc/greeter/tls/tls.key");
  tls.refresh_interval = 10s;  // checked for changes every 10 s (default 60 s)
  // [END tls reload]
}

// [START health]
// One HealthService per server; it must outlive the server.
trellis::HealthService health;

std::unique_ptr<trellis::Server> serve(trellis::Runtime& runtime, trellis::Service& greeter) {
  trellis::HealthReporter reporter = health.reporter();
  reporter.set_status("helloworld.Greeter", trellis::ServingStatus::kNotServing);
  auto server = trellis::Server::Builder(runtime)
                    .add_insecure_port("0.0.0.0:50051")
                    .add_service(greeter)
                    .add_service(health.service())
                    .build()
                    .value();
  // ... once the caches are warm:
  reporter.set_status("helloworld.Greeter", trellis::ServingStatus::kServing);
  return server;
}
// At shutdown, server->shutdown(grace) turns every status NOT_SERVING first, ends the watches,
// then drains.
// [END health]

// [START reflection]
// One ReflectionService per server; it must outlive the server.
trellis::ReflectionService reflection;

std::unique_ptr<trellis::Server> serve_reflected(trellis::Runtime& runtime,
                                                 trellis::Service& greeter) {
  return trellis::Server::Builder(runtime)
      .add_insecure_port("0.0.0.0:50051")
      .add_service(greeter)
      .add_service(health.service())
      .add_service(reflection.v1())       // grpc.reflection.v1.ServerReflection
      .add_service(reflection.v1alpha())  // the same, under the name older tools ask for
      .build()
      .value();
}
// [END reflection]

trellis::Task<void> respond_compressed(trellis::ServerContext& ctx) {
  // [START handler compression]
  ctx.set_compression(trellis::Compression::kGzip);  // this call's responses
  // [END handler compression]
  co_return;
}

void limits(trellis::Runtime& runtime, trellis::Service& greeter) {
  // [START server options]
  auto server = trellis::Server::Builder(runtime)
                    .add_insecure_port("0.0.0.0:50051")
                    .add_service(greeter)
                    .default_compression(trellis::Compression::kGzip)
                    .max_receive_message_size(16 << 20)  // 16 MiB
                    .max_send_message_size(16 << 20)
                    .keepalive({.time = 30s, .timeout = 10s})
                    .min_ping_interval(10s)  // clients may ping every 10 s
                    .max_connection_idle(5min)
                    .max_connection_age(30min, /*grace=*/30s)
                    .max_concurrent_streams(1000)
                    .build();
  // [END server options]
  (void)server;
}

void native_transport(trellis::Runtime& runtime, trellis::Service& greeter) {
  // [START native transport]
  auto server = trellis::Server::Builder(runtime)
                    .transport(trellis::Transport::native)
                    .add_insecure_port("0.0.0.0:50051")
                    .add_service(greeter)
                    .build();
  // [END native transport]
  (void)server;
}

void channel_options() {
  // [START channel options]
  trellis::Channel channel = trellis::Channel::Builder("dns:///greeter.prod.svc:50051")
                                 .load_balancing(trellis::LoadBalancing::kRoundRobin)
                                 .default_compression(trellis::Compression::kGzip)
                                 .max_receive_message_size(16 << 20)
                                 .keepalive({.time = 30s, .timeout = 10s})
                                 .tls(trellis::TlsOptions::from_files("/etc/greeter/ca.crt"))
                                 .build()
                                 .value();
  // Per call: compression and wait-for-ready.
  trellis::CallOptions options;
  options.set_compression(trellis::Compression::kNone).set_wait_for_ready(true);
  // [END channel options]
  (void)options;
}

trellis::Task<void> load_balanced() {
  // [START load balancing]
  trellis::RetryPolicy policy;  // UNAVAILABLE, idempotent methods, 3 attempts
  trellis::Channel channel =
      trellis::Channel::Builder("ipv4:10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051")
          .load_balancing(trellis::LoadBalancing::kRoundRobin)
          .build()
          .value()
          .with_layer(trellis::RetryLayer(policy));
  // Connect before the first call, or give up after 10 s.
  if (!co_await channel.wait_until_ready(std::chrono::system_clock::now() + 10s)) {
    co_return;  // still CONNECTING or TRANSIENT_FAILURE
  }
  // Follow the connectivity.
  trellis::ConnectivityState state = channel.state();
  while (co_await channel.wait_for_state_change(state, std::chrono::system_clock::now() + 1min)) {
    state = channel.state();
  }
  // [END load balancing]
}

}  // namespace snippets
