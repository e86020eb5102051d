#include "trellis/service.hpp"

#include <grpcpp/impl/codegen/rpc_service_method.h>

namespace trellis {
namespace detail {

int GrpcService::add_raw_unary(const std::string& path) {
  AddMethod(new grpc::internal::RpcServiceMethod(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC,
                                                 nullptr));
  int index = method_count_++;
  MarkMethodRaw(index);
  return index;
}

}  // namespace detail

Service::Service(std::string full_name) : name_(std::move(full_name)) {}
Service::~Service() = default;

void Service::add(std::unique_ptr<detail::UnaryMethod> method) {
  // grpc keeps the name pointer: UnaryMethod owns the string and never moves it.
  grpc_service_.add_raw_unary(method->path());
  unary_methods_.push_back(std::move(method));
}

}  // namespace trellis
