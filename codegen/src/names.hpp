// C++ and file names of the things protoc-gen-trellis generates.
#pragma once

#include <google/protobuf/descriptor.h>

#include <string>

namespace trellis::codegen {

// "foo/bar.proto" -> "foo/bar" (the stem protoc's C++ generator uses for foo/bar.pb.h).
std::string StripProto(const std::string& proto_file);
// "foo/bar.proto" -> "foo/bar.pb.h", "foo/bar.trellis.h", "foo/bar.trellis.cc".
std::string PbHeaderName(const google::protobuf::FileDescriptor* file);
std::string HeaderName(const google::protobuf::FileDescriptor* file);
std::string SourceName(const google::protobuf::FileDescriptor* file);

// The C++ namespace of a file's package, without leading "::": package "a.b.c" ->
// "a::b::c"; components that are C++ keywords get protobuf's "_" suffix; "" for no package.
// (protobuf 3.21 itself does not rename package components, so its .pb.h for such a package does
// not compile; newer releases do what this does.)
std::string CppNamespace(const google::protobuf::FileDescriptor* file);

// The fully qualified C++ class of a message exactly as protoc's C++ generator names it:
// "::a::b::Outer_Inner".
std::string CppMessageType(const google::protobuf::Descriptor* message);

// The unqualified names protoc's C++ generator declares at namespace scope for a message, an
// enum and an enum value ("Outer_Inner", "Outer_Kind", "Outer_Kind_VALUE").
std::string CppClassName(const google::protobuf::Descriptor* message);
std::string CppClassName(const google::protobuf::EnumDescriptor* enum_type);
std::string CppEnumValueName(const google::protobuf::EnumValueDescriptor* value);

// The name of a method's member functions: its proto name, with "_" appended if it is a C++
// keyword (protobuf's rule, plus the C++20 keywords protobuf 3.21 does not know).
std::string CppMethodName(const google::protobuf::MethodDescriptor* method);

// The generated classes of a service: "<Service>Service" and "<Service>Client". The suffixes
// keep them apart from the class grpc_cpp_plugin generates, which is named like the service.
std::string ServiceClassName(const google::protobuf::ServiceDescriptor* service);
std::string ClientClassName(const google::protobuf::ServiceDescriptor* service);

// The gRPC method path, "/package.Service/Method" (proto names, untouched by C++ renaming).
std::string MethodPath(const google::protobuf::MethodDescriptor* method);

// A message's name as a proto file of `file`'s package would write it: relative when the
// message is in the same package ("HelloRequest", "Outer.Inner"), else fully qualified.
std::string ProtoTypeName(const google::protobuf::Descriptor* message,
                          const google::protobuf::FileDescriptor* file);

}  // namespace trellis::codegen
