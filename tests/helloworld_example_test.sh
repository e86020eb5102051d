#!/usr/bin/env bash
# The helloworld example binaries as a user runs them: the server prints its port, the client
# prints the reply (exit 0) or the status code name (exit non-zero), and SIGINT/SIGTERM stop the
# server with exit status 0. Usage: helloworld_example_test.sh BIN_DIR
set -uo pipefail
bin=$1
failures=0
total=0
check() {  # check NAME CONDITION_RESULT
  total=$((total + 1))
  if [ "$2" = 0 ]; then echo "ok: $1"; else echo "FAILED: $1"; failures=$((failures + 1)); fi
}

# shellcheck source=SCRIPTDIR/lib/server.sh
source "$(dirname "$0")/lib/server.sh"
trap server_stop EXIT
errors=$(mktemp)
export SERVER_STDERR=$errors

for signal in TERM INT; do
  server_start "$bin/greeter_server" --host 127.0.0.1 --port 0 --threads 2 ||
    { cat "$errors"; exit 1; }
  reply=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name Trellis)
  check "reply (SIG$signal run)" "$([ "$reply" = "Hello Trellis" ]; echo $?)"

  err=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name "" 2>&1 >/dev/null)
  rc=$?
  check "empty name is INVALID_ARGUMENT, exit non-zero" \
    "$([ $rc -ne 0 ] && [[ "$err" == INVALID_ARGUMENT* ]]; echo $?)"

  server_stop "$signal"
  check "server exits 0 on SIG$signal" "$server_status"
  [ "$server_status" = 0 ] || sed 's/^/  server stderr: /' "$errors"
done
rm -f "$errors"

# Nothing listens on a port we just had and released: the client reports UNAVAILABLE.
err=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name x --timeout_ms 5000 2>&1 >/dev/null)
rc=$?
check "unreachable server is UNAVAILABLE, exit non-zero" \
  "$([ $rc -ne 0 ] && [[ "$err" == UNAVAILABLE* ]]; echo $?)"

echo "$((total - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
