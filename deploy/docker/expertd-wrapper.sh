#!/bin/sh
# expertd (container wrapper) - installed as /usr/local/bin/expertd in the images, in front of the
# real binary in /usr/local/lib/expertd/. `expertd serve ...` gets its flags from EXPERTD_*
# environment variables (deploy/README.md and the README's "Deploy" section list them); every
# other subcommand (`expertd pack`, `expertd inspect`) passes through untouched.
#
# Arguments given to the container (CMD, `docker run IMAGE --flag v`, k8s `args:`) come after the
# ones built from the environment, so they win: expertd keeps the last value of a repeated flag.
# The API key is deliberately not turned into --api-key: expertd reads EXPERTD_API_KEY itself,
# and a flag would show the key in /proc/PID/cmdline and `ps`.
set -eu
bin=${EXPERTD_BIN:-/usr/local/lib/expertd/expertd}
if [ "${1:-}" != serve ]; then
    exec "$bin" "$@"
fi
shift
n=$#

if [ -n "${EXPERTD_MODEL:-}" ]; then set -- "$@" --model "$EXPERTD_MODEL"; fi
if [ -n "${EXPERTD_MODEL_NAME:-}" ]; then set -- "$@" --model-name "$EXPERTD_MODEL_NAME"; fi
set -- "$@" --host "${EXPERTD_HOST:-0.0.0.0}" --port "${EXPERTD_PORT:-8080}"
if [ -n "${EXPERTD_PARALLEL:-}" ]; then set -- "$@" --parallel "$EXPERTD_PARALLEL"; fi
if [ -n "${EXPERTD_CTX:-}" ]; then set -- "$@" --ctx "$EXPERTD_CTX"; fi
if [ -n "${EXPERTD_THREADS:-}" ]; then set -- "$@" --threads "$EXPERTD_THREADS"; fi
if [ -n "${EXPERTD_BACKEND:-}" ]; then set -- "$@" --backend "$EXPERTD_BACKEND"; fi
if [ -n "${EXPERTD_EXPERT_CACHE:-}" ]; then set -- "$@" --expert-cache "$EXPERTD_EXPERT_CACHE"; fi
if [ -n "${EXPERTD_EXPERT_STORE:-}" ]; then set -- "$@" --expert-store "$EXPERTD_EXPERT_STORE"; fi
if [ -n "${EXPERTD_MAX_QUEUE:-}" ]; then set -- "$@" --max-queue "$EXPERTD_MAX_QUEUE"; fi

# rotate the caller's n arguments behind the ones just appended
while [ "$n" -gt 0 ]; do
    set -- "$@" "$1"
    shift
    n=$((n - 1))
done
exec "$bin" serve "$@"
