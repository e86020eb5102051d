# Shared by the bench scripts (sourced, not run): building the bench programs, waiting for a
# quiet machine, starting and stopping a pinned server, and recording one run.
#
# The sourcing script sets `bench_name` (its log prefix) first, and these as it needs them:
#   build_dir        the build directory
#   max_other_cpu    a run is redone if other processes used more cores than this in its window
#   quiet_s          wait_quiet: seconds the machine must have been idle in a row ...
#   quiet_timeout_s  ... waiting at most this long
#   results          the results.jsonl that record_run appends to
#   out_dir          where server logs go
#   server_start_s   start_server: how long a server may take to say it listens [10]
#   server_stop_s    stop_server: how long it may take to exit on SIGTERM [10]

log() { echo "$bench_name: $*" >&2; }

# build_bench TARGET...: builds TARGETs in the top-level project in $build_dir (configured first,
# as Release with [CMAKE_ARGS], if it has no build files or CMAKE_ARGS is set); if that fails,
# configures bench/ on its own in $build_dir/bench-standalone and builds them there. Sets
# bench_bin to the directory that holds the programs.
build_bench() {
  # shellcheck disable=SC2206
  local configure_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-})
  local configure_log="/tmp/$bench_name-configure.$$.log"
  bench_bin=""
  if [ -n "${CMAKE_ARGS:-}" ] || { [ ! -f "$build_dir/build.ninja" ] &&
    [ ! -f "$build_dir/Makefile" ]; }; then
    log "configuring $build_dir"
    cmake -S . -B "$build_dir" "${configure_args[@]}" >"$configure_log" 2>&1 ||
      log "top-level configure failed (see $configure_log)"
  fi
  if [ -f "$build_dir/build.ninja" ] || [ -f "$build_dir/Makefile" ]; then
    if cmake --build "$build_dir" --target "$@"; then
      bench_bin="$build_dir/bench"
      return 0
    fi
    log "building the bench targets in the top-level project failed"
  fi
  local standalone="$build_dir/bench-standalone"
  log "building bench/ on its own in $standalone"
  if [ ! -f "$standalone/build.ninja" ]; then
    cmake -S bench -B "$standalone" "${configure_args[@]}" >/dev/null
  fi
  cmake --build "$standalone" --target "$@"
  bench_bin="$standalone"
}

# build_trellis_target TARGET BINARY: builds the Trellis server TARGET in the top-level project
# unless TRELLIS_SERVER names the binary. A failure only means the Trellis side is not ready:
# the baseline is still measured. Sets trellis_note to why BINARY is missing, if it is.
build_trellis_target() {
  local target=$1 binary=$2 build_log="/tmp/$bench_name-trellis-build.$$.log"
  trellis_note=""
  if [ -z "${TRELLIS_SERVER:-}" ] && [ "$bench_bin" = "$build_dir/bench" ]; then
    cmake --build "$build_dir" --target "$target" >"$build_log" 2>&1 ||
      trellis_note="build failed, see $build_log"
  fi
  if [ ! -x "$binary" ]; then
    trellis_note="missing: $binary${trellis_note:+ ($trellis_note)}"
    log "trellis server $trellis_note"
  fi
}

# Busy cores of the whole machine over one second (from /proc/stat).
machine_busy() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = y[2] - x[2]; printf "%.3f", (t > 0 ? n * (y[1] - x[1]) / t : 0) }'
}

# Waits until the machine has been idle for $quiet_s consecutive seconds (bounded).
wait_quiet() {
  local waited=0 quiet=0 busy
  while [ "$quiet" -lt "$quiet_s" ]; do
    busy=$(machine_busy)
    waited=$((waited + 1))
    if awk -v b="$busy" -v m="$max_other_cpu" 'BEGIN { exit !(b < m) }'; then
      quiet=$((quiet + 1))
      continue
    fi
    quiet=0
    if [ "$waited" -ge "$quiet_timeout_s" ]; then
      log "machine still busy ($busy cores) after ${waited}s; measuring anyway"
      return 0
    fi
    [ $((waited % 60)) -eq 1 ] && log "machine busy ($busy cores), waiting for it to be idle"
  done
}

# start_server LOG CPUS COMMAND...: starts COMMAND (which is given --port 0 and prints "listening
# on port N") pinned to CPUS (unpinned if empty), its output in LOG. Sets server_pid and
# server_port; returns 1 if no port was printed within $server_start_s seconds (default 10; the
# server is then stopped).
server_pid=""
server_port=""
start_server() {
  local server_log=$1 cpus=$2
  shift 2
  if [ -n "$cpus" ]; then
    taskset -c "$cpus" "$@" >"$server_log" 2>&1 &
  else
    "$@" >"$server_log" 2>&1 &
  fi
  server_pid=$!
  server_port=""
  for _ in $(seq "$((${server_start_s:-10} * 10))"); do
    server_port=$(sed -n 's/.*listening on port[^0-9]*\([0-9][0-9]*\).*/\1/p' "$server_log" |
      head -n 1)
    [ -n "$server_port" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "$1 printed no 'listening on port N' line within ${server_start_s:-10} s; log: $server_log"
  stop_server || true
  return 1
}

# Stops the server with SIGTERM (SIGKILL after $server_stop_s seconds, default 10); returns its
# exit status.
stop_server() {
  [ -n "$server_pid" ] || return 0
  local rc=0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq "$((${server_stop_s:-10} * 10))"); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    log "server $server_pid did not exit on SIGTERM within ${server_stop_s:-10} s; killing it"
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || rc=$?
  server_pid=""
  return $rc
}
trap 'stop_server || true' EXIT

# record_run JSON LABEL FIELDS: appends JSON (a load generator's line, with "other_cpu_util")
# to $results with FIELDS (`"key": value, ...`) and "discarded" added. Returns 1 if other
# processes used more than $max_other_cpu cores during the window: the run is to be redone.
record_run() {
  local json=$1 label=$2 fields=$3 other discarded
  other=$(sed -n 's/.*"other_cpu_util": \([0-9.]*\).*/\1/p' <<<"$json")
  discarded=$(awk -v o="${other:-0}" -v m="$max_other_cpu" \
    'BEGIN { print (o > m) ? "true" : "false" }')
  echo "${json%\}}, $fields, \"discarded\": $discarded}" >>"$results"
  log "$label: $json"
  if [ "$discarded" = true ]; then
    log "$label: other processes used $other cores during the window; redoing"
    return 1
  fi
}

# with_attempts COMMAND...: runs COMMAND ATTEMPT for ATTEMPT = 1, 2, ... up to $max_attempts,
# while it returns 1 (redo).
with_attempts() {
  local attempt st
  for attempt in $(seq "$max_attempts"); do
    st=0
    "$@" "$attempt" || st=$?
    [ "$st" -eq 1 ] || return 0
  done
}

# build_go: builds bench/grpc_go (a grpc-go load generator and server) into $bench_bin with
# Debian's Go toolchain and grpc-go sources (GOPATH mode, nothing downloaded). Returns 1, saying
# what to install, where they are missing.
build_go() {
  local gopath=/usr/share/gocode
  if ! command -v go >/dev/null || [ ! -d "$gopath/src/google.golang.org/grpc" ]; then
    log "grpc_go needs Go and grpc-go: apt-get install golang-go golang-google-grpc-dev"
    return 1
  fi
  # Absolute before the cd: bench_bin may be relative to the source tree.
  local out
  out=$(cd "$bench_bin" && pwd) || return 1
  (cd bench/grpc_go && GO111MODULE=off GOPATH=$gopath GOCACHE="$out/go-cache" \
    go build -o "$out/grpc_go" .)
}
