// The limit layers (concurrency limit, load shedding, rate limit) on the server and the client,
// over real loopback calls. Saturation is made deterministic without sleeping: handlers wait on
// gates the test opens, and the tests that must see a call queued in a limiter run on a
// single-worker runtime, where a snapshot task posted after the call's event runs only once the
// worker has finished handling that event.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fixture.hpp"
#include "trellis/client_stream.hpp"
#include "trellis/middleware/concurrency_limit.hpp"
#include "trellis/middleware/load_shed.hpp"
#include "trellis/middleware/rate_limit.hpp"
#include "trellis/scoped_layer.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

// A one-shot latch a coroutine can await without holding its worker.
class Gate {
 public:
  Task<void> wait() {
    return boost::asio::async_initiate<decltype(use_task), void()>(
        [this](auto handler) {
          boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler);
          std::unique_lock lock(mu_);
          if (open_) {
            lock.unlock();
            boost::asio::post(ex, std::move(handler));
            return;
          }
          waiters_.emplace_back(ex, std::move(handler));
        },
        use_task);
  }
  void open() {
    std::vector<Waiter> waiters;
    {
      std::lock_guard lock(mu_);
      open_ = true;
      waiters.swap(waiters_);
    }
    for (auto& [ex, handler] : waiters) {
      boost::asio::post(ex, [h = std::move(handler)]() mutable { std::move(h)(); });
    }
  }

 private:
  using Waiter =
      std::pair<boost::asio::any_io_executor, boost::asio::any_completion_handler<void()>>;
  std::mutex mu_;
  bool open_ = false;
  std::vector<Waiter> waiters_;
};

// Gates by name, created on first use.
class Gates {
 public:
  Gate& get(const std::string& name) {
    std::lock_guard lock(mu_);
    auto& gate = gates_[name];
    if (!gate) gate = std::make_unique<Gate>();
    return *gate;
  }
  void open(const std::string& name) { get(name).open(); }
  void open_all() {
    std::lock_guard lock(mu_);
    for (auto& [name, gate] : gates_) gate->open();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Gate>> gates_;
};

// A thread-safe list of events that the test thread can wait for (bounded). std::mutex rather
// than absl::Mutex: ThreadSanitizer sees through the one, not through Debian's uninstrumented
// libabsl.
class Events {
 public:
  void add(std::string event) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(event));
    }
    changed_.notify_all();
  }
  bool contains(const std::string& event) {
    std::lock_guard lock(mu_);
    return has(event);
  }
  // Blocks the test thread (never a worker) until `event` happened; false after kWaitBound.
  bool wait_for(const std::string& event) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, kWaitBound, [&] { return has(event); });
  }

 private:
  bool has(const std::string& event) const {
    return std::find(events_.begin(), events_.end(), event) != events_.end();
  }

  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::string> events_;
};

// Echo whose handler, for a message starting with "hold", waits for the gate of that name.
class GatedEcho final : public EchoService {
 public:
  GatedEcho(Gates* gates, Events* entered) : gates_(gates), entered_(entered) {}
  std::atomic<int> calls{0};

  Task<Result<EchoResponse>> Echo(ServerContext&, const EchoRequest& req) override {
    calls.fetch_add(1);
    entered_->add(req.message());
    if (req.throw_exception()) throw std::runtime_error("handler exploded on purpose");
    if (req.message().starts_with("hold")) co_await gates_->get(req.message()).wait();
    EchoResponse resp;
    resp.set_message(req.message());
    co_return resp;
  }
  Task<Result<EchoResponse>> IdempotentEcho(ServerContext& ctx, const EchoRequest& req) override {
    return Echo(ctx, req);
  }

 private:
  Gates* gates_;
  Events* entered_;
};

// Split writes one response per word, after waiting for the gate named by the whole message
// when it starts with "hold".
class GatedStreamer final : public StreamerService {
 public:
  GatedStreamer(Gates* gates, Events* entered) : gates_(gates), entered_(entered) {}

  Task<Status> Split(ServerContext&, const EchoRequest& req,
                     ServerWriter<EchoResponse>& writer) override {
    entered_->add(req.message());
    if (req.message().starts_with("hold")) co_await gates_->get(req.message()).wait();
    std::string_view rest = req.message();
    while (!rest.empty()) {
      auto space = rest.find(' ');
      EchoResponse resp;
      resp.set_message(std::string(rest.substr(0, space)));
      if (!co_await writer.write(resp)) co_return Status::cancelled("write failed");
      rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    }
    co_return Status();
  }
  Task<Result<EchoResponse>> Collect(ServerContext&, ServerReader<EchoRequest>&) override {
    co_return Status::unimplemented("not used by these tests");
  }
  Task<Status> Chat(ServerContext&, ServerReader<EchoRequest>&,
                    ServerWriter<EchoResponse>&) override {
    co_return Status::unimplemented("not used by these tests");
  }

 private:
  Gates* gates_;
  Events* entered_;
};

class LimitsTest : public EndToEndTest {
 protected:
  // Opens every gate first, so that no handler is left waiting when the server drains.
  void TearDown() override {
    gates_.open_all();
    EndToEndTest::TearDown();
  }

  // Starts the server with `configure`'s layers inside an outermost observing layer that records
  // "<message>" in arrived_ when a call enters the stack and "<message> <CODE>" in finished_
  // when the stack returns. `workers` == 1: a single_thread runtime.
  void start(const std::function<void(Server::Builder&)>& configure = {}, int workers = 2) {
    runtime_ = workers == 1 ? Runtime::single_thread().build()
                            : Runtime::multi_thread().worker_threads(workers).build();
    Server::Builder builder(*runtime_);
    builder.transport(transport_from_environment()).add_insecure_port("127.0.0.1:0");
    builder.layer(layer_fn([this](Call& call, const auto& next) -> Task<Status> {
      std::string message = call.request() != nullptr
                                ? static_cast<const EchoRequest*>(call.request())->message()
                                : "-";
      arrived_.add(message);
      Status status = co_await next(call);
      finished_.add(message + " " + status_code_name(status.code()));
      co_return status;
    }));
    if (configure) configure(builder);
    builder.add_service(echo_).add_service(streamer_);
    auto server = builder.build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    channel_ = Channel::insecure("127.0.0.1:" + std::to_string(server_->port()));
  }

  // Runs `fn` on a worker, queued behind what the worker already has to do.
  template <class F>
  auto on_worker(F fn) {
    using T = decltype(fn());
    return run([](F fn) -> Task<T> { co_return fn(); }(std::move(fn)));
  }

  static EchoRequest with_message(std::string m) {
    EchoRequest req;
    req.set_message(std::move(m));
    return req;
  }
  JoinHandle<Result<EchoResponse>> spawn_echo(
      const Channel& channel, std::string message,
      CallOptions options = CallOptions().set_timeout(30s)) {
    return runtime_->spawn(EchoClient(channel).Echo(with_message(std::move(message)), options));
  }
  Result<EchoResponse> echo(const Channel& channel, std::string message,
                            CallOptions options = CallOptions().set_timeout(30s)) {
    return run(EchoClient(channel).Echo(with_message(std::move(message)), options));
  }
  // The status of a spawned call; an aborted task's exception counts as CANCELLED.
  Status join(JoinHandle<Result<EchoResponse>>& handle) {
    try {
      return run(handle.join()).status();
    } catch (const boost::system::system_error& e) {
      return Status::cancelled(e.what());
    }
  }
  // Reads a whole server stream; the status and the number of responses.
  JoinHandle<std::pair<Status, int>> spawn_split(const Channel& channel, std::string message) {
    return runtime_->spawn(
        [](Channel channel, std::string message) -> Task<std::pair<Status, int>> {
          ClientReader<EchoResponse> reader = StreamerClient(channel).Split(
              with_message(std::move(message)), CallOptions().set_timeout(30s));
          int n = 0;
          while (co_await reader.read()) ++n;
          co_return std::pair(co_await reader.finish(), n);
        }(channel, std::move(message)));
  }

  Gates gates_;
  Events entered_;   // handler entries, by message
  Events arrived_;   // calls entering the server stack, by message
  Events finished_;  // "<message> <CODE>" as the server stack returned
  GatedEcho echo_{&gates_, &entered_};
  GatedStreamer streamer_{&gates_, &entered_};
  Channel channel_{nullptr};
};

// --- Concurrency limit, server side ---

TEST_F(LimitsTest, ServerCallBeyondTheLimitWaitsThenProceedsWhenAPermitFrees) {
  ConcurrencyLimitLayer limit(2);
  auto limiter = limit.limiter();
  start([&](Server::Builder& b) { b.layer(limit); }, /*workers=*/1);
  auto a = spawn_echo(channel_, "hold-a");
  auto b = spawn_echo(channel_, "hold-b");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  ASSERT_TRUE(entered_.wait_for("hold-b"));
  auto c = spawn_echo(channel_, "hold-c");
  ASSERT_TRUE(arrived_.wait_for("hold-c"));
  // The worker has handled c's arrival: c is queued, its handler has not run.
  auto [waiting, in_flight, c_entered] = on_worker([&] {
    return std::tuple(limiter->waiting(), limiter->in_flight(), entered_.contains("hold-c"));
  });
  EXPECT_EQ(waiting, 1u);
  EXPECT_EQ(in_flight, 2u);
  EXPECT_FALSE(c_entered);
  EXPECT_EQ(echo_.calls.load(), 2);

  gates_.open("hold-c");
  gates_.open("hold-a");  // a's permit goes to c
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(join(c).ok());
  gates_.open("hold-b");
  EXPECT_TRUE(join(b).ok());
  EXPECT_EQ(echo_.calls.load(), 3);
  EXPECT_EQ(limiter->in_flight(), 0u);
  EXPECT_EQ(limiter->waiting(), 0u);
}

TEST_F(LimitsTest, ServerWaiterWhoseDeadlinePassesEndsDeadlineExceededAndLeavesTheQueue) {
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  start([&](Server::Builder& b) {
    // A short server-side deadline for "short" (what a server timeout layer sets): the client's
    // own deadline stays 30 s, so the call surely reaches the limiter before its time is up.
    b.layer(layer_fn([](Call& call, const auto& next) -> Task<Status> {
       if (static_cast<const EchoRequest*>(call.request())->message() == "short") {
         call.server_context()->set_deadline(std::chrono::system_clock::now() + 50ms);
       }
       co_return co_await next(call);
     })).layer(limit);
  });
  auto a = spawn_echo(channel_, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto r = echo(channel_, "short");
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(finished_.contains("short DEADLINE_EXCEEDED"));
  EXPECT_FALSE(entered_.contains("short"));
  EXPECT_EQ(limiter->waiting(), 0u);
  EXPECT_EQ(limiter->in_flight(), 1u);

  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(echo(channel_, "after").ok());
  EXPECT_EQ(limiter->in_flight(), 0u);
  EXPECT_EQ(limiter->waiting(), 0u);
}

TEST_F(LimitsTest, ServerWaiterCancelledByTheClientLeavesTheQueue) {
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  start([&](Server::Builder& b) { b.layer(limit); }, /*workers=*/1);
  auto a = spawn_echo(channel_, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto c = spawn_echo(channel_, "hold-c");
  ASSERT_TRUE(arrived_.wait_for("hold-c"));
  EXPECT_EQ(on_worker([&] { return limiter->waiting(); }), 1u);

  c.abort();  // the client goes away; the server cancels the waiting call's task
  EXPECT_EQ(join(c).code(), StatusCode::kCancelled);
  ASSERT_TRUE(finished_.wait_for("hold-c CANCELLED"));
  EXPECT_EQ(limiter->waiting(), 0u);
  EXPECT_EQ(limiter->in_flight(), 1u);
  EXPECT_FALSE(entered_.contains("hold-c"));

  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(echo(channel_, "after").ok());
  EXPECT_EQ(limiter->in_flight(), 0u);
}

TEST_F(LimitsTest, ServerPermitIsReleasedWhenTheHandlerThrows) {
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  start([&](Server::Builder& b) { b.layer(limit); });
  EchoRequest boom = with_message("boom");
  boom.set_throw_exception(true);
  auto r = run(EchoClient(channel_).Echo(boom, CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_EQ(limiter->in_flight(), 0u);
  EXPECT_TRUE(echo(channel_, "after").ok());
  EXPECT_EQ(limiter->in_flight(), 0u);
}

TEST_F(LimitsTest, ServerStreamHoldsItsPermitUntilTheStreamEnds) {
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  start([&](Server::Builder& b) { b.layer(limit); }, /*workers=*/1);
  auto stream = spawn_split(channel_, "hold-s x y");
  ASSERT_TRUE(entered_.wait_for("hold-s x y"));
  auto c = spawn_echo(channel_, "after-stream");
  ASSERT_TRUE(arrived_.wait_for("after-stream"));
  EXPECT_EQ(on_worker([&] { return limiter->waiting(); }), 1u);
  EXPECT_FALSE(entered_.contains("after-stream"));

  gates_.open("hold-s x y");
  auto [status, responses] = run(stream.join());
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(responses, 3);
  EXPECT_TRUE(join(c).ok());
  EXPECT_EQ(limiter->in_flight(), 0u);
}

TEST_F(LimitsTest, NeverMoreCallsInsideThanTheLimitUnderLoad) {
  ConcurrencyLimitLayer limit(3);
  auto limiter = limit.limiter();
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  start([&](Server::Builder& b) {
    b.layer(limit).layer(layer_fn([&](Call& call, const auto& next) -> Task<Status> {
      int now = inside.fetch_add(1) + 1;
      int seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      // Yield a few times so that calls overlap.
      for (int i = 0; i < 3; ++i) co_await boost::asio::post(use_task);
      Status status = co_await next(call);
      inside.fetch_sub(1);
      co_return status;
    }));
  });
  // And the same limit on the client side, for calls from both workers.
  ConcurrencyLimitLayer client_limit(5);
  Channel limited = channel_.with_layer(client_limit);
  std::vector<JoinHandle<Result<EchoResponse>>> calls;
  for (int i = 0; i < 64; ++i) calls.push_back(spawn_echo(limited, "load " + std::to_string(i)));
  for (auto& call : calls) EXPECT_TRUE(join(call).ok());
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(echo_.calls.load(), 64);
  EXPECT_EQ(limiter->in_flight(), 0u);
  EXPECT_EQ(client_limit.limiter()->in_flight(), 0u);
  EXPECT_EQ(client_limit.limiter()->waiting(), 0u);
}

// --- Concurrency limit, client side ---

TEST_F(LimitsTest, ClientCallBeyondTheLimitWaitsThenProceeds) {
  start({}, /*workers=*/1);
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  Channel limited = channel_.with_layer(limit);
  auto a = spawn_echo(limited, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto b = spawn_echo(limited, "hold-b");
  // b's task has run up to its first suspension: queued in the client's limiter, not sent.
  auto [waiting, in_flight] =
      on_worker([&] { return std::pair(limiter->waiting(), limiter->in_flight()); });
  EXPECT_EQ(waiting, 1u);
  EXPECT_EQ(in_flight, 1u);
  EXPECT_FALSE(arrived_.contains("hold-b"));

  gates_.open("hold-b");
  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(join(b).ok());
  EXPECT_EQ(echo_.calls.load(), 2);
  EXPECT_EQ(limiter->in_flight(), 0u);
  EXPECT_EQ(limiter->waiting(), 0u);
}

TEST_F(LimitsTest, ClientWaiterWhoseDeadlinePassesEndsDeadlineExceededWithoutSending) {
  start();
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  Channel limited = channel_.with_layer(limit);
  auto a = spawn_echo(limited, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto r = echo(limited, "late", CallOptions().set_timeout(50ms));
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_NE(r.status().message().find("concurrency permit"), std::string::npos) << r.status();
  EXPECT_EQ(limiter->waiting(), 0u);
  EXPECT_EQ(limiter->in_flight(), 1u);

  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(echo(limited, "after").ok());
  EXPECT_FALSE(arrived_.contains("late"));
  EXPECT_EQ(echo_.calls.load(), 2);
  EXPECT_EQ(limiter->in_flight(), 0u);
}

TEST_F(LimitsTest, ClientWaiterWhoseTaskIsAbortedLeavesTheQueue) {
  start({}, /*workers=*/1);
  ConcurrencyLimitLayer limit(1);
  auto limiter = limit.limiter();
  Channel limited = channel_.with_layer(limit);
  auto a = spawn_echo(limited, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto b = spawn_echo(limited, "hold-b");
  EXPECT_EQ(on_worker([&] { return limiter->waiting(); }), 1u);
  b.abort();
  EXPECT_EQ(join(b).code(), StatusCode::kCancelled);
  EXPECT_EQ(limiter->waiting(), 0u);
  EXPECT_EQ(limiter->in_flight(), 1u);

  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(echo(limited, "after").ok());
  EXPECT_FALSE(arrived_.contains("hold-b"));
  EXPECT_EQ(limiter->in_flight(), 0u);
}

TEST_F(LimitsTest, ClientLimitWithFullQueueAnswersResourceExhausted) {
  start({}, /*workers=*/1);
  auto limit = ConcurrencyLimitLayer::with_max_waiting(1, 1);
  auto limiter = limit.limiter();
  Channel limited = channel_.with_layer(limit);
  auto a = spawn_echo(limited, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto b = spawn_echo(limited, "hold-b");
  EXPECT_EQ(on_worker([&] { return limiter->waiting(); }), 1u);
  auto c = echo(limited, "c");
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted) << c.status();

  gates_.open("hold-a");
  gates_.open("hold-b");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(join(b).ok());
  EXPECT_EQ(echo_.calls.load(), 2);
  EXPECT_EQ(limiter->in_flight(), 0u);
}

// --- Load shedding ---

TEST_F(LimitsTest, ServerLoadShedAnswersResourceExhaustedAtOnceWhenSaturated) {
  LoadShedLayer shed(2);
  auto limiter = shed.limiter();
  start([&](Server::Builder& b) { b.layer(shed); });
  auto a = spawn_echo(channel_, "hold-a");
  auto b = spawn_echo(channel_, "hold-b");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  ASSERT_TRUE(entered_.wait_for("hold-b"));
  auto c = echo(channel_, "c");
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted) << c.status();
  EXPECT_EQ(echo_.calls.load(), 2);  // the shed call's handler never ran

  gates_.open("hold-a");
  gates_.open("hold-b");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(join(b).ok());
  EXPECT_TRUE(echo(channel_, "d").ok());
  EXPECT_EQ(limiter->in_flight(), 0u);
}

TEST_F(LimitsTest, ServerLoadShedCountsStreamsAndCanAnswerUnavailable) {
  LoadShedLayer shed(1, StatusCode::kUnavailable);
  start([&](Server::Builder& b) { b.layer(shed); });
  auto stream = spawn_split(channel_, "hold-s x");
  ASSERT_TRUE(entered_.wait_for("hold-s x"));
  EXPECT_EQ(echo(channel_, "c").status().code(), StatusCode::kUnavailable);
  auto second = run(spawn_split(channel_, "second").join());
  EXPECT_EQ(second.first.code(), StatusCode::kUnavailable);
  EXPECT_EQ(second.second, 0);

  gates_.open("hold-s x");
  auto [status, responses] = run(stream.join());
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(responses, 2);
  EXPECT_TRUE(echo(channel_, "after").ok());
  EXPECT_EQ(shed.limiter()->in_flight(), 0u);
}

TEST_F(LimitsTest, ClientLoadShedAnswersWithoutSending) {
  start();
  LoadShedLayer shed(1);
  Channel limited = channel_.with_layer(shed);
  auto a = spawn_echo(limited, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto b = echo(limited, "b");
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted) << b.status();
  EXPECT_FALSE(arrived_.contains("b"));

  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  EXPECT_TRUE(echo(limited, "c").ok());
  EXPECT_EQ(echo_.calls.load(), 2);
  EXPECT_EQ(shed.limiter()->in_flight(), 0u);
}

TEST_F(LimitsTest, LoadShedSharingAConcurrencyLimitersPermits) {
  // Echo waits for a permit; IdempotentEcho, on the same limiter, is shed instead.
  ConcurrencyLimitLayer limit(1);
  LoadShedLayer shed(limit.limiter());
  start([&](Server::Builder& b) {
    b.layer(for_methods({"/trellis.testing.Echo/Echo"}, limit))
        .layer(for_methods({"/trellis.testing.Echo/IdempotentEcho"}, shed));
  });
  auto a = spawn_echo(channel_, "hold-a");
  ASSERT_TRUE(entered_.wait_for("hold-a"));
  auto shed_call = run(
      EchoClient(channel_).IdempotentEcho(with_message("shed"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(shed_call.status().code(), StatusCode::kResourceExhausted);
  gates_.open("hold-a");
  EXPECT_TRUE(join(a).ok());
  auto passes = run(
      EchoClient(channel_).IdempotentEcho(with_message("pass"), CallOptions().set_timeout(30s)));
  EXPECT_TRUE(passes.ok()) << passes.status();
  EXPECT_EQ(limit.limiter()->in_flight(), 0u);
}

// --- Rate limit ---

TEST_F(LimitsTest, ServerRateLimitAdmitsTheBurstThenAnswersResourceExhausted) {
  // One token per hour: no refill during the test.
  RateLimitLayer rate(1.0 / 3600, 3);
  start([&](Server::Builder& b) { b.layer(rate); });
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(echo(channel_, "ok").ok()) << i;
  auto r = echo(channel_, "over");
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status();
  EXPECT_NE(r.status().message().find("rate limited"), std::string::npos) << r.status();
  EXPECT_EQ(echo_.calls.load(), 3);
  // Streams take a token too.
  auto stream = run(spawn_split(channel_, "x").join());
  EXPECT_EQ(stream.first.code(), StatusCode::kResourceExhausted);
  EXPECT_FALSE(entered_.contains("x"));
}

TEST_F(LimitsTest, ClientRateLimitAnswersWithoutSending) {
  start();
  RateLimitLayer rate(1.0 / 3600, 2, StatusCode::kUnavailable);
  Channel limited = channel_.with_layer(rate);
  EXPECT_TRUE(echo(limited, "a").ok());
  EXPECT_TRUE(echo(limited, "b").ok());
  auto r = echo(limited, "c");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  EXPECT_FALSE(arrived_.contains("c"));
  EXPECT_EQ(echo_.calls.load(), 2);
  EXPECT_EQ(rate.limiter()->available(), 0u);
  EXPECT_TRUE(echo(channel_, "unlimited handle").ok());
}

// The refill, on a clock the test moves.
std::atomic<std::int64_t> fake_now_ns{0};
std::chrono::steady_clock::time_point fake_clock() {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(fake_now_ns.load()));
}

TEST_F(LimitsTest, RateLimiterRefillsAtItsRateUpToTheBurst) {
  fake_now_ns = 1'000'000'000;
  RateLimiter bucket(10, 2, &fake_clock);  // a token every 100 ms
  EXPECT_EQ(bucket.available(), 2u);
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_FALSE(bucket.try_acquire());
  EXPECT_EQ(bucket.time_to_next(), std::chrono::milliseconds(100));
  fake_now_ns += 60'000'000;
  EXPECT_FALSE(bucket.try_acquire());
  EXPECT_EQ(bucket.time_to_next(), std::chrono::milliseconds(40));
  fake_now_ns += 40'000'000;
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_FALSE(bucket.try_acquire());
  fake_now_ns += 3'600'000'000'000;  // an hour: the bucket holds only its burst
  EXPECT_EQ(bucket.available(), 2u);
  EXPECT_EQ(bucket.time_to_next(), std::chrono::nanoseconds(0));
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_TRUE(bucket.try_acquire());
  EXPECT_FALSE(bucket.try_acquire());
}

}  // namespace
}  // namespace trellis::testing
