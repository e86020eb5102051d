// trellis::TimeoutLayer: a time limit on calls, as a gRPC deadline.
#pragma once

#include <chrono>
#include <optional>

#include "trellis/hook_layer.hpp"
#include "trellis/timer.hpp"

namespace trellis {

namespace detail {

// The time limit of one server call under a TimeoutLayer, in the layer's per-call state (no
// allocation): when it expires, the call ends DEADLINE_EXCEEDED (ServerContext::cancel_with).
// Armed, disarmed and expired on the call's worker, within the handler's lifetime.
class ServerTimeout final : public WorkerTimer {
 public:
  explicit ServerTimeout(ServerContext& ctx) : ctx_(&ctx) {}
  ~ServerTimeout() { disarm(); }

  bool expired_before() const { return expired_; }

 private:
  void expired() override;

  ServerContext* ctx_;
  bool expired_ = false;
};

// The status a timed-out server call answers.
Status deadline_exceeded_by_layer();

}  // namespace detail

// Limits how long a call may take. The same layer works on both sides:
//
//  - Client: the call's deadline becomes now + timeout when that is earlier than the deadline it
//    has (CallOptions, or one inherited from a parent handler). gRPC sends it to the server as
//    `grpc-timeout`; when it passes, the call ends DEADLINE_EXCEEDED. Put it outside a retry
//    layer to bound all attempts together, inside to bound each attempt.
//  - Server: the handler gets at most `timeout`, or less when the client's deadline is earlier.
//    When the time is up the handler is cancelled (what it awaits completes with
//    operation_aborted, ServerContext::is_cancelled() turns true) and the client gets
//    DEADLINE_EXCEEDED, not CANCELLED, for every kind of call (a stream whose handler is
//    suspended in a read or a write included). The tightened deadline is what
//    ServerContext::deadline() reports, so calls the handler makes with CallOptions::set_parent
//    inherit it.
//
// Without any layer, a server already enforces the client's own deadline: the handler is
// cancelled when it passes, and the client's call ends DEADLINE_EXCEEDED.
class TimeoutLayer : public HookLayerBase<TimeoutLayer> {
 public:
  explicit TimeoutLayer(std::chrono::nanoseconds timeout) : timeout_(timeout) {}

  // A hook layer (hook_layer.hpp): no coroutine frame of its own.
  struct State {
    std::optional<detail::ServerTimeout> timer;  // server calls it shortens
  };
  HookDecision before(Call& call, State& state) const;
  void after(Call& call, State& state, CallOutcome& outcome) const;

 private:
  std::chrono::nanoseconds timeout_;
};

static_assert(HookLayer<TimeoutLayer>);

}  // namespace trellis
