// Internal: Trellis's own diagnostics, one line each on stderr.
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace trellis::detail {

enum class LogLevel { kInfo, kWarning, kError };
void log(LogLevel level, std::string_view message);

// What an exception says: what() of a std::exception, else "unknown exception".
std::string exception_text(const std::exception_ptr& error);

}  // namespace trellis::detail
