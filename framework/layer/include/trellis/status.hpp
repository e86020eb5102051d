// trellis::Status: the outcome of an RPC, in gRPC's terms.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <string_view>

namespace trellis {

// The 17 gRPC status codes, with the numeric values of the gRPC wire protocol.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// The canonical upper-case name of `code` ("DEADLINE_EXCEEDED"), or "UNKNOWN_CODE(n)" for a
// value outside the 17 codes.
std::string status_code_name(StatusCode code);

// Parses a canonical name as printed by status_code_name; returns false if `name` is not one.
bool parse_status_code(std::string_view name, StatusCode* code);

// A gRPC status: a code, a human-readable message and optional binary details (the serialized
// google.rpc.Status carried in the `grpc-status-details-bin` trailer). A default-constructed
// Status is OK: `co_return trellis::Status();`. The factories are named after the codes in
// snake_case (Status::not_found("...")); every name in this header is snake_case.
//
// Middleware moves a Status through every layer of every call, and nearly all of them are OK, so
// the strings live behind one pointer that is null when both are empty: an OK (or message-less)
// Status is a code and a null pointer, allocates nothing, moves as two words and destroys with one
// null check. Copying a Status with a message copies the strings.
//
// A moved-from Status keeps its code but has an empty message and details (the pointer moved);
// it stays valid to read, compare, assign and destroy.
class Status {
 public:
  Status() noexcept = default;
  Status(StatusCode code, std::string message, std::string details = {})
      : code_(code), rep_(make_rep(std::move(message), std::move(details))) {}

  Status(const Status& other)
      : code_(other.code_), rep_(other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) {
      // The new Rep is made before anything changes, so a failed allocation leaves *this as it was.
      rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
      code_ = other.code_;
    }
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status cancelled(std::string msg) { return {StatusCode::kCancelled, std::move(msg)}; }
  static Status unknown(std::string msg) { return {StatusCode::kUnknown, std::move(msg)}; }
  static Status invalid_argument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status deadline_exceeded(std::string msg) {
    return {StatusCode::kDeadlineExceeded, std::move(msg)};
  }
  static Status not_found(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status already_exists(std::string msg) {
    return {StatusCode::kAlreadyExists, std::move(msg)};
  }
  static Status permission_denied(std::string msg) {
    return {StatusCode::kPermissionDenied, std::move(msg)};
  }
  static Status resource_exhausted(std::string msg) {
    return {StatusCode::kResourceExhausted, std::move(msg)};
  }
  static Status failed_precondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status aborted(std::string msg) { return {StatusCode::kAborted, std::move(msg)}; }
  static Status out_of_range(std::string msg) { return {StatusCode::kOutOfRange, std::move(msg)}; }
  static Status unimplemented(std::string msg) {
    return {StatusCode::kUnimplemented, std::move(msg)};
  }
  static Status internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }
  static Status unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status data_loss(std::string msg) { return {StatusCode::kDataLoss, std::move(msg)}; }
  static Status unauthenticated(std::string msg) {
    return {StatusCode::kUnauthenticated, std::move(msg)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return rep_ ? rep_->message : empty_string(); }
  // Binary error details; empty when the peer sent none.
  const std::string& details() const { return rep_ ? rep_->details : empty_string(); }

  // "CODE: message" (or "OK").
  std::string to_string() const;

  // Equal code, message and details. A null Rep and a Rep of empty strings compare equal, though
  // the constructor never makes the latter.
  friend bool operator==(const Status& a, const Status& b) {
    if (a.code_ != b.code_) return false;
    if (a.rep_ == b.rep_) return true;  // both null: the common OK == OK
    return a.message() == b.message() && a.details() == b.details();
  }

 private:
  struct Rep {
    std::string message;
    std::string details;
  };

  static std::unique_ptr<Rep> make_rep(std::string&& message, std::string&& details) {
    if (message.empty() && details.empty()) return nullptr;
    return std::make_unique<Rep>(Rep{std::move(message), std::move(details)});
  }

  // What message() and details() refer to without a Rep. A function-local static: valid even for
  // a Status read by another translation unit's static initializers (a std::string is not a
  // constant initializer for every compiler: clang 14 with libstdc++ 12 refuses constinit).
  static const std::string& empty_string() {
    static const std::string empty;
    return empty;
  }

  StatusCode code_ = StatusCode::kOk;
  std::unique_ptr<Rep> rep_;  // null when message and details are both empty
};

std::ostream& operator<<(std::ostream& os, StatusCode code);
std::ostream& operator<<(std::ostream& os, const Status& status);

}  // namespace trellis
