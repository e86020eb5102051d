#!/usr/bin/env bash
# Runs one gRPC interop client against one interop server, as the interop ctest tests do:
# starts SERVER_COMMAND (which prints a line "... listening on port N" once it serves, as
# interop_server and interop_server.py do; give it port 0), runs CLIENT_COMMAND --server_port=N
# with a bounded run time, and then stops the server with SIGTERM, whatever happened (on any
# exit of this script too). Passes when the client passed every case (exit 0) and the server
# then stopped cleanly (exit 0).
#
# Usage: run_interop_pair.sh SERVER_COMMAND... -- CLIENT_COMMAND...
# Environment: INTEROP_CLIENT_TIMEOUT (seconds, default 240), PYTHONPATH for python peers.
set -uo pipefail

server_cmd=()
while [[ $# -gt 0 && $1 != -- ]]; do
  server_cmd+=("$1")
  shift
done
if [[ $# -eq 0 || ${#server_cmd[@]} -eq 0 ]]; then
  echo "usage: $0 SERVER_COMMAND... -- CLIENT_COMMAND..." >&2
  exit 2
fi
shift
client_cmd=("$@")
if [[ ${#client_cmd[@]} -eq 0 ]]; then
  echo "usage: $0 SERVER_COMMAND... -- CLIENT_COMMAND..." >&2
  exit 2
fi

server_pid=
server_status=
# Stops the server once: SIGTERM, a bounded wait for its exit, SIGKILL if it hangs.
stop_server() {
  [[ -n $server_pid ]] || return 0
  local pid=$server_pid
  server_pid=
  kill -TERM "$pid" 2>/dev/null
  if ! timeout 30 tail --pid="$pid" -f /dev/null; then
    echo "the server did not stop within 30 s of SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  server_status=0
  wait "$pid" 2>/dev/null || server_status=$?
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# The server's stdin and stdout are the coprocess pipes: its port line arrives on a pipe (no
# polling of a file), and a python server run with --exit-on-stdin-eof also stops if this script
# dies without its trap.
coproc SERVER { exec "${server_cmd[@]}"; }
# shellcheck disable=SC2153  # SERVER_PID is set by coproc
server_pid=$SERVER_PID

port=
deadline=$((SECONDS + 60))
while [[ -z $port ]]; do
  remaining=$((deadline - SECONDS))
  if ((remaining <= 0)) || ! read -r -t "$remaining" line <&"${SERVER[0]}"; then
    echo "the server exited or did not report its port within 60 s: ${server_cmd[*]}" >&2
    exit 1
  fi
  echo "server: $line"
  if [[ $line =~ listening\ on\ port\ ([0-9]+) ]]; then port=${BASH_REMATCH[1]}; fi
done

echo "client: ${client_cmd[*]} --server_port=$port"
client_status=0
timeout --kill-after=10 "${INTEROP_CLIENT_TIMEOUT:-240}" "${client_cmd[@]}" \
  --server_port="$port" || client_status=$?
if [[ $client_status -eq 124 ]]; then echo "the client timed out" >&2; fi

stop_server
echo "client exit status $client_status, server exit status $server_status"
[[ $client_status -eq 0 && $server_status -eq 0 ]]
