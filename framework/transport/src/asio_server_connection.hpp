// Drives one ServerSession over a connected TCP socket on an Asio executor: each read is handed
// to the session whole, and whatever the session then has to send leaves in one write, so the
// responses a read produced share a syscall. Responses made later, outside the listener's
// callbacks (a handler that answered after a timer), are sent by flush().
//
// Everything runs on the socket's executor: start, flush and close must be called there (or
// before the executor runs). The listener outlives the connection.
#pragma once

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>

#include "h2_server_session.hpp"

namespace trellis::transport {

class AsioServerConnection : public std::enable_shared_from_this<AsioServerConnection> {
 public:
  AsioServerConnection(boost::asio::ip::tcp::socket socket, ServerSessionListener& listener,
                       ServerSessionOptions options = {});

  // Sends the server's SETTINGS and starts reading. The connection keeps itself alive while
  // its socket is open.
  void start();
  // Writes what the session has queued, unless a write is in flight (whose completion then
  // writes it).
  void flush();
  // Closes the socket; the calls still open are aborted with `why`.
  void close(const Status& why);

  ServerSession& session() { return session_; }
  const boost::asio::ip::tcp::endpoint& peer() const { return peer_; }

 private:
  void read();

  boost::asio::ip::tcp::socket socket_;
  boost::asio::ip::tcp::endpoint peer_;
  ServerSession session_;
  std::array<char, 64 * 1024> input_;
  std::string output_;
  bool writing_ = false;
  bool closing_ = false;  // the session failed: close once its last bytes (a GOAWAY) are out
  bool closed_ = false;
};

}  // namespace trellis::transport
