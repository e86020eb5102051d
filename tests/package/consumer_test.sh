#!/usr/bin/env bash
# Builds tests/package/consumer (a proto, a server, a client, one call) against Trellis the ways
# a user can, then runs it; the call must answer "Hello consumer", and runtime_only (which links
# trellis::runtime alone) must print "sum 4950".
#
#   consumer_test.sh install      BUILD_DIR WORK_DIR   cmake --install BUILD_DIR into a prefix,
#                                                      find_package(Trellis) from it
#   consumer_test.sh subdirectory SOURCE_DIR WORK_DIR  add_subdirectory(SOURCE_DIR)
#   consumer_test.sh deb          BUILD_DIR WORK_DIR   cpack -G DEB in BUILD_DIR, check the
#                                                      package, unpack it and build with
#                                                      pkg-config (trellis.pc) and protoc
#
# CXX names the compiler (the one Trellis was built with).
set -euo pipefail
mode=$1
trellis=$(cd "$2" && pwd)
work=$3
here=$(cd "$(dirname "$0")" && pwd)
consumer=$here/consumer
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)

configure_build_run() {
  cmake -S "$consumer" -B "$work/build" -G Ninja -DCMAKE_CXX_COMPILER="${CXX:-c++}" "$@"
  cmake --build "$work/build"
  check_reply "$work/build/greeter_roundtrip"
  check_runtime_only "$work/build/runtime_only"
}

check_reply() {
  local reply
  reply=$("$1")
  echo "reply: $reply"
  [ "$reply" = "Hello consumer" ]
}

# runtime_only links trellis::runtime alone: the runtime needs no RPC code.
check_runtime_only() {
  local out
  out=$("$1")
  echo "runtime only: $out"
  [ "$out" = "sum 4950" ]
}

case $mode in
  install)
    cmake --install "$trellis" --prefix "$work/prefix"
    configure_build_run -DCMAKE_PREFIX_PATH="$work/prefix"
    ;;
  subdirectory)
    configure_build_run -DTRELLIS_SOURCE_DIR="$trellis"
    # Trellis's tests, benchmarks and examples are off when it is not the top-level project.
    if [ -e "$work/build/trellis/tests" ] || [ -e "$work/build/trellis/examples" ]; then
      echo "tests or examples were configured in a subdirectory build" >&2
      exit 1
    fi
    ;;
  deb)
    (cd "$work" && cpack --config "$trellis/CPackConfig.cmake" -G DEB -B "$work/package")
    deb=$(ls "$work"/package/trellis-dev_*.deb)
    dpkg-deb --field "$deb" Package Version Depends
    dpkg-deb --contents "$deb" > "$work/contents"
    for path in ./usr/include/trellis/server.hpp ./usr/include/trellis/config.hpp \
                ./usr/include/trellis/middleware/retry.hpp ./usr/bin/protoc-gen-trellis \
                ./usr/lib/cmake/Trellis/TrellisConfig.cmake \
                ./usr/lib/cmake/Trellis/TrellisGenerate.cmake \
                ./usr/lib/pkgconfig/trellis.pc ./usr/lib/libtrellis.a \
                ./usr/lib/libtrellis_middleware.a ./usr/lib/libtrellis_health.a \
                ./usr/lib/libtrellis_reflection.a ./usr/lib/libtrellis_layer.a \
                ./usr/lib/libtrellis_runtime.a ./usr/include/trellis/runtime.hpp \
                ./usr/include/trellis/layer.hpp ./usr/include/trellis/health.hpp; do
      grep -q " $path\$" "$work/contents" || { echo "$deb lacks $path" >&2; exit 1; }
    done
    dpkg-deb --field "$deb" Depends | grep -q "libgrpc++-dev"
    # The package unpacked under $work/root stands in for /usr: the .pc files are relocatable.
    dpkg-deb --extract "$deb" "$work/root"
    export PKG_CONFIG_PATH=$work/root/usr/lib/pkgconfig
    plugin=$(pkg-config --variable=protoc_gen_trellis trellis)
    mkdir -p "$work/gen"
    protoc --plugin=protoc-gen-trellis="$plugin" --cpp_out="$work/gen" --trellis_out="$work/gen" \
      -I"$consumer" greeter.proto
    # shellcheck disable=SC2046 # pkg-config prints flags meant to be split
    "${CXX:-c++}" -std=c++20 -I"$work/gen" -o "$work/greeter_roundtrip" "$consumer/main.cpp" \
      "$work/gen/greeter.pb.cc" "$work/gen/greeter.trellis.cc" \
      $(pkg-config --cflags --libs trellis-middleware)
    check_reply "$work/greeter_roundtrip"
    ;;
  *)
    echo "usage: $0 install|subdirectory|deb DIR WORK_DIR" >&2
    exit 2
    ;;
esac
