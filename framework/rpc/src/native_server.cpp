#include "native_server.hpp"

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <sys/un.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "asio_server_connection.hpp"
#include "forward.hpp"
#include "grpc_convert.hpp"
#include "grpc_wire.hpp"
#include "log.hpp"
#include "native_tls.hpp"
#include "runtime_core.hpp"
#include "server_call.hpp"
#include "trellis/runtime.hpp"
#include "trellis/service.hpp"
#include "worker.hpp"

namespace trellis::detail {
namespace {

using boost::asio::ip::tcp;
using transport::StreamId;
using Endpoint = boost::asio::generic::stream_protocol::endpoint;
using Acceptor = boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>;

// A write completes at once while its stream holds fewer bytes than this that flow control has
// not let out; past it, once they drain below it (the handler's backpressure).
constexpr std::size_t kWriteBound = 64 << 10;

// A TCP socket's endpoint, from the generic one a listener's sockets have.
tcp::endpoint to_tcp(const Endpoint& generic) {
  tcp::endpoint endpoint;
  if (generic.size() <= endpoint.capacity()) {
    std::memcpy(endpoint.data(), generic.data(), generic.size());
    endpoint.resize(generic.size());
  }
  return endpoint;
}

// The peer of a TCP connection as gRPC names it: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000".
std::string peer_name(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  if (address.is_v6()) return absl::StrCat("ipv6:[", address.to_string(), "]:", endpoint.port());
  return absl::StrCat("ipv4:", address.to_string(), ":", endpoint.port());
}

// A received message as the byte buffer the method wrappers parse. A large one is handed over
// without a copy (its slice owns the string); a small one is copied, which costs less than the
// allocation that adopting it would take.
grpc::ByteBuffer to_byte_buffer(std::string message) {
  constexpr std::size_t kAdoptFrom = 4096;
  if (message.size() < kAdoptFrom) {
    grpc::Slice slice(message.data(), message.size());
    return grpc::ByteBuffer(&slice, 1);
  }
  auto* owned = new std::string(std::move(message));
  grpc::Slice slice(
      owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); }, owned);
  return grpc::ByteBuffer(&slice, 1);
}

// The bytes of a serialized message to send: a view of its one slice (every message but large
// ones), or a copy of its slices.
class MessageBytes {
 public:
  explicit MessageBytes(grpc::ByteBuffer& buffer) {
    if (buffer.TrySingleSlice(&single_).ok()) {
      view_ = std::string_view(reinterpret_cast<const char*>(single_.begin()), single_.size());
      return;
    }
    std::vector<grpc::Slice> slices;
    if (buffer.Dump(&slices).ok()) {
      for (const auto& slice : slices) {
        copy_.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      }
    }
    view_ = copy_;
  }
  std::string_view view() const { return view_; }

 private:
  grpc::Slice single_;
  std::string copy_;
  std::string_view view_;
};

// The messages a stream has received and its handler has not read yet: a FIFO that, unlike
// std::deque, allocates nothing while empty (a held stream has it empty).
class MessageQueue {
 public:
  bool empty() const { return next_ == items_.size(); }
  void push_back(std::string message) { items_.push_back(std::move(message)); }
  // Moves the oldest message out of the queue.
  std::string take_front() {
    std::string message = std::move(items_[next_]);
    if (++next_ == items_.size()) clear();
    return message;
  }
  void clear() {
    items_.clear();
    next_ = 0;
  }

 private:
  std::vector<std::string> items_;
  std::size_t next_ = 0;
};

Status too_large_to_send(std::size_t size, int limit) {
  return Status::resource_exhausted(absl::StrCat("the response message is ", size,
                                                 " bytes, over the server's send limit of ", limit,
                                                 " (max_send_message_size)"));
}

class NativeConnection;

}  // namespace

// ------------------------------------------------------------------------------- the state

struct NativeServer::State {
  RuntimeCore* core = nullptr;
  std::unordered_map<std::string, NativeMethod> methods;
  NativeServerOptions options;
  transport::ConnectionOptions connection;
  std::vector<int> ports;
  // One per address, on the first worker's reactor.
  struct Listener {
    std::unique_ptr<Acceptor> acceptor;
    std::string unix_path;  // a unix socket's path ("" for TCP and abstract sockets)
    std::string peer;       // the peer of every connection on a unix socket ("" for TCP)
    std::unique_ptr<NativeTlsPort> tls;
    // After a failed accept; each listener its own, as they fail together when out of files.
    std::unique_ptr<boost::asio::steady_timer> accept_retry;
  };
  std::vector<Listener> listeners;
  bool served = false;  // serve() ran: the listeners belong to the first worker's reactor
  std::atomic<std::size_t> next_worker{0};
  std::atomic<bool> stopping{false};
  // Each worker's open connections; touched on that worker only.
  std::vector<std::unordered_set<NativeConnection*>> connections;

  // Connections and call objects alive; shutdown waits for them to reach zero. Any worker.
  LiveCounts live;
  std::atomic<int> live_connections{0};
  std::atomic<int> live_calls{0};

  Worker* worker(std::size_t i) const { return core->workers[i].get(); }
  void accept(std::size_t index);
  // Closes the listening sockets and removes the unix sockets' files.
  void close_listeners();
};

namespace {

// ------------------------------------------------------------------------------- the calls

// What both kinds of native call share: the call's place on its connection, its context, its
// deadline, and the end of its stream. Lives on its connection's worker; every member is touched
// only there, but for pending_posts_.
class NativeCall : public ServerCall {
 public:
  NativeCall(std::shared_ptr<transport::AsioServerConnection> socket, NativeConnection* connection,
             Worker* worker, StreamId id, const std::string& method_path, const BoxService* stack,
             transport::RequestHead& head, NativeServer::State* server);
  virtual ~NativeCall();

  virtual void on_message(std::string message) = 0;
  virtual void on_half_close() = 0;
  virtual void on_abort(const Status& why) = 0;
  virtual void on_writable() {}
  virtual void cancel_now(Status status) = 0;

  void maybe_free() {
    if (callback_depth_ == 0 && ended_ && !handler_running_ && !timer_pending_ &&
        pending_posts_.load(std::memory_order_relaxed) == 0) {
      delete this;
    }
  }

 protected:
  friend class CallbackScope<NativeCall>;
  using Scope = CallbackScope<NativeCall>;

  transport::ServerSession& session() { return socket_->session(); }
  // Response headers (the handler's initial metadata, the compression) before the first message
  // or the status.
  void start_response();
  // Ends the stream with `status` (and the handler's trailers); nothing more is sent.
  void finish_stream(const Status& status);
  // The stream is gone without a status from us (the client reset it, the connection closed).
  void stream_gone();
  void request_flush();
  void wait_writable();
  // Launches the handler's task with the context's cancellation slot.
  boost::asio::cancellation_slot cancellation_slot() {
    return ServerContextAccess::signal(ctx_).slot();
  }
  Status check_send_size(std::size_t size) const {
    const int limit = server_->options.max_send_message_size;
    if (limit >= 0 && size > static_cast<std::size_t>(limit)) return too_large_to_send(size, limit);
    return Status();
  }

  std::shared_ptr<transport::AsioServerConnection> socket_;  // keeps the connection alive
  NativeConnection* connection_;
  const BoxService* stack_;  // the server's middleware for the method, or nullptr
  Worker* worker_;
  StreamId id_;
  NativeServer::State* server_;
  // The response compressions the client accepts (grpc-accept-encoding), by Compression value.
  std::uint8_t accepted_compressions_ = 0;
  NativeCallState state_;
  ServerContext ctx_;
  boost::asio::steady_timer deadline_timer_;
  std::atomic<int> pending_posts_{0};  // runnables posted to the worker that name this call
  CancelRequest cancel_request_;       // a cancel_with from another thread, until it runs
  int callback_depth_ = 0;
  bool ended_ = false;  // the stream is finished or gone
  bool response_started_ = false;
  bool handler_running_ = false;
  bool timer_pending_ = false;

 private:
  void on_deadline();
};

// A call on a unary method: the request is read whole, then the handler runs.
class NativeUnaryCall final : public NativeCall {
 public:
  NativeUnaryCall(std::shared_ptr<transport::AsioServerConnection> socket,
                  NativeConnection* connection, Worker* worker, StreamId id, UnaryMethod* method,
                  const BoxService* stack, transport::RequestHead& head,
                  NativeServer::State* server)
      : NativeCall(std::move(socket), connection, worker, id, method->path(), stack, head, server),
        method_(method) {}

  void on_message(std::string message) override {
    Scope scope(this);
    session().release(id_);
    if (got_request_) {
      finish_stream(
          Status::internal("the client sent more than one request message on a "
                           "unary method"));
      return;
    }
    got_request_ = true;
    request_ = to_byte_buffer(std::move(message));
  }

  void on_half_close() override {
    Scope scope(this);
    if (ended_ || handler_running_) return;
    if (!got_request_) {
      finish_stream(Status::internal("the client sent no request message"));
      return;
    }
    handler_running_ = true;
#if TRELLIS_ASIO_INTERNALS
    asio_internals::Launch(serve(this), Executor(worker_), cancellation_slot()).launch();
#else
    boost::asio::co_spawn(
        Executor(worker_), method_->invoke(ctx_, &request_, &response_, &status_, stack_),
        boost::asio::bind_cancellation_slot(
            cancellation_slot(), [this](std::exception_ptr error) { handler_done(error); }));
#endif
  }

  void on_abort(const Status&) override {
    Scope scope(this);
    stream_gone();
    if (handler_running_) cancel_handler(ctx_);
  }

  void cancel_with(Status status) override {
    run_cancel_with(this, worker_, pending_posts_, ctx_, cancel_request_, std::move(status));
  }

  void cancel_now(Status status) override {
    Scope scope(this);
    if (ended_) return;
    finish_stream(status);
    if (handler_running_) cancel_handler(ctx_);
  }

 private:
#if TRELLIS_ASIO_INTERNALS
  static asio_internals::EntryPoint serve(NativeUnaryCall* self) {
    std::exception_ptr error;
    try {
      co_await self->method_->invoke(self->ctx_, &self->request_, &self->response_, &self->status_,
                                     self->stack_);
    } catch (...) {
      error = std::current_exception();
    }
    self->handler_done(error);
  }
#endif

  void handler_done(const std::exception_ptr& error) {
    Scope scope(this);
    if (std::optional<Status> cancel = cancel_request_.take()) cancel_now(std::move(*cancel));
    handler_running_ = false;
    if (error) status_ = handler_outcome(error, std::move(status_), ctx_);
    if (ended_) return;  // cancelled, or the stream is gone: nothing more to send
    if (status_.ok()) {
      MessageBytes message(response_);
      if (Status size = check_send_size(message.view().size()); !size.ok()) {
        finish_stream(size);
        return;
      }
      start_response();
      session().send_message(id_, message.view());
    }
    finish_stream(status_);
  }

  UnaryMethod* method_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  Status status_;
  bool got_request_ = false;
};

// A call on a streaming method (any streaming kind): the handler starts with the headers and
// reads and writes the stream (StreamCore).
class NativeStreamCall final : public ServerStreamCore, public NativeCall {
 public:
  NativeStreamCall(std::shared_ptr<transport::AsioServerConnection> socket,
                   NativeConnection* connection, Worker* worker, StreamId id, StreamMethod* method,
                   const BoxService* stack, transport::RequestHead& head,
                   NativeServer::State* server)
      : NativeCall(std::move(socket), connection, worker, id, method->path(), stack, head, server),
        method_(method) {}

  void launch() {
    Scope scope(this);
    handler_running_ = true;
#if TRELLIS_ASIO_INTERNALS
    asio_internals::Launch thread(method_->run(ctx_, *this, stack_), Executor(worker_),
                                  cancellation_slot());
    home_thread_.store(thread.id(), std::memory_order_relaxed);
    thread.launch();
#else
    boost::asio::co_spawn(Executor(worker_), method_->invoke(ctx_, *this, stack_),
                          boost::asio::bind_cancellation_slot(
                              cancellation_slot(), [this](std::exception_ptr error, Status status) {
                                handler_returned(std::move(error), std::move(status));
                              }));
#endif
  }

  // ------------------------------------------------------------- StreamCore
  Worker* bind(Worker*) override { return worker_; }

  void read(ReadOp* op) override {
    if (read_op_ != nullptr) {
      misuse("a read was started while another read is pending on the stream");
      complete_later(worker_, op, false, static_cast<grpc::ByteBuffer*>(nullptr));
      return;
    }
    read_op_ = op;
    // Never inline: the awaiting coroutine has not suspended yet.
    if (!messages_.empty() || reads_ended()) post_to_self([this] { deliver(); });
  }

  void write(Bytes message, bool, WriteOp* op) override {
    if (write_op_ != nullptr) {
      misuse("a write was started while another write is pending on the stream");
      complete_later(worker_, op, false);
      return;
    }
    if (ended_ || failed_ || handler_returned_) {
      complete_later(worker_, op, false);
      return;
    }
    MessageBytes bytes(*message.get());
    if (Status size = check_send_size(bytes.view().size()); !size.ok()) {
      fail(std::move(size));
      post_to_self([this] { cancel_on_worker(); });
      complete_later(worker_, op, false);
      return;
    }
    start_response();
    session().send_message(id_, bytes.view());
    request_flush();
    if (session().queued_bytes(id_) < kWriteBound) {
      complete_later(worker_, op, true);
    } else {
      write_op_ = op;  // completes when the stream drains (on_writable) or ends
      wait_writable();
    }
  }

  void start(WriteOp* op) override { complete_later(worker_, op, false); }
  void writes_done(WriteOp* op) override { complete_later(worker_, op, false); }
  void finish(FinishOp* op) override {
    complete_later(worker_, op,
                   Status::failed_precondition("a server stream is finished by its handler"));
  }

  // Posted even on the worker: it is called from cancellation handlers, inside a signal's
  // emit(), where completing an operation would resume its coroutine inline.
  void cancel() override {
    post_to_self([this] { cancel_on_worker(); });
  }

  void fail(Status status) override {
    if (failed_) return;
    status_ = std::move(status);
    failed_ = true;
  }

  void handler_returned(std::exception_ptr error, Status status) noexcept override {
    Scope scope(this);
    if (std::optional<Status> cancel = cancel_request_.take()) cancel_now(std::move(*cancel));
    home_thread_.store(nullptr, std::memory_order_relaxed);
    handler_running_ = false;
    handler_returned_ = true;
    Status outcome = handler_outcome(std::move(error), std::move(status), ctx_);
    if (!failed_) status_ = std::move(outcome);
    finish_stream(status_);
    // Operations another task left pending: a write waiting for the stream to drain has been
    // queued (it went out before the status); a read ends. Not inline: this runs in the
    // handler's last frame.
    if (write_op_ != nullptr || read_op_ != nullptr) {
      post_to_self([this] {
        if (write_op_ != nullptr) std::exchange(write_op_, nullptr)->complete(true);
        if (read_op_ != nullptr) std::exchange(read_op_, nullptr)->complete(false, nullptr);
      });
    }
  }

  // ------------------------------------------------------------- the session's events
  void on_message(std::string message) override {
    Scope scope(this);
    messages_.push_back(std::move(message));
    if (read_op_ != nullptr) deliver();
  }

  void on_half_close() override {
    Scope scope(this);
    half_closed_ = true;
    if (read_op_ != nullptr) deliver();
  }

  void on_abort(const Status&) override {
    Scope scope(this);
    stream_gone();
    end_operations();
  }

  void on_writable() override {
    if (write_op_ == nullptr) return;
    if (session().queued_bytes(id_) >= kWriteBound) {
      wait_writable();
      return;
    }
    Scope scope(this);
    std::exchange(write_op_, nullptr)->complete(true);
  }

  // ------------------------------------------------------------- ServerCall
  void cancel_with(Status status) override {
    run_cancel_with(this, worker_, pending_posts_, ctx_, cancel_request_, std::move(status));
  }

  // Posted: cancel_with may come from the handler's own code, where completing another
  // task's pending read would resume it inline.
  void cancel_now(Status status) override {
    if (handler_returned_ || failed_ || ended_) return;
    fail(std::move(status));
    post_to_self([this] { cancel_on_worker(); });
  }

 private:
  bool reads_ended() const { return half_closed_ || ended_ || failed_; }

  template <class F>
  void post_to_self(F f) {
    pending_posts_.fetch_add(1, std::memory_order_relaxed);
    worker_->post(make_runnable([this, f = std::move(f)]() mutable {
      pending_posts_.fetch_sub(1, std::memory_order_relaxed);
      {
        Scope scope(this);
        f();
      }
    }));
  }

  // Completes the pending read with the oldest message, or with the end of the stream.
  void deliver() {
    ReadOp* op = std::exchange(read_op_, nullptr);
    if (op == nullptr) return;
    if (!messages_.empty() && !ended_ && !failed_) {
      grpc::ByteBuffer message = to_byte_buffer(messages_.take_front());
      session().release(id_);
      op->complete(true, &message);
    } else if (reads_ended()) {
      op->complete(false, nullptr);
    } else {
      read_op_ = op;
    }
  }

  // The call ends now: the client gets the failure status (if fail() set one) or CANCELLED, and
  // the handler is cancelled.
  void cancel_on_worker() {
    Scope scope(this);
    if (ended_) return;
    if (failed_) {
      finish_stream(status_);
    } else {
      ended_ = true;
      session().cancel(id_);
      stream_gone();
      request_flush();
    }
    end_operations();
  }

  // The stream has ended under the handler: what it awaits completes, and it is cancelled.
  void end_operations() {
    ServerContextAccess::mark_cancelled(ctx_);
    messages_.clear();
    if (read_op_ != nullptr) std::exchange(read_op_, nullptr)->complete(false, nullptr);
    if (write_op_ != nullptr) std::exchange(write_op_, nullptr)->complete(false);
    if (handler_running_) cancel_handler(ctx_);
  }

  void misuse(const char* what) {
    log(LogLevel::kError, absl::StrCat(std::string(ctx_.method()), ": ", what));
    fail(Status::internal(what));
  }

  StreamMethod* method_;
  MessageQueue messages_;  // received, not yet read
  ReadOp* read_op_ = nullptr;
  WriteOp* write_op_ = nullptr;
  Status status_;  // what fail() set (failed_), else the handler's outcome once it returned
  bool half_closed_ = false;
  bool failed_ = false;
  bool handler_returned_ = false;
};

// ------------------------------------------------------------------------- the connection

// One accepted connection: the listener of its session, which maps each stream to its call.
// Owned by its AsioServerConnection (hold()); lives on the worker that accepted it.
class NativeConnection final : public transport::ServerSessionListener {
 public:
  NativeConnection(NativeServer::State* server, Worker* worker, std::string peer)
      : server_(server), worker_(worker), peer_(std::move(peer)) {
    LiveCounts::created(server_->live_connections);
    server_->connections[worker_->index()].insert(this);
  }
  ~NativeConnection() {
    server_->connections[worker_->index()].erase(this);
    server_->live.destroyed(server_->live_connections);
  }

  void attach(transport::AsioServerConnection* socket) { socket_ = socket; }
  transport::AsioServerConnection& socket() { return *socket_; }
  const std::string& peer() const { return peer_; }
  // The verified client certificate's identity (TLS with client_ca), read at the first call,
  // when the handshake is long done.
  const std::optional<PeerIdentity>& peer_identity() {
    if (!identity_read_) {
      identity_read_ = true;
      if (SSL* tls = socket_->tls()) identity_ = verified_peer_identity(tls);
    }
    return identity_;
  }

  void on_call(StreamId id, transport::RequestHead head) override {
    auto found = server_->methods.find(head.method);
    if (found == server_->methods.end()) {
      socket_->session().finish(
          id, Status::unimplemented(absl::StrCat("unknown method ", head.method)));
      return;
    }
    const NativeMethod& m = found->second;
    auto keep = socket_->shared_from_this();
    if (m.unary != nullptr) {
      calls_[id] =
          new NativeUnaryCall(std::move(keep), this, worker_, id, m.unary, m.stack, head, server_);
      return;
    }
    auto* call =
        new NativeStreamCall(std::move(keep), this, worker_, id, m.stream, m.stack, head, server_);
    calls_[id] = call;
    call->launch();
  }

  void on_message(StreamId id, std::string message) override {
    if (NativeCall* call = find(id)) call->on_message(std::move(message));
  }
  void on_half_close(StreamId id) override {
    if (NativeCall* call = find(id)) call->on_half_close();
  }
  void on_abort(StreamId id, const Status& why) override {
    if (NativeCall* call = find(id)) call->on_abort(why);
  }
  // Only the calls with a write waiting for their stream to drain are told, by stream id: a
  // call that ended meanwhile has left the map, and one still waiting asks again.
  void on_writable() override {
    if (waiting_writers_.empty()) return;
    std::vector<StreamId> waiting;
    waiting.swap(waiting_writers_);
    for (StreamId id : waiting) {
      if (NativeCall* call = find(id)) call->on_writable();
    }
  }
  // The call on `id` has a write waiting for its stream to drain: on_writable tells it.
  void wait_writable(StreamId id) { waiting_writers_.push_back(id); }

  // The call on `id` has ended: later events of the stream are not its.
  void ended(StreamId id) { calls_.erase(id); }

  // Writes what the session has queued once the current batch of work on the worker has run,
  // so that the responses it produced leave in one write.
  void request_flush() {
    if (flush_posted_) return;
    flush_posted_ = true;
    worker_->post(make_runnable([this, keep = socket_->shared_from_this()] {
      flush_posted_ = false;
      socket_->flush();
    }));
  }

 private:
  NativeCall* find(StreamId id) {
    auto it = calls_.find(id);
    return it == calls_.end() ? nullptr : it->second;
  }

  NativeServer::State* server_;
  Worker* worker_;
  std::string peer_;
  transport::AsioServerConnection* socket_ = nullptr;  // owns this
  std::unordered_map<StreamId, NativeCall*> calls_;
  std::vector<StreamId> waiting_writers_;
  std::optional<PeerIdentity> identity_;
  bool identity_read_ = false;
  bool flush_posted_ = false;
};

// ---------------------------------------------------------------- NativeCall, out of line

NativeCall::NativeCall(std::shared_ptr<transport::AsioServerConnection> socket,
                       NativeConnection* connection, Worker* worker, StreamId id,
                       const std::string& method_path, const BoxService* stack,
                       transport::RequestHead& head, NativeServer::State* server)
    : socket_(std::move(socket)),
      connection_(connection),
      stack_(stack),
      worker_(worker),
      id_(id),
      server_(server),
      accepted_compressions_(head.accepted_compressions),
      ctx_(&state_, method_path, this),
      deadline_timer_(worker->reactor_executor()) {
  LiveCounts::created(server_->live_calls);
  Worker::count_call(worker_->live_server_calls, 1);
  state_.request_metadata = std::move(head.metadata);
  state_.peer = connection->peer();  // the connection outlives its calls
  state_.peer_identity = &connection->peer_identity();
  if (head.timeout) {
    auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(*head.timeout);
    state_.deadline = std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout);
    timer_pending_ = true;
    deadline_timer_.expires_after(timeout);
    deadline_timer_.async_wait([this](const boost::system::error_code& error) {
      timer_pending_ = false;
      Scope scope(this);
      if (!error) on_deadline();
    });
  }
}

NativeCall::~NativeCall() {
  Worker::count_call(worker_->live_server_calls, -1);
  server_->live.destroyed(server_->live_calls);
}

void NativeCall::on_deadline() {
  // The client's deadline has passed: grpc core answers DEADLINE_EXCEEDED and cancels the
  // handler, and so does this.
  cancel_now(Status::deadline_exceeded("Deadline Exceeded"));
}

void NativeCall::start_response() {
  if (response_started_) return;
  response_started_ = true;
  Compression compression = state_.compression.value_or(server_->options.default_compression);
  if (compression != Compression::kNone &&
      (accepted_compressions_ & transport::compression_bit(compression)) != 0) {
    session().set_response_compression(id_, compression);
  }
  if (!state_.initial_metadata.empty())
    session().send_initial_metadata(id_, state_.initial_metadata);
}

void NativeCall::finish_stream(const Status& status) {
  if (ended_) return;
  start_response();
  session().finish(id_, status, state_.trailing_metadata);
  stream_gone();
  request_flush();
}

void NativeCall::stream_gone() {
  ended_ = true;
  connection_->ended(id_);
  if (timer_pending_) deadline_timer_.cancel();
}

void NativeCall::request_flush() { connection_->request_flush(); }

void NativeCall::wait_writable() { connection_->wait_writable(id_); }

}  // namespace

// ------------------------------------------------------------------------ accepting

void NativeServer::State::accept(std::size_t index) {
  Worker* target =
      worker(next_worker.fetch_add(1, std::memory_order_relaxed) % core->workers.size());
  listeners[index].acceptor->async_accept(
      target->reactor_executor(),
      [this, index, target](const boost::system::error_code& error,
                            transport::AsioServerConnection::Socket socket) {
        if (stopping.load(std::memory_order_acquire) ||
            error == boost::asio::error::operation_aborted) {
          return;
        }
        if (error) {
          // Out of descriptors, most likely: say so, and try again shortly rather than spin.
          log(LogLevel::kError, absl::StrCat("native server: accept failed: ", error.message()));
          auto& retry = *listeners[index].accept_retry;
          retry.expires_after(std::chrono::milliseconds(100));
          retry.async_wait([this, index](const boost::system::error_code& e) {
            if (!e && !stopping.load(std::memory_order_acquire)) accept(index);
          });
          return;
        }
        const Listener& listener = listeners[index];
        auto tls = listener.tls ? listener.tls->context() : nullptr;
        boost::asio::post(target->reactor_executor(), [this, index, target, tls = std::move(tls),
                                                       s = std::move(socket)]() mutable {
          if (stopping.load(std::memory_order_acquire)) return;
          boost::system::error_code ignored;
          std::string peer = listeners[index].peer.empty()
                                 ? peer_name(to_tcp(s.remote_endpoint(ignored)))
                                 : listeners[index].peer;
          auto connection = std::make_shared<NativeConnection>(this, target, std::move(peer));
          auto socket = std::make_shared<transport::AsioServerConnection>(
              std::move(s), *connection, this->connection, std::move(tls));
          connection->attach(socket.get());
          socket->hold(connection);
          socket->start();
        });
        accept(index);
      });
}

namespace {

// Where an address listens: its endpoint, and for a unix socket the file to remove before binding
// and after closing, and the name its connections' peers have.
struct ListenAt {
  Endpoint endpoint;
  std::string unix_path;
  std::string peer;  // "" for TCP, whose peers have their own addresses
  bool tcp() const { return peer.empty(); }
};

// "host:port", "[v6]:port", "unix:path", "unix:///absolute/path", "unix-abstract:name": the
// addresses grpc core's server listens on.
Result<ListenAt> parse_address(const std::string& address) {
  using Local = boost::asio::local::stream_protocol::endpoint;
  auto local = [&](std::string path, bool abstract) -> Result<ListenAt> {
    if (path.empty()) return Status::invalid_argument(absl::StrCat("no socket path in ", address));
    // sun_path holds the path and its NUL; an abstract name has a NUL in front instead.
    const std::size_t longest = sizeof(sockaddr_un::sun_path) - 1 - (abstract ? 1 : 0);
    if (path.size() > longest) {
      return Status::invalid_argument(
          absl::StrCat("the unix socket path in ", address, " is over ", longest, " bytes"));
    }
    ListenAt at;
    at.endpoint = Local(abstract ? std::string(1, '\0') + path : path);
    if (!abstract) at.unix_path = path;
    at.peer = address;
    return at;
  };
  if (absl::StartsWith(address, "unix-abstract:")) {
    return local(address.substr(std::strlen("unix-abstract:")), true);
  }
  if (absl::StartsWith(address, "unix://"))
    return local(address.substr(std::strlen("unix://")), false);
  if (absl::StartsWith(address, "unix:")) return local(address.substr(std::strlen("unix:")), false);
  auto colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return Status::invalid_argument(absl::StrCat("not a host:port address: ", address));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  boost::system::error_code error;
  auto ip = boost::asio::ip::make_address(host.empty() ? "::" : host, error);
  ListenAt at;
  if (!error) {
    at.endpoint = tcp::endpoint(ip, static_cast<unsigned short>(port));
    return at;
  }
  boost::asio::io_context context;
  tcp::resolver resolver(context);
  auto results = resolver.resolve(host, std::to_string(port), error);
  if (error || results.empty()) {
    return Status::invalid_argument(
        absl::StrCat("cannot resolve ", host, " in ", address, ": ", error.message()));
  }
  at.endpoint = results.begin()->endpoint();
  return at;
}

// Removes the socket file a unix listener left at `path` (by a server that did not shut down,
// or by this one), as grpc core does; any other file stays, and binding over it fails.
void remove_socket_file(const std::string& path) {
  std::error_code ignored;
  if (!path.empty() && std::filesystem::is_socket(std::filesystem::symlink_status(path, ignored))) {
    std::filesystem::remove(path, ignored);
  }
}

// A connection's timer from a builder option, clamped as the grpc transport hands it to grpc
// core (to_grpc_ms: [0, INT_MAX] ms), where INT_MAX ms (about 24.8 days) means "never". That
// also keeps milliseconds::max(), the usual "never", from overflowing the steady clock.
std::chrono::steady_clock::duration connection_timer(std::chrono::milliseconds option) {
  const int ms = detail::to_grpc_ms(option);
  if (ms == std::numeric_limits<int>::max()) return std::chrono::steady_clock::duration::max();
  return std::chrono::milliseconds(ms);
}

}  // namespace

void NativeServer::State::close_listeners() {
  boost::system::error_code ignored;
  for (Listener& listener : listeners) {
    if (listener.acceptor) listener.acceptor->close(ignored);
    remove_socket_file(listener.unix_path);
    listener.unix_path.clear();
  }
}

Result<std::unique_ptr<NativeServer>> NativeServer::bind(Runtime& runtime,
                                                         const std::vector<NativePort>& ports,
                                                         NativeServerOptions options) {
  auto state = std::make_shared<State>();
  state->core = &RuntimeAccess::core(runtime);
  state->options = options;
  state->connections.resize(state->core->workers.size());
  auto& session = state->connection.session;
  session.max_receive_message_size =
      options.max_receive_message_size < 0
          ? std::numeric_limits<std::size_t>::max()
          : static_cast<std::size_t>(options.max_receive_message_size);
  if (options.min_ping_interval) {
    session.min_ping_interval = std::max(*options.min_ping_interval, std::chrono::milliseconds(0));
  }
  if (options.max_concurrent_streams) {
    session.max_concurrent_streams =
        static_cast<std::uint32_t>(std::max(0, *options.max_concurrent_streams));
  }
  if (options.max_connection_idle) {
    state->connection.max_idle = connection_timer(*options.max_connection_idle);
  }
  if (options.max_connection_age) {
    state->connection.max_age = connection_timer(*options.max_connection_age);
    state->connection.max_age_grace = connection_timer(options.max_connection_age_grace);
  }
  if (options.keepalive) {
    state->connection.keepalive_time = connection_timer(options.keepalive->time);
    state->connection.keepalive_timeout = connection_timer(options.keepalive->timeout);
    state->connection.keepalive_without_calls = options.keepalive->permit_without_calls;
    session.permit_pings_without_calls = options.keepalive->permit_without_calls;
  }

  // Every TLS port's files are read and checked before anything is bound.
  state->listeners.resize(ports.size());
  for (std::size_t i = 0; i < ports.size(); ++i) {
    if (ports[i].tls == nullptr) continue;
    auto tls = NativeTlsPort::make(*ports[i].tls);
    if (!tls.ok()) {
      return Status(tls.status().code(),
                    absl::StrCat("TLS port ", ports[i].address, ": ", tls.status().message()));
    }
    state->listeners[i].tls = std::move(tls).value();
  }
  // The listening sockets live on the first worker's reactor; each accepted connection goes to
  // the next worker in turn, whose reactor then runs it.
  Worker* first = state->worker(0);
  for (std::size_t i = 0; i < ports.size(); ++i) {
    const std::string& address = ports[i].address;
    Result<ListenAt> at = parse_address(address);
    if (!at.ok()) {
      state->close_listeners();
      return at.status();
    }
    State::Listener& listener = state->listeners[i];
    listener.acceptor = std::make_unique<Acceptor>(first->reactor_executor());
    listener.peer = at->peer;
    remove_socket_file(at->unix_path);
    boost::system::error_code error;
    listener.acceptor->open(at->endpoint.protocol(), error);
    if (!error && at->tcp()) listener.acceptor->set_option(Acceptor::reuse_address(true), error);
    if (!error) listener.acceptor->bind(at->endpoint, error);
    if (!error) listener.unix_path = at->unix_path;
    if (!error) listener.acceptor->listen(boost::asio::socket_base::max_listen_connections, error);
    if (error) {
      state->close_listeners();
      return Status::unavailable(
          absl::StrCat("could not listen on ", address, ": ", error.message()));
    }
    // A unix socket has no port: 0.
    state->ports.push_back(at->tcp() ? to_tcp(listener.acceptor->local_endpoint(error)).port() : 0);
    listener.accept_retry = std::make_unique<boost::asio::steady_timer>(first->reactor_executor());
  }
  return std::unique_ptr<NativeServer>(new NativeServer(std::move(state)));
}

void NativeServer::serve(std::unordered_map<std::string, NativeMethod> methods) {
  state_->methods = std::move(methods);
  state_->served = true;
  for (auto& worker : state_->core->workers) worker->use_reactor();
  for (std::size_t i = 0; i < state_->listeners.size(); ++i) state_->accept(i);
}

NativeServer::NativeServer(std::shared_ptr<State> state) : state_(std::move(state)) {}

NativeServer::~NativeServer() {
  // Bound but never served (build() failed after binding): nothing waits on the listeners, and
  // their socket files must not outlive the server.
  if (!state_->served) state_->close_listeners();
}

const std::vector<int>& NativeServer::ports() const { return state_->ports; }

void NativeServer::shutdown(std::chrono::milliseconds grace) {
  State& s = *state_;
  if (s.stopping.exchange(true)) return;
  // Runs `fn` on every worker and waits until each has.
  auto on_every_worker = [&s](auto fn) {
    std::mutex mu;
    std::condition_variable cv;
    std::size_t pending = s.core->workers.size();
    for (auto& w : s.core->workers) {
      boost::asio::post(w->reactor_executor(), [&, worker = w.get()] {
        fn(worker);
        std::lock_guard lock(mu);
        if (--pending == 0) cv.notify_all();
      });
    }
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
  };
  on_every_worker([&s](Worker* w) {
    if (w == s.worker(0)) {
      s.close_listeners();
      for (auto& listener : s.listeners) listener.accept_retry->cancel();
    }
    for (NativeConnection* c : s.connections[w->index()]) {
      c->socket().session().shutdown();
      c->socket().flush();
    }
  });
  s.live.wait([&s] { return s.live_calls == 0; }, grace);
  on_every_worker([&s](Worker* w) {
    // What the calls that ended sent still leaves; the calls still open are aborted (their
    // handlers cancelled), and each connection closes once its client has closed, or after
    // the linger timeout.
    std::vector<NativeConnection*> open(s.connections[w->index()].begin(),
                                        s.connections[w->index()].end());
    for (NativeConnection* c : open) c->socket().close_after_flush();
  });
  s.live.wait([&s] { return s.live_calls == 0 && s.live_connections == 0; });
  // The acceptors' handlers have run (they were cancelled on the first worker, before the
  // connections closed); the sockets can go on the worker that owns them.
  on_every_worker([&s](Worker* w) {
    if (w == s.worker(0)) s.listeners.clear();
  });
}

}  // namespace trellis::detail
