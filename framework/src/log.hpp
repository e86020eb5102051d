// Internal: Trellis's own diagnostics, one line each on stderr.
#pragma once

#include <string_view>

namespace trellis::detail {

enum class LogLevel { kInfo, kWarning, kError };
void log(LogLevel level, std::string_view message);

}  // namespace trellis::detail
