// trellis::RateLimitLayer: a token bucket in front of a service.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

#include "trellis/hook_layer.hpp"

namespace trellis {

// A token bucket of `burst` tokens refilled at `per_second` tokens per second, shared by every
// call on every worker. Lock-free: the state is one atomic "theoretical arrival time" (the
// generic cell rate algorithm, which admits exactly what a token bucket admits), updated with a
// compare-and-swap; taking a token reads the clock once and allocates nothing.
class RateLimiter {
 public:
  // The clock the bucket reads; replaceable for tests of the refill.
  using Clock = std::chrono::steady_clock::time_point (*)();

  // `per_second` > 0 (fractions allowed: 1.0 / 3600 is one per hour); `burst` >= 1: how many
  // tokens a full bucket holds. The bucket starts full.
  RateLimiter(double per_second, std::uint32_t burst,
              Clock clock = &std::chrono::steady_clock::now);
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Takes a token if one is there. Never blocks.
  bool try_acquire() noexcept;
  // Whole tokens in the bucket right now (a snapshot, for tests and gauges).
  std::uint32_t available() const noexcept;
  // How long until the next token arrives; zero when one is there now.
  std::chrono::nanoseconds time_to_next() const noexcept;

 private:
  std::int64_t now_ns() const noexcept;

  Clock clock_;
  std::int64_t interval_ns_;  // time per token
  std::int64_t window_ns_;    // burst * interval: how far ahead of now the arrival time may run
  std::uint32_t burst_;
  std::atomic<std::int64_t> tat_;  // the theoretical arrival time of the next call, in ns
};

namespace detail {
// The status a rate-limited call ends with.
Status rate_limited_status(const RateLimiter& limiter, StatusCode code);
}  // namespace detail

// Admits calls at a sustained `per_second` with bursts of up to `burst` (a token bucket). A call
// that finds the bucket empty is answered at once with `code` (RESOURCE_EXHAUSTED by default,
// or UNAVAILABLE), its message saying when the next token comes; it does not wait and never
// reaches the inner service. The token is taken when the call starts, whatever its outcome.
//
// On the server it bounds the request rate of the whole server (Server::Builder::layer), one
// service (add_service) or some methods (for_methods); on the client, the rate at which a channel
// handle sends. Copies of a layer share one bucket; build separate layers for separate buckets.
class RateLimitLayer : public HookLayerBase<RateLimitLayer> {
 public:
  RateLimitLayer(double per_second, std::uint32_t burst,
                 StatusCode code = StatusCode::kResourceExhausted)
      : limiter_(std::make_shared<RateLimiter>(per_second, burst)), code_(code) {}
  explicit RateLimitLayer(std::shared_ptr<RateLimiter> limiter,
                          StatusCode code = StatusCode::kResourceExhausted)
      : limiter_(std::move(limiter)), code_(code) {}

  const std::shared_ptr<RateLimiter>& limiter() const { return limiter_; }

  // A hook layer (hook_layer.hpp): no coroutine frame of its own.
  struct State {};
  HookDecision before(Call&, State&) const {
    if (!limiter_->try_acquire()) {
      return HookDecision::answer(detail::rate_limited_status(*limiter_, code_));
    }
    return HookDecision::proceed();
  }
  void after(Call&, State&, CallOutcome&) const {}

 private:
  std::shared_ptr<RateLimiter> limiter_;
  StatusCode code_;
};

static_assert(HookLayer<RateLimitLayer>);

}  // namespace trellis
