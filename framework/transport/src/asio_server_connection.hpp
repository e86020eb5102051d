// Drives one ServerSession over a connected stream socket (TCP or unix), in TLS or in the clear,
// on an Asio executor: each read is handed
// to the session whole, and whatever the session then has to send leaves in one write, so the
// responses a read produced share a syscall. Responses made later, outside the listener's
// callbacks (a handler that answered after a timer), are sent by flush().
//
// Everything runs on the socket's executor: start, flush and close must be called there (or
// before the executor runs). The listener outlives the connection.
//
// With TLS, the connection first makes the TLS handshake (its context decides the certificate,
// ALPN and client verification), and only then sends its SETTINGS. A client that has not
// finished that handshake and sent the HTTP/2 preface and its SETTINGS within the handshake
// timeout is disconnected: silent connections (a slowloris) cost a socket for that long, not
// forever. When the session ends the connection (a GOAWAY after a protocol error or a flood), the
// connection shuts its sending side down after the last bytes and reads until the client closes
// or the linger timeout passes: closing with unread input would make the kernel answer with a
// reset, which can destroy the GOAWAY before the client reads it.
#pragma once

#include <array>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "h2_server_session.hpp"

namespace trellis::transport {

struct ConnectionOptions {
  ServerSessionOptions session;
  std::chrono::steady_clock::duration handshake_timeout = std::chrono::seconds(10);
  std::chrono::steady_clock::duration linger_timeout = std::chrono::seconds(2);
  // Keepalive: after `keepalive_time` without a byte from the client, while the connection
  // carries a call (or always, with `keepalive_without_calls`), the server pings; a ping not
  // acknowledged within `keepalive_timeout` closes the connection and aborts its calls.
  // grpc core's server defaults: 2 hours and 20 seconds.
  std::chrono::steady_clock::duration keepalive_time = std::chrono::hours(2);
  std::chrono::steady_clock::duration keepalive_timeout = std::chrono::seconds(20);
  bool keepalive_without_calls = false;
  // A connection that carried no call for `max_idle` is sent a GOAWAY and closed. One `max_age`
  // old (give or take 10%, so that connections made together do not all go together) is sent a
  // GOAWAY; its calls have `max_age_grace` more to finish before it closes. The client
  // reconnects for its next calls. grpc core's server defaults: never.
  std::chrono::steady_clock::duration max_idle = std::chrono::steady_clock::duration::max();
  std::chrono::steady_clock::duration max_age = std::chrono::steady_clock::duration::max();
  std::chrono::steady_clock::duration max_age_grace = std::chrono::steady_clock::duration::max();
};

class AsioServerConnection : public std::enable_shared_from_this<AsioServerConnection> {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;

  // A connection on `socket` (a tcp or local socket converts), in TLS with `tls` if it is set.
  AsioServerConnection(Socket socket, ServerSessionListener& listener,
                       ConnectionOptions options = {},
                       std::shared_ptr<boost::asio::ssl::context> tls = nullptr);

  // Makes the TLS handshake if there is one, then sends the server's SETTINGS and reads. The
  // connection keeps itself alive while its socket is open.
  void start();
  // Writes what the session has queued, unless a write is in flight (whose completion then
  // writes it).
  void flush();
  // Closes the socket; the calls still open are aborted with `why`.
  void close(const Status& why);
  // Writes what the session still has queued (a GOAWAY, the last responses), then closes as
  // when the session ends the connection: the calls still open are aborted, the sending side
  // is shut down, and the socket closes when the client closes or the linger timeout passes.
  void close_after_flush();

  // Keeps `owner` (typically the listener) alive as long as the connection: the session calls
  // the listener until the connection is destroyed.
  void hold(std::shared_ptr<void> owner) { owner_ = std::move(owner); }

  ServerSession& session() { return session_; }
  bool closed() const { return closed_; }
  // The TLS connection once its handshake is done (on_call and later); nullptr without TLS.
  SSL* tls() { return tls_ ? tls_->native_handle() : nullptr; }

 private:
  void begin();
  void read();
  void on_read(const boost::system::error_code& error, std::size_t n);
  void on_written(const boost::system::error_code& error);
  // Calls `op` with the stream the connection's bytes go through: the TLS stream, or the socket.
  template <typename Op>
  void on_stream(Op&& op) {
    if (tls_) {
      op(*tls_);
    } else {
      op(socket_);
    }
  }
  void linger_then_close();
  void drain();
  void keepalive_after(std::chrono::steady_clock::duration delay);
  void on_keepalive_timer();
  void idle_check_after(std::chrono::steady_clock::duration delay);
  void on_idle_timer();
  void on_age_timer();
  void cancel_limits();

  std::shared_ptr<void> owner_;  // first: destroyed after the session that calls it
  Socket socket_;
  std::shared_ptr<boost::asio::ssl::context> tls_context_;
  std::unique_ptr<boost::asio::ssl::stream<Socket&>> tls_;  // on socket_
  ServerSessionListener& listener_;
  ServerSession session_;
  boost::asio::steady_timer timer_;  // the handshake timeout, then the linger timeout
  boost::asio::steady_timer keepalive_timer_;
  // max_idle and max_age; allocated only for a connection with the limit.
  std::unique_ptr<boost::asio::steady_timer> idle_timer_;
  std::unique_ptr<boost::asio::steady_timer> age_timer_;
  std::chrono::steady_clock::time_point last_busy_;  // when a call was last seen open
  ConnectionOptions options_;
  std::chrono::steady_clock::time_point last_read_;
  std::array<char, 64 * 1024> input_;
  std::string output_;
  bool handshaking_ = false;  // the TLS handshake runs; nothing is written meanwhile
  bool reading_ = false;      // one read (or drain) at a time
  bool writing_ = false;
  bool closing_ = false;  // the session failed: close once its last bytes (a GOAWAY) are out
  bool lingering_ = false;
  bool closed_ = false;
};

}  // namespace trellis::transport
