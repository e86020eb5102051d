// trellis::Transport: which HTTP/2 implementation carries a server's calls.
#pragma once

#include <string_view>

#include "trellis/result.hpp"

namespace trellis {

// Chosen with Server::Builder::transport. Handlers, services and layers are the same on both;
// docs/architecture.md ("The native transport") says where the two differ on the wire.
enum class Transport {
  // grpc core (the default): every option of Server::Builder, TLS and unix sockets.
  grpc,
  // Trellis's own HTTP/2 server on nghttp2 and the workers' Asio reactors: a fraction of grpc
  // core's CPU per call and per message (docs/performance.md). TCP and unix sockets, in the clear
  // and in TLS (OpenSSL), and every typed option of Server::Builder; configure, which adjusts a
  // grpc::ServerBuilder, makes build() fail rather than be ignored. Outgoing calls still go
  // through grpc core.
  native,
};

// "grpc" or "native", as a command-line flag spells it (--transport); INVALID_ARGUMENT naming
// both for anything else.
Result<Transport> parse_transport(std::string_view name);

}  // namespace trellis
