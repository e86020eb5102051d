// trellis::ServerReader / ServerWriter: the message streams a streaming handler reads and writes.
#pragma once

#include <optional>
#include <utility>

#include "trellis/detail/stream_core.hpp"
#include "trellis/task.hpp"

namespace trellis {

// The client's messages to a client-streaming or bidi handler. Owned by the framework, valid
// until the handler's task completes.
//
// read() completes with the next message, or std::nullopt when there are no more: the client
// half-closed, or the call ended (cancelled by the client, deadline passed: check
// ServerContext::is_cancelled()), or a message did not parse (the call then fails with INTERNAL
// whatever the handler returns). One read may be pending at a time. Operations run on the call's
// worker; awaiting from a task on another worker of the runtime also works.
//
// read(message) reads into a message the caller owns and completes with true (a message) or
// false (no more, for the same reasons): a loop that reuses one message this way allocates no
// message per read, as a grpc++ server reusing its request object does.
// `while (co_await reader.read(request)) ...` After false the message's content is unspecified.
//
// Like every Trellis operation, read() takes an Asio completion token; the default makes it a
// Task. With boost::asio::deferred it is instead an Asio asynchronous operation, which a task
// co_awaits without a coroutine frame for the operation (measurably cheaper per message; but not
// a Task, so not an operand of `a || b`). Cancelling a pending read (through its cancellation
// slot, for example by losing an `a || b` race) cancels the whole call: gRPC has no way to cancel
// one read.
template <class T>
class ServerReader {
 public:
  explicit ServerReader(detail::StreamCore* core) : core_(core) {}
  ServerReader(const ServerReader&) = delete;
  ServerReader& operator=(const ServerReader&) = delete;

  // Completes with std::optional<T>.
  template <class Token = boost::asio::use_awaitable_t<>>
  requires detail::NotAMessage<Token>
  auto read(Token&& token = {}) { return detail::async_read<T>(core_, std::forward<Token>(token)); }
  // Completes with bool; `message` must stay alive until then.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto read(T& message, Token&& token = {}) {
    return detail::async_read_into(core_, &message, std::forward<Token>(token));
  }

 private:
  detail::StreamCore* core_;
};

// The responses of a server-streaming or bidi handler. Owned by the framework, valid until the
// handler's task completes.
//
// write() sends one message and completes with true once gRPC has taken it (the next write may
// then start: one write at a time is the flow control), or with false when the call has ended
// (the client went away or the deadline passed). The first write also sends the response
// headers (ServerContext::add_initial_metadata must come before it). The handler's returned
// Status ends the call after the last write. In a bidi handler one task may read while another
// writes. Tokens as for ServerReader::read.
template <class T>
class ServerWriter {
 public:
  explicit ServerWriter(detail::StreamCore* core) : core_(core) {}
  ServerWriter(const ServerWriter&) = delete;
  ServerWriter& operator=(const ServerWriter&) = delete;

  template <class Token = boost::asio::use_awaitable_t<>>
  auto write(const T& message, Token&& token = {}) {
    detail::Bytes bytes;
    Status prepared = detail::prepare_server_write(core_, message, &bytes);
    return detail::async_write(core_, std::move(prepared), std::move(bytes), false,
                               std::forward<Token>(token));
  }

 private:
  detail::StreamCore* core_;
};

}  // namespace trellis
