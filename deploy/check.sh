#!/usr/bin/env bash
# Checks of deploy/ that fit in CI time (a few seconds in all): the Prometheus config and alert
# rules (promtool check + the rules' unit tests), shellcheck of the scripts, compose.yaml (docker-compose config, both
# profiles), every YAML/JSON file and the Kubernetes manifests' fields (check_deploy.py), and the
# metric names the dashboard/alerts/HPA use against a live /metrics of the built server.
#
#   bash deploy/check.sh                       # EXPERTD_BIN (default build/expertd) for the names
#   EXPERTD_CHECK_IMAGE=1 bash deploy/check.sh # also build the CPU image and smoke-test it
#                                              # (deploy/image-smoke.sh: minutes, needs root)
#   EXPERTD_CHECK_K8S_SCHEMA=1 ...             # also validate deploy/k8s against the Kubernetes
#                                              # schemas (k8s_schema.mjs; npm packages, cached)
# A check whose tool is missing (docker-compose, a built server) is skipped with a message, not
# passed. Ends with "N passed, N failed" (skips listed above it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
passed=0 failed=0 skipped=()
run() { # run NAME CMD...: time one check, count it
  local name=$1 t=$SECONDS rc=0
  shift
  "$@" >/tmp/expertd-check.$$ 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1)); printf 'check: ok   %-28s %3ds\n' "$name" $((SECONDS - t))
  else
    failed=$((failed + 1)); printf 'check: FAIL %-28s %3ds\n' "$name" $((SECONDS - t))
    sed 's/^/    /' /tmp/expertd-check.$$
  fi
  rm -f /tmp/expertd-check.$$
}
skip() { skipped+=("$1 ($2)"); printf 'check: skip %-28s %s\n' "$1" "$2"; }

# ---- Prometheus ------------------------------------------------------------------------------
if command -v promtool >/dev/null; then
  run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
  run "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
  run "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
else
  skip promtool "not installed: apt-get install prometheus"
fi

# ---- shell scripts ---------------------------------------------------------------------------
if command -v shellcheck >/dev/null; then
  run "shellcheck" shellcheck deploy/check.sh deploy/image-smoke.sh deploy/docker/expertd-wrapper.sh \
    deploy/docker/healthcheck.sh
else
  skip shellcheck "not installed: apt-get install shellcheck"
fi

# ---- compose ---------------------------------------------------------------------------------
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null; then compose=(docker-compose); fi
if [ ${#compose[@]} -gt 0 ]; then
  for profile in gpu cpu; do
    run "compose config --profile $profile" "${compose[@]}" -f deploy/compose.yaml --profile "$profile" config -q
  done
else
  skip "compose config" "no docker compose / docker-compose: apt-get install docker-compose"
fi

# ---- YAML, JSON, Kubernetes fields, metric names ---------------------------------------------------
if python3 -c 'import yaml' 2>/dev/null; then
  run "manifests (check_deploy.py)" python3 deploy/check_deploy.py
  bin=${EXPERTD_BIN:-build/expertd}
  if [ -x "$bin" ]; then
    live_names() { # the names used must be exported by a server with the expert cache on
      local dir pid rc=0
      dir=$(mktemp -d)
      "$bin" serve -m tests/fixtures/mixtral-tiny-q8_0.gguf --host 127.0.0.1 --port 0 \
        --port-file "$dir/port" --threads 1 --expert-cache 1M --quiet >"$dir/log" 2>&1 &
      pid=$!
      for _ in $(seq 100); do
        [ -s "$dir/port" ] && curl -fs "http://127.0.0.1:$(cat "$dir/port")/health" >/dev/null && break
        sleep 0.1
      done
      curl -fsS "http://127.0.0.1:$(cat "$dir/port" 2>/dev/null)/metrics" >"$dir/metrics" \
        && python3 deploy/check_deploy.py --metrics "$dir/metrics" || rc=1
      kill -TERM "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      [ "$rc" -eq 0 ] || cat "$dir/log"
      rm -rf "$dir"
      return "$rc"
    }
    run "metric names vs /metrics" live_names
  else
    skip "metric names vs /metrics" "no server binary at $bin (build first or set EXPERTD_BIN)"
  fi
else
  skip "manifests, metric names" "PyYAML missing: apt-get install python3-yaml"
fi

# ---- Kubernetes schemas (optional: fetches two npm packages once, ~10 s) -----------------------
if [ "${EXPERTD_CHECK_K8S_SCHEMA:-0}" = 1 ]; then
  k8s_schema() { # OpenAPI types of each field (not unknown fields: the schemas allow extra keys)
    local dir=${XDG_CACHE_HOME:-$HOME/.cache}/expertd-k8s-schema
    if [ ! -d "$dir/node_modules/kubernetes-models" ]; then
      mkdir -p "$dir" && echo '{"private": true}' >"$dir/package.json" \
        && npm install --prefix "$dir" --silent --no-audit --no-fund kubernetes-models@5.1.0 \
             @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0 || return 1
    fi
    NODE_MODULES_DIR="$dir/node_modules" node deploy/k8s_schema.mjs deploy/k8s/*.yaml
  }
  run "k8s schemas" k8s_schema
else
  skip "k8s schemas" "set EXPERTD_CHECK_K8S_SCHEMA=1 (npm install, ~10 s once)"
fi

# ---- the CPU image (optional) ------------------------------------------------------------------
if [ "${EXPERTD_CHECK_IMAGE:-0}" = 1 ]; then
  run "CPU image build + smoke" bash deploy/image-smoke.sh
else
  skip "CPU image build + smoke" "set EXPERTD_CHECK_IMAGE=1 (minutes, root)"
fi

echo "deploy: $passed passed, $failed failed, ${#skipped[@]} skipped"
[ "$failed" -eq 0 ]
