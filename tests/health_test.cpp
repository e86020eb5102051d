// trellis::HealthService (grpc.health.v1.Health) against a python3-grpcio client: Check per
// service name, Watch through status changes and through the server's shutdown, and the end of
// a watch whose client goes away.
#include "trellis/health.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "python_peer.hpp"
#include "subprocess.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kPeerBound = 60s;  // a python client's whole run
constexpr char kEcho[] = "trellis.testing.Echo";

class HealthTest : public EndToEndTest, public TransportParam {
 protected:
  void SetUp() override {
    runtime_ = Runtime::multi_thread().worker_threads(2).build();
    auto server = Server::Builder(*runtime_)
                      .transport(transport())
                      .add_insecure_port("127.0.0.1:0")
                      .add_service(echo_)
                      .add_service(health_.service())
                      .build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  std::vector<std::string> client(std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", "127.0.0.1:" + std::to_string(server_->port())});
    return python("health_client.py", std::move(args));
  }

  // Starts `health_client.py watch name`.
  std::unique_ptr<Subprocess> start_watch(const std::string& name) {
    std::string error;
    auto child = Subprocess::start(client({"watch", name}), python_env(), &error);
    EXPECT_NE(child, nullptr) << error;
    return child;
  }

  // Whether the watching client printed `line` next (after what earlier waits read), within the
  // bound; a test that fails shows everything the client printed.
  static ::testing::AssertionResult next_line(Subprocess& watch, const std::string& line) {
    auto got = watch.wait_for_line("watch ", deadline_in(kPeerBound));
    if (got == line) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "expected \"" << line << "\", got " << (got ? "\"" + *got + "\"" : "nothing")
           << "; the client's output:\n"
           << watch.output();
  }

  EchoImpl echo_;
  HealthService health_;
};

TRELLIS_BOTH_TRANSPORTS(HealthTest);

TEST_P(HealthTest, CheckAnswersTheStatusOfEachService) {
  HealthReporter reporter = health_.reporter();
  EXPECT_EQ(reporter.status(""), ServingStatus::kServing);
  EXPECT_EQ(reporter.status(kEcho), std::nullopt);
  reporter.set_status(kEcho, ServingStatus::kNotServing);
  reporter.set_status("trellis.testing.Other", ServingStatus::kUnknown);

  auto run = run_with_deadline(client({"check", "", kEcho, "trellis.testing.Other", "no.Such"}),
                               python_env(), deadline_in(kPeerBound));
  ASSERT_TRUE(run.status.success()) << run.status.describe() << "; output:\n" << run.output;
  EXPECT_EQ(run.output,
            "check '': SERVING\n"
            "check 'trellis.testing.Echo': NOT_SERVING\n"
            "check 'trellis.testing.Other': UNKNOWN\n"
            "check 'no.Such': error NOT_FOUND\n");

  reporter.set_status(kEcho, ServingStatus::kServing);
  run = run_with_deadline(client({"check", kEcho}), python_env(), deadline_in(kPeerBound));
  EXPECT_EQ(run.output, "check 'trellis.testing.Echo': SERVING\n") << run.status.describe();
}

TEST_P(HealthTest, WatchFollowsEveryChangeOfItsService) {
  HealthReporter reporter = health_.reporter();
  auto watch = start_watch(kEcho);
  ASSERT_NE(watch, nullptr);
  // A name without a status: SERVICE_UNKNOWN at once, and the watch stays open.
  ASSERT_TRUE(next_line(*watch, "watch 'trellis.testing.Echo': SERVICE_UNKNOWN"));
  reporter.set_status(kEcho, ServingStatus::kServing);
  ASSERT_TRUE(next_line(*watch, "watch 'trellis.testing.Echo': SERVING"));
  reporter.set_status("trellis.testing.Other", ServingStatus::kNotServing);  // not this watch's
  reporter.set_status(kEcho, ServingStatus::kServing);                       // no change: not sent
  reporter.set_status(kEcho, ServingStatus::kNotServing);
  ASSERT_TRUE(next_line(*watch, "watch 'trellis.testing.Echo': NOT_SERVING"));
  reporter.set_status(kEcho, ServingStatus::kServing);
  ASSERT_TRUE(next_line(*watch, "watch 'trellis.testing.Echo': SERVING"));

  shut_down();
  EXPECT_TRUE(next_line(*watch, "watch 'trellis.testing.Echo': NOT_SERVING"));
  EXPECT_TRUE(next_line(*watch, "watch 'trellis.testing.Echo' ended: OK"));
  EXPECT_TRUE(watch->wait(deadline_in(kPeerBound)).success()) << watch->output();
}

// What Kubernetes readiness needs: at shutdown the whole server's status turns NOT_SERVING and
// the watchers hear it while in-flight calls drain. The watch then ends with OK: a watch the
// drain had to cancel at the end of the grace period would end CANCELLED.
TEST_P(HealthTest, ShutdownTurnsEveryStatusNotServingBeforeTheDrain) {
  HealthReporter reporter = health_.reporter();
  reporter.set_status(kEcho, ServingStatus::kServing);
  auto watch = start_watch("");
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(next_line(*watch, "watch '': SERVING"));

  shut_down();  // a grace of kShutdownGrace (10 s)
  EXPECT_TRUE(next_line(*watch, "watch '': NOT_SERVING"));
  EXPECT_TRUE(next_line(*watch, "watch '' ended: OK"));
  EXPECT_TRUE(watch->wait(deadline_in(kPeerBound)).success()) << watch->output();

  // NOT_SERVING for good: a later set_status changes nothing.
  EXPECT_EQ(reporter.status(""), ServingStatus::kNotServing);
  EXPECT_EQ(reporter.status(kEcho), ServingStatus::kNotServing);
  reporter.set_status(kEcho, ServingStatus::kServing);
  EXPECT_EQ(reporter.status(kEcho), ServingStatus::kNotServing);
}

// A watch whose client dies ends at once (its handler's wait is cancelled), instead of holding a
// call object until the next change or the shutdown.
TEST_P(HealthTest, WatchEndsWhenItsClientGoesAway) {
  auto watch = start_watch("");
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(next_line(*watch, "watch '': SERVING"));
  ASSERT_EQ(runtime_->metrics().server_calls, 1);
  ASSERT_TRUE(watch->send_signal(SIGKILL));
  watch->wait(deadline_in(kPeerBound));
  EXPECT_TRUE(wait_until([&] { return runtime_->metrics().server_calls == 0; },
                         "the watch's server call to end"));
}

// grpc++ binds a service to the first server built with it: a second server is refused with a
// clear error instead of grpc++'s abort.
TEST_P(HealthTest, AServiceServesOneServer) {
  auto second = Server::Builder(*runtime_)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(health_.service())
                    .build();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition) << second.status();
  EXPECT_NE(second.status().message().find("grpc.health.v1.Health"), std::string::npos)
      << second.status();
}

// A reporter is a handle: it outlives its service, and what it sets then reaches nobody.
TEST(HealthReporterTest, OutlivesItsService) {
  auto health = std::make_unique<HealthService>();
  HealthReporter reporter = health->reporter();
  HealthReporter copy = reporter;
  copy.set_status("a.B", ServingStatus::kNotServing);
  EXPECT_EQ(reporter.status("a.B"), ServingStatus::kNotServing);
  health.reset();
  reporter.set_status("a.B", ServingStatus::kServing);
  EXPECT_EQ(copy.status("a.B"), ServingStatus::kServing);
  EXPECT_EQ(serving_status_name(ServingStatus::kNotServing), "NOT_SERVING");
}

}  // namespace
}  // namespace trellis::testing
