#!/usr/bin/env bash
# The route_guide example binaries as a user runs them: the server prints its port, the client
# runs the four calls (unary, server streaming, client streaming, bidi) and prints exactly the
# expected lines, twice in a row on one server (RouteChat keeps its notes per call), SIGTERM
# stops the server with exit status 0, and a client with no server reports UNAVAILABLE and
# exits non-zero. Every wait is bounded. Usage: route_guide_example_test.sh BIN_DIR
set -uo pipefail
bin=$1
failures=0
total=0
check() {  # check NAME CONDITION_RESULT
  total=$((total + 1))
  if [ "$2" = 0 ]; then echo "ok: $1"; else echo "FAILED: $1"; failures=$((failures + 1)); fi
}

out=$(mktemp)
# shellcheck source=SCRIPTDIR/lib/server.sh
source "$(dirname "$0")/lib/server.sh"
cleanup() {
  server_stop KILL
  rm -f "$out" "$out.err" "$out.client_err"
}
trap cleanup EXIT
export SERVER_STDERR=$out.err

if ! server_start "$bin/route_guide_server" --host 127.0.0.1 --port 0 --threads 2; then
  cat "$out.err"; exit 1
fi

# Twelve features on a 0.1 degree grid; the route's four features are Alder Hill, Birch Ford,
# Fir Lookout and Ginkgo Green; its distance is the sum of five haversine legs.
expected='GetFeature: Alder Hill at (40.0000, -74.5000)
GetFeature: no feature at (40.0500, -74.5000)
ListFeatures: Birch Ford at (40.0000, -74.4000)
ListFeatures: Cedar Crossing at (40.0000, -74.3000)
ListFeatures: Dogwood Bend at (40.0000, -74.2000)
ListFeatures: Fir Lookout at (40.1000, -74.4000)
ListFeatures: Ginkgo Green at (40.1000, -74.3000)
ListFeatures: Hazel Mill at (40.1000, -74.2000)
ListFeatures: 6 features
RecordRoute: point_count=6 feature_count=4 distance=35354
RouteChat: "First message" at (40.0000, -74.5000)
RouteChat: "Second message" at (40.0000, -74.4000)
RouteChat: "First message" at (40.0000, -74.5000)
RouteChat: "Third message" at (40.0000, -74.5000)
RouteChat: received 4 notes'

for run in 1 2; do
  got=$(timeout 30 "$bin/route_guide_client" --target "127.0.0.1:$port" 2>"$out.client_err")
  rc=$?
  check "client exits 0 (run $run)" "$rc"
  if [ "$got" = "$expected" ]; then
    check "client output (run $run)" 0
  else
    check "client output (run $run)" 1
    diff <(echo "$expected") <(echo "$got") | sed 's/^/  /'
    sed 's/^/  stderr: /' "$out.client_err"
  fi
  rm -f "$out.client_err"
done

server_stop TERM
rc=$server_status
check "server exits 0 on SIGTERM" "$rc"
[ "$rc" = 0 ] || sed 's/^/  server stderr: /' "$out.err"

# Nothing listens on the port the server just released: the first call fails UNAVAILABLE.
err=$(timeout 30 "$bin/route_guide_client" --target "127.0.0.1:$port" --timeout_ms 5000 2>&1 >/dev/null)
rc=$?
check "unreachable server: exit non-zero, GetFeature: UNAVAILABLE" \
  "$([ $rc -ne 0 ] && [ $rc -ne 124 ] && [[ "$err" == "GetFeature: UNAVAILABLE: "* ]]; echo $?)"

echo "$((total - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
