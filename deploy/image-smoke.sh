#!/usr/bin/env bash
# Build deploy/Dockerfile.cpu with podman and smoke-test the image without running a container:
# its filesystem is exported and the server runs from it in a chroot, as the image's user, with
# the image's environment and entrypoint, against /health (the image's own HEALTHCHECK command),
# one completion, and a second start with --expert-cache over a store packed into /store.
#
#   sudo bash deploy/image-smoke.sh            # ~5-10 min on 2 cores; needs root, podman, debootstrap
#
# Why not `podman run`: containers cannot start on these machines (no cgroup delegation), and no
# image registry is reachable, so the base image is a bookworm root filesystem made here with
# debootstrap and `podman import` (BASE_IMAGE=debian:bookworm-slim where a registry is reachable).
# Environment: BASE_IMAGE (skip debootstrap), IMAGE (default localhost/expertd:cpu), SMOKE_OUT
# (folder for the /metrics scrape, default a temporary one), PODMAN (the podman command; default:
# a store in /var/tmp/expertd-podman, overlay driver where available).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "image-smoke: needs root (chroot, mount)"; exit 2; }
need=()
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || [ -n "${BASE_IMAGE:-}" ] || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# a store of its own (layers stay cached between runs); overlay where the kernel has it, else vfs
driver=vfs
grep -qw overlay /proc/filesystems && driver=overlay
read -r -a PODMAN <<<"${PODMAN:-podman --root /var/tmp/expertd-podman/storage --runroot /run/expertd-podman --storage-driver $driver}"
IMAGE=${IMAGE:-localhost/expertd:cpu}
MODEL_FILE=mixtral-tiny-q8_0.gguf
work=$(mktemp -d /var/tmp/expertd-smoke.XXXXXX)
out=${SMOKE_OUT:-$work/out}
mkdir -p "$out"
root=$work/root
pid=""
t0=$SECONDS
step() { printf 'image-smoke: [%4ds] %s\n' $((SECONDS - t0)) "$*"; }
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" || true; fi
  for m in "$root/models" "$root/dev" "$root/proc"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- base image -----------------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE=localhost/xd-bookworm:base
  if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    step "debootstrap bookworm (minbase) -> $BASE_IMAGE"
    debootstrap --variant=minbase bookworm "$work/base" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log"; exit 1; }
    rm -rf "$work/base/var/cache/apt/archives/"*.deb "$work/base/var/lib/apt/lists/"*
    tar -C "$work/base" -c . | "${PODMAN[@]}" import --quiet - "$BASE_IMAGE" >/dev/null
    rm -rf "$work/base"
  fi
fi

# ---- build ----------------------------------------------------------------------------------
step "podman build -f deploy/Dockerfile.cpu (FROM $BASE_IMAGE)"
"${PODMAN[@]}" build --format docker --isolation=chroot --network=host -f deploy/Dockerfile.cpu \
  --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" . >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }

# ---- what the image declares ------------------------------------------------------------------
step "inspect $IMAGE"
"${PODMAN[@]}" image inspect "$IMAGE" >"$work/config.json"
"${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "image-smoke: image size %.0f MB\n", $1/1e6}'
python3 - "$work/config.json" >"$work/env" <<'PY'
import json, sys
image = json.load(open(sys.argv[1]))[0]
c = image["Config"]
def check(ok, what):
    if not ok:
        sys.exit(f"image-smoke: image config: {what} (config: {json.dumps(c)})")
check(c.get("Entrypoint") == ["expertd", "serve"], "ENTRYPOINT is not [expertd, serve]")
check(c.get("User") == "expertd:expertd", "USER is not expertd")
check("8080/tcp" in (c.get("ExposedPorts") or {}), "8080 not exposed")
check({"/models", "/store"} <= set(c.get("Volumes") or {}), "volumes /models and /store missing")
check("/usr/local/lib/expertd/healthcheck" in (image.get("Healthcheck") or image.get("HealthCheck") or {}).get("Test", []), "no HEALTHCHECK")
for e in c.get("Env", []):
    print(e)
PY

# ---- export and mount -----------------------------------------------------------------------
step "export the image filesystem"
cid=$("${PODMAN[@]}" create --no-healthcheck "$IMAGE")
mkdir -p "$root"
"${PODMAN[@]}" export "$cid" | tar -x -C "$root"
"${PODMAN[@]}" rm "$cid" >/dev/null
for f in usr/bin/cc usr/bin/gcc usr/bin/cmake usr/include/uv.h usr/bin/curl; do
  [ ! -e "$root/$f" ] || { echo "image-smoke: /$f is in the runtime image"; exit 1; }
done
[ "$(stat -c %u "$root/store")" = 10001 ] || { echo "image-smoke: /store is not owned by expertd"; exit 1; }
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind -o ro tests/fixtures "$root/models"
mount -o remount,bind,ro "$root/models"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mapfile -t image_env <"$work/env"
# in_image CMD...: run CMD in the image's filesystem as its user, with its environment and
# working directory, plus the caller's VAR=value arguments before CMD
in_image() {
  local extra=()
  while [[ "${1:-}" == *=* ]]; do extra+=("$1"); shift; done
  env -i "${image_env[@]}" "${extra[@]}" chroot --userspec=10001:10001 "$root" \
    /bin/sh -c 'cd /store && exec "$@"' sh "$@"
}
start() { # start VAR=value...: `expertd serve` as the ENTRYPOINT runs it; sets pid and port
  port=$(free_port)
  # not through in_image: a simple command in the background is exec'ed, so $! is the process
  # that ends up as expertd (env, chroot, sh and the wrapper all exec) and gets our SIGTERM
  env -i "${image_env[@]}" EXPERTD_MODEL="/models/$MODEL_FILE" EXPERTD_PORT="$port" \
    EXPERTD_THREADS=2 "$@" chroot --userspec=10001:10001 "$root" \
    /bin/sh -c 'cd /store && exec "$@"' sh expertd serve >"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    in_image EXPERTD_PORT="$port" /usr/local/lib/expertd/healthcheck 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/serve.log"
  echo "image-smoke: the server did not become healthy"
  exit 1
}
complete() { # one completion of 8 tokens; fails unless 8 tokens came back
  curl -fsS "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"${MODEL_FILE%.gguf}\", \"prompt\": \"Once upon a time\", \"max_tokens\": 8, \"seed\": 1}" \
    >"$work/completion.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); u=r["usage"]; c=r["choices"][0]
assert u["completion_tokens"] == 8 and c["finish_reason"] == "length", r
print("image-smoke: completion ok: %d prompt + %d completion tokens, text %r" % (u["prompt_tokens"], u["completion_tokens"], c["text"]))
open(sys.argv[2], "a").write(c["text"] + "\n")' "$work/completion.json" "$work/texts"
}
stop() { # SIGTERM drains and exits 0
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  pid=""
  [ "$rc" -eq 0 ] || { cat "$work/serve.log"; echo "image-smoke: exit status $rc after SIGTERM"; exit 1; }
}

# ---- run 1: all experts resident --------------------------------------------------------------
step "serve from the image (all resident): /health, one completion, SIGTERM"
start
complete
stop

# ---- run 2: pack a store into /store, serve with --expert-cache --------------------------------
step "expertd pack into /store (the wrapper passes non-serve commands through)"
in_image expertd pack "/models/$MODEL_FILE" -o /store/mixtral-tiny.xdpack --quiet
step "serve with EXPERTD_EXPERT_CACHE=1M EXPERTD_EXPERT_STORE=/store/mixtral-tiny.xdpack"
start EXPERTD_EXPERT_CACHE=1M EXPERTD_EXPERT_STORE=/store/mixtral-tiny.xdpack
complete
curl -fsS "http://127.0.0.1:$port/metrics" >"$out/metrics.txt"
python3 - "$out/metrics.txt" <<'PY'
import sys
v = {}
for line in open(sys.argv[1]):
    if line[0] != "#" and " " in line:
        k, x = line.rsplit(" ", 1)
        v[k] = float(x)
for k in ("expertd_expert_cache_misses_total", "expertd_expert_cache_read_bytes_total"):
    assert v.get(k, 0) > 0, f"{k} = {v.get(k)}: the expert cache did not read from the store"
print("image-smoke: expert cache ok: %d hits, %d misses, %.1f MB read from /store" % (
    v["expertd_expert_cache_hits_total"], v["expertd_expert_cache_misses_total"],
    v["expertd_expert_cache_read_bytes_total"] / 1e6))
PY
grep -E 'io_uring|pread|O_DIRECT|not using' "$work/serve.log" | sed 's/^/image-smoke: server: /' || true
stop
# seed 1 both times: streaming experts from the store must not change a token
[ "$(sort -u "$work/texts" | wc -l)" = 1 ] || { echo "image-smoke: offloaded text differs from resident"; exit 1; }
python3 deploy/check_deploy.py --metrics "$out/metrics.txt" | grep 'metric names'
step "image ok"
