#include "log.hpp"

#include <cstdio>
#include <mutex>

namespace trellis::detail {

void log(LogLevel level, std::string_view message) {
  static std::mutex mu;
  const char* tag = level == LogLevel::kInfo ? "I" : level == LogLevel::kWarning ? "W" : "E";
  std::lock_guard lock(mu);
  std::fprintf(stderr, "trellis %s %.*s\n", tag, static_cast<int>(message.size()), message.data());
}

std::string exception_text(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
  }
  return "unknown exception";
}

}  // namespace trellis::detail
