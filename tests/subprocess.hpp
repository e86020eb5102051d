// Child processes for tests against real peers (python servers and clients): start one with its
// output captured, read its lines, signal it, and wait for it to exit, every wait bounded by a
// deadline. Nothing sleeps: waits are poll() on the output pipe and on a pidfd of the child.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trellis::testing {

using Deadline = std::chrono::steady_clock::time_point;

// A deadline `timeout` from now.
inline Deadline deadline_in(std::chrono::steady_clock::duration timeout) {
  return std::chrono::steady_clock::now() + timeout;
}

// How a child process ended.
struct ExitStatus {
  bool exited = false;  // it exited by itself, with exit_code
  int exit_code = -1;
  int term_signal = 0;     // it was killed by this signal
  bool timed_out = false;  // it ran past its deadline and was killed with SIGKILL

  bool success() const { return exited && exit_code == 0; }
  // "exited with code 1", "killed by signal 9 (Killed)", ...
  std::string describe() const;
};

// A running child process whose stdout and stderr go, interleaved, into one pipe read here. Its
// stdin is a pipe too, kept open by this object: a child can treat EOF on stdin as "the parent is
// gone". Destroying the object kills (SIGKILL) and reaps a child that is still running.
// Not thread-safe: use it from one thread.
class Subprocess {
 public:
  using Env = std::vector<std::pair<std::string, std::string>>;

  // Starts `argv` (argv[0] is an absolute path; no PATH search) with the test's environment plus
  // `extra_env` (which overrides variables of the same name). The child starts with no blocked
  // signals and default dispositions for the usual termination signals. On failure returns null
  // and says why in *error.
  static std::unique_ptr<Subprocess> start(const std::vector<std::string>& argv,
                                           const Env& extra_env, std::string* error);

  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // Reads output until a line starting with `prefix` arrives and returns that line (without the
  // newline); lines before it are skipped, and a later call continues after it. Returns nullopt
  // if the output ends or `deadline` passes first.
  std::optional<std::string> wait_for_line(std::string_view prefix, Deadline deadline);

  // Sends `signo` to the child; false if it has already been reaped (or kill() failed).
  bool send_signal(int signo);

  // Closes the child's stdin.
  void close_stdin();
  // Writes `text` to the child's stdin (small writes: a pipe takes them at once); false if the
  // child's stdin is closed.
  bool write_stdin(std::string_view text);

  // Waits until the child exits and its output is read, or `deadline` passes; in that case kills
  // it with SIGKILL, reaps it and reports timed_out. Returns how it ended.
  ExitStatus wait(Deadline deadline);

  // Everything the child wrote so far (stdout and stderr interleaved).
  const std::string& output() const { return output_; }

 private:
  Subprocess(pid_t pid, int out_fd, int in_fd, int pidfd)
      : pid_(pid), out_fd_(out_fd), in_fd_(in_fd), pidfd_(pidfd) {}

  // Waits (until `deadline` at the latest) for output or for the child's exit, and takes in
  // whichever happened.
  void pump(Deadline deadline);
  // Reads what the pipe holds now, without blocking; closes it at EOF.
  void read_available();
  // Reaps the child if it has exited.
  void try_reap();
  void record(int wait_status);
  void kill_and_reap();

  pid_t pid_;
  int out_fd_;
  int in_fd_;
  int pidfd_;  // -1 if the kernel has no pidfd_open: then exits are noticed at a 10 ms tick
  bool reaped_ = false;
  ExitStatus status_;
  std::string output_;
  std::size_t line_start_ = 0;  // where wait_for_line continues
};

// What run_with_deadline saw.
struct RunResult {
  ExitStatus status;
  std::string output;
};

// Runs `argv` to completion, killing it if it runs past `deadline`. A child that cannot be started
// yields a RunResult whose output says why.
RunResult run_with_deadline(const std::vector<std::string>& argv, const Subprocess::Env& extra_env,
                            Deadline deadline);

// A server in a child process that prints "listening on port N" once it listens (the python
// reference server, Trellis's test server), started with port 0.
class ChildServer {
 public:
  // Starts `argv` and waits until it reports its port, by `deadline`; on failure, error() says
  // why.
  ChildServer(const std::vector<std::string>& argv, const Subprocess::Env& env, Deadline deadline);
  // Stops the server (a no-op once it has been stopped and reaped).
  ~ChildServer();
  ChildServer(const ChildServer&) = delete;
  ChildServer& operator=(const ChildServer&) = delete;

  int port() const { return port_; }
  const std::string& error() const { return error_; }
  Subprocess& process() { return *child_; }

  // SIGTERM, then waits (by `deadline`) for a graceful exit.
  ExitStatus stop(Deadline deadline);

 private:
  std::unique_ptr<Subprocess> child_;
  std::string error_;
  int port_ = 0;
};

}  // namespace trellis::testing
