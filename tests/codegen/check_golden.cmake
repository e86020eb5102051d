# Runs protoc with protoc-gen-trellis on every .proto under PROTO_ROOT and compares the outputs
# byte for byte with the files under GOLDEN_DIR; on a mismatch prints a unified diff.
#
#   cmake -DPROTOC=<protoc> -DPLUGIN=<protoc-gen-trellis> -DPROTO_ROOT=<dir> -DINCLUDE_DIR=<dir>
#         -DGOLDEN_DIR=<dir> -DOUT_DIR=<dir> [-DOPTIONS=<plugin options>] [-DUPDATE=ON]
#         -P check_golden.cmake
#
# With UPDATE=ON it writes the outputs into GOLDEN_DIR instead (see update-golden.sh).
cmake_minimum_required(VERSION 3.25)

foreach(var PROTOC PLUGIN PROTO_ROOT INCLUDE_DIR GOLDEN_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "check_golden.cmake: -D${var}=... is required")
  endif()
endforeach()
if(UPDATE)
  set(OUT_DIR "${GOLDEN_DIR}")
elseif(NOT OUT_DIR)
  message(FATAL_ERROR "check_golden.cmake: -DOUT_DIR=... is required")
endif()

file(REMOVE_RECURSE "${OUT_DIR}")
file(MAKE_DIRECTORY "${OUT_DIR}")
file(GLOB_RECURSE protos RELATIVE "${PROTO_ROOT}" "${PROTO_ROOT}/*.proto")
list(SORT protos)
set(option_args "")
if(OPTIONS)
  set(option_args "--trellis_opt=${OPTIONS}")
endif()
execute_process(
  COMMAND "${PROTOC}" "--plugin=protoc-gen-trellis=${PLUGIN}" "--trellis_out=${OUT_DIR}"
          ${option_args} "-I${PROTO_ROOT}" "-I${INCLUDE_DIR}" ${protos}
  WORKING_DIRECTORY "${PROTO_ROOT}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "protoc failed (${rc}) on ${protos}:\n${out}")
endif()
if(UPDATE)
  message(STATUS "Updated ${GOLDEN_DIR}")
  return()
endif()

file(GLOB_RECURSE expected RELATIVE "${GOLDEN_DIR}" "${GOLDEN_DIR}/*")
file(GLOB_RECURSE actual RELATIVE "${OUT_DIR}" "${OUT_DIR}/*")
list(SORT expected)
list(SORT actual)
find_program(DIFF diff)
set(failures "")
foreach(file IN LISTS expected)
  if(NOT file IN_LIST actual)
    list(APPEND failures "${file}: expected but not generated")
    continue()
  endif()
  file(READ "${GOLDEN_DIR}/${file}" want)
  file(READ "${OUT_DIR}/${file}" got)
  if(NOT want STREQUAL got)
    list(APPEND failures "${file}: differs from the golden file")
    if(DIFF)
      execute_process(COMMAND "${DIFF}" -u "${GOLDEN_DIR}/${file}" "${OUT_DIR}/${file}")
    else()
      message("--- ${GOLDEN_DIR}/${file}\n${want}\n+++ ${OUT_DIR}/${file}\n${got}")
    endif()
  endif()
endforeach()
foreach(file IN LISTS actual)
  if(NOT file IN_LIST expected)
    list(APPEND failures "${file}: generated but has no golden file")
  endif()
endforeach()
if(failures)
  list(JOIN failures "\n  " report)
  message(FATAL_ERROR "Generated code differs from ${GOLDEN_DIR}:\n  ${report}\n"
                      "If the change is intended, run tests/codegen/update-golden.sh and review "
                      "the diff.")
endif()
list(LENGTH expected count)
message(STATUS "${GOLDEN_DIR}: all ${count} files match")
