#!/usr/bin/env bash
# The main job: builds, starts the helloworld Greeter server on a free port, calls it with the
# Trellis client, prints the reply, then stops the server with SIGTERM (graceful shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh build/release
bin=build/release/examples/helloworld
name=${1:-world}

out=$(mktemp)
trap 'rm -f "$out"; [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true' EXIT
"$bin/greeter_server" --host 127.0.0.1 --port 0 >"$out" &
server=$!
port=
for _ in $(seq 1 100); do  # up to 10 s for the server to print its port
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$out")
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || { echo "greeter_server exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "greeter_server did not report its port" >&2; exit 1; }
echo "greeter_server is listening on 127.0.0.1:$port"
"$bin/greeter_client" --target "127.0.0.1:$port" --name "$name"
kill -TERM "$server"
wait "$server"
server=
echo "greeter_server shut down cleanly"
