// trellis::set_grpc_server_callbacks: grpc::Server::GlobalCallbacks in a process that runs Trellis.
#pragma once

#include <grpcpp/server.h>

#include <memory>

namespace trellis {

// gRPC lets a process install one grpc::Server::GlobalCallbacks, once, before its first server
// exists (grpc::Server::SetGlobalCallbacks aborts otherwise). Trellis installs its own when the
// process starts: its PreServerStart hook is how a Trellis server registers its runtime's
// completion queues (docs/architecture.md). An application that needs global callbacks of its
// own must not call grpc::Server::SetGlobalCallbacks; it hands them to Trellis here instead, and
// Trellis forwards every hook to them (for every server in the process, Trellis or not).
// `callbacks` replaces any set before; nullptr removes them. Call it before building servers;
// thread-safe.
void set_grpc_server_callbacks(std::shared_ptr<grpc::Server::GlobalCallbacks> callbacks);

}  // namespace trellis
