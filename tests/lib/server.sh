# shellcheck shell=bash
# Shared by the shell tests (source it): run a server that prints "... listening on port N" on
# its stdout once it serves, and stop it with a signal. Every wait is bounded.
#
#   server_start COMMAND...  starts COMMAND as a coprocess and reads its stdout (a pipe: no
#                            polling) until the port line, at most 60 s; sets server_pid and
#                            port. Non-zero if the server exited or printed no port in time.
#                            SERVER_STDERR (default: this script's stderr) receives its stderr.
#                            Its stdin is a pipe from this script, so a server run with
#                            --exit-on-stdin-eof also stops when the script dies.
#   server_stop [SIGNAL]     sends SIGNAL (default TERM), waits up to 30 s for the exit (then
#                            SIGKILL), sets server_status to the exit status. No-op when no
#                            server runs; safe in an EXIT trap.
# shellcheck disable=SC2034  # set for the sourcing script
server_pid=
server_status=
port=

server_start() {
  coproc SERVER { exec "$@" 2>"${SERVER_STDERR:-/dev/stderr}"; }
  # shellcheck disable=SC2153  # SERVER_PID is set by coproc
  server_pid=$SERVER_PID
  port=
  local line remaining deadline=$((SECONDS + 60))
  while [[ -z $port ]]; do
    remaining=$((deadline - SECONDS))
    if ((remaining <= 0)) || ! read -r -t "$remaining" line <&"${SERVER[0]}"; then
      echo "the server exited or did not report its port within 60 s: $*" >&2
      return 1
    fi
    echo "server: $line"
    if [[ $line =~ listening\ on\ port\ ([0-9]+) ]]; then port=${BASH_REMATCH[1]}; fi
  done
}

server_stop() {
  [[ -n $server_pid ]] || return 0
  local pid=$server_pid
  server_pid=
  kill -"${1:-TERM}" "$pid" 2>/dev/null
  if ! timeout 30 tail --pid="$pid" -f /dev/null; then
    echo "the server did not stop within 30 s of SIG${1:-TERM}; killing it" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  server_status=0
  wait "$pid" 2>/dev/null || server_status=$?
}
