#!/bin/sh
# Runs a simulator binary that MUST find a violation: passes only when it exits
# non-zero and its summary line reports violations > 0.
out=$("$@")
rc=$?
printf '%s\n' "$out" | tail -n 40
if [ "$rc" -eq 0 ]; then
    echo "expect-violation: the simulator exited 0 (no violation found)"
    exit 1
fi
printf '%s\n' "$out" | grep -q '^seeds=[0-9]* events=[0-9]* violations=[1-9]' || {
    echo "expect-violation: no summary line with violations > 0"
    exit 1
}
exit 0
