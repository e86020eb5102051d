// trellis::for_methods / when: a layer applied to some methods only.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "trellis/layer.hpp"

namespace trellis {

namespace detail {

template <class Pred, class Layered, class Inner>
class ScopedService {
 public:
  ScopedService(Pred pred, Layered layered, Inner inner)
      : pred_(std::move(pred)), layered_(std::move(layered)), inner_(std::move(inner)) {}
  Task<Status> operator()(Call& call) const {
    return pred_(call.method()) ? layered_(call) : inner_(call);
  }

 private:
  Pred pred_;
  Layered layered_;
  Inner inner_;
};

template <class Pred, class L>
class ScopedLayer {
 public:
  ScopedLayer(Pred pred, L layer) : pred_(std::move(pred)), layer_(std::move(layer)) {}
  template <CallService S>
  auto wrap(S inner) const {
    auto layered = layer_.wrap(inner);
    return ScopedService<Pred, decltype(layered), S>(pred_, std::move(layered), std::move(inner));
  }

 private:
  Pred pred_;
  L layer_;
};

}  // namespace detail

// `layer` applies to the calls whose MethodInfo satisfies `pred` (a `bool(const MethodInfo&)`
// callable); other calls skip it. The inner service must be copyable (BoxService is). The
// predicate runs on every call. For the methods of one service there is one way, resolved when
// the stack is built: Server::Builder::add_service(service, layer) on the server, and on the
// client a channel handle with the layer (Channel::with_layer) for that service's client.
template <class Pred, Layer L>
auto when(Pred pred, L layer) {
  return detail::ScopedLayer<Pred, L>(std::move(pred), std::move(layer));
}

// `layer` applies to the listed methods only ("/package.Service/Method").
template <Layer L>
auto for_methods(std::vector<std::string> paths, L layer) {
  return when(
      [paths = std::move(paths)](const MethodInfo& m) {
        for (const auto& p : paths) {
          if (p == m.path) return true;
        }
        return false;
      },
      std::move(layer));
}

}  // namespace trellis
