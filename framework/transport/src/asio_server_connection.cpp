#include "asio_server_connection.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>

namespace trellis::transport {

AsioServerConnection::AsioServerConnection(boost::asio::ip::tcp::socket socket,
                                           ServerSessionListener& listener,
                                           ConnectionOptions options)
    : socket_(std::move(socket)),
      listener_(listener),
      session_(listener, options.session),
      timer_(socket_.get_executor()),
      keepalive_timer_(socket_.get_executor()),
      options_(options),
      last_read_(std::chrono::steady_clock::now()) {
  boost::system::error_code ignored;
  peer_ = socket_.remote_endpoint(ignored);
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
}

void AsioServerConnection::start() {
  timer_.expires_after(options_.handshake_timeout);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (error || self->session_.handshake_done()) return;
    self->close(Status::deadline_exceeded("the client sent no HTTP/2 preface in time"));
  });
  keepalive_after(options_.keepalive_time);
  flush();
  read();
}

void AsioServerConnection::keepalive_after(std::chrono::steady_clock::duration delay) {
  keepalive_timer_.expires_after(delay);
  keepalive_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->on_keepalive_timer();
  });
}

void AsioServerConnection::on_keepalive_timer() {
  if (closed_ || lingering_) return;
  // Pings are the keepalive's only; the timer waits keepalive_timeout after one, and an answer
  // re-arms it (read()).
  if (session_.pings_unacknowledged() > 0) {
    close(Status::unavailable("the client did not answer a keepalive ping in time"));
    return;
  }
  auto quiet = std::chrono::steady_clock::now() - last_read_;
  if (quiet < options_.keepalive_time) {
    keepalive_after(options_.keepalive_time - quiet);
  } else if (session_.open_calls() == 0 && !options_.keepalive_without_calls) {
    keepalive_after(options_.keepalive_time);
  } else {
    session_.send_ping();
    flush();
    keepalive_after(options_.keepalive_timeout);
  }
}

void AsioServerConnection::read() {
  reading_ = true;
  socket_.async_read_some(
      boost::asio::buffer(input_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t n) {
        self->reading_ = false;
        if (self->closed_) return;
        if (error) {
          self->close(Status::unavailable("the connection closed: " + error.message()));
          return;
        }
        self->last_read_ = std::chrono::steady_clock::now();
        if (self->lingering_) {  // the session has ended: what still arrives is dropped
          self->drain();
          return;
        }
        bool pinging = self->session_.pings_unacknowledged() > 0;
        Status received =
            self->session_.receive(std::string_view(self->input_.data(), n), self->last_read_);
        if (!received.ok()) self->closing_ = true;
        if (pinging && self->session_.pings_unacknowledged() == 0) {
          self->keepalive_after(self->options_.keepalive_time);  // answered: the next is due then
        }
        self->flush();
        if (self->lingering_) {
          if (!self->reading_) self->drain();
        } else if (!self->closing_ && !self->closed_) {
          self->read();
        }
      });
}

void AsioServerConnection::flush() {
  if (writing_ || closed_) return;
  output_.clear();
  if (!session_.take_output(output_)) {
    if (closing_ || !session_.alive()) linger_then_close();
    return;
  }
  writing_ = true;
  boost::asio::async_write(
      socket_, boost::asio::buffer(output_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
        self->writing_ = false;
        if (error) {
          self->close(Status::unavailable("writing to the connection failed: " + error.message()));
          return;
        }
        self->flush();
        if (!self->closed_) self->listener_.on_writable();
      });
}

void AsioServerConnection::close_after_flush() {
  if (closed_ || lingering_) return;
  closing_ = true;
  flush();
}

void AsioServerConnection::linger_then_close() {
  if (lingering_ || closed_) return;
  lingering_ = true;
  keepalive_timer_.cancel();
  session_.close(Status::unavailable("the connection ended"));
  boost::system::error_code ignored;
  socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
  timer_.expires_after(options_.linger_timeout);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->close(Status::unavailable("the connection ended"));
  });
  if (!reading_) drain();
}

void AsioServerConnection::drain() {
  reading_ = true;
  socket_.async_read_some(
      boost::asio::buffer(input_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
        self->reading_ = false;
        if (self->closed_) return;
        if (error) {
          self->close(Status::unavailable("the connection ended"));
        } else {
          self->drain();
        }
      });
}

void AsioServerConnection::close(const Status& why) {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  keepalive_timer_.cancel();
  boost::system::error_code ignored;
  socket_.close(ignored);
  session_.close(why);
}

}  // namespace trellis::transport
