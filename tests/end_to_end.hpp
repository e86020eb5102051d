// What every end-to-end test shares: waits bounded by a deadline, and the check that no call
// object outlives its call once the test's servers and runtime have shut down.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/transport.hpp"

namespace trellis::testing {

// The bound of every wait for something that must happen; never reached when the code is right.
inline constexpr absl::Duration kTestDeadline = absl::Seconds(30);
// The same bound, for waits that take a std::chrono duration.
inline constexpr std::chrono::seconds kWaitBound{30};
// How long a server's shutdown lets the test's calls end by themselves, and a runtime's shutdown
// its spawned tasks, before cancelling what is left.
inline constexpr std::chrono::seconds kShutdownGrace{10};

// Waits until `condition()` holds, for state that offers nothing to block on (a counter a handler
// bumps). Fails, saying what it waited for, once `timeout` has passed. Use it as
// ASSERT_TRUE(wait_until(...)).
template <class Condition>
::testing::AssertionResult wait_until(Condition condition, std::string_view what,
                                      absl::Duration timeout = kTestDeadline) {
  const absl::Time end = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > end) {
      return ::testing::AssertionFailure() << "waited " << timeout << " in vain for " << what;
    }
    std::this_thread::yield();
  }
  return ::testing::AssertionSuccess();
}

// Runs `task` on a worker of `runtime` and waits for its value or exception, as
// Runtime::block_on does, but for `bound` at most: a task still running then fails the test and
// is cancelled (terminal cancellation: its calls end CANCELLED, its timers abort). A task that
// is still running `bound` after that ignores cancellation; the process aborts, since returning
// would leave the task running on objects the test is about to destroy. Throws
// std::runtime_error if the runtime drops the task unfinished (it shut down).
template <class T>
T run_bounded(Runtime& runtime, Task<T> task,
              std::chrono::steady_clock::duration bound = kWaitBound) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> result = promise->get_future();
  // Emitted on the task's worker only: Asio cancellation signals are not thread-safe.
  auto cancel = std::make_shared<boost::asio::cancellation_signal>();
  Executor executor = runtime.executor();
  boost::asio::co_spawn(
      executor, std::move(task),
      boost::asio::bind_cancellation_slot(
          cancel->slot(), [promise, cancel](std::exception_ptr error, auto&&... value) {
            if (error) {
              promise->set_exception(std::move(error));
            } else {
              promise->set_value(std::forward<decltype(value)>(value)...);
            }
          }));
  if (result.wait_for(bound) != std::future_status::ready) {
    ADD_FAILURE() << "the test's task did not finish within "
                  << std::chrono::duration_cast<std::chrono::seconds>(bound).count()
                  << " s; cancelling it";
    boost::asio::post(executor, [cancel] { cancel->emit(boost::asio::cancellation_type::all); });
    if (result.wait_for(bound) != std::future_status::ready) {
      std::fprintf(stderr, "the test's task ignored its cancellation; aborting\n");
      std::abort();
    }
  }
  try {
    return result.get();
  } catch (const std::future_error&) {
    throw std::runtime_error("the runtime dropped the test's task unfinished");
  }
}

// Checks, after `runtime` has shut down, that every server and client call object it counted has
// been freed.
inline void expect_no_live_calls(const Runtime& runtime) {
  RuntimeMetrics metrics = runtime.metrics();
  EXPECT_EQ(metrics.server_calls, 0) << "a server call object outlived its call";
  EXPECT_EQ(metrics.client_calls, 0) << "a client call object outlived its call";
}

// For a test whose deadline must pass while the peer's handler runs: a deadline that passes before
// the call has reached the handler (a slow start on a loaded machine) shows nothing about the
// handler. Calls `attempt(timeout)` with a timeout of 50 ms, then twice as long each time, until
// `handler_started()` holds after an attempt or the 6.4 s attempt has been made (all attempts
// together take under 13 s). Returns the last attempt's result; the test then asserts
// handler_started() itself.
template <class Attempt, class Started>
auto with_growing_timeout(Attempt attempt, Started handler_started) {
  std::chrono::milliseconds timeout(50);
  auto result = attempt(timeout);
  while (!handler_started() && timeout < std::chrono::seconds(5)) {
    timeout *= 2;
    result = attempt(timeout);
  }
  return result;
}

// The fixture of end-to-end tests: the runtime they run on and the Trellis server under test
// (either may stay null). TearDown shuts them down in the order that gives every call the chance
// to end, then checks that none of their call objects is left.
class EndToEndTest : public ::testing::Test {
 protected:
  void TearDown() override { shut_down(); }

  // Shuts server_ down (its grace period lets every call the test made end by itself), then the
  // runtime (which cancels what is left, drains its completion queues and joins its threads),
  // then checks that no call object outlived its call. Other servers a test starts on the
  // runtime must be shut down (or destroyed) before this runs. Idempotent; a test may call it to
  // see every call end before it asserts on what the calls did.
  void shut_down() {
    if (server_) server_->shutdown(kShutdownGrace);
    server_.reset();
    if (!runtime_) return;
    runtime_->shutdown(kShutdownGrace);
    expect_no_live_calls(*runtime_);
    runtime_.reset();
  }

  // run_bounded on the fixture's runtime.
  template <class T>
  T run(Task<T> task) {
    return run_bounded(*runtime_, std::move(task));
  }

  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<Server> server_;
};

// For a suite run once per server transport (Server::Builder::transport): the parameter, and
// names that say which ("UnaryTest/native.Echoes").
class TransportParam : public ::testing::WithParamInterface<Transport> {
 protected:
  static Transport transport() { return GetParam(); }
};

inline std::string transport_name(const ::testing::TestParamInfo<Transport>& info) {
  return info.param == Transport::native ? "native" : "grpc";
}

// The transport of the servers a suite builds that is not parameterised over it:
// TRELLIS_TEST_TRANSPORT ("grpc", the default, or "native"). The middleware suites are registered
// once with each (tests/middleware/CMakeLists.txt).
inline Transport transport_from_environment() {
  const char* name = std::getenv("TRELLIS_TEST_TRANSPORT");
  if (name == nullptr || *name == '\0') return Transport::grpc;
  Result<Transport> transport = parse_transport(name);
  if (!transport.ok()) {
    ADD_FAILURE() << "TRELLIS_TEST_TRANSPORT: " << transport.status();
    return Transport::grpc;
  }
  return *transport;
}

// Instantiates the TEST_Ps of `suite` for both transports.
#define TRELLIS_BOTH_TRANSPORTS(suite)                                             \
  INSTANTIATE_TEST_SUITE_P(                                                        \
      Transports, suite,                                                           \
      ::testing::Values(::trellis::Transport::grpc, ::trellis::Transport::native), \
      ::trellis::testing::transport_name)

}  // namespace trellis::testing
