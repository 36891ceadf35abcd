#!/usr/bin/env bash
# Install what expertd needs to build and test on Debian/Ubuntu. Idempotent: skips apt when
# every package is already installed. Needs root (or sudo).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libjansson-dev liburing-dev libcriterion-dev
      node-llhttp clang python3 curl prometheus
      python3-yaml shellcheck docker-compose podman debootstrap fuse-overlayfs uidmap)
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
