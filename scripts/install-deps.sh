#!/usr/bin/env bash
# Installs the Debian 12 packages Trellis builds, tests and benchmarks with, and (where npm is)
# the buf CLI into build/tools for the reflection tests. With --build-only, only what building
# the libraries and the examples needs (what examples/deploy/Dockerfile uses).
# Idempotent: when everything is present it prints nothing and exits 0.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc
  libprotobuf-dev libprotoc-dev protobuf-compiler
  libabsl-dev libboost1.81-dev grpc-proto prometheus-cpp-dev libnghttp2-dev zlib1g-dev libssl-dev
)
build_only=false
if [ "${1:-}" = "--build-only" ]; then
  build_only=true
else
  packages+=(
    libgtest-dev libgmock-dev libbenchmark-dev
    python3 python3-grpcio python3-protobuf python3-yaml prometheus
    clang-14 llvm-14 libclang-rt-14-dev openssl
  )
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -ne 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if $build_only; then
  exit 0
fi

# The buf CLI (npm package @bufbuild/buf, pinned), which the reflection tests run against Trellis:
# installed into build/tools of this checkout, never globally, and only where npm is. The build
# finds it there (CMake cache variable TRELLIS_BUF); without it those tests are skipped.
buf_version=1.75.0
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/tools"
buf="$tools_dir/node_modules/.bin/buf"
if [ "$("$buf" --version 2>/dev/null)" = "$buf_version" ]; then
  :
elif command -v npm >/dev/null 2>&1; then
  echo "install-deps: installing @bufbuild/buf@$buf_version into $tools_dir" >&2
  # --prefer-offline: once in npm's cache, a reinstall needs no network.
  if ! npm install --no-save --no-audit --no-fund --prefer-offline --loglevel=error \
      --prefix "$tools_dir" "@bufbuild/buf@$buf_version" >/dev/null; then
    echo "install-deps: npm could not install @bufbuild/buf; the buf reflection tests will be skipped" >&2
  fi
else
  echo "install-deps: npm not found: the buf CLI is not installed and the buf reflection tests" \
       "will be skipped (apt-get install npm, then run this again)" >&2
fi
