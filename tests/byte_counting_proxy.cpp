#include "byte_counting_proxy.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace trellis::testing {
namespace {

sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("ByteCountingProxy: " + what + " failed");
}

// Writes all of `data`; false when the peer is gone. Blocking: the sockets are blocking, and a
// test's messages fit the loopback buffers or are drained by a live peer.
bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

ByteCountingProxy::ByteCountingProxy(int target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("socket");
  sockaddr_in addr = loopback(0);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("bind");
  if (::listen(listen_fd_, 16) != 0) fail("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    fail("getsockname");
  }
  port_ = ntohs(addr.sin_port);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) fail("eventfd");
  thread_ = std::thread([this] { run(); });
}

ByteCountingProxy::~ByteCountingProxy() {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  ::close(stop_fd_);
  ::close(listen_fd_);
}

void ByteCountingProxy::run() {
  struct Pair {
    int client;
    int server;
  };
  std::vector<Pair> pairs;
  char buffer[64 * 1024];
  for (;;) {
    std::vector<pollfd> fds = {{stop_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const Pair& p : pairs) {
      fds.push_back({p.client, POLLIN, 0});
      fds.push_back({p.server, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) continue;  // EINTR
    if (fds[0].revents != 0) break;
    // The pairs that were polled, then the connection accepted (if any): fds covers the former.
    std::vector<Pair> alive;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      const Pair& p = pairs[i];
      bool open = true;
      for (int side = 0; side < 2 && open; ++side) {
        const pollfd& pfd = fds[2 + 2 * i + side];
        if (pfd.revents == 0) continue;
        int from = side == 0 ? p.client : p.server;
        int to = side == 0 ? p.server : p.client;
        ssize_t n = ::recv(from, buffer, sizeof buffer, 0);
        if (n <= 0) {
          open = false;
          break;
        }
        // Counted before it is forwarded: once a peer has the bytes (and the test has seen its
        // call end), the count already includes them.
        (side == 0 ? to_server_ : to_client_).fetch_add(n);
        if (!write_all(to, buffer, static_cast<std::size_t>(n))) {
          open = false;
          break;
        }
      }
      if (open) {
        alive.push_back(p);
      } else {
        ::close(p.client);
        ::close(p.server);
      }
    }
    if (fds[1].revents & POLLIN) {
      int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in target = loopback(target_port_);
        if (server >= 0 &&
            ::connect(server, reinterpret_cast<sockaddr*>(&target), sizeof target) == 0) {
          alive.push_back({client, server});
        } else {
          if (server >= 0) ::close(server);
          ::close(client);
        }
      }
    }
    pairs = std::move(alive);
  }
  for (const Pair& p : pairs) {
    ::close(p.client);
    ::close(p.server);
  }
}

}  // namespace trellis::testing
