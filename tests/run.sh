#!/usr/bin/env bash
# Build expertd and run every test (this is what CI runs): the Criterion suites and the
# end-to-end suites over real sockets (HTTP surface and openai client, batching, offloading,
# 10,000 hostile requests, faults under load) on the release build, all of it again under
# ASan+UBSan, the CUDA backend's tests through its kernels on the CPU emulator (ASan+UBSan), the
# end-to-end suites against a ThreadSanitizer build, 60 s of libFuzzer per
# target, the deploy checks (with the CPU image build when root), and the public golden check
# when ../shared is beside the repository. Exits non-zero on any failure.
#   bash tests/run.sh            everything
#   FAST=1 bash tests/run.sh     release build, unit and end-to-end tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh --test
jobs=$(nproc)

echo "== build (release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== unit tests (release) =="
ctest --test-dir build --output-on-failure -j1
echo "== end-to-end: expertd serve (release) =="
bash tests/e2e/serve_test.sh build
echo "== end-to-end: continuous batching, paged KV, preemption (release) =="
bash tests/e2e/batch_test.sh build
echo "== end-to-end: expertd serve --expert-cache (release) =="
bash tests/e2e/offload_test.sh build
echo "== abuse: 10,000 hostile requests beside a valid client (release) =="
bash tests/e2e/abuse_test.sh build 10000
echo "== faults under load: disk corruption, disconnects, SIGTERM (release) =="
bash tests/e2e/faults_test.sh build

[ -n "${FAST:-}" ] && exit 0

echo "== unit tests (ASan+UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1 -DEXPERTD_SANITIZE=address,undefined \
  -DEXPERTD_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp" ctest --test-dir build-asan --output-on-failure -j1
echo "== CUDA backend on the CPU emulator (ASan+UBSan): test_cuda through the real kernels =="
# engine/cuda/emu: the .cu files compiled as C++, every CUDA thread a fiber; no GPU is used
cmake -S . -B build-cuemu -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1 -DCMAKE_CXX_FLAGS=-O2 \
  -DEXPERTD_SANITIZE=address,undefined -DEXPERTD_CUDA=EMU >/dev/null
cmake --build build-cuemu -j"$jobs" --target test_cuda expertd
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp" ctest --test-dir build-cuemu -R '^test_cuda$' \
  --output-on-failure
echo "== serve --backend cuda on the CPU emulator (ASan+UBSan): 8 concurrent requests = run alone =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp" BUILD=build-cuemu bash bench/cuda.sh serve \
  -o build-cuemu/cuda-results
echo "== end-to-end: expertd serve (ASan+UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 E2E_LONG_TOKENS=40 \
  bash tests/e2e/serve_test.sh build-asan
echo "== end-to-end: continuous batching (ASan+UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 E2E_BATCH_TOKENS=24 \
  bash tests/e2e/batch_test.sh build-asan
echo "== end-to-end: expertd serve --expert-cache (ASan+UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  bash tests/e2e/offload_test.sh build-asan
echo "== abuse: 2,000 hostile requests (ASan+UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  bash tests/e2e/abuse_test.sh build-asan 2000
echo "== faults under load (ASan+UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  bash tests/e2e/faults_test.sh build-asan

echo "== ThreadSanitizer: server, engine, thread pool and expert-cache I/O threads, end to end =="
# Criterion's test runner cannot start under TSan (its boxfort arena), so the threads are
# checked where they all run together: the e2e suites against a TSan-built server.
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEXPERTD_SANITIZE=thread \
  -DEXPERTD_CUDA=OFF -DEXPERTD_TESTS=OFF >/dev/null
cmake --build build-tsan -j"$jobs" --target expertd
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
E2E_LONG_TOKENS=40 bash tests/e2e/serve_test.sh build-tsan
bash tests/e2e/offload_test.sh build-tsan
bash tests/e2e/faults_test.sh build-tsan
unset TSAN_OPTIONS

echo "== fuzz smoke (${FUZZ_SECONDS:-60} s per target) =="
CC=clang cmake -S . -B build-fuzz -DEXPERTD_FUZZ=ON -DEXPERTD_TESTS=OFF -DEXPERTD_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$jobs"
for f in build-fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f"); short=${name#fuzz_}; corpus="tests/fuzz/corpus/$short"
  work=$(mktemp -d); [ -d "$corpus" ] && cp -r "$corpus/." "$work/"
  dict=(); for d in "tests/fuzz/$short.dict" "tests/fuzz/${short%%_*}.dict"; do
    [ -f "$d" ] && { dict=(-dict="$d"); break; }; done
  echo "-- $name"
  "$f" -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=2048 "${dict[@]}" "$work" 2>&1 | tail -n 2
  rm -rf "$work"
done

echo "== deploy: Prometheus/Grafana/compose/Kubernetes checks, CPU image build + smoke test =="
# the image is built with podman from a debootstrap base (deploy/image-smoke.sh): root only
EXPERTD_BIN=build/expertd EXPERTD_CHECK_K8S_SCHEMA=1 EXPERTD_CHECK_IMAGE=$([ "$(id -u)" = 0 ] && echo 1 || echo 0) \
  bash deploy/check.sh

if [ -x ../shared/tools/check-goldens ]; then
  echo "== public goldens (../shared/tools/check-goldens) =="
  ../shared/tools/check-goldens build/expertd
fi
