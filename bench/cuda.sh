#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage functions are called by name (stage_$s)
# cuda.sh - what issue 7 needs from a lent GPU, in stages that each fit one call of the device
# tool (10 minutes), so that a session with a GPU spends its device time measuring, not typing.
#
#   bash bench/cuda.sh STAGE... [-o OUTDIR]
#
# Stages (run in the order given; each writes OUTDIR/STAGE.txt and says PASS/FAIL at its end):
#   build     Release build with -DEXPERTD_CUDA=ON for $ARCH (default: the device's own
#             compute capability) into $BUILD (default build-cuda); device.txt describes the GPU
#   test      test_cuda (golden rule on the CUDA backend, batch == alone, offloaded == resident
#             bit for bit), then the whole ctest suite of that build
#   memcheck  compute-sanitizer --tool memcheck --leak-check full over test_cuda, every test
#             process followed ($MEMCHECK_FILTER picks tests, default all)
#   goldens   check-goldens on the CUDA backend, resident and with a 3 MiB expert cache
#             ($SHARED: the shared directory, default ../shared beside the repository)
#   serve     `serve --backend $BACKEND`: 8 concurrent greedy requests, one of them streamed,
#             must each return the text `run --backend $BACKEND` gives alone, resident and with
#             an expert cache (BACKEND=cpu runs the same check without a GPU)
#   bench     the figures of docs/benchmarks.md's CUDA section on a generated Mixtral-shaped
#             Q4_K model ($MODEL, default /dev/shm/xd-big.gguf, generated when missing):
#             resident pp512/tg128 against the HBM limit; offloaded tg with $CACHE of VRAM slots
#             (default 640MB, about 20% of the experts) against the host-to-device limit, with
#             the streamed commit and the whole-expert commit (XD_CUDA_WHOLE_COMMIT=1) side by
#             side, pread pool and io_uring, store on tmpfs and on disk ($DISK_DIR, default /tmp)
#
# Example (the device tool runs it in the repository root, $OUT comes back):
#   bash bench/cuda.sh build test -o $OUT      then      bash bench/cuda.sh memcheck -o $OUT
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build-cuda}
BACKEND=${BACKEND:-cuda}
MODEL=${MODEL:-/dev/shm/xd-big.gguf}
CACHE=${CACHE:-640MB}
DISK_DIR=${DISK_DIR:-/tmp}
SHARED=${SHARED:-../shared}
OUT=
STAGES=()
while [ $# -gt 0 ]; do
  case $1 in
    -o) OUT=$2; shift 2 ;;
    build|test|memcheck|goldens|serve|bench) STAGES+=("$1"); shift ;;
    *) echo "usage: bench/cuda.sh {build|test|memcheck|goldens|serve|bench}... [-o OUTDIR]" >&2; exit 2 ;;
  esac
done
[ ${#STAGES[@]} -gt 0 ] || { echo "usage: bench/cuda.sh STAGE... [-o OUTDIR]" >&2; exit 2; }
OUT=${OUT:-$BUILD/cuda-results}
mkdir -p "$OUT"
BIN=$BUILD/expertd
NPROC=$(nproc)
status=0

have_gpu() { command -v nvidia-smi > /dev/null && nvidia-smi -L 2> /dev/null | grep -q GPU; }
need_bin() { [ -x "$BIN" ] || { echo "no $BIN: run the build stage first"; return 1; }; }

stage_build() {
  have_gpu || { echo "no GPU (nvidia-smi lists none)"; return 1; }
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version,compute_cap --format=csv \
    | tee "$OUT/device.txt"
  echo "$NPROC CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(/usr/local/cuda/bin/nvcc --version | tail -1)" \
    | tee -a "$OUT/device.txt"
  local arch=${ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEXPERTD_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" > /dev/null &&
    cmake --build "$BUILD" -j "$NPROC" 2>&1 | grep -E "error|warning|Built target expertd" 
  need_bin
}

stage_test() {
  need_bin || return 1
  local rc=0
  (cd "$BUILD" && ./test_cuda --verbose=0 -j1) || rc=1
  (cd "$BUILD" && ctest -j "$NPROC" --output-on-failure 2>&1 | tail -25) || rc=1
  return "$rc"
}

stage_memcheck() {
  need_bin || return 1
  local cs=/usr/local/cuda/bin/compute-sanitizer
  [ -x "$cs" ] || cs=$(command -v compute-sanitizer) || { echo "no compute-sanitizer"; return 1; }
  # criterion runs each test in a child process: follow them all; -j1 keeps them apart
  (cd "$BUILD" && timeout 560 "$cs" --tool memcheck --leak-check full --error-exitcode 7 \
    --target-processes all ./test_cuda -j1 --filter "${MEMCHECK_FILTER:-*}") 2>&1 | tail -40
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "memcheck ran out of time: narrow MEMCHECK_FILTER"
  return "$rc"
}

stage_goldens() {
  need_bin || return 1
  local cg=$SHARED/tools/check-goldens
  [ -x "$cg" ] || { echo "no $cg: set SHARED"; return 1; }
  local rc=0
  echo "-- resident"; "$cg" "$BIN" --backend "$BACKEND" 2>&1 | tail -5 || rc=1
  echo "-- 3 MiB expert cache"; "$cg" "$BIN" --backend "$BACKEND" --expert-cache 3MiB 2>&1 | tail -5 || rc=1
  return "$rc"
}

# serve_case NAME MODEL [ARGS...]: the greedy text of 8 concurrent requests (one streamed) equals
# what `run` prints alone with the same arguments
serve_case() {
  local name=$1 model=$2; shift 2
  local work; work=$(mktemp -d)
  local prompt="The capital of France is" n=48
  "$BIN" run -m "$model" -p "$prompt" -n "$n" --temp 0 --ignore-eos --json --backend "$BACKEND" "$@" \
    2> "$work/run.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"], end="")' \
    > "$work/want" || { echo "FAIL $name: run failed"; cat "$work/run.err"; rm -rf "$work"; return 1; }
  "$BIN" serve -m "$model" --port 0 --port-file "$work/port" --quiet --parallel 8 \
    --backend "$BACKEND" "$@" > "$work/serve.log" 2>&1 &
  local pid=$!
  local port=
  for _ in $(seq 1 1200); do
    [ -s "$work/port" ] && port=$(cat "$work/port") &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/health")" = 200 ] && break
    sleep 0.05
  done
  local id; id=$(basename "$model" .gguf)
  local body="{\"model\":\"$id\",\"prompt\":\"$prompt\",\"max_tokens\":$n,\"temperature\":0,\"ignore_eos\":true"
  local clients=()
  for i in 1 2 3 4 5 6 7; do
    curl -s --max-time 120 "localhost:$port/v1/completions" -H 'Content-Type: application/json' \
      -d "$body}" > "$work/r$i.json" &
    clients+=($!)
  done
  curl -s -N --max-time 120 "localhost:$port/v1/completions" -H 'Content-Type: application/json' \
    -d "$body,\"stream\":true}" > "$work/r8.sse" &
  clients+=($!)
  wait "${clients[@]}"
  kill "$pid" 2> /dev/null; wait "$pid" 2> /dev/null
  local rc=0
  for i in 1 2 3 4 5 6 7; do
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["text"], end="")' \
      "$work/r$i.json" > "$work/got$i" 2> /dev/null || rc=1
    cmp -s "$work/want" "$work/got$i" || rc=1
  done
  python3 - "$work/r8.sse" > "$work/got8" << 'EOF' || rc=1
import json, sys
text = ""
for line in open(sys.argv[1]):
    if line.startswith("data: ") and line.strip() != "data: [DONE]":
        text += json.loads(line[6:])["choices"][0]["text"]
print(text, end="")
EOF
  cmp -s "$work/want" "$work/got8" || rc=1
  if [ "$rc" = 0 ]; then
    echo "ok   $name: 8 concurrent requests (1 streamed) = run alone: $(head -c 60 "$work/want" | tr '\n' ' ')"
  else
    echo "FAIL $name"; echo "want: $(cat "$work/want")"
    for i in 1 2 3 4 5 6 7 8; do echo "got$i: $(cat "$work/got$i" 2> /dev/null)"; done
    tail -5 "$work/serve.log"
  fi
  rm -rf "$work"
  return "$rc"
}

stage_serve() {
  need_bin || return 1
  local rc=0
  for m in tests/fixtures/mixtral-tiny-q4_k_m.gguf tests/fixtures/qwen3moe-tiny-q8_0.gguf; do
    [ -f "$m" ] || continue
    local b; b=$(basename "$m" .gguf)
    serve_case "$b resident" "$m" || rc=1
    serve_case "$b expert cache 3MiB" "$m" --expert-cache 3MiB || rc=1
  done
  return "$rc"
}

stage_bench() {
  need_bin || return 1
  if [ ! -f "$MODEL" ]; then
    echo "generating $MODEL (3.27 GB)"
    "$BIN" gen -o "$MODEL" --type q4_k --layers 4 --d-model 4096 --heads 32 --kv-heads 8 \
      --ff 14336 --experts 8 --top-k 2 > /dev/null || return 1
  fi
  local be=(-m "$MODEL" --backend "$BACKEND")
  echo "-- all resident"
  "$BIN" bench engine "${be[@]}" -p 512 -n 128 -r 3 --membw || return 1
  local disk=$DISK_DIR/xd-big-store.xdpack
  "$BIN" pack "$MODEL" -o "$disk" > /dev/null || return 1
  local shm=/dev/shm/xd-big-store.xdpack
  "$BIN" pack "$MODEL" -o "$shm" > /dev/null || return 1
  local io store commit
  for store in "$shm" "$disk"; do
    for io in pread uring; do
      for commit in streamed whole; do
        local env=()
        [ "$commit" = whole ] && env=(XD_CUDA_WHOLE_COMMIT=1)
        echo "-- $CACHE of slots, store $store, $io, $commit commit"
        env "${env[@]}" "$BIN" bench engine "${be[@]}" -p 0 -n 16 -r 2 --membw \
          --expert-cache "$CACHE" --expert-store "$store" --expert-io "$io" 2>&1 |
          grep -v "^expertd: expert cache"
      done
    done
  done
  rm -f "$disk" "$shm"
}

for s in "${STAGES[@]}"; do
  echo "== $s ($(date -u +%H:%M:%S))"
  t0=$(date +%s)
  { "stage_$s"; echo "exit $?"; } 2>&1 | tee "$OUT/$s.txt"
  rc=$(tail -1 "$OUT/$s.txt" | awk '{print $2}')
  if [ "$rc" = 0 ]; then r=PASS; else r=FAIL; status=1; fi
  echo "== $s: $r in $(($(date +%s) - t0)) s" | tee -a "$OUT/$s.txt"
done
exit $status
