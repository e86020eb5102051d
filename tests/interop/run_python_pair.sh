#!/bin/bash
# Runs the python interop client against the python interop server (both python3-grpcio).
#
# Generates the grpc.testing modules from Debian's grpc-proto package into a temporary
# directory, starts interop_server.py on a free port, runs interop_client.py --test_case all
# against it and stops the server. The exit status is the client's.
#
# Usage: tests/interop/run_python_pair.sh [extra client flags, e.g. --test_case ping_pong]
# Environment: PYTHON (default /usr/bin/python3, which has python3-grpcio and python3-protobuf),
#              GRPC_PROTO_DIR (default /usr/share/grpc-proto), PROTOC, GRPC_PYTHON_PLUGIN.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-/usr/bin/python3}
proto_dir=${GRPC_PROTO_DIR:-/usr/share/grpc-proto}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}

work=$(mktemp -d)
server_pid=
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$protoc" --python_out="$work" --grpc_python_out="$work" \
  --plugin=protoc-gen-grpc_python="$plugin" -I"$proto_dir" \
  grpc/testing/test.proto grpc/testing/messages.proto grpc/testing/empty.proto
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"

# The server's stdin is the coprocess pipe, so it also exits if this script dies.
coproc SERVER { exec "$python" "$here/interop_server.py" --port 0 --exit-on-stdin-eof; }
# shellcheck disable=SC2153  # SERVER_PID is set by coproc
server_pid=$SERVER_PID
if ! read -r -t 30 line <&"${SERVER[0]}"; then
  echo "the interop server did not start within 30 s" >&2
  exit 1
fi
if [[ ! $line =~ ^listening\ on\ port\ ([0-9]+)$ ]]; then
  echo "unexpected interop server output: $line" >&2
  exit 1
fi
port=${BASH_REMATCH[1]}

status=0
"$python" "$here/interop_client.py" --server_host=127.0.0.1 --server_port="$port" \
  --test_case=all "$@" || status=$?

kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
server_pid=
if [[ $server_status -ne 0 ]]; then
  echo "the interop server exited with status $server_status" >&2
fi
exit "$status"
