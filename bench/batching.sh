#!/usr/bin/env bash
# batching.sh - continuous batching against llama.cpp's llama-server, one run (issue 6).
#
#   bench/batching.sh EXPERTD LLAMA_SERVER MODEL OUTDIR
#
# Starts the servers on MODEL, all up at once (the idle ones idle): expertd all resident;
# expertd with an expert cache of $CACHE (default 50% of the expert bytes, from `expertd
# inspect`), its misses read from a store `expertd pack` writes into OUTDIR; llama-server -np
# 16 holding the whole model; and - where cgroup v1 memory is writable (root) and CAP is not
# 0 - llama-server -np 16 under a memory cap with room for the same share of the expert
# bytes: cap = non-expert bytes + $CACHE + $LS_ANON_MIB (default 96 MiB: its buffers, KV and
# compute, measured at 80 MiB after 16 clients). That one reads a private copy of MODEL
# dropped from the page cache first, so every page it maps is charged to its cgroup;
# expertd-cache then runs from its own private copy in a cgroup with the same cap. For each
# concurrency in $LEVELS (default "1 4 16 64") it runs `expertd bench serve` against each
# server in turn (the order rotates per level, so no server always goes first), the same
# $PROMPTS requests of $IN prompt and $OUT output tokens (defaults 64, 128, 32) every time,
# and writes OUTDIR/<server>-c<C>.json (and expertd's /metrics before and after each level).
# Before the first level and after the last it measures the physical limits: memory read
# bandwidth (`expertd bench membw`) and, where fio is installed, fio's O_DIRECT QD32 1 MiB
# random-read bandwidth on the packed store.
#
# Then prints two Markdown tables. The first: output tok/s of the completed requests;
# streamed tok/s, which also counts the tokens of requests that failed mid-stream
# (llama-server ends some random-weight outputs with an SSE error from its output parser;
# their tokens were generated all the same); the ratios of streamed tok/s to llama-server's
# (and to the capped one's) and to the server's own c=1; TTFT/TPOT p50/p99; and each
# server's peak memory. The second: each server's ceiling at each level - the bandwidth
# limit divided by the bytes it must move per output token - and the share of it reached.
# Threads: $THREADS (default 2) each. REPORT_ONLY=1: print the tables of the files already
# in OUTDIR, running nothing.
set -euo pipefail
[ $# -eq 4 ] || { sed -n '2,31p' "$0"; exit 2; }
XD=$1 LS=$2 MODEL=$3 OUTDIR=$4
LEVELS=${LEVELS:-1 4 16 64} PROMPTS=${PROMPTS:-64} IN=${IN:-128} OUT=${OUT:-32} THREADS=${THREADS:-2}
LS_ANON_MIB=${LS_ANON_MIB:-96}
mkdir -p "$OUTDIR"
[ -n "${REPORT_ONLY:-}" ] || {
read -r EXPERT_BYTES NONEXPERT_BYTES < <("$XD" inspect "$MODEL" --json | python3 -c '
import json, sys
x = json.load(sys.stdin)["experts"]
print(x["expert_bytes"], x["non_expert_bytes"])')
if [ -z "${CACHE:-}" ]; then
    CACHE=$((EXPERT_BYTES / 2))
fi
CACHE_BYTES=$(python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)\s*([a-z]*)", sys.argv[1].strip().lower())
u = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
     "kib": 1024, "mib": 1024**2, "gib": 1024**3}
print(round(float(m.group(1)) * u[m.group(2)]))' "$CACHE")  # as expertd reads sizes
CGROOT=/sys/fs/cgroup/memory
CAP_BYTES=$((NONEXPERT_BYTES + CACHE_BYTES + LS_ANON_MIB * 1048576))
capped=0
if [ "${CAP:-1}" != 0 ] && [ -w "$CGROOT" ]; then capped=1; fi
pids=() cgs=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for cg in "${cgs[@]}"; do rmdir "$cg" 2>/dev/null || true; done
    rm -f "$OUTDIR/model-ls.gguf" "$OUTDIR/model-xd.gguf" "$OUTDIR/experts.xdpack"
}
trap cleanup EXIT
private_copy() { # a copy of MODEL none of whose pages are in the page cache
    cp "$MODEL" "$1"
    sync "$1"
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"
}
start() { # name port cgroup|- cmd...
    local name=$1 port=$2 cg=$3; shift 3
    if [ "$cg" = - ]; then
        "$@" > "$OUTDIR/$name.log" 2>&1 &
    else
        (echo "$BASHPID" > "$cg/cgroup.procs" && exec "$@") > "$OUTDIR/$name.log" 2>&1 &
    fi
    pids+=($!)
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "$name did not come up (see $OUTDIR/$name.log)" >&2
    return 1
}
P0=${PORT_BASE:-18200}
names=(expertd expertd-cache llama-server)
# expertd-cache reads its misses from a packed store, the deployment docs/expert-offload.md
# recommends: one 4 KiB-aligned extent per expert, so the budget buys whole experts (from the
# GGUF each of an expert's three slices is rounded out to 4 KiB, and half the expert bytes
# buys one slot fewer than half the experts)
"$XD" pack "$MODEL" -o "$OUTDIR/experts.xdpack" --quiet
xd_model=$MODEL xd_cg=-
if [ $capped = 1 ]; then
    for who in xd ls; do
        cg=$CGROOT/xdbatch-$who-$$
        mkdir "$cg"
        echo "$CAP_BYTES" > "$cg/memory.limit_in_bytes"
        cgs+=("$cg")
        private_copy "$OUTDIR/model-$who.gguf"
    done
    xd_model=$OUTDIR/model-xd.gguf xd_cg=$CGROOT/xdbatch-xd-$$
    names+=(llama-server-capped)
fi
start expertd "$P0" - "$XD" serve -m "$MODEL" --host 127.0.0.1 --port "$P0" --parallel 64 --ctx 1024 \
    -t "$THREADS" --quiet
start expertd-cache $((P0 + 1)) "$xd_cg" "$XD" serve -m "$xd_model" --host 127.0.0.1 \
    --port $((P0 + 1)) --parallel 64 --ctx 1024 -t "$THREADS" --expert-cache "$CACHE" \
    --expert-store "$OUTDIR/experts.xdpack" --quiet
start llama-server $((P0 + 2)) - "$LS" -m "$MODEL" --host 127.0.0.1 --port $((P0 + 2)) -np 16 \
    -c 4096 -t "$THREADS"
if [ $capped = 1 ]; then
    start llama-server-capped $((P0 + 3)) "$CGROOT/xdbatch-ls-$$" "$LS" -m "$OUTDIR/model-ls.gguf" \
        --host 127.0.0.1 --port $((P0 + 3)) -np 16 -c 4096 -t "$THREADS"
fi
"$XD" inspect "$MODEL" --json > "$OUTDIR/inspect.json"
limits() { # the physical limits, measured in this run: memory read bandwidth; fio's O_DIRECT
    # QD32 1 MiB random-read bandwidth on expertd-cache's store (where fio is installed)
    "$XD" bench membw -t "$THREADS" --json >> "$OUTDIR/limits.jsonl"
    command -v fio > /dev/null || return 0
    fio --name=xd --filename="$OUTDIR/experts.xdpack" --readonly --direct=1 --ioengine=io_uring \
        --rw=randread --bs=1M --iodepth=32 --runtime=10 --time_based --output-format=json 2>/dev/null |
        python3 -c 'import json, sys
print(json.dumps({"fio_randread_mb_s": json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"] / 1e6}))' \
        >> "$OUTDIR/limits.jsonl"
}
metrics() { # server-index concurrency before|after: expertd's counters around a level
    [ "$1" -gt 1 ] || curl -sf "http://127.0.0.1:$((P0 + $1))/metrics" \
        > "$OUTDIR/${names[$1]}-c$2.metrics.$3" || true
}
rm -f "$OUTDIR/limits.jsonl"
limits
ns=${#names[@]}
rot=0
for c in $LEVELS; do
    for i in $(seq 0 $((ns - 1))); do
        k=$(((i + rot) % ns))
        metrics "$k" "$c" before
        "$XD" bench serve --url "http://127.0.0.1:$((P0 + k))/v1/completions" --concurrency "$c" \
            --num-prompts "$PROMPTS" --input-len "$IN" --output-len "$OUT" --seed 1 --no-progress \
            --request-timeout 600 --max-duration "${MAX_DURATION:-900}" \
            --json "$OUTDIR/${names[$k]}-c$c.json" \
            > /dev/null 2>&1 || echo "${names[$k]} c=$c: bench serve exited $?" >&2
        metrics "$k" "$c" after
    done
    rot=$((rot + 1))
done
limits
echo "expert cache of expertd-cache: $CACHE ($CACHE_BYTES bytes of $EXPERT_BYTES); $PROMPTS requests of $IN + $OUT tokens; $THREADS threads"
for i in $(seq 0 $((ns - 1))); do # peak memory: VmHWM, and the cgroup's peak where capped
    st=/proc/${pids[$i]}/status
    hwm=$(awk '/^VmHWM/ {print $2}' "$st" 2>/dev/null || echo 0)
    line="${names[$i]}: peak RSS $((hwm / 1024)) MiB"
    case ${names[$i]} in
        expertd-cache) cg=$xd_cg ;;
        llama-server-capped) cg=$CGROOT/xdbatch-ls-$$ ;;
        *) cg=- ;;
    esac
    if [ "$cg" != - ]; then
        line+=", cgroup cap $((CAP_BYTES / 1048576)) MiB, cgroup peak $(($(cat "$cg/memory.max_usage_in_bytes") / 1048576)) MiB"
    fi
    echo "$line"
done
}
[ -z "${REPORT_ONLY:-}" ] || names=(expertd expertd-cache llama-server llama-server-capped)
python3 - "$OUTDIR" "$LEVELS" "${names[*]}" <<'PY'
import json, os, sys
d, levels, names = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def run(name, c):
    p = os.path.join(d, f"{name}-c{c}.json")
    return json.load(open(p))["runs"][0] if os.path.exists(p) else None
def streamed(r):
    """every token streamed, failed requests' too, per second of the level"""
    return sum(q["output_tokens"] for q in r["requests"]) / r["duration_s"] if r and r["duration_s"] else 0
names = [n for n in names if any(run(n, c) for c in levels)]
capped = "llama-server-capped" in names
head = "| server | concurrency | ok | failed | out tok/s | streamed tok/s | vs llama-server |"
head += " vs llama-server capped |" if capped else ""
head += " vs own c=1 | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
def ratio(o, peer):
    return f"{o / streamed(peer):.2f}x" if peer and streamed(peer) else "-"
for name in names:
    base = run(name, levels[0])
    for c in levels:
        r = run(name, c)
        if not r:
            print(f"| {name} | {c} |" + " - |" * (head.count("|") - 3))
            continue
        o, so = r["output_throughput"], streamed(r)
        vs = ratio(so, run("llama-server", c)) if not name.startswith("llama") else "-"
        vc = ratio(so, run("llama-server-capped", c)) if not name.startswith("llama") else "-"
        own = f"{so / streamed(base):.2f}x" if base and streamed(base) else "-"
        row = f"| {name} | {c} | {r['completed']} | {r['failed']} | {o:.1f} | {so:.1f} | {vs} |"
        row += f" {vc} |" if capped else ""
        row += (f" {own} | {r['ttft_ms']['median']:.0f} | {r['ttft_ms']['p99']:.0f} | "
                f"{r['tpot_ms']['median']:.1f} | {r['tpot_ms']['p99']:.1f} |")
        print(row)

# Each server's share of its physical limit (the rule where a multiple of a peer is not
# physically possible). Bytes per output token come from expertd's counters at that level:
# expertd and llama-server read weights from memory - per forward pass the non-expert
# weights less the embedding table (one row per token) plus every distinct expert run - so
# their ceiling is membw / bytes per token; llama-server batches at most 16 rows (-np 16), so
# it is given expertd's figure at min(c, 16) clients. expertd-cache reads its misses from
# disk: its ceiling is the lower of that memory ceiling and the best disk bandwidth seen (fio,
# or its own reads while any was in flight) / bytes read per output token.
lim = [json.loads(l) for l in open(os.path.join(d, "limits.jsonl"))] \
    if os.path.exists(os.path.join(d, "limits.jsonl")) else []
# the best of the samples (before the first level, after the last): the shared VM's bandwidths
# drift within a run, and the higher ceiling is the harder one to come near
mbs = [x["membw_gb_s"] for x in lim if "membw_gb_s" in x]
fios = [x["fio_randread_mb_s"] for x in lim if "fio_randread_mb_s" in x]
membw, fio = max(mbs, default=0) * 1e9, max(fios, default=0) * 1e6
ip = os.path.join(d, "inspect.json")
if not membw or not os.path.exists(ip):
    sys.exit(0)
ins = json.load(open(ip))
ex = ins["experts"]
per_expert = ex["expert_bytes"] / sum(l["n_expert"] for l in ex["layers"])
tb = {t["name"]: t["bytes"] for t in ins["tensors"]}
per_pass = ex["non_expert_bytes"] - (tb.get("token_embd.weight", 0) if "output.weight" in tb else 0)
def counters(name, c):
    out = []
    for when in ("before", "after"):
        p = os.path.join(d, f"{name}-c{c}.metrics.{when}")
        if not os.path.exists(p):
            return None
        m = {}
        for line in open(p):
            if line and not line.startswith("#") and "{" not in line.split(" ")[0]:
                k, _, v = line.partition(" ")
                m[k] = float(v)
        out.append(m)
    g = lambda k: out[1].get(k, 0) - out[0].get(k, 0)
    toks = g("expertd_engine_generated_tokens_total")
    if toks <= 0:
        return None
    mem = (g("expertd_forward_calls_total") * per_pass
           + g("expertd_experts_touched_total") * per_expert) / toks
    busy = g("expertd_expert_cache_io_busy_seconds_total")
    rd = g("expertd_expert_cache_read_bytes_total")
    return {"mem": mem, "read": rd / toks, "busy_bw": rd / busy if busy > 0 else 0}
print()
print("memory read bandwidth (expertd bench membw): " + ", ".join(f"{v:.1f}" for v in mbs)
      + " GB/s; fio O_DIRECT QD32 1 MiB randread: " + (", ".join(f"{v:.0f}" for v in fios)
      or "-") + " MB/s; the ceilings use the best of each")
print()
print("| server | concurrency | streamed tok/s | memory MB / token | disk MB / token | "
      "read MB/s while busy | ceiling tok/s | share of ceiling |")
print("|---|---|---|---|---|---|---|---|")
for name in names:
    if name == "llama-server-capped":
        continue  # its limit is the page cache thrashing under the cap, not a bandwidth
    for c in levels:
        r = run(name, c)
        src = counters("expertd" if name == "llama-server" else name,
                       min(int(c), 16) if name == "llama-server" else c)
        if name == "llama-server" and src is None:
            src = counters("expertd", c)
        if not r or not src:
            continue
        ceil = membw / src["mem"]
        disk, bw = "-", "-"
        if name == "expertd-cache" and src["read"] > 0:
            best = max(fio, src["busy_bw"])
            ceil = min(ceil, best / src["read"])
            disk, bw = f"{src['read'] / 1e6:.1f}", f"{src['busy_bw'] / 1e6:.0f}"
        so = streamed(r)
        print(f"| {name} | {c} | {so:.1f} | {src['mem'] / 1e6:.1f} | {disk} | {bw} | "
              f"{ceil:.0f} | {100 * so / ceil:.0f}% |")
PY
