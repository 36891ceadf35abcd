#!/usr/bin/env bash
# Build expertd and run every test: the Criterion suites (release build, then again under
# ASan+UBSan), a short fuzz smoke run of every libFuzzer target, and the public golden check
# when ../shared is beside the repository. Exits non-zero on any failure.
#   bash tests/run.sh            everything
#   FAST=1 bash tests/run.sh     release build and unit tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
jobs=$(nproc)

echo "== build (release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== unit tests (release) =="
ctest --test-dir build --output-on-failure -j1
echo "== end-to-end: expertd serve (release) =="
bash tests/e2e/serve_test.sh build

[ -n "${FAST:-}" ] && exit 0

echo "== unit tests (ASan+UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1 -DEXPERTD_SANITIZE=address,undefined \
  -DEXPERTD_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp" ctest --test-dir build-asan --output-on-failure -j1
echo "== end-to-end: expertd serve (ASan+UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 E2E_LONG_TOKENS=40 \
  bash tests/e2e/serve_test.sh build-asan

echo "== fuzz smoke (${FUZZ_SECONDS:-30} s per target) =="
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
  "$f" -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 "${dict[@]}" "$work" 2>&1 | tail -n 2
  rm -rf "$work"
done

if [ -x ../shared/tools/check-goldens ]; then
  echo "== public goldens (../shared/tools/check-goldens) =="
  ../shared/tools/check-goldens build/expertd
fi
