// trellis::ReflectionService: grpc.reflection.v1 and v1alpha ServerReflection on the stubs
// protoc-gen-trellis generates from Debian's grpc-proto.
#include "trellis/reflection.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "grpc/reflection/v1/reflection.trellis.h"
#include "grpc/reflection/v1alpha/reflection.trellis.h"

namespace trellis {
namespace detail {

namespace {

namespace pb = ::google::protobuf;

// What a request is answered with, whichever version of the protocol carries it.
struct Answer {
  enum class Kind { kFiles, kExtensionNumbers, kServices, kError };
  Kind kind = Kind::kError;
  std::vector<std::string> files;  // serialized FileDescriptorProtos, the requested one first
  std::string base_type;           // kExtensionNumbers
  std::vector<int> numbers;        // kExtensionNumbers, ascending
  StatusCode error_code = StatusCode::kOk;
  std::string error_message;

  static Answer error(StatusCode code, std::string message) {
    Answer a;
    a.error_code = code;
    a.error_message = std::move(message);
    return a;
  }
};

}  // namespace

// What both versions of the service share: the descriptor pool and the served service names.
class ReflectionState {
 public:
  explicit ReflectionState(const pb::DescriptorPool& pool) : pool_(pool) {}

  const pb::DescriptorPool& pool() const { return pool_; }

  void set_services(const std::vector<std::string>& services) {
    std::lock_guard lock(mu_);
    services_ = services;
  }
  std::vector<std::string> services() const {
    std::lock_guard lock(mu_);
    return services_;
  }

 private:
  const pb::DescriptorPool& pool_;
  mutable std::mutex mu_;
  std::vector<std::string> services_;
};

namespace {

// The file names one stream has sent: each dependency goes out at most once per stream.
using SentFiles = std::set<std::string, std::less<>>;

// `file` and then, breadth first, every file it imports transitively that is not in *sent;
// marks all of them sent.
Answer files_answer(const pb::FileDescriptor* file, SentFiles* sent) {
  Answer answer;
  answer.kind = Answer::Kind::kFiles;
  std::deque<const pb::FileDescriptor*> queue = {file};
  bool first = true;
  while (!queue.empty()) {
    const pb::FileDescriptor* f = queue.front();
    queue.pop_front();
    bool fresh = sent->insert(f->name()).second;
    if (!fresh && !first) continue;
    first = false;
    pb::FileDescriptorProto proto;
    f->CopyTo(&proto);
    answer.files.push_back(proto.SerializeAsString());
    for (int i = 0; i < f->dependency_count(); ++i) {
      const pb::FileDescriptor* dep = f->dependency(i);
      if (dep != nullptr && !sent->contains(dep->name())) queue.push_back(dep);
    }
  }
  return answer;
}

Answer file_by_filename(const ReflectionState& state, const std::string& name, SentFiles* sent) {
  const pb::FileDescriptor* file = state.pool().FindFileByName(name);
  if (file == nullptr) return Answer::error(StatusCode::kNotFound, "file not found: " + name);
  return files_answer(file, sent);
}

Answer file_containing_symbol(const ReflectionState& state, const std::string& symbol,
                              SentFiles* sent) {
  const pb::FileDescriptor* file = state.pool().FindFileContainingSymbol(symbol);
  if (file == nullptr) return Answer::error(StatusCode::kNotFound, "symbol not found: " + symbol);
  return files_answer(file, sent);
}

Answer file_containing_extension(const ReflectionState& state, const std::string& type, int number,
                                 SentFiles* sent) {
  const pb::Descriptor* message = state.pool().FindMessageTypeByName(type);
  if (message == nullptr) {
    return Answer::error(StatusCode::kNotFound, "message type not found: " + type);
  }
  const pb::FieldDescriptor* extension = state.pool().FindExtensionByNumber(message, number);
  if (extension == nullptr) {
    return Answer::error(StatusCode::kNotFound,
                         "extension not found: " + type + " " + std::to_string(number));
  }
  return files_answer(extension->file(), sent);
}

Answer all_extension_numbers(const ReflectionState& state, const std::string& type) {
  const pb::Descriptor* message = state.pool().FindMessageTypeByName(type);
  if (message == nullptr) {
    return Answer::error(StatusCode::kNotFound, "message type not found: " + type);
  }
  std::vector<const pb::FieldDescriptor*> extensions;
  state.pool().FindAllExtensions(message, &extensions);
  Answer answer;
  answer.kind = Answer::Kind::kExtensionNumbers;
  answer.base_type = message->full_name();
  for (const pb::FieldDescriptor* e : extensions) answer.numbers.push_back(e->number());
  std::sort(answer.numbers.begin(), answer.numbers.end());
  answer.numbers.erase(std::unique(answer.numbers.begin(), answer.numbers.end()),
                       answer.numbers.end());
  return answer;
}

// One request of either version, answered into its response.
template <class Request, class Response>
void respond(const ReflectionState& state, const Request& request, SentFiles* sent,
             Response* response) {
  Answer answer;
  switch (request.message_request_case()) {
    case Request::kFileByFilename:
      answer = file_by_filename(state, request.file_by_filename(), sent);
      break;
    case Request::kFileContainingSymbol:
      answer = file_containing_symbol(state, request.file_containing_symbol(), sent);
      break;
    case Request::kFileContainingExtension:
      answer =
          file_containing_extension(state, request.file_containing_extension().containing_type(),
                                    request.file_containing_extension().extension_number(), sent);
      break;
    case Request::kAllExtensionNumbersOfType:
      answer = all_extension_numbers(state, request.all_extension_numbers_of_type());
      break;
    case Request::kListServices:
      answer.kind = Answer::Kind::kServices;
      break;
    case Request::MESSAGE_REQUEST_NOT_SET:
      answer = Answer::error(StatusCode::kUnimplemented,
                             "the request sets no message_request this server knows");
      break;
  }
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  switch (answer.kind) {
    case Answer::Kind::kFiles: {
      auto* files = response->mutable_file_descriptor_response();
      for (std::string& f : answer.files) files->add_file_descriptor_proto(std::move(f));
      break;
    }
    case Answer::Kind::kExtensionNumbers: {
      auto* numbers = response->mutable_all_extension_numbers_response();
      numbers->set_base_type_name(answer.base_type);
      for (int n : answer.numbers) numbers->add_extension_number(n);
      break;
    }
    case Answer::Kind::kServices: {
      auto* list = response->mutable_list_services_response();
      for (const std::string& name : state.services()) list->add_service()->set_name(name);
      break;
    }
    case Answer::Kind::kError: {
      auto* error = response->mutable_error_response();
      error->set_error_code(static_cast<int>(answer.error_code));
      error->set_error_message(answer.error_message);
      break;
    }
  }
}

}  // namespace

// The generated service of one version of the protocol (Base: its ServerReflectionService) on
// the shared state. Answers the requests of a stream in order, one response each, until the
// client half-closes.
template <class Base, class Request, class Response>
class ReflectionServiceImpl final : public Base {
 public:
  explicit ReflectionServiceImpl(std::shared_ptr<ReflectionState> state)
      : state_(std::move(state)) {}

  Task<Status> ServerReflectionInfo(ServerContext&, ServerReader<Request>& reader,
                                    ServerWriter<Response>& writer) override {
    SentFiles sent;
    Request request;
    while (co_await reader.read(request)) {
      Response response;
      respond(*state_, request, &sent, &response);
      if (!co_await writer.write(response)) co_return Status::cancelled("the client went away");
    }
    co_return Status();
  }

 protected:
  void on_server_start(const std::vector<std::string>& services) override {
    state_->set_services(services);
  }

 private:
  std::shared_ptr<ReflectionState> state_;
};

namespace {

namespace v1 = ::grpc::reflection::v1;
namespace v1alpha = ::grpc::reflection::v1alpha;

using V1Impl = ReflectionServiceImpl<v1::ServerReflectionService, v1::ServerReflectionRequest,
                                     v1::ServerReflectionResponse>;
using V1AlphaImpl =
    ReflectionServiceImpl<v1alpha::ServerReflectionService, v1alpha::ServerReflectionRequest,
                          v1alpha::ServerReflectionResponse>;

}  // namespace

}  // namespace detail

ReflectionService::ReflectionService()
    : ReflectionService(*google::protobuf::DescriptorPool::generated_pool()) {}

ReflectionService::ReflectionService(const google::protobuf::DescriptorPool& pool)
    : state_(std::make_shared<detail::ReflectionState>(pool)),
      v1_(std::make_unique<detail::V1Impl>(state_)),
      v1alpha_(std::make_unique<detail::V1AlphaImpl>(state_)) {}

ReflectionService::~ReflectionService() = default;

Service& ReflectionService::v1() { return *v1_; }

Service& ReflectionService::v1alpha() { return *v1alpha_; }

}  // namespace trellis
