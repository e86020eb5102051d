// trellis hook layers: layers written as a hook before and a hook after the inner service, which
// share one coroutine frame per call however many of them are stacked.
#pragma once

#include <concepts>
#include <cstddef>
#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "trellis/layer.hpp"

namespace trellis {

// What a hook layer's before() decides for a call.
class HookDecision {
 public:
  enum class Kind { kProceed, kAnswer, kWait };

  // Go on to the next layer (and in the end the inner service).
  static HookDecision proceed() { return HookDecision(Kind::kProceed, Status()); }
  // End the call with `status` without going further in: neither the inner layers nor the inner
  // service run, and this layer's after() does not either.
  static HookDecision answer(Status status) {
    return HookDecision(Kind::kAnswer, std::move(status));
  }
  // The layer has to wait before it can decide: the chain awaits its wait(call, state), which
  // gives nullopt to proceed or a status to answer with. Only for layers that have wait().
  static HookDecision wait() { return HookDecision(Kind::kWait, Status()); }

  Kind kind() const { return kind_; }
  Status& status() { return status_; }

 private:
  HookDecision(Kind kind, Status status) : kind_(kind), status_(std::move(status)) {}
  Kind kind_;
  Status status_;
};

// How the inner service ended, as a hook layer's after() sees it and may change it.
struct CallOutcome {
  // The final status, when `error` is null.
  Status status;
  // Set when the inner service (or a layer inside) threw. An after() hook may turn the exception
  // into a status: set `status` and reset `error`. Otherwise the exception goes on outwards.
  std::exception_ptr error;
};

// A hook layer: instead of a coroutine around the inner service, two plain functions and a
// per-call state, which costs no coroutine frame of its own. Hook layers that are adjacent in a
// stack (Stack, or a hook layer wrapping another's service) run in one frame, in the same order
// as coroutine layers would: befores outermost first, afters innermost first.
//
//   struct MyLayer : trellis::HookLayerBase<MyLayer> {
//     struct State { ... };  // default-constructible; lives for the call
//     trellis::HookDecision before(trellis::Call& call, State& state) const;
//     void after(trellis::Call& call, State& state, trellis::CallOutcome& outcome) const;
//     // Optional, for a before() that may answer HookDecision::wait():
//     trellis::Task<std::optional<trellis::Status>> wait(trellis::Call&, State&) const;
//   };
//
// after() runs for every layer whose before() proceeded (and whose wait(), if any, gave
// nullopt), whatever happened further in; it must not throw. An exception from a before() or a
// wait() leaves the run at once, without any after(): keep what must be undone in the State,
// whose destructor runs in every case. The same thread-safety contract as any service applies:
// the layer object is shared by all calls, so the hooks are const.
template <class L>
concept HookLayer = std::copy_constructible<L> && std::default_initializable<typename L::State> &&
    requires(const L& layer, Call& call, typename L::State& state, CallOutcome& outcome) {
  { layer.before(call, state) } -> std::same_as<HookDecision>;
  { layer.after(call, state, outcome) } -> std::same_as<void>;
};

namespace detail {

template <class L>
concept WaitingHookLayer = HookLayer<L> &&
    requires(const L& layer, Call& call, typename L::State& state) {
  { layer.wait(call, state) } -> std::same_as<Task<std::optional<Status>>>;
};

// The service of a run of hook layers around `Inner`, outermost first.
template <CallService Inner, HookLayer... Hooks>
class HookChain {
 public:
  HookChain(std::tuple<Hooks...> hooks, Inner inner)
      : hooks_(std::move(hooks)), inner_(std::move(inner)) {}

  Task<Status> operator()(Call& call) const {
    std::tuple<typename Hooks::State...> states;
    CallOutcome outcome;
    std::size_t entered = 0;  // the layers whose before() proceeded
    bool answered = false;
    while (entered < sizeof...(Hooks)) {
      HookDecision decision = before_from(entered, call, states, &entered);
      if (decision.kind() == HookDecision::Kind::kProceed) break;
      if (decision.kind() == HookDecision::Kind::kWait) {
        std::optional<Status> waited = co_await wait_at(entered, call, states);
        if (!waited) {
          ++entered;
          continue;
        }
        outcome.status = std::move(*waited);
      } else {
        outcome.status = std::move(decision.status());
      }
      answered = true;
      break;
    }
    if (!answered) {
      try {
        outcome.status = co_await inner_(call);
      } catch (...) {
        outcome.error = std::current_exception();
      }
    }
    after_below(entered, call, states, outcome);
    if (outcome.error) std::rethrow_exception(outcome.error);
    co_return std::move(outcome.status);
  }

  // Another hook layer outside this run: one run of one more.
  template <HookLayer Outer>
  HookChain<Inner, Outer, Hooks...> extended_by(Outer outer) && {
    return HookChain<Inner, Outer, Hooks...>(
        std::tuple_cat(std::tuple<Outer>(std::move(outer)), std::move(hooks_)), std::move(inner_));
  }

 private:
  using States = std::tuple<typename Hooks::State...>;
  static constexpr auto kIndices = std::index_sequence_for<Hooks...>();

  // Runs the befores from `first` on until one does not proceed; returns its decision and sets
  // `*stopped_at` to its index (to the count of layers if all proceeded).
  HookDecision before_from(std::size_t first, Call& call, States& states,
                           std::size_t* stopped_at) const {
    return before_from(first, call, states, stopped_at, kIndices);
  }
  template <std::size_t... I>
  HookDecision before_from(std::size_t first, Call& call, States& states, std::size_t* stopped_at,
                           std::index_sequence<I...>) const {
    HookDecision decision = HookDecision::proceed();
    std::size_t at = sizeof...(Hooks);
    auto step = [&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      if (K < first || at != sizeof...(Hooks)) return;
      HookDecision made = std::get<K>(hooks_).before(call, std::get<K>(states));
      if (made.kind() != HookDecision::Kind::kProceed) {
        decision = std::move(made);
        at = K;
      }
    };
    (step(std::integral_constant<std::size_t, I>()), ...);
    *stopped_at = at;
    return decision;
  }

  Task<std::optional<Status>> wait_at(std::size_t index, Call& call, States& states) const {
    return wait_at(index, call, states, kIndices);
  }
  template <std::size_t... I>
  Task<std::optional<Status>> wait_at(std::size_t index, Call& call, States& states,
                                      std::index_sequence<I...>) const {
    std::optional<Task<std::optional<Status>>> task;
    auto pick = [&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      using L = std::tuple_element_t<K, std::tuple<Hooks...>>;
      if constexpr (WaitingHookLayer<L>) {
        if (K == index) task.emplace(std::get<K>(hooks_).wait(call, std::get<K>(states)));
      }
    };
    (pick(std::integral_constant<std::size_t, I>()), ...);
    if (!task) return no_wait();
    return std::move(*task);
  }
  static Task<std::optional<Status>> no_wait() {
    co_return Status::internal("trellis: a hook layer asked to wait but has no wait()");
  }

  // Runs the afters of the layers below `count`, innermost first.
  void after_below(std::size_t count, Call& call, States& states, CallOutcome& outcome) const {
    after_below(count, call, states, outcome, kIndices);
  }
  template <std::size_t... I>
  void after_below(std::size_t count, Call& call, States& states, CallOutcome& outcome,
                   std::index_sequence<I...>) const {
    constexpr std::size_t n = sizeof...(Hooks);
    auto step = [&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      constexpr std::size_t index = n - 1 - K;
      if (index < count) std::get<index>(hooks_).after(call, std::get<index>(states), outcome);
    };
    (step(std::integral_constant<std::size_t, I>()), ...);
  }

  std::tuple<Hooks...> hooks_;
  Inner inner_;
};

template <class S>
struct IsHookChain : std::false_type {};
template <class Inner, class... Hooks>
struct IsHookChain<HookChain<Inner, Hooks...>> : std::true_type {};

}  // namespace detail

// Gives a hook layer its wrap(): joins the run of hook layers the inner service already is, if
// it is one, else starts a run around it.
template <class Derived>
class HookLayerBase {
 public:
  template <CallService S>
  auto wrap(S inner) const {
    const auto& self = static_cast<const Derived&>(*this);
    if constexpr (detail::IsHookChain<S>::value) {
      return std::move(inner).extended_by(self);
    } else {
      return detail::HookChain<S, Derived>(std::tuple<Derived>(self), std::move(inner));
    }
  }
};

}  // namespace trellis
