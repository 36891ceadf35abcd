#!/usr/bin/env bash
# curl_check.sh - checks `expertd bench serve` against an independent clock: curl.
#
# N requests are made once by bench serve (--dump-requests, fixed --seed). Then, for each
# request i, the very same request is sent by bench serve alone (--prompts with that one
# prompt, --num-prompts 1: the body is checked to be byte-identical) and by curl, next to each
# other, bench first for odd i and curl first for even i: on a shared machine whose load swings
# from second to second, only measurements taken side by side compare. Both open one connection
# for their one request. curl gives:
#   TTFB = time_starttransfer (-w): the response headers;
#   TTFT = time_starttransfer + (first "Recv data" carrying non-empty text - first "Recv header"),
#          both from --trace-time (curl has no -w variable for the first body byte, and a
#          streaming server may send its headers long before the first token: expertd sends
#          them when the request is admitted);
#   E2E  = time_total (-w).
# Prints a Markdown table of the medians and exits 0 when bench serve's TTFT and E2E medians
# are within TOL (default 10%) of curl's, 1 otherwise, 2 for bad usage.
#
# usage: bench/curl_check.sh EXPERTD URL MODEL [N=20] [INPUT_LEN=64] [OUTPUT_LEN=32]
# env:   TOL=0.10  GAP=0.2 (seconds of quiet before each request)
#        WORK=dir (default a fresh mktemp -d, removed at the end)
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,22p' "$0" >&2
    exit 2
fi
XD=$1 URL=$2 MODEL=$3 N=${4:-20} IN=${5:-64} OUT=${6:-32}
TOL=${TOL:-0.10} GAP=${GAP:-0.2}
case "$URL" in
http://*/*/*) COMPLETIONS=$URL ;;
http://*) COMPLETIONS=${URL%/}/v1/completions ;;
*) echo "curl_check: URL must be http://" >&2; exit 2 ;;
esac
OWN_WORK=0
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d /tmp/xd-curlcheck-XXXXXX)
    OWN_WORK=1
fi
cleanup() { if [ "$OWN_WORK" = 1 ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

BENCH=("$XD" bench serve --url "$COMPLETIONS" --model "$MODEL" --concurrency 1 --output-len "$OUT"
    --request-timeout 300 --max-duration 3600 --quiet --no-progress)
# the requests (and a warm-up of the server)
"${BENCH[@]}" --num-prompts "$N" --input-len "$IN" --seed 1 --dump-requests "$WORK/req.jsonl" \
    --json "$WORK/warmup.json" || true

bench_one() { # i: bench serve sends request i alone
    "${BENCH[@]}" --num-prompts 1 --prompts "$WORK/p_$1.jsonl" --dump-requests "$WORK/b_$1.jsonl" \
        --json "$WORK/bench_$1.json" || true
    cmp -s <(head -c -1 "$WORK/b_$1.jsonl") "$WORK/body_$1.json" ||
        { echo "curl_check: request $1 differs between bench serve and curl" >&2; exit 1; }
}
curl_one() { # i: curl sends request i
    curl -sN -o /dev/null --max-time 300 --trace-ascii "$WORK/trace_$1.txt" --trace-time \
        -H 'Content-Type: application/json' --data-binary "@$WORK/body_$1.json" \
        -w '%{http_code} %{time_starttransfer} %{time_total}\n' "$COMPLETIONS" > "$WORK/w_$1.txt" || true
}
i=0
while IFS= read -r body && [ "$i" -lt "$N" ]; do
    i=$((i + 1))
    printf '%s' "$body" > "$WORK/body_$i.json"
    python3 -c 'import json,sys; print(json.dumps({"prompt": json.loads(sys.argv[1])["prompt"]}))' \
        "$body" > "$WORK/p_$i.jsonl"
    # a pause before each: both clients find the server equally idle (a server whose workers
    # spin a while after a request would otherwise favour the client that starts faster)
    if [ $((i % 2)) = 1 ]; then
        sleep "$GAP"; bench_one "$i"; sleep "$GAP"; curl_one "$i"
    else
        sleep "$GAP"; curl_one "$i"; sleep "$GAP"; bench_one "$i"
    fi
done < "$WORK/req.jsonl"

python3 - "$WORK" "$i" "$TOL" "$IN" "$OUT" <<'EOF'
import json, math, re, statistics, sys
work, n, tol = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def sec(ts):
    h, m, s = ts.split(':')
    return int(h) * 3600 + int(m) * 60 + float(s)

def curl_times(i):
    """(ttfb, ttft, e2e) in ms from curl's -w line and its --trace-time dump, or None."""
    code, tst, ttot = open(f'{work}/w_{i}.txt').read().split()
    head = text = ev = None
    data = ''
    def flush():
        nonlocal text
        if text is None and ev and ev[1].startswith('Recv data') and re.search(r'"text":\s*"[^"]', data):
            text = ev[0]
    for line in open(f'{work}/trace_{i}.txt', errors='replace'):
        m = re.match(r'(\d\d:\d\d:\d\d\.\d+) (<=|=>|==) (.*)', line)
        if m:
            flush()
            ev, data = (sec(m.group(1)), m.group(3)), ''
            if head is None and ev[1].startswith('Recv header'):
                head = ev[0]
            continue
        d = re.match(r'[0-9a-f]{4}: (.*)', line.rstrip('\n'))
        if d:
            data += d.group(1)  # trace-ascii wraps a dump at 64 bytes a line
    flush()
    if code != '200' or head is None or text is None:
        return None
    return float(tst) * 1e3, (float(tst) + text - head) * 1e3, float(ttot) * 1e3

keys = ('ttfb', 'ttft', 'e2e')
b, c, ratio = ({k: [] for k in keys} for _ in range(3))
for i in range(1, n + 1):
    q = json.load(open(f'{work}/bench_{i}.json'))['runs'][0]['requests'][0]
    ct = curl_times(i)
    if not q['ok'] or ct is None:
        continue
    for k, v in zip(keys, ct):
        b[k].append(q[k + '_ms'])
        c[k].append(v)
        ratio[k].append(q[k + '_ms'] / v if v > 0 else math.nan)
print(f'{len(b["e2e"])} of {n} requests measured by both, one at a time, side by side; '
      f'input {sys.argv[4]} words, output {sys.argv[5]} tokens')
print()
print('| median (ms) | bench serve | curl | difference | median of paired ratios |')
print('|---|---|---|---|---|')
ok = len(b['e2e']) > 0
for k, name in (('ttfb', 'TTFB (headers)'), ('ttft', 'TTFT'), ('e2e', 'E2E')):
    if not b[k]:
        continue
    mb, mc = statistics.median(b[k]), statistics.median(c[k])
    d = (mb - mc) / mc
    if k != 'ttfb' and abs(d) > tol:
        ok = False
    print(f'| {name} | {mb:.2f} | {mc:.2f} | {d * 100:+.1f}% | {statistics.median(ratio[k]):.3f} |')
print()
print('agreement (TTFT and E2E medians within %d%%): %s' % (round(tol * 100), 'yes' if ok else 'NO'))
sys.exit(0 if ok else 1)
EOF
