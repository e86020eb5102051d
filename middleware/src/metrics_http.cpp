// The /metrics HTTP endpoint, on Boost.Beast, on the runtime's I/O thread or a thread of its own
// (see metrics_server.hpp).
#include <pthread.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string_view>

#include "trellis/middleware/metrics_server.hpp"
#include "trellis/runtime.hpp"

namespace trellis {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct MetricsServer::State {
  // `runtime`: serve on its I/O thread; nullptr: on an io_context and a thread of the endpoint's
  // own.
  State(std::shared_ptr<const MetricsRegistry> r, Options o, Runtime* runtime)
      : registry(std::move(r)),
        options(o),
        own_ioc(runtime == nullptr ? std::make_unique<asio::io_context>(1) : nullptr),
        ioc(runtime == nullptr ? *own_ioc : runtime->io_context()) {}

  std::shared_ptr<const MetricsRegistry> registry;
  Options options;
  // The open connections' streams, for stop() to close. Touched on the endpoint's thread only.
  // Declared before the io_context: the sessions that io_context destroys when it dies still
  // update it.
  std::set<beast::tcp_stream*> streams;
  // The accept loop and the sessions still running, which stop() waits for; counted before they
  // are spawned.
  std::mutex mu;
  std::condition_variable ended;
  int coroutines = 0;
  std::unique_ptr<asio::io_context> own_ioc;
  asio::io_context& ioc;
  tcp::acceptor acceptor{ioc};

  void coroutine_started() {
    std::lock_guard lock(mu);
    ++coroutines;
  }
  void coroutine_ended() {
    std::lock_guard lock(mu);
    if (--coroutines == 0) ended.notify_all();
  }
};

namespace {

constexpr std::size_t kMaxRequestBody = 64 * 1024;

using Response = http::response<http::string_body>;

Response respond(const http::request<http::string_body>& req, const MetricsRegistry& registry) {
  Response res;
  res.version(req.version());
  res.keep_alive(req.keep_alive());
  res.set(http::field::server, "trellis");
  auto raw = req.target();
  std::string_view target(raw.data(), raw.size());
  target = target.substr(0, target.find('?'));
  if (target != "/metrics") {
    res.result(http::status::not_found);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = "not found: the metrics are at /metrics\n";
  } else if (req.method() != http::verb::get) {
    res.result(http::status::method_not_allowed);
    res.set(http::field::allow, "GET");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = "method not allowed: use GET\n";
  } else {
    res.result(http::status::ok);
    res.set(http::field::content_type, MetricsRegistry::kContentType);
    res.body() = registry.scrape();
  }
  // A response to HEAD has no body (its framing would break a kept-alive connection).
  if (req.method() == http::verb::head) res.body().clear();
  res.prepare_payload();
  return res;
}

Response bad_request() {
  Response res(http::status::bad_request, 11);
  res.set(http::field::server, "trellis");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(false);
  res.body() = "bad request\n";
  res.prepare_payload();
  return res;
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

// Counts a coroutine of the endpoint as running until it ends, or its frame is destroyed after
// it started. (A frame an io_context destroys before it ever ran is never counted down; stop()
// does not wait on a context that can do that: a stopped one.)
class Running {
 public:
  explicit Running(MetricsServer::State& state) : state_(state) {}
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;
  ~Running() { state_.coroutine_ended(); }

 private:
  MetricsServer::State& state_;
};

// One connection: requests answered in turn until the client closes, asks to close, stalls past
// the timeout, sends something that is not HTTP, or the endpoint stops.
asio::awaitable<void> session(MetricsServer::State& state, tcp::socket socket) {
  Running running(state);
  beast::tcp_stream stream(std::move(socket));
  struct Open {
    MetricsServer::State& state;
    beast::tcp_stream* stream;
    ~Open() { state.streams.erase(stream); }
  } open{state, &stream};
  state.streams.insert(&stream);
  const MetricsServer::Options& options = state.options;
  const MetricsRegistry& registry = *state.registry;
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kMaxRequestBody);
    stream.expires_after(options.io_timeout);
    auto [read_ec, read_n] =
        co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    Response res;
    if (!read_ec) {
      res = respond(parser.get(), registry);
    } else if (is_http_error(read_ec) && read_ec != http::error::end_of_stream &&
               read_ec != http::error::partial_message) {
      res = bad_request();
    } else {
      break;  // closed, reset or timed out: nobody to answer
    }
    stream.expires_after(options.io_timeout);
    auto [write_ec, write_n] =
        co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (write_ec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> accept_loop(MetricsServer::State& state) {
  Running running(state);
  for (;;) {
    auto [ec, socket] = co_await state.acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !state.acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors or memory: wait a little for some to be freed instead of spinning.
      asio::steady_timer pause(state.ioc, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    if (state.streams.size() >= state.options.max_connections) {
      socket.close(ec);
      continue;
    }
    state.coroutine_started();
    asio::co_spawn(state.ioc, session(state, std::move(socket)), asio::detached);
  }
}

// Splits "host:port" / "[v6]:port"; false if malformed.
bool split_address(const std::string& address, std::string* host, std::string* port) {
  std::size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (!host->empty() && host->front() == '[') {
    if (host->size() < 2 || host->back() != ']') return false;
    *host = host->substr(1, host->size() - 2);
  } else if (host->find(':') != std::string::npos) {
    return false;  // an IPv6 address must be bracketed
  }
  unsigned value = 0;
  auto [end, err] = std::from_chars(port->data(), port->data() + port->size(), value);
  if (err != std::errc() || end != port->data() + port->size() || value > 65535) return false;
  if (host->empty()) *host = "0.0.0.0";
  return true;
}

}  // namespace

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(
    std::shared_ptr<const MetricsRegistry> registry, const std::string& address) {
  return start(std::move(registry), address, Options());
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(
    std::shared_ptr<const MetricsRegistry> registry, const std::string& address, Options options) {
  return launch(nullptr, std::move(registry), address, options);
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(
    Runtime& runtime, std::shared_ptr<const MetricsRegistry> registry, const std::string& address) {
  return launch(&runtime, std::move(registry), address, Options());
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(
    Runtime& runtime, std::shared_ptr<const MetricsRegistry> registry, const std::string& address,
    Options options) {
  return launch(&runtime, std::move(registry), address, options);
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::launch(
    Runtime* runtime, std::shared_ptr<const MetricsRegistry> registry, const std::string& address,
    Options options) {
  if (!registry) return Status::invalid_argument("MetricsServer: null registry");
  std::string host, port;
  if (!split_address(address, &host, &port)) {
    return Status::invalid_argument("MetricsServer: malformed address \"" + address +
                                    "\" (want HOST:PORT or [IPV6]:PORT)");
  }
  std::unique_ptr<State> state;
  try {
    state = std::make_unique<State>(std::move(registry), options, runtime);
  } catch (const std::runtime_error& e) {  // Runtime::io_context(): shutting down
    return Status::failed_precondition(std::string("MetricsServer: ") + e.what());
  }
  beast::error_code ec;
  tcp::resolver resolver(state->ioc);
  auto results =
      resolver.resolve(host, port, tcp::resolver::numeric_service | tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return Status::unavailable("MetricsServer: cannot resolve \"" + host +
                               "\": " + (ec ? ec.message() : "no address"));
  }
  tcp::endpoint endpoint = results.begin()->endpoint();
  auto fail = [&](std::string_view what) {
    return Status::unavailable("MetricsServer: " + std::string(what) + " " + address + ": " +
                               ec.message());
  };
  if (state->acceptor.open(endpoint.protocol(), ec); ec) return fail("cannot open a socket for");
  // Lets a restarted process bind its port again while old connections linger in TIME_WAIT; a
  // port another socket listens on still fails to bind.
  if (state->acceptor.set_option(tcp::acceptor::reuse_address(true), ec); ec) {
    return fail("cannot set SO_REUSEADDR for");
  }
  if (state->acceptor.bind(endpoint, ec); ec) return fail("cannot bind");
  if (state->acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return fail("cannot listen on");
  }
  tcp::endpoint bound = state->acceptor.local_endpoint(ec);
  if (ec) return fail("cannot read the bound address of");

  state->coroutine_started();
  asio::co_spawn(state->ioc, accept_loop(*state), asio::detached);
  std::unique_ptr<MetricsServer> server(new MetricsServer(std::move(state)));
  server->port_ = bound.port();
  server->address_ = bound.address().is_v6()
                         ? "[" + bound.address().to_string() + "]:" + std::to_string(bound.port())
                         : bound.address().to_string() + ":" + std::to_string(bound.port());
  if (runtime != nullptr) return server;
  server->thread_ = std::thread([ioc = &server->state_->ioc] {
    pthread_setname_np(pthread_self(), "trellis-metrics");
    // Nothing in the handlers throws by design (errors are codes); if something does anyway
    // (std::bad_alloc), the endpoint keeps serving the other connections.
    for (;;) {
      try {
        ioc->run();
        return;
      } catch (...) {
      }
    }
  });
  return server;
}

MetricsServer::MetricsServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::stop() {
  std::lock_guard lock(stop_mu_);
  if (!state_) return;
  State* state = state_.get();
  if (state->ioc.get_executor().running_in_this_thread()) {
    std::fputs("trellis E trellis::MetricsServer stopped on the I/O thread it waits for\n", stderr);
    std::abort();
  }
  if (state->ioc.stopped()) {
    // Only a runtime's context stops under the endpoint: the runtime shut down first, against
    // the contract. What is left of the endpoint waits in that context and refers to the state:
    // keep the state rather than free it under them.
    std::fputs("trellis E trellis::MetricsServer stopped after its runtime: stop it first\n",
               stderr);
    static_cast<void>(state_.release());
    return;
  }
  // Close the acceptor and every connection on the endpoint's thread (a runtime's goes on
  // serving others), and wait until the accept loop and the sessions have seen it and ended.
  // The close counts as running too, so that stop() cannot return before it has run.
  state->coroutine_started();
  asio::post(state->ioc, [state] {
    beast::error_code ignored;
    state->acceptor.close(ignored);
    for (beast::tcp_stream* stream : state->streams) stream->socket().close(ignored);
    state->coroutine_ended();
  });
  {
    std::unique_lock wait(state->mu);
    state->ended.wait(wait, [state] { return state->coroutines == 0; });
  }
  // The endpoint's own io_context, if it has one, is out of work: its thread has left run().
  if (thread_.joinable()) thread_.join();
  state_.reset();
}

}  // namespace trellis
