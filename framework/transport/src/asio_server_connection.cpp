#include "asio_server_connection.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>

namespace trellis::transport {

AsioServerConnection::AsioServerConnection(boost::asio::ip::tcp::socket socket,
                                           ServerSessionListener& listener,
                                           ServerSessionOptions options)
    : socket_(std::move(socket)), session_(listener, options) {
  boost::system::error_code ignored;
  peer_ = socket_.remote_endpoint(ignored);
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
}

void AsioServerConnection::start() {
  flush();
  read();
}

void AsioServerConnection::read() {
  socket_.async_read_some(
      boost::asio::buffer(input_),
      [self = shared_from_this()](const boost::system::error_code& error, std::size_t n) {
        if (self->closed_) return;
        if (error) {
          self->close(Status::unavailable("the connection closed: " + error.message()));
          return;
        }
        Status received = self->session_.receive(std::string_view(self->input_.data(), n));
        if (!received.ok()) self->closing_ = true;
        self->flush();
        if (!self->closing_ && !self->closed_) self->read();
      });
}

void AsioServerConnection::flush() {
  if (writing_ || closed_) return;
  output_.clear();
  if (!session_.take_output(output_)) {
    if (closing_ || !session_.alive()) close(Status::unavailable("the connection ended"));
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

void AsioServerConnection::close(const Status& why) {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  socket_.close(ignored);
  session_.close(why);
}

}  // namespace trellis::transport
