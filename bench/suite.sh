#!/usr/bin/env bash
# suite.sh - the comparison suite: generates the bench models with `expertd gen`, runs the
# engine, expert-cache and serving benchmarks on them, the same on llama.cpp when its binaries
# are given by path, checks bench serve's clock against curl, and writes the tables with the
# machine details and the exact commands into the suite's own section of docs/benchmarks.md
# (between the "bench/suite.sh" markers; the rest of the file is left alone).
#
# Every server it starts binds 127.0.0.1 on a free port and is stopped by its pid on exit. Every
# wait is bounded. Peer binaries are used in place and never copied into the tree.
#
# usage: bench/suite.sh [--expertd PATH] [--llama-server PATH] [--llama-bench PATH]
#                       [--work DIR] [--out FILE] [--size SIZE] [--quick] [--no-write]
#   --expertd PATH       expertd binary [build-bench/expertd, else build/expertd]
#   --llama-server PATH  llama.cpp's llama-server: served and benchmarked like expertd
#   --llama-bench PATH   llama.cpp's llama-bench: prefill/decode next to `expertd bench engine`
#   --work DIR           models, reports and plots [/tmp/xd-suite]
#   --out FILE           Markdown file whose suite section is replaced [docs/benchmarks.md]
#   --size SIZE          size of each bench model, as `expertd gen --size` takes it [256M]
#   --quick              fewer requests and repetitions: a smoke run of the suite itself
#   --no-write           print the section on stdout instead of writing it
# shellcheck disable=SC2016 # backticks in single quotes are Markdown, not expansions
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORIG_ARGS=("$@")
XD="" LLAMA_SERVER="" LLAMA_BENCH="" WORK=/tmp/xd-suite OUT=$ROOT/docs/benchmarks.md
SIZE=256M QUICK=0 WRITE=1
while [ $# -gt 0 ]; do
    case $1 in
    --expertd) XD=$2; shift 2 ;;
    --llama-server) LLAMA_SERVER=$2; shift 2 ;;
    --llama-bench) LLAMA_BENCH=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-write) WRITE=0; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "suite.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$XD" ]; then
    for c in "$ROOT/build-bench/expertd" "$ROOT/build/expertd"; do
        [ -x "$c" ] && { XD=$c; break; }
    done
fi
[ -x "$XD" ] || { echo "suite.sh: no expertd binary (give --expertd PATH)" >&2; exit 2; }
"$XD" bench serve --help > /dev/null || { echo "suite.sh: $XD has no 'bench serve'" >&2; exit 2; }
for p in "$LLAMA_SERVER" "$LLAMA_BENCH"; do
    [ -z "$p" ] || [ -x "$p" ] || { echo "suite.sh: $p is not executable" >&2; exit 2; }
done
mkdir -p "$WORK"
SECTION=$WORK/section.md
: > "$SECTION"

if [ "$QUICK" = 1 ]; then
    REPS=2 NP=8 LEVELS=1,4 PLEN=64 GLEN=16 CC_N=8
else
    REPS=3 NP=32 LEVELS=1,4,16 PLEN=128 GLEN=32 CC_N=30
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
}
trap cleanup EXIT

out() { printf '%s\n' "$*" >> "$SECTION"; }
# run CMD...: echo the command into the section (as a user would type it) and run it
cmdline() {
    local s="" a
    for a in "$@"; do
        a=${a//$XD/expertd}
        a=${a//$ROOT\//}
        a=${a//@PORT@/PORT}
        [ -n "${PORT:-}" ] && a=${a//127.0.0.1:$PORT/127.0.0.1:PORT}
        case $a in *' '*) a="\"$a\"" ;; esac
        s+="${s:+ }$a"
    done
    printf '%s' "$s"
}
log() { echo "suite: $*" >&2; }

# start_server NAME CMD...: runs a server whose port is chosen here; sets PORT and waits for
# GET /health to answer 200 (bounded: 10 minutes, enough to load a large model from disk)
start_server() {
    local name=$1
    shift
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    local args=()
    for a in "$@"; do args+=("${a//@PORT@/$PORT}"); done
    "${args[@]}" > "$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 1200); do
        if curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; then return 0; fi
        kill -0 "$SERVER_PID" 2> /dev/null || { log "$name exited; see $WORK/$name.log"; return 1; }
        sleep 0.5
    done
    log "$name not healthy after 10 minutes"
    return 1
}
stop_server() {
    kill "$SERVER_PID" 2> /dev/null || true
    wait "$SERVER_PID" 2> /dev/null || true
}

# ---- machine ---------------------------------------------------------------------------------
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
FLAGS=$(grep -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | paste -sd' ')
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
GPU=$(command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo none)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
out '<!-- bench/suite.sh:begin - this section is written by bench/suite.sh; edit the script, not the text -->'
out '## Suite - `bench/suite.sh` (engine, expert cache, serving; peers)'
out ''
out "Run $(date -u '+%Y-%m-%d %H:%M UTC') with \`$(cmdline bench/suite.sh "${ORIG_ARGS[@]:-}")\`."
out ''
out "**Machine**: $(nproc) CPUs ($CPU; ${FLAGS:-no AVX2}), $MEM RAM, GPU: $GPU, Linux $(uname -r),"
out "$(${CC:-cc} --version | head -1), expertd $("$XD" --version | cut -d' ' -f2). Load average at the start: $LOAD0."
out "Figures on a shared machine are what the run got; compare rows of one run, not runs."
out ''

# ---- models ----------------------------------------------------------------------------------
VOCAB=$ROOT/tests/fixtures/tokenizer/ggml-vocab-llama-spm.gguf
declare -A GEN
GEN[mixtral]="--arch mixtral --type q8_0 --d-model 1024 --heads 16 --kv-heads 4 --experts 8 --ff 3584 --size $SIZE"
GEN[qwen3moe]="--arch qwen3moe --type q8_0 --d-model 1024 --heads 16 --kv-heads 4 --experts 32 --top-k 4 --ff 768 --size $SIZE"
MODELS=(mixtral qwen3moe)
out '### Models (`expertd gen`, random weights, Llama SentencePiece vocabulary)'
out ''
out '```'
for m in "${MODELS[@]}"; do
    f=$WORK/bench-$m-$SIZE.gguf
    # shellcheck disable=SC2206 # the options are words on purpose
    c=("$XD" gen -o "$f" ${GEN[$m]} --vocab "$VOCAB" --quiet)
    if [ ! -s "$f" ] || [ "$(cat "$f.cmd" 2> /dev/null)" != "${c[*]}" ]; then
        log "generating $f"
        "${c[@]}"
        echo "${c[*]}" > "$f.cmd"
    fi
    out "$(cmdline "${c[@]}")"
done
out '```'
out ''
for m in "${MODELS[@]}"; do
    f=$WORK/bench-$m-$SIZE.gguf
    out "- bench-$m-$SIZE.gguf: $(stat -c %s "$f") bytes, $("$XD" inspect "$f" | awk '/block_count/ {print $2 " layers"; exit}')"
done
out ''

# ---- engine ----------------------------------------------------------------------------------
log "engine"
out '### Engine: prefill and decode (`expertd bench engine`'"${LLAMA_BENCH:+, llama-bench}"')'
out ''
out '| model | engine | prefill tok/s | decode tok/s | command |'
out '|---|---|---|---|---|'
for m in "${MODELS[@]}"; do
    f=$WORK/bench-$m-$SIZE.gguf
    c=("$XD" bench engine -m "$f" -p "$PLEN" -n "$GLEN" -r "$REPS" --json)
    if "${c[@]}" > "$WORK/engine-$m.json" 2> "$WORK/engine-$m.err"; then
        read -r pp tg < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f %.2f" % (d.get("prefill_tok_s", float("nan")), d.get("decode_tok_s", float("nan"))))' "$WORK/engine-$m.json")
    else
        pp=failed tg="see $WORK/engine-$m.err"
    fi
    out "| $m | expertd | $pp | $tg | \`$(cmdline "${c[@]}")\` |"
    if [ -n "$LLAMA_BENCH" ]; then
        c=("$LLAMA_BENCH" -m "$f" -p "$PLEN" -n "$GLEN" -r "$REPS" -o json)
        if "${c[@]}" > "$WORK/llama-bench-$m.json" 2> "$WORK/llama-bench-$m.err"; then
            read -r pp tg < <(python3 -c '
import json, sys
pp = tg = float("nan")
for r in json.load(open(sys.argv[1])):
    if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0: pp = r["avg_ts"]
    if r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0: tg = r["avg_ts"]
print("%.1f %.2f" % (pp, tg))' "$WORK/llama-bench-$m.json")
        else
            pp=failed tg="see $WORK/llama-bench-$m.err"
        fi
        out "| $m | llama.cpp | $pp | $tg | \`llama-bench -m bench-$m-$SIZE.gguf -p $PLEN -n $GLEN -r $REPS -o json\` |"
    fi
done
out ''

# ---- expert cache ----------------------------------------------------------------------------
log "expert cache"
out '### Expert cache: decode with a part of the experts in memory (`expertd run --expert-cache`)'
out ''
out '| model | cache | decode tok/s | hit rate | MB read | read MB/s | command |'
out '|---|---|---|---|---|---|---|'
PROMPT="Once upon a time in a land far away there lived a"
for m in "${MODELS[@]}"; do
    f=$WORK/bench-$m-$SIZE.gguf
    mib=$(($(stat -c %s "$f") / 1048576))
    for frac in 100 50 25; do
        c=("$XD" run -m "$f" -p "$PROMPT" -n "$GLEN" --temp 0 --ignore-eos --json)
        [ "$frac" = 100 ] || c+=(--expert-cache "$((mib * frac / 100))M")
        if "${c[@]}" > "$WORK/cache-$m-$frac.json" 2> "$WORK/cache-$m-$frac.err"; then
            row=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["stats"]; c = s.get("expert_cache", {})
n = int(sys.argv[2])
print("%.2f | %.3f | %.1f | %.1f" % (n / s["decode_s"] if s.get("decode_s") else float("nan"),
      c.get("hit_rate", float("nan")), c.get("bytes_read", 0) / 1e6, c.get("read_mb_s", 0)))' \
                "$WORK/cache-$m-$frac.json" "$GLEN")
        else
            row="failed | | | "
        fi
        label=$([ "$frac" = 100 ] && echo "all resident" || echo "$((mib * frac / 100)) MiB (~$frac% of the file)")
        out "| $m | $label | $row | \`$(cmdline "${c[@]}")\` |"
    done
done
out ''

# ---- serving ---------------------------------------------------------------------------------
serve_bench() { # NAME MODEL_FILE: sweep the running server on $PORT
    local name=$1 f=$2
    local c=("$XD" bench serve --url "http://127.0.0.1:$PORT/v1/completions" --concurrency "$LEVELS"
        --num-prompts "$NP" --input-len "$PLEN" --output-len "$GLEN" --seed 1 --no-progress
        --request-timeout 600 --max-duration 3600
        --json "$WORK/serve-$name.json" --plot "$WORK/serve-$name.html")
    "${c[@]}" > "$WORK/serve-$name.txt" 2> "$WORK/serve-$name.err" || true
    out "**$name** (\`$(cmdline "${c[@]}")\`):"
    out ''
    sed -n '/^| /,$p' "$WORK/serve-$name.txt" >> "$SECTION"
    out ''
}
log "serving"
out '### Serving: `expertd bench serve`, closed loop, the same requests at each concurrency'
out ''
out "Synthetic prompts of $PLEN words (about one token each), $GLEN output tokens (ignore_eos), $NP requests per level; latencies in ms."
out ''
m=${MODELS[0]}
f=$WORK/bench-$m-$SIZE.gguf
S_CMD=("$XD" serve -m "$f" --host 127.0.0.1 --port @PORT@ --parallel 4 --quiet)
if start_server expertd-serve "${S_CMD[@]}"; then
    out "Server: \`$(cmdline "${S_CMD[@]}")\`"
    out ''
    serve_bench "expertd-$m" "$f"
    log "curl agreement (expertd)"
    CC_OUT=$(TOL=0.10 "$ROOT/bench/curl_check.sh" "$XD" "http://127.0.0.1:$PORT" "$(basename "$f" .gguf)" "$CC_N" "$PLEN" "$GLEN" 2>&1 || true)
    stop_server
else
    out "expertd serve did not start (see $WORK/expertd-serve.log)."
    CC_OUT=""
fi
if [ -n "$LLAMA_SERVER" ]; then
    L_CMD=("$LLAMA_SERVER" -m "$f" --host 127.0.0.1 --port @PORT@ -np 4 -c 8192)
    if start_server llama-server "${L_CMD[@]}"; then
        out "Peer: \`$(cmdline "${L_CMD[@]}" | sed "s#$LLAMA_SERVER#llama-server#")\`"
        out ''
        serve_bench "llama-server-$m" "$f"
        stop_server
    else
        out "llama-server did not start (see $WORK/llama-server.log)."
    fi
fi

# ---- bench serve's clock against curl --------------------------------------------------------
log "curl agreement (paced server)"
P_CMD=(python3 "$ROOT/bench/paced_server.py" --port @PORT@ --ttft-ms 200 --itl-ms 20)
if start_server paced "${P_CMD[@]}"; then
    CCP_OUT=$("$ROOT/bench/curl_check.sh" "$XD" "http://127.0.0.1:$PORT" paced "$CC_N" "$PLEN" "$GLEN" 2>&1 || true)
    stop_server
fi
out '### bench serve against curl (same requests, concurrency 1)'
out ''
out "\`bench/curl_check.sh EXPERTD URL MODEL $CC_N $PLEN $GLEN\`: each request bench serve makes (--dump-requests) is sent once more by bench serve alone and once by curl, side by side, in alternating order; curl's TTFB is its time_starttransfer, its TTFT time_starttransfer plus the --trace-time gap from the headers to the first data with text, its E2E time_total."
out ''
if [ -n "$CC_OUT" ]; then
    out "Against \`expertd serve\` (bench-$m-$SIZE.gguf):"
    out ''
    printf '%s\n' "$CC_OUT" >> "$SECTION"
    out ''
fi
if [ -n "${CCP_OUT:-}" ]; then
    out 'Against `bench/paced_server.py --ttft-ms 200 --itl-ms 20` (a server on a known clock, no model noise):'
    out ''
    printf '%s\n' "$CCP_OUT" >> "$SECTION"
    out ''
fi
out "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Reports and plots: $WORK/serve-*.{json,html}."
out '<!-- bench/suite.sh:end -->'

# ---- write -----------------------------------------------------------------------------------
if [ "$WRITE" = 0 ]; then
    cat "$SECTION"
    exit 0
fi
python3 - "$OUT" "$SECTION" <<'EOF'
import re, sys
out, sec = sys.argv[1], open(sys.argv[2]).read()
try:
    doc = open(out).read()
except FileNotFoundError:
    doc = '# expertd benchmarks\n'
pat = re.compile(r'<!-- bench/suite\.sh:begin.*?<!-- bench/suite\.sh:end -->\n?', re.S)
doc = pat.sub(lambda _: sec, doc, count=1) if pat.search(doc) else doc.rstrip('\n') + '\n\n' + sec
open(out, 'w').write(doc)
EOF
log "wrote the suite section of $OUT"
