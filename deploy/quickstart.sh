#!/usr/bin/env bash
# Install dependencies, build expertd, and start it on MODEL (default: a generated synthetic
# Mixtral-layout model whose output is gibberish by design).
#   bash deploy/quickstart.sh [MODEL.gguf]
# Environment: PROMPT (default "Once upon a time"), N_PREDICT (default 64).
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

if build/expertd serve --help >/dev/null 2>&1; then
  exec build/expertd serve -m "$model" --host 127.0.0.1 --port "${PORT:-8080}"
fi
# The HTTP server is not in this build yet: run the engine on a prompt instead.
echo "quickstart: 'expertd serve' is not built yet; running the engine once on \$PROMPT"
exec build/expertd run -m "$model" -p "${PROMPT:-Once upon a time}" -n "${N_PREDICT:-64}"
