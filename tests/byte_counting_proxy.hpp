// A loopback TCP proxy that counts the bytes it forwards each way: what a test checks when the
// behaviour is about the wire (compression). Not a gRPC peer: it only copies bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace trellis::testing {

class ByteCountingProxy {
 public:
  // Listens on 127.0.0.1 (a free port) and forwards every connection to 127.0.0.1:`target_port`.
  explicit ByteCountingProxy(int target_port);
  // Closes every connection and joins the forwarding thread.
  ~ByteCountingProxy();
  ByteCountingProxy(const ByteCountingProxy&) = delete;
  ByteCountingProxy& operator=(const ByteCountingProxy&) = delete;

  int port() const { return port_; }
  // Bytes forwarded so far from clients to the target, and back. A chunk is counted before it is
  // written on, so once a call has ended every byte it exchanged is counted.
  std::int64_t to_server() const { return to_server_.load(); }
  std::int64_t to_client() const { return to_client_.load(); }

 private:
  void run();

  int target_port_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: readable once the destructor wants the thread to end
  int port_ = 0;
  std::atomic<std::int64_t> to_server_{0};
  std::atomic<std::int64_t> to_client_{0};
  std::thread thread_;
};

}  // namespace trellis::testing
