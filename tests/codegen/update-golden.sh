#!/usr/bin/env bash
# Regenerates the golden files of the codegen tests (tests/codegen/golden*/) with the current
# protoc-gen-trellis. Review the resulting diff (git diff tests/codegen) before committing.
#
# Usage: tests/codegen/update-golden.sh [build-dir]     (default build-dir: <repo>/build)
# The plugin is (re)built there first; the build dir must be configured already.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$(cd "${1:-$repo/build}" && pwd)"

cmake --build "$build" --target protoc-gen-trellis
plugin="$build/codegen/protoc-gen-trellis"
[ -x "$plugin" ] || plugin="$(find "$build" -type f -name protoc-gen-trellis -perm -u+x | head -n 1)"
[ -n "$plugin" ] || { echo "update-golden: no protoc-gen-trellis under $build" >&2; exit 1; }
protoc="$(command -v protoc)"
# The well-known types (google/protobuf/*.proto) sit next to the headers of libprotobuf.
include="$(dirname "$(dirname "$protoc")")/include"

regen() {  # regen <proto root> <golden dir> [plugin options]
  cmake -DPROTOC="$protoc" -DPLUGIN="$plugin" -DPROTO_ROOT="$here/$1" -DINCLUDE_DIR="$include" \
    -DGOLDEN_DIR="$here/$2" -DOPTIONS="${3:-}" -DUPDATE=ON -P "$here/check_golden.cmake"
}
regen protos golden
regen protos_streaming golden_skip_streaming skip_streaming
git -C "$repo" status --short -- tests/codegen/golden tests/codegen/golden_skip_streaming
