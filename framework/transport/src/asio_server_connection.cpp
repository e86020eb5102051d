#include "asio_server_connection.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <random>

namespace trellis::transport {

AsioServerConnection::AsioServerConnection(Socket socket, ServerSessionListener& listener,
                                           ConnectionOptions options,
                                           std::shared_ptr<boost::asio::ssl::context> tls)
    : socket_(std::move(socket)),
      tls_context_(std::move(tls)),
      listener_(listener),
      session_(listener, options.session),
      timer_(socket_.get_executor()),
      keepalive_timer_(socket_.get_executor()),
      options_(options),
      last_read_(std::chrono::steady_clock::now()) {
  if (tls_context_) {
    tls_ = std::make_unique<boost::asio::ssl::stream<Socket&>>(socket_, *tls_context_);
  }
  boost::system::error_code ignored;  // a unix socket has no Nagle to turn off
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
}

void AsioServerConnection::start() {
  timer_.expires_after(options_.handshake_timeout);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (error || self->session_.handshake_done()) return;
    self->close(Status::deadline_exceeded("the client sent no HTTP/2 preface in time"));
  });
  keepalive_after(options_.keepalive_time);
  if (options_.max_idle != std::chrono::steady_clock::duration::max()) {
    idle_timer_ = std::make_unique<boost::asio::steady_timer>(socket_.get_executor());
    last_busy_ = std::chrono::steady_clock::now();
    idle_check_after(options_.max_idle);
  }
  if (options_.max_age != std::chrono::steady_clock::duration::max()) {
    // 0.9 to 1.1 times the age, as grpc core jitters it.
    thread_local std::minstd_rand random(std::random_device{}());
    const double factor = std::uniform_real_distribution<double>(0.9, 1.1)(random);
    age_timer_ = std::make_unique<boost::asio::steady_timer>(socket_.get_executor());
    age_timer_->expires_after(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.max_age * factor));
    age_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& error) {
      if (!error) self->on_age_timer();
    });
  }
  if (!tls_) {
    begin();
    return;
  }
  handshaking_ = true;
  tls_->async_handshake(
      boost::asio::ssl::stream_base::server,
      [self = shared_from_this()](const boost::system::error_code& error) {
        self->handshaking_ = false;
        if (self->closed_) return;
        if (error) {
          self->close(Status::unavailable("the TLS handshake failed: " + error.message()));
          return;
        }
        self->begin();
      });
}

void AsioServerConnection::begin() {
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

void AsioServerConnection::idle_check_after(std::chrono::steady_clock::duration delay) {
  idle_timer_->expires_after(delay);
  idle_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->on_idle_timer();
  });
}

void AsioServerConnection::on_idle_timer() {
  if (closed_ || lingering_ || closing_) return;
  const auto now = std::chrono::steady_clock::now();
  if (session_.open_calls() > 0) last_busy_ = now;
  const auto quiet = now - last_busy_;
  if (quiet < options_.max_idle) {
    idle_check_after(options_.max_idle - quiet);
    return;
  }
  session_.shutdown();  // GOAWAY: no call is open, so nothing is cut short
  close_after_flush();
}

void AsioServerConnection::on_age_timer() {
  if (closed_ || lingering_ || closing_) return;
  // GOAWAY: the client sends its next calls on a new connection; those open go on for the
  // grace, then the connection closes (and aborts what is left). A client that closes sooner,
  // once its calls are done, ends it sooner.
  session_.shutdown();
  flush();
  if (options_.max_age_grace == std::chrono::steady_clock::duration::max()) return;
  age_timer_->expires_after(options_.max_age_grace);
  age_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->close_after_flush();
  });
}

void AsioServerConnection::read() {
  reading_ = true;
  on_stream([this](auto& stream) {
    stream.async_read_some(boost::asio::buffer(input_),
                           [self = shared_from_this()](const boost::system::error_code& error,
                                                       std::size_t n) { self->on_read(error, n); });
  });
}

void AsioServerConnection::on_read(const boost::system::error_code& error, std::size_t n) {
  reading_ = false;
  if (closed_) return;
  if (error) {
    close(Status::unavailable("the connection closed: " + error.message()));
    return;
  }
  last_read_ = std::chrono::steady_clock::now();
  if (lingering_) {  // the session has ended: what still arrives is dropped
    drain();
    return;
  }
  bool pinging = session_.pings_unacknowledged() > 0;
  Status received = session_.receive(std::string_view(input_.data(), n), last_read_);
  if (!received.ok()) closing_ = true;
  if (idle_timer_ && session_.open_calls() > 0) last_busy_ = last_read_;
  if (pinging && session_.pings_unacknowledged() == 0) {
    keepalive_after(options_.keepalive_time);  // answered: the next is due then
  }
  flush();
  if (lingering_) {
    if (!reading_) drain();
  } else if (!closing_ && !closed_) {
    read();
  }
}

void AsioServerConnection::flush() {
  // During the TLS handshake nothing is written (a GOAWAY of a shutdown waits in the session):
  // a write then would run beside the handshake on the same stream. begin() flushes.
  if (writing_ || closed_ || handshaking_) return;
  // A call that ends between two reads ends here (its status leaves): the connection was busy
  // until now.
  if (idle_timer_ && session_.open_calls() > 0) last_busy_ = std::chrono::steady_clock::now();
  output_.clear();
  if (!session_.take_output(output_)) {
    if (closing_ || !session_.alive()) linger_then_close();
    return;
  }
  writing_ = true;
  on_stream([this](auto& stream) {
    boost::asio::async_write(stream, boost::asio::buffer(output_),
                             [self = shared_from_this()](const boost::system::error_code& error,
                                                         std::size_t) { self->on_written(error); });
  });
}

void AsioServerConnection::on_written(const boost::system::error_code& error) {
  writing_ = false;
  if (error) {
    close(Status::unavailable("writing to the connection failed: " + error.message()));
    return;
  }
  flush();
  if (!closed_) listener_.on_writable();
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
  cancel_limits();
  session_.close(Status::unavailable("the connection ended"));
  // With TLS too, the socket's sending side is shut down without a close_notify: the GOAWAY
  // already said that nothing follows, and gRPC clients treat the end of the stream after it
  // as the end of the connection.
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_send, ignored);
  timer_.expires_after(options_.linger_timeout);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->close(Status::unavailable("the connection ended"));
  });
  if (!reading_) drain();
}

void AsioServerConnection::drain() {
  reading_ = true;
  on_stream([this](auto& stream) {
    stream.async_read_some(
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
  });
}

void AsioServerConnection::cancel_limits() {
  if (idle_timer_) idle_timer_->cancel();
  if (age_timer_) age_timer_->cancel();
}

void AsioServerConnection::close(const Status& why) {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  keepalive_timer_.cancel();
  cancel_limits();
  boost::system::error_code ignored;
  socket_.close(ignored);
  session_.close(why);
}

}  // namespace trellis::transport
