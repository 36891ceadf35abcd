#!/usr/bin/env bash
# Install what expertd needs to build and serve on Debian/Ubuntu, and with --test also what the
# tests need. Idempotent: skips apt when every package is already installed. Needs root (or sudo).
set -euo pipefail
# to build and serve (deploy/quickstart.sh)
pkgs=(build-essential cmake pkg-config libuv1-dev libjansson-dev liburing-dev libcriterion-dev
      node-llhttp python3 curl)
# --test: what tests/run.sh needs besides: clang (fuzzing), promtool, the deploy checks and the
# CPU image build (podman from a debootstrap base)
if [ "${1:-}" = --test ]; then
  pkgs+=(clang prometheus python3-yaml shellcheck docker-compose podman debootstrap
         fuse-overlayfs uidmap)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm (the e2e tests install the openai client with npm) may come from elsewhere
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
