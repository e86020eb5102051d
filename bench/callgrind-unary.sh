#!/usr/bin/env bash
# Server instructions per unary RPC, Trellis's greeter_server against bench/baseline_server, under
# valgrind's callgrind: deterministic, so it compares the two servers even on a busy machine,
# where the CPU-time figures of run-unary.sh are noise.
#
#   bench/callgrind-unary.sh [--build-dir DIR] [--calls "N1 N2"] [--servers LIST]
#
# Each server (--port 0, one worker thread) runs once per call count under callgrind (all its
# threads, user space only; kernel time is not counted) while bench/unary_calls makes exactly
# that many calls (64 outstanding over 2 connections) and exits; then it is stopped with SIGTERM.
# Instructions per RPC = (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels startup, connection setup
# and shutdown. The callgrind files are kept for callgrind_annotate.
#
# Options (environment variable in brackets):
#   --build-dir DIR   a build with TRELLIS_BUILD_BENCH=ON [BUILD_DIR, default build/release]
#   --calls "N1 N2"   the two call counts [CALLS, default "2000 10000"]
#   --servers LIST    comma-separated subset of baseline,trellis [SERVERS, default both]
#   --out DIR         where the callgrind files go [OUT_DIR, default BUILD_DIR/callgrind-<time>]
# BASELINE_ARGS and TRELLIS_ARGS add flags to the servers' command lines (e.g.
# BASELINE_ARGS="--prepost 16"). TRELLIS_SERVER replaces the Trellis server, a path in the build
# directory that takes the greeter_server flags (default examples/helloworld/greeter_server; e.g.
# TRELLIS_SERVER=bench/middleware_server TRELLIS_ARGS="--layers full" for the middleware stack).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bench_name=callgrind-unary
# Under valgrind a server takes long to start and to stop; it is never killed before it has
# written its callgrind file.
server_start_s=120 server_stop_s=600
# shellcheck source=bench/lib.sh
. bench/lib.sh

build_dir=${BUILD_DIR:-build/release}
calls=${CALLS:-"2000 10000"}
servers=${SERVERS:-baseline,trellis}
out_dir=${OUT_DIR:-}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --build-dir) build_dir=$2 ;;
    --calls) calls=$2 ;;
    --servers) servers=$2 ;;
    --out) out_dir=$2 ;;
    *) usage ;;
  esac
  shift 2
done
read -r n1 n2 <<<"$calls"
[ -n "${n1:-}" ] && [ -n "${n2:-}" ] && [ "$n2" -gt "$n1" ] || usage
out_dir=${out_dir:-$build_dir/callgrind-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out_dir"

client=$build_dir/bench/unary_calls
declare -A cmd=(
  [baseline]="$build_dir/bench/baseline_server --port 0 ${BASELINE_ARGS:-}"
  [trellis]="$build_dir/${TRELLIS_SERVER:-examples/helloworld/greeter_server} --port 0 --threads 1 --host 127.0.0.1 ${TRELLIS_ARGS:-}"
)

# Runs server $1 under callgrind for $2 calls; prints its total instruction count.
measure() {
  local name=$1 n=$2 file="$out_dir/$1-$2.callgrind" log="$out_dir/$1-$2.log"
  # shellcheck disable=SC2086
  start_server "$log" "" valgrind --tool=callgrind --callgrind-out-file="$file" ${cmd[$name]} ||
    { cat "$log" >&2; exit 1; }
  local port=$server_port
  "$client" --target "127.0.0.1:$port" --calls "$n" >>"$log"
  stop_server || true
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file"
}

printf '| server | Ir, %s calls | Ir, %s calls | Ir per RPC |\n|---|---|---|---|\n' "$n1" "$n2"
for s in ${servers//,/ }; do
  a=$(measure "$s" "$n1")
  b=$(measure "$s" "$n2")
  printf '| %s | %s | %s | %s |\n' "$s" "$a" "$b" $(((b - a) / (n2 - n1)))
done
echo "callgrind files: $out_dir" >&2
