#!/usr/bin/env bash
# batching.sh - continuous batching against llama.cpp's llama-server, one run (issue 6).
#
#   bench/batching.sh EXPERTD LLAMA_SERVER MODEL OUTDIR
#
# Starts three servers on MODEL, all up at once (the idle ones idle): expertd all resident,
# expertd with an expert cache of $CACHE (default 50% of the expert bytes, from `expertd
# inspect`), and llama-server -np 16. For each concurrency in $LEVELS (default "1 4 16 64") it
# runs `expertd bench serve` against each server in turn (the order rotates per level, so no
# server always goes first), the same $PROMPTS requests of $IN prompt and $OUT output tokens
# (defaults 64, 128, 32) every time, and writes OUTDIR/<server>-c<C>.json. Then prints one
# Markdown table: output tok/s, the ratio to llama-server and to the server's own c=1, and
# TTFT/TPOT p50/p99. Threads: $THREADS (default 2) for every server.
set -euo pipefail
[ $# -eq 4 ] || { sed -n '2,14p' "$0"; exit 2; }
XD=$1 LS=$2 MODEL=$3 OUTDIR=$4
LEVELS=${LEVELS:-1 4 16 64} PROMPTS=${PROMPTS:-64} IN=${IN:-128} OUT=${OUT:-32} THREADS=${THREADS:-2}
mkdir -p "$OUTDIR"
if [ -z "${CACHE:-}" ]; then
    exp=$("$XD" inspect "$MODEL" --json | python3 -c '
import json, sys
print(json.load(sys.stdin)["experts"]["expert_bytes"])')
    CACHE=$((exp / 2 / 1048576))MiB
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { # name port cmd...
    local name=$1 port=$2; shift 2
    "$@" > "$OUTDIR/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "$name did not come up (see $OUTDIR/$name.log)" >&2
    return 1
}
P0=${PORT_BASE:-18200}
start expertd $P0 "$XD" serve -m "$MODEL" --host 127.0.0.1 --port $P0 --parallel 64 --ctx 1024 \
    -t "$THREADS" --quiet
start expertd-cache $((P0 + 1)) "$XD" serve -m "$MODEL" --host 127.0.0.1 --port $((P0 + 1)) \
    --parallel 64 --ctx 1024 -t "$THREADS" --expert-cache "$CACHE" --quiet
start llama-server $((P0 + 2)) "$LS" -m "$MODEL" --host 127.0.0.1 --port $((P0 + 2)) -np 16 \
    -c 4096 -t "$THREADS"
names=(expertd expertd-cache llama-server)
rot=0
for c in $LEVELS; do
    for i in 0 1 2; do
        k=$(((i + rot) % 3))
        "$XD" bench serve --url "http://127.0.0.1:$((P0 + k))/v1/completions" --concurrency "$c" \
            --num-prompts "$PROMPTS" --input-len "$IN" --output-len "$OUT" --seed 1 --no-progress \
            --request-timeout 600 --max-duration 900 --json "$OUTDIR/${names[$k]}-c$c.json" \
            > /dev/null 2>&1 || echo "${names[$k]} c=$c: bench serve exited $?" >&2
    done
    rot=$((rot + 1))
done
echo "expert cache of expertd-cache: $CACHE; $PROMPTS requests of $IN + $OUT tokens; $THREADS threads"
python3 - "$OUTDIR" "$LEVELS" <<'PY'
import json, os, sys
d, levels = sys.argv[1], sys.argv[2].split()
def run(name, c):
    p = os.path.join(d, f"{name}-c{c}.json")
    return json.load(open(p))["runs"][0] if os.path.exists(p) else None
print("| server | concurrency | ok | failed | out tok/s | vs llama-server | vs own c=1 | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in ["expertd", "expertd-cache", "llama-server"]:
    base = run(name, levels[0])
    for c in levels:
        r, peer = run(name, c), run("llama-server", c)
        if not r:
            print(f"| {name} | {c} | - | - | - | - | - | - | - | - | - |")
            continue
        o = r["output_throughput"]
        vs = f"{o / peer['output_throughput']:.2f}x" if peer and name != "llama-server" and peer["output_throughput"] else "-"
        own = f"{o / base['output_throughput']:.2f}x" if base and base["output_throughput"] else "-"
        print(f"| {name} | {c} | {r['completed']} | {r['failed']} | {o:.1f} | {vs} | {own} | "
              f"{r['ttft_ms']['median']:.0f} | {r['ttft_ms']['p99']:.0f} | "
              f"{r['tpot_ms']['median']:.1f} | {r['tpot_ms']['p99']:.1f} |")
PY
