#!/usr/bin/env bash
# offload.sh - the expert-offloading benchmark: decode speed, hit rate and disk throughput of
# `expertd run --expert-cache` on a generated Mixtral-layout model several times larger than
# the budget, next to (in the same run, interleaved) fio's O_DIRECT QD32 read bandwidth on the
# same file, llama.cpp's decode under the same memory cap (cgroup v1), and the trace replay of
# LRU and Belady at the same cache sizes. Prints Markdown tables and writes every sample as
# JSON lines to $DIR/results.jsonl.
#
# usage: bench/offload.sh                 (environment variables below change the defaults)
#   EXPERTD=build/expertd  DIR=/tmp/xdbench  SIZE=3.8G  N=32  REPEATS=3  THREADS=1
#   BUDGETS="25 50 75"     percent of all expert bytes
#   LLAMA_BENCH=/work/peer/llama.cpp/build/bin/llama-bench   (empty: skip llama.cpp)
#   LLAMA_N=8              tokens llama.cpp decodes under the cap (it is slow there)
#   LLAMA_TIMEOUT=900      seconds before a capped llama.cpp run is given up
#   OVERHEAD_MIB=160       the cap's allowance above budget + non-expert weights
#   KEEP=0                 1: keep the model and store in DIR afterwards
#   EXTRA=1                0: skip the no-prefetch / per-layer / pread / chunk variants
#
# The model is `expertd gen --arch mixtral --type q8_0 --d-model 2048 --ff 5632 --experts 8
# --top-k 2 --skew 1 --size $SIZE` (about 36.8 MB per expert) and its packed store. Each
# expertd run drops the model's pages from the page cache first (POSIX_FADV_DONTNEED), as
# does each llama.cpp run (its mmap would otherwise be served from pages charged to another
# cgroup, outside the cap). Needs root for the cgroup; skips llama.cpp's capped run otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXPERTD=${EXPERTD:-$ROOT/build/expertd}
DIR=${DIR:-/tmp/xdbench}
SIZE=${SIZE:-3.8G}
N=${N:-32}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-1}
BUDGETS=${BUDGETS:-25 50 75}
LLAMA_BENCH=${LLAMA_BENCH-/work/peer/llama.cpp/build/bin/llama-bench}
LLAMA_N=${LLAMA_N:-8}
LLAMA_TIMEOUT=${LLAMA_TIMEOUT:-900}
OVERHEAD_MIB=${OVERHEAD_MIB:-160}
KEEP=${KEEP:-0}
EXTRA=${EXTRA:-1}
PROMPT="The quick brown fox jumps over the lazy dog"
MODEL=$DIR/mixtral.gguf
STORE=$DIR/mixtral.xdpack
OUT=$DIR/results.jsonl
CG=/sys/fs/cgroup/memory/xdbench-$$

mkdir -p "$DIR"
# REPORT_ONLY=FILE: print the tables of an earlier run's results (e.g. several runs' results
# concatenated) without measuring anything
if [ -n "${REPORT_ONLY:-}" ]; then OUT=$REPORT_ONLY; KEEP=1; else : >"$OUT"; fi
cleanup() {
    [ -d "$CG" ] && rmdir "$CG" 2>/dev/null || true
    if [ "$KEEP" != 1 ]; then rm -f "$MODEL" "$STORE" "$DIR"/trace-*.txt; fi
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }
drop_cache() { # drop a file's clean pages from the page cache
    python3 -c 'import os,sys
for p in sys.argv[1:]:
    if os.path.exists(p):
        fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"
}

# ---- model ---------------------------------------------------------------------------------
if [ ! -f "$MODEL" ]; then
    log "== generating $MODEL ($SIZE)"
    "$EXPERTD" gen -o "$MODEL" --arch mixtral --type q8_0 --d-model 2048 --heads 16 --kv-heads 4 \
        --ff 5632 --experts 8 --top-k 2 --skew 1 --size "$SIZE" --quiet
fi
if [ ! -f "$STORE" ]; then
    log "== packing $STORE"
    "$EXPERTD" pack "$MODEL" -o "$STORE" --quiet
fi
read -r EXPERT_BYTES NONEXPERT_BYTES N_EXPERTS < <("$EXPERTD" inspect "$MODEL" | python3 -c '
import re,sys
t=sys.stdin.read()
e=int(re.search(r"expert tensors\s+(\d+)",t).group(1)); n=int(re.search(r"non-expert tensors\s+(\d+)",t).group(1))
layers=int(re.search(r"experts \((\d+) MoE layers\)",t).group(1)); ne=int(re.search(r"llama.expert_count\s+(\d+)",t).group(1))
print(e,n,layers*ne)')
FILE_BYTES=$(stat -c %s "$MODEL")
log "== model: $FILE_BYTES bytes, experts $EXPERT_BYTES ($N_EXPERTS), non-expert $NONEXPERT_BYTES"

emit() { printf '%s\n' "$1" >>"$OUT"; }

# ---- fio: the device's O_DIRECT QD32 read bandwidth on the same file ------------------------
fio_run() { # $1 = rw (randread|read)
    fio --name=xd --filename="$MODEL" --readonly --direct=1 --ioengine=io_uring --rw="$1" \
        --bs=1M --iodepth=32 --runtime=10 --time_based --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; print(r["bw_bytes"]/1e6)'
}

# ---- expertd --------------------------------------------------------------------------------
xd_run() { # $1 = label, $2 = budget bytes, rest = extra args
    local label=$1 budget=$2
    shift 2
    drop_cache "$MODEL" "$STORE"
    local tmp
    tmp=$(mktemp)
    /usr/bin/time -v "$EXPERTD" run -m "$MODEL" -p "$PROMPT" -n "$N" --temp 0 --threads "$THREADS" \
        --json --expert-cache "$budget" "$@" >"$tmp.json" 2>"$tmp.err" || { cat "$tmp.err" >&2; return 1; }
    local rss
    rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$tmp.err") # KiB
    python3 - "$tmp.json" "$label" "$budget" "$rss" "$N" <<'EOF' >>"$OUT"
import json, sys
d = json.load(open(sys.argv[1])); s = d["stats"]; x = s["expert_cache"]; n = int(sys.argv[5])
print(json.dumps({"kind": "expertd", "label": sys.argv[2], "budget": int(sys.argv[3]),
    "tok_s": (n - 1) / s["decode_s"], "prefill_s": s["prefill_s"], "hit_rate": x["hit_rate"],
    "read_mb_s": x["read_mb_s"], "stall_s": x["stall_s"], "bytes_read": x["bytes_read"],
    "prefetch_accuracy": x["prefetch_accuracy"], "prefetch_hits": x["prefetch_hits"],
    "prefetch_wasted": x["prefetch_wasted"], "acquires": x["acquires"], "hits": x["hits"],
    "slots": x["slots"], "store": x["store"], "rss": int(sys.argv[4]) * 1024,
    "tokens": d["tokens"]}))
EOF
    rm -f "$tmp" "$tmp.json" "$tmp.err"
}

xd_resident() {
    drop_cache "$MODEL"
    local tmp
    tmp=$(mktemp)
    "$EXPERTD" run -m "$MODEL" -p "$PROMPT" -n "$N" --temp 0 --threads "$THREADS" --json >"$tmp"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["stats"]
print(json.dumps({"kind":"resident","tok_s":(int(sys.argv[2])-1)/s["decode_s"],"tokens":d["tokens"]}))' \
        "$tmp" "$N" >>"$OUT"
    rm -f "$tmp"
}

# ---- llama.cpp under the same memory cap ----------------------------------------------------
llama_capped() { # $1 = budget bytes, $2 = cap bytes (0: no cap)
    local budget=$1 cap=$2 res
    [ -n "$LLAMA_BENCH" ] && [ -x "$LLAMA_BENCH" ] || return 0
    drop_cache "$MODEL"
    local pre=""
    if [ "$cap" -gt 0 ]; then
        mkdir -p "$CG" 2>/dev/null || { log "no cgroup v1 memory controller: skipping capped llama.cpp"; return 0; }
        echo "$cap" >"$CG/memory.limit_in_bytes"
        pre="echo \$\$ > $CG/cgroup.procs;"
    fi
    res=$(timeout "$LLAMA_TIMEOUT" sh -c "$pre exec \"\$@\"" sh "$LLAMA_BENCH" -m "$MODEL" -p 0 \
        -n "$LLAMA_N" -t "$THREADS" -r 1 -o json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])' 2>/dev/null) || res=""
    local peak=0
    if [ "$cap" -gt 0 ]; then
        peak=$(cat "$CG/memory.max_usage_in_bytes")
        rmdir "$CG"
    fi
    emit "{\"kind\":\"llama\",\"budget\":$budget,\"cap\":$cap,\"tok_s\":${res:-null},\"timeout_s\":$LLAMA_TIMEOUT,\"n\":$LLAMA_N,\"cgroup_peak\":$peak}"
}

# expertd itself inside the same cap, once per budget: it must not need more
xd_capped() { # $1 = budget bytes, $2 = cap bytes
    mkdir -p "$CG" 2>/dev/null || return 0
    echo "$2" >"$CG/memory.limit_in_bytes"
    drop_cache "$MODEL" "$STORE"
    local tmp
    tmp=$(mktemp)
    if sh -c "echo \$\$ > $CG/cgroup.procs; exec \"\$@\"" sh "$EXPERTD" run -m "$MODEL" -p "$PROMPT" \
        -n "$N" --temp 0 --threads "$THREADS" --json --expert-cache "$1" >"$tmp" 2>/dev/null; then
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["stats"]
print(json.dumps({"kind":"expertd_capped","budget":int(sys.argv[3]),"cap":int(sys.argv[4]),"tok_s":(int(sys.argv[2])-1)/s["decode_s"],"cgroup_peak":int(open(sys.argv[5]).read())}))' \
            "$tmp" "$N" "$1" "$2" "$CG/memory.max_usage_in_bytes" >>"$OUT"
    else
        emit "{\"kind\":\"expertd_capped\",\"budget\":$1,\"cap\":$2,\"tok_s\":null,\"cgroup_peak\":$(cat "$CG/memory.max_usage_in_bytes")}"
    fi
    rm -f "$tmp"
    rmdir "$CG"
}

# ---- the runs, interleaved so that load changes hit every configuration alike ----------------
# 0.1% above p% of the expert bytes, so that the GGUF store's slots (each expert's three
# slices rounded out to 4 KiB: +24 KiB on 36.8 MB) still number p% of the experts
budget_of() { python3 -c "print(int($EXPERT_BYTES * $1 / 100 * 1.001))"; }
cap_of() { python3 -c "print(int($1 + $NONEXPERT_BYTES + $OVERHEAD_MIB * 1048576))"; }

[ -n "${REPORT_ONLY:-}" ] && REPEATS=0 && BUDGETS=""
for r in $(seq "$REPEATS"); do
    log "== round $r/$REPEATS"
    emit "{\"kind\":\"fio\",\"rw\":\"randread\",\"mb_s\":$(fio_run randread)}"
    emit "{\"kind\":\"fio\",\"rw\":\"read\",\"mb_s\":$(fio_run read)}"
    xd_resident
    for p in $BUDGETS; do
        b=$(budget_of "$p")
        # "default": what `run --expert-cache` does untold - the packed store found beside the
        # model, expected-next-use eviction, one layer of prefetch, io_uring, 1 MiB reads
        xd_run "default-$p" "$b"
        xd_run "gguf-$p" "$b" --expert-store gguf
        [ "$EXTRA" = 1 ] || continue
        xd_run "lru-$p" "$b" --expert-evict lru
        if [ "$p" = "$(echo "$BUDGETS" | awk '{print $1}')" ]; then
            xd_run "lru-noprefetch-$p" "$b" --expert-evict lru --no-prefetch
            xd_run "noprefetch-$p" "$b" --no-prefetch
            xd_run "per-layer-$p" "$b" --expert-policy layer || true
            xd_run "ahead2-$p" "$b" --expert-prefetch-layers 2
            xd_run "pread-$p" "$b" --expert-io pread
            xd_run "chunk4M-$p" "$b" --expert-chunk 4MiB
            xd_run "chunk256K-$p" "$b" --expert-chunk 256KiB
        fi
    done
done

# traces at every budget (prefetch on, as measured above) and their replay
for p in $BUDGETS; do
    b=$(budget_of "$p")
    drop_cache "$MODEL"
    "$EXPERTD" run -m "$MODEL" -p "$PROMPT" -n "$N" --temp 0 --threads "$THREADS" --json \
        --expert-cache "$b" --expert-trace "$DIR/trace-$p.txt" >"$DIR/trace-$p.json"
    slots=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["expert_cache"]["slots"])' "$DIR/trace-$p.json")
    "$EXPERTD" replay "$DIR/trace-$p.txt" --slots "$slots" --json |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); m=json.load(open(sys.argv[2]))["stats"]["expert_cache"]
r.update({"kind":"replay","budget_pct":int(sys.argv[1]),"measured_hit_rate":m["hit_rate"]}); print(json.dumps(r))' "$p" "$DIR/trace-$p.json" >>"$OUT"
    rm -f "$DIR/trace-$p.json"
done

# capped runs last: llama.cpp is slow under the cap
for p in $BUDGETS; do
    b=$(budget_of "$p")
    c=$(cap_of "$b")
    xd_capped "$b" "$c"
    llama_capped "$b" "$c"
done
[ -n "${REPORT_ONLY:-}" ] || llama_capped 0 0 # uncapped (page cache warm after the first tokens): llama.cpp's own speed

# ---- report --------------------------------------------------------------------------------
python3 - "$OUT" "$EXPERT_BYTES" "$NONEXPERT_BYTES" "$FILE_BYTES" "$N" <<'EOF'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
eb, neb, fb, n = (int(a) for a in sys.argv[2:6])
med = lambda xs: st.median(xs) if xs else float("nan")
def sel(**k): return [r for r in rows if all(r.get(a) == b for a, b in k.items())]
fio_r = med([r["mb_s"] for r in sel(kind="fio", rw="randread")])
fio_s = med([r["mb_s"] for r in sel(kind="fio", rw="read")])
res = med([r["tok_s"] for r in sel(kind="resident")])
print(f"model {fb/1e9:.2f} GB: experts {eb/1e9:.2f} GB, non-expert {neb/1e6:.0f} MB; decode {n} tokens")
print(f"fio O_DIRECT QD32 1 MiB: randread {fio_r:.0f} MB/s, read {fio_s:.0f} MB/s (medians)")
print(f"everything resident (page cache): {res:.2f} tok/s\n")
print("| config | budget | slots | decode tok/s | hit rate | prefetch acc. | MB/s in misses | % of fio | stall s | peak RSS MB | RSS - budget - non-expert MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
labels = []
for r in rows:
    if r["kind"] == "expertd" and r["label"] not in labels: labels.append(r["label"])
for lab in labels:
    rs = sel(kind="expertd", label=lab); b = rs[0]["budget"]
    mb = med([r["read_mb_s"] for r in rs]); rss = med([r["rss"] for r in rs])
    print(f"| {lab} | {b/2**30:.2f} GiB ({100*b/eb:.0f}%) | {rs[0]['slots']} | {med([r['tok_s'] for r in rs]):.2f} | "
          f"{med([r['hit_rate'] for r in rs]):.3f} | {med([r['prefetch_accuracy'] for r in rs]):.2f} | {mb:.0f} | "
          f"{100*mb/max(fio_r,fio_s):.0f}% | {med([r['stall_s'] for r in rs]):.2f} | {rss/1e6:.0f} | {(rss-b-neb)/1e6:.0f} |")
toks = {tuple(r["tokens"]) for r in rows if "tokens" in r}
print(f"\ndistinct token sequences across all expertd runs: {len(toks)} (1 = offloading never changed the output)\n")
print("| budget | cap | expertd capped tok/s | expertd cgroup peak MB | llama.cpp capped tok/s | llama.cpp cgroup peak MB | ratio |")
print("|---|---|---|---|---|---|---|")
for r in sel(kind="llama"):
    if r["cap"] == 0: continue
    x = [q for q in sel(kind="expertd_capped") if q["budget"] == r["budget"]]
    xt = x[0]["tok_s"] if x else None; lt = r["tok_s"]
    lt_s = f"{lt:.3f}" if lt else f"< {r['n']/r['timeout_s']:.3f} (timed out)"
    ratio = f"{xt/lt:.1f}x" if xt and lt else (f"> {xt/(r['n']/r['timeout_s']):.0f}x" if xt else "-")
    print(f"| {r['budget']/2**30:.2f} GiB | {r['cap']/2**30:.2f} GiB | {xt and round(xt,2)} | {x[0]['cgroup_peak']/1e6 if x else 0:.0f} | {lt_s} | {r['cgroup_peak']/1e6:.0f} | {ratio} |")
for r in sel(kind="llama", cap=0):
    print(f"\nllama.cpp uncapped (tg{r['n']}): {r['tok_s']} tok/s")
print("\n| budget | slots | measured (next-use + prefetch) | replay LRU global | LRU per-layer | next-use global | next-use per-layer | Belady | measured / Belady |")
print("|---|---|---|---|---|---|---|---|---|")
f = lambda v: "-" if v is None else f"{v:.3f}"
for r in sel(kind="replay"):
    print(f"| {r['budget_pct']}% | {r['slots']} | {r['measured_hit_rate']:.3f} | {f(r['lru_global'])} | {f(r['lru_layer'])} | "
          f"{f(r['next_use_global'])} | {f(r['next_use_layer'])} | {r['belady']:.3f} | {r['measured_hit_rate']/r['belady']:.2f} |")
EOF
