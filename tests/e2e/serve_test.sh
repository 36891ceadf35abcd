#!/usr/bin/env bash
# serve_test.sh - end-to-end tests of `expertd serve` over real sockets on 127.0.0.1: curl for
# the HTTP surface (errors, limits, streaming, disconnects, keep-alive), raw sockets for what
# curl cannot send (raw_http.py: pipelining, chunked + Expect, slow clients), promtool for
# /metrics, and the official `openai` npm client (openai_client.mjs). Every server runs on an
# ephemeral port with the tiny fixture model; every loop is bounded; servers are killed on exit.
# The last line is "N passed, M failed"; the exit status is non-zero when anything failed.
#   bash tests/e2e/serve_test.sh [BUILD_DIR]        (default: build)
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$BUILD/expertd
MODEL=tests/fixtures/mixtral-tiny-q8_0.gguf
NAME=mixtral-tiny-q8_0
WORK=$(mktemp -d)
NODE_DIR=${XD_E2E_NODE_DIR:-$BUILD/e2e-node}
# token count of the long requests (drain, queue): the default suits a release build (1-50 ms a
# token on the fixture, depending on load); sanitizer builds are far slower: E2E_LONG_TOKENS=40
LONG=${E2E_LONG_TOKENS:-200}
QUEUE_TOKENS=$((LONG < 200 ? LONG : 200))
PIDS=()
pass=0
fail=0

cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
# check NAME COMMAND...: the command's status decides
check() { local n=$1; shift; if "$@"; then ok "$n"; else bad "$n"; fi; }
# j FILE EXPR: evaluate a Python expression over the JSON in FILE (d), print it
j() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }

# start VAR ARGS...: start a server, wait until it listens (and /health is 200 unless
# NO_WAIT_READY=1); VAR gets its port, VAR_PID its pid.
start() {
  local var=$1; shift
  local pf=$WORK/$var.port
  "$BIN" serve --port 0 --port-file "$pf" --quiet "$@" >"$WORK/$var.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "${var}_PID" %s "$pid"
  for _ in $(seq 1 300); do [ -s "$pf" ] && break; sleep 0.05; done
  local port; port=$(cat "$pf" 2>/dev/null)
  printf -v "$var" %s "$port"
  [ -n "$port" ] || { echo "server $var did not start:"; cat "$WORK/$var.log"; return 1; }
  [ "${NO_WAIT_READY:-0}" = 1 ] && return 0
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/health")" = 200 ] && return 0
    sleep 0.05
  done
  echo "server $var never became ready:"; cat "$WORK/$var.log"; return 1
}

# wait_exit PID SECONDS: the exit status of a server we signalled, or 124 (then killed)
wait_exit() {
  local t=0
  while kill -0 "$1" 2>/dev/null && [ $t -lt $(($2 * 20)) ]; do sleep 0.05; t=$((t + 1)); done
  if kill -0 "$1" 2>/dev/null; then kill -9 "$1"; wait "$1" 2>/dev/null; return 124; fi
  wait "$1"
}

# background clients: bounded by curl --max-time, waited for by pid (the servers are jobs too)
BG=()
wait_bg() { for p in "${BG[@]}"; do wait "$p"; done; BG=(); }

# post PORT BODY [curl args...]: POST /v1/completions; body in $WORK/out, status in $code
post() {
  local port=$1 body=$2; shift 2
  code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$port/v1/completions" \
    -H 'Content-Type: application/json' -d "$body" "$@")
}

[ -x "$BIN" ] || { echo "no $BIN: build first"; echo "0 passed, 1 failed"; exit 1; }

echo "== main server =="
start A -m "$MODEL" --parallel 4 --ctx 4096 || { echo "0 passed, 1 failed"; exit 1; }

# --- basic endpoints ---
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/health")
check "health 200 ok" [ "$code" = 200 -a "$(j "$WORK/out" 'd["status"]')" = ok ]
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/v1/models")
check "models list" [ "$code" = 200 -a "$(j "$WORK/out" 'd["object"]+":"+d["data"][0]["id"]')" = "list:$NAME" ]

# --- completions ---
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"Once upon a time\",\"max_tokens\":12,\"seed\":5}"
check "completion 200" [ "$code" = 200 ]
check "completion shape" [ "$(j "$WORK/out" 'd["object"]=="text_completion" and d["id"].startswith("cmpl-") and len(d["choices"])==1 and d["choices"][0]["finish_reason"] in ("length","stop") and d["usage"]["total_tokens"]==d["usage"]["prompt_tokens"]+d["usage"]["completion_tokens"]')" = True ]
check "completion max_tokens honoured" [ "$(j "$WORK/out" 'd["usage"]["completion_tokens"]<=12')" = True ]
text1=$(j "$WORK/out" 'd["choices"][0]["text"]')
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"Once upon a time\",\"max_tokens\":12,\"seed\":5}"
check "same seed, same text" [ "$(j "$WORK/out" 'd["choices"][0]["text"]')" = "$text1" ]

# determinism under batching: the same seeded request alone and among 6 concurrent others
body_a="{\"model\":\"$NAME\",\"prompt\":\"The quick brown fox\",\"max_tokens\":24,\"seed\":11,\"temperature\":0.9,\"ignore_eos\":true}"
post "$A" "$body_a"; alone=$(j "$WORK/out" 'd["choices"][0]["text"]')
for i in 1 2 3 4 5 6; do
  curl -s --max-time 300 -o "$WORK/bg$i" "localhost:$A/v1/completions" -d "{\"model\":\"$NAME\",\"prompt\":\"Noise $i\",\"max_tokens\":40,\"seed\":$i,\"ignore_eos\":true}" &
  BG+=($!)
done
curl -s --max-time 300 -o "$WORK/batched" "localhost:$A/v1/completions" -d "$body_a" &
BG+=($!)
wait_bg
check "seeded output identical alone and batched" [ "$(j "$WORK/batched" 'd["choices"][0]["text"]')" = "$alone" ]
ok_bg=0; for i in 1 2 3 4 5 6; do [ "$(j "$WORK/bg$i" 'len(d["choices"])')" = 1 ] && ok_bg=$((ok_bg + 1)); done
check "6 concurrent requests all answered" [ "$ok_bg" = 6 ]

# streaming: SSE framing, [DONE], same text as non-streamed, usage chunk
curl -sN "localhost:$A/v1/completions" -d "{\"model\":\"$NAME\",\"prompt\":\"Once upon a time\",\"max_tokens\":12,\"seed\":5,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$WORK/sse"
check "stream ends with data: [DONE]" [ "$(grep -v '^$' "$WORK/sse" | tail -n 1)" = "data: [DONE]" ]
stext=$(python3 -c '
import json,sys
t=""; u=None
for line in open(sys.argv[1]):
    if line.startswith("data: {"):
        d=json.loads(line[6:])
        if d.get("usage"): u=d["usage"]
        for c in d["choices"]: t+=c["text"]
print(t if u else "NO-USAGE")' "$WORK/sse")
check "stream text equals non-stream text" [ "$stext" = "$text1" ]
check "stream events separated by blank lines" [ "$(grep -c '^data: ' "$WORK/sse")" -ge 3 -a "$(grep -c '^$' "$WORK/sse")" = "$(grep -c '^data: ' "$WORK/sse")" ]

# n > 1 and several prompts, logprobs, echo, stop
post "$A" "{\"model\":\"$NAME\",\"prompt\":[\"Hello\",\"World\"],\"max_tokens\":3,\"n\":2,\"seed\":1,\"logprobs\":3,\"echo\":true}"
check "2 prompts x n=2 -> 4 choices in order" [ "$(j "$WORK/out" '[c["index"] for c in d["choices"]]==[0,1,2,3]')" = True ]
check "echo prepends the prompt" [ "$(j "$WORK/out" 'd["choices"][2]["text"].startswith("World")')" = True ]
check "logprobs shape (echo: first token null)" [ "$(j "$WORK/out" 'all(len(c["logprobs"]["tokens"])==len(c["logprobs"]["token_logprobs"])==len(c["logprobs"]["top_logprobs"])==len(c["logprobs"]["text_offset"]) and c["logprobs"]["token_logprobs"][0] is None and all(len(t)<=4 for t in c["logprobs"]["top_logprobs"][1:]) for c in d["choices"])')" = True ]
post "$A" "{\"model\":\"$NAME\",\"prompt\":[1,2,3],\"max_tokens\":0}"
check "token-id prompt, max_tokens 0" [ "$code" = 200 -a "$(j "$WORK/out" 'd["usage"]["completion_tokens"]')" = 0 ]
first_word=$(printf '%s' "$text1" | cut -c2-3)
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"Once upon a time\",\"max_tokens\":12,\"seed\":5,\"stop\":[\"$first_word\"]}"
check "stop string ends the text before it" [ "$(j "$WORK/out" 'd["choices"][0]["finish_reason"]')" = stop -a "$(j "$WORK/out" 'len(d["choices"][0]["text"])')" -lt "${#text1}" ]

# --- errors ---
post "$A" '{bad json'
check "bad JSON -> 400 invalid_json" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["code"]')" = invalid_json ]
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"x\",\"temperature\":\"hot\"}"
check "wrong type -> 400 naming the param" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["param"]')" = temperature ]
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"x\",\"max_tokens\":-3}"
check "out of range -> 400 with range" [ "$code" = 400 ] && grep -q 'between 0 and' "$WORK/out"
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"x\",\"n\":9}"
check "n above --parallel -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["param"]')" = n ]
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"x\",\"suffix\":\"y\"}"
check "suffix -> 400 not supported" [ "$code" = 400 ] && grep -q 'not supported' "$WORK/out"
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"x\",\"frobnicate\":1}"
check "unknown field -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["param"]')" = frobnicate ]
post "$A" "{\"model\":\"$NAME\",\"prompt\":[$(printf '5,%.0s' $(seq 1 4089))5],\"max_tokens\":10}"
check "prompt + max_tokens over context -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["code"]')" = context_length_exceeded ]
post "$A" '{"model":"gpt-4","prompt":"x"}'
check "unknown model -> 404" [ "$code" = 404 -a "$(j "$WORK/out" 'd["error"]["code"]')" = model_not_found ]
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/v2/nothing")
check "unknown route -> 404 JSON" [ "$code" = 404 -a "$(j "$WORK/out" 'd["error"]["type"]')" = invalid_request_error ]
code=$(curl -s -D "$WORK/hdr" -o "$WORK/out" -w '%{http_code}' -X DELETE "localhost:$A/v1/models")
check "wrong method -> 405 with Allow" [ "$code" = 405 ] && grep -qi '^Allow: GET' "$WORK/hdr"
head -c $((9 * 1024 * 1024)) /dev/zero | tr '\0' 'a' >"$WORK/huge"
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/v1/completions" --data-binary @"$WORK/huge")
check "9 MiB body -> 413" [ "$code" = 413 ]
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/v1/completions" -H 'Expect:' --data-binary @"$WORK/huge")
check "9 MiB body without Expect -> 413" [ "$code" = 413 ]

# --- chat completions (this model has no template: the ChatML fallback) ---
chat() {
  local port=$1 body=$2; shift 2
  code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$port/v1/chat/completions" \
    -H 'Content-Type: application/json' -d "$body" "$@")
}
# ntok MODEL TEXT: how many tokens the model input TEXT is (BOS per the vocabulary, specials parsed)
ntok() { "$BIN" tokenize -m "$1" --parse-special -- "$2" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
MSGS='[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me a story"}]'
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/v1/models")
check "models: chat template named (chatml-fallback)" [ "$(j "$WORK/out" 'd["data"][0]["meta"]["chat_template"]')" = chatml-fallback ]
check "log line for the ChatML fallback" grep -q 'no chat template.*ChatML' "$WORK/A.log"
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$A/props")
check "/props: template source and origin" [ "$code" = 200 -a "$(j "$WORK/out" 'd["chat_template_origin"]+str("<|im_start|>" in d["chat_template"])')" = chatml-fallbackTrue ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":$MSGS,\"max_tokens\":10,\"seed\":5}"
check "chat 200" [ "$code" = 200 ]
check "chat shape" [ "$(j "$WORK/out" 'd["object"]=="chat.completion" and d["id"].startswith("chatcmpl-") and len(d["choices"])==1 and d["choices"][0]["message"]["role"]=="assistant" and isinstance(d["choices"][0]["message"]["content"],str) and d["choices"][0]["logprobs"] is None and d["choices"][0]["finish_reason"] in ("length","stop") and d["usage"]["completion_tokens"]<=10')" = True ]
ctext=$(j "$WORK/out" 'd["choices"][0]["message"]["content"]')
printf '%s' "$MSGS" >"$WORK/msgs.json"
rendered=$("$BIN" template render -m "$MODEL" --messages "$WORK/msgs.json"; printf x); rendered=${rendered%x}
check "chat prompt = the rendered template, tokenized (usage.prompt_tokens)" [ "$(j "$WORK/out" 'd["usage"]["prompt_tokens"]')" = "$(ntok "$MODEL" "$rendered")" ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":$MSGS,\"max_tokens\":10,\"seed\":5}"
check "chat: same seed, same text" [ "$(j "$WORK/out" 'd["choices"][0]["message"]["content"]')" = "$ctext" ]
curl -sN "localhost:$A/v1/chat/completions" -d "{\"model\":\"$NAME\",\"messages\":$MSGS,\"max_tokens\":10,\"seed\":5,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$WORK/csse"
check "chat stream ends with data: [DONE]" [ "$(grep -v '^$' "$WORK/csse" | tail -n 1)" = "data: [DONE]" ]
cstream=$(python3 -c '
import json,sys
ev=[json.loads(l[6:]) for l in open(sys.argv[1]) if l.startswith("data: {")]
ok=all(e["object"]=="chat.completion.chunk" and e["id"]==ev[0]["id"] for e in ev)
ch=[e for e in ev if e["choices"]]
ok=ok and ch[0]["choices"][0]["delta"]=={"role":"assistant","content":""}
ok=ok and all(c["choices"][0]["finish_reason"] is None and set(c["choices"][0]["delta"])=={"content"} for c in ch[1:-1])
ok=ok and ch[-1]["choices"][0]["delta"]=={} and ch[-1]["choices"][0]["finish_reason"] in ("stop","length")
ok=ok and ev[-1]["choices"]==[] and ev[-1]["usage"]["completion_tokens"]>0
print("".join(c["choices"][0]["delta"].get("content","") for c in ch) if ok else "BAD-SHAPE")' "$WORK/csse")
check "chat stream: role first, content pieces, finish, usage chunk" [ "$cstream" != BAD-SHAPE ]
check "chat stream text equals non-stream text" [ "$cstream" = "$ctext" ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},{\"type\":\"text\",\"text\":\"there\"}]}],\"max_completion_tokens\":4,\"n\":2,\"seed\":3,\"logprobs\":true,\"top_logprobs\":2}"
check "chat: text parts, n=2, logprobs in chat's shape" [ "$code" = 200 -a "$(j "$WORK/out" 'len(d["choices"])==2 and all(c["logprobs"]["content"] and all(set(t)=={"token","logprob","bytes","top_logprobs"} and len(t["top_logprobs"])==2 and isinstance(t["bytes"],list) for t in c["logprobs"]["content"]) for c in d["choices"]) and d["usage"]["completion_tokens"]<=8')" = True ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}}]}]}"
check "chat: image part -> 400 naming the type" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["param"]')" = "messages[0].content[0].type" ] && grep -q "image_url" "$WORK/out"
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}"
check "chat: response_format json_object -> 400 not supported yet" [ "$code" = 400 ] && grep -q 'not supported yet' "$WORK/out"
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}"
check "chat: tools -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["param"]')" = tools ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}"
check "chat: shared validation (temperature) -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["param"]')" = temperature ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":4096}"
check "chat: prompt + max_tokens over context -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["code"]')" = context_length_exceeded ]
chat "$A" '{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}'
check "chat: unknown model -> 404" [ "$code" = 404 ]
chat "$A" '{"messages":'
check "chat: bad JSON -> 400" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["code"]')" = invalid_json ]
chat "$A" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"Still\"}],\"max_tokens\":2}"
check "chat: server serves after the errors" [ "$code" = 200 ]

# --- connection behaviour ---
curl -sv "localhost:$A/health" "localhost:$A/health" -o /dev/null -o /dev/null 2>"$WORK/kv"
check "keep-alive reuses the connection" grep -q 'Re-using existing connection' "$WORK/kv"
check "pipelined requests answered in order" python3 tests/e2e/raw_http.py "$A" pipeline
check "chunked body + Expect: 100-continue" python3 tests/e2e/raw_http.py "$A" chunked_expect
check "garbage -> 400 + close" python3 tests/e2e/raw_http.py "$A" garbage
check "oversized headers -> 431" python3 tests/e2e/raw_http.py "$A" huge_headers

# disconnect mid-stream cancels the request and frees its slot. The client hangs up after the
# first events (head exits, curl dies on its next write), not after a time: the tiny model
# streams all ~3900 tokens in 1.3 s, so a 1 s cut raced the request's end as the engine got
# faster.
metric() { curl -s "localhost:$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }
before=$(metric "$A" expertd_requests_cancelled_total)
{ curl -sN --max-time 10 "localhost:$A/v1/completions" -d "{\"model\":\"$NAME\",\"prompt\":\"Go\",\"max_tokens\":4000,\"ignore_eos\":true,\"stream\":true}" 2>/dev/null || true; } | head -n 6 >"$WORK/cut"
got_some=$(grep -c '^data: {' "$WORK/cut")
freed=no
for _ in $(seq 1 100); do
  if [ "$(metric "$A" expertd_requests_cancelled_total)" -gt "$before" ] && [ "$(metric "$A" expertd_kv_slots_used)" = 0 ]; then freed=yes; break; fi
  sleep 0.05
done
check "disconnect mid-stream: tokens were streamed" [ "$got_some" -gt 0 ]
check "disconnect mid-stream: request cancelled, slot freed" [ "$freed" = yes ]
post "$A" "{\"model\":\"$NAME\",\"prompt\":\"Still alive\",\"max_tokens\":4}"
check "server serves after a disconnect" [ "$code" = 200 ]

# --- metrics ---
curl -s "localhost:$A/metrics" >"$WORK/metrics"
if command -v promtool >/dev/null; then
  check "promtool check metrics" promtool check metrics <"$WORK/metrics"
else
  bad "promtool check metrics" "promtool not installed (Debian package prometheus)"
fi
check "metrics: requests by endpoint and status" grep -q '^expertd_requests_total{endpoint="/v1/completions",status="200"} ' "$WORK/metrics"
check "metrics: TTFT histogram" grep -q '^expertd_time_to_first_token_seconds_count [1-9]' "$WORK/metrics"
check "metrics: engine and expert cache counters" grep -q '^expertd_expert_cache_acquires_total [1-9]' "$WORK/metrics"
check "metrics: chat requests by endpoint" grep -q '^expertd_requests_total{endpoint="/v1/chat/completions",status="200"} ' "$WORK/metrics"

# --- openai npm client ---
if [ ! -d "$NODE_DIR/node_modules/openai" ]; then
  npm install --prefix "$NODE_DIR" openai --no-audit --no-fund --silent >"$WORK/npm.log" 2>&1 || cat "$WORK/npm.log"
fi
if [ -d "$NODE_DIR/node_modules/openai" ]; then
  cp tests/e2e/openai_client.mjs "$NODE_DIR/"
  while IFS= read -r line; do
    case $line in ok\ *) ok "${line#ok }" ;; FAIL\ *) bad "${line#FAIL }" ;; *) echo "$line" ;; esac
  done < <(timeout 120 node "$NODE_DIR/openai_client.mjs" "http://127.0.0.1:$A/v1" "$NAME" 2>&1)
else
  bad "openai npm client" "npm install openai failed"
fi

echo "== chat templates =="
# the fixture with Mixtral's own template in tokenizer.chat_template (prints bos_token itself)
python3 tests/e2e/gguf_set_template.py "$MODEL" tests/fixtures/templates/mistralai-Mixtral-8x7B-Instruct-v0.1.jinja "$WORK/tpl.gguf"
printf '{%% for m in messages %%}{{ m.content }{%% endfor %%}' >"$WORK/broken.jinja"
python3 tests/e2e/gguf_set_template.py "$MODEL" "$WORK/broken.jinja" "$WORK/broken.gguf"
start D -m "$WORK/tpl.gguf" --model-name tpl
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$D/v1/models")
check "models: chat template from the GGUF" [ "$(j "$WORK/out" 'd["data"][0]["meta"]["chat_template"]')" = gguf ]
UMSGS='[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"Tell me more"}]'
printf '%s' "$UMSGS" >"$WORK/umsgs.json"
chat "$D" "{\"model\":\"tpl\",\"messages\":$UMSGS,\"max_tokens\":4}"
rendered=$("$BIN" template render -m "$WORK/tpl.gguf" --messages "$WORK/umsgs.json"; printf x); rendered=${rendered%x}
check "GGUF template renders with <s> from the vocabulary" [ "${rendered:0:9}" = "<s>[INST]" ]
# llama.cpp's way: the template's leading BOS text is cut and the vocabulary adds BOS: one BOS
check "GGUF template: prompt tokens = render with one BOS" [ "$code" = 200 -a "$(j "$WORK/out" 'd["usage"]["prompt_tokens"]')" = "$(ntok "$WORK/tpl.gguf" "${rendered#<s>}")" ]
check "GGUF template: ... which is the render's own <s> as the BOS token" [ "$(ntok "$WORK/tpl.gguf" "${rendered#<s>}")" = "$("$BIN" tokenize -m "$WORK/tpl.gguf" --no-bos --parse-special -- "$rendered" | python3 -c 'import json,sys; a=json.load(sys.stdin); print(len(a) if a[0]==1 and a.count(1)==1 else -1)')" ]
chat "$D" "{\"model\":\"tpl\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]}"
check "template raise_exception -> 400 with its message" [ "$code" = 400 -a "$(j "$WORK/out" 'd["error"]["code"]')" = chat_template_error ] && grep -q 'alternate' "$WORK/out"
start E -m "$MODEL" --chat-template tests/fixtures/templates/Qwen-Qwen2.5-7B-Instruct.jinja
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$E/v1/models")
check "--chat-template FILE overrides (origin file)" [ "$(j "$WORK/out" 'd["data"][0]["meta"]["chat_template"]')" = file ]
chat "$E" "{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":3,\"stream\":true}"
check "--chat-template: chat streams" [ "$code" = 200 ] && grep -q '^data: \[DONE\]' "$WORK/out"
start F -m "$WORK/broken.gguf" --model-name broken
chat "$F" '{"model":"broken","messages":[{"role":"user","content":"Hi"}]}'
check "broken GGUF template: chat 500 naming it" [ "$code" = 500 -a "$(j "$WORK/out" 'd["error"]["code"]')" = chat_template_error ]
check "broken GGUF template: logged at load" grep -q 'chat template cannot be used' "$WORK/F.log"
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$F/v1/completions" -d '{"model":"broken","prompt":"x","max_tokens":2}')
check "broken GGUF template: completions still serve" [ "$code" = 200 ]
"$BIN" serve -m "$MODEL" --port 0 --chat-template "$WORK/broken.jinja" >"$WORK/G.log" 2>&1 &
gpid=$!; PIDS+=("$gpid")
wait_exit "$gpid" 30; gstatus=$?
check "broken --chat-template FILE: exit 1 with the line" [ "$gstatus" = 1 ] && grep -q 'chat-template.*line 1' "$WORK/G.log"
nz=0; for p in "$D_PID" "$E_PID" "$F_PID"; do kill -TERM "$p"; wait_exit "$p" 30 || nz=$((nz + 1)); done
check "template servers drain, exit 0 (no leak under ASan)" [ "$nz" = 0 ]

echo "== limits server =="
start B -m "$MODEL" --parallel 1 --max-queue 1 --max-connections 4 --header-timeout 1 --idle-timeout 1.5 --api-key sekret
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$B/v1/models")
check "no API key -> 401" [ "$code" = 401 -a "$(j "$WORK/out" 'd["error"]["code"]')" = invalid_api_key ]
code=$(curl -s -o "$WORK/out" -w '%{http_code}' -H 'Authorization: Bearer wrong' "localhost:$B/v1/models")
check "wrong API key -> 401" [ "$code" = 401 ]
code=$(curl -s -o "$WORK/out" -w '%{http_code}' -H 'Authorization: Bearer sekret' "localhost:$B/v1/models")
check "right API key -> 200" [ "$code" = 200 ]
check "health needs no key" [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$B/health")" = 200 ]
for i in 1 2 3 4; do
  curl -s -D "$WORK/q$i.h" -o "$WORK/q$i" -w '%{http_code}' -H 'Authorization: Bearer sekret' "localhost:$B/v1/completions" \
    --max-time 300 -d "{\"model\":\"$NAME\",\"prompt\":\"Q$i\",\"max_tokens\":$QUEUE_TOKENS,\"ignore_eos\":true}" >"$WORK/q$i.code" &
  BG+=($!)
done
wait_bg
n429=0; n200=0; ra=0
for i in 1 2 3 4; do
  c=$(cat "$WORK/q$i.code"); [ "$c" = 429 ] && n429=$((n429 + 1)); [ "$c" = 200 ] && n200=$((n200 + 1))
  [ "$c" = 429 ] && grep -qi '^Retry-After:' "$WORK/q$i.h" && ra=$((ra + 1))
done
check "queue full -> 429 with Retry-After (got $n200 x 200, $n429 x 429)" [ "$n429" -ge 1 -a "$n200" -ge 1 -a "$ra" = "$n429" ]
check "header timeout -> 408" python3 tests/e2e/raw_http.py "$B" header_timeout
check "idle keep-alive connection closed" python3 tests/e2e/raw_http.py "$B" idle_timeout
check "connections over --max-connections -> 503" python3 tests/e2e/raw_http.py "$B" max_connections 4

echo "== SIGTERM drain =="
curl -sN "localhost:$A/v1/completions" -d "{\"model\":\"$NAME\",\"prompt\":\"Drain\",\"max_tokens\":$LONG,\"ignore_eos\":true,\"stream\":true}" --max-time 300 >"$WORK/drain" 2>/dev/null &
BG+=($!)
sleep 0.3
kill -TERM "$A_PID"
sleep 0.2
refused=no
curl -s -o /dev/null --max-time 2 "localhost:$A/health" || refused=yes
wait_bg
wait_exit "$A_PID" 60; status=$?
check "drain: new connections refused" [ "$refused" = yes ]
check "drain: in-flight stream finished with [DONE]" grep -q '^data: \[DONE\]$' "$WORK/drain"
check "drain: all $LONG tokens delivered" [ "$(grep -c '"finish_reason":"length"' "$WORK/drain")" = 1 ]
check "drain: exit status 0" [ "$status" = 0 ]
kill -TERM "$B_PID"; wait_exit "$B_PID" 30; check "limits server drains idle, exit 0" [ $? = 0 ] || tail -5 "$WORK/B.log"

echo "== loading =="
mkfifo "$WORK/slow.gguf"
NO_WAIT_READY=1 start C -m "$WORK/slow.gguf"
code=$(curl -s -o "$WORK/out" -w '%{http_code}' "localhost:$C/health")
check "health 503 while the model loads" [ "$code" = 503 -a "$(j "$WORK/out" 'd["status"]')" = loading ]
code=$(curl -s -D "$WORK/hdr" -o "$WORK/out" -w '%{http_code}' "localhost:$C/v1/completions" -d '{}')
check "completions 503 + Retry-After while loading" [ "$code" = 503 ] && grep -qi '^Retry-After:' "$WORK/hdr"
# open and close the FIFO without blocking (read-write open): the loader reads an empty file
exec 3<>"$WORK/slow.gguf"; exec 3>&-
wait_exit "$C_PID" 30; check "a model that fails to load exits 1" [ $? = 1 ]

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
