// trellis::LoadShedLayer: answers at once instead of queueing when the service is saturated.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "trellis/hook_layer.hpp"
#include "trellis/middleware/concurrency_limit.hpp"

namespace trellis {

namespace detail {
// The status a shed call ends with.
Status shed_status(StatusCode code, std::size_t max_in_flight);
}  // namespace detail

// Lets at most `max` calls at once into the wrapped service and answers every call beyond that
// immediately with `code` (RESOURCE_EXHAUSTED by default, or UNAVAILABLE, which clients and
// their retry policies treat as "try elsewhere / later"), never queueing it. The inner service
// is not called for a shed call (the handler does not run, the client sends nothing).
//
// On the server this protects the process from overload; on the client (Channel::with_layer)
// the caller gets the same answer without a network round trip. Like ConcurrencyLimitLayer, the
// permit lasts until the inner service's task ends (a server stream: the whole stream), and
// copies share one ConcurrencyLimiter. Built on an existing limiter (for example a
// ConcurrencyLimitLayer's), the layer sheds whenever that limiter has no free permit or has
// callers waiting for one.
class LoadShedLayer : public HookLayerBase<LoadShedLayer> {
 public:
  explicit LoadShedLayer(std::size_t max, StatusCode code = StatusCode::kResourceExhausted)
      : limiter_(std::make_shared<ConcurrencyLimiter>(max)), code_(code) {}
  explicit LoadShedLayer(std::shared_ptr<ConcurrencyLimiter> limiter,
                         StatusCode code = StatusCode::kResourceExhausted)
      : limiter_(std::move(limiter)), code_(code) {}

  const std::shared_ptr<ConcurrencyLimiter>& limiter() const { return limiter_; }

  // A hook layer (hook_layer.hpp): no coroutine frame of its own.
  using State = detail::HeldPermit;
  HookDecision before(Call&, State& permit) const {
    if (!limiter_->try_acquire()) {
      return HookDecision::answer(detail::shed_status(code_, limiter_->max_in_flight()));
    }
    permit.hold(limiter_.get());
    return HookDecision::proceed();
  }
  void after(Call&, State& permit, CallOutcome&) const { permit.release(); }

 private:
  std::shared_ptr<ConcurrencyLimiter> limiter_;
  StatusCode code_;
};

static_assert(HookLayer<LoadShedLayer>);

}  // namespace trellis
