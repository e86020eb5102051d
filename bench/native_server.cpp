// Issue 13, step 2: a prototype of the native transport, for measuring only. It serves
// helloworld.Greeter/SayHello (unary, as bench/baseline_server) and trellis.bench.StreamBench/Echo
// (bidi, as bench/baseline_stream_server) in gRPC over h2c, with Boost.Asio sockets on one thread
// and nghttp2 for HTTP/2, so that bench/run-unary.sh, bench/run-stream.sh and
// bench/perf-split.sh measure what the wire costs without grpc core, against the same load
// generators (stock grpc++ clients).
//
// It is not the transport: no deadlines, metadata, compression, status details, limits or
// hostile-input handling, and the handlers are plain functions called inline rather than
// Trellis coroutines behind a layer stack. What it does do is what decides the cost:
//   - one read of the socket feeds nghttp2 every frame it holds; the handlers run as each
//     message completes, and their responses are queued on their streams;
//   - everything queued while that read is processed leaves in one write: responses to many
//     requests share a syscall (grpc core sends each message on its own).
//
//   native_server [--port N] [--threads 1]   prints "listening on port N"; SIGTERM/SIGINT stop it
#include <nghttp2/nghttp2.h>

#include <boost/asio.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "helloworld.pb.h"
#include "stream.pb.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr std::string_view kEchoPath = "/trellis.bench.StreamBench/Echo";
constexpr std::string_view kSayHelloPath = "/helloworld.Greeter/SayHello";

// Appends `message` to `out` as one gRPC length-prefixed message (uncompressed).
void append_message(const google::protobuf::MessageLite& message, std::string& out) {
  std::size_t size = message.ByteSizeLong();
  std::size_t at = out.size();
  out.resize(at + 5 + size);
  char* p = out.data() + at;
  p[0] = 0;
  p[1] = static_cast<char>(size >> 24);
  p[2] = static_cast<char>(size >> 16);
  p[3] = static_cast<char>(size >> 8);
  p[4] = static_cast<char>(size);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(p + 5));
}

nghttp2_nv header(std::string_view name, std::string_view value) {
  return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
          value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

// One request stream: its method, the bytes of an incomplete message, and the response bytes
// not yet taken by nghttp2.
struct Stream {
  std::int32_t id = 0;
  enum class Method { kUnknown, kEcho, kSayHello } method = Method::kUnknown;
  std::string in;
  std::string out;
  std::size_t out_taken = 0;
  bool response_started = false;
  bool client_done = false;  // END_STREAM received: answer with trailers once `out` is sent
  bool trailers_sent = false;
  int status = 0;
  helloworld::HelloRequest hello;
  bool have_hello = false;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  explicit Connection(tcp::socket socket) : socket_(std::move(socket)) {}
  ~Connection() { nghttp2_session_del(session_); }

  void start() {
    socket_.set_option(tcp::no_delay(true));
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &on_stream_close);
    nghttp2_session_server_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    // No stream limit, as grpc core; larger windows than HTTP/2's 64 KB, as grpc core's BDP
    // probing would reach.
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 1);
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    flush();
    read();
  }

 private:
  void read() {
    socket_.async_read_some(asio::buffer(in_), [self = shared_from_this()](auto ec, auto n) {
      if (ec) return;
      ssize_t used = nghttp2_session_mem_recv(self->session_,
                                              reinterpret_cast<const std::uint8_t*>(self->in_), n);
      if (used < 0) return;  // the connection is dropped with its last reference
      self->flush();
      if (nghttp2_session_want_read(self->session_) || nghttp2_session_want_write(self->session_))
        self->read();
    });
  }

  // Collects everything nghttp2 has to send into one buffer and writes it; while a write is in
  // flight, new output waits for it and then leaves together.
  void flush() {
    if (writing_) return;
    out_.clear();
    for (;;) {
      const std::uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out_.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
    }
    if (out_.empty()) return;
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](auto ec, auto) {
      self->writing_ = false;
      if (!ec) self->flush();
    });
  }

  static Connection& of(void* user) { return *static_cast<Connection*>(user); }
  static Stream* stream_of(nghttp2_session* session, std::int32_t id) {
    return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    auto* stream = new Stream;
    stream->id = frame->hd.stream_id;
    nghttp2_session_set_stream_user_data(session, stream->id, stream);
    return 0;
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame,
                       const std::uint8_t* name, std::size_t name_len, const std::uint8_t* value,
                       std::size_t value_len, std::uint8_t, void*) {
    Stream* stream = stream_of(session, frame->hd.stream_id);
    if (stream == nullptr) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), name_len);
    std::string_view v(reinterpret_cast<const char*>(value), value_len);
    if (n == ":path") {
      if (v == kEchoPath) stream->method = Stream::Method::kEcho;
      if (v == kSayHelloPath) stream->method = Stream::Method::kSayHello;
    }
    return 0;
  }

  static int on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id,
                           const std::uint8_t* data, std::size_t len, void* user) {
    Stream* stream = stream_of(session, id);
    if (stream == nullptr) return 0;
    stream->in.append(reinterpret_cast<const char*>(data), len);
    of(user).take_messages(*stream);
    return 0;
  }

  static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    Stream* stream = stream_of(session, frame->hd.stream_id);
    if (stream == nullptr) return 0;
    Connection& self = of(user);
    if (frame->hd.type == NGHTTP2_HEADERS && stream->method == Stream::Method::kUnknown) {
      stream->status = 12;  // UNIMPLEMENTED
      stream->client_done = true;
      self.start_response(*stream);
      return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && stream->method == Stream::Method::kEcho)
      self.start_response(*stream);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
      stream->client_done = true;
      if (stream->method == Stream::Method::kSayHello) {
        if (stream->have_hello) {
          helloworld::HelloReply reply;
          reply.set_message("Hello " + stream->hello.name());
          append_message(reply, stream->out);
        } else {
          stream->status = 13;  // INTERNAL: no request message
        }
        self.start_response(*stream);
      }
      nghttp2_session_resume_data(session, stream->id);
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session* session, std::int32_t id, std::uint32_t, void*) {
    delete stream_of(session, id);
    nghttp2_session_set_stream_user_data(session, id, nullptr);
    return 0;
  }

  // Hands every complete message in `stream.in` to the stream's handler.
  void take_messages(Stream& stream) {
    std::size_t at = 0;
    while (stream.in.size() - at >= 5) {
      const auto* p = reinterpret_cast<const std::uint8_t*>(stream.in.data() + at);
      std::size_t size =
          (std::size_t{p[1]} << 24) | (std::size_t{p[2]} << 16) | (std::size_t{p[3]} << 8) | p[4];
      if (stream.in.size() - at - 5 < size) break;
      const char* body = stream.in.data() + at + 5;
      if (stream.method == Stream::Method::kEcho) {
        trellis::bench::StreamRequest request;
        request.ParseFromArray(body, static_cast<int>(size));
        trellis::bench::StreamResponse response;
        response.set_payload(std::move(*request.mutable_payload()));
        append_message(response, stream.out);
        nghttp2_session_resume_data(session_, stream.id);
      } else if (stream.method == Stream::Method::kSayHello) {
        stream.have_hello = stream.hello.ParseFromArray(body, static_cast<int>(size));
      }
      at += 5 + size;
    }
    stream.in.erase(0, at);
  }

  void start_response(Stream& stream) {
    if (stream.response_started) return;
    stream.response_started = true;
    nghttp2_nv headers[] = {header(":status", "200"), header("content-type", "application/grpc")};
    nghttp2_data_provider provider;
    provider.source.ptr = &stream;
    provider.read_callback = &read_response;
    nghttp2_submit_response(session_, stream.id, headers, 2, &provider);
  }

  // nghttp2 asks for the next DATA payload of a response: what the handlers queued, else (the
  // client done and everything sent) the trailers, else wait (resumed when a handler writes).
  static ssize_t read_response(nghttp2_session* session, std::int32_t id, std::uint8_t* buf,
                               std::size_t length, std::uint32_t* flags, nghttp2_data_source* src,
                               void*) {
    auto& stream = *static_cast<Stream*>(src->ptr);
    std::size_t left = stream.out.size() - stream.out_taken;
    if (left > 0) {
      std::size_t n = std::min(left, length);
      std::memcpy(buf, stream.out.data() + stream.out_taken, n);
      stream.out_taken += n;
      if (stream.out_taken == stream.out.size()) {
        stream.out.clear();
        stream.out_taken = 0;
      }
      return static_cast<ssize_t>(n);
    }
    if (!stream.client_done) return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (!stream.trailers_sent) {
      stream.trailers_sent = true;
      static const char* const kStatus[] = {"0", "12", "13"};
      std::string_view status = stream.status == 0    ? kStatus[0]
                                : stream.status == 12 ? kStatus[1]
                                                      : kStatus[2];
      nghttp2_nv trailers[] = {header("grpc-status", status)};
      nghttp2_submit_trailer(session, id, trailers, 1);
    }
    return 0;
  }

  tcp::socket socket_;
  nghttp2_session* session_ = nullptr;
  char in_[64 * 1024];
  std::string out_;
  bool writing_ = false;
};

void accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](auto ec, tcp::socket socket) {
    if (ec) return;
    std::make_shared<Connection>(std::move(socket))->start();
    accept(acceptor);
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
        std::fprintf(stderr, "native_server: the prototype runs one thread only\n");
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
  accept(acceptor);
  std::printf("native_server listening on port %d\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  io.run();
  return 0;
}
