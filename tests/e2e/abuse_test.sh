#!/usr/bin/env bash
# abuse_test.sh - 10,000 malformed or hostile requests (tests/e2e/abuse.py: garbage bytes, bad
# framing, oversized and truncated parts, hostile JSON, bad parameters, early disconnects) at
# `expertd serve` on 127.0.0.1 while a well-behaved client keeps making valid completions: every
# valid request must succeed, no hostile one may get a 5xx or crash the server, and the server
# must exit cleanly on SIGTERM afterwards (under ASan: no leak, no error).
#   bash tests/e2e/abuse_test.sh [BUILD_DIR] [N_HOSTILE]      (defaults: build, 10000)
# The server runs with 2-second header/body timeouts so that the slow-client kinds (truncated
# bodies, half requests) are dropped quickly; the defaults (10 s / 30 s) would only make the
# run longer. Bounded: abuse.py stops after 600 s whatever happens.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
N=${2:-10000}
BIN=$BUILD/expertd
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
"$BIN" serve -m tests/fixtures/mixtral-tiny-q8_0.gguf --port 0 --port-file "$WORK/port" --quiet \
  --header-timeout 2 --body-timeout 2 --max-queue 512 --max-connections 1024 \
  >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do [ -s "$WORK/port" ] && break; sleep 0.05; done
PORT=$(cat "$WORK/port")
for _ in $(seq 1 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$PORT/health")" = 200 ] && break
  sleep 0.05
done
pass=0 fail=0
if python3 tests/e2e/abuse.py "$PORT" mixtral-tiny-q8_0 --hostile "$N" --max-seconds 600 \
  >"$WORK/out.json"; then
  echo "ok abuse: $(cat "$WORK/out.json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["hostile_sent"], "hostile requests in", d["seconds"], "s; responses", d["responses"], "; valid ok", d["valid_ok"], "failed", d["valid_failed"])')"
  pass=$((pass + 1))
else
  echo "FAIL abuse: $(cat "$WORK/out.json")"; fail=$((fail + 1))
fi
if kill -0 "$PID" 2>/dev/null; then
  kill -TERM "$PID"
  for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  if wait "$PID"; then echo "ok server exits 0 on SIGTERM after the abuse"; pass=$((pass + 1))
  else echo "FAIL server exit status $? after SIGTERM"; tail -20 "$WORK/log"; fail=$((fail + 1)); fi
  PID=
else
  echo "FAIL server died during the abuse"; tail -20 "$WORK/log"; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
