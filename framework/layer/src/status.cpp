#include "trellis/status.hpp"

#include <array>

#include "absl/strings/str_cat.h"

namespace trellis {
namespace {

constexpr std::array<std::string_view, 17> kNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

}  // namespace

std::string status_code_name(StatusCode code) {
  auto i = static_cast<int>(code);
  if (i >= 0 && i < static_cast<int>(kNames.size())) return std::string(kNames[i]);
  return absl::StrCat("UNKNOWN_CODE(", i, ")");
}

bool parse_status_code(std::string_view name, StatusCode* code) {
  for (std::size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) {
      *code = static_cast<StatusCode>(i);
      return true;
    }
  }
  return false;
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  return absl::StrCat(status_code_name(code_), ": ", message());
}

std::ostream& operator<<(std::ostream& os, StatusCode code) { return os << status_code_name(code); }
std::ostream& operator<<(std::ostream& os, const Status& status) {
  return os << status.to_string();
}

}  // namespace trellis
