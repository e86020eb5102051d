// trellis::RetryLayer: client-side retries with the semantics of gRFC A6.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "trellis/layer.hpp"
#include "trellis/timer.hpp"

namespace trellis {

// When and how often a failed call is sent again (gRFC A6 "retryPolicy").
struct RetryPolicy {
  // Attempts in all, the first included (A6 caps this at 5 in service configs; here it is
  // whatever you set, at least 1).
  int max_attempts = 3;
  // Before retry n (n >= 1) the layer waits a random time in [0, b), where
  // b = min(initial_backoff * backoff_multiplier^(n-1), max_backoff).
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
  double backoff_multiplier = 2.0;
  // The status codes worth retrying.
  std::vector<StatusCode> retryable_codes{StatusCode::kUnavailable};
  // By default only methods whose proto declares idempotency_level IDEMPOTENT or NO_SIDE_EFFECTS
  // are retried: a method with side effects may have taken effect before it failed. Set this to
  // retry every method the layer applies to (scope it with for_methods()).
  bool retry_any_method = false;
  // Client-streaming calls: the messages written are kept (serialized) for replay to a new
  // attempt while their total size is at most this. Once a call writes more, the copies are
  // dropped and the call is not retried any more (A6: it counts as committed). 0: client-streaming
  // calls are not retried at all.
  std::size_t max_replay_bytes = 64 * 1024;

  bool retryable(StatusCode code) const;
  // The upper bound of the random wait before retry `retry` (1 for the first retry).
  std::chrono::milliseconds backoff_bound(int retry) const;
};

// gRFC A6 retry throttling, shared by the calls of a channel (or of several): it stops retry
// storms when a server fails most calls. The budget holds tokens, starting full at max_tokens;
// every failed attempt (a retryable status or server pushback) takes one, every successful call
// gives back token_ratio; while tokens <= max_tokens / 2, calls are not retried. Thread-safe.
class RetryBudget {
 public:
  explicit RetryBudget(int max_tokens = 10, double token_ratio = 0.1);

  bool allows_retry() const;
  void record_failure();
  void record_success();
  double tokens() const;

 private:
  // Thousandths of a token, as A6 counts token_ratio to three decimal places.
  std::int64_t max_milli_;
  std::int64_t ratio_milli_;
  std::atomic<std::int64_t> milli_;
};

namespace detail {

// What the server's `grpc-retry-pushback-ms` trailer says.
struct Pushback {
  enum Kind { kNone, kDelay, kStop } kind = kNone;
  std::chrono::milliseconds delay{0};
};
Pushback read_pushback(const Metadata& trailers);

// A random duration in [0, bound).
std::chrono::milliseconds jitter(std::chrono::milliseconds bound);

// Whether a retry after `delay` could still finish before the call's deadline.
bool time_left_for(const Call& call, std::chrono::milliseconds delay);

}  // namespace detail

// Retries failed unary and client-streaming calls on the client, the gRFC A6 way:
//  - at most policy.max_attempts attempts, with exponential backoff and full jitter between them;
//  - only codes in policy.retryable_codes, and only idempotent methods unless
//    policy.retry_any_method;
//  - never once the server committed to a response (Call::committed(): it sent response headers
//    or a message);
//  - the server's `grpc-retry-pushback-ms` trailer: a non-negative value is the wait before the
//    next attempt (the backoff then starts over), anything else stops retrying;
//  - within the call's deadline (all attempts share it; a wait that would pass it ends the
//    retries with the last status);
//  - throttled by an optional RetryBudget.
// A client-streaming call is retried by replaying its messages (Call::enable_replay): the layer
// asks the stream to keep a copy of each message written, up to policy.max_replay_bytes in all,
// and a new attempt is sent them all again, with the half-close if the caller had half-closed.
// The caller does not see the failure of an attempt that will be retried: its pending write or
// read waits for the next attempt. A call that wrote more than the limit is not retried.
// Server calls, server-streaming and bidi calls pass through untouched: responses already given
// to the caller cannot be taken back, and A6 commits a call at its first response anyway. Put a
// TimeoutLayer outside this layer to bound all attempts together.
//
// gRPC's own retries (a retryPolicy in the channel's service config) would retry each of this
// layer's attempts again, multiplying them. Channel::with_layer gives a handle with this layer
// (when max_attempts > 1) a channel made without them (GRPC_ARG_ENABLE_RETRIES = 0), so this
// layer alone decides; a channel wrapped from a grpc::Channel is used as it is (channel.hpp).
class RetryLayer {
 public:
  explicit RetryLayer(RetryPolicy policy, std::shared_ptr<RetryBudget> budget = nullptr)
      : policy_(std::make_shared<const RetryPolicy>(std::move(policy))),
        budget_(std::move(budget)) {}

  template <CallService S>
  class Service {
   public:
    Service(std::shared_ptr<const RetryPolicy> policy, std::shared_ptr<RetryBudget> budget, S inner)
        : policy_(std::move(policy)), budget_(std::move(budget)), inner_(std::move(inner)) {}

    Task<Status> operator()(Call& call) const {
      if (!applies_to(call)) co_return co_await inner_(call);
      if (call.method().kind == RpcKind::kClientStreaming) {
        call.enable_replay(policy_->max_replay_bytes);
      }
      int attempts = 1;
      int backoff_step = 0;  // retries since the start, or since the last pushback
      for (;;) {
        Status status = co_await inner_(call);
        if (status.ok()) {
          if (budget_) budget_->record_success();
          co_return status;
        }
        detail::Pushback pushback = detail::read_pushback(call.response_metadata().trailing);
        bool retryable = policy_->retryable(status.code());
        if (budget_ && (retryable || pushback.kind != detail::Pushback::kNone)) {
          budget_->record_failure();
        }
        if (!retryable || call.committed() || attempts >= policy_->max_attempts ||
            pushback.kind == detail::Pushback::kStop || (budget_ && !budget_->allows_retry())) {
          co_return status;
        }
        std::chrono::milliseconds delay;
        if (pushback.kind == detail::Pushback::kDelay) {
          delay = pushback.delay;
          backoff_step = 0;
        } else {
          delay = detail::jitter(policy_->backoff_bound(++backoff_step));
        }
        if (!detail::time_left_for(call, delay)) co_return status;
        co_await sleep_for(delay);
        call.reset_response();
        ++attempts;
      }
    }

   private:
    bool applies_to(const Call& call) const {
      RpcKind kind = call.method().kind;
      bool replayable = kind == RpcKind::kUnary ||
                        (kind == RpcKind::kClientStreaming && policy_->max_replay_bytes > 0);
      return call.is_client() && replayable &&
             (policy_->retry_any_method || call.method().safe_to_repeat());
    }

    std::shared_ptr<const RetryPolicy> policy_;
    std::shared_ptr<RetryBudget> budget_;
    S inner_;
  };

  template <CallService S>
  Service<S> wrap(S inner) const {
    if (policy_->max_attempts > 1) note_layer_repeats_calls();
    return Service<S>(policy_, budget_, std::move(inner));
  }

 private:
  std::shared_ptr<const RetryPolicy> policy_;
  std::shared_ptr<RetryBudget> budget_;
};

}  // namespace trellis
