// trellis::HedgingLayer: client-side hedged requests (gRFC A6 "hedgingPolicy").
#pragma once

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <memory>
#include <variant>
#include <vector>

#include "trellis/layer.hpp"
#include "trellis/timer.hpp"

namespace trellis {

struct HedgingPolicy {
  // Attempts in all, the first included.
  int max_attempts = 2;
  // Attempt k (k >= 1) goes out k * hedging_delay after the first, unless a result came first.
  std::chrono::milliseconds hedging_delay{50};
  // Failures that do not end the call: another attempt may still succeed. Any other status ends
  // the call at once with that status.
  std::vector<StatusCode> non_fatal_codes{StatusCode::kUnavailable};
  // By default only methods declared IDEMPOTENT or NO_SIDE_EFFECTS are hedged.
  bool hedge_any_method = false;

  bool non_fatal(StatusCode code) const;
};

// Sends a unary call again after a delay when it has not answered, without waiting for the first
// attempt to fail: the first OK (or fatal) answer wins and the attempts still running are
// cancelled. If every attempt fails with a non-fatal code, the call fails with the last one's
// status. Each attempt has its own copy of the call's options and its own response, so layers
// inside this one run once per attempt. Server calls and streaming calls pass through.
//
// Hedging multiplies load on purpose: use it for idempotent reads whose tail latency matters,
// with a delay near the method's p95 latency.
//
// Like RetryLayer, a handle with this layer (when max_attempts > 1) gets a channel without
// gRPC's own retries from Channel::with_layer, so a service config's retryPolicy does not retry
// each hedged attempt again (channel.hpp).
class HedgingLayer {
 public:
  explicit HedgingLayer(HedgingPolicy policy)
      : policy_(std::make_shared<const HedgingPolicy>(std::move(policy))) {}

  template <CallService S>
  class Service {
   public:
    Service(std::shared_ptr<const HedgingPolicy> policy, S inner)
        : policy_(std::move(policy)), inner_(std::move(inner)) {}

    Task<Status> operator()(Call& call) const {
      if (!call.is_client() || call.method().kind != RpcKind::kUnary || policy_->max_attempts < 2 ||
          !(policy_->hedge_any_method || call.method().safe_to_repeat())) {
        co_return co_await inner_(call);
      }
      Race race;
      co_return co_await attempts_from(call, race, 0);
    }

   private:
    // Shared by the attempts of one call; they all run on the call's worker.
    struct Race {
      int failed = 0;        // attempts that ended with a non-fatal status
      bool decided = false;  // an attempt has put its outcome into the call
    };

    // Attempt `i` racing against the attempts after it, each hedging_delay later.
    Task<Status> attempts_from(Call& call, Race& race, int i) const {
      using namespace boost::asio::experimental::awaitable_operators;
      if (i + 1 == policy_->max_attempts) co_return co_await attempt(call, race);
      std::variant<Status, Status> first =
          co_await (attempt(call, race) || later_attempts(call, race, i + 1));
      co_return std::visit([](Status& s) { return std::move(s); }, first);
    }

    Task<Status> later_attempts(Call& call, Race& race, int i) const {
      co_await sleep_for(policy_->hedging_delay);
      co_return co_await attempts_from(call, race, i);
    }

    Task<Status> attempt(Call& call, Race& race) const {
      CallOptions options = *call.options();
      std::unique_ptr<google::protobuf::MessageLite> response(call.response()->New());
      Call one = call.new_attempt(options, response.get());
      Status status = co_await inner_(one);
      if (race.decided) co_return status;  // a loser, cancelled by the winner
      bool last = false;
      if (!status.ok() && policy_->non_fatal(status.code())) {
        last = ++race.failed == policy_->max_attempts;
        // Not an answer: let the other attempts run until one wins (which cancels this wait).
        if (!last) co_await sleep_until(std::chrono::steady_clock::time_point::max());
      }
      race.decided = true;
      call.response()->Clear();
      if (status.ok()) call.response()->CheckTypeAndMergeFrom(*response);
      call.response_metadata() = std::move(one.response_metadata());
      if (one.committed()) call.set_committed();
      co_return status;
    }

    std::shared_ptr<const HedgingPolicy> policy_;
    S inner_;
  };

  template <CallService S>
  Service<S> wrap(S inner) const {
    if (policy_->max_attempts > 1) note_layer_repeats_calls();
    return Service<S>(policy_, std::move(inner));
  }

 private:
  std::shared_ptr<const HedgingPolicy> policy_;
};

}  // namespace trellis
