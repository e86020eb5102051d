// Internal: how a Trellis server gets the runtime's completion queues.
#pragma once

namespace trellis {
class Runtime;
}

namespace trellis::detail {

// While alive, the grpc::Server that grpc::ServerBuilder::BuildAndStart starts on this thread is
// given `runtime`'s worker queues: new calls can then be requested on every worker's own queue.
// Scope it around BuildAndStart.
class RuntimeQueuesForNextServer {
 public:
  explicit RuntimeQueuesForNextServer(Runtime& runtime);
  ~RuntimeQueuesForNextServer();
  RuntimeQueuesForNextServer(const RuntimeQueuesForNextServer&) = delete;
  RuntimeQueuesForNextServer& operator=(const RuntimeQueuesForNextServer&) = delete;
};

}  // namespace trellis::detail
