#include "trellis/server_context.hpp"

#include <grpcpp/server_context.h>

#include "grpc_convert.hpp"

namespace trellis {

std::chrono::system_clock::time_point ServerContext::deadline() const {
  return grpc_->deadline();
}

const Metadata& ServerContext::request_metadata() const {
  if (!request_metadata_) request_metadata_.emplace(detail::from_grpc(grpc_->client_metadata()));
  return *request_metadata_;
}

std::string ServerContext::peer() const { return grpc_->peer(); }

void ServerContext::add_initial_metadata(std::string key, std::string value) {
  grpc_->AddInitialMetadata(key, value);
}

void ServerContext::add_trailing_metadata(std::string key, std::string value) {
  grpc_->AddTrailingMetadata(key, value);
}

bool ServerContext::is_cancelled() const {
  return cancelled_ || grpc_->deadline() <= std::chrono::system_clock::now();
}

}  // namespace trellis
