// Readings from /proc shared by the bench programs: CPU time of a process, of this process and
// of the whole machine, the resident set of this process, and latency percentiles. Header-only
// so the bench directory still configures on its own (bench/CMakeLists.txt).
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

// CPU time (user + system, all threads) of a process, in microseconds; nullopt if unreadable.
inline std::optional<double> ProcessCpuUs(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  double utime = 0;
  double stime = 0;
  for (int i = 3; i <= 15 && (fields >> field); ++i) {  // Fields 14 and 15: utime, stime.
    if (i == 14) utime = std::strtod(field.c_str(), nullptr);
    if (i == 15) stime = std::strtod(field.c_str(), nullptr);
  }
  if (!fields) return std::nullopt;
  return (utime + stime) * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Whole-machine CPU time from /proc/stat, in microseconds: busy (user, nice, system, irq,
// softirq; all cores) and steal (taken by the hypervisor).
struct MachineCpu {
  double busy_us = 0;
  double steal_us = 0;
};

inline MachineCpu ReadMachineCpu() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  const double tick_us = 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
  return {(user + nice + system + irq + softirq) * tick_us, steal * tick_us};
}

// CPU time (user + system, all threads) of this process, in microseconds.
inline double SelfCpuUs() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto us = [](const timeval& tv) { return tv.tv_sec * 1e6 + static_cast<double>(tv.tv_usec); };
  return us(usage.ru_utime) + us(usage.ru_stime);
}

// A "Vm..." line of /proc/PID/status (VmRSS: resident now, VmHWM: peak resident), in bytes;
// 0 if unreadable. `pid` 0 means this process.
inline std::int64_t StatusBytes(const std::string& field, long pid = 0) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/status")
                            : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::strtoll(line.c_str() + field.size() + 1, nullptr, 10) * 1024;  // in kB
    }
  }
  return 0;
}

// The q-quantile (0 < q <= 1, nearest rank) of ascending nanoseconds, in microseconds.
inline double PercentileUs(const std::vector<std::int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted_ns.size())));
  std::size_t index = std::min(sorted_ns.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted_ns[index]) / 1e3;
}

}  // namespace bench
