#!/usr/bin/env bash
# offload_test.sh - `expertd serve --expert-cache` end to end over HTTP on 127.0.0.1: an
# offloaded server (two expert slots, so nearly every expert is read from the packed store
# with O_DIRECT) answers exactly what an all-resident server answers, alone and under
# concurrent load; /metrics carries the expert-cache counters and passes promtool; a store
# corrupted while the server runs makes the requests that need it fail with a 500 JSON error
# while the server keeps answering, and once the bytes are restored it serves correctly again.
# The last line is "N passed, M failed"; the exit status is non-zero when anything failed.
#   bash tests/e2e/offload_test.sh [BUILD_DIR]        (default: build)
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$BUILD/expertd
WORK=$(mktemp -d)
MODEL=$WORK/m.gguf
NAME=m
PIDS=()
pass=0
fail=0
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
check() { local n=$1; shift; if "$@"; then ok "$n"; else bad "$n"; fi; }
j() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }

# start VAR ARGS...: start a server and wait until /health is 200; VAR gets its port
start() {
  local var=$1; shift
  local pf=$WORK/$var.port
  "$BIN" serve -m "$MODEL" --port 0 --port-file "$pf" --quiet "$@" >"$WORK/$var.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 300); do [ -s "$pf" ] && break; sleep 0.05; done
  local port; port=$(cat "$pf" 2>/dev/null)
  printf -v "$var" %s "$port"
  [ -n "$port" ] || { cat "$WORK/$var.log"; return 1; }
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/health")" = 200 ] && return 0
    sleep 0.05
  done
  cat "$WORK/$var.log"; return 1
}
# complete PORT PROMPT OUTFILE: greedy completion of 12 tokens; status in $code
complete() {
  code=$(curl -s --max-time 60 -o "$3" -w '%{http_code}' "localhost:$1/v1/completions" \
    -H 'Content-Type: application/json' \
    -d "{\"model\":\"$NAME\",\"prompt\":\"$2\",\"max_tokens\":12,\"temperature\":0,\"ignore_eos\":true}")
}
metric() { curl -s "localhost:$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }

[ -x "$BIN" ] || { echo "no $BIN: build first"; echo "0 passed, 1 failed"; exit 1; }
cp tests/fixtures/mixtral-tiny-q8_0.gguf "$MODEL"
"$BIN" pack "$MODEL" --quiet >/dev/null || { echo "pack failed"; echo "0 passed, 1 failed"; exit 1; }
STORE=$WORK/m.xdpack
check "pack wrote the store beside the model" [ -s "$STORE" ]

# a budget below one layer's top-k is refused at start with the minimum named
"$BIN" serve -m "$MODEL" --port 0 --expert-cache 1KiB >"$WORK/small.log" 2>&1
rc=$?
check "budget below top-k: exit 1 naming the minimum" [ $rc = 1 ] && grep -q 'at least' "$WORK/small.log"

start R || exit 1
start O --expert-cache 440KiB || exit 1 # two slots of 216 KiB: the top-k of one layer

prompts=("Hello" "The capital of France is" "Once upon a time" "1, 2, 3, 4,")
same=0
for i in "${!prompts[@]}"; do
  complete "$R" "${prompts[$i]}" "$WORK/r$i"
  complete "$O" "${prompts[$i]}" "$WORK/o$i"
  [ "$code" = 200 ] && [ "$(j "$WORK/r$i" 'd["choices"][0]["text"]')" = "$(j "$WORK/o$i" 'd["choices"][0]["text"]')" ] && same=$((same + 1))
done
check "offloaded text == resident text (4 prompts, greedy)" [ $same = 4 ]

# the same four at once on the offloaded server (one batch, experts shared between them)
BG=()
for i in "${!prompts[@]}"; do
  complete "$O" "${prompts[$i]}" "$WORK/c$i" &
  BG+=("$!")
done
for p in "${BG[@]}"; do wait "$p"; done
same=0
for i in "${!prompts[@]}"; do
  [ "$(j "$WORK/r$i" 'd["choices"][0]["text"]')" = "$(j "$WORK/c$i" 'd["choices"][0]["text"]')" ] && same=$((same + 1))
done
check "offloaded, 4 concurrent: each text == resident" [ $same = 4 ]

curl -s "localhost:$O/metrics" >"$WORK/metrics"
acq=$(awk '$1=="expertd_expert_cache_acquires_total" {print $2}' "$WORK/metrics")
hits=$(awk '$1=="expertd_expert_cache_hits_total" {print $2}' "$WORK/metrics")
miss=$(awk '$1=="expertd_expert_cache_misses_total" {print $2}' "$WORK/metrics")
reads=$(awk '$1=="expertd_expert_cache_reads_total" {print $2}' "$WORK/metrics")
hcount=$(awk '$1=="expertd_expert_cache_read_seconds_count" {print $2}' "$WORK/metrics")
check "metrics: misses > 0 and hits + misses == acquires" [ "${miss:-0}" -gt 0 -a $((hits + miss)) = "${acq:-x}" ]
check "metrics: read latency histogram counts every read" [ "${hcount:-x}" = "${reads:-y}" -a "${reads:-0}" -gt 0 ]
check "metrics: resident experts per layer" grep -q '^expertd_expert_cache_resident_experts{layer="3"} ' "$WORK/metrics"
if command -v promtool >/dev/null; then
  check "metrics: promtool check metrics" promtool check metrics <"$WORK/metrics"
fi

# corrupt every expert extent in place (the server has the store open), keeping a copy
cp "$STORE" "$WORK/store.orig"
python3 - "$STORE" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    data_off = struct.unpack_from("<Q", f.read(64), 48)[0]
    size = f.seek(0, 2)
    for off in range(data_off + 100, size, 4096):  # one byte in every 4 KiB page of data
        f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
EOF
failed=0
for i in 0 1 2; do
  complete "$O" "${prompts[$i]}" "$WORK/f$i"
  [ "$code" = 500 ] && [ "$(j "$WORK/f$i" 'd["error"]["type"]')" = server_error ] && failed=$((failed + 1))
done
check "corrupted store: requests fail with a 500 JSON error" [ $failed = 3 ]
check "corrupted store: the server still answers /health" [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$O/health")" = 200 ]
errs=$(metric "$O" expertd_expert_cache_read_errors_total)
retries=$(metric "$O" expertd_expert_cache_read_retries_total)
check "corrupted store: each failed read was retried once first" [ "${errs:-0}" -gt 0 -a "${retries:-0}" -ge "${errs:-1}" ]
check "corrupted store: the log names layer, expert and offset" grep -q 'layer [0-9]* expert [0-9]*: read at offset' "$WORK/O.log"
check "the resident server is unaffected" [ "$(complete "$R" "${prompts[0]}" "$WORK/x"; echo "$code")" = 200 ]
cp "$WORK/store.orig" "$STORE.tmp" && cat "$STORE.tmp" >"$STORE" # same inode: the open store
complete "$O" "${prompts[1]}" "$WORK/back"
check "store restored: served again, text == resident" [ "$code" = 200 -a "$(j "$WORK/back" 'd["choices"][0]["text"]')" = "$(j "$WORK/r1" 'd["choices"][0]["text"]')" ]

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
