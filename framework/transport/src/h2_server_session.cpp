#include "h2_server_session.hpp"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <forward_list>
#include <vector>

#include "absl/strings/escaping.h"
#include "grpc_wire.hpp"
#include "trellis/detail/percent_encoding.hpp"

namespace trellis::transport {

namespace {

std::string_view view(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Headers the transport itself reads or writes; the application never sees them as metadata.
bool is_reserved_header(std::string_view name) {
  return name.empty() || name[0] == ':' || name == "content-type" || name == "te" ||
         name == "grpc-timeout" || name == "grpc-encoding" || name == "grpc-accept-encoding" ||
         name == "grpc-status" || name == "grpc-message" || name == "grpc-status-details-bin";
}

// A header list under construction for nghttp2, which copies names and values when submitted.
// A response's lists are built on every call, so they allocate little: one block for the
// entries, and a stored string only for values made for the list (base64, percent-encoding).
class Headers {
 public:
  Headers() { entries_.reserve(8); }
  // `name` and `value` must live until the list is submitted; add_owned keeps a copy of a value
  // that does not.
  void add_owned(std::string_view name, std::string value) {
    storage_.push_front(std::move(value));  // a list: adding one moves none of the others
    add(name, storage_.front());
  }
  void add(std::string_view name, std::string_view value) {
    entries_.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                        reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())),
                        name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  // Adds the application's metadata, base64-encoding -bin values.
  void add(const Metadata& metadata) {
    for (const auto& [key, value] : metadata) {
      if (ends_with(key, "-bin")) {
        add_owned(key, absl::Base64Escape(value));
      } else {
        add(key, value);
      }
    }
  }
  // Adds grpc-status, grpc-message and grpc-status-details-bin for `status`.
  void add_status(const Status& status) {
    static constexpr std::string_view kCodes[] = {"0", "1",  "2",  "3",  "4",  "5",  "6",  "7", "8",
                                                  "9", "10", "11", "12", "13", "14", "15", "16"};
    int code = static_cast<int>(status.code());
    if (code >= 0 && code < static_cast<int>(std::size(kCodes))) {
      add("grpc-status", kCodes[code]);
    } else {
      add_owned("grpc-status", std::to_string(code));
    }
    if (!status.message().empty()) {
      add_owned("grpc-message", detail::percent_encode(status.message()));
    }
    if (!status.details().empty()) {
      add_owned("grpc-status-details-bin", absl::Base64Escape(status.details()));
    }
  }
  const nghttp2_nv* data() const { return entries_.data(); }
  std::size_t size() const { return entries_.size(); }

 private:
  std::vector<nghttp2_nv> entries_;
  std::forward_list<std::string> storage_;
};

}  // namespace

// One stream: the request as it arrives, then the response as it leaves.
struct Stream {
  explicit Stream(StreamId id, std::size_t max_message_size) : id(id), reader(max_message_size) {}

  StreamId id;
  // The request.
  RequestHead head;
  std::size_t header_bytes = 0;
  bool saw_content_type = false;
  std::optional<Status> rejection;  // set while the headers arrive: answered instead of a call
  int rejection_http_status = 200;
  MessageReader reader;
  Compression request_encoding = Compression::kNone;
  bool call_started = false;  // on_call ran; the listener owns the call until it ends
  bool call_ended = false;    // finish, cancel or on_abort happened
  // The response.
  Compression response_encoding = Compression::kNone;
  bool response_started = false;
  std::string out;
  std::size_t out_taken = 0;
  std::optional<Status> final_status;
  Metadata trailers;
  // Flow control: the wire sizes of the messages handed to the listener and not yet released
  // (oldest at `released`), and the bytes received while those were over the window, whose
  // WINDOW_UPDATE waits for a release.
  std::vector<std::uint32_t> held;
  std::size_t released = 0;
  std::size_t deferred = 0;
  // Whether the messages held unreleased still fit in `window` bytes.
  bool held_within(std::size_t window) const {
    std::size_t bytes = 0;
    for (std::size_t i = released; i < held.size(); ++i) bytes += held[i];
    return bytes <= window;
  }
  Stream* prev = nullptr;
  Stream* next = nullptr;
};

struct ServerSession::Impl {
  Impl(ServerSessionListener& listener, ServerSessionOptions options)
      : listener(listener), options(options), reset_tokens(options.reset_burst) {
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &on_stream_close);
    nghttp2_option* nghttp2_options;
    nghttp2_option_new(&nghttp2_options);
    // A stream's window reopens as the listener releases its messages (release()), so a client
    // cannot make the server buffer more than a window of messages nobody reads.
    nghttp2_option_set_no_auto_window_update(nghttp2_options, 1);
    // nghttp2's own reset limit (Debian's backport of the rapid-reset fix) stays as a backstop
    // far above ours, which ends the connection with the error code the rapid-reset guidance
    // asks for, ENHANCE_YOUR_CALM, and counts in the time the driver gives it.
    nghttp2_option_set_stream_reset_rate_limit(
        nghttp2_options, 10 * std::uint64_t{options.reset_burst} + 1000,
        10 * std::uint64_t{options.resets_per_second} + 1000);
    // Header values that begin or end with blanks ("bearer token ") are taken as sent, as grpc
    // core and grpc-go take them: RFC 9113 forbids them, and nghttp2 would reset the stream,
    // failing calls that work on every other gRPC server.
    nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(nghttp2_options, 1);
    nghttp2_session_server_new2(&session, callbacks, this, nghttp2_options);
    nghttp2_option_del(nghttp2_options);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, options.max_header_list_size},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
         static_cast<std::uint32_t>(options.initial_window_size)},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams}};
    // Unlimited is HTTP/2's default: the setting is sent only when there is a limit.
    std::size_t count = std::size(settings);
    if (options.max_concurrent_streams == kUnlimitedStreams) --count;
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, count);
    nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
                                          options.initial_window_size);
  }
  ~Impl() {
    nghttp2_session_del(session);
    while (streams != nullptr) unlink_and_delete(streams);
  }

  void link(Stream* stream) {
    stream->next = streams;
    if (streams != nullptr) streams->prev = stream;
    streams = stream;
  }
  void unlink_and_delete(Stream* stream) {
    (stream->prev != nullptr ? stream->prev->next : streams) = stream->next;
    if (stream->next != nullptr) stream->next->prev = stream->prev;
    delete stream;
  }

  Stream* stream_of(StreamId id) const {
    return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }
  static Impl& of(void* user) { return *static_cast<Impl*>(user); }

  // ---------------------------------------------------------------------------- the request

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    Impl& self = of(user);
    auto* stream = new Stream(frame->hd.stream_id, self.options.max_receive_message_size);
    self.link(stream);
    nghttp2_session_set_stream_user_data(self.session, stream->id, stream);
    return 0;
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name_data,
                       std::size_t name_size, const std::uint8_t* value_data,
                       std::size_t value_size, std::uint8_t, void* user) {
    Impl& self = of(user);
    Stream* stream = self.stream_of(frame->hd.stream_id);
    // Trailers from a client are not part of gRPC: ignored.
    if (stream == nullptr || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    stream->header_bytes += name_size + value_size + 32;
    if (stream->rejection) return 0;
    if (stream->header_bytes > self.options.max_header_list_size) {
      stream->rejection =
          Status::resource_exhausted("request headers larger than " +
                                     std::to_string(self.options.max_header_list_size) + " bytes");
      stream->head.metadata.clear();
      return 0;
    }
    std::string_view name = view(name_data, name_size);
    std::string_view value = view(value_data, value_size);
    RequestHead& head = stream->head;
    if (name == ":path") {
      head.method = value;
    } else if (name == ":authority") {
      head.authority = value;
    } else if (name == ":method") {
      if (value != "POST") {
        stream->rejection = Status::internal("gRPC requests use POST, not " + std::string(value));
        stream->rejection_http_status = 405;
      }
    } else if (name == "content-type") {
      stream->saw_content_type = true;
      if (!is_grpc_content_type(value)) {
        stream->rejection =
            Status::internal("invalid gRPC request content-type \"" + std::string(value) + "\"");
        stream->rejection_http_status = 415;
      }
    } else if (name == "grpc-timeout") {
      head.timeout = parse_grpc_timeout(value);
      if (!head.timeout) {
        stream->rejection =
            Status::internal("malformed grpc-timeout \"" + std::string(value) + "\"");
      }
    } else if (name == "grpc-encoding") {
      if (auto encoding = parse_grpc_encoding(value)) {
        stream->request_encoding = *encoding;
      } else {
        stream->rejection =
            Status::unimplemented("unsupported grpc-encoding \"" + std::string(value) + "\"");
      }
    } else if (name == "grpc-accept-encoding") {
      head.accepted_compressions |= parse_grpc_accept_encoding(value);
    } else if (!is_reserved_header(name)) {
      if (ends_with(name, "-bin")) {
        std::string decoded;
        if (!absl::Base64Unescape(absl::string_view(value.data(), value.size()), &decoded)) {
          stream->rejection = Status::internal("invalid base64 in header " + std::string(name));
          return 0;
        }
        head.metadata.add(std::string(name), std::move(decoded));
      } else {
        head.metadata.add(std::string(name), std::string(value));
      }
    }
    return 0;
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Impl& self = of(user);
    if (frame->hd.type == NGHTTP2_RST_STREAM) return self.count_reset();
    if (frame->hd.type == NGHTTP2_PING) {
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
        self.pings_unacknowledged = std::max(0, self.pings_unacknowledged - 1);
        return 0;
      }
      return self.police_ping();
    }
    if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) {
      self.ping_strikes = 0;  // a client that sends calls may ping to keep them alive
    }
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
      self.handshake_done = true;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    Stream* stream = self.stream_of(frame->hd.stream_id);
    if (stream == nullptr) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      self.begin_call(*stream);
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && stream->call_started &&
        !stream->call_ended) {
      if (Status truncated = stream->reader.finish(); !truncated.ok()) {
        self.fail_call(*stream, truncated);
      } else {
        self.listener.on_half_close(stream->id);
      }
    }
    return 0;
  }

  void begin_call(Stream& stream) {
    if (!stream.rejection && !stream.saw_content_type) {
      stream.rejection = Status::internal("gRPC request without a content-type");
      stream.rejection_http_status = 415;
    }
    if (stream.rejection) {
      stream.call_ended = true;
      Headers headers;
      headers.add_owned(":status", std::to_string(stream.rejection_http_status));
      headers.add("content-type", "application/grpc");
      if (stream.rejection->code() == StatusCode::kUnimplemented) {
        headers.add("grpc-accept-encoding", kAcceptedEncodings);
      }
      headers.add_status(*stream.rejection);
      nghttp2_submit_response(session, stream.id, headers.data(), headers.size(), nullptr);
      return;
    }
    stream.call_started = true;
    ++open_calls;
    listener.on_call(stream.id, std::move(stream.head));
  }

  static int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t id,
                           const std::uint8_t* data, std::size_t size, void* user) {
    Impl& self = of(user);
    nghttp2_session_consume_connection(self.session, size);
    Stream* stream = self.stream_of(id);
    if (stream == nullptr) return 0;
    if (!stream->call_started || stream->call_ended) {
      nghttp2_session_consume_stream(self.session, id, size);  // read by nobody: dropped
      return 0;
    }
    if (stream->held_within(static_cast<std::size_t>(self.options.initial_window_size))) {
      nghttp2_session_consume_stream(self.session, id, size);
    } else {
      stream->deferred += size;
    }
    if (Status fed = stream->reader.feed(view(data, size)); !fed.ok()) {
      self.fail_call(*stream, fed);
      return 0;
    }
    while (auto message = stream->reader.next()) {
      auto wire_size = static_cast<std::uint32_t>(kMessagePrefixSize + message->bytes.size());
      if (message->compressed) {
        if (stream->request_encoding == Compression::kNone) {
          self.fail_call(*stream, Status::internal("a compressed message on a call without "
                                                   "grpc-encoding"));
          return 0;
        }
        std::string plain;
        if (Status inflated = decompress(stream->request_encoding, message->bytes,
                                         self.options.max_receive_message_size, &plain);
            !inflated.ok()) {
          self.fail_call(*stream, inflated);
          return 0;
        }
        message->bytes = std::move(plain);
      }
      stream->held.push_back(wire_size);
      self.listener.on_message(id, std::move(message->bytes));
      // The listener may have ended the call, or the stream may be gone.
      stream = self.stream_of(id);
      if (stream == nullptr || stream->call_ended) return 0;
    }
    return 0;
  }

  // The client broke a rule inside a call: answer it with `why` and tell the listener.
  void fail_call(Stream& stream, const Status& why) {
    finish(stream, why, {});
    listener.on_abort(stream.id, why);
  }

  static int on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t error_code,
                             void* user) {
    Impl& self = of(user);
    Stream* stream = self.stream_of(id);
    if (stream == nullptr) return 0;
    nghttp2_session_set_stream_user_data(self.session, id, nullptr);
    if (stream->call_started && !stream->call_ended) {
      self.end_call(*stream);
      self.listener.on_abort(id, error_code == NGHTTP2_NO_ERROR
                                     ? Status::cancelled("the stream closed")
                                     : Status::cancelled("the client cancelled the call"));
    }
    self.unlink_and_delete(stream);
    return 0;
  }

  // A client's PING: within the policy, or a strike; past the strikes, the connection ends.
  int police_ping() {
    bool too_soon = last_client_ping != std::chrono::steady_clock::time_point{} &&
                    now - last_client_ping < options.min_ping_interval;
    bool idle = open_calls == 0 && !options.permit_pings_without_calls;
    last_client_ping = now;
    if (!too_soon && !idle) return 0;
    if (++ping_strikes <= options.max_ping_strikes) return 0;
    flood = "the client pinged too often (too_many_pings)";
    static constexpr std::string_view kDebug = "too_many_pings";
    nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session),
                          NGHTTP2_ENHANCE_YOUR_CALM,
                          reinterpret_cast<const std::uint8_t*>(kDebug.data()), kDebug.size());
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }

  // A token bucket over the streams the client resets.
  int count_reset() {
    auto elapsed = std::chrono::duration<double>(now - last_refill).count();
    last_refill = now;
    reset_tokens =
        std::min<double>(options.reset_burst, reset_tokens + elapsed * options.resets_per_second);
    if (reset_tokens >= 1) {
      reset_tokens -= 1;
      return 0;
    }
    flood =
        "the client reset more than " + std::to_string(options.reset_burst) + " streams in a burst";
    nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }

  // --------------------------------------------------------------------------- the response

  void start_response(Stream& stream, const Metadata& metadata) {
    if (stream.response_started) return;
    stream.response_started = true;
    Headers headers;
    headers.add(":status", "200");
    headers.add("content-type", "application/grpc");
    if (stream.response_encoding != Compression::kNone) {
      headers.add("grpc-encoding", compression_name(stream.response_encoding));
    }
    headers.add("grpc-accept-encoding", kAcceptedEncodings);
    headers.add(metadata);
    nghttp2_data_provider provider;
    provider.source.ptr = &stream;
    provider.read_callback = &read_response;
    nghttp2_submit_response(session, stream.id, headers.data(), headers.size(), &provider);
  }

  // Marks the call ended (finished, cancelled or aborted).
  void end_call(Stream& stream) {
    if (stream.call_started && !stream.call_ended) --open_calls;
    stream.call_ended = true;
  }

  void finish(Stream& stream, const Status& status, const Metadata& trailers) {
    if (stream.call_ended) return;
    end_call(stream);
    if (!stream.response_started) {
      // Trailers-only: one HEADERS frame ends the stream.
      stream.response_started = true;
      Headers headers;
      headers.add(":status", "200");
      headers.add("content-type", "application/grpc");
      headers.add_status(status);
      headers.add(trailers);
      nghttp2_submit_response(session, stream.id, headers.data(), headers.size(), nullptr);
      return;
    }
    stream.final_status = status;
    stream.trailers = trailers;
    nghttp2_session_resume_data(session, stream.id);
  }

  // nghttp2 asks for a response's next DATA payload: the queued messages; once they are out and
  // the call is finished, the trailers; otherwise wait for send_message or finish.
  static ssize_t read_response(nghttp2_session* session, std::int32_t id, std::uint8_t* buffer,
                               std::size_t length, std::uint32_t* flags,
                               nghttp2_data_source* source, void*) {
    auto& stream = *static_cast<Stream*>(source->ptr);
    std::size_t left = stream.out.size() - stream.out_taken;
    if (left > 0) {
      std::size_t n = std::min(left, length);
      std::memcpy(buffer, stream.out.data() + stream.out_taken, n);
      stream.out_taken += n;
      if (stream.out_taken == stream.out.size()) {
        stream.out.clear();
        stream.out_taken = 0;
      }
      return static_cast<ssize_t>(n);
    }
    if (!stream.final_status) return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    Headers trailers;
    trailers.add_status(*stream.final_status);
    trailers.add(stream.trailers);
    nghttp2_submit_trailer(session, id, trailers.data(), trailers.size());
    return 0;
  }

  ServerSessionListener& listener;
  ServerSessionOptions options;
  nghttp2_session* session = nullptr;
  Stream* streams = nullptr;  // every stream with state, linked through Stream::next
  std::chrono::steady_clock::time_point now{};
  std::chrono::steady_clock::time_point last_refill{};
  double reset_tokens;
  std::string flood;  // why the client was cut off for flooding, if it was
  bool failed = false;
  bool handshake_done = false;
  std::size_t open_calls = 0;
  std::chrono::steady_clock::time_point last_client_ping{};
  int ping_strikes = 0;
  int pings_sent = 0;
  int pings_unacknowledged = 0;
};

ServerSession::ServerSession(ServerSessionListener& listener, ServerSessionOptions options)
    : impl_(std::make_unique<Impl>(listener, options)) {}

ServerSession::~ServerSession() = default;

Status ServerSession::receive(std::string_view bytes, std::chrono::steady_clock::time_point now) {
  Impl& impl = *impl_;
  if (impl.failed) return Status::unavailable("the connection has failed");
  if (impl.last_refill == std::chrono::steady_clock::time_point{}) impl.last_refill = now;
  impl.now = now;
  ssize_t used = nghttp2_session_mem_recv(
      impl.session, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  if (used >= 0) return {};
  impl.failed = true;
  if (!impl.flood.empty()) return Status::resource_exhausted(impl.flood);
  if (used == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
    return Status::unavailable("the client did not start with the HTTP/2 connection preface");
  }
  return Status::unavailable(std::string("HTTP/2 error: ") +
                             nghttp2_strerror(static_cast<int>(used)));
}

bool ServerSession::take_output(std::string& out) {
  std::size_t before = out.size();
  for (;;) {
    const std::uint8_t* data;
    ssize_t n = nghttp2_session_mem_send(impl_->session, &data);
    if (n <= 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return out.size() > before;
}

bool ServerSession::handshake_done() const { return impl_->handshake_done; }

std::size_t ServerSession::open_calls() const { return impl_->open_calls; }

void ServerSession::send_ping() {
  if (nghttp2_submit_ping(impl_->session, NGHTTP2_FLAG_NONE, nullptr) == 0) {
    ++impl_->pings_sent;
    ++impl_->pings_unacknowledged;
  }
}

int ServerSession::pings_sent() const { return impl_->pings_sent; }

int ServerSession::pings_unacknowledged() const { return impl_->pings_unacknowledged; }

bool ServerSession::alive() const {
  return nghttp2_session_want_read(impl_->session) || nghttp2_session_want_write(impl_->session);
}

void ServerSession::set_response_compression(StreamId stream, Compression compression) {
  Stream* s = impl_->stream_of(stream);
  if (s == nullptr || s->response_started) return;
  s->response_encoding = compression;
}

void ServerSession::send_initial_metadata(StreamId stream, const Metadata& metadata) {
  Stream* s = impl_->stream_of(stream);
  if (s == nullptr || s->call_ended) return;
  impl_->start_response(*s, metadata);
}

void ServerSession::send_message(StreamId stream, std::string_view message) {
  Stream* s = impl_->stream_of(stream);
  if (s == nullptr || s->call_ended) return;
  impl_->start_response(*s, {});
  if (s->response_encoding != Compression::kNone) {
    std::string compressed = compress(s->response_encoding, message);
    if (compressed.size() < message.size()) {
      append_message_prefix(s->out, true, static_cast<std::uint32_t>(compressed.size()));
      s->out.append(compressed);
      nghttp2_session_resume_data(impl_->session, stream);
      return;
    }
  }
  append_message_prefix(s->out, false, static_cast<std::uint32_t>(message.size()));
  s->out.append(message);
  nghttp2_session_resume_data(impl_->session, stream);
}

void ServerSession::release(StreamId stream) {
  Stream* s = impl_->stream_of(stream);
  if (s == nullptr || s->released == s->held.size()) return;
  if (++s->released == s->held.size()) {
    s->held.clear();
    s->released = 0;
  }
  if (s->deferred > 0 &&
      s->held_within(static_cast<std::size_t>(impl_->options.initial_window_size))) {
    nghttp2_session_consume_stream(impl_->session, stream, s->deferred);
    s->deferred = 0;
  }
}

std::size_t ServerSession::queued_bytes(StreamId stream) const {
  Stream* s = impl_->stream_of(stream);
  return s == nullptr ? 0 : s->out.size() - s->out_taken;
}

void ServerSession::finish(StreamId stream, const Status& status, const Metadata& trailers) {
  if (Stream* s = impl_->stream_of(stream)) impl_->finish(*s, status, trailers);
}

void ServerSession::cancel(StreamId stream) {
  Stream* s = impl_->stream_of(stream);
  if (s == nullptr || s->call_ended) return;
  impl_->end_call(*s);
  nghttp2_submit_rst_stream(impl_->session, NGHTTP2_FLAG_NONE, stream, NGHTTP2_CANCEL);
}

void ServerSession::shutdown() {
  nghttp2_submit_goaway(impl_->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(impl_->session), NGHTTP2_NO_ERROR,
                        nullptr, 0);
}

void ServerSession::close(const Status& why) {
  impl_->failed = true;
  // on_abort may call back into the session (finish, cancel): the list is walked by id.
  std::vector<StreamId> aborted;
  for (Stream* s = impl_->streams; s != nullptr; s = s->next) {
    if (s->call_started && !s->call_ended) {
      impl_->end_call(*s);
      aborted.push_back(s->id);
    }
  }
  for (StreamId id : aborted) impl_->listener.on_abort(id, why);
}

}  // namespace trellis::transport
