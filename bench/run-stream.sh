#!/usr/bin/env bash
# Streaming benchmark: messages/s over one stream, Trellis (bench/stream_server.cpp) against a
# plain grpc++ async completion-queue server (bench/baseline_stream_server.cpp), in the same run
# on the same machine, with the same client (bench/stream_load.cpp, plain grpc++ async API).
#
#   bench/run-stream.sh [options]
#
# Workloads (both on trellis.bench.StreamBench, bench/stream.proto; small messages):
#   server-stream  one ServerStream call asking for responses without end; the server writes them
#                  one write in flight at a time, as fast as flow control allows; the client
#                  counts the responses it reads.
#   bidi           one Echo call: the client keeps up to --window requests unanswered (one Write
#                  in flight), the server reads one, writes its echo, awaits that write, reads
#                  the next; the client counts the echoes it reads.
# For every repetition, every workload and every server (interleaved: baseline, trellis,
# baseline, trellis, ...): start the server pinned to core 0 (--port 0; the port is read from its
# "listening on port N" line), run the load generator pinned to core 1 (warmup, then the
# measured window, then it cancels the stream), stop the server with SIGTERM. The load generator
# reads the server's CPU time (utime + stime of all its threads, /proc/PID/stat) at both edges
# of the window, which gives the server CPU microseconds per message, and the whole machine's CPU
# time (/proc/stat), which tells whether something else ran during the window: such a run is
# discarded and redone. Prints markdown tables of the medians and the trellis/baseline ratios.
#
# Options (environment variable in brackets):
#   --build-dir DIR      build directory [BUILD_DIR, default build/release]; configured with
#                        cmake -G Ninja -DCMAKE_BUILD_TYPE=Release if it has no build files yet.
#                        If the top-level project does not configure or build, the bench
#                        directory is configured on its own in DIR/bench-standalone (baseline
#                        only, unless TRELLIS_SERVER is given).
#                        [CMAKE_ARGS] adds configure arguments (word-split; when set, the
#                        build dir is (re)configured with them)
#   --repeats R          repetitions of each server and workload [REPEATS, default 3]
#   --workloads LIST     comma-separated subset of server-stream,bidi [WORKLOADS, default both]
#   --threads T          server worker threads, passed as --threads T [SERVER_THREADS, default 1]
#   --duration-s S       measured window [DURATION_S, default 10]
#   --warmup-s W         warmup before the window [WARMUP_S, default 2]
#   --payload N          bytes of payload per message, both directions [PAYLOAD, default 16]
#   --window W           bidi: requests unanswered at most [WINDOW, default 64]
#   --streams K          streams (calls) on the one connection [STREAMS, default 1]
#   --servers LIST       comma-separated subset of baseline,trellis [SERVERS, default both]
#   --server-cpus LIST   taskset CPU list for the server [SERVER_CPUS, default 0]
#   --load-cpus LIST     taskset CPU list for the load generator [LOAD_CPUS, default 1]
#   --max-other-cpu X    a run is redone if other processes used more than X cores during its
#                        window [MAX_OTHER_CPU, default 0.10]
#   --quiet-s N          before each run, wait until the machine has been idle (busy < X cores)
#                        for N consecutive seconds [QUIET_S, default 5] ...
#   --quiet-timeout-s N  ... but wait at most N s [QUIET_TIMEOUT_S, default 600]
#   --attempts N         attempts per run before giving up on it [ATTEMPTS, default 6]
#   --out DIR            where results.jsonl, server logs and table.md go
#                        [OUT_DIR, default BUILD_DIR/bench-results/stream-<timestamp>]
#   --report FILE        only print the tables for an earlier results.jsonl (or several
#                        concatenated), building and measuring nothing
# Also: TRELLIS_SERVER=path overrides the Trellis binary (default BUILD_DIR/bench/stream_server);
# BASELINE_ARGS adds flags to baseline_stream_server; TRELLIS_ARGS adds flags to the Trellis
# server.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=${BUILD_DIR:-build/release}
repeats=${REPEATS:-3}
workloads=${WORKLOADS:-server-stream,bidi}
threads=${SERVER_THREADS:-1}
duration_s=${DURATION_S:-10}
warmup_s=${WARMUP_S:-2}
payload=${PAYLOAD:-16}
window=${WINDOW:-64}
streams=${STREAMS:-1}
servers=${SERVERS:-baseline,trellis}
server_cpus=${SERVER_CPUS:-0}
load_cpus=${LOAD_CPUS:-1}
max_other_cpu=${MAX_OTHER_CPU:-0.10}
quiet_s=${QUIET_S:-5}
quiet_timeout_s=${QUIET_TIMEOUT_S:-600}
max_attempts=${ATTEMPTS:-6}
out_dir=${OUT_DIR:-}
report_only=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --build-dir) build_dir=$2 ;;
    --repeats) repeats=$2 ;;
    --workloads) workloads=$2 ;;
    --threads) threads=$2 ;;
    --duration-s) duration_s=$2 ;;
    --warmup-s) warmup_s=$2 ;;
    --payload) payload=$2 ;;
    --window) window=$2 ;;
    --streams) streams=$2 ;;
    --servers) servers=$2 ;;
    --server-cpus) server_cpus=$2 ;;
    --load-cpus) load_cpus=$2 ;;
    --max-other-cpu) max_other_cpu=$2 ;;
    --quiet-s) quiet_s=$2 ;;
    --quiet-timeout-s) quiet_timeout_s=$2 ;;
    --attempts) max_attempts=$2 ;;
    --out) out_dir=$2 ;;
    --report) report_only=$2 ;;
    *) usage ;;
  esac
  shift 2
done

bench_name=run-stream
# shellcheck source=bench/lib.sh
. bench/lib.sh

# report RESULTS_JSONL TRELLIS_NOTE: per workload, the markdown tables (medians, ratios,
# individual runs).
report() {
  python3 - "$1" "$2" <<'EOF'
import json, statistics, sys

results_path, trellis_note = sys.argv[1], sys.argv[2]
runs = [json.loads(line) for line in open(results_path) if line.strip()]
workloads = []
for r in runs:
    if r["workload"] not in workloads:
        workloads.append(r["workload"])

cols = [("msgs_per_s", "msgs/s", "{:.0f}"),
        ("server_cpu_us_per_msg", "server CPU (us/msg)", "{:.2f}"),
        ("server_cpu_util", "server CPU (cores)", "{:.2f}"),
        ("client_cpu_util", "load gen CPU (cores)", "{:.2f}"),
        ("rtt_p50_us", "RTT p50 (us)", "{:.0f}"),
        ("rtt_p99_us", "RTT p99 (us)", "{:.0f}")]

def med(rs, key):
    return statistics.median(r[key] for r in rs)

for workload in workloads:
    wruns = [r for r in runs if r["workload"] == workload]
    wcols = cols if workload == "bidi" else cols[:4]
    kept = {}
    for r in wruns:
        if not r["discarded"]:
            kept.setdefault(r["server"], []).append(r)
    print(f"**{workload}**")
    print()
    print("| server | runs | " + " | ".join(c[1] for c in wcols) + " | errors |")
    print("|---|---|" + "---|" * len(wcols) + "---|")
    medians = {}
    for name in ("baseline", "trellis"):
        rs = kept.get(name)
        if not rs:
            if name == "trellis":
                print("| **Trellis: not measured** (" + (trellis_note or "no valid run") + ") | 0 |"
                      + " — |" * len(wcols) + " — |")
            continue
        medians[name] = {c[0]: med(rs, c[0]) for c in wcols}
        print(f"| {name} | {len(rs)} | "
              + " | ".join(c[2].format(medians[name][c[0]]) for c in wcols)
              + f" | {sum(r['errors'] for r in rs)} |")
    if "baseline" in medians and "trellis" in medians:
        b, t = medians["baseline"], medians["trellis"]
        print("| **trellis / baseline** (ratio of medians) | | " + " | ".join(
            "{:.2f}x".format(t[c[0]] / b[c[0]]) if b[c[0]] else "—" for c in wcols) + " | |")
        # Runs are interleaved, so each repetition's pair ran under the same conditions: the
        # median of the per-repetition ratios is less sensitive to drift of the machine.
        last = {}
        for r in wruns:
            if not r["discarded"]:
                last[(r["server"], r["rep"])] = r
        reps = sorted({rep for (name, rep) in last if ("baseline", rep) in last
                       and ("trellis", rep) in last})
        if reps:
            def paired(key):
                ratios = [last[("trellis", rep)][key] / last[("baseline", rep)][key]
                          for rep in reps if last[("baseline", rep)][key]]
                return "{:.2f}x".format(statistics.median(ratios)) if ratios else "—"
            print(f"| **trellis / baseline** (median of per-repetition ratios) | {len(reps)} pairs | "
                  + " | ".join(paired(c[0]) for c in wcols) + " | |")
    print()

print("Individual runs (medians above are over the runs not discarded):")
print()
print("| workload | server | rep | attempt | msgs/s | server CPU (us/msg) | server CPU (cores) "
      "| load gen CPU (cores) | other CPU (cores) | RTT p50 (us) | errors | discarded |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    print(f"| {r['workload']} | {r['server']} | {r['rep']} | {r['attempt']} "
          f"| {r['msgs_per_s']:.0f} | {r['server_cpu_us_per_msg']:.2f} "
          f"| {r['server_cpu_util']:.2f} | {r['client_cpu_util']:.2f} "
          f"| {r['other_cpu_util']:.2f} | {r['rtt_p50_us']:.0f} | {r['errors']} "
          f"| {'yes' if r['discarded'] else 'no'} |")
EOF
}


if [ -n "$report_only" ]; then
  report "$report_only" "not in $report_only"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Build.
# ---------------------------------------------------------------------------------------------
build_bench bench_baseline_stream_server bench_stream_load
trellis_bin=${TRELLIS_SERVER:-$build_dir/bench/stream_server}
build_trellis_target bench_stream_server "$trellis_bin"

# ---------------------------------------------------------------------------------------------
# Measure.
# ---------------------------------------------------------------------------------------------
[ -n "$out_dir" ] || out_dir="$build_dir/bench-results/stream-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
: >"$results"

# run_once WORKLOAD NAME REP ATTEMPT: one measurement; appends a JSON line to $results. Returns 1
# if the run is to be redone (other load on the machine), 2 if it failed.
run_once() {
  local workload=$1 name=$2 rep=$3 attempt=$4 json rc=0
  local server_log="$out_dir/$workload-$name-$rep-$attempt.log"
  local cmd
  if [ "$name" = baseline ]; then
    # shellcheck disable=SC2206
    cmd=("$bench_bin/baseline_stream_server" --port 0 --threads "$threads" ${BASELINE_ARGS:-})
  else
    # shellcheck disable=SC2206
    cmd=("$trellis_bin" --port 0 --threads "$threads" ${TRELLIS_ARGS:-})
  fi
  wait_quiet
  start_server "$server_log" "$server_cpus" "${cmd[@]}" || return 2
  json=$(taskset -c "$load_cpus" "$bench_bin/stream_load" --target "127.0.0.1:$server_port" \
    --workload "$workload" --payload "$payload" --window "$window" --streams "$streams" \
    --duration-s "$duration_s" --warmup-s "$warmup_s" --server-pid "$server_pid") || {
    log "$workload $name: load generator failed"
    stop_server || true
    return 2
  }
  stop_server || rc=$?
  [ "$rc" -eq 0 ] || log "$name exited with status $rc on SIGTERM (log: $server_log)"
  record_run "$json" "$workload $name rep $rep" \
    "\"server\": \"$name\", \"rep\": $rep, \"attempt\": $attempt, \"server_exit\": $rc"
}

IFS=, read -r -a server_list <<<"$servers"
IFS=, read -r -a workload_list <<<"$workloads"
for rep in $(seq "$repeats"); do
  for workload in "${workload_list[@]}"; do
    for name in "${server_list[@]}"; do
      if [ "$name" = trellis ] && [ ! -x "$trellis_bin" ]; then continue; fi
      with_attempts run_once "$workload" "$name" "$rep"
    done
  done
done

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
report "$results" "$trellis_note" >"$out_dir/table.md"

echo "Streaming: $repeats x {${workloads}} x {${servers}}, server threads $threads on CPU" \
  "$server_cpus, load on CPU $load_cpus, $streams stream(s), payload $payload B, bidi window" \
  "$window, warmup ${warmup_s}s + ${duration_s}s"
echo
cat "$out_dir/table.md"
echo
echo "raw results: $results"
