#include "trellis/channel.hpp"

#include <grpc/grpc.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "trellis/client.hpp"

namespace trellis {
namespace {

// Whether `args` turn gRPC's retries off: GRPC_ARG_ENABLE_RETRIES given once, as 0. (A key given
// twice is not read the same way by every part of gRPC: see args_without_core_retries.)
bool core_retries_off(const grpc::ChannelArguments& args) {
  grpc_channel_args c_args = args.c_channel_args();
  int found = 0;
  bool off = false;
  for (std::size_t i = 0; i < c_args.num_args; ++i) {
    const grpc_arg& arg = c_args.args[i];
    if (std::strcmp(arg.key, GRPC_ARG_ENABLE_RETRIES) == 0) {
      ++found;
      off = arg.type == GRPC_ARG_INTEGER && arg.value.integer == 0;
    }
  }
  return found == 1 && off;
}

const char* string_arg(const grpc_channel_args& c_args, const char* key) {
  for (std::size_t i = 0; i < c_args.num_args; ++i) {
    const grpc_arg& arg = c_args.args[i];
    if (arg.type == GRPC_ARG_STRING && std::strcmp(arg.key, key) == 0) return arg.value.string;
  }
  return nullptr;
}

// `args` with GRPC_ARG_ENABLE_RETRIES = 0 in place of any value they gave it. Appending the key
// is not enough: gRPC 1.51 goes on reading the first value given. grpc::ChannelArguments cannot
// remove a key, so this copies the others into new arguments, which start with grpc++'s own
// user agent: the user agent of `args` (that one, maybe with a prefix) is rebuilt on it.
grpc::ChannelArguments args_without_core_retries(const grpc::ChannelArguments& args) {
  grpc::ChannelArguments out;
  const char* own = string_arg(out.c_channel_args(), GRPC_ARG_PRIMARY_USER_AGENT_STRING);
  std::string own_agent = own != nullptr ? own : "";
  grpc_channel_args c_args = args.c_channel_args();
  for (std::size_t i = 0; i < c_args.num_args; ++i) {
    const grpc_arg& arg = c_args.args[i];
    if (std::strcmp(arg.key, GRPC_ARG_ENABLE_RETRIES) == 0) continue;
    switch (arg.type) {
      case GRPC_ARG_INTEGER:
        out.SetInt(arg.key, arg.value.integer);
        break;
      case GRPC_ARG_STRING: {
        std::string_view value = arg.value.string != nullptr ? arg.value.string : "";
        if (std::strcmp(arg.key, GRPC_ARG_PRIMARY_USER_AGENT_STRING) == 0 &&
            value.ends_with(own_agent)) {
          // SetUserAgentPrefix(p) makes it "p <own agent>".
          std::string_view prefix = value.substr(0, value.size() - own_agent.size());
          if (prefix.ends_with(' ')) prefix.remove_suffix(1);
          out.SetUserAgentPrefix(std::string(prefix));
          break;
        }
        out.SetString(arg.key, std::string(value));
        break;
      }
      case GRPC_ARG_POINTER:
        out.SetPointerWithVtable(arg.key, arg.value.pointer.p, arg.value.pointer.vtable);
        break;
    }
  }
  out.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  return out;
}

// Set while Channel::with_layer wraps its layer: where note_layer_repeats_calls() reports.
thread_local bool* tl_layer_repeats_calls = nullptr;

class RepeatsCallsProbe {
 public:
  explicit RepeatsCallsProbe(bool* found) : outer_(std::exchange(tl_layer_repeats_calls, found)) {}
  ~RepeatsCallsProbe() { tl_layer_repeats_calls = outer_; }
  RepeatsCallsProbe(const RepeatsCallsProbe&) = delete;
  RepeatsCallsProbe& operator=(const RepeatsCallsProbe&) = delete;

 private:
  bool* outer_;
};

}  // namespace

void note_layer_repeats_calls() noexcept {
  if (tl_layer_repeats_calls != nullptr) *tl_layer_repeats_calls = true;
}

// What a channel Trellis made was made with, and the same channel without gRPC's retries, made
// the first time a handle needs it. Shared by the handles made from the channel; thread-safe.
class Channel::Origin {
 public:
  Origin(std::string target, std::shared_ptr<grpc::ChannelCredentials> credentials,
         const grpc::ChannelArguments& args)
      : target_(std::move(target)), credentials_(std::move(credentials)), args_(args) {}

  std::shared_ptr<grpc::Channel> without_core_retries() const {
    std::lock_guard lock(mu_);
    if (without_core_retries_ == nullptr) {
      without_core_retries_ =
          grpc::CreateCustomChannel(target_, credentials_, args_without_core_retries(args_));
    }
    return without_core_retries_;
  }

 private:
  std::string target_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  grpc::ChannelArguments args_;
  mutable std::mutex mu_;
  mutable std::shared_ptr<grpc::Channel> without_core_retries_;  // guarded by mu_
};

Channel Channel::insecure(const std::string& target) {
  return insecure(target, grpc::ChannelArguments());
}

Channel Channel::insecure(const std::string& target, const grpc::ChannelArguments& args) {
  return create(target, grpc::InsecureChannelCredentials(), args);
}

Channel Channel::create(const std::string& target,
                        std::shared_ptr<grpc::ChannelCredentials> credentials,
                        const grpc::ChannelArguments& args) {
  Channel out(grpc::CreateCustomChannel(target, credentials, args));
  if (!core_retries_off(args)) {
    out.origin_ = std::make_shared<const Origin>(target, std::move(credentials), args);
  }
  return out;
}

Channel Channel::with_layer(BoxLayer layer) const {
  Channel out(*this);
  bool repeats_calls = false;
  {
    RepeatsCallsProbe probe(&repeats_calls);
    out.stack_ = std::make_shared<const BoxService>(
        layer.wrap(stack_ ? *stack_ : BoxService(detail::ChannelService{})));
  }
  if (repeats_calls && origin_ != nullptr) {
    out.channel_ = origin_->without_core_retries();
    out.origin_ = nullptr;  // its calls are the layers' to repeat from now on
  }
  return out;
}

}  // namespace trellis
