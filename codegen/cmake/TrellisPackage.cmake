# Install rules, the CMake package (find_package(Trellis CONFIG)), trellis.pc for pkg-config and
# the Debian package (cpack -G DEB). Included by the top-level CMakeLists.txt after the targets.
#
# Installed:
#   include/trellis/...                 the public headers, config.hpp included
#   lib/libtrellis*.a                   trellis::trellis (on trellis::layer and trellis::runtime),
#                                       trellis::middleware, trellis::health, trellis::reflection
#   bin/protoc-gen-trellis              the protoc plugin, trellis::protoc-gen-trellis
#   lib/cmake/Trellis/                  TrellisConfig.cmake, its version file, the exported
#                                       targets and TrellisGenerate.cmake (trellis_generate())
#   lib/pkgconfig/trellis.pc            pkg-config: trellis (and trellis-middleware)
#
# A project that add_subdirectory()s Trellis gets none of this unless it sets TRELLIS_INSTALL.
include_guard(GLOBAL)
option(TRELLIS_INSTALL "Install Trellis (and package it with cpack)" ${PROJECT_IS_TOP_LEVEL})
if(NOT TRELLIS_INSTALL)
  return()
endif()
include(CMakePackageConfigHelpers)

set(TRELLIS_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/Trellis")
# The services' generated stubs are private archives, installed only because the static
# trellis_health and trellis_reflection link them.
set(TRELLIS_PACKAGE_TARGETS trellis_runtime trellis_layer trellis trellis_middleware
    protoc-gen-trellis trellis_health trellis_health_protos trellis_reflection
    trellis_reflection_protos)
# The native transport, where libnghttp2 was found: a static archive trellis::trellis links, so
# its consumers link nghttp2, zlib and OpenSSL too.
set(TRELLIS_NATIVE_TRANSPORT OFF)
set(TRELLIS_PC_TRANSPORT_LIBS "")
set(TRELLIS_PC_TRANSPORT_REQUIRES "")
set(TRELLIS_DEB_TRANSPORT_DEPENDS "")
if(TARGET trellis_transport)
  set(TRELLIS_NATIVE_TRANSPORT ON)
  list(APPEND TRELLIS_PACKAGE_TARGETS trellis_transport)
  set(TRELLIS_PC_TRANSPORT_LIBS " -ltrellis_transport")
  set(TRELLIS_PC_TRANSPORT_REQUIRES ", libnghttp2 >= 1.50, zlib, libssl")
  set(TRELLIS_DEB_TRANSPORT_DEPENDS ", libnghttp2-dev (>= 1.50), zlib1g-dev, libssl-dev")
endif()

install(TARGETS ${TRELLIS_PACKAGE_TARGETS}
  EXPORT TrellisTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/framework/runtime/include/
                  ${PROJECT_SOURCE_DIR}/framework/layer/include/
                  ${PROJECT_SOURCE_DIR}/framework/rpc/include/
                  ${PROJECT_SOURCE_DIR}/framework/services/include/
                  ${PROJECT_SOURCE_DIR}/middleware/include/
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/framework/runtime/include/trellis/config.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/trellis)
install(EXPORT TrellisTargets
  NAMESPACE trellis::
  DESTINATION ${TRELLIS_CMAKE_DIR})

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/TrellisConfig.cmake.in
  ${PROJECT_BINARY_DIR}/TrellisConfig.cmake
  INSTALL_DESTINATION ${TRELLIS_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/TrellisConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/TrellisConfig.cmake
  ${PROJECT_BINARY_DIR}/TrellisConfigVersion.cmake
  ${CMAKE_CURRENT_LIST_DIR}/TrellisGenerate.cmake
  DESTINATION ${TRELLIS_CMAKE_DIR})

# pkg-config files: relocatable (the prefix is found from the .pc file's own place), so that a
# prefix copied elsewhere, or a .deb unpacked anywhere, still works.
file(RELATIVE_PATH TRELLIS_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" TRELLIS_PC_TO_PREFIX "${TRELLIS_PC_TO_PREFIX}")
foreach(pc trellis trellis-middleware)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

# cpack -G DEB (from the build directory): trellis-dev_<version>_<arch>.deb, installing under
# /usr. The plugin's shared-library dependencies are computed by dpkg-shlibdeps; the -dev
# packages are what the headers and the CMake package need at a consumer's build time.
set(CPACK_PACKAGE_NAME trellis-dev)
set(CPACK_PACKAGE_VENDOR "Trellis")
set(CPACK_PACKAGE_CONTACT "Trellis developers <trellis@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "C++20 gRPC framework: coroutine services and clients, runtime and middleware")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libgrpc++-dev (>= 1.51), libprotobuf-dev, protobuf-compiler, libabsl-dev, libboost1.81-dev, prometheus-cpp-dev${TRELLIS_DEB_TRANSPORT_DEPENDS}")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "protobuf-compiler-grpc")
include(CPack)
