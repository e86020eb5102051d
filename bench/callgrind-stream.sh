#!/usr/bin/env bash
# Server instructions per streamed message, Trellis's bench/stream_server against
# bench/baseline_stream_server, under valgrind's callgrind: deterministic enough to compare the
# two servers (and framework changes) even on a busy machine, where the CPU-time figures of
# run-stream.sh are noise.
#
#   bench/callgrind-stream.sh [--build-dir DIR] [--messages "N1 N2"] [--servers LIST]
#                             [--workloads LIST]
#
# For each workload and server, the server (--port 0, one worker thread) runs once per message
# count under callgrind (all its threads, user space only) while bench/stream_load drives one
# stream of the workload (see run-stream.sh) until it has received that many responses, then
# cancels the stream and exits; once the server is idle, it is stopped with SIGTERM. The server
# may write some messages more than the client counted (those in flight when it cancels), so the
# count of messages is the server's own: its calls to grpc_call_start_batch (one per write, one
# per read), read from the callgrind file. Instructions per message = (Ir(N2) - Ir(N1)) /
# (batches(N2) - batches(N1)) x batches per message (server-stream: 1, a write; bidi: 2, a read
# and its echo), which cancels startup, connection setup and shutdown. The callgrind files are
# kept for callgrind_annotate.
#
# Options (environment variable in brackets):
#   --build-dir DIR     a build with the bench targets [BUILD_DIR, default build/release]
#   --messages "N1 N2"  the two message counts [MESSAGES, default "5000 25000"]
#   --servers LIST      comma-separated subset of baseline,trellis [SERVERS, default both]
#   --workloads LIST    comma-separated subset of server-stream,bidi [WORKLOADS, default both]
#   --out DIR           where the callgrind files go
#                       [OUT_DIR, default BUILD_DIR/callgrind-stream-<time>]
# BASELINE_ARGS and TRELLIS_ARGS add flags to the servers' command lines.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bench_name=callgrind-stream
# Under valgrind a server takes long to start and to stop; it is never killed before it has
# written its callgrind file.
server_start_s=120 server_stop_s=600
# shellcheck source=bench/lib.sh
. bench/lib.sh

build_dir=${BUILD_DIR:-build/release}
messages=${MESSAGES:-"5000 25000"}
servers=${SERVERS:-baseline,trellis}
workloads=${WORKLOADS:-server-stream,bidi}
out_dir=${OUT_DIR:-}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --build-dir) build_dir=$2 ;;
    --messages) messages=$2 ;;
    --servers) servers=$2 ;;
    --workloads) workloads=$2 ;;
    --out) out_dir=$2 ;;
    *) usage ;;
  esac
  shift 2
done
read -r n1 n2 <<<"$messages"
[ -n "${n1:-}" ] && [ -n "${n2:-}" ] && [ "$n2" -gt "$n1" ] || usage
out_dir=${out_dir:-$build_dir/callgrind-stream-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out_dir"

client=$build_dir/bench/stream_load
declare -A cmd=(
  [baseline]="$build_dir/bench/baseline_stream_server --port 0 --threads 1 ${BASELINE_ARGS:-}"
  [trellis]="$build_dir/bench/stream_server --port 0 --threads 1 ${TRELLIS_ARGS:-}"
)

# Prints "IR BATCHES" of a callgrind file: its total instruction count and the number of calls
# to grpc_call_start_batch.
count() {
  python3 - "$1" <<'EOF'
import re, sys
names = {}  # compressed function ids -> names
total = 0
batches = 0
target = False
for line in open(sys.argv[1]):
    if line.startswith(("fn=", "cfn=", "cfi=", "cfl=")):
        if line.startswith("cfn="):
            m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "")
            else:
                name = line[4:].strip()
            target = name == "grpc_call_start_batch"
        elif line.startswith("fn="):
            m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
    elif line.startswith("calls=") and target:
        batches += int(line[6:].split()[0])
    elif line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
print(total, batches)
EOF
}

# Waits until process $1 has used no CPU for half a second: under callgrind the server is far
# slower than the client, and still works through the stream's backlog and its cancellation
# after the client has gone. Stopping it only then gives every run the same, clean shutdown.
wait_idle() {
  local prev="" cur
  for _ in $(seq 1200); do
    cur=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}') || return 0
    [ -n "$cur" ] || return 0
    [ "$cur" = "$prev" ] && return 0
    prev=$cur
    sleep 0.5
  done
}

# Runs server $1 under callgrind for workload $2 until the client has $3 messages; prints
# "IR BATCHES".
measure() {
  local name=$1 workload=$2 n=$3
  local file="$out_dir/$workload-$name-$n.callgrind" log="$out_dir/$workload-$name-$n.log"
  # shellcheck disable=SC2086
  start_server "$log" "" valgrind --tool=callgrind --callgrind-out-file="$file" ${cmd[$name]} ||
    { cat "$log" >&2; exit 1; }
  local pid=$server_pid port=$server_port
  "$client" --target "127.0.0.1:$port" --workload "$workload" --messages "$n" \
    --warmup-s 0 --duration-s 3600 >>"$log"
  wait_idle "$pid"
  stop_server || true
  count "$file"
}

printf '| workload | server | Ir, %s msgs | batches | Ir, %s msgs | batches | Ir per message |\n' \
  "$n1" "$n2"
printf '|---|---|---|---|---|---|---|\n'
for w in ${workloads//,/ }; do
  per=1
  [ "$w" = bidi ] && per=2
  for s in ${servers//,/ }; do
    read -r a ab < <(measure "$s" "$w" "$n1")
    read -r b bb < <(measure "$s" "$w" "$n2")
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$w" "$s" "$a" "$ab" "$b" "$bb" \
      "$(((b - a) * per / (bb - ab)))"
  done
done
echo "callgrind files: $out_dir" >&2
