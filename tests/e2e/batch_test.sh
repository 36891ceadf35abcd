#!/usr/bin/env bash
# batch_test.sh - continuous batching end to end: a seeded request over HTTP gives bit-identical
# text alone and among 31 concurrent others (a mix of prompts, lengths, n > 1 and streaming), on
# a server with 32 slots and again on one whose KV cache is small enough that requests are
# preempted and recomputed; /metrics shows the KV cache and the preemptions, and every block
# is given back at the end. Same conventions as serve_test.sh: ephemeral ports, bounded loops,
# servers killed on exit, last line "N passed, M failed".
#   bash tests/e2e/batch_test.sh [BUILD_DIR]        (default: build)
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$BUILD/expertd
MODEL=tests/fixtures/mixtral-tiny-q8_0.gguf
NAME=mixtral-tiny-q8_0
WORK=$(mktemp -d)
TOKENS=${E2E_BATCH_TOKENS:-48}
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

# start VAR ARGS...: start a server, wait for /health 200; VAR gets its port
start() {
  local var=$1; shift
  local pf=$WORK/$var.port
  "$BIN" serve -m "$MODEL" --port 0 --port-file "$pf" --quiet "$@" >"$WORK/$var.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 300); do [ -s "$pf" ] && break; sleep 0.05; done
  local port; port=$(cat "$pf" 2>/dev/null)
  printf -v "$var" %s "$port"
  [ -n "$port" ] || { echo "server $var did not start:"; cat "$WORK/$var.log"; return 1; }
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/health")" = 200 ] && return 0
    sleep 0.05
  done
  echo "server $var never became ready:"; cat "$WORK/$var.log"; return 1
}

# metric PORT NAME: the value of an unlabelled sample
metric() { curl -s "localhost:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }

# the probe's prompt is long enough (> 2 KV blocks) that others with the same prompt lend it
# their blocks (prefix sharing) when it arrives after them
PPROMPT="Once upon a time, in a land far away, there lived an old king who had three daughters, and the youngest of them was the most beautiful of all"
PROBE='{"model":"'$NAME'","prompt":"'$PPROMPT'","max_tokens":'$TOKENS',"temperature":0.9,"seed":4242,"ignore_eos":true}'

# others PORT: 31 concurrent requests of assorted shapes, in the background (into $WORK/o.*);
# their pids in BG
BG=()
others() {
  local port=$1 i body
  BG=()
  for i in $(seq 1 31); do
    if [ $((i % 8)) = 5 ]; then # the probe's prompt, another seed
      body='{"model":"'$NAME'","prompt":"'$PPROMPT'","max_tokens":'$TOKENS',"temperature":0.9,"seed":'$i',"ignore_eos":true}'
    else case $((i % 4)) in
      0) body='{"model":"'$NAME'","prompt":"Hello there number '$i'","max_tokens":'$((8 + i))',"temperature":0.8,"seed":'$i',"ignore_eos":true}' ;;
      1) body='{"model":"'$NAME'","prompt":"A much longer prompt that needs more than one chunk of prefill, request '$i', with more words to make the prompt longer still and longer","max_tokens":'$((TOKENS / 2 + i))',"seed":'$i',"ignore_eos":true}' ;;
      2) body='{"model":"'$NAME'","prompt":"Tell me a story '$i'","max_tokens":24,"n":2,"temperature":1.0,"seed":'$i',"ignore_eos":true}' ;;
      3) body='{"model":"'$NAME'","prompt":"Stream '$i'","max_tokens":'$TOKENS',"stream":true,"seed":'$i',"ignore_eos":true}' ;;
    esac; fi
    curl -s --max-time 300 -o "$WORK/o.$i" -w '%{http_code}\n' "localhost:$port/v1/completions" \
      -H 'Content-Type: application/json' -d "$body" >"$WORK/o.$i.code" &
    BG+=("$!")
  done
}

text_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$1"; }

# probe_alone_and_batched NAME PORT
probe_alone_and_batched() {
  local name=$1 port=$2
  curl -s --max-time 300 -o "$WORK/alone" "localhost:$port/v1/completions" \
    -H 'Content-Type: application/json' -d "$PROBE"
  others "$port"
  sleep 0.05 # the probe joins a running batch, not an empty one
  curl -s --max-time 300 -o "$WORK/batched" "localhost:$port/v1/completions" \
    -H 'Content-Type: application/json' -d "$PROBE"
  for p in "${BG[@]}"; do wait "$p"; done
  local a b
  a=$(text_of "$WORK/alone" 2>/dev/null)
  b=$(text_of "$WORK/batched" 2>/dev/null)
  check "$name: the probe answered alone" test -n "$a"
  check "$name: same text alone and among 31 others" test "$a" = "$b"
  [ "$a" = "$b" ] || { echo "  alone:   $a"; echo "  batched: $b"; }
  local n200; n200=$(cat "$WORK"/o.*.code | grep -c '^200$')
  check "$name: the 31 others got 200 ($n200)" test "$n200" = 31
  local shared; shared=$(metric "$port" expertd_engine_prefix_shared_tokens_total)
  echo "  prefix-shared prompt positions: ${shared:-?}"
  check "$name: n=2 requests got 2 choices" \
    python3 -c 'import json,sys; assert len(json.load(open(sys.argv[1]))["choices"]) == 2' "$WORK/o.2"
}

[ -x "$BIN" ] || { echo "no $BIN: build first"; echo "0 passed, 1 failed"; exit 1; }

echo "== 32 slots, default KV cache =="
if start S --parallel 32 --ctx 512 --step-tokens 256; then
  probe_alone_and_batched "default KV" "$S"
  check "KV metrics exported" test -n "$(metric "$S" expertd_kv_cache_blocks)"
  check "KV blocks all given back" test "$(metric "$S" expertd_kv_cache_blocks_used)" = 0
  check "usage ratio back to 0" test "$(metric "$S" expertd_kv_cache_usage_ratio)" = 0
  check "experts-per-step histogram exported" \
    bash -c "curl -s localhost:$S/metrics | grep -q '^expertd_experts_touched_per_step_bucket'"
  if command -v promtool >/dev/null; then
    check "promtool accepts /metrics" bash -c "curl -s localhost:$S/metrics | promtool check metrics >/dev/null 2>&1"
  fi
else
  bad "server with 32 slots started"
fi

echo "== 32 slots, KV cache of 24 blocks: preemption =="
# the fixture's block: 4 bytes x 16 positions x layers x kv_dim; ask the server
BB=$(curl -s "localhost:$S/metrics" | awk '$1 == "expertd_kv_cache_bytes" {b=$2} $1 == "expertd_kv_cache_blocks" {n=$2} END {if (n) printf "%d", b / n}')
if [ -n "$BB" ] && start P --parallel 32 --ctx 512 --step-tokens 256 --kv-cache $((BB * 24)); then
  probe_alone_and_batched "small KV" "$P"
  pre=$(metric "$P" expertd_engine_preemptions_total)
  check "requests were preempted ($pre)" python3 -c "import sys; sys.exit(0 if float('${pre:-0}') > 0 else 1)"
  check "KV blocks all given back after preemption" test "$(metric "$P" expertd_kv_cache_blocks_used)" = 0
  check "the pool is the budget" test "$(metric "$P" expertd_kv_cache_blocks)" = 24
else
  bad "server with a small KV cache started"
fi

echo "== --kv-cache errors =="
"$BIN" serve -m "$MODEL" --port 0 --kv-cache nonsense >"$WORK/bad.log" 2>&1
check "bad --kv-cache size is a usage error (2)" test $? = 2

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
