#!/usr/bin/env bash
# Runs one gRPC interop client against one interop server, as the interop ctest tests do:
# starts SERVER_COMMAND (which prints a line "... listening on port N" once it serves, as
# interop_server and interop_server.py do; give it port 0), runs CLIENT_COMMAND --server_port=N
# with a bounded run time, and then stops the server with SIGTERM, whatever happened (on any
# exit of this script too). Passes when the client passed every case (exit 0) and the server
# then stopped cleanly (exit 0).
#
# With --tls, the pair talks TLS: certificates made here (tests/lib/certs.sh) into a temporary
# directory, the server given --use_tls=true --tls_cert --tls_key with a certificate that names
# only interop.trellis.test, the client --use_tls=true --tls_ca and
# --server_host_override=interop.trellis.test (without which it would refuse the server it
# reaches by address).
#
# Usage: run_interop_pair.sh [--tls] SERVER_COMMAND... -- CLIENT_COMMAND...
# Environment: INTEROP_CLIENT_TIMEOUT (seconds, default 240), PYTHONPATH for python peers.
set -uo pipefail

use_tls=0
if [[ ${1:-} == --tls ]]; then
  use_tls=1
  shift
fi
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

# shellcheck source=SCRIPTDIR/../lib/server.sh
source "$(dirname "$0")/../lib/server.sh"
tls=
trap 'server_stop; [[ -z $tls ]] || rm -rf "$tls"' EXIT
trap 'exit 130' INT TERM

if [[ $use_tls == 1 ]]; then
  # shellcheck source=SCRIPTDIR/../lib/certs.sh
  source "$(dirname "$0")/../lib/certs.sh"
  tls=$(mktemp -d) || exit 1
  make_test_certs "$tls" || { echo "openssl could not make the test certificates" >&2; exit 1; }
  server_cmd+=(--use_tls=true --tls_cert="$tls/named.pem" --tls_key="$tls/named.key")
  client_cmd+=(--use_tls=true --tls_ca="$tls/ca.pem" --server_host_override=interop.trellis.test)
fi

server_start "${server_cmd[@]}" || exit 1

echo "client: ${client_cmd[*]} --server_port=$port"
client_status=0
timeout --kill-after=10 "${INTEROP_CLIENT_TIMEOUT:-240}" "${client_cmd[@]}" \
  --server_port="$port" || client_status=$?
if [[ $client_status -eq 124 ]]; then echo "the client timed out" >&2; fi

server_stop TERM
echo "client exit status $client_status, server exit status $server_status"
[[ $client_status -eq 0 && $server_status -eq 0 ]]
