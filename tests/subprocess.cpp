#include "subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <set>

extern char** environ;

namespace trellis::testing {
namespace {

// Milliseconds left until `deadline`, rounded up, for poll(); 0 once it has passed.
int remaining_ms(Deadline deadline) {
  auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<std::chrono::milliseconds::rep>(left.count(), INT_MAX));
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

// posix_spawn's attribute and file-action objects, destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

}  // namespace

std::string ExitStatus::describe() const {
  if (timed_out) return "ran past its deadline and was killed";
  if (exited) return "exited with code " + std::to_string(exit_code);
  if (term_signal != 0) {
    return "killed by signal " + std::to_string(term_signal) + " (" + strsignal(term_signal) + ")";
  }
  return "has not ended";
}

std::unique_ptr<Subprocess> Subprocess::start(const std::vector<std::string>& argv,
                                              const Env& extra_env, std::string* error) {
  if (argv.empty()) {
    *error = "no command";
    return nullptr;
  }
  // Both pipes are close-on-exec: only the dup2'd copies reach the child, and no other child
  // started concurrently inherits them (which would keep our pipe open past this child's exit).
  int out[2];
  int in[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    *error = errno_text("pipe2", errno);
    return nullptr;
  }
  if (pipe2(in, O_CLOEXEC) != 0) {
    *error = errno_text("pipe2", errno);
    close(out[0]);
    close(out[1]);
    return nullptr;
  }

  SpawnSetup setup;
  posix_spawn_file_actions_adddup2(&setup.actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&setup.actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&setup.actions, out[1], STDERR_FILENO);
  // The spawning thread may block signals (runtimes block SIGTERM/SIGINT on their threads); the
  // child must not inherit that, or SIGTERM would never reach it.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&setup.attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD}) sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&setup.attr, &defaults);
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::set<std::string> overridden;
  for (const auto& [k, v] : extra_env) overridden.insert(k);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (overridden.count(std::string(entry.substr(0, entry.find('=')))) == 0) {
      env.emplace_back(entry);
    }
  }
  for (const auto& [k, v] : extra_env) env.push_back(k + "=" + v);

  std::vector<char*> c_argv;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (auto& e : env) c_env.push_back(e.data());
  c_env.push_back(nullptr);

  pid_t pid = -1;
  int rc =
      posix_spawn(&pid, argv[0].c_str(), &setup.actions, &setup.attr, c_argv.data(), c_env.data());
  close(out[1]);
  close(in[0]);
  if (rc != 0) {
    close(out[0]);
    close(in[1]);
    *error = errno_text(("posix_spawn " + argv[0]).c_str(), rc);
    return nullptr;
  }
  fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  return std::unique_ptr<Subprocess>(new Subprocess(pid, out[0], in[1], pidfd));
}

Subprocess::~Subprocess() {
  close_fd(in_fd_);
  if (!reaped_) kill_and_reap();
  close_fd(out_fd_);
  close_fd(pidfd_);
}

void Subprocess::read_available() {
  char buf[4096];
  while (out_fd_ >= 0) {
    ssize_t n = read(out_fd_, buf, sizeof buf);
    if (n > 0) {
      output_.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      close_fd(out_fd_);  // EOF: every writer is gone
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN && errno != EWOULDBLOCK) close_fd(out_fd_);
      return;
    }
  }
}

void Subprocess::record(int wait_status) {
  reaped_ = true;
  close_fd(pidfd_);
  if (WIFEXITED(wait_status)) {
    status_.exited = true;
    status_.exit_code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    status_.term_signal = WTERMSIG(wait_status);
  }
}

void Subprocess::try_reap() {
  if (reaped_) return;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    record(st);
  } else if (r < 0 && errno != EINTR) {
    reaped_ = true;  // ECHILD: someone else reaped it; nothing left to wait for
    close_fd(pidfd_);
  }
}

void Subprocess::kill_and_reap() {
  kill(pid_, SIGKILL);
  // SIGKILL cannot be caught or ignored, so this wait is short.
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, 0);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    record(st);
  } else {
    reaped_ = true;
    close_fd(pidfd_);
  }
}

void Subprocess::pump(Deadline deadline) {
  pollfd fds[2];
  nfds_t n = 0;
  if (out_fd_ >= 0) fds[n++] = {out_fd_, POLLIN, 0};
  const nfds_t pid_index = n;
  if (!reaped_ && pidfd_ >= 0) fds[n++] = {pidfd_, POLLIN, 0};
  int timeout = remaining_ms(deadline);
  // Without a pidfd there is nothing to block on for the exit: look at it every 10 ms.
  if (!reaped_ && pidfd_ < 0) timeout = std::min(timeout, 10);
  int rc = poll(fds, n, timeout);
  if (rc < 0) return;  // EINTR: the caller loops
  if (out_fd_ >= 0 && fds[0].revents != 0) read_available();
  if (!reaped_ && (pidfd_ < 0 || (pid_index < n && fds[pid_index].revents != 0))) try_reap();
}

std::optional<std::string> Subprocess::wait_for_line(std::string_view prefix, Deadline deadline) {
  for (;;) {
    for (std::size_t eol; (eol = output_.find('\n', line_start_)) != std::string::npos;) {
      std::string line = output_.substr(line_start_, eol - line_start_);
      line_start_ = eol + 1;
      if (line.starts_with(prefix)) return line;
    }
    if (out_fd_ < 0 || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    pump(deadline);
  }
}

bool Subprocess::send_signal(int signo) {
  try_reap();
  if (reaped_) return false;
  return kill(pid_, signo) == 0;
}

void Subprocess::close_stdin() { close_fd(in_fd_); }

bool Subprocess::write_stdin(std::string_view text) {
  while (!text.empty() && in_fd_ >= 0) {
    ssize_t n = ::write(in_fd_, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return text.empty();
}

ExitStatus Subprocess::wait(Deadline deadline) {
  while (!reaped_ || out_fd_ >= 0) {
    if (reaped_) {
      // The child is gone; what it wrote is in the pipe. A grandchild could hold the pipe open,
      // so take what is there now and stop.
      read_available();
      close_fd(out_fd_);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      kill_and_reap();
      status_.timed_out = true;
      read_available();
      close_fd(out_fd_);
      break;
    }
    pump(deadline);
  }
  return status_;
}

RunResult run_with_deadline(const std::vector<std::string>& argv, const Subprocess::Env& extra_env,
                            Deadline deadline) {
  RunResult result;
  std::string error;
  auto child = Subprocess::start(argv, extra_env, &error);
  if (!child) {
    result.output = "cannot start the child: " + error;
    return result;
  }
  child->close_stdin();
  result.status = child->wait(deadline);
  result.output = child->output();
  return result;
}

ChildServer::ChildServer(const std::vector<std::string>& argv, const Subprocess::Env& env,
                         Deadline deadline) {
  child_ = Subprocess::start(argv, env, &error_);
  if (!child_) return;
  const std::string prefix = "listening on port ";
  auto line = child_->wait_for_line(prefix, deadline);
  if (!line) {
    error_ = "the server did not report its port; its output:\n" + child_->output();
    return;
  }
  port_ = std::stoi(line->substr(prefix.size()));
}

ChildServer::~ChildServer() {
  if (child_) stop(deadline_in(std::chrono::seconds(30)));
}

ExitStatus ChildServer::stop(Deadline deadline) {
  child_->send_signal(SIGTERM);
  return child_->wait(deadline);
}

}  // namespace trellis::testing
