// protoc-gen-trellis: run by protoc as --plugin=protoc-gen-trellis=<path> --trellis_out=<dir>.
#include <google/protobuf/compiler/plugin.h>

#include "generator.hpp"

int main(int argc, char* argv[]) {
  trellis::codegen::TrellisGenerator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
