// trellis::Keepalive: HTTP/2 keepalive pings on a connection, for servers and channels.
#pragma once

#include <chrono>

namespace trellis {

// Pings the peer over an otherwise quiet connection, so that a peer that died or a middlebox
// that silently dropped the connection is noticed: the connection is then closed, its calls fail
// with UNAVAILABLE (a client's) or are cancelled (a server's handlers), and a channel reconnects.
//
// A server only tolerates a client's pings up to a rate (Server::Builder::min_ping_interval,
// 5 minutes by default, and by default never without calls): a client that pings more often is
// sent GOAWAY ("too_many_pings"). Keep a channel's `time` at or above what its servers allow.
struct Keepalive {
  // A ping is sent after this long without any frame received.
  std::chrono::milliseconds time{std::chrono::minutes(2)};
  // The connection is closed when a ping is not acknowledged within this.
  std::chrono::milliseconds timeout{std::chrono::seconds(20)};
  // Ping also while the connection carries no call, every `time`, for as long as it is idle
  // (gRPC's own default stops after two pings without data). On a server, this also lets
  // clients ping an idle connection.
  bool permit_without_calls = false;
};

}  // namespace trellis
