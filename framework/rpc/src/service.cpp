#include "trellis/service.hpp"

#include <grpcpp/impl/rpc_service_method.h>

namespace trellis {
namespace detail {

int GrpcService::add_raw(const std::string& path, bool streaming) {
  AddMethod(new grpc::internal::RpcServiceMethod(
      path.c_str(),
      streaming ? grpc::internal::RpcMethod::BIDI_STREAMING : grpc::internal::RpcMethod::NORMAL_RPC,
      nullptr));
  int index = method_count_++;
  MarkMethodRaw(index);
  return index;
}

}  // namespace detail

Service::Service(std::string full_name) : name_(std::move(full_name)) {}
Service::~Service() = default;

void Service::on_server_start(const std::vector<std::string>&) {}
void Service::on_server_shutdown() {}

// grpc keeps the name pointer: the Method owns the string and never moves it.
void Service::add(std::unique_ptr<detail::UnaryMethod> method) {
  method->set_registration(&grpc_service_, grpc_service_.add_raw(method->path(), false));
  unary_methods_.push_back(std::move(method));
}

void Service::add(std::unique_ptr<detail::StreamMethod> method) {
  method->set_registration(&grpc_service_, grpc_service_.add_raw(method->path(), true));
  stream_methods_.push_back(std::move(method));
}

}  // namespace trellis
