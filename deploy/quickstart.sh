#!/usr/bin/env bash
# Install dependencies, build expertd, and start it on MODEL (default: a generated synthetic
# Mixtral-layout model whose output is gibberish by design).
#   bash deploy/quickstart.sh [MODEL.gguf]
# Environment: PORT (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

model=${1:-}
if [ -z "$model" ]; then
  model=build/default-model.gguf
  if [ ! -f "$model" ]; then
    echo "quickstart: no model given; generating a synthetic one at $model (random weights: gibberish output)"
    vocab=../shared/fixtures/tokenizer/ggml-vocab-llama-spm.gguf
    [ -f "$vocab" ] || vocab=tests/fixtures/tokenizer/ggml-vocab-llama-spm.gguf
    build/expertd gen -o "$model" --arch mixtral --type q8_0 --vocab "$vocab" --seed 1
  fi
fi

echo "quickstart: serving $model on http://127.0.0.1:${PORT:-8080} (Ctrl-C to stop)"
exec build/expertd serve -m "$model" --host 127.0.0.1 --port "${PORT:-8080}"
