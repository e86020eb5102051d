// trellis::Extensions: typed values that middleware attaches to a call.
#pragma once

#include <any>
#include <typeindex>
#include <utility>

#include "absl/container/inlined_vector.h"

namespace trellis {

// A small map from a type to one value of that type, in the manner of http::Extensions: a layer
// stores what it knows about a call (the tracing layer, its span context) and later layers, the
// handler, or calls made from the handler look it up by type. Use a type of your own as the key
// so that layers do not collide. Not thread-safe: it belongs to one call.
class Extensions {
 public:
  // Stores `value`, replacing a value of the same type; returns the stored value.
  template <class T>
  T& insert(T value) {
    for (auto& [type, any] : entries_) {
      if (type == typeid(T)) return any.template emplace<T>(std::move(value));
    }
    auto& entry =
        entries_.emplace_back(typeid(T), std::any(std::in_place_type<T>, std::move(value)));
    return *std::any_cast<T>(&entry.second);
  }

  // The stored value of type T, or nullptr.
  template <class T>
  T* get() {
    for (auto& [type, any] : entries_) {
      if (type == typeid(T)) return std::any_cast<T>(&any);
    }
    return nullptr;
  }
  template <class T>
  const T* get() const {
    return const_cast<Extensions*>(this)->get<T>();
  }

  bool empty() const { return entries_.empty(); }

 private:
  // Calls rarely carry more than a couple (the tracing layer's span is one): no allocation for
  // those.
  absl::InlinedVector<std::pair<std::type_index, std::any>, 2> entries_;
};

}  // namespace trellis
