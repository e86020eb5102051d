// trellis::Status: the outcome of an RPC, in gRPC's terms.
#pragma once

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
std::string StatusCodeName(StatusCode code);

// Parses a canonical name as printed by StatusCodeName; returns false if `name` is not one.
bool ParseStatusCode(std::string_view name, StatusCode* code);

// A gRPC status: a code, a human-readable message and optional binary details (the serialized
// google.rpc.Status carried in the `grpc-status-details-bin` trailer). A default-constructed
// Status is OK. Cheap to move; copying copies the strings.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message, std::string details = {})
      : code_(code), message_(std::move(message)), details_(std::move(details)) {}

  static Status Ok() { return Status(); }
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
  const std::string& message() const { return message_; }
  // Binary error details; empty when the peer sent none.
  const std::string& details() const { return details_; }

  // "CODE: message" (or "OK").
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string details_;
};

std::ostream& operator<<(std::ostream& os, StatusCode code);
std::ostream& operator<<(std::ostream& os, const Status& status);

}  // namespace trellis
