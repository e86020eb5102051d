// trellis::Result<T>: a value of T, or the Status that explains why there is none.
#pragma once

#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

#include "trellis/status.hpp"

namespace trellis {

// Thrown by Result<T>::value() when the result holds an error.
class BadResultAccess : public std::logic_error {
 public:
  explicit BadResultAccess(const Status& status)
      : std::logic_error("Result holds no value: " + status.to_string()), status_(status) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// Holds either a T or a non-OK Status, like absl::StatusOr<T> and Rust's Result<T, Status>.
// Implicitly constructible from both, so a handler can `co_return reply;` or
// `co_return Status::not_found("...");`. Constructing it from an OK Status is a programming
// error and yields an INTERNAL status instead of a silent empty value.
template <class T>
class Result {
  static_assert(!std::is_same_v<std::decay_t<T>, Status>, "Result<Status> is meaningless");

 public:
  // An error (UNKNOWN, "no result"); exists because Asio default-constructs the result of a
  // task that ended with an exception.
  Result() : state_(std::in_place_index<1>, StatusCode::kUnknown, "no result") {}
  Result(const T& value) : state_(std::in_place_index<0>, value) {}        // NOLINT: implicit
  Result(T&& value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit
  Result(Status status)  // NOLINT: implicit by design
      : state_(std::in_place_index<1>,
               status.ok() ? Status::internal("OK status used as an error") : std::move(status)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // The error, or an OK status when a value is held.
  Status status() const { return ok() ? Status() : std::get<1>(state_); }

  T& value() & {
    check();
    return std::get<0>(state_);
  }
  const T& value() const& {
    check();
    return std::get<0>(state_);
  }
  T&& value() && {
    check();
    return std::get<0>(std::move(state_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void check() const {
    if (!ok()) throw BadResultAccess(std::get<1>(state_));
  }
  std::variant<T, Status> state_;
};

}  // namespace trellis
