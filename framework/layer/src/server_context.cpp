#include "trellis/server_context.hpp"

#include <grpcpp/server_context.h>

#include <algorithm>
#include <stdexcept>

#include "grpc_convert.hpp"
#include "trellis/call_options.hpp"

namespace trellis {

namespace {

using Clock = std::chrono::system_clock;

Clock::time_point from_ticks(std::int64_t ticks) {
  return Clock::time_point(Clock::duration(ticks));
}

}  // namespace

std::chrono::system_clock::time_point ServerContext::deadline() const {
  auto transport_deadline = grpc_ != nullptr ? grpc_->deadline() : native_->deadline;
  return std::min(transport_deadline, from_ticks(local_deadline_.load(std::memory_order_relaxed)));
}

void ServerContext::set_deadline(std::chrono::system_clock::time_point deadline) {
  // The handler's thread is the only writer: a load and a store suffice.
  if (deadline < from_ticks(local_deadline_.load(std::memory_order_relaxed))) {
    local_deadline_.store(deadline.time_since_epoch().count(), std::memory_order_relaxed);
  }
}

const Metadata& ServerContext::request_metadata() const {
  if (native_ != nullptr) return native_->request_metadata;
  if (!request_metadata_) {
    request_metadata_ = std::make_unique<Metadata>(detail::from_grpc(grpc_->client_metadata()));
  }
  return *request_metadata_;
}

std::optional<std::string_view> ServerContext::request_metadata_value(std::string_view key) const {
  if (native_ != nullptr) return native_->request_metadata.get(key);
  const auto& received = grpc_->client_metadata();
  auto it = received.find(grpc::string_ref(key.data(), key.size()));
  if (it == received.end()) return std::nullopt;
  return std::string_view(it->second.data(), it->second.size());
}

std::vector<std::string_view> ServerContext::request_metadata_values(std::string_view key) const {
  if (native_ != nullptr) return native_->request_metadata.get_all(key);
  std::vector<std::string_view> out;
  auto [first, last] =
      grpc_->client_metadata().equal_range(grpc::string_ref(key.data(), key.size()));
  for (auto it = first; it != last; ++it) out.emplace_back(it->second.data(), it->second.size());
  return out;
}

std::string ServerContext::peer() const {
  return grpc_ != nullptr ? grpc_->peer() : std::string(native_->peer);
}

void ServerContext::add_initial_metadata(std::string key, std::string value) {
  if (native_ != nullptr) {
    native_->initial_metadata.add(std::move(key), std::move(value));
  } else {
    grpc_->AddInitialMetadata(key, value);
  }
}

void ServerContext::add_trailing_metadata(std::string key, std::string value) {
  if (native_ != nullptr) {
    native_->trailing_metadata.add(std::move(key), std::move(value));
  } else {
    grpc_->AddTrailingMetadata(key, value);
  }
}

void ServerContext::set_compression(Compression compression) {
  if (native_ != nullptr) {
    native_->compression = compression;
  } else {
    grpc_->set_compression_algorithm(detail::to_grpc(compression));
  }
}

grpc::ServerContext& ServerContext::grpc_context() {
  if (grpc_ == nullptr) {
    throw std::logic_error(
        "trellis::ServerContext::grpc_context: the call came through the native transport, "
        "which has no grpc::ServerContext");
  }
  return *grpc_;
}

bool ServerContext::is_cancelled() const {
  return cancelled_.load(std::memory_order_acquire) || deadline() <= Clock::now();
}

void ServerContext::cancel_with(Status status) {
  if (status.ok()) status = Status::cancelled("the call was cancelled by the server");
  call_->cancel_with(std::move(status));
}

boost::asio::cancellation_signal& detail::ServerContextAccess::signal(ServerContext& ctx) {
  return ctx.cancel_;
}

void detail::ServerContextAccess::mark_cancelled(ServerContext& ctx) {
  ctx.cancelled_.store(true, std::memory_order_release);
}

std::optional<std::chrono::system_clock::time_point> CallOptions::effective_deadline() const {
  if (parent_ == nullptr) return deadline_;
  auto inherited = parent_->deadline();
  if (inherited == std::chrono::system_clock::time_point::max()) return deadline_;
  if (!deadline_ || inherited < *deadline_) return inherited;
  return deadline_;
}

}  // namespace trellis
