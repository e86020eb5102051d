// Load balancing and name resolution through Channel::Builder: round_robin over an address list
// of three Trellis servers in processes of their own, one of which is killed under load; a dns:
// target and its re-resolution; wait_for_ready.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "python_peer.hpp"
#include "subprocess.hpp"
#include "trellis/channel_builder.hpp"
#include "trellis/client.hpp"
#include "trellis/middleware/retry.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

#ifndef TRELLIS_TEST_ECHO_SERVER
#error "TRELLIS_TEST_ECHO_SERVER (the trellis_echo_server program) must be defined by the build"
#endif

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kBackends = 3;
constexpr int kCalls = 2000;
constexpr int kKillAfter = kCalls / 2;
constexpr int kConcurrentCallers = 8;

std::string port_of(const std::string& peer) { return peer.substr(peer.rfind(':') + 1); }

class LoadBalancingTest : public EndToEndTest {
 protected:
  void SetUp() override {
    for (int i = 0; i < kBackends; ++i) {
      backends_.push_back(
          std::make_unique<ChildServer>(std::vector<std::string>{TRELLIS_TEST_ECHO_SERVER},
                                        Subprocess::Env{}, deadline_in(kWaitBound)));
      ASSERT_TRUE(backends_.back()->error().empty()) << backends_.back()->error();
    }
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
  }

  std::vector<std::unique_ptr<ChildServer>> backends_;
};

// What the callers share.
struct Load {
  std::atomic<int> next{0};      // calls started
  std::atomic<int> done{0};      // calls finished
  std::atomic<int> failures{0};  // calls that failed (after the retry layer's attempts)
  std::mutex mu;
  std::map<std::string, int> before_kill;  // successes per backend port
  std::map<std::string, int> after_kill;
  std::string first_failure;
  bool killed = false;
};

// Calls IdempotentEcho until kCalls have been started; the caller that finishes call kKillAfter
// kills `victim` (SIGKILL: no goodbye, the connection just breaks), while the other callers'
// calls are in flight.
Task<void> caller(Channel channel, Load& load, pid_t victim) {
  EchoClient client(channel);
  while (load.next.fetch_add(1) < kCalls) {
    ResponseMetadata response;
    EchoRequest req;
    req.set_message("load");
    auto r = co_await client.IdempotentEcho(
        req, CallOptions().set_timeout(kWaitBound).capture_response_metadata(&response));
    std::lock_guard lock(load.mu);
    if (r.ok()) {
      ++(load.killed ? load.after_kill : load.before_kill)[port_of(response.peer)];
    } else if (load.failures.fetch_add(1) == 0) {
      load.first_failure = r.status().to_string();
    }
    if (load.done.fetch_add(1) + 1 == kKillAfter) {
      ::kill(victim, SIGKILL);
      load.killed = true;
    }
  }
}

TEST_F(LoadBalancingTest, RoundRobinWithRetriesLosesNoCallWhenABackendIsKilled) {
  std::string target = "ipv4:";
  for (int i = 0; i < kBackends; ++i) {
    target += (i > 0 ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(backends_[i]->port());
  }
  RetryPolicy policy;
  policy.max_attempts = 5;
  Channel channel = Channel::Builder(target)
                        .load_balancing(LoadBalancing::kRoundRobin)
                        .build()
                        .value()
                        .with_layer(RetryLayer(policy));
  ASSERT_TRUE(run(channel.wait_until_ready(std::chrono::system_clock::now() + kWaitBound)));

  Load load;
  std::vector<JoinHandle<void>> callers;
  for (int i = 0; i < kConcurrentCallers; ++i) {
    callers.push_back(runtime_->spawn(caller(channel, load, backends_[0]->process().pid())));
  }
  for (auto& c : callers) run(c.join());

  EXPECT_EQ(load.failures.load(), 0) << "first failure: " << load.first_failure;
  EXPECT_EQ(load.done.load(), kCalls);
  ASSERT_TRUE(load.killed);
  // Before the kill every backend took calls; after it, the survivors share the rest about
  // evenly (round_robin alternates; a quarter each is far below what it gives).
  const std::string victim = std::to_string(backends_[0]->port());
  for (const auto& b : backends_) {
    EXPECT_GT(load.before_kill[std::to_string(b->port())], 0) << "backend " << b->port();
  }
  int after = 0;
  for (const auto& [port, n] : load.after_kill) {
    if (port != victim) after += n;
  }
  for (int i = 1; i < kBackends; ++i) {
    EXPECT_GE(load.after_kill[std::to_string(backends_[i]->port())], after / 4)
        << "backend " << backends_[i]->port() << " of " << after << " calls after the kill";
  }
}

TEST_F(LoadBalancingTest, PickFirstSendsEveryCallToOneBackend) {
  std::string target = "ipv4:127.0.0.1:" + std::to_string(backends_[1]->port()) +
                       ",127.0.0.1:" + std::to_string(backends_[2]->port());
  Channel channel =
      Channel::Builder(target).load_balancing(LoadBalancing::kPickFirst).build().value();
  std::map<std::string, int> calls;
  for (int i = 0; i < 20; ++i) {
    ResponseMetadata response;
    auto r = run(EchoClient(channel).IdempotentEcho(
        EchoRequest(), CallOptions().set_timeout(kWaitBound).capture_response_metadata(&response)));
    ASSERT_TRUE(r.ok()) << r.status();
    ++calls[port_of(response.peer)];
  }
  EXPECT_EQ(calls.size(), 1u);
}

// dns:/// resolves the name (localhost: 127.0.0.1, and ::1 where nothing listens here).
TEST(NameResolutionTest, DnsTargetReachesTheServer) {
  auto runtime = Runtime::multi_thread().worker_threads(1).build();
  EchoImpl echo;
  auto server =
      Server::Builder(*runtime).add_insecure_port("127.0.0.1:0").add_service(echo).build();
  ASSERT_TRUE(server.ok()) << server.status();
  Channel channel = Channel::Builder("dns:///localhost:" + std::to_string((*server)->port()))
                        .load_balancing(LoadBalancing::kRoundRobin)
                        .dns_min_time_between_resolutions(1s)
                        .build()
                        .value();
  EchoRequest req;
  req.set_message("resolved");
  auto r = run_bounded(*runtime,
                       EchoClient(channel).Echo(
                           req, CallOptions().set_timeout(kWaitBound).set_wait_for_ready(true)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "resolved");
  (*server)->shutdown(kShutdownGrace);
  server->reset();  // servers go before their runtime
  runtime->shutdown(kShutdownGrace);
}

// dns: names are resolved again when the connection fails: a name whose address moved (a fake DNS
// server, tests/python/fake_dns.py, named in the target's authority) takes the channel to the new
// address once the old server goes away.
TEST(NameResolutionTest, DnsTargetIsResolvedAgainWhenItsServerGoesAway) {
  std::string error;
  auto dns =
      Subprocess::start(python("fake_dns.py", {"--answer", "127.0.0.1"}), python_env(), &error);
  ASSERT_NE(dns, nullptr) << error;
  auto listening = dns->wait_for_line("dns listening on port ", deadline_in(kWaitBound));
  ASSERT_TRUE(listening) << dns->output();
  const std::string dns_port = listening->substr(std::string("dns listening on port ").size());

  auto runtime = Runtime::multi_thread().worker_threads(2).build();
  EchoImpl first_echo, second_echo;
  auto first =
      Server::Builder(*runtime).add_insecure_port("127.0.0.1:0").add_service(first_echo).build();
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string port = std::to_string((*first)->port());
  // The same port on another loopback address: the name's A record is all that changes.
  auto second = Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.2:" + port)
                    .add_service(second_echo)
                    .build();
  ASSERT_TRUE(second.ok()) << second.status();

  Channel channel =
      Channel::Builder("dns://127.0.0.1:" + dns_port + "/greeter.trellis.test:" + port)
          .dns_min_time_between_resolutions(100ms)
          .build()
          .value();
  auto peer_of_a_call = [&] {
    ResponseMetadata response;
    auto r = run_bounded(*runtime, EchoClient(channel).Echo(
                                       EchoRequest(), CallOptions()
                                                          .set_timeout(kWaitBound)
                                                          .set_wait_for_ready(true)
                                                          .capture_response_metadata(&response)));
    EXPECT_TRUE(r.ok()) << r.status();
    return response.peer;
  };
  EXPECT_EQ(peer_of_a_call(), "ipv4:127.0.0.1:" + port);

  ASSERT_TRUE(dns->write_stdin("answer 127.0.0.2\n"));
  ASSERT_TRUE(dns->wait_for_line("answering 127.0.0.2", deadline_in(kWaitBound)));
  (*first)->shutdown(kShutdownGrace);
  first->reset();
  EXPECT_EQ(peer_of_a_call(), "ipv4:127.0.0.2:" + port);
  EXPECT_EQ(second_echo.observed.calls.load(), 1);

  (*second)->shutdown(kShutdownGrace);
  second->reset();
  runtime->shutdown(kShutdownGrace);
}

// A call with wait_for_ready waits for a server that is not up yet, where a plain call fails
// UNAVAILABLE at once.
TEST(WaitForReadyTest, ACallWaitsForTheServerToComeUp) {
  auto runtime = Runtime::multi_thread().worker_threads(2).build();
  EchoImpl echo;
  // Find a free port, then leave it free for the server that comes later.
  int port = 0;
  {
    EchoImpl probe_echo;  // a service serves one server
    auto probe =
        Server::Builder(*runtime).add_insecure_port("127.0.0.1:0").add_service(probe_echo).build();
    ASSERT_TRUE(probe.ok()) << probe.status();
    port = (*probe)->port();
    (*probe)->shutdown();
    probe->reset();
  }
  Channel channel = Channel::Builder("127.0.0.1:" + std::to_string(port)).build().value();
  auto fail_fast = run_bounded(
      *runtime, EchoClient(channel).Echo(EchoRequest(), CallOptions().set_timeout(kWaitBound)));
  EXPECT_EQ(fail_fast.status().code(), StatusCode::kUnavailable) << fail_fast.status();

  EchoRequest req;
  req.set_message("waited");
  auto waiting = runtime->spawn(EchoClient(channel).Echo(
      req, CallOptions().set_timeout(kWaitBound).set_wait_for_ready(true)));
  auto server = Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.1:" + std::to_string(port))
                    .add_service(echo)
                    .build();
  ASSERT_TRUE(server.ok()) << server.status();
  auto r = run_bounded(*runtime, waiting.join());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "waited");
  (*server)->shutdown(kShutdownGrace);
  server->reset();  // servers go before their runtime
  runtime->shutdown(kShutdownGrace);
}

}  // namespace
}  // namespace trellis::testing
