// protoc-gen-trellis: the protoc plugin that writes Trellis service bases and clients.
#pragma once

#include <google/protobuf/compiler/code_generator.h>
#include <google/protobuf/descriptor.h>

#include <cstdint>
#include <string>

namespace trellis::codegen {

// For foo/bar.proto, writes foo/bar.trellis.h and foo/bar.trellis.cc: for every service S of the
// file, a server base class SService and a client class SClient (see docs/codegen.md).
//
// Parameters (--trellis_opt=...), comma-separated:
//   skip_streaming   leave streaming methods out (only a comment marks them): the generated
//                    classes then have unary methods only.
class TrellisGenerator final : public google::protobuf::compiler::CodeGenerator {
 public:
  bool Generate(const google::protobuf::FileDescriptor* file, const std::string& parameter,
                google::protobuf::compiler::GeneratorContext* context,
                std::string* error) const override;

  uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

}  // namespace trellis::codegen
