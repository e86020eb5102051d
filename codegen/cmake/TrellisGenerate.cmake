# trellis_generate(): compile .proto files into a static library of protobuf messages and Trellis
# service stubs (protoc-gen-trellis), optionally with the stock grpc++ stubs too.
#
#   trellis_generate(TARGET <name>
#                    PROTOS <file.proto>...
#                    [PROTO_ROOT <dir>]
#                    [IMPORT_DIRS <dir>...]
#                    [GRPC_STUBS]
#                    [SKIP_STREAMING])
#
#   TARGET       the STATIC library to create. It compiles the generated sources, has the output
#                directory as PUBLIC (system) include directory and links PUBLIC trellis::trellis
#                and protobuf::libprotobuf.
#   PROTOS       the .proto files to generate code for (relative paths are relative to the
#                current source directory). Imported protos are generated only if listed too;
#                the well-known types (google/protobuf/*.proto) come with libprotobuf.
#   PROTO_ROOT   the directory protos are named relative to (default: the directory of the first
#                proto). foo/bar.proto under it generates foo/bar.pb.h and foo/bar.trellis.h,
#                included as "foo/bar.trellis.h", and may import "foo/baz.proto".
#   IMPORT_DIRS  more directories to search for imports (protoc -I), after PROTO_ROOT. The
#                protobuf include directory (well-known types) is always searched last.
#   GRPC_STUBS   also run grpc_cpp_plugin (foo/bar.grpc.pb.h/.cc) and link PUBLIC gRPC::grpc++.
#   SKIP_STREAMING  leave streaming methods out of the Trellis stubs (protoc-gen-trellis option
#                skip_streaming); by default they are generated like the unary ones.
#
# Example, with the protos of Debian's grpc-proto package:
#   trellis_generate(TARGET grpc_testing_proto
#     PROTO_ROOT /usr/share/grpc-proto
#     PROTOS /usr/share/grpc-proto/grpc/testing/test.proto
#            /usr/share/grpc-proto/grpc/testing/empty.proto
#            /usr/share/grpc-proto/grpc/testing/messages.proto
#     GRPC_STUBS)
#
# Needs the targets protobuf::libprotobuf and trellis::protoc-gen-trellis (the plugin), which
# find_package(Trellis CONFIG) or add_subdirectory(<trellis>) define; the plugin may be defined
# after this file is included, as long as it exists when trellis_generate() is called.
include_guard(GLOBAL)

function(trellis_generate)
  cmake_parse_arguments(PARSE_ARGV 0 arg "GRPC_STUBS;SKIP_STREAMING" "TARGET;PROTO_ROOT"
                        "PROTOS;IMPORT_DIRS")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "trellis_generate: unexpected arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT arg_TARGET)
    message(FATAL_ERROR "trellis_generate: TARGET is required")
  endif()
  if(NOT arg_PROTOS)
    message(FATAL_ERROR "trellis_generate(${arg_TARGET}): PROTOS is required")
  endif()

  # Absolute proto paths; the root defaults to the first proto's directory.
  set(protos "")
  foreach(proto IN LISTS arg_PROTOS)
    get_filename_component(proto "${proto}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND protos "${proto}")
  endforeach()
  if(arg_PROTO_ROOT)
    get_filename_component(root "${arg_PROTO_ROOT}" ABSOLUTE BASE_DIR
                           "${CMAKE_CURRENT_SOURCE_DIR}")
  else()
    list(GET protos 0 first)
    get_filename_component(root "${first}" DIRECTORY)
  endif()

  # protoc and its search path: the root first, then the import dirs, then the well-known types
  # (the include directory of protobuf::libprotobuf). Only targets are used, not variables of
  # find_package(Protobuf), which are not visible outside the directory that called it.
  if(NOT TARGET protobuf::libprotobuf)
    message(FATAL_ERROR "trellis_generate: no target protobuf::libprotobuf: call "
                        "find_package(Trellis CONFIG REQUIRED) or add_subdirectory(<trellis>) "
                        "first")
  endif()
  if(TARGET protobuf::protoc)
    set(protoc protobuf::protoc)
  else()
    find_program(TRELLIS_PROTOC protoc)
    if(NOT TRELLIS_PROTOC)
      message(FATAL_ERROR "trellis_generate: protoc not found (Debian package protobuf-compiler)")
    endif()
    set(protoc "${TRELLIS_PROTOC}")
  endif()
  if(NOT TARGET trellis::protoc-gen-trellis)
    message(FATAL_ERROR "trellis_generate: no target trellis::protoc-gen-trellis: call "
                        "find_package(Trellis CONFIG REQUIRED) or add_subdirectory(<trellis>) "
                        "first")
  endif()
  get_target_property(well_known_types protobuf::libprotobuf INTERFACE_INCLUDE_DIRECTORIES)
  set(search_path "${root}")
  foreach(dir IN LISTS arg_IMPORT_DIRS)
    get_filename_component(dir "${dir}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND search_path "${dir}")
  endforeach()
  list(APPEND search_path ${well_known_types})
  list(REMOVE_DUPLICATES search_path)
  set(include_args "")
  foreach(dir IN LISTS search_path)
    list(APPEND include_args "-I${dir}")
  endforeach()

  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/${arg_TARGET}_generated")
  file(MAKE_DIRECTORY "${out_dir}")

  # The plugin is this project's target when Trellis is a subdirectory, an imported one when it
  # is installed; a file dependency on it reruns protoc when it changes.
  set(plugin_args
    "--plugin=protoc-gen-trellis=$<TARGET_FILE:trellis::protoc-gen-trellis>"
    "--cpp_out=${out_dir}"
    "--trellis_out=${out_dir}")
  set(plugin_deps "$<TARGET_FILE:trellis::protoc-gen-trellis>")
  if(arg_SKIP_STREAMING)
    list(APPEND plugin_args "--trellis_opt=skip_streaming")
  endif()
  if(arg_GRPC_STUBS)
    find_program(TRELLIS_GRPC_CPP_PLUGIN grpc_cpp_plugin)
    if(NOT TRELLIS_GRPC_CPP_PLUGIN)
      message(FATAL_ERROR "trellis_generate(${arg_TARGET}): GRPC_STUBS needs grpc_cpp_plugin "
                          "(Debian package protobuf-compiler-grpc)")
    endif()
    list(APPEND plugin_args
      "--plugin=protoc-gen-grpc=${TRELLIS_GRPC_CPP_PLUGIN}"
      "--grpc_out=${out_dir}")
    list(APPEND plugin_deps "${TRELLIS_GRPC_CPP_PLUGIN}")
  endif()

  set(generated "")
  foreach(proto IN LISTS protos)
    file(RELATIVE_PATH rel "${root}" "${proto}")
    if(rel MATCHES "^\\.\\./" OR IS_ABSOLUTE "${rel}")
      message(FATAL_ERROR "trellis_generate(${arg_TARGET}): ${proto} is not under the "
                          "PROTO_ROOT ${root}")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    set(outputs
      "${out_dir}/${stem}.pb.h" "${out_dir}/${stem}.pb.cc"
      "${out_dir}/${stem}.trellis.h" "${out_dir}/${stem}.trellis.cc")
    if(arg_GRPC_STUBS)
      list(APPEND outputs "${out_dir}/${stem}.grpc.pb.h" "${out_dir}/${stem}.grpc.pb.cc")
    endif()
    # One protoc run per proto; its depfile names the imports, so editing one reruns it. Ninja
    # wants the first output to be the first target of the depfile, which protoc sorts.
    list(SORT outputs)
    set(depfile "${out_dir}/${stem}.d")
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND ${CMAKE_COMMAND} -E make_directory "${out_dir}"
      COMMAND ${protoc} ${plugin_args} "--dependency_out=${depfile}" ${include_args} "${rel}"
      WORKING_DIRECTORY "${root}"
      DEPENDS "${proto}" ${plugin_deps}
      DEPFILE "${depfile}"
      COMMENT "trellis_generate(${arg_TARGET}): ${rel}"
      VERBATIM)
    list(APPEND generated ${outputs})
  endforeach()

  # Generated code is not ours: it is compiled without ${TRELLIS_WARNINGS}, and its directory is
  # a system include directory so that it raises no warnings in the code that includes it.
  add_library(${arg_TARGET} STATIC ${generated})
  target_include_directories(${arg_TARGET} SYSTEM PUBLIC "${out_dir}")
  target_compile_features(${arg_TARGET} PUBLIC cxx_std_20)
  target_link_libraries(${arg_TARGET} PUBLIC trellis::trellis protobuf::libprotobuf)
  if(arg_GRPC_STUBS)
    target_link_libraries(${arg_TARGET} PUBLIC gRPC::grpc++)
  endif()
endfunction()
