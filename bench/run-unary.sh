#!/usr/bin/env bash
# Unary benchmark: Trellis's helloworld greeter_server against a plain grpc++ async
# completion-queue server (bench/baseline_server.cpp), in the same run on the same machine.
#
#   bench/run-unary.sh [options]
#
# For every repetition and every server (interleaved: baseline, trellis, baseline, trellis, ...):
# start the server pinned to core 0 (--port 0; the port is read from its "listening on port N"
# line), run the closed-loop load generator (bench/unary_load.cpp) pinned to core 1 (warmup, then
# the measured window), stop the server with SIGTERM. The load generator reads the server's CPU
# time (utime + stime of all its threads, /proc/PID/stat) at both edges of the measured window,
# which gives the server CPU microseconds per RPC, and the whole machine's CPU time (/proc/stat),
# which tells whether something else ran during the window: such a run is discarded and redone.
# Prints a markdown table of the medians and the trellis/baseline ratios.
#
# Options (environment variable in brackets):
#   --build-dir DIR      build directory [BUILD_DIR, default build/release]; configured with
#                        cmake -G Ninja -DCMAKE_BUILD_TYPE=Release if it has no build files yet.
#                        If the top-level project does not configure or build, the bench
#                        directory is configured on its own in DIR/bench-standalone.
#                        [CMAKE_ARGS] adds configure arguments (word-split; when set, the
#                        build dir is (re)configured with them), e.g.
#                        CMAKE_ARGS=-DCMAKE_CXX_FLAGS=-Wno-restrict
#   --repeats R          repetitions of each server [REPEATS, default 3]
#   --threads T          server worker threads, passed as --threads T [SERVER_THREADS, default 1]
#   --duration-s S       measured window [DURATION_S, default 10]
#   --warmup-s W         warmup before the window [WARMUP_S, default 2]
#   --concurrency C      outstanding calls [CONCURRENCY, default 64]
#   --channels K         client channels (connections) [CHANNELS, default 2]
#   --payload N          length of the name in HelloRequest [PAYLOAD, default 16]
#   --servers LIST       comma-separated subset of baseline,trellis [SERVERS, default both];
#                        any other name is a variant of trellis (the Trellis server, with the
#                        flags --server-args gives it), e.g. trellis,trellis+stack
#   --server-args NAME=FLAGS  extra flags for server NAME's command line (repeatable)
#   --load-cmd NAME=CMD  the load generator for NAME's runs instead of unary_load (repeatable):
#                        CMD (word-split) gets unary_load's flags and must print its JSON line
#   --ratios LIST        comma-separated A/B pairs: a row of ratios A / B for each
#                        [RATIOS, default trellis/baseline]
#   --server-cpus LIST   taskset CPU list for the server [SERVER_CPUS, default 0]
#   --load-cpus LIST     taskset CPU list for the load generator [LOAD_CPUS, default 1]
#   --max-other-cpu X    a run is redone if other processes used more than X cores during its
#                        window [MAX_OTHER_CPU, default 0.10]
#   --quiet-s N          before each run, wait until the machine has been idle (busy < X cores)
#                        for N consecutive seconds [QUIET_S, default 5] ...
#   --quiet-timeout-s N  ... but wait at most N s [QUIET_TIMEOUT_S, default 600]
#   --attempts N         attempts per run before giving up on it [ATTEMPTS, default 6]
#   --out DIR            where results.jsonl, server logs and table.md go
#                        [OUT_DIR, default BUILD_DIR/bench-results/unary-<timestamp>]
#   --report FILE        only print the tables for an earlier results.jsonl (or several
#                        concatenated), building and measuring nothing
# Also: TRELLIS_SERVER=path overrides the Trellis binary (default
# BUILD_DIR/examples/helloworld/greeter_server); BASELINE_ARGS adds flags to baseline_server;
# TRELLIS_ARGS replaces the extra flags given to the Trellis server (by default --host 127.0.0.1
# if its --help mentions a host flag).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=${BUILD_DIR:-build/release}
repeats=${REPEATS:-3}
threads=${SERVER_THREADS:-1}
duration_s=${DURATION_S:-10}
warmup_s=${WARMUP_S:-2}
concurrency=${CONCURRENCY:-64}
channels=${CHANNELS:-2}
payload=${PAYLOAD:-16}
servers=${SERVERS:-baseline,trellis}
ratios=${RATIOS:-trellis/baseline}
declare -A server_args=() load_cmd=()
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
    --threads) threads=$2 ;;
    --duration-s) duration_s=$2 ;;
    --warmup-s) warmup_s=$2 ;;
    --concurrency) concurrency=$2 ;;
    --channels) channels=$2 ;;
    --payload) payload=$2 ;;
    --servers) servers=$2 ;;
    --server-args) server_args[${2%%=*}]=${2#*=} ;;
    --load-cmd) load_cmd[${2%%=*}]=${2#*=} ;;
    --ratios) ratios=$2 ;;
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

bench_name=run-unary
# shellcheck source=bench/lib.sh
. bench/lib.sh

# report RESULTS_JSONL TRELLIS_NOTE [SERVERS]: the markdown tables (medians, ratios, individual
# runs) of SERVERS (default: those in the file).
report() {
  python3 - "$1" "$2" "${3:-}" "$ratios" <<'EOF'
import json, statistics, sys

results_path, trellis_note, servers, ratios = sys.argv[1:5]
runs = [json.loads(line) for line in open(results_path) if line.strip()]
names = servers.split(",") if servers else list(dict.fromkeys(r["server"] for r in runs))
kept = {}
for r in runs:
    if not r["discarded"]:
        kept.setdefault(r["server"], []).append(r)

cols = [("rps", "rps", "{:.0f}"), ("p50_us", "p50 (us)", "{:.0f}"),
        ("p99_us", "p99 (us)", "{:.0f}"),
        ("server_cpu_us_per_rpc", "server CPU (us/RPC)", "{:.1f}"),
        ("server_cpu_util", "server CPU (cores)", "{:.2f}"),
        ("client_cpu_util", "load gen CPU (cores)", "{:.2f}"),
        ("client_cpu_us_per_rpc", "load gen CPU (us/RPC)", "{:.1f}")]
for r in runs:
    r["client_cpu_us_per_rpc"] = r["client_cpu_util"] * 1e6 / r["rps"] if r["rps"] else 0

def med(rs, key):
    return statistics.median(r[key] for r in rs)

print("| server | runs | " + " | ".join(c[1] for c in cols) + " | errors |")
print("|---|---|" + "---|" * len(cols) + "---|")
medians = {}
for name in names:
    rs = kept.get(name)
    if not rs:
        print(f"| **{name}: not measured yet** ("
              + ((name != "baseline" and trellis_note) or "no valid run") + ") | 0 |"
              + " — |" * len(cols) + " — |")
        continue
    medians[name] = {c[0]: med(rs, c[0]) for c in cols}
    print(f"| {name} | {len(rs)} | " + " | ".join(c[2].format(medians[name][c[0]]) for c in cols)
          + f" | {sum(r['errors'] for r in rs)} |")
last = {}
for r in runs:
    if not r["discarded"]:
        last[(r["server"], r["rep"])] = r
for num, den in (pair.split("/", 1) for pair in ratios.split(",") if "/" in pair):
    if num not in medians or den not in medians:
        continue
    b, t = medians[den], medians[num]
    print(f"| **{num} / {den}** (ratio of medians) | | " + " | ".join(
        "{:.3f}x".format(t[c[0]] / b[c[0]]) if b[c[0]] else "—" for c in cols) + " | |")
    # Runs are interleaved, so each repetition's pair ran under the same conditions: the median
    # of the per-repetition ratios is less sensitive to drift of the machine than the above.
    reps = sorted({rep for (name, rep) in last if (den, rep) in last and (num, rep) in last})
    if reps:
        def paired(key):
            rs = [last[(num, rep)][key] / last[(den, rep)][key] for rep in reps
                  if last[(den, rep)][key]]
            return "{:.3f}x".format(statistics.median(rs)) if rs else "—"
        print(f"| **{num} / {den}** (median of per-repetition ratios) | {len(reps)} pairs | "
              + " | ".join(paired(c[0]) for c in cols) + " | |")

print()
print("Individual runs (medians above are over the runs not discarded):")
print()
print("| server | rep | attempt | rps | p50 (us) | p90 (us) | p99 (us) | server CPU (us/RPC) "
      "| server CPU (cores) | load gen CPU (cores) | other CPU (cores) | discarded |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    print(f"| {r['server']} | {r['rep']} | {r['attempt']} | {r['rps']:.0f} | {r['p50_us']:.0f} "
          f"| {r['p90_us']:.0f} | {r['p99_us']:.0f} | {r['server_cpu_us_per_rpc']:.1f} "
          f"| {r['server_cpu_util']:.2f} | {r['client_cpu_util']:.2f} "
          f"| {r['other_cpu_util']:.2f} | {'yes' if r['discarded'] else 'no'} |")
EOF
}


if [ -n "$report_only" ]; then
  report "$report_only" "not in $report_only"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Build.
# ---------------------------------------------------------------------------------------------
build_bench bench_baseline_server bench_unary_load
trellis_bin=${TRELLIS_SERVER:-$build_dir/examples/helloworld/greeter_server}
# Ninja builds an output file named as a target.
build_trellis_target examples/helloworld/greeter_server "$trellis_bin"
# Loopback only: pass --host 127.0.0.1 when the Trellis server has such a flag.
if [ -n "${TRELLIS_ARGS+set}" ]; then
  trellis_args=$TRELLIS_ARGS
elif [ -x "$trellis_bin" ] && [[ "$("$trellis_bin" --help 2>&1 || true)" == *--host* ]]; then
  trellis_args="--host 127.0.0.1"
else
  trellis_args=""
fi

# ---------------------------------------------------------------------------------------------
# Measure.
# ---------------------------------------------------------------------------------------------
[ -n "$out_dir" ] || out_dir="$build_dir/bench-results/unary-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
: >"$results"

# run_once NAME REP ATTEMPT: one measurement; appends a JSON line to $results. Returns 1 if the
# run is to be redone (other load on the machine), 2 if it failed.
run_once() {
  local name=$1 rep=$2 attempt=$3 json rc=0
  local server_log="$out_dir/$name-$rep-$attempt.log"
  local cmd
  if [ "$name" = baseline ]; then
    # shellcheck disable=SC2206
    cmd=("$bench_bin/baseline_server" --port 0 --threads "$threads" ${BASELINE_ARGS:-})
  else
    # shellcheck disable=SC2206
    cmd=("$trellis_bin" --port 0 --threads "$threads" ${trellis_args})
  fi
  # shellcheck disable=SC2206
  cmd+=(${server_args[$name]:-})
  local load=("$bench_bin/unary_load")
  # shellcheck disable=SC2206
  [ -z "${load_cmd[$name]:-}" ] || load=(${load_cmd[$name]})
  wait_quiet
  start_server "$server_log" "$server_cpus" "${cmd[@]}" || return 2
  json=$(taskset -c "$load_cpus" "${load[@]}" --target "127.0.0.1:$server_port" \
    --concurrency "$concurrency" --duration-s "$duration_s" --warmup-s "$warmup_s" \
    --channels "$channels" --payload "$payload" --server-pid "$server_pid") || {
    log "$name: load generator failed"
    stop_server || true
    return 2
  }
  stop_server || rc=$?
  [ "$rc" -eq 0 ] || log "$name exited with status $rc on SIGTERM (log: $server_log)"
  record_run "$json" "$name rep $rep" \
    "\"server\": \"$name\", \"rep\": $rep, \"attempt\": $attempt, \"server_exit\": $rc"
}

IFS=, read -r -a server_list <<<"$servers"
for rep in $(seq "$repeats"); do
  for name in "${server_list[@]}"; do
    if [ "$name" != baseline ] && [ ! -x "$trellis_bin" ]; then continue; fi
    with_attempts run_once "$name" "$rep"
  done
done

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
report "$results" "$trellis_note" "$servers" >"$out_dir/table.md"

echo "Unary: $repeats x {${servers}}, server threads $threads on CPU $server_cpus, load on CPU" \
  "$load_cpus, concurrency $concurrency, channels $channels, payload $payload B," \
  "warmup ${warmup_s}s + ${duration_s}s"
echo
cat "$out_dir/table.md"
echo
echo "raw results: $results"
