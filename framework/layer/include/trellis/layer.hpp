// trellis layers: the middleware core. A service handles a Call; a layer wraps a service.
#pragma once

#include <concepts>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "trellis/call.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis {

// A call service: `co_await service(call)` handles the call and gives its final status. On the
// server the innermost service runs the handler; on the client it makes the RPC on the channel.
//
// Contract: a service object is shared by every call on every worker, so operator() is const and
// must be thread-safe (keep per-call state in the coroutine frame or in call.extensions(), shared
// state atomic or locked). The Call outlives the returned task. A service may call its inner
// service zero times (answer at once: auth, limits), once, or several times in turn (retry; on the
// client only, and only for unary calls).
template <class S>
concept CallService = std::move_constructible<S> && requires(const S& service, Call& call) {
  { service(call) } -> std::same_as<Task<Status>>;
};

// A type-erased, cheaply copyable call service (tower's BoxService). Copies share the service.
class BoxService {
 public:
  BoxService() = default;
  // The exclusion comes first: checking CallService<BoxService> would ask whether BoxService is
  // move-constructible, which considers this very constructor.
  template <class S>
  requires(!std::same_as<std::decay_t<S>, BoxService> && CallService<S>)
      BoxService(S service)  // NOLINT(google-explicit-constructor): boxing is the point
      : impl_(std::make_shared<const Model<S>>(std::move(service))) {}

  Task<Status> operator()(Call& call) const { return impl_->call(call); }
  // False for a default-constructed BoxService, which must not be called.
  explicit operator bool() const { return impl_ != nullptr; }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual Task<Status> call(Call& call) const = 0;
  };
  template <class S>
  struct Model final : Concept {
    explicit Model(S s) : service(std::move(s)) {}
    Task<Status> call(Call& call) const override { return service(call); }
    S service;
  };
  std::shared_ptr<const Concept> impl_;
};

// A layer: `layer.wrap(inner)` returns a service that does something around `inner`. Layers are
// configuration: small, copyable, and used once per stack when the server or channel is built.
template <class L>
concept Layer = std::copy_constructible<L> && requires(const L& layer, BoxService inner) {
  { layer.wrap(std::move(inner)) } -> CallService;
};

// A type-erased layer, built from any Layer. A default-constructed BoxLayer wraps nothing (the
// identity).
class BoxLayer {
 public:
  BoxLayer() = default;
  template <class L>
  requires(!std::same_as<std::decay_t<L>, BoxLayer> && Layer<L>)
      BoxLayer(L layer)  // NOLINT(google-explicit-constructor)
      : wrap_([layer = std::move(layer)](BoxService inner) -> BoxService {
          return BoxService(layer.wrap(std::move(inner)));
        }) {}

  BoxService wrap(BoxService inner) const { return wrap_ ? wrap_(std::move(inner)) : inner; }
  explicit operator bool() const { return static_cast<bool>(wrap_); }

 private:
  std::function<BoxService(BoxService)> wrap_;
};

// For a client layer that may send a call more than once (RetryLayer, HedgingLayer): its wrap()
// calls this. Channel::with_layer() then turns gRPC's own retries off for the handle it returns,
// so that a retryPolicy in the channel's service config does not multiply the layer's attempts
// (see there). Called outside with_layer() (on a server's stack), it does nothing.
void note_layer_repeats_calls() noexcept;

namespace detail {

template <class F, class S>
class FnService {
 public:
  FnService(F fn, S inner) : fn_(std::move(fn)), inner_(std::move(inner)) {}
  Task<Status> operator()(Call& call) const { return fn_(call, inner_); }

 private:
  F fn_;
  S inner_;
};

template <class F>
class FnLayer {
 public:
  explicit FnLayer(F fn) : fn_(std::move(fn)) {}
  template <CallService S>
  FnService<F, S> wrap(S inner) const {
    return FnService<F, S>(fn_, std::move(inner));
  }

 private:
  F fn_;
};

}  // namespace detail

// A layer from a coroutine (tonic's / axum's `from_fn`):
//
//   auto logging = trellis::layer_fn([](trellis::Call& call, const auto& next) ->
//   trellis::Task<trellis::Status> {
//     trellis::Status status = co_await next(call);
//     std::clog << call.method().path << " " << status.code() << "\n";
//     co_return status;
//   });
//
// `fn(call, next)` must return Task<Status>; `next` is the inner service. `fn` is shared by all
// calls (see CallService), so it must not mutate its captures without synchronisation.
template <class F>
detail::FnLayer<F> layer_fn(F fn) {
  return detail::FnLayer<F>(std::move(fn));
}

}  // namespace trellis
