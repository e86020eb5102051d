#!/usr/bin/env bash
# Idle streams: the plain grpc++ async server (bench/baseline_stream_server.cpp) and the Trellis
# server (bench/stream_server.cpp) each hold N idle bidi streams opened by bench/idle_streams.cpp,
# in the same run, interleaved. Each server is pinned to core 0 and the client to core 1.
#
#   bench/run-idle-streams.sh [--build-dir DIR] [--streams N] [--connections C] [--repeats R]
#                             [--threads LIST] [--servers LIST]
#
#   --build-dir DIR   a configured build directory with the bench targets [build/release]
#   --streams N       streams held [100000]
#   --connections C   client connections [100]
#   --repeats R       runs of each server and thread count [2]
#   --threads LIST    comma-separated worker (Trellis) / thread (baseline) counts [1]
#   --servers LIST    comma-separated subset of baseline,trellis [baseline,trellis]
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
ninja -C "$build_dir" idle_streams stream_server baseline_stream_server >&2

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((rep = 1; rep <= repeats; rep++)); do
  for t in ${threads//,/ }; do
    for server in ${servers//,/ }; do
      case "$server" in
        baseline) binary=$build_dir/bench/baseline_stream_server ;;
        trellis) binary=$build_dir/bench/stream_server ;;
        *) echo "run-idle-streams.sh: unknown server $server" >&2; exit 2 ;;
      esac
      log=$(mktemp)
      taskset -c 0 "$binary" --port 0 --threads "$t" >"$log" 2>&1 &
      pid=$!
      port=
      for _ in $(seq 100); do
        port=$(grep -o 'listening on port [0-9]*' "$log" | grep -o '[0-9]*$' || true)
        [ -n "$port" ] && break
        sleep 0.1
      done
      if [ -z "$port" ]; then
        echo "run-idle-streams.sh: $server did not start:" >&2; cat "$log" >&2; exit 1
      fi
      line=$(taskset -c 1 "$build_dir/bench/idle_streams" --target "127.0.0.1:$port" \
        --streams "$streams" --connections "$connections" --server-pid "$pid")
      kill -TERM "$pid"; wait "$pid" || true
      rm -f "$log"
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
