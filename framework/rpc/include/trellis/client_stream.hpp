// trellis client streams: the calls of server-streaming, client-streaming and bidi methods.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/impl/rpc_method.h>

#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "trellis/call_options.hpp"
#include "trellis/channel.hpp"
#include "trellis/client.hpp"
#include "trellis/detail/async_task.hpp"
#include "trellis/detail/stream_core.hpp"
#include "trellis/method_info.hpp"
#include "trellis/result.hpp"
#include "trellis/task.hpp"

namespace trellis {

namespace detail {

// Creates the client side of a streaming call. It starts on the worker of its first operation.
// `request` (server streaming): the one request, sent with the half-close when the call starts.
// A non-OK `status` (the request did not serialize) makes every operation fail and finish()
// complete with it.
StreamCore* new_client_stream(const std::shared_ptr<grpc::Channel>& channel,
                              const grpc::internal::RpcMethod& method, CallOptions options,
                              std::optional<Bytes> request, Status status);
// The same, for a channel with a middleware stack: the call runs through `stack` (see
// layered_client_stream.cpp). `request`: a copy of the request of a server-streaming call, for
// the layers to see. `request_type` (client and bidi streaming): the request message's default
// instance, to show the layers' message observers what the caller writes.
StreamCore* new_layered_client_stream(std::shared_ptr<const BoxService> stack,
                                      ClientBinding binding, const MethodInfo& info,
                                      CallOptions options,
                                      std::unique_ptr<google::protobuf::MessageLite> request,
                                      const google::protobuf::MessageLite* request_type,
                                      Status status);
// ChannelService's part for streaming calls: starts the stream of call.stream() and completes
// with its final status once the user has asked for it.
Task<Status> run_layered_stream_inner(Call& call);
// Drops the caller's handle: cancels the call unless it has finished, and frees it once gRPC is
// done with it. Any thread.
void release_client_stream(StreamCore* core) noexcept;
// Cancels the call. Any thread.
void cancel_client_stream(StreamCore* core) noexcept;

struct ClientStreamReleaser {
  void operator()(StreamCore* core) const noexcept { release_client_stream(core); }
};
using ClientStreamHandle = std::unique_ptr<StreamCore, ClientStreamReleaser>;

// The parts every client stream has: finish, cancel, and the lifetime of the call.
class ClientStreamBase {
 public:
  // Cancels the call: pending and later operations fail, finish() gives CANCELLED. Any thread.
  void cancel() noexcept { cancel_client_stream(core_.get()); }

  // Starts the call without sending or receiving a message, and completes with true once its
  // headers are on their way to the server (false: the call could not start). Optional: the
  // first operation starts the call anyway. For a server-streaming call the headers leave with
  // the request.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto start(Token&& token = {}) {
    return detail::async_start(core_.get(), std::forward<Token>(token));
  }

 protected:
  explicit ClientStreamBase(ClientStreamHandle core) : core_(std::move(core)) {}
  // Half-closes if needed, reads and discards what the server still sends, and completes with
  // the call's final status (also filling CallOptions::capture_response_metadata). A stream
  // whose runtime stopped before the server's status came ends CANCELLED ("the Trellis runtime
  // is shutting down"), with no response metadata.
  template <class Token>
  auto finish_status(Token&& token) {
    return detail::async_finish(core_.get(), std::forward<Token>(token));
  }
  template <class Msg, class Token>
  auto write_message(const Msg& message, Token&& token) {
    detail::Bytes bytes;
    Status prepared = detail::serialize_for_write(message, &bytes);
    return detail::async_write(core_.get(), std::move(prepared), std::move(bytes), false,
                               std::forward<Token>(token));
  }

  ClientStreamHandle core_;
};

}  // namespace detail

// The client side of a server-streaming call. Move-only; destroying it before the call has
// finished cancels the call. Operations may be awaited from any task on a Trellis runtime; the
// call runs on the worker of the first one. Like all Trellis operations they take an Asio
// completion token (default: a Task; boost::asio::deferred: an asynchronous operation that a task
// co_awaits without a coroutine frame for it, see ServerReader); cancelling a pending one cancels
// the whole call.
template <class Resp>
class ClientReader : public detail::ClientStreamBase {
 public:
  explicit ClientReader(detail::ClientStreamHandle core) : ClientStreamBase(std::move(core)) {}

  // Completes with the next response, or std::nullopt once the stream has ended (successfully
  // or not: finish() says which). One read may be pending at a time.
  template <class Token = boost::asio::use_awaitable_t<>>
  requires detail::NotAMessage<Token>
  auto read(Token&& token = {}) {
    return detail::async_read<Resp>(core_.get(), std::forward<Token>(token));
  }
  // Reads the next response into `message`, which must stay alive until the read completes:
  // completes with true (a response), or false once the stream has ended (finish() says how;
  // the message's content is then unspecified). A loop reusing one message this way allocates
  // no message per read: `while (co_await reader.read(response)) ...`
  template <class Token = boost::asio::use_awaitable_t<>>
  auto read(Resp& message, Token&& token = {}) {
    return detail::async_read_into(core_.get(), &message, std::forward<Token>(token));
  }
  // Completes with the call's final status. Responses not read yet are discarded.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto finish(Token&& token = {}) {
    return finish_status(std::forward<Token>(token));
  }
};

// The client side of a client-streaming call: write requests, then finish() for the response.
// Move-only; destroying it before finish() completes cancels the call.
template <class Req, class Resp>
class ClientWriter : public detail::ClientStreamBase {
 public:
  explicit ClientWriter(detail::ClientStreamHandle core) : ClientStreamBase(std::move(core)) {}

  // Sends one request; completes with true once gRPC has taken it, false when the call has
  // ended (finish() says why). One write at a time.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto write(const Req& message, Token&& token = {}) {
    return write_message(message, std::forward<Token>(token));
  }
  // Half-closes: no more requests. Optional; finish() does it too.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto writes_done(Token&& token = {}) {
    return detail::async_writes_done(core_.get(), std::forward<Token>(token));
  }
  // Half-closes if needed and completes with the response or the call's error status: a Task by
  // default, or for any other completion token an operation that completes with
  // void(Result<Resp>), as a unary call does.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto finish(Token&& token = {}) {
    if constexpr (std::is_same_v<std::decay_t<Token>, boost::asio::use_awaitable_t<>>) {
      return finish_task(core_.get());
    } else {
      return detail::async_task(finish_task(core_.get()), std::forward<Token>(token));
    }
  }

 private:
  static Task<Result<Resp>> finish_task(detail::StreamCore* core) {
    co_await detail::async_writes_done(core, use_task);
    std::optional<Resp> response = co_await detail::async_read<Resp>(core, use_task);
    Status status = co_await detail::async_finish(core, use_task);
    if (!status.ok()) co_return status;
    if (!response) co_return Status::internal("the server sent no response message");
    co_return std::move(*response);
  }
};

// The client side of a bidi call: one task may read while another writes. Move-only; destroying
// it before the call has finished cancels the call.
template <class Req, class Resp>
class ClientReaderWriter : public detail::ClientStreamBase {
 public:
  explicit ClientReaderWriter(detail::ClientStreamHandle core)
      : ClientStreamBase(std::move(core)) {}

  // As ClientReader::read, both forms.
  template <class Token = boost::asio::use_awaitable_t<>>
  requires detail::NotAMessage<Token>
  auto read(Token&& token = {}) {
    return detail::async_read<Resp>(core_.get(), std::forward<Token>(token));
  }
  template <class Token = boost::asio::use_awaitable_t<>>
  auto read(Resp& message, Token&& token = {}) {
    return detail::async_read_into(core_.get(), &message, std::forward<Token>(token));
  }
  // As ClientWriter::write.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto write(const Req& message, Token&& token = {}) {
    return write_message(message, std::forward<Token>(token));
  }
  // Half-closes: no more requests; responses keep coming.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto writes_done(Token&& token = {}) {
    return detail::async_writes_done(core_.get(), std::forward<Token>(token));
  }
  // Half-closes if needed, discards unread responses, completes with the final status.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto finish(Token&& token = {}) {
    return finish_status(std::forward<Token>(token));
  }
};

namespace detail {

// What generated clients hold for each streaming method: the channel and the method.
class StreamingClientMethod {
 public:
  // `path` is "/package.Service/Method"; it must outlive this object (generated code passes a
  // string literal).
  StreamingClientMethod(const Channel& channel, const char* path, RpcKind kind,
                        Idempotency idempotency)
      : channel_(channel.grpc_channel()),
        method_(path, grpc::internal::RpcMethod::BIDI_STREAMING, channel_),
        info_{path, kind, idempotency},
        stack_(channel.stack()) {}

  const MethodInfo& info() const { return info_; }

 protected:
  // A server-streaming call: `request` serialized (or the `status` of its failure); `message`,
  // copied only when there are layers, for them to see.
  template <class Req>
  ClientStreamHandle open(CallOptions options, Bytes request, Status status,
                          const Req* message) const {
    if (stack_) {
      return ClientStreamHandle(
          new_layered_client_stream(stack_, {channel_, method_}, info_, std::move(options),
                                    std::make_unique<Req>(*message), nullptr, std::move(status)));
    }
    return ClientStreamHandle(new_client_stream(channel_, method_, std::move(options),
                                                std::optional<Bytes>(std::move(request)),
                                                std::move(status)));
  }
  // A client-streaming or bidi call; `request_type`: the request's default instance. (No
  // std::optional<Bytes> moved here: under ASan, GCC 12 warns that the disengaged optional's
  // buffer "may be used uninitialized".)
  ClientStreamHandle open(CallOptions options,
                          const google::protobuf::MessageLite& request_type) const {
    if (stack_) {
      return ClientStreamHandle(new_layered_client_stream(stack_, {channel_, method_}, info_,
                                                          std::move(options), nullptr,
                                                          &request_type, Status()));
    }
    return ClientStreamHandle(
        new_client_stream(channel_, method_, std::move(options), std::nullopt, Status()));
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  grpc::internal::RpcMethod method_;
  MethodInfo info_;
  std::shared_ptr<const BoxService> stack_;
};

}  // namespace detail

// A server-streaming method bound to a channel. Calling it serializes the request and returns the
// stream; the call starts when the stream is first read.
template <class Req, class Resp>
class ServerStreamingClientMethod : public detail::StreamingClientMethod {
 public:
  ServerStreamingClientMethod(const Channel& channel, const char* path,
                              Idempotency idempotency = Idempotency::kUnknown)
      : StreamingClientMethod(channel, path, RpcKind::kServerStreaming, idempotency) {}
  ClientReader<Resp> operator()(const Req& request, CallOptions options = {}) const {
    detail::Bytes bytes;
    Status status = detail::serialize(request, bytes.get());
    return ClientReader<Resp>(
        open(std::move(options), std::move(bytes), std::move(status), &request));
  }
};

// A client-streaming method bound to a channel; the call starts with the first operation.
template <class Req, class Resp>
class ClientStreamingClientMethod : public detail::StreamingClientMethod {
 public:
  ClientStreamingClientMethod(const Channel& channel, const char* path,
                              Idempotency idempotency = Idempotency::kUnknown)
      : StreamingClientMethod(channel, path, RpcKind::kClientStreaming, idempotency) {}
  ClientWriter<Req, Resp> operator()(CallOptions options = {}) const {
    return ClientWriter<Req, Resp>(open(std::move(options), Req::default_instance()));
  }
};

// A bidi-streaming method bound to a channel; the call starts with the first operation.
template <class Req, class Resp>
class BidiStreamingClientMethod : public detail::StreamingClientMethod {
 public:
  BidiStreamingClientMethod(const Channel& channel, const char* path,
                            Idempotency idempotency = Idempotency::kUnknown)
      : StreamingClientMethod(channel, path, RpcKind::kBidiStreaming, idempotency) {}
  ClientReaderWriter<Req, Resp> operator()(CallOptions options = {}) const {
    return ClientReaderWriter<Req, Resp>(open(std::move(options), Req::default_instance()));
  }
};

}  // namespace trellis
