// gRPC delivers a new call only on a completion queue registered with the server before it
// starts, and grpc::ServerBuilder registers only the queues it made for the server it builds
// (AddCompletionQueue). Trellis's queues belong to the runtime, one per worker, and serve every
// server built on it: a worker waits on exactly one queue, and gRPC has no way to wait on
// several (a queue per server per worker would need polling, or a thread hop per accepted call).
//
// grpc++'s public hook between "the grpc::Server exists" and "it starts" is
// grpc::Server::GlobalCallbacks::PreServerStart. Trellis installs its GlobalCallbacks when the
// process starts (they must precede every grpc::Server, and can be set only once); when a Trellis
// server is being built on the calling thread, PreServerStart registers its runtime's queues with
// grpc_server_register_completion_queue, the core API for exactly this ("must be performed prior
// to grpc_server_start"). For every other server the hooks do nothing but forward to the
// application's callbacks (set_grpc_server_callbacks).
#include "server_queues.hpp"

#include <grpc/grpc.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <memory>
#include <mutex>

#include "runtime_core.hpp"
#include "trellis/grpc_server_callbacks.hpp"
#include "trellis/runtime.hpp"

namespace trellis {
namespace {

// The runtime whose server BuildAndStart is building on this thread, if any.
thread_local Runtime* tl_building_for = nullptr;

class TrellisServerCallbacks final : public grpc::Server::GlobalCallbacks {
 public:
  void set_user(std::shared_ptr<grpc::Server::GlobalCallbacks> user) {
    std::lock_guard lock(mu_);
    user_ = std::move(user);
  }

  void UpdateArguments(grpc::ChannelArguments* args) override {
    if (auto u = user()) u->UpdateArguments(args);
  }
  void PreSynchronousRequest(grpc::ServerContext* context) override {
    if (auto u = user()) u->PreSynchronousRequest(context);
  }
  void PostSynchronousRequest(grpc::ServerContext* context) override {
    if (auto u = user()) u->PostSynchronousRequest(context);
  }
  void PreServerStart(grpc::Server* server) override {
    if (Runtime* runtime = tl_building_for) {
      for (std::size_t i = 0; i < runtime->worker_count(); ++i) {
        grpc_server_register_completion_queue(
            server->c_server(), detail::RuntimeAccess::core(*runtime).workers[i]->cq()->cq(),
            nullptr);
      }
    }
    if (auto u = user()) u->PreServerStart(server);
  }
  void AddPort(grpc::Server* server, const std::string& addr, grpc::ServerCredentials* creds,
               int port) override {
    if (auto u = user()) u->AddPort(server, addr, creds, port);
  }

 private:
  std::shared_ptr<grpc::Server::GlobalCallbacks> user() {
    std::lock_guard lock(mu_);
    return user_;
  }

  std::mutex mu_;
  std::shared_ptr<grpc::Server::GlobalCallbacks> user_;
};

TrellisServerCallbacks* install() {
  // gRPC keeps the object for the life of the process.
  auto* callbacks = new TrellisServerCallbacks();
  grpc::Server::SetGlobalCallbacks(callbacks);
  return callbacks;
}

// Installed while the process starts, before any code can build a server: SetGlobalCallbacks
// must come before the first grpc::Server of the process.
TrellisServerCallbacks* const g_callbacks = install();

}  // namespace

void set_grpc_server_callbacks(std::shared_ptr<grpc::Server::GlobalCallbacks> callbacks) {
  g_callbacks->set_user(std::move(callbacks));
}

namespace detail {

RuntimeQueuesForNextServer::RuntimeQueuesForNextServer(Runtime& runtime) {
  tl_building_for = &runtime;
}

RuntimeQueuesForNextServer::~RuntimeQueuesForNextServer() { tl_building_for = nullptr; }

}  // namespace detail
}  // namespace trellis
