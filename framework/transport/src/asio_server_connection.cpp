#include "asio_server_connection.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>

namespace trellis::transport {

AsioServerConnection::AsioServerConnection(boost::asio::ip::tcp::socket socket,
                                           ServerSessionListener& listener,
                                           ConnectionOptions options)
    : socket_(std::move(socket)),
      session_(listener, options.session),
      timer_(socket_.get_executor()),
      handshake_timeout_(options.handshake_timeout),
      linger_timeout_(options.linger_timeout) {
  boost::system::error_code ignored;
  peer_ = socket_.remote_endpoint(ignored);
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
}

void AsioServerConnection::start() {
  timer_.expires_after(handshake_timeout_);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (error || self->session_.handshake_done()) return;
    self->close(Status::deadline_exceeded("the client sent no HTTP/2 preface in time"));
  });
  flush();
  read();
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
        if (self->lingering_) {  // the session has ended: what still arrives is dropped
          self->drain();
          return;
        }
        Status received = self->session_.receive(std::string_view(self->input_.data(), n));
        if (!received.ok()) self->closing_ = true;
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
      });
}

void AsioServerConnection::linger_then_close() {
  if (lingering_ || closed_) return;
  lingering_ = true;
  session_.close(Status::unavailable("the connection ended"));
  boost::system::error_code ignored;
  socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
  timer_.expires_after(linger_timeout_);
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
  boost::system::error_code ignored;
  socket_.close(ignored);
  session_.close(why);
}

}  // namespace trellis::transport
