#!/usr/bin/env bash
# Middleware overhead benchmark (issue 4): what the stock middleware stack costs a unary call, on
# the server and on the client, measured by bench/run-unary.sh in one interleaved run of four
# configurations (server pinned to core 0, load generator to core 1, noisy runs redone):
#
#   trellis        bench/middleware_server --layers none, load from unary_load (grpc++)
#   trellis+stack  bench/middleware_server --layers full (tracing with a no-op exporter, metrics,
#                  timeout 30 s, concurrency limit 100000), load from unary_load
#   client         bench/middleware_server --layers none, load from bench/middleware_client
#                  --layers none (the Trellis client)
#   client+stack   the same server, load from middleware_client --layers full (tracing, metrics,
#                  timeout, retry with a budget, concurrency limit)
#
# The tables give the ratios trellis+stack / trellis (server cost: rps, latency, server CPU per
# RPC) and client+stack / client (client cost: rps, latency, load generator CPU per RPC).
#
#   bench/run-middleware.sh [--build-dir DIR] [run-unary.sh options ...]
#
# --build-dir DIR (BUILD_DIR, default build/release) is configured (Release) if it has no build
# files, and the bench_middleware target is built in it. Every other option goes to
# bench/run-unary.sh (see its header), after the ones this script sets, so it can override them:
# e.g. --repeats 5, or --servers baseline,trellis,trellis+stack,client,client+stack to add the
# plain grpc++ server (the trellis / baseline ratio is printed when it is measured).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=${BUILD_DIR:-build/release}
if [ "${1:-}" = --build-dir ]; then
  [ $# -ge 2 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
  build_dir=$2
  shift 2
fi
if [ ! -f "$build_dir/build.ninja" ] && [ ! -f "$build_dir/Makefile" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build_dir" --target bench_middleware

bin=$build_dir/bench
TRELLIS_SERVER=$bin/middleware_server TRELLIS_ARGS="" exec bench/run-unary.sh \
  --build-dir "$build_dir" \
  --servers trellis,trellis+stack,client,client+stack \
  --server-args "trellis=--layers none" \
  --server-args "trellis+stack=--layers full" \
  --server-args "client=--layers none" \
  --server-args "client+stack=--layers none" \
  --load-cmd "client=$bin/middleware_client --layers none" \
  --load-cmd "client+stack=$bin/middleware_client --layers full" \
  --ratios "trellis+stack/trellis,client+stack/client,trellis/baseline" \
  --out "${OUT_DIR:-$build_dir/bench-results/middleware-$(date +%Y%m%d-%H%M%S)}" \
  "$@"
