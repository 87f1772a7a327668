#!/bin/sh
# Checks ringkv-lincheck's exit codes and output on real and generated histories.
# usage: cli_exit_codes.sh LINCHECK GEN KNOSSOS_DIR
set -u
LC=$1
GEN=$2
KD=$3
TMP=$(mktemp -d /tmp/lincheck-cli.XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
fails=0

expect() { # expect CODE DESCRIPTION -- command...
    want=$1
    what=$2
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err"
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, expected $want"
        cat "$TMP/out" "$TMP/err" | head -20
        fails=$((fails + 1))
    else
        echo "ok: $what (exit $got)"
    fi
}

expect 0 "good cas-register" -- "$LC" "$KD/cas-register/good/memstress3-0.edn"
expect 1 "bad cas-register" -- "$LC" "$KD/cas-register/bad/rethink-fail-minimal.edn"
grep -q "could not be placed" "$TMP/out" || { echo "FAIL: no report"; fails=$((fails + 1)); }
expect 1 "mutex" -- "$LC" --model mutex "$KD/mutex/bad/etcd.edn"
expect 0 "multi-register" -- "$LC" --model multi-register "$KD/multi-register/good/multi-register.edn"
expect 1 "json output" -- "$LC" --json "$KD/cas-register/bad/bad-analysis.edn"
grep -q '"verdict":"invalid"' "$TMP/out" || { echo "FAIL: no JSON verdict"; fails=$((fails + 1)); }

"$GEN" --ops 2000 --keys 10 --seed 3 >"$TMP/g.jsonl" || fails=$((fails + 1))
"$GEN" --ops 2000 --keys 10 --seed 3 --corrupt >"$TMP/b.jsonl" || fails=$((fails + 1))
expect 0 "generated jsonl" -- "$LC" "$TMP/g.jsonl"
grep -q "timing:" "$TMP/out" || { echo "FAIL: no timing"; fails=$((fails + 1)); }
expect 1 "corrupted jsonl" -- "$LC" "$TMP/b.jsonl"
cp "$TMP/g.jsonl" "$TMP/g.txt"
expect 0 "jsonl sniffed by content" -- "$LC" "$TMP/g.txt"
expect 0 "forced format" -- "$LC" --format jsonl "$TMP/g.txt"

# A hard invalid history with a tiny memory budget: unknown, not a verdict.
"$GEN" --ops 3000 --keys 1 --procs 40 --info 0.05 --seed 9 --corrupt >"$TMP/h.jsonl"
expect 2 "memory budget" -- "$LC" --memory-limit 0.001 "$TMP/h.jsonl"
grep -q "unknown" "$TMP/out" || { echo "FAIL: no unknown reason"; fails=$((fails + 1)); }

printf '[{:process 1 :type :ok :f :read' >"$TMP/bad.edn"
expect 3 "parse error" -- "$LC" "$TMP/bad.edn"
grep -q "EDN line 1" "$TMP/err" || { echo "FAIL: no parse message"; fails=$((fails + 1)); }
expect 3 "missing file" -- "$LC" "$TMP/nope.edn"
expect 3 "no file" -- "$LC"
expect 3 "bad model" -- "$LC" --model queue "$TMP/g.jsonl"
expect 3 "bad time limit" -- "$LC" --time-limit x "$TMP/g.jsonl"
expect 3 "wrong model for ops" -- "$LC" --model register "$TMP/g.jsonl"
expect 0 "help" -- "$LC" --help

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
