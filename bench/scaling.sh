#!/usr/bin/env bash
# scaling.sh - how much batching multiplies expertd's output rate: N clients against one,
# measured side by side in alternating rounds (issue 6's "16 clients >= 4x single stream").
#
#   bench/scaling.sh EXPERTD MODEL [OUT.jsonl]
#
# Starts `expertd serve` on MODEL ($SERVE_ARGS added, e.g. "--expert-cache 93585408") and,
# for each of $ROUNDS rounds (default 5), runs `expertd bench serve` at concurrency 1 with
# $PROMPTS1 requests, then at $CLIENTS (default 16) with $PROMPTS requests (defaults 16 and
# 64; the order flips every round), all of $IN prompt and $OUT output tokens (defaults 16 and
# 128). One round's ratio is its two rates divided, so the VM's drift between rounds cancels;
# prints every round and the median of the ratios, and appends one JSON line per level and
# round to OUT.jsonl if given. Threads: $THREADS (default 2).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0"; exit 2; }
XD=$1 MODEL=$2 JSONL=${3:-}
ROUNDS=${ROUNDS:-5} CLIENTS=${CLIENTS:-16} PROMPTS1=${PROMPTS1:-16} PROMPTS=${PROMPTS:-64}
IN=${IN:-16} OUT=${OUT:-128} THREADS=${THREADS:-2} PORT=${PORT:-18250}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
# shellcheck disable=SC2086 # SERVE_ARGS is a list of options
"$XD" serve -m "$MODEL" --host 127.0.0.1 --port "$PORT" --parallel 64 --ctx 1024 -t "$THREADS" \
    --quiet ${SERVE_ARGS:-} > "$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    sleep 0.5
done
level() { # concurrency prompts -> output tok/s
    "$XD" bench serve --url "http://127.0.0.1:$PORT/v1/completions" --concurrency "$1" \
        --num-prompts "$2" --input-len "$IN" --output-len "$OUT" --seed 1 --no-progress \
        --request-timeout 600 --json "$tmp/r.json" > /dev/null 2>&1 || true
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))["runs"][0]
print(r["output_throughput"] if r["failed"] == 0 else 0)' "$tmp/r.json"
    if [ -n "$JSONL" ]; then
        python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))["runs"][0]
r.pop("requests", None); print(json.dumps(r))' "$tmp/r.json" >> "$JSONL"
    fi
}
level 1 4 > /dev/null # warm-up
ratios=()
echo "| round | c=1 out tok/s | c=$CLIENTS out tok/s | ratio |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        a=$(level 1 "$PROMPTS1"); b=$(level "$CLIENTS" "$PROMPTS")
    else
        b=$(level "$CLIENTS" "$PROMPTS"); a=$(level 1 "$PROMPTS1")
    fi
    x=$(python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{b / a:.2f}' if a > 0 else 'nan')" "$a" "$b")
    ratios+=("$x")
    printf '| %d | %.1f | %.1f | %sx |\n' "$r" "$a" "$b" "$x"
done
python3 -c "import statistics, sys; print(f'median ratio c=$CLIENTS / c=1 over $ROUNDS rounds: {statistics.median(map(float, sys.argv[1:])):.2f}x')" "${ratios[@]}"
