#!/usr/bin/env bash
# Where a server's CPU goes: per unary call and per bidi message, the server's CPU time split
# across the kernel, grpc core, OpenSSL (with --tls on), grpc++, nghttp2, protobuf, the allocator
# and C/C++ runtime, Abseil and the server program itself (Trellis and Asio; for the baseline
# its own loop), for Trellis's servers on either transport, the plain grpc++ baselines, the
# native transport's session on its own (bench/native_server.cpp) and a grpc-go server
# (bench/grpc_go), measured in the same run.
#
#   bench/perf-split.sh [options]
#
# For each repetition, workload and server: start the server pinned to core 0 (--port 0, one
# worker thread), run the load generator pinned to core 1 (unary: 50 calls in flight over 4
# connections; bidi: one stream, 64 requests unanswered at most; 16-byte payloads), and once its
# warmup is over sample the server with `perf record -e cpu-clock` (user and kernel, all
# threads) for the measured window. The load generator gives the server's CPU time per call or
# message (/proc/PID/stat over the window); perf's samples split it. Each sample is attributed
# to the code it landed in, not to its caller: malloc called by grpc core counts as allocator.
# Code of grpc++ and protobuf inlined into the server program (templates in their headers,
# generated message classes) is recognised by its symbol's namespace and counted with them.
# The tables give medians over the repetitions: CPU per call or message, the load generator's
# rate and p99, and each category's share.
#
# The load generator: bench/grpc_go (grpc-go, the default) batches its writes and can saturate
# every server here; bench/unary_load and bench/stream_load (grpc++) cost as much per message as
# grpc core's server does, so they saturate before a faster server does, which then wakes for
# every message and reads it alone.
#
# Options (environment variable in brackets):
#   --build-dir DIR     a build with the bench targets [BUILD_DIR, default build/release]
#   --workloads LIST    comma-separated subset of unary,bidi [WORKLOADS, default both]
#   --servers LIST      comma-separated subset of baseline,trellis,trellis-native,native,grpc-go
#                       [SERVERS, default all of them that are built]: trellis-native is
#                       Trellis's servers with --transport native, native the bare session
#   --client go|cpp     the load generator [CLIENT, default go]
#   --tls on|off        serve and call over TLS [TLS, default off]: certificates made by openssl
#                       (EC P-256, tests/lib/certs.sh) into the output directory; needs --client
#                       go, and leaves out the bare session (native), which has no TLS
#   --repeats R         repetitions, servers interleaved [REPEATS, default 1]
#   --duration-s S      measured window [DURATION_S, default 10]
#   --warmup-s W        warmup before it [WARMUP_S, default 2]
#   --frequency HZ      perf's sampling frequency [FREQUENCY, default 4999]
#   --out DIR           where the perf files, logs and table.md go
#                       [OUT_DIR, default BUILD_DIR/bench-results/perf-split-<time>]
#   --report FILE       only print the table for an earlier split.jsonl
# Needs perf (Debian: linux-perf) allowed to sample the server (root, or
# kernel.perf_event_paranoid <= 1 for kernel samples).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=${BUILD_DIR:-build/release}
workloads=${WORKLOADS:-unary,bidi}
servers=${SERVERS:-}
client=${CLIENT:-go}
tls=${TLS:-off}
repeats=${REPEATS:-1}
duration_s=${DURATION_S:-10}
warmup_s=${WARMUP_S:-2}
frequency=${FREQUENCY:-4999}
out_dir=${OUT_DIR:-}
report_only=""
max_other_cpu=0.10 quiet_s=5 quiet_timeout_s=600 max_attempts=4

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --build-dir) build_dir=$2 ;;
    --workloads) workloads=$2 ;;
    --servers) servers=$2 ;;
    --client) client=$2 ;;
    --tls) tls=$2 ;;
    --repeats) repeats=$2 ;;
    --duration-s) duration_s=$2 ;;
    --warmup-s) warmup_s=$2 ;;
    --frequency) frequency=$2 ;;
    --out) out_dir=$2 ;;
    --report) report_only=$2 ;;
    *) usage ;;
  esac
  shift 2
done

bench_name=perf-split
# shellcheck source=bench/lib.sh
. bench/lib.sh

# report SPLIT_JSONL: per workload, a markdown table with a column per server: medians over the
# repetitions.
report() {
  python3 - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
categories = ["kernel", "grpc core", "OpenSSL", "grpc++", "nghttp2", "native transport (Trellis)",
              "protobuf", "allocator, libc, libstdc++", "abseil", "server program", "other"]
for workload in dict.fromkeys(r["workload"] for r in rows):
    runs = {}
    for r in rows:
        if r["workload"] == workload:
            runs.setdefault(r["server"], []).append(r)
    servers = list(runs)
    med = lambda name, key: statistics.median(r[key] for r in runs[name])
    unit = "call" if workload == "unary" else "message"
    print(f"{workload}: us of server CPU per {unit} (share), medians of "
          f"{min(len(v) for v in runs.values())} run(s)")
    print()
    print("| | " + " | ".join(servers) + " |")
    print("| --- |" + " ---: |" * len(servers))
    for c in categories:
        if not any(r["shares"].get(c, 0) >= 0.005 for v in runs.values() for r in v):
            continue
        cells = []
        for name in servers:
            share = statistics.median(r["shares"].get(c, 0) for r in runs[name])
            cells.append(f"{med(name, 'us_per_unit') * share:.2f} ({100 * share:.0f}%)")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("| **total** | " + " | ".join(f"**{med(n, 'us_per_unit'):.2f}**" for n in servers) +
          " |")
    if "baseline" in runs:
        base = med("baseline", "us_per_unit")
        print("| total / baseline | " +
              " | ".join(f"{med(n, 'us_per_unit') / base:.2f}x" for n in servers) + " |")
    print(f"| {unit}s/s | " + " | ".join(f"{med(n, 'rate'):,.0f}" for n in servers) + " |")
    print("| server CPU used | " + " | ".join(f"{med(n, 'server_util'):.2f}" for n in servers) +
          " |")
    print("| p99 latency, us | " + " | ".join(f"{med(n, 'p99_us'):,.0f}" for n in servers) + " |")
    print()
EOF
}

if [ -n "$report_only" ]; then
  report "$report_only"
  exit 0
fi
case "$tls/$client" in
  off/* | on/go) ;;
  on/*) log "--tls on needs --client go (the grpc++ load generators are plaintext)"; exit 2 ;;
  *) log "--tls takes on or off, not $tls"; exit 2 ;;
esac
if [ "$tls" = on ] && [[ ",$servers," == *,native,* ]]; then
  log "the bare session (native) serves no TLS"
  exit 2
fi

command -v perf >/dev/null || { log "perf is not installed (apt-get install linux-perf)"; exit 1; }

build_bench bench_baseline_server bench_unary_load bench_baseline_stream_server bench_stream_load
greeter=$build_dir/examples/helloworld/greeter_server
stream_server=$build_dir/bench/stream_server
build_trellis_target examples/helloworld/greeter_server "$greeter"
build_trellis_target bench_stream_server "$stream_server"
cmake --build "$build_dir" --target bench_native_server >/dev/null 2>&1 ||
  log "bench/native_server is not built (it needs libnghttp2-dev)"
have_go=1
build_go || have_go=0
[ "$client" != go ] || [ "$have_go" = 1 ] || { log "--client go needs bench/grpc_go"; exit 1; }
if [ -z "$servers" ]; then
  servers=baseline
  [ -x "$greeter" ] && [ -x "$stream_server" ] && servers+=,trellis
  [ -x "$bench_bin/native_server" ] && servers+=,trellis-native
  [ -x "$bench_bin/native_server" ] && [ "$tls" = off ] && servers+=,native
  [ "$have_go" = 1 ] && servers+=,grpc-go
fi

[ -n "$out_dir" ] || out_dir="$build_dir/bench-results/perf-split-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
split="$out_dir/split.jsonl"
: >"$results"
: >"$split"
server_tls=() load_tls=()
if [ "$tls" = on ]; then
  # shellcheck source=tests/lib/certs.sh
  . tests/lib/certs.sh
  mkdir -p "$out_dir/tls"
  make_test_certs "$out_dir/tls" || { log "openssl could not make the certificates"; exit 1; }
  server_tls=(--tls_cert "$out_dir/tls/server.pem" --tls_key "$out_dir/tls/server.key")
  load_tls=(--tls-ca "$out_dir/tls/ca.pem")
fi

# classify PERF_DATA: prints {"shares": {category: fraction of the samples}}.
classify() {
  perf report -i "$1" --stdio --no-children --sort dso,sym -q 2>/dev/null | python3 -c '
import json, re, sys
core = re.compile(r"^lib(grpc|gpr|upb|address_sorting|cares|z|re2)\b")
generated = re.compile(r"^(helloworld|trellis::bench)::\w+::(_Internal|ByteSize|MergeImpl|"
                       r"Clear|SharedCtor|SharedDtor|~|InternalSwap|IsInitialized|GetMetadata|"
                       r"CopyFrom|MergeFrom|New|GetClassData|_InternalParse|_InternalSerialize)")
line_re = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$")
shares = {}
def add(category, percent):
    shares[category] = shares.get(category, 0.0) + percent / 100
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    percent, dso, kind, sym = float(m[1]), m[2], m[3], m[4].strip()
    if kind == "k" or dso.startswith("[kernel") or dso == "[vdso]":
        add("kernel", percent)
    elif dso.startswith("libgrpc++"):
        add("grpc++", percent)
    elif core.match(dso):
        add("grpc core", percent)
    elif re.match(r"^lib(ssl|crypto)\b", dso):
        add("OpenSSL", percent)
    elif dso.startswith("libprotobuf"):
        add("protobuf", percent)
    elif dso.startswith("libnghttp2"):
        add("nghttp2", percent)
    elif dso.startswith("libabsl"):
        add("abseil", percent)
    elif re.match(r"^(libc\.|libstdc\+\+|libm\.|libgcc|ld-linux)", dso):
        add("allocator, libc, libstdc++", percent)
    elif dso.startswith("lib") or dso.startswith("["):
        add("other", percent)
    elif sym.startswith("trellis::transport::"):
        add("native transport (Trellis)", percent)
    elif sym.startswith(("grpc::", "grpc_impl::")):
        add("grpc++", percent)
    elif "google::protobuf" in sym or generated.match(sym):
        add("protobuf", percent)
    else:
        add("server program", percent)
print(json.dumps({"shares": shares}))
'
}

# run_once WORKLOAD NAME REP ATTEMPT: one measurement; returns 1 if it is to be redone (other
# load on the machine), 2 if it failed.
run_once() {
  local workload=$1 name=$2 rep=$3 attempt=$4 json rc=0 load_pid
  local tag="$workload-$name-$rep-$attempt"
  local cmd load
  case "$workload/$name" in
    unary/baseline) cmd=("$bench_bin/baseline_server") ;;
    unary/trellis) cmd=("$greeter") ;;
    bidi/baseline) cmd=("$bench_bin/baseline_stream_server") ;;
    bidi/trellis) cmd=("$stream_server") ;;
    unary/trellis-native) cmd=("$greeter" --transport native) ;;
    bidi/trellis-native) cmd=("$stream_server" --transport native) ;;
    */native) cmd=("$bench_bin/native_server") ;;
    */grpc-go) cmd=("$bench_bin/grpc_go" server) ;;
    *) log "unknown server or workload: $workload/$name"; return 2 ;;
  esac
  [ -x "${cmd[0]}" ] || { log "$tag: ${cmd[0]} is missing"; return 2; }
  case "$client/$workload" in
    go/*) load=("$bench_bin/grpc_go" load --workload "$workload") ;;
    cpp/unary) load=("$bench_bin/unary_load") ;;
    cpp/bidi) load=("$bench_bin/stream_load" --workload bidi) ;;
    *) log "unknown client: $client"; return 2 ;;
  esac
  if [ "$workload" = unary ]; then
    load+=(--concurrency 50 --channels 4 --payload 16)
  else
    load+=(--window 64 --payload 16)
  fi
  wait_quiet
  start_server "$out_dir/$tag.log" 0 "${cmd[@]}" --port 0 --threads 1 "${server_tls[@]}" ||
    return 2
  taskset -c 1 "${load[@]}" "${load_tls[@]}" --target "127.0.0.1:$server_port" --duration-s "$duration_s" \
    --warmup-s "$warmup_s" --server-pid "$server_pid" >"$out_dir/$tag.json" &
  load_pid=$!
  sleep "$warmup_s"
  perf record -q -e cpu-clock -F "$frequency" -p "$server_pid" -o "$out_dir/$tag.perf.data" \
    -- sleep "$duration_s" >/dev/null 2>&1 || log "$tag: perf record failed"
  wait "$load_pid" || { log "$tag: load generator failed"; stop_server || true; return 2; }
  json=$(cat "$out_dir/$tag.json")
  stop_server || rc=$?
  [ "$rc" -eq 0 ] || log "$name exited with status $rc on SIGTERM"
  record_run "$json" "$tag" "\"server\": \"$name\", \"workload\": \"$workload\"" || return 1
  local per_unit rate p99 util samples split_json
  per_unit=$(sed -n 's/.*"server_cpu_us_per_\(rpc\|msg\)": \([0-9.]*\).*/\2/p' <<<"$json")
  rate=$(sed -n 's/.*"\(rps\|msgs_per_s\)": \([0-9.]*\).*/\2/p' <<<"$json")
  p99=$(sed -n 's/.*"\(p99_us\|rtt_p99_us\)": \([0-9.]*\).*/\2/p' <<<"$json")
  util=$(sed -n 's/.*"server_cpu_util": \([0-9.]*\).*/\1/p' <<<"$json")
  split_json=$(classify "$out_dir/$tag.perf.data")
  samples=$(perf script -i "$out_dir/$tag.perf.data" -F ip 2>/dev/null | wc -l)
  echo "{\"workload\": \"$workload\", \"server\": \"$name\", \"rep\": $rep," \
    "\"us_per_unit\": $per_unit, \"rate\": $rate, \"p99_us\": $p99," \
    "\"server_util\": $util, \"samples\": $samples, ${split_json#\{}" >>"$split"
}

IFS=, read -r -a server_list <<<"$servers"
IFS=, read -r -a workload_list <<<"$workloads"
for rep in $(seq "$repeats"); do
  for workload in "${workload_list[@]}"; do
    for name in "${server_list[@]}"; do
      with_attempts run_once "$workload" "$name" "$rep"
    done
  done
done

{
  [ "$tls" = off ] || echo "Over TLS."
  echo
  report "$split"
} | tee "$out_dir/table.md"
echo
echo "perf files and raw results: $out_dir"
