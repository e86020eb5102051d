# Runs protoc with protoc-gen-trellis on one proto and passes only if protoc fails with an error
# output that contains the text EXPECT (a plain substring, not a regular expression).
#
#   cmake -DPROTOC=<protoc> -DPLUGIN=<protoc-gen-trellis> -DPROTO_ROOT=<dir> -DPROTO=<file>
#         -DOUT_DIR=<dir> -DEXPECT=<text> -P expect_failure.cmake
cmake_minimum_required(VERSION 3.25)

foreach(var PROTOC PLUGIN PROTO_ROOT PROTO OUT_DIR EXPECT)
  if(NOT ${var})
    message(FATAL_ERROR "expect_failure.cmake: -D${var}=... is required")
  endif()
endforeach()

# A ";" reaches us escaped as "\;" (add_test arguments are CMake lists).
string(REPLACE "\\;" ";" EXPECT "${EXPECT}")

file(REMOVE_RECURSE "${OUT_DIR}")
file(MAKE_DIRECTORY "${OUT_DIR}")
execute_process(
  COMMAND "${PROTOC}" "--plugin=protoc-gen-trellis=${PLUGIN}" "--trellis_out=${OUT_DIR}"
          "-I${PROTO_ROOT}" "${PROTO}"
  WORKING_DIRECTORY "${PROTO_ROOT}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "protoc accepted ${PROTO}; expected it to fail with:\n  ${EXPECT}")
endif()
string(FIND "${out}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "protoc failed on ${PROTO} as expected, but not with\n  ${EXPECT}\n"
                      "Its output:\n${out}")
endif()
message(STATUS "protoc refused ${PROTO}: ${out}")
