// The metrics layer, the registry's Prometheus exposition (prometheus-cpp families and text) and
// the /metrics HTTP endpoint, over real loopback calls and a real loopback HTTP connection; and
// the registry as a prometheus::Collectable beside a program's own prometheus-cpp metrics.
#include "trellis/middleware/metrics.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "fixture.hpp"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "trellis/client_stream.hpp"
#include "trellis/middleware/metrics_server.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

// The value of the sample whose name and labels are exactly `series` ("name{a=\"b\"}"), or
// nullopt if the exposition has no such line.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

// `name{grpc_type=...,grpc_service=...,grpc_method=...` + extra labels + `}`.
std::string series(const std::string& name, const std::string& type, const std::string& service,
                   const std::string& method, const std::string& extra = "") {
  return name + "{grpc_type=\"" + type + "\",grpc_service=\"" + service + "\",grpc_method=\"" +
         method + "\"" + extra + "}";
}

std::string echo_series(const std::string& name, const std::string& extra = "") {
  return series(name, "unary", "trellis.testing.Echo", "Echo", extra);
}

std::string code(const std::string& name) { return ",grpc_code=\"" + name + "\""; }

EchoRequest failing_with(StatusCode c) {
  EchoRequest req;
  req.set_status_code(static_cast<int>(c));
  req.set_status_message("failing on purpose");
  return req;
}

// What a raw HTTP exchange gave.
struct HttpReply {
  bool connected = false;
  bool closed_by_server = false;  // the read ended with EOF (not a timeout or an error)
  std::string raw;

  int status() const {
    if (raw.compare(0, 9, "HTTP/1.1 ") != 0 || raw.size() < 12) return -1;
    return std::stoi(raw.substr(9, 3));
  }
  // The value of header `name` (exact case as sent by the server), or "".
  std::string header(const std::string& name) const {
    std::string key = "\r\n" + name + ": ";
    std::size_t at = raw.find(key);
    if (at == std::string::npos || at > raw.find("\r\n\r\n")) return "";
    std::size_t start = at + key.size();
    return raw.substr(start, raw.find("\r\n", start) - start);
  }
  std::string body() const {
    std::size_t at = raw.find("\r\n\r\n");
    return at == std::string::npos ? "" : raw.substr(at + 4);
  }
};

// A tiny blocking HTTP client on a plain socket: connects to 127.0.0.1:`port`, sends `request`
// as is, and reads until the server closes the connection. Every wait is bounded: the socket's
// send and receive timeouts are 20 seconds.
HttpReply http_exchange(int port, const std::string& request) {
  HttpReply reply;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return reply;
  timeval tv{};
  tv.tv_sec = 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return reply;
  }
  reply.connected = true;
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) reply.closed_by_server = true;
    if (n <= 0) break;
    reply.raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return reply;
}

HttpReply http_get(int port, const std::string& path) {
  return http_exchange(port,
                       "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
}

// A name for this test's temporary files.
std::string temp_stem() {
  return "trellis-metrics-" + std::to_string(::getpid()) + "-" +
         ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

// Runs `command` with sh, bounded by `timeout`; its exit status and output (stdout and stderr).
std::pair<int, std::string> run_shell(const std::string& command) {
  auto output = std::filesystem::temp_directory_path() / (temp_stem() + ".out");
  int rc = std::system(("timeout 60 " + command + " > '" + output.string() + "' 2>&1").c_str());
  std::ifstream o(output);
  std::string said((std::istreambuf_iterator<char>(o)), std::istreambuf_iterator<char>());
  std::filesystem::remove(output);
  return {rc, said};
}

bool promtool_installed() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

// Runs `promtool check metrics` on `exposition`; fails the test (never skips) when promtool is
// missing. Returns promtool's exit status and output.
::testing::AssertionResult promtool_accepts(const std::string& exposition) {
  if (!promtool_installed()) {
    return ::testing::AssertionFailure()
           << "promtool is not installed: install the Debian package `prometheus` "
              "(scripts/install-deps.sh does)";
  }
  auto input = std::filesystem::temp_directory_path() / (temp_stem() + ".prom");
  {
    std::ofstream f(input, std::ios::binary);
    f << exposition;
  }
  // promtool checks what it reads from stdin.
  auto [rc, said] = run_shell("promtool check metrics < '" + input.string() + "'");
  std::filesystem::remove(input);
  if (rc != 0) {
    return ::testing::AssertionFailure() << "promtool check metrics failed (status " << rc << "):\n"
                                         << said << "\non:\n"
                                         << exposition;
  }
  return ::testing::AssertionSuccess();
}

// Runs scripts/runtime_report.py with `args`; its exit status and output.
std::pair<int, std::string> runtime_report(const std::string& args) {
  return run_shell("/usr/bin/python3 '" TRELLIS_RUNTIME_REPORT "' " + args);
}

using MetricsTest = MiddlewareTest;

TEST_F(MetricsTest, ServerCountsCallsByCode) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  EchoClient client(channel_);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(run(client.Echo(with_message("ok"), CallOptions().set_timeout(30s))).ok());
  }
  auto r = run(client.Echo(failing_with(StatusCode::kNotFound), CallOptions().set_timeout(30s)));
  ASSERT_EQ(r.status().code(), StatusCode::kNotFound);

  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_server_started_total")), 3) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handled_total", code("OK"))), 2) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handled_total", code("NOT_FOUND"))), 1) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handled_total", code("INTERNAL"))), std::nullopt);
  EXPECT_EQ(sample(text, echo_series("grpc_server_in_flight")), 0) << text;
  // The other method was never called; the client side was not layered.
  EXPECT_EQ(text.find("IdempotentEcho"), std::string::npos) << text;
  EXPECT_EQ(text.find("grpc_client_"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE grpc_server_handled_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# HELP grpc_server_handled_total "), std::string::npos);
}

TEST_F(MetricsTest, ClientCountsCallsByCode) {
  start();
  auto metrics = std::make_shared<MetricsRegistry>();
  EchoClient client(channel_.with_layer(MetricsLayer(metrics)));
  ASSERT_TRUE(run(client.Echo(with_message("ok"), CallOptions().set_timeout(30s))).ok());
  auto r =
      run(client.Echo(failing_with(StatusCode::kAlreadyExists), CallOptions().set_timeout(30s)));
  ASSERT_EQ(r.status().code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(run(client.IdempotentEcho(with_message("ok"), CallOptions().set_timeout(30s))).ok());

  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_client_started_total")), 2) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_client_handled_total", code("OK"))), 1) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_client_handled_total", code("ALREADY_EXISTS"))), 1)
      << text;
  EXPECT_EQ(sample(text, echo_series("grpc_client_in_flight")), 0) << text;
  EXPECT_EQ(sample(text, series("grpc_client_handled_total", "unary", "trellis.testing.Echo",
                                "IdempotentEcho", code("OK"))),
            1)
      << text;
  EXPECT_EQ(text.find("grpc_server_"), std::string::npos) << text;
}

TEST_F(MetricsTest, ClientCountsUnreachableServerAsUnavailable) {
  start();
  // A port bound but not listening: connecting to it is refused.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string target = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  auto metrics = std::make_shared<MetricsRegistry>();
  EchoClient client(Channel::insecure(target).with_layer(MetricsLayer(metrics)));
  auto r = run(client.Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_client_handled_total", code("UNAVAILABLE"))), 1) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_client_in_flight")), 0) << text;
  ::close(fd);
}

TEST_F(MetricsTest, HandlerExceptionIsCountedAsInternal) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  EchoRequest req;
  req.set_throw_exception(true);
  auto r = run(EchoClient(channel_).Echo(req, CallOptions().set_timeout(30s)));
  ASSERT_EQ(r.status().code(), StatusCode::kInternal);  // the exception went on to the framework
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_server_handled_total", code("INTERNAL"))), 1) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_in_flight")), 0) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_count")), 1) << text;
}

TEST_F(MetricsTest, ClientExceptionIsCountedAsUnknownAndRethrown) {
  start();
  auto metrics = std::make_shared<MetricsRegistry>();
  Channel throwing = channel_
                         .with_layer(layer_fn([](Call&, const auto&) -> Task<Status> {
                           throw std::runtime_error("client layer exploded on purpose");
                           co_return Status();
                         }))
                         .with_layer(MetricsLayer(metrics));
  EXPECT_THROW(run(EchoClient(throwing).Echo(with_message("x"), CallOptions().set_timeout(30s))),
               std::runtime_error);
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_client_handled_total", code("UNKNOWN"))), 1) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_client_in_flight")), 0) << text;
}

TEST_F(MetricsTest, InFlightGaugeCountsRunningCallsAndReturnsToZero) {
  auto metrics = std::make_shared<MetricsRegistry>();
  absl::Notification entered;      // the handler is running, under the metrics layer
  absl::Notification server_done;  // the server's metrics layer has recorded the end
  start([&](Server::Builder& b) {
    b.layer(layer_fn([&server_done](Call& call, const auto& next) -> Task<Status> {
       Status status = co_await next(call);
       server_done.Notify();
       co_return status;
     }))
        .layer(MetricsLayer(metrics))
        .layer(layer_fn([&entered](Call& call, const auto& next) -> Task<Status> {
          entered.Notify();
          co_return co_await next(call);
        }));
  });
  EchoClient client(channel_.with_layer(MetricsLayer(metrics)));
  EchoRequest slow = with_message("slow");
  slow.set_delay_ms(60'000);  // ended below by aborting the client's task, never by the time
  JoinHandle<Result<EchoResponse>> call =
      runtime_->spawn(client.Echo(slow, CallOptions().set_timeout(60s)));
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(kTestDeadline));

  std::string during = metrics->scrape();
  EXPECT_EQ(sample(during, echo_series("grpc_server_in_flight")), 1) << during;
  EXPECT_EQ(sample(during, echo_series("grpc_client_in_flight")), 1) << during;
  EXPECT_EQ(sample(during, echo_series("grpc_server_started_total")), 1) << during;
  EXPECT_EQ(sample(during, echo_series("grpc_server_handling_seconds_count")), 0) << during;

  call.abort();
  try {
    run(call.join());
  } catch (const std::exception&) {
    // Aborted: how the task ends is the runtime's business; the metrics are ours.
  }
  ASSERT_TRUE(server_done.WaitForNotificationWithTimeout(kTestDeadline));
  std::string after = metrics->scrape();
  EXPECT_EQ(sample(after, echo_series("grpc_server_in_flight")), 0) << after;
  EXPECT_EQ(sample(after, echo_series("grpc_client_in_flight")), 0) << after;
  EXPECT_EQ(sample(after, echo_series("grpc_server_handled_total", code("CANCELLED"))), 1) << after;
  EXPECT_EQ(sample(after, echo_series("grpc_client_handled_total", code("CANCELLED"))), 1) << after;
}

TEST_F(MetricsTest, HistogramCountsMatchCalls) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  EchoClient client(channel_);
  constexpr int kCalls = 5;
  for (int i = 0; i < kCalls; ++i) {
    auto req = i % 2 == 0 ? with_message("ok") : failing_with(StatusCode::kAborted);
    (void)run(client.Echo(req, CallOptions().set_timeout(30s)));
  }
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_count")), kCalls) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_bucket", ",le=\"+Inf\"")),
            kCalls)
      << text;
  std::optional<double> sum = sample(text, echo_series("grpc_server_handling_seconds_sum"));
  ASSERT_TRUE(sum.has_value()) << text;
  EXPECT_GT(*sum, 0);
  // Every default bucket is there, cumulative: never decreasing, ending at the count.
  double previous = 0;
  for (double bound : metrics->latency_buckets()) {
    char le[32];
    std::snprintf(le, sizeof le, "%g", bound);
    std::optional<double> v = sample(text, echo_series("grpc_server_handling_seconds_bucket",
                                                       std::string(",le=\"") + le + "\""));
    ASSERT_TRUE(v.has_value()) << "no bucket le=" << le << " in\n" << text;
    EXPECT_GE(*v, previous) << le;
    EXPECT_LE(*v, kCalls) << le;
    previous = *v;
  }
  EXPECT_NE(text.find("# TYPE grpc_server_handling_seconds histogram\n"), std::string::npos);
}

TEST_F(MetricsTest, LatencyLandsInTheRightBucket) {
  MetricsOptions options;
  options.latency_buckets = {0.04, 30};
  auto metrics = std::make_shared<MetricsRegistry>(options);
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  EchoRequest slow = with_message("slow");
  slow.set_delay_ms(50);  // the handler waits at least this long: more than the first bound
  ASSERT_TRUE(run(EchoClient(channel_).Echo(slow, CallOptions().set_timeout(30s))).ok());
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_bucket", ",le=\"0.04\"")), 0)
      << text;
  // The call succeeded within its 30 s timeout, so it took at most 30 s.
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_bucket", ",le=\"30\"")), 1)
      << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_bucket", ",le=\"+Inf\"")), 1)
      << text;
  EXPECT_GE(*sample(text, echo_series("grpc_server_handling_seconds_sum")), 0.05) << text;
}

TEST_F(MetricsTest, StreamingServerCallsAreCountedWithTheirType) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  {  // the streams are dropped before shut_down() destroys the runtime they run on
    StreamerClient client(channel_);
    auto split = client.Split(with_message("a b c"), CallOptions().set_timeout(30s));
    auto collect = client.Collect(CallOptions().set_timeout(30s));
    auto chat = client.Chat(CallOptions().set_timeout(30s));
    auto failing =
        client.Split(failing_with(StatusCode::kOutOfRange), CallOptions().set_timeout(30s));
    run([&]() -> Task<void> {
      int n = 0;
      while (co_await split.read()) ++n;
      EXPECT_EQ(n, 3);
      EXPECT_TRUE((co_await split.finish()).ok());
      EXPECT_TRUE(co_await collect.write(with_message("x")));
      EXPECT_TRUE((co_await collect.finish()).ok());
      EXPECT_TRUE(co_await chat.write(with_message("hello")));
      EXPECT_TRUE(co_await chat.read());
      EXPECT_TRUE((co_await chat.finish()).ok());
      while (co_await failing.read()) {
      }
      EXPECT_EQ((co_await failing.finish()).code(), StatusCode::kOutOfRange);
    }());
  }
  shut_down();  // every handler's stack has returned once the server has shut down
  std::string text = metrics->scrape();
  const std::string svc = "trellis.testing.Streamer";
  EXPECT_EQ(
      sample(text, series("grpc_server_handled_total", "server_stream", svc, "Split", code("OK"))),
      1)
      << text;
  EXPECT_EQ(sample(text, series("grpc_server_handled_total", "server_stream", svc, "Split",
                                code("OUT_OF_RANGE"))),
            1)
      << text;
  EXPECT_EQ(sample(text, series("grpc_server_handled_total", "client_stream", svc, "Collect",
                                code("OK"))),
            1)
      << text;
  EXPECT_EQ(
      sample(text, series("grpc_server_handled_total", "bidi_stream", svc, "Chat", code("OK"))), 1)
      << text;
  EXPECT_EQ(sample(text, series("grpc_server_in_flight", "server_stream", svc, "Split")), 0);
  EXPECT_EQ(
      sample(text, series("grpc_server_handling_seconds_count", "server_stream", svc, "Split")), 2);
}

TEST_F(MetricsTest, StreamingClientCallsAreCountedWithTheirType) {
  start();
  auto metrics = std::make_shared<MetricsRegistry>();
  StreamerClient client(channel_.with_layer(MetricsLayer(metrics)));
  auto split = client.Split(with_message("a b"), CallOptions().set_timeout(30s));
  auto collect = client.Collect(CallOptions().set_timeout(30s));
  auto chat = client.Chat(CallOptions().set_timeout(30s));
  run([&]() -> Task<void> {
    while (co_await split.read()) {
    }
    EXPECT_TRUE((co_await split.finish()).ok());
    EXPECT_TRUE(co_await collect.write(with_message("x")));
    EXPECT_TRUE((co_await collect.finish()).ok());
    EXPECT_TRUE(co_await chat.write(failing_with(StatusCode::kDataLoss)));
    EXPECT_EQ((co_await chat.finish()).code(), StatusCode::kDataLoss);
  }());
  std::string text = metrics->scrape();
  const std::string svc = "trellis.testing.Streamer";
  EXPECT_EQ(
      sample(text, series("grpc_client_handled_total", "server_stream", svc, "Split", code("OK"))),
      1)
      << text;
  EXPECT_EQ(sample(text, series("grpc_client_handled_total", "client_stream", svc, "Collect",
                                code("OK"))),
            1)
      << text;
  EXPECT_EQ(sample(text, series("grpc_client_handled_total", "bidi_stream", svc, "Chat",
                                code("DATA_LOSS"))),
            1)
      << text;
  EXPECT_EQ(sample(text, series("grpc_client_in_flight", "bidi_stream", svc, "Chat")), 0);
}

TEST_F(MetricsTest, RuntimeMetricsAreExported) {
  start();
  auto metrics = std::make_shared<MetricsRegistry>();
  std::string before = metrics->scrape();
  EXPECT_EQ(before.find("trellis_runtime_"), std::string::npos) << before;

  metrics->set_runtime(runtime_.get());
  auto task = runtime_->spawn([]() -> Task<int> { co_return 7; }());
  EXPECT_EQ(run(task.join()), 7);
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, "trellis_runtime_workers"), 2) << text;
  EXPECT_GE(sample(text, "trellis_runtime_tasks_spawned_total").value_or(0), 1) << text;
  EXPECT_GE(sample(text, "trellis_runtime_tasks_completed_total").value_or(0), 1) << text;
  for (const char* name :
       {"trellis_runtime_tasks_failed_total", "trellis_runtime_tasks_unobserved_total",
        "trellis_runtime_tasks_alive", "trellis_runtime_blocking_threads",
        "trellis_runtime_blocking_queue_depth", "trellis_runtime_server_calls",
        "trellis_runtime_client_calls"}) {
    EXPECT_TRUE(sample(text, name).has_value()) << name << " missing in\n" << text;
  }
  EXPECT_EQ(sample(text, "trellis_runtime_blocking_threads_max"), 64) << text;
  EXPECT_GT(sample(text, "trellis_runtime_open_fds").value_or(0), 0) << text;
  EXPECT_GE(sample(text, "trellis_runtime_fd_limit").value_or(0),
            sample(text, "trellis_runtime_open_fds").value_or(1))
      << text;
  for (const char* worker : {"0", "1"}) {
    std::string label = std::string("{worker=\"") + worker + "\"}";
    for (const char* name :
         {"trellis_runtime_worker_busy_seconds_total", "trellis_runtime_worker_events_total",
          "trellis_runtime_worker_queue_depth", "trellis_runtime_worker_local_queue_depth",
          "trellis_runtime_worker_inbox_depth", "trellis_runtime_worker_timers_pending",
          "trellis_runtime_worker_poll_max_seconds", "trellis_runtime_worker_poll_seconds_sum"}) {
      EXPECT_GE(sample(text, name + label).value_or(-1), 0) << name << label << " in\n" << text;
    }
    // Every poll is in the histogram: its count is the polls counter, read in the same snapshot.
    EXPECT_EQ(sample(text, "trellis_runtime_worker_poll_seconds_count" + label),
              sample(text, "trellis_runtime_worker_polls_total" + label))
        << text;
    EXPECT_TRUE(sample(text, "trellis_runtime_worker_poll_seconds_bucket{worker=\"" +
                                 std::string(worker) + "\",le=\"0.001\"}")
                    .has_value())
        << text;
  }
  // The task above ran on one of the two workers: at least one poll there.
  EXPECT_GE(sample(text, "trellis_runtime_worker_polls_total{worker=\"0\"}").value_or(0) +
                sample(text, "trellis_runtime_worker_polls_total{worker=\"1\"}").value_or(0),
            1)
      << text;
  EXPECT_NE(text.find("# TYPE trellis_runtime_worker_busy_seconds_total counter\n"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE trellis_runtime_worker_poll_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE trellis_runtime_tasks_alive gauge\n"), std::string::npos);
  EXPECT_NE(text.find("# HELP trellis_runtime_worker_inbox_depth "), std::string::npos);
  EXPECT_TRUE(promtool_accepts(text));

  metrics->set_runtime(nullptr);
  std::string after = metrics->scrape();
  EXPECT_EQ(after.find("trellis_runtime_"), std::string::npos) << after;
}

// scripts/runtime_report.py reads a live endpoint: a row per worker, the runtime's figures; and
// says clearly what is wrong with an endpoint it cannot use.
TEST_F(MetricsTest, RuntimeReportReadsTheEndpoint) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  auto endpoint = MetricsServer::start(*runtime_, metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const std::string url = "http://127.0.0.1:" + std::to_string((*endpoint)->port()) + "/metrics";

  auto [no_runtime_rc, no_runtime] = runtime_report(url + " --interval 0.1");
  EXPECT_NE(no_runtime_rc, 0);
  EXPECT_NE(no_runtime.find("exports no trellis_runtime_worker_"), std::string::npos) << no_runtime;

  metrics->set_runtime(runtime_.get());
  auto [rc, report] = runtime_report(url + " --interval 0.2");
  ASSERT_EQ(rc, 0) << report;
  EXPECT_NE(report.find("| worker | busy | polls/s | mean poll |"), std::string::npos) << report;
  EXPECT_NE(report.find("\n| 0 | "), std::string::npos) << report;
  EXPECT_NE(report.find("\n| 1 | "), std::string::npos) << report;
  EXPECT_NE(report.find("| server calls in progress | 0 |"), std::string::npos) << report;
  EXPECT_NE(report.find("| blocking pool bound | 64 |"), std::string::npos) << report;
  metrics->set_runtime(nullptr);
  (*endpoint)->stop();

  auto [closed_rc, closed] = runtime_report(url + " --interval 0.1");
  EXPECT_NE(closed_rc, 0);
  EXPECT_NE(closed.find("cannot scrape " + url), std::string::npos) << closed;
}

// The layer used directly around a service, with a method whose names need escaping: the
// exposition escapes label values, and promtool still reads it.
TEST_F(MetricsTest, LabelValuesAreEscaped) {
  auto metrics = std::make_shared<MetricsRegistry>();
  struct Answer {
    Task<Status> operator()(Call&) const { co_return Status::not_found("none"); }
  };
  start();
  auto service = MetricsLayer(metrics).wrap(Answer{});
  static constexpr std::string_view kPath = "/odd\"svc\\x\ny/Me\"th";
  MethodInfo method{kPath, RpcKind::kUnary};
  CallOptions options;
  Call call(method, options, nullptr, nullptr);
  Status status = run(service(call));
  EXPECT_EQ(status.code(), StatusCode::kNotFound);
  std::string text = metrics->scrape();
  EXPECT_NE(text.find("grpc_client_handled_total{grpc_type=\"unary\",grpc_service=\"odd\\\"svc\\\\"
                      "x\\ny\",grpc_method=\"Me\\\"th\",grpc_code=\"NOT_FOUND\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_TRUE(promtool_accepts(text));
}

// Many methods seen for the first time by several workers at once: each gets exactly one entry
// and no call is lost.
TEST_F(MetricsTest, ConcurrentFirstCallsOfManyMethodsAreAllCounted) {
  start();
  auto metrics = std::make_shared<MetricsRegistry>();
  struct Answer {
    Task<Status> operator()(Call&) const { co_return Status(); }
  };
  auto service = MetricsLayer(metrics).wrap(Answer{});
  constexpr int kMethods = 64;
  constexpr int kTasks = 8;
  constexpr int kRounds = 50;
  std::vector<std::string> paths;
  for (int m = 0; m < kMethods; ++m) paths.push_back("/load.Svc/M" + std::to_string(m));
  std::vector<JoinHandle<void>> tasks;
  for (int t = 0; t < kTasks; ++t) {
    tasks.push_back(runtime_->spawn(
        [](const decltype(service)& svc, const std::vector<std::string>& ps) -> Task<void> {
          for (int r = 0; r < kRounds; ++r) {
            for (const std::string& p : ps) {
              MethodInfo method{p, RpcKind::kUnary};
              CallOptions options;
              Call call(method, options, nullptr, nullptr);
              co_await svc(call);
            }
          }
        }(service, paths)));
  }
  for (auto& t : tasks) run(t.join());
  std::string text = metrics->scrape();
  for (int m = 0; m < kMethods; ++m) {
    // Not "M" + std::to_string(m): GCC 12 at -O3 warns falsely (-Wrestrict) on that operator+.
    std::string method = "M";
    method += std::to_string(m);
    EXPECT_EQ(sample(text, series("grpc_client_started_total", "unary", "load.Svc", method)),
              kTasks * kRounds)
        << method;
    EXPECT_EQ(
        sample(text, series("grpc_client_handled_total", "unary", "load.Svc", method, code("OK"))),
        kTasks * kRounds)
        << method;
    EXPECT_EQ(sample(text, series("grpc_client_in_flight", "unary", "load.Svc", method)), 0);
  }
  // One entry per method: exactly kMethods started series.
  std::size_t started_lines = 0;
  for (std::size_t at = text.find("\ngrpc_client_started_total{"); at != std::string::npos;
       at = text.find("\ngrpc_client_started_total{", at + 1)) {
    ++started_lines;
  }
  EXPECT_EQ(started_lines, static_cast<std::size_t>(kMethods));
}

TEST_F(MetricsTest, InvalidConfigurationIsRejected) {
  auto with_buckets = [](std::vector<double> buckets) {
    MetricsOptions o;
    o.latency_buckets = std::move(buckets);
    return o;
  };
  EXPECT_THROW(MetricsRegistry(with_buckets({0.1, 0.1})), std::invalid_argument);
  EXPECT_THROW(MetricsRegistry(with_buckets({0.5, 0.1})), std::invalid_argument);
  EXPECT_THROW(MetricsRegistry(with_buckets({-1})), std::invalid_argument);
  EXPECT_THROW(MetricsRegistry(with_buckets({0})), std::invalid_argument);
  EXPECT_THROW(MetricsRegistry(with_buckets({std::numeric_limits<double>::infinity()})),
               std::invalid_argument);
  EXPECT_THROW(MetricsRegistry(with_buckets({std::nan("")})), std::invalid_argument);
  MetricsOptions none;
  none.max_methods = 0;
  EXPECT_THROW(MetricsRegistry{none}, std::invalid_argument);
  EXPECT_THROW(MetricsLayer(nullptr), std::invalid_argument);
  // No buckets at all is valid: the histogram has only +Inf.
  EXPECT_NO_THROW(MetricsRegistry(with_buckets({})));
}

TEST_F(MetricsTest, MethodsBeyondTheTableAreCountedAsUntracked) {
  MetricsOptions options;
  options.max_methods = 1;
  auto metrics = std::make_shared<MetricsRegistry>(options);
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  EchoClient client(channel_);
  ASSERT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  // The table is full: this method's calls still work, and are counted as untracked.
  ASSERT_TRUE(run(client.IdempotentEcho(with_message("x"), CallOptions().set_timeout(30s))).ok());
  ASSERT_TRUE(run(client.IdempotentEcho(with_message("x"), CallOptions().set_timeout(30s))).ok());
  ASSERT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  std::string text = metrics->scrape();
  EXPECT_EQ(sample(text, echo_series("grpc_server_handled_total", code("OK"))), 2) << text;
  EXPECT_EQ(text.find("IdempotentEcho"), std::string::npos) << text;
  EXPECT_EQ(sample(text, "trellis_metrics_untracked_calls_total"), 2) << text;
}

TEST_F(MetricsTest, EndpointServesMetricsOverHttp) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  int port = (*endpoint)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*endpoint)->address(), "127.0.0.1:" + std::to_string(port));

  HttpReply reply = http_get(port, "/metrics");
  ASSERT_TRUE(reply.connected);
  EXPECT_TRUE(reply.closed_by_server);  // we asked for Connection: close
  EXPECT_EQ(reply.status(), 200) << reply.raw;
  EXPECT_EQ(reply.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(reply.header("Content-Length"), std::to_string(reply.body().size()));
  EXPECT_EQ(sample(reply.body(), echo_series("grpc_server_handled_total", code("OK"))), 1)
      << reply.body();
  // A query string does not change the path.
  EXPECT_EQ(http_get(port, "/metrics?name[]=x").status(), 200);
}

TEST_F(MetricsTest, EndpointKeepsConnectionsAlive) {
  auto metrics = std::make_shared<MetricsRegistry>();
  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  // Two requests in one write on one connection; the second asks to close.
  HttpReply reply = http_exchange(
      (*endpoint)->port(),
      "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: "
      "close\r\n\r\n");
  EXPECT_TRUE(reply.closed_by_server);
  EXPECT_EQ(reply.status(), 200) << reply.raw;
  std::size_t second = reply.raw.find("HTTP/1.1 ", 1);
  ASSERT_NE(second, std::string::npos) << reply.raw;
  EXPECT_EQ(reply.raw.compare(second, 12, "HTTP/1.1 404"), 0) << reply.raw;
}

TEST_F(MetricsTest, EndpointAnswersOtherPathsAndMethodsWithErrors) {
  auto metrics = std::make_shared<MetricsRegistry>();
  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  int port = (*endpoint)->port();

  EXPECT_EQ(http_get(port, "/").status(), 404);
  EXPECT_EQ(http_get(port, "/metricsx").status(), 404);
  EXPECT_EQ(http_get(port, "/metrics/").status(), 404);

  HttpReply post = http_exchange(port,
                                 "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                 "Connection: close\r\n\r\nabc");
  EXPECT_EQ(post.status(), 405) << post.raw;
  EXPECT_EQ(post.header("Allow"), "GET");
  HttpReply head =
      http_exchange(port, "HEAD /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(head.status(), 405) << head.raw;

  HttpReply garbage = http_exchange(port, "this is not http\r\n\r\n");
  EXPECT_EQ(garbage.status(), 400) << garbage.raw;
  EXPECT_TRUE(garbage.closed_by_server);

  // The endpoint still serves after all that.
  EXPECT_EQ(http_get(port, "/metrics").status(), 200);
}

TEST_F(MetricsTest, EndpointRejectsBadAddressesAndBusyPorts) {
  auto metrics = std::make_shared<MetricsRegistry>();
  for (const char* bad : {"nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:12x",
                          "::1:80", "[::1:80"}) {
    auto endpoint = MetricsServer::start(metrics, bad);
    ASSERT_FALSE(endpoint.ok()) << bad;
    EXPECT_EQ(endpoint.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto null = MetricsServer::start(nullptr, "127.0.0.1:0");
  ASSERT_FALSE(null.ok());
  EXPECT_EQ(null.status().code(), StatusCode::kInvalidArgument);

  auto first = MetricsServer::start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  auto busy = MetricsServer::start(metrics, "127.0.0.1:" + std::to_string((*first)->port()));
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), StatusCode::kUnavailable) << busy.status();

  auto unresolvable = MetricsServer::start(metrics, "no-such-host.invalid:0");
  ASSERT_FALSE(unresolvable.ok());
  EXPECT_EQ(unresolvable.status().code(), StatusCode::kUnavailable) << unresolvable.status();
}

// Opens a connection to `endpoint`, has one request answered on it and leaves it open, then
// stops the endpoint: the connection must be closed, and nothing listen any more.
void expect_stop_closes_a_kept_alive_connection(MetricsServer& endpoint) {
  int port = endpoint.port();
  // An open, kept-alive connection: one request answered, the connection left open.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  timeval tv{};
  tv.tv_sec = 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string req = "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  while (got.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << "the endpoint closed or stalled before answering";
    got.append(buf, static_cast<std::size_t>(n));
  }
  std::size_t length_at = got.find("Content-Length: ");
  ASSERT_NE(length_at, std::string::npos) << got;
  std::size_t expected = got.find("\r\n\r\n") + 4 + std::stoul(got.substr(length_at + 16));
  while (got.size() < expected) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<std::size_t>(n));
  }

  endpoint.stop();
  // The server side of the connection is gone: EOF (or a reset), not a timeout.
  errno = 0;
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  EXPECT_LE(n, 0);
  EXPECT_NE(errno, EAGAIN) << "the connection stayed open after stop()";
  ::close(fd);
  // Nothing listens any more.
  EXPECT_FALSE(http_get(port, "/metrics").connected);
}

TEST_F(MetricsTest, EndpointStopClosesConnectionsAndIsIdempotent) {
  auto metrics = std::make_shared<MetricsRegistry>();
  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  expect_stop_closes_a_kept_alive_connection(**endpoint);
  (*endpoint)->stop();  // idempotent
}

// The names of the process's threads.
std::vector<std::string> thread_names() {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

bool has_thread(const std::string& name) {
  std::vector<std::string> names = thread_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

TEST_F(MetricsTest, EndpointServesOnTheRuntimesIoThread) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  metrics->set_runtime(runtime_.get());
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  auto endpoint = MetricsServer::start(*runtime_, metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  HttpReply reply = http_get((*endpoint)->port(), "/metrics");
  EXPECT_EQ(reply.status(), 200) << reply.raw;
  // The runtime's I/O thread served it (it has named itself by now: it answered); the endpoint
  // has no thread of its own.
  EXPECT_TRUE(has_thread("trellis-wrk-io"));
  EXPECT_FALSE(has_thread("trellis-metrics"));
  EXPECT_EQ(sample(reply.body(), echo_series("grpc_server_handled_total", code("OK"))), 1)
      << reply.body();
  EXPECT_EQ(sample(reply.body(), "trellis_runtime_workers"), 2) << reply.body();
  // Stopping it leaves the I/O thread serving the runtime's other I/O.
  expect_stop_closes_a_kept_alive_connection(**endpoint);
  auto again = MetricsServer::start(*runtime_, metrics, "127.0.0.1:0");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(http_get((*again)->port(), "/metrics").status(), 200);
  again->reset();
  endpoint->reset();
  // A runtime that is shutting down gives it no thread.
  server_->shutdown(kShutdownGrace);
  server_.reset();
  runtime_->shutdown(kShutdownGrace);
  auto late = MetricsServer::start(*runtime_, metrics, "127.0.0.1:0");
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kFailedPrecondition) << late.status();
}

TEST_F(MetricsTest, EndpointClosesIdleConnections) {
  auto metrics = std::make_shared<MetricsRegistry>();
  MetricsServer::Options options;
  options.io_timeout = 100ms;
  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0", options);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  // Says nothing: the endpoint gives up on it (the client's own wait is bounded at 20 s).
  HttpReply silent = http_exchange((*endpoint)->port(), "");
  ASSERT_TRUE(silent.connected);
  EXPECT_TRUE(silent.closed_by_server);
  EXPECT_TRUE(silent.raw.empty()) << silent.raw;
}

TEST_F(MetricsTest, EndpointRefusesConnectionsBeyondTheLimit) {
  auto metrics = std::make_shared<MetricsRegistry>();
  MetricsServer::Options options;
  options.max_connections = 1;
  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0", options);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  int port = (*endpoint)->port();
  // Hold one connection open, known to be accepted because it was answered.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  timeval tv{};
  tv.tv_sec = 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string req = "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  char buf[4096];
  ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);

  HttpReply refused = http_get(port, "/metrics");
  EXPECT_TRUE(refused.connected);  // the kernel accepts; the endpoint closes it at once
  EXPECT_TRUE(refused.raw.empty()) << refused.raw;
  ::close(fd);
}

TEST_F(MetricsTest, PromtoolAcceptsTheScrapedExposition) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  metrics->set_runtime(runtime_.get());
  EchoClient client(channel_.with_layer(MetricsLayer(metrics)));
  ASSERT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  (void)run(
      client.Echo(failing_with(StatusCode::kPermissionDenied), CallOptions().set_timeout(30s)));
  EchoRequest thrown;
  thrown.set_throw_exception(true);
  (void)run(client.IdempotentEcho(thrown, CallOptions().set_timeout(30s)));
  auto split = StreamerClient(channel_).Split(with_message("a b"), CallOptions().set_timeout(30s));
  Status split_status = run([&]() -> Task<Status> {
    while (co_await split.read()) {
    }
    co_return co_await split.finish();
  }());
  ASSERT_TRUE(split_status.ok()) << split_status;

  auto endpoint = MetricsServer::start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  HttpReply reply = http_get((*endpoint)->port(), "/metrics");
  ASSERT_EQ(reply.status(), 200) << reply.raw;
  std::string body = reply.body();
  // The scrape covers both sides, a histogram and the runtime: what promtool must accept.
  EXPECT_NE(body.find("grpc_server_handling_seconds_bucket"), std::string::npos);
  EXPECT_NE(body.find("grpc_client_handled_total"), std::string::npos);
  EXPECT_NE(body.find("grpc_type=\"server_stream\""), std::string::npos);
  EXPECT_NE(body.find("trellis_runtime_worker_busy_seconds_total"), std::string::npos);
  EXPECT_TRUE(promtool_accepts(body));
  metrics->set_runtime(nullptr);
}

TEST_F(MetricsTest, PromtoolRejectsABrokenExposition) {
  // The check above can fail: promtool does reject a malformed exposition.
  ASSERT_TRUE(promtool_installed())
      << "promtool is not installed: install the Debian package `prometheus`";
  EXPECT_FALSE(promtool_accepts("# TYPE x counter\nx{a=\"unterminated} 1\n"));
}

// ------------------------------------------------ the registry as a prometheus-cpp Collectable

// The families' names, in order.
std::vector<std::string> names_of(const std::vector<prometheus::MetricFamily>& families) {
  std::vector<std::string> names;
  for (const prometheus::MetricFamily& f : families) names.push_back(f.name);
  return names;
}

// The family called `name`; fails the test (and returns an empty family) if there is none.
prometheus::MetricFamily family_named(const std::vector<prometheus::MetricFamily>& families,
                                      const std::string& name) {
  for (const prometheus::MetricFamily& f : families) {
    if (f.name == name) return f;
  }
  ADD_FAILURE() << "no family " << name;
  return {};
}

// A metric's labels as `a=b,c=d`, in their order.
std::string labels_of(const prometheus::ClientMetric& metric) {
  std::string out;
  for (const prometheus::ClientMetric::Label& l : metric.label) {
    if (!out.empty()) out += ',';
    out += l.name + "=" + l.value;
  }
  return out;
}

TEST_F(MetricsTest, CollectGivesTheFamiliesOfRealCalls) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  EchoClient client(channel_);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(run(client.Echo(with_message("ok"), CallOptions().set_timeout(30s))).ok());
  }
  auto r = run(client.Echo(failing_with(StatusCode::kNotFound), CallOptions().set_timeout(30s)));
  ASSERT_EQ(r.status().code(), StatusCode::kNotFound);

  std::vector<prometheus::MetricFamily> families = metrics->Collect();
  // Only the server side was layered, and no runtime is exported.
  EXPECT_EQ(names_of(families),
            (std::vector<std::string>{"grpc_server_started_total", "grpc_server_handled_total",
                                      "grpc_server_handling_seconds", "grpc_server_in_flight",
                                      "trellis_metrics_untracked_calls_total"}));
  for (const prometheus::MetricFamily& f : families) EXPECT_FALSE(f.help.empty()) << f.name;
  const std::string echo = "grpc_type=unary,grpc_service=trellis.testing.Echo,grpc_method=Echo";

  prometheus::MetricFamily started = family_named(families, "grpc_server_started_total");
  EXPECT_EQ(started.type, prometheus::MetricType::Counter);
  ASSERT_EQ(started.metric.size(), 1u);
  EXPECT_EQ(labels_of(started.metric[0]), echo);
  EXPECT_EQ(started.metric[0].counter.value, 3);

  prometheus::MetricFamily handled = family_named(families, "grpc_server_handled_total");
  EXPECT_EQ(handled.type, prometheus::MetricType::Counter);
  ASSERT_EQ(handled.metric.size(), 2u);  // a series per code seen, in the codes' order
  EXPECT_EQ(labels_of(handled.metric[0]), echo + ",grpc_code=OK");
  EXPECT_EQ(handled.metric[0].counter.value, 2);
  EXPECT_EQ(labels_of(handled.metric[1]), echo + ",grpc_code=NOT_FOUND");
  EXPECT_EQ(handled.metric[1].counter.value, 1);

  prometheus::MetricFamily latency = family_named(families, "grpc_server_handling_seconds");
  EXPECT_EQ(latency.type, prometheus::MetricType::Histogram);
  ASSERT_EQ(latency.metric.size(), 1u);
  EXPECT_EQ(labels_of(latency.metric[0]), echo);
  const prometheus::ClientMetric::Histogram& histogram = latency.metric[0].histogram;
  EXPECT_EQ(histogram.sample_count, 3u);
  EXPECT_GT(histogram.sample_sum, 0);
  // The configured bounds (the serializer adds +Inf), cumulative counts.
  ASSERT_EQ(histogram.bucket.size(), metrics->latency_buckets().size());
  std::uint64_t previous = 0;
  for (std::size_t i = 0; i < histogram.bucket.size(); ++i) {
    EXPECT_EQ(histogram.bucket[i].upper_bound, metrics->latency_buckets()[i]);
    EXPECT_GE(histogram.bucket[i].cumulative_count, previous);
    EXPECT_LE(histogram.bucket[i].cumulative_count, 3u);
    previous = histogram.bucket[i].cumulative_count;
  }

  prometheus::MetricFamily in_flight = family_named(families, "grpc_server_in_flight");
  EXPECT_EQ(in_flight.type, prometheus::MetricType::Gauge);
  ASSERT_EQ(in_flight.metric.size(), 1u);
  EXPECT_EQ(labels_of(in_flight.metric[0]), echo);
  EXPECT_EQ(in_flight.metric[0].gauge.value, 0);

  prometheus::MetricFamily untracked =
      family_named(families, "trellis_metrics_untracked_calls_total");
  EXPECT_EQ(untracked.type, prometheus::MetricType::Counter);
  ASSERT_EQ(untracked.metric.size(), 1u);
  EXPECT_TRUE(untracked.metric[0].label.empty());
  EXPECT_EQ(untracked.metric[0].counter.value, 0);

  // scrape() is these families written by prometheus-cpp's TextSerializer (nothing is running
  // and no runtime is exported, so two readings agree).
  EXPECT_EQ(metrics->scrape(), prometheus::TextSerializer().Serialize(metrics->Collect()));

  // With a runtime, its families follow.
  metrics->set_runtime(runtime_.get());
  families = metrics->Collect();
  metrics->set_runtime(nullptr);
  prometheus::MetricFamily workers = family_named(families, "trellis_runtime_workers");
  EXPECT_EQ(workers.type, prometheus::MetricType::Gauge);
  ASSERT_EQ(workers.metric.size(), 1u);
  EXPECT_EQ(workers.metric[0].gauge.value, 2);
  prometheus::MetricFamily events = family_named(families, "trellis_runtime_worker_events_total");
  EXPECT_EQ(events.type, prometheus::MetricType::Counter);
  ASSERT_EQ(events.metric.size(), 2u);
  EXPECT_EQ(labels_of(events.metric[0]), "worker=0");
  EXPECT_EQ(labels_of(events.metric[1]), "worker=1");
  EXPECT_EQ(names_of(families).back(), "trellis_runtime_worker_timers_pending");
}

// A program's own prometheus-cpp metrics: a counter in a prometheus::Registry.
std::shared_ptr<prometheus::Registry> program_registry() {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("myapp_jobs_total")
      .Help("Jobs the program ran.")
      .Register(*registry)
      .Add({{"queue", "default"}})
      .Increment(3);
  return registry;
}

TEST_F(MetricsTest, ProgramAndTrellisFamiliesSerializeTogether) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  metrics->set_runtime(runtime_.get());
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());

  std::shared_ptr<prometheus::Registry> program = program_registry();
  std::vector<prometheus::MetricFamily> families = program->Collect();
  for (prometheus::MetricFamily& f : metrics->Collect()) families.push_back(std::move(f));
  metrics->set_runtime(nullptr);
  std::string text = prometheus::TextSerializer().Serialize(families);

  EXPECT_EQ(sample(text, "myapp_jobs_total{queue=\"default\"}"), 3) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handled_total", code("OK"))), 1) << text;
  EXPECT_EQ(sample(text, echo_series("grpc_server_handling_seconds_count")), 1) << text;
  EXPECT_EQ(sample(text, "trellis_runtime_workers"), 2) << text;
  EXPECT_TRUE(promtool_accepts(text));
}

// The use the Collectable is for: a prometheus-cpp Exposer serving the program's registry and
// Trellis's, over a real loopback HTTP connection.
TEST_F(MetricsTest, PrometheusExposerServesTrellisMetricsBesideTheProgramsOwn) {
  auto metrics = std::make_shared<MetricsRegistry>();
  start([&](Server::Builder& b) { b.layer(MetricsLayer(metrics)); });
  metrics->set_runtime(runtime_.get());
  EchoClient client(channel_.with_layer(MetricsLayer(metrics)));
  ASSERT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());

  std::shared_ptr<prometheus::Registry> program = program_registry();
  {
    prometheus::Exposer exposer("127.0.0.1:0");
    exposer.RegisterCollectable(program);
    exposer.RegisterCollectable(metrics);
    std::vector<int> ports = exposer.GetListeningPorts();
    ASSERT_EQ(ports.size(), 1u);
    HttpReply reply = http_get(ports[0], "/metrics");
    ASSERT_EQ(reply.status(), 200) << reply.raw;
    std::string body = reply.body();
    EXPECT_EQ(sample(body, "myapp_jobs_total{queue=\"default\"}"), 3) << body;
    EXPECT_EQ(sample(body, echo_series("grpc_server_handled_total", code("OK"))), 1) << body;
    EXPECT_EQ(sample(body, echo_series("grpc_client_handled_total", code("OK"))), 1) << body;
    EXPECT_EQ(sample(body, "trellis_runtime_workers"), 2) << body;
    EXPECT_TRUE(promtool_accepts(body));
  }
  metrics->set_runtime(nullptr);
}

}  // namespace
}  // namespace trellis::testing
