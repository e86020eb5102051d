#!/usr/bin/env bash
# Idle streams: the plain grpc++ async server (bench/baseline_stream_server.cpp) and the Trellis
# server (bench/stream_server.cpp) each hold N idle bidi streams opened by bench/idle_streams.cpp,
# in the same run, interleaved. Each server is pinned to core 0 and the client to core 1.
#
#   bench/run-idle-streams.sh [--build-dir DIR] [--streams N] [--connections C] [--repeats R]
#                             [--threads LIST] [--servers LIST]
#
#   --build-dir DIR   build directory [build/release]; configured as Release if it has none
#   --streams N       streams held [100000]
#   --connections C   client connections [100]
#   --repeats R       runs of each server and thread count [2]
#   --threads LIST    comma-separated worker (Trellis) / thread (baseline) counts [1]
#   --servers LIST    comma-separated subset of baseline,trellis,trellis-native,native
#                     [baseline,trellis]; trellis-native is the Trellis server with --transport
#                     native, native the native transport's session alone
#                     (bench/native_server.cpp, one thread only); both need libnghttp2-dev
#
# Prints one JSON line per run (idle_streams' line with "server" and "threads" added), then a
# markdown table of the medians per server and thread count.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=build/release streams=100000 connections=100 repeats=2 threads=1
servers=baseline,trellis
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2 ;;
    --streams) streams=$2 ;;
    --connections) connections=$2 ;;
    --repeats) repeats=$2 ;;
    --threads) threads=$2 ;;
    --servers) servers=$2 ;;
    *) echo "run-idle-streams.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
cd "$root"
bench_name=run-idle-streams
# shellcheck source=bench/lib.sh
. bench/lib.sh
build_bench bench_idle_streams bench_stream_server bench_baseline_stream_server >&2
if [[ ",$servers," == *,native,* ]]; then
  cmake --build "$build_dir" --target bench_native_server >&2
fi

results=$(mktemp)
server_log=$(mktemp)
trap 'stop_server || true; rm -f "$results" "$server_log"' EXIT
for ((rep = 1; rep <= repeats; rep++)); do
  for t in ${threads//,/ }; do
    for server in ${servers//,/ }; do
      case "$server" in
        baseline) binary=$bench_bin/baseline_stream_server ;;
        trellis) binary=$bench_bin/stream_server ;;
        trellis-native) binary=$bench_bin/stream_server ;;
        native) binary=$bench_bin/native_server ;;
        *) echo "run-idle-streams.sh: unknown server $server" >&2; exit 2 ;;
      esac
      extra=()
      [ "$server" = trellis-native ] && extra=(--transport native)
      start_server "$server_log" 0 "$binary" --port 0 --threads "$t" "${extra[@]}" ||
        { cat "$server_log" >&2; exit 1; }
      line=$(taskset -c 1 "$bench_bin/idle_streams" --target "127.0.0.1:$server_port" \
        --streams "$streams" --connections "$connections" --server-pid "$server_pid")
      stop_server || true
      line="{\"server\":\"$server\",\"threads\":$t,${line#\{}"
      echo "$line"
      echo "$line" >>"$results"
    done
  done
done

/usr/bin/python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r['threads'], r['server']), []).append(r)
print('\n| server | threads | runs | bytes per connection | bytes per stream | establish | probe p50 '
      '| probe p99 | closed OK |')
print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
for (threads, server), rs in sorted(groups.items()):
    med = lambda key: statistics.median(r[key] for r in rs)
    print(f"| {server} | {threads} | {len(rs)} | {med('server_bytes_per_connection'):,.0f} | "
          f"{med('server_bytes_per_stream'):,.0f} | "
          f"{med('establish_s'):.1f} s | {med('probe_p50_us'):,.0f} us | "
          f"{med('probe_p99_us'):,.0f} us | {min(r['closed_ok'] for r in rs):,} |")
EOF
