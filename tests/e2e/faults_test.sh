#!/usr/bin/env bash
# faults_test.sh - disk faults, client disconnects and SIGTERM while `expertd serve` is under
# load (tests/e2e/faults.py), once as is and once with a KV pool so small that requests are
# preempted and recomputed: every accepted request must complete or end with an explicit
# error - none may vanish - and the server must drain and exit 0.
#   bash tests/e2e/faults_test.sh [BUILD_DIR]        (default: build)
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$BUILD/expertd
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cp tests/fixtures/mixtral-tiny-q8_0.gguf "$WORK/m.gguf"
"$BIN" pack "$WORK/m.gguf" --quiet >/dev/null || { echo "pack failed"; echo "0 passed, 1 failed"; exit 1; }
pass=0 fail=0
# run LABEL EXTRA_SERVE_FLAGS...: one server under the faults; checks no request vanished, a
# clean exit 0 after the drain and the failed reads in the log; the JSON report in $WORK/LABEL
run() { # run LABEL "FAULTS.PY FLAGS" SERVE_FLAGS...
  local label=$1 fflags=$2; shift 2
  rm -f "$WORK/port"
  "$BIN" serve -m "$WORK/m.gguf" --port 0 --port-file "$WORK/port" --quiet --expert-cache 440KiB \
    --parallel 4 --drain-timeout 3 "$@" >"$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do [ -s "$WORK/port" ] && break; sleep 0.05; done
  PORT=$(cat "$WORK/port")
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$PORT/health")" = 200 ] && break
    sleep 0.05
  done
  if python3 tests/e2e/faults.py "$PORT" m "$PID" "$WORK/m.xdpack" --requests "${XD_FAULTS_N:-120}" \
    --sigterm-after "${XD_FAULTS_SIGTERM:-6}" $fflags >"$WORK/$label"; then
    echo "ok $label: no request vanished: $(cat "$WORK/$label")"; pass=$((pass + 1))
  else
    echo "FAIL $label: $(cat "$WORK/$label")"; fail=$((fail + 1))
  fi
  for _ in $(seq 1 400); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  if wait "$PID"; then echo "ok $label: server drained and exited 0 after SIGTERM"; pass=$((pass + 1))
  else echo "FAIL $label: server exit status $?"; tail -20 "$WORK/log"; fail=$((fail + 1)); fi
  PID=
  [ -z "$fflags" ] || return 0 # the store was left alone
  if grep -q 'read at offset' "$WORK/log"; then echo "ok $label: the log names the failed reads"; pass=$((pass + 1))
  else echo "FAIL $label: no read failure was logged"; fail=$((fail + 1)); fi
}
run faults ""
# KV exhaustion: every request at once (all 4 slots busy), 32-40 tokens each, and a pool of 6
# blocks of 16 positions where 4 sequences need up to 12: preemption and recomputation, with the
# disconnects and the SIGTERM; the store is left alone
run faults+kv-exhaustion "--no-corrupt --burst --min-tokens 32" --kv-cache 96KiB
pre=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["counters_before_sigterm"].get("engine_preemptions_total", 0)))' "$WORK/faults+kv-exhaustion")
if [ "${pre:-0}" -gt 0 ]; then echo "ok faults+kv-exhaustion: $pre preemptions happened"; pass=$((pass + 1))
else echo "FAIL faults+kv-exhaustion: no preemption happened"; fail=$((fail + 1)); fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
