#!/usr/bin/env bash
# cpu_vs_llamacpp.sh - expertd's CPU engine against llama.cpp's llama-bench on the same files,
# the same thread count and the same machine, plus the memory read bandwidth, in one run.
#
#   bench/cpu_vs_llamacpp.sh EXPERTD LLAMA_BENCH OUT.jsonl MODEL...   (env: THREADS, REPS, ROUNDS)
#
# Each round runs, per model: expertd pp512+tg128, llama-bench pp512+tg128, expertd pp128,
# llama-bench pp128 (the order alternates between rounds), and the bandwidth probe once, each
# as one JSON line appended to OUT.jsonl with the load average at its start; a summary table
# of medians over rounds is printed at the end (bench/cpu_vs_llamacpp.py). On a shared machine
# the rounds interleave the two engines so they see the same conditions; the spread is in the
# output.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,12p' "$0"; exit 2; }
xd=$1 lb=$2 out=$3
shift 3
threads=${THREADS:-2} reps=${REPS:-5} rounds=${ROUNDS:-3}
here=$(cd "$(dirname "$0")" && pwd)

line() { # tag model json...
    local tag=$1 model=$2 load
    load=$(cut -d' ' -f1 /proc/loadavg)
    shift 2
    python3 -c 'import json,sys; d=json.loads(sys.argv[4]); print(json.dumps({"tag":sys.argv[1],"model":sys.argv[2],"load":float(sys.argv[3]),"data":d}))' \
        "$tag" "$model" "$load" "$*" >> "$out"
}

run_xd() { # model p n
    line "expertd p$2 n$3" "$1" "$("$xd" bench engine -m "$1" -p "$2" -n "$3" -t "$threads" -r "$reps" --json)"
}

run_lb() { # model p n
    local args=(-m "$1" -t "$threads" -r "$reps" -o json -p "$2" -n "$3")
    line "llama-bench p$2 n$3" "$1" "$("$lb" "${args[@]}" 2>/dev/null)"
}

for r in $(seq 1 "$rounds"); do
    line "membw" "-" "$("$xd" bench membw -t "$threads" --json)"
    for m in "$@"; do
        if (( r % 2 )); then
            run_xd "$m" 512 128; run_lb "$m" 512 128; run_xd "$m" 128 0; run_lb "$m" 128 0
        else
            run_lb "$m" 512 128; run_xd "$m" 512 128; run_lb "$m" 128 0; run_xd "$m" 128 0
        fi
    done
done
python3 "$here/cpu_vs_llamacpp.py" "$out"
