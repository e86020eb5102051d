#include "trellis/channel.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

namespace trellis {

Channel Channel::insecure(const std::string& target) {
  return insecure(target, grpc::ChannelArguments());
}

Channel Channel::insecure(const std::string& target, const grpc::ChannelArguments& args) {
  return Channel(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
}

}  // namespace trellis
