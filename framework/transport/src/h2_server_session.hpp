// One server connection of the native transport, without I/O: bytes read from the socket go in
// (receive), calls come out to a listener, responses go in (send_message, finish), and the bytes
// to write come out (take_output). HTTP/2 is nghttp2's; what is gRPC's (request checks, message
// framing, status trailers) and the guards against hostile peers are this class's. The socket,
// the worker it runs on and the handlers belong to whoever drives it; so does time, which comes
// in with each receive.
//
// Not thread-safe: one connection is driven by one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "trellis/compression.hpp"
#include "trellis/metadata.hpp"
#include "trellis/status.hpp"

namespace trellis::transport {

using StreamId = std::int32_t;

// What a request carried, once its headers passed every check.
struct RequestHead {
  std::string method;  // :path, "/package.Service/Method"
  std::string authority;
  std::optional<std::chrono::nanoseconds> timeout;
  // grpc-accept-encoding: what the client decompresses, as compression_bit()s (grpc_wire.hpp).
  std::uint8_t accepted_compressions = 0;
  Metadata metadata;  // the application's headers; -bin values decoded
};

// Receives the calls of a session. Its functions run inside ServerSession::receive (or close),
// and may call the session back (send_message, finish, ...).
class ServerSessionListener {
 public:
  // A request's headers passed every check: a call begins.
  virtual void on_call(StreamId stream, RequestHead head) = 0;
  // One whole message of the call, decompressed. Once the call's reader has taken it, the
  // listener calls ServerSession::release: until then its bytes hold the stream's flow-control
  // window shut.
  virtual void on_message(StreamId stream, std::string message) = 0;
  // The client has sent all its messages.
  virtual void on_half_close(StreamId stream) = 0;
  // The call ended before the server finished it: the client reset it, one of its messages
  // broke a rule (the session has then answered it with `why` itself), or the connection
  // closed. No other call for `stream` follows.
  virtual void on_abort(StreamId stream, const Status& why) = 0;
  // The connection has written out what the session had queued, or read bytes that may have
  // reopened flow control: streams' queued_bytes may have dropped. Called by the socket driver
  // (AsioServerConnection), outside receive.
  virtual void on_writable() {}

 protected:
  ~ServerSessionListener() = default;
};

inline constexpr std::uint32_t kUnlimitedStreams = 0xffffffff;

struct ServerSessionOptions {
  // A larger message is refused with RESOURCE_EXHAUSTED before it is buffered.
  std::size_t max_receive_message_size = 4 << 20;
  // Advertised as SETTINGS_MAX_HEADER_LIST_SIZE; a request whose headers exceed it (counted as
  // HTTP/2 counts them: name, value and 32 bytes per entry) is answered RESOURCE_EXHAUSTED.
  std::uint32_t max_header_list_size = 16 << 10;
  // The flow-control window offered to each stream and to the connection; also how many bytes
  // of messages a stream may hold unreleased before its window stops reopening. A client that
  // sends past its window is answered FLOW_CONTROL_ERROR.
  std::int32_t initial_window_size = 1 << 20;
  // Advertised as SETTINGS_MAX_CONCURRENT_STREAMS: clients queue the calls beyond it, and a
  // stream opened past it is refused (REFUSED_STREAM).
  std::uint32_t max_concurrent_streams = kUnlimitedStreams;
  // Streams reset by the client: at most `reset_burst` at once, refilled at `resets_per_second`.
  // Past that, the connection ends with GOAWAY ENHANCE_YOUR_CALM (the rapid-reset attack,
  // CVE-2023-44487).
  std::uint32_t reset_burst = 1000;
  std::uint32_t resets_per_second = 100;
  // Client pings: at most one per `min_ping_interval`, and none while the connection carries no
  // call unless `permit_pings_without_calls`; past `max_ping_strikes` violations (reset by any
  // request data) the connection ends with GOAWAY ENHANCE_YOUR_CALM "too_many_pings", as grpc
  // core ends it. Trellis's Server::Builder::min_ping_interval and Keepalive mean the same.
  std::chrono::milliseconds min_ping_interval = std::chrono::minutes(5);
  bool permit_pings_without_calls = false;
  int max_ping_strikes = 2;
};

class ServerSession {
 public:
  explicit ServerSession(ServerSessionListener& listener, ServerSessionOptions options = {});
  ~ServerSession();
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Hands the session bytes read from the connection at time `now`. An error means the
  // connection cannot go on (a protocol error, a flood, not HTTP/2 at all): write what
  // take_output still gives (a GOAWAY, where there is one), then close, then call close().
  Status receive(std::string_view bytes,
                 std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // Appends to `out` what the session has to send. Returns false if there was nothing.
  bool take_output(std::string& out);
  // Whether the client has sent the connection preface and its first SETTINGS: until then it
  // has not shown that it speaks HTTP/2 at all.
  bool handshake_done() const;
  // Calls begun and not yet ended.
  std::size_t open_calls() const;
  // Keepalive: sends a PING; pings_unacknowledged() counts those the client has not answered.
  void send_ping();
  int pings_sent() const;
  int pings_unacknowledged() const;
  // False once the session has nothing more to read or write (both sides have said GOAWAY, or
  // it failed): the connection can be closed.
  bool alive() const;

  // The response side of a call begun by on_call. Each is ignored for a stream that has ended.
  //
  // Compresses the response's messages with `compression` (each one that compression makes
  // smaller). Only before the response has started; the caller checks that the client accepts
  // it (RequestHead::accepted_compressions).
  void set_response_compression(StreamId stream, Compression compression);
  // Sends the response headers (`metadata` with them) now rather than with the first message.
  void send_initial_metadata(StreamId stream, const Metadata& metadata);
  // Queues one serialized message. It leaves with the next take_output, within flow control.
  void send_message(StreamId stream, std::string_view message);
  // The listener's reader has taken the oldest message on_message handed over and not yet
  // released: its bytes count towards the stream's window again.
  void release(StreamId stream);
  // The bytes queued on `stream` that flow control has not let out yet: the caller's
  // backpressure.
  std::size_t queued_bytes(StreamId stream) const;
  // Ends the call with `status` and `trailers`, after the queued messages.
  void finish(StreamId stream, const Status& status, const Metadata& trailers = {});
  // Resets the stream (RST_STREAM CANCEL): the call is abandoned.
  void cancel(StreamId stream);

  // Graceful shutdown: a GOAWAY naming the last stream the session has seen refuses newer ones
  // (their clients retry them elsewhere, as REFUSED_STREAM allows); the calls already begun go
  // on.
  void shutdown();
  // The connection is gone: every call not finished is aborted with `why`.
  void close(const Status& why);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::transport
