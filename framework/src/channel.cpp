#include "trellis/channel.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "trellis/client.hpp"

namespace trellis {

Channel Channel::insecure(const std::string& target) {
  return insecure(target, grpc::ChannelArguments());
}

Channel Channel::insecure(const std::string& target, const grpc::ChannelArguments& args) {
  return Channel(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
}

Channel Channel::with_layer(BoxLayer layer) const {
  Channel out(*this);
  out.stack_ = std::make_shared<const BoxService>(
      layer.wrap(stack_ ? *stack_ : BoxService(detail::ChannelService{})));
  return out;
}

}  // namespace trellis
