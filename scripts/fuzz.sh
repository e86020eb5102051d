#!/usr/bin/env bash
# Fuzzes the native transport's input path (tests/fuzz/h2_server_session_fuzzer.cpp: a client's
# bytes -> HTTP/2 frames -> gRPC calls -> responses) with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (Debian's clang 14), into build/fuzz, for a bounded time. Any crash,
# leak, sanitizer report or input that runs over 10 s fails the run and leaves the input in
# build/fuzz/artifacts. scripts/test.sh runs it for 60 s; run it longer by hand.
#
#   scripts/fuzz.sh [--seconds S]   (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
if [ "${1:-}" = "--seconds" ] && [ -n "${2:-}" ]; then
  seconds=$2
elif [ $# -gt 0 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
scripts/install-deps.sh

build=build/fuzz
CC=clang-14 CXX=clang++-14 cmake -S tests/fuzz -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build"
mkdir -p "$build/corpus" "$build/artifacts"
/usr/bin/python3 tests/fuzz/make_seeds.py "$build/corpus"
echo "fuzz: h2_server_session_fuzzer for ${seconds}s, corpus $build/corpus"
"$build/h2_server_session_fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/artifacts/" "$build/corpus"
