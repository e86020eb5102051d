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
  reply=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name gzip \
    --compression gzip)
  check "reply to a gzip request (SIG$signal run)" "$([ "$reply" = "Hello gzip" ]; echo $?)"

  err=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name "" 2>&1 >/dev/null)
  rc=$?
  check "empty name is INVALID_ARGUMENT, exit non-zero" \
    "$([ $rc -ne 0 ] && [[ "$err" == INVALID_ARGUMENT* ]]; echo $?)"

  server_stop "$signal"
  check "server exits 0 on SIG$signal" "$server_status"
  [ "$server_status" = 0 ] || sed 's/^/  server stderr: /' "$errors"
done
rm -f "$errors"

timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --compression brotli 2>/dev/null
check "an unknown --compression exits 2" "$([ $? = 2 ]; echo $?)"

# Nothing listens on a port we just had and released: the client reports UNAVAILABLE.
err=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name x --timeout_ms 5000 2>&1 >/dev/null)
rc=$?
check "unreachable server is UNAVAILABLE, exit non-zero" \
  "$([ $rc -ne 0 ] && [[ "$err" == UNAVAILABLE* ]]; echo $?)"

# Mutual TLS with certificates made here (tests/lib/certs.sh), in a temporary directory removed
# at exit: a CA, the server's (SAN localhost, 127.0.0.1) and a client's.
# shellcheck source=SCRIPTDIR/lib/certs.sh
source "$(dirname "$0")/lib/certs.sh"
tls=$(mktemp -d)
trap 'server_stop; rm -rf "$tls"' EXIT
if make_test_certs "$tls"; then
  check "openssl made the test certificates" 0
  # Mutual TLS on both server transports.
  for transport in grpc native; do
    errors=$(mktemp)
    export SERVER_STDERR=$errors
    if server_start "$bin/greeter_server" --host 127.0.0.1 --port 0 --threads 2 \
      --transport "$transport" --tls_cert "$tls/server.pem" --tls_key "$tls/server.key" \
      --tls_client_ca "$tls/ca.pem"; then
      mtls=(--tls_ca "$tls/ca.pem" --tls_cert "$tls/client.pem" --tls_key "$tls/client.key")
      reply=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name TLS "${mtls[@]}")
      check "mutual TLS reply ($transport)" "$([ "$reply" = "Hello TLS" ]; echo $?)"

      reply=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name name \
        --tls_server_name localhost "${mtls[@]}")
      check "mutual TLS with --tls_server_name ($transport)" \
        "$([ "$reply" = "Hello name" ]; echo $?)"

      err=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name x \
        --tls_ca "$tls/ca.pem" 2>&1 >/dev/null)
      rc=$?
      # The status is the last line: grpc core may log the TLS alert the server sent first.
      check "client without a certificate is UNAVAILABLE, exit non-zero ($transport)" \
        "$([ $rc -ne 0 ] && [[ "$(tail -n1 <<<"$err")" == UNAVAILABLE* ]]; echo $?)"

      err=$(timeout 30 "$bin/greeter_client" --target "127.0.0.1:$port" --name x \
        --tls_ca "$tls/missing.pem" 2>&1 >/dev/null)
      rc=$?
      check "client with a missing CA file names it, exit non-zero ($transport)" \
        "$([ $rc -ne 0 ] && [[ "$err" == *"$tls/missing.pem"* ]]; echo $?)"

      server_stop TERM
      check "TLS server exits 0 on SIGTERM ($transport)" "$server_status"
    else
      check "TLS server starts ($transport)" 1
    fi
    [ "$server_status" = 0 ] || sed 's/^/  server stderr: /' "$errors"
    rm -f "$errors"
  done

  err=$(timeout 30 "$bin/greeter_server" --host 127.0.0.1 --port 0 \
    --tls_cert "$tls/server.pem" --tls_key "$tls/missing.key" 2>&1 >/dev/null)
  rc=$?
  check "server with a missing key file names it, exit non-zero" \
    "$([ $rc -ne 0 ] && [[ "$err" == *"$tls/missing.key"* ]]; echo $?)"
else
  check "openssl made the test certificates" 1
fi

echo "$((total - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
