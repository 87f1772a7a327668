#!/bin/sh
# Replays one seed twice with SIM_SEED and -v: the two outputs (every event,
# the core's log lines, the verdict) must be byte-for-byte identical.
set -u
bin=$1
shift
a=$(mktemp) || exit 1
b=$(mktemp) || { rm -f "$a"; exit 1; }
trap 'rm -f "$a" "$b"' EXIT
SIM_SEED=${SEED:-7} "$bin" "$@" -v > "$a" 2>&1
SIM_SEED=${SEED:-7} "$bin" "$@" -v > "$b" 2>&1
lines=$(wc -l < "$a")
if [ "$lines" -lt 1000 ]; then
    echo "replay-identical: only $lines lines of trace"
    exit 1
fi
if ! cmp -s "$a" "$b"; then
    echo "replay-identical: two replays of one seed differ:"
    diff "$a" "$b" | head -20
    exit 1
fi
echo "replay-identical: $lines identical lines"
