#!/usr/bin/env bash
# The watch_feed example (examples/watch_feed): three watchers on server-streaming Watch calls
# each receive all five updates fanned out through trellis::sync::broadcast, in order, then the
# feed closes and every stream ends OK. The program bounds its own waits; `timeout` bounds the
# run. Usage: watch_feed_example_test.sh WATCH_FEED_BINARY
set -uo pipefail
expected=''
for w in 0 1 2; do
  for i in 1 2 3 4 5; do expected+="watcher-$w: #$i update $i"$'\n'; done
  expected+="watcher-$w: end OK"$'\n'
done
expected+='watch_feed: every watcher saw every update'
actual=$(timeout 60 "$1" --watchers 3 --updates 5)
status=$?
if [ "$status" != 0 ]; then
  echo "FAILED: watch_feed exited with status $status"; echo "$actual"; exit 1
fi
if [ "$actual" != "$expected" ]; then
  echo "FAILED: unexpected output"; diff <(echo "$expected") <(echo "$actual"); exit 1
fi
echo "ok: watch_feed fans every update out to every watcher"
