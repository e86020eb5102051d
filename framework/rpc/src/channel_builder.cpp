#include "trellis/channel_builder.hpp"

#include <grpc/grpc.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <utility>

#include "grpc_convert.hpp"
#include "tls_credentials.hpp"

namespace trellis {

Channel::Builder::Builder(std::string target) : target_(std::move(target)) {}
Channel::Builder::~Builder() = default;
Channel::Builder::Builder(Builder&&) noexcept = default;
Channel::Builder& Channel::Builder::operator=(Builder&&) noexcept = default;

Channel::Builder& Channel::Builder::configure(std::function<void(grpc::ChannelArguments&)> fn) {
  options_.push_back(std::move(fn));
  return *this;
}

Channel::Builder& Channel::Builder::load_balancing(LoadBalancing policy) {
  return configure([policy](grpc::ChannelArguments& args) {
    args.SetLoadBalancingPolicyName(policy == LoadBalancing::kRoundRobin ? "round_robin"
                                                                         : "pick_first");
  });
}

Channel::Builder& Channel::Builder::default_compression(Compression compression) {
  return configure([compression](grpc::ChannelArguments& args) {
    args.SetCompressionAlgorithm(detail::to_grpc(compression));
  });
}

Channel::Builder& Channel::Builder::max_receive_message_size(int bytes) {
  return configure([bytes](grpc::ChannelArguments& args) { args.SetMaxReceiveMessageSize(bytes); });
}

Channel::Builder& Channel::Builder::max_send_message_size(int bytes) {
  return configure([bytes](grpc::ChannelArguments& args) { args.SetMaxSendMessageSize(bytes); });
}

Channel::Builder& Channel::Builder::keepalive(Keepalive keepalive) {
  return configure([keepalive](grpc::ChannelArguments& args) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, detail::to_grpc_ms(keepalive.time));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, detail::to_grpc_ms(keepalive.timeout));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, keepalive.permit_without_calls ? 1 : 0);
    // gRPC otherwise stops after two pings without data in between: an idle connection would be
    // watched for its first two pings only.
    if (keepalive.permit_without_calls) args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  });
}

Channel::Builder& Channel::Builder::dns_min_time_between_resolutions(
    std::chrono::milliseconds interval) {
  return configure([interval](grpc::ChannelArguments& args) {
    args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, detail::to_grpc_ms(interval));
  });
}

Channel::Builder& Channel::Builder::tls(TlsOptions options) {
  tls_ = std::move(options);
  return *this;
}

Result<Channel> Channel::Builder::build() const {
  grpc::ChannelArguments args;
  for (const auto& fn : options_) fn(args);
  if (!tls_) return Channel::create(target_, grpc::InsecureChannelCredentials(), args);
  return Channel::tls(target_, *tls_, args);
}

}  // namespace trellis
