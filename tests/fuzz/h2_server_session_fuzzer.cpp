// libFuzzer target: a client's bytes into the native transport's server session. The harness
// sends the HTTP/2 connection preface itself, so the fuzzer spends its time on frames; the first
// input byte picks how the rest is cut into reads (1 to 256 bytes each), since a frame split
// across reads takes other paths than a whole one. Calls are answered as a handler would:
// echoed, finished early with an error, or cancelled, and released or held, chosen by each
// message's first byte.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "h2_server_session.hpp"

namespace {

using trellis::Metadata;
using trellis::Status;
using trellis::StatusCode;
using trellis::transport::RequestHead;
using trellis::transport::ServerSession;
using trellis::transport::ServerSessionListener;
using trellis::transport::ServerSessionOptions;
using trellis::transport::StreamId;

class Handler final : public ServerSessionListener {
 public:
  void on_call(StreamId stream, RequestHead head) override {
    if (head.method.size() > 1 && head.method[1] == 'x')
      session->send_initial_metadata(stream, head.metadata);
  }
  void on_message(StreamId stream, std::string message) override {
    // 'h'eld messages are never released: their stream's window closes.
    if (message.empty() || message[0] != 'h') session->release(stream);
    if (!message.empty() && message[0] == 'c') {
      session->cancel(stream);
    } else if (!message.empty() && message[0] == 'f') {
      session->finish(stream, Status(StatusCode::kAborted, message, message), {{"k-bin", message}});
    } else {
      session->send_message(stream, message);
    }
  }
  void on_half_close(StreamId stream) override { session->finish(stream, Status()); }
  void on_abort(StreamId, const Status&) override {}

  ServerSession* session = nullptr;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::size_t chunk = std::size_t{data[0]} + 1;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  Handler handler;
  ServerSessionOptions options;
  options.max_receive_message_size = 1 << 16;
  options.max_header_list_size = 4096;
  options.reset_burst = 20;
  ServerSession session(handler, options);
  handler.session = &session;

  auto now = std::chrono::steady_clock::time_point() + std::chrono::hours(1);
  std::string out;
  bool ok = session.receive("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", now).ok();
  while (ok && !input.empty()) {
    std::string_view read = input.substr(0, chunk);
    input.remove_prefix(read.size());
    now += std::chrono::milliseconds(1);
    ok = session.receive(read, now).ok();
    out.clear();
    session.take_output(out);
  }
  session.close(Status::unavailable("the input ended"));
  out.clear();
  session.take_output(out);
  return 0;
}
