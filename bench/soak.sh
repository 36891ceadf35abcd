#!/usr/bin/env bash
# soak.sh - a bounded soak of `expertd serve`: moderate open-loop load for DURATION seconds
# while RSS and open file descriptors are sampled every INTERVAL seconds; then the verdict:
# the RSS trend (least-squares slope over the second half, after warm-up), the fd range, and
# p50/p99 end-to-end latency per minute (stable = the last minute's p99 within 1.5x of the
# first full minute's). Prints Markdown for docs/benchmarks.md; exits 1 on growth, a failed
# request or an unstable p99.
#
# usage: bench/soak.sh [MODEL]        (default: the tiny fixture)
#   EXPERTD=build/expertd DURATION=600 INTERVAL=5 RATE=8 INPUT=64 OUTPUT=32
#   EXTRA="--expert-cache 440KiB"     extra `serve` flags (e.g. to soak the offloaded path)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXPERTD=${EXPERTD:-$ROOT/build/expertd}
MODEL=${1:-$ROOT/tests/fixtures/mixtral-tiny-q8_0.gguf}
DURATION=${DURATION:-600}
INTERVAL=${INTERVAL:-5}
RATE=${RATE:-8}
INPUT=${INPUT:-64}
OUTPUT=${OUTPUT:-32}
EXTRA=${EXTRA:-}
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck disable=SC2086
"$EXPERTD" serve -m "$MODEL" --port 0 --port-file "$WORK/port" --quiet $EXTRA >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do [ -s "$WORK/port" ] && break; sleep 0.05; done
PORT=$(cat "$WORK/port")
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$PORT/health")" = 200 ] && break
  sleep 0.1
done

# sampler: seconds, RSS KiB, open fds
(
  t0=$(date +%s.%N)
  while kill -0 "$PID" 2>/dev/null; do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$PID/fd" 2>/dev/null | wc -l)
    echo "$(echo "$(date +%s.%N) - $t0" | bc) $rss $fds"
    sleep "$INTERVAL"
  done
) >"$WORK/samples" &
SAMPLER=$!

N=$(python3 -c "print(int($RATE * $DURATION * 2))") # more than the duration can send
"$EXPERTD" bench serve --url "http://127.0.0.1:$PORT/v1/completions" --rate "$RATE" \
  --num-prompts "$N" --input-len "$INPUT" --output-len "$OUTPUT" --seed 1 --no-progress --quiet \
  --max-duration "$DURATION" --request-timeout 120 --json "$WORK/bench.json" || true
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
kill -TERM "$PID"
wait "$PID" && drained=yes || drained=no
PID=

python3 - "$WORK/samples" "$WORK/bench.json" "$DURATION" "$RATE" "$drained" "$MODEL" "$EXTRA" <<'EOF'
import json, statistics as st, sys
samples = [tuple(float(x) for x in l.split()) for l in open(sys.argv[1]) if l.strip()]
run = json.load(open(sys.argv[2]))["runs"][0]
dur, rate, drained, model, extra = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
half = [s for s in samples if s[0] >= samples[-1][0] / 2]
xs = [s[0] / 60 for s in half]; ys = [s[1] / 1024 for s in half]
mx, my = st.mean(xs), st.mean(ys)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
fds = [int(s[2]) for s in samples]
reqs = [r for r in run["requests"] if r.get("ok")]
failed = run["failed"]
by_min = {}
for r in reqs:
    by_min.setdefault(int((r["start_s"]) // 60), []).append(r["e2e_ms"])
def q(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
mins = sorted(m for m in by_min if len(by_min[m]) >= 20)
print(f"Soak: `expertd serve -m {model.split('/')[-1]} {extra}`, open loop {rate:g} req/s for {dur:g} s "
      f"({len(reqs)} requests completed, {failed} failed, {len(samples)} samples of RSS and fds)\n")
print("| minute | requests | E2E p50 ms | E2E p99 ms | RSS MB (end of minute) | open fds |")
print("|---|---|---|---|---|---|")
for m in mins:
    end = [s for s in samples if s[0] < (m + 1) * 60] or samples
    print(f"| {m} | {len(by_min[m])} | {q(by_min[m], .5):.1f} | {q(by_min[m], .99):.1f} | {end[-1][1]/1024:.1f} | {int(end[-1][2])} |")
p99_first, p99_last = (q(by_min[mins[0]], .99), q(by_min[mins[-1]], .99)) if mins else (0, 0)
rss_first, rss_max = samples[0][1] / 1024, max(s[1] for s in samples) / 1024
if failed:
    print(f"\nfailed requests by error: {run.get('errors')}; first: {run.get('first_error')}")
print(f"\nRSS {rss_first:.1f} MB at start, {rss_max:.1f} MB peak; slope over the second half "
      f"{slope:+.3f} MB/min; open fds {min(fds)}..{max(fds)}; p99 first/last full minute "
      f"{p99_first:.1f}/{p99_last:.1f} ms; drained and exited 0 on SIGTERM: {drained}")
grow = slope > 0.5            # MB per minute after warm-up
unstable = p99_first and p99_last > 1.5 * p99_first
bad = grow or unstable or failed or drained != "yes" or max(fds) - min(fds) > 16
print("verdict:", "FAIL" if bad else "ok", "(growth > 0.5 MB/min, p99 > 1.5x, a failed request, fd drift > 16 or no clean exit fail it)")
sys.exit(1 if bad else 0)
EOF
