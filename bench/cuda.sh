#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage functions are called by name (stage_$s)
# cuda.sh - what issue 7 needs from a lent GPU, in stages that each fit one call of the device
# tool (10 minutes), so that a session with a GPU spends its device time measuring, not typing.
#
#   bash bench/cuda.sh STAGE... [-o OUTDIR]
#
# Stages (run in the order given; each writes OUTDIR/STAGE.txt and says PASS/FAIL at its end):
#   build     Release build with -DEXPERTD_CUDA=ON for $ARCH (default: the device's own
#             compute capability) into $BUILD (default build-cuda); device.txt describes the GPU.
#             The GPU image has none of our libraries: run bench/cuda-devroot.sh here first and
#             carry .devroot (the build then takes them from there). EMU=1: -DEXPERTD_CUDA=EMU
#             into build-cuemu instead (the kernels on the CPU emulator of engine/cuda/emu), a
#             dry run of test, goldens and serve with no GPU
#   test      test_cuda (golden rule on the CUDA backend, batch == alone, offloaded == resident
#             bit for bit), then the rest of that build's ctest suite
#   memcheck  compute-sanitizer --tool memcheck --leak-check full over test_cuda, every test
#             process followed ($MEMCHECK_FILTER picks tests, default all, e.g.
#             '*q4_k_m*' for the 8-bit Q4_K kernels; $MEMCHECK_TIMEOUT seconds, default 480)
#   goldens   check-goldens on the CUDA backend, resident and with a 3 MiB expert cache
#             ($SHARED: the shared directory, default ../shared beside the repository; it
#             does not travel to the device, where the stage says SKIPPED)
#   serve     `serve --backend $BACKEND`: 8 concurrent greedy requests, one of them streamed,
#             must each return the text `run --backend $BACKEND` gives alone, resident and with
#             an expert cache (BACKEND=cpu runs the same check without a GPU)
#   bench     the figures of docs/benchmarks.md's CUDA section on a generated Mixtral-shaped
#             Q4_K model ($MODEL, default /dev/shm/xd-big.gguf, generated when missing):
#             resident pp512/tg128 against the HBM limit; offloaded tg with $CACHE of VRAM slots
#             (default 640MB, about 20% of the experts) against the host-to-device limit, with
#             the streamed commit and the whole-expert commit (XD_CUDA_WHOLE_COMMIT=1)
#             alternating for $ROUNDS rounds (default 2), pread pool and io_uring, store on tmpfs
#             and on disk ($DISK_DIR, default /tmp)
#
# Example: here, once, bash bench/cuda-devroot.sh; then device calls that carry .devroot, each
# starting with build (about a minute: the machine is given back 30 s after a call, and with it
# the build), $OUT coming back:
#   bash bench/cuda.sh build test serve -o $OUT
#   bash bench/cuda.sh build memcheck -o $OUT
#   bash bench/cuda.sh build bench -o $OUT
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
EMU=${EMU:-0}
if [ "$EMU" = 1 ]; then BUILD=${BUILD:-build-cuemu}; else BUILD=${BUILD:-build-cuda}; fi
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
  local arch=${ARCH:-}
  if [ "$EMU" = 1 ]; then
    echo "CUDA emulator on $NPROC CPUs (no GPU: correctness only, no timings)" | tee "$OUT/device.txt"
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEXPERTD_CUDA=EMU > "$OUT/build.log" 2>&1 &&
      cmake --build "$BUILD" -j "$NPROC" >> "$OUT/build.log" 2>&1
    local rc=$?
    grep -E "error:|warning:|CUDA backend|Built target (expertd|test_cuda)$" "$OUT/build.log"
    [ "$rc" = 0 ] || { tail -20 "$OUT/build.log"; return 1; }
    need_bin
    return
  fi
  if have_gpu; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version,compute_cap --format=csv \
      | tee "$OUT/device.txt"
    [ -n "$arch" ] || arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
  elif [ -z "$arch" ]; then
    echo "no GPU (nvidia-smi lists none); set ARCH (e.g. 90) to build without one"
    return 1
  fi
  echo "$NPROC CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(/usr/local/cuda/bin/nvcc --version | tail -1)" \
    | tee -a "$OUT/device.txt"
  # the image lacks our libraries: bench/cuda-devroot.sh gathers them here, the run carries them
  local extra=()
  if [ -f .devroot/env.sh ]; then
    # shellcheck source=/dev/null
    . .devroot/env.sh
    extra=("${XD_DEVROOT_CMAKE_ARGS[@]}")
  fi
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEXPERTD_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" "${extra[@]}" > "$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" -j "$NPROC" >> "$OUT/build.log" 2>&1
  local rc=$?
  grep -E "error:|warning:|CUDA backend|Built target (expertd|test_cuda)$" "$OUT/build.log"
  [ "$rc" = 0 ] || { tail -20 "$OUT/build.log"; return 1; }
  need_bin
}

stage_test() {
  need_bin || return 1
  local rc=0
  (cd "$BUILD" && ./test_cuda --verbose=0 -j1) || rc=1
  (cd "$BUILD" && ctest -j "$NPROC" -E '^test_cuda$' --output-on-failure 2>&1 | tail -25) || rc=1
  return "$rc"
}

stage_memcheck() {
  need_bin || return 1
  local cs=/usr/local/cuda/bin/compute-sanitizer
  [ -x "$cs" ] || cs=$(command -v compute-sanitizer) || { echo "no compute-sanitizer"; return 1; }
  # criterion runs each test in a child process: follow them all; -j1 keeps them apart
  # the device tool stops a call at 600 s, and this stage follows a build
  (cd "$BUILD" && timeout "${MEMCHECK_TIMEOUT:-480}" "$cs" --tool memcheck --leak-check full --error-exitcode 7 \
    --target-processes all ./test_cuda -j1 --filter "${MEMCHECK_FILTER:-*}") 2>&1 | tail -40
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "memcheck ran out of time: narrow MEMCHECK_FILTER"
  return "$rc"
}

stage_goldens() {
  need_bin || return 1
  local cg=$SHARED/tools/check-goldens
  if [ ! -x "$cg" ]; then
    # ../shared does not travel to the device (83 MB with its models; the carry limit is 64 MiB
    # with the tree): test_cuda applies the same rule to every model in tests/fixtures
    echo "SKIPPED: no $cg (set SHARED); the test stage's test_cuda covers tests/fixtures"
    return 0
  fi
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
  # the clients in Python's standard library: the GPU image may have no curl
  python3 - "$work" "$(basename "$model" .gguf)" "$prompt" "$n" << 'EOF'
import json, os, sys, threading, time, urllib.request
work, model, prompt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
port = None
for _ in range(1200):  # up to 60 s: a CUDA context and the upload take a while
    try:
        port = int(open(os.path.join(work, "port")).read())
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200:
            break
    except Exception:
        pass
    time.sleep(0.05)
def ask(i, stream):
    body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0,
            "ignore_eos": True, "stream": stream}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    text = ""
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            if not stream:
                text = json.load(r)["choices"][0]["text"]
            else:
                for line in r:
                    line = line.decode().strip()
                    if line.startswith("data: ") and line != "data: [DONE]":
                        text += json.loads(line[6:])["choices"][0]["text"]
    except Exception as e:
        text = f"<request failed: {e}>"
    with open(os.path.join(work, f"got{i}"), "w") as f:
        f.write(text)
ts = [threading.Thread(target=ask, args=(i, i == 8)) for i in range(1, 9)]
for t in ts:
    t.start()
for t in ts:
    t.join()
EOF
  kill "$pid" 2> /dev/null; wait "$pid" 2> /dev/null
  local rc=0
  for i in 1 2 3 4 5 6 7 8; do cmp -s "$work/want" "$work/got$i" || rc=1; done
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
  local io store commit round
  for store in "$shm" "$disk"; do
    for io in pread uring; do
      for round in $(seq 1 "${ROUNDS:-2}"); do
      for commit in streamed whole; do
        local env=()
        [ "$commit" = whole ] && env=(XD_CUDA_WHOLE_COMMIT=1)
        echo "-- $CACHE of slots, store $store, $io, $commit commit, round $round"
        env "${env[@]}" "$BIN" bench engine "${be[@]}" -p 0 -n 16 -r 2 --membw \
          --expert-cache "$CACHE" --expert-store "$store" --expert-io "$io" 2>&1 |
          grep -v "^expertd: expert cache"
      done
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
