// Issue 13: the native transport's server session (framework/transport) measured on its own. It
// serves helloworld.Greeter/SayHello (unary, as bench/baseline_server) and
// trellis.bench.StreamBench/Echo (bidi, as bench/baseline_stream_server) in gRPC over h2c, with
// Boost.Asio sockets on one thread, so that bench/perf-split.sh, bench/run-idle-streams.sh and
// the other scripts measure what the wire costs without grpc core, against the same load
// generators (stock grpc++ and grpc-go clients).
//
// The handlers are plain functions on the session's callbacks, not Trellis coroutines behind a
// layer stack: what this measures is the transport (nghttp2, the session's gRPC rules, the
// socket driver), which is what the native server will add to Trellis's own per-call cost.
//
//   native_server [--port N] [--threads 1]   prints "listening on port N"; SIGTERM/SIGINT stop it
#include <boost/asio.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "asio_server_connection.hpp"
#include "helloworld.pb.h"
#include "stream.pb.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using trellis::Status;
using trellis::transport::AsioServerConnection;
using trellis::transport::RequestHead;
using trellis::transport::ServerSession;
using trellis::transport::ServerSessionListener;
using trellis::transport::StreamId;

// The two methods, for one connection.
class Handlers final : public ServerSessionListener {
 public:
  void attach(ServerSession& session) { session_ = &session; }

  void on_call(StreamId stream, RequestHead head) override {
    if (head.method == "/trellis.bench.StreamBench/Echo") {
      echo_streams_[stream] = true;
    } else if (head.method == "/helloworld.Greeter/SayHello") {
      echo_streams_[stream] = false;
    } else {
      session_->finish(stream, Status::unimplemented("unknown method " + head.method));
    }
  }
  void on_message(StreamId stream, std::string message) override {
    session_->release(stream);
    auto it = echo_streams_.find(stream);
    if (it == echo_streams_.end()) return;
    if (it->second) {
      trellis::bench::StreamRequest request;
      request.ParseFromString(message);
      trellis::bench::StreamResponse response;
      response.set_payload(std::move(*request.mutable_payload()));
      session_->send_message(stream, response.SerializeAsString());
    } else {
      helloworld::HelloRequest request;
      request.ParseFromString(message);
      helloworld::HelloReply reply;
      reply.set_message("Hello " + request.name());
      session_->send_message(stream, reply.SerializeAsString());
    }
  }
  void on_half_close(StreamId stream) override {
    echo_streams_.erase(stream);
    session_->finish(stream, Status());
  }
  void on_abort(StreamId stream, const Status&) override { echo_streams_.erase(stream); }

 private:
  ServerSession* session_ = nullptr;
  std::map<StreamId, bool> echo_streams_;  // true: Echo, false: SayHello
};

// A connection and its handlers, alive while the connection is.
struct Served {
  Handlers handlers;
  std::shared_ptr<AsioServerConnection> connection;
};

void accept(tcp::acceptor& acceptor, std::vector<std::unique_ptr<Served>>& served) {
  acceptor.async_accept([&](const boost::system::error_code& error, tcp::socket socket) {
    if (error) return;
    auto& s = served.emplace_back(std::make_unique<Served>());
    s->connection = std::make_shared<AsioServerConnection>(std::move(socket), s->handlers);
    s->handlers.attach(s->connection->session());
    s->connection->start();
    accept(acceptor, served);
  });
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--port") == 0) {
      port = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      if (std::atoi(argv[i + 1]) != 1) {
        std::fprintf(stderr, "native_server: one thread only\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: native_server [--port N] [--threads 1]\n");
      return 2;
    }
  }
  asio::io_context io(1);
  tcp::acceptor acceptor(io,
                         {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { io.stop(); });
  // Connections are kept until exit: a benchmark's connections live as long as the server.
  std::vector<std::unique_ptr<Served>> served;
  accept(acceptor, served);
  std::printf("native_server listening on port %d\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  io.run();
  return 0;
}
