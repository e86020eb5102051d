#!/usr/bin/env bash
# Configures and builds an optimised tree in build/release (or the directory given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
dir=${1:-build/release}
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRELLIS_BUILD_TESTS=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)"
