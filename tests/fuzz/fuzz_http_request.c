/* fuzz_http_request.c - libFuzzer target for the request path of `expertd serve`: raw bytes ->
 * llhttp framing (server/http_parse.c) -> routing and the API-key check (server/router.c) ->
 * JSON decode and validation of /v1/completions and /v1/chat/completions (proto/) -> response
 * encoding of what was decoded. The same functions the server calls, without sockets.
 *
 * The first input byte picks the read size (1..256 bytes per "read"), so every split of the
 * stream is explored, pipelined requests included; the second picks whether an API key is
 * set. libFuzzer hands us an exact-size heap copy and each read is copied to its own exact-size
 * buffer, so ASan catches any over-read. __builtin_trap() marks broken contracts the sanitizers
 * cannot see (invariants, a decoded request that breaks its own limits).
 * Seeds: tests/fuzz/corpus/http_request; dictionary: tests/fuzz/http_request.dict.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"
#include "proto_chat.h"
#include "proto_completion.h"
#include "router.h"

static void check_decoded(const struct proto_completion_req *r, const struct proto_limits *lim) {
    if (r->n_prompts < 1 || r->n_prompts > (size_t)lim->max_prompts) __builtin_trap();
    if (r->gen.n < 1 || r->gen.n > lim->max_n) __builtin_trap();
    if (r->gen.max_tokens < 0 || r->gen.max_tokens > lim->max_tokens) __builtin_trap();
    if (r->gen.n_stop > PROTO_MAX_STOP || !r->gen.model) __builtin_trap();
    if (r->logprobs < -1 || r->logprobs > PROTO_MAX_LOGPROBS) __builtin_trap();
    if (!(r->gen.temperature >= 0 && r->gen.temperature <= 2)) __builtin_trap();
    for (size_t i = 0; i < r->n_prompts; i++)
        for (size_t k = 0; r->prompts[i].is_tokens && k < r->prompts[i].n_tokens; k++)
            if (r->prompts[i].tokens[k] < 0 || r->prompts[i].tokens[k] >= lim->n_vocab)
                __builtin_trap();
    for (size_t i = 0; i < r->gen.n_logit_bias; i++)
        if (r->gen.logit_bias[i].token < 0 || r->gen.logit_bias[i].token >= lim->n_vocab)
            __builtin_trap();
}

/* What the server does with one complete request, minus the engine. */
static void handle(const struct srv_http_req *req, const char *api_key) {
    struct proto_error e = {0};
    const char *allow = NULL;
    struct proto_buf out;
    proto_buf_init(&out);
    const struct srv_route *r = srv_route_request(req, api_key, &e, &allow);
    if (!r) {
        if (e.status < 400 || e.status > 499) __builtin_trap();
        proto_error_encode(&e, &out);
    } else if (r->id == SRV_ROUTE_COMPLETIONS) {
        struct proto_limits lim = proto_limits_default(2000, 4);
        lim.max_tokens = lim.max_prompt_tokens = 4096;
        struct proto_completion_req cr;
        if (proto_completion_decode(req->body.data ? req->body.data : "", req->body.len, &lim,
                                    &cr, &e)) {
            if (e.status != 400 && e.status != 503) __builtin_trap();
            proto_error_encode(&e, &out);
        } else {
            check_decoded(&cr, &lim);
            /* echo the decoded prompt back through the encoders, as a response would */
            const struct proto_prompt *p = &cr.prompts[0];
            struct proto_choice ch = {.index = 0, .text = p->is_tokens ? "" : p->text,
                                      .len = p->is_tokens ? 0 : p->len, .finish_reason = "stop"};
            struct proto_meta m = {"cmpl-fuzz", 1, cr.gen.model};
            struct proto_usage u = {1, 2};
            proto_completion_encode(&m, &ch, 1, &u, &out);
            proto_completion_chunk(&m, &ch, cr.gen.include_usage, &out);
            proto_completion_req_free(&cr);
        }
    } else if (r->id == SRV_ROUTE_CHAT) {
        struct proto_limits lim = proto_limits_default(2000, 4);
        lim.max_tokens = lim.max_prompt_tokens = 4096;
        struct proto_chat_req cr;
        if (proto_chat_decode(req->body.data ? req->body.data : "", req->body.len, &lim, &cr,
                              &e)) {
            if (e.status != 400 && e.status != 503) __builtin_trap();
            proto_error_encode(&e, &out);
        } else {
            /* every normalized message has a role the templates know and a string content */
            size_t i;
            json_t *msg;
            json_array_foreach(cr.messages, i, msg) {
                if (!json_is_string(json_object_get(msg, "content")) ||
                    !json_is_string(json_object_get(msg, "role")))
                    __builtin_trap();
            }
            const char *text = json_string_value(json_object_get(json_array_get(cr.messages, 0),
                                                                 "content"));
            struct proto_choice ch = {.index = 0, .text = text, .len = strlen(text),
                                      .finish_reason = "stop"};
            struct proto_meta m = {"chatcmpl-fuzz", 1, cr.gen.model};
            struct proto_usage u = {1, 2};
            proto_chat_encode(&m, &ch, 1, &u, &out);
            proto_chat_chunk(&m, &ch, cr.gen.include_usage, &out);
            proto_chat_req_free(&cr);
        }
    }
    proto_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t step = (size_t)data[0] + 1;
    const char *api_key = data[1] & 1 ? "k3y" : NULL;
    data += 2;
    size -= 2;
    struct srv_http_limits lim = {.max_header_bytes = 4096, .max_headers = 32,
                                  .max_body_bytes = 1 << 16};
    struct srv_http_parser p;
    srv_http_init(&p, &lim, NULL, NULL);
    size_t off = 0;
    int requests = 0;
    while (off < size && requests < 64) {
        size_t n = size - off < step ? size - off : step, used = 0;
        char *chunk = malloc(n);
        memcpy(chunk, data + off, n);
        enum srv_http_state st = srv_http_execute(&p, chunk, n, &used);
        free(chunk);
        if (used > n || !srv_http_check_invariants(&p)) __builtin_trap();
        off += used;
        if (st == SRV_HTTP_ERROR) {
            if (p.error_status < 400 || p.error_status > 599) __builtin_trap();
            break;
        }
        if (st == SRV_HTTP_DONE) {
            requests++;
            handle(&p.req, api_key);
            srv_http_next(&p);
        } else if (used != n) {
            __builtin_trap(); /* an incomplete request consumes everything it is given */
        }
    }
    srv_http_eof(&p);
    if (!srv_http_check_invariants(&p)) __builtin_trap();
    srv_http_free(&p);
    return 0;
}
