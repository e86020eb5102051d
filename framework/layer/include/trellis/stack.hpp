// trellis::Stack and trellis::DynStack: layers composed in a declared order.
#pragma once

#include <tuple>
#include <utility>
#include <vector>

#include "trellis/layer.hpp"

namespace trellis {

// Layers composed at compile time. The first layer added is the outermost: it sees the call
// first and the final status last. Stack itself is a Layer, so a stack can be handed to
// Server::Builder::layer() or Channel::with_layer() (which box it once), or nested.
//
//   auto stack = trellis::Stack().layer(TracingLayer(...)).layer(TimeoutLayer(...));
//   // stack.wrap(s) == tracing.wrap(timeout.wrap(s))
//
// A static stack costs one coroutine frame per layer and call and no virtual calls between its
// layers; an unused one costs nothing.
template <class... Layers>
class Stack {
 public:
  Stack() = default;
  explicit Stack(std::tuple<Layers...> layers) : layers_(std::move(layers)) {}

  // A stack with `layer` added inside the existing ones.
  template <Layer L>
  Stack<Layers..., L> layer(L layer) const {
    return Stack<Layers..., L>(std::tuple_cat(layers_, std::tuple<L>(std::move(layer))));
  }

  template <CallService S>
  auto wrap(S service) const {
    return wrap_from<0>(std::move(service));
  }

 private:
  template <std::size_t I, class S>
  auto wrap_from(S service) const {
    if constexpr (I == sizeof...(Layers)) {
      return service;
    } else {
      return std::get<I>(layers_).wrap(wrap_from<I + 1>(std::move(service)));
    }
  }

  std::tuple<Layers...> layers_;
};

// Layers composed at run time, for stacks built from configuration. Same order as Stack: the
// first layer pushed is the outermost. Each layer adds one virtual call per call.
class DynStack {
 public:
  DynStack& push(BoxLayer layer) {
    layers_.push_back(std::move(layer));
    return *this;
  }
  bool empty() const { return layers_.empty(); }
  std::size_t size() const { return layers_.size(); }

  BoxService wrap(BoxService service) const {
    for (auto it = layers_.rbegin(); it != layers_.rend(); ++it)
      service = it->wrap(std::move(service));
    return service;
  }

 private:
  std::vector<BoxLayer> layers_;
};

}  // namespace trellis
