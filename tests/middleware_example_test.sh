#!/usr/bin/env bash
# The middleware example as a user runs it: the server with tracing, metrics and limits; the
# client with --timeout-ms, --max-attempts and --trace. Usage: middleware_example_test.sh BIN_DIR
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
server_errors=$(mktemp)
client_errors=$(mktemp)
server_spans=$(mktemp)
export SERVER_STDERR=$server_errors
client() { timeout 30 "$bin/middleware_client" --target "127.0.0.1:$port" "$@" 2>"$client_errors"; }

# The spans in the OTLP/JSON lines of file $1 (other lines are skipped), parsed with python's
# json module: one "kind traceId spanId parentSpanId service.name" line per span (parentSpanId
# "-" for a root).
otlp_spans() {
  /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.startswith("{"):
        continue
    for resource_spans in json.loads(line)["resourceSpans"]:
        service = resource_spans["resource"]["attributes"][0]["value"]["stringValue"]
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                print(span["kind"], span["traceId"], span["spanId"],
                      span.get("parentSpanId", "-"), service)
' "$1"
}

server_start "$bin/middleware_server" --host 127.0.0.1 --port 0 --metrics_port 0 --threads 2 \
  --trace_file "$server_spans" || { cat "$server_errors"; exit 1; }
metrics_line=
read -r -t 30 metrics_line <&"${SERVER[0]}"
[[ $metrics_line =~ http://127\.0\.0\.1:([0-9]+)/metrics ]] && metrics_port=${BASH_REMATCH[1]}
check "server reports its metrics endpoint" "$([ -n "${metrics_port:-}" ]; echo $?)"

reply=$(client --name Trellis --trace)
check "reply" "$([ "$reply" = "Hello Trellis" ]; echo $?)"
read -r client_kind client_trace client_span client_parent client_service \
  < <(otlp_spans "$client_errors")
check "--trace writes the client span as an OTLP/JSON line" \
  "$([ "${client_kind:-}" = 3 ] && [[ ${client_trace:-} =~ ^[0-9a-f]{32}$ ]] &&
     [ "${client_parent:-}" = - ] && [ "${client_service:-}" = middleware_client ]; echo $?)"
# The handler logs its trace id before it answers, so the line is there once the reply is.
check "the server continued the client's trace (traceparent)" \
  "$(grep -q "SayHello(Trellis) trace_id=$client_trace" "$server_errors"; echo $?)"

reply=$(client --name slow --timeout-ms 100)
rc=$?
check "--timeout-ms: DEADLINE_EXCEEDED, exit non-zero" \
  "$([ $rc -ne 0 ] && [ "$reply" = DEADLINE_EXCEEDED ]; echo $?)"

reply=$(client --name flaky --max-attempts 2)
check "--max-attempts 2 gets past one UNAVAILABLE" "$([ "$reply" = "Hello flaky" ]; echo $?)"
reply=$(client --name flaky --max-attempts 1)
rc=$?
check "without retries the flaky call is UNAVAILABLE" \
  "$([ $rc -ne 0 ] && [ "$reply" = UNAVAILABLE ]; echo $?)"

reply=$(client --name "" )
rc=$?
check "empty name is INVALID_ARGUMENT" "$([ $rc -ne 0 ] && [ "$reply" = INVALID_ARGUMENT ]; echo $?)"

reply=$(client --max-attempts 0)
check "a bad flag exits 2" "$([ $? = 2 ]; echo $?)"

# The metrics endpoint, over a plain TCP connection.
metrics=$(timeout 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/${metrics_port:-1}
  printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3; cat <&3")
check "/metrics counts the OK calls" "$(grep -q 'grpc_server_handled_total{.*grpc_method="SayHello".*grpc_code="OK".*} [1-9]' <<<"$metrics"; echo $?)"
check "/metrics counts the UNAVAILABLE calls" "$(grep -q 'grpc_code="UNAVAILABLE".*} [1-9]' <<<"$metrics"; echo $?)"

server_stop TERM
check "server exits 0 on SIGTERM" "$server_status"
# The server flushed its spans as it exited: its span of the traced call is the client span's child.
server_span_pattern="2 ${client_trace:-x} [0-9a-f]\{16\} ${client_span:-x} greeter"
server_span_list=$(otlp_spans "$server_spans")
check "--trace_file holds OTLP/JSON lines" "$?"
check "--trace_file holds the server span, a child of the client's" \
  "$(grep -qx "$server_span_pattern" <<<"$server_span_list"; echo $?)"
[ "$failures" = 0 ] || { sed 's/^/  server stderr: /' "$server_errors"; sed 's/^/  client stderr: /' "$client_errors"
  sed 's/^/  server spans: /' "$server_spans"; }

# Nothing listens on the port any more: retries end UNAVAILABLE.
reply=$(client --name x --max-attempts 3 --timeout-ms 5000)
rc=$?
check "unreachable server is UNAVAILABLE after retries" \
  "$([ $rc -ne 0 ] && [ "$reply" = UNAVAILABLE ]; echo $?)"

rm -f "$server_errors" "$client_errors" "$server_spans"
echo "$((total - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
