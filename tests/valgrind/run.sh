#!/usr/bin/env bash
# Runs the decoders (frames, peer and client protobuf, EDN/JSONL histories)
# and the client library's unit tests under valgrind, on the Release build
# (valgrind and ASan do not mix; scripts/test exports RINGKV_RELEASE_BIN).
# Exit 77 (ctest: skipped) when there is no Release build to run.
set -euo pipefail
src=$1
shared=$2
rel=${RINGKV_RELEASE_BIN:-}
if [ -z "$rel" ] || [ ! -x "$rel/tests/fuzz/fuzz_replay" ]; then
    echo "valgrind: no Release build (set RINGKV_RELEASE_BIN, as scripts/test does)"
    exit 77
fi
command -v valgrind >/dev/null || { echo "valgrind: not installed"; exit 1; }
vg=(valgrind -q --error-exitcode=99 --leak-check=full
    --errors-for-leak-kinds=definite,indirect --track-origins=no)
fail=0
run() {
    local want=$1
    shift
    local rc=0
    "${vg[@]}" "$@" >/tmp/rk-valgrind.$$.out 2>&1 || rc=$?
    if [ $rc -eq 99 ]; then
        echo "FAIL (valgrind errors): $*"
        tail -40 /tmp/rk-valgrind.$$.out
        fail=1
    elif [ "$want" != any ] && [ $rc -ne "$want" ]; then
        echo "FAIL (exit $rc, wanted $want): $*"
        tail -20 /tmp/rk-valgrind.$$.out
        fail=1
    else
        echo "ok: $(basename "$1") $(basename "${@: -1}")"
    fi
    rm -f /tmp/rk-valgrind.$$.out
}
run 0 "$rel/tests/fuzz/fuzz_replay" "$src/tests/fuzz/corpus"
kd=$shared/jepsen/knossos-data
if [ -d "$kd" ]; then
    n=0
    for f in "$kd"/cas-register/good/*.edn "$kd"/cas-register/bad/*.edn; do
        [ -f "$f" ] || continue
        run any "$rel/jepsen/lincheck/ringkv-lincheck" --model cas-register "$f"
        n=$((n + 1))
        [ $n -ge 4 ] && break
    done
fi
for t in tests/unit/client/test_client_api tests/unit/client/test_client_policy \
         tests/unit/proto/test_proto; do
    [ -x "$rel/$t" ] && run 0 "$rel/$t"
done
exit $fail
