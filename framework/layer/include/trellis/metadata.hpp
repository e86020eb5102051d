// trellis::Metadata: gRPC metadata (headers or trailers) as an ordered list of key/value pairs.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trellis {

// Keys are lower-case ASCII; a key ending in "-bin" carries arbitrary bytes (gRPC base64-encodes
// them on the wire, so values here are always raw). A key may appear more than once; order is
// kept. Linear lookup: gRPC metadata is small.
class Metadata {
 public:
  using Entry = std::pair<std::string, std::string>;

  Metadata() = default;
  Metadata(std::initializer_list<Entry> entries) : entries_(entries) {}

  // Appends an entry; an existing entry with the same key is kept.
  Metadata& add(std::string key, std::string value) {
    entries_.emplace_back(std::move(key), std::move(value));
    return *this;
  }

  // The first value stored under `key`, if any.
  std::optional<std::string_view> get(std::string_view key) const {
    for (const auto& [k, v] : entries_) {
      if (k == key) return std::string_view(v);
    }
    return std::nullopt;
  }

  // Every value stored under `key`, in order.
  std::vector<std::string_view> get_all(std::string_view key) const {
    std::vector<std::string_view> out;
    for (const auto& [k, v] : entries_) {
      if (k == key) out.emplace_back(v);
    }
    return out;
  }

  bool contains(std::string_view key) const { return get(key).has_value(); }
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  friend bool operator==(const Metadata&, const Metadata&) = default;

 private:
  std::vector<Entry> entries_;
};

}  // namespace trellis
