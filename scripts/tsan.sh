#!/usr/bin/env bash
# Builds Trellis and its tests with ThreadSanitizer (Debian's clang 14) into build/tsan and runs
# them; any report fails the run. With --framework it builds and runs only the framework suite
# (tests/trellis_tests: runtime, calls, streams and the tests that cross workers), which is what
# scripts/test.sh runs; without, every test. Installs the Debian packages it needs first.
#
# libgrpc, libgpr, libabsl and libprotobuf come uninstrumented from Debian: their own
# synchronisation is invisible to TSan, so reports from inside them are suppressed
# (tests/tsan.supp). Races in Trellis's code and in the headers it compiles are reported.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

build=build/tsan
build_args=()
ctest_args=()
if [ "${1:-}" = "--framework" ]; then
  build_args=(--target trellis_tests)
  ctest_args=(-L framework)
fi

CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTRELLIS_TSAN=ON -DTRELLIS_WERROR=ON -DTRELLIS_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" "${build_args[@]}"
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp \
external_symbolizer_path=/usr/bin/llvm-symbolizer-14"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "${ctest_args[@]}"
