#include "names.hpp"

#include <google/protobuf/compiler/cpp/names.h>

#include <array>
#include <string_view>

namespace google::protobuf::compiler::cpp {
// Exported by libprotoc and declared in cpp/helpers.h, which is not usable outside protobuf's
// source tree (it includes headers Debian does not ship). Appends "_" to a C++ keyword, as the C++
// generator does for message, enum and field names (and, in recent releases, package names).
std::string ResolveKeyword(const std::string& name);
}  // namespace google::protobuf::compiler::cpp

namespace trellis::codegen {

namespace pb = google::protobuf;
namespace cpp = google::protobuf::compiler::cpp;

namespace {

// Keywords that protobuf 3.21's list lacks (it predates C++20) but that cannot name a member
// function. Names of protobuf's classes must follow its exact rule; method names are ours.
constexpr std::array<std::string_view, 10> kExtraKeywords = {
    "char16_t", "char32_t", "char8_t",   "co_await",  "co_return",
    "co_yield", "concept",  "consteval", "constinit", "requires",
};

}  // namespace

std::string StripProto(const std::string& proto_file) { return cpp::StripProto(proto_file); }

std::string PbHeaderName(const pb::FileDescriptor* file) {
  return StripProto(file->name()) + ".pb.h";
}

std::string HeaderName(const pb::FileDescriptor* file) {
  return StripProto(file->name()) + ".trellis.h";
}

std::string SourceName(const pb::FileDescriptor* file) {
  return StripProto(file->name()) + ".trellis.cc";
}

std::string CppNamespace(const pb::FileDescriptor* file) {
  std::string result;
  const std::string& package = file->package();
  size_t start = 0;
  while (start < package.size()) {
    size_t end = package.find('.', start);
    if (end == std::string::npos) end = package.size();
    if (!result.empty()) result += "::";
    result += cpp::ResolveKeyword(package.substr(start, end - start));
    start = end + 1;
  }
  return result;
}

std::string CppMessageType(const pb::Descriptor* message) {
  return cpp::QualifiedClassName(message);
}

std::string CppClassName(const pb::Descriptor* message) { return cpp::ClassName(message); }

std::string CppClassName(const pb::EnumDescriptor* enum_type) { return cpp::ClassName(enum_type); }

std::string CppEnumValueName(const pb::EnumValueDescriptor* value) {
  const pb::EnumDescriptor* enum_type = value->type();
  std::string name = cpp::EnumValueName(value);
  if (enum_type->containing_type() == nullptr) return name;
  return CppClassName(enum_type) + "_" + name;
}

std::string CppMethodName(const pb::MethodDescriptor* method) {
  const std::string& name = method->name();
  for (std::string_view keyword : kExtraKeywords) {
    if (name == keyword) return name + "_";
  }
  return cpp::ResolveKeyword(name);
}

std::string ServiceClassName(const pb::ServiceDescriptor* service) {
  return service->name() + "Service";
}

std::string ClientClassName(const pb::ServiceDescriptor* service) {
  return service->name() + "Client";
}

std::string MethodPath(const pb::MethodDescriptor* method) {
  return "/" + method->service()->full_name() + "/" + method->name();
}

std::string ProtoTypeName(const pb::Descriptor* message, const pb::FileDescriptor* file) {
  const std::string& package = file->package();
  const std::string& full_name = message->full_name();
  if (package.empty()) return full_name;
  const std::string& message_package = message->file()->package();
  if (message_package == package) return full_name.substr(package.size() + 1);
  // A message without a package, seen from a package: a leading dot keeps it unambiguous.
  if (message_package.empty()) return "." + full_name;
  return full_name;
}

}  // namespace trellis::codegen
