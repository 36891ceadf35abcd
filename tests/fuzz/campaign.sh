#!/usr/bin/env bash
# campaign.sh - long fuzzing runs, one target after another, each on its growing corpus under
# $CORPUS_DIR (default /var/tmp/xd-fuzz; the checked-in seeds under tests/fuzz/corpus are read,
# never written). Prints one Markdown row per run for docs/fuzzing.md:
#   | date | target | seconds | executions | result |
# and stops at the first finding (its reproducer is left in the working directory).
#   bash tests/fuzz/campaign.sh SECONDS [TARGET...]     (default: every build-fuzz/fuzz_*)
# FORK=N: N worker processes per target (libFuzzer -fork=N; the row's seconds are wall time,
# so the target got N x SECONDS of fuzzing). PARALLEL=1: every target at once (the rows then
# come in the order the targets finish, and a finding does not stop the others).
# Build first: CC=clang cmake -S . -B build-fuzz -DEXPERTD_FUZZ=ON -DEXPERTD_TESTS=OFF
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:?usage: campaign.sh SECONDS [TARGET...]}
shift
CORPUS_DIR=${CORPUS_DIR:-/var/tmp/xd-fuzz}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || for f in build-fuzz/fuzz_*; do targets+=("$(basename "$f")"); done
for name in "${targets[@]}"; do
  short=${name#fuzz_}
  work=$CORPUS_DIR/$short
  mkdir -p "$work"
  dict=(); for d in "tests/fuzz/$short.dict" "tests/fuzz/${short%%_*}.dict"; do
    [ -f "$d" ] && { dict=(-dict="$d"); break; }; done
  run_one() {
    local log rc execs result
    log=$(mktemp)
    "build-fuzz/$name" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=20 \
      ${FORK:+-fork=$FORK} "${dict[@]}" "$work" "tests/fuzz/corpus/$short" >"$log" 2>&1
    rc=$?
    # the last status line: "#N ..." (or "#N: ..." in fork mode) counts executions
    execs=$(grep -aoE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
    result=$([ $rc = 0 ] && echo "no finding" || echo "FINDING (exit $rc): $(grep -a -m1 -E 'ERROR|SUMMARY' "$log")")
    echo "| $(date -u +%F) | $short | $SECONDS_EACH${FORK:+ x $FORK} | ${execs:-not recorded} | $result |"
    rm -f "$log"
    return $rc
  }
  if [ -n "${PARALLEL:-}" ]; then
    run_one &
  else
    run_one || exit 1
  fi
done
wait
