/* proto_completion.c - the /v1/completions wire format: request decode/validate, response and
 * SSE chunk encode.
 *
 * Decoding walks the body's keys once: each key goes to this endpoint's table (prompt, echo,
 * logprobs, best_of, suffix), then to the shared generation table (proto_gen.c); a key neither
 * knows is a 400, as OpenAI answers "Unrecognized request argument". The prompt accepts all four
 * of OpenAI's shapes. Encoding builds a jansson tree in a fixed key order and dumps it compact,
 * so output is byte-for-byte stable; reals are printed with 9 significant digits (a float's
 * round-trip precision) rather than jansson's default 17, which would print float noise.
 * Not here: tokenization, the context-length check (the server does both, it has the model),
 * `suffix` (rejected with a 400 that says so) and `best_of` other than n (rejected likewise).
 */
#include "proto_completion.h"

#include <stdlib.h>
#include <string.h>

#include "proto_enc.h"
#include "xd_error.h"

static int nomem(struct proto_error *e) {
    proto_error_set(e, 503, NULL, NULL, "out of memory");
    return XD_E_NOMEM;
}

static int bad_prompt(struct proto_error *e) {
    proto_error_set(e, 400, "prompt", "invalid_value",
                    "'prompt' must be a string, an array of strings, an array of token ids or an "
                    "array of arrays of token ids (non-empty)");
    return XD_E_INVALID;
}

/* Token ids of a JSON array into p; every element an integer in [0, n_vocab). */
static int decode_ids(json_t *a, const struct proto_limits *lim, struct proto_prompt *p,
                      struct proto_error *e) {
    size_t n = json_array_size(a);
    if (n == 0) return bad_prompt(e);
    if (n > (size_t)lim->max_prompt_tokens) {
        proto_error_set(e, 400, "prompt", "context_length_exceeded",
                        "'prompt' has %zu tokens, more than the %d this server accepts", n,
                        lim->max_prompt_tokens);
        return XD_E_INVALID;
    }
    p->is_tokens = true;
    if (!(p->tokens = malloc(n * sizeof *p->tokens))) return nomem(e);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(a, i);
        json_int_t id = json_integer_value(x);
        if (!json_is_integer(x)) return bad_prompt(e);
        if (id < 0 || id >= lim->n_vocab) {
            proto_error_set(e, 400, "prompt", "invalid_value",
                            "'prompt' token ids must be between 0 and %d, got %lld",
                            lim->n_vocab - 1, (long long)id);
            return XD_E_INVALID;
        }
        p->tokens[i] = (int32_t)id;
    }
    p->n_tokens = n;
    return 0;
}

static int decode_text(json_t *s, struct proto_prompt *p, struct proto_error *e) {
    size_t n = json_string_length(s);
    if (!(p->text = malloc(n + 1))) return nomem(e);
    memcpy(p->text, json_string_value(s), n);
    p->text[n] = 0;
    p->len = n;
    return 0;
}

static int decode_prompt(const struct proto_field *f, json_t *v, void *base,
                         const struct proto_limits *lim, struct proto_error *e) {
    struct proto_completion_req *r = base;
    size_t n = 1;
    json_t *first = NULL;
    if (json_is_array(v)) {
        n = json_array_size(v);
        first = json_array_get(v, 0);
        if (n == 0) return bad_prompt(e);
        if (json_is_integer(first)) n = 1; /* one prompt of token ids */
    } else if (!json_is_string(v)) {
        return bad_prompt(e);
    }
    if (n > (size_t)lim->max_prompts) {
        proto_error_set(e, 400, "prompt", "invalid_value",
                        "'prompt' may hold at most %d prompts", lim->max_prompts);
        return XD_E_INVALID;
    }
    if (r->prompts) return bad_prompt(e); /* duplicate key: jansson keeps the last, be safe */
    if (!(r->prompts = calloc(n, sizeof *r->prompts))) return nomem(e);
    r->n_prompts = n;
    if (json_is_string(v) || json_is_integer(first)) {
        int rc = json_is_string(v) ? decode_text(v, &r->prompts[0], e)
                                   : decode_ids(v, lim, &r->prompts[0], e);
        return rc ? rc : 1;
    }
    bool strings = json_is_string(first);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        int rc;
        if (strings && json_is_string(x)) rc = decode_text(x, &r->prompts[i], e);
        else if (!strings && json_is_array(x)) rc = decode_ids(x, lim, &r->prompts[i], e);
        else rc = bad_prompt(e);
        if (rc) return rc;
    }
    return 1;
}

static int decode_suffix(const struct proto_field *f, json_t *v, void *base,
                         const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) return 1;
    proto_error_set(e, 400, "suffix", "unsupported_parameter",
                    "'suffix' is not supported by this server (no model here does insertion)");
    return XD_E_INVALID;
}

static int decode_logprobs(const struct proto_field *f, json_t *v, void *base,
                           const struct proto_limits *lim, struct proto_error *e) {
    return proto_field_int(f, v, base, lim, e);
}

#define C(field) offsetof(struct proto_completion_req, field)
static const struct proto_field completion_fields[] = {
    {"prompt", decode_prompt, 0, 0, 0},
    {"echo", proto_field_bool, C(echo), 0, 0},
    {"logprobs", decode_logprobs, C(logprobs), 0, PROTO_MAX_LOGPROBS},
    {"best_of", proto_field_int, C(best_of), 1, 1 << 20},
    {"suffix", decode_suffix, 0, 0, 0},
};
#undef C

void proto_completion_req_free(struct proto_completion_req *r) {
    proto_gen_free(&r->gen);
    for (size_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].tokens);
    }
    free(r->prompts);
    r->prompts = NULL;
    r->n_prompts = 0;
}

int proto_completion_decode(const char *body, size_t len, const struct proto_limits *lim,
                            struct proto_completion_req *r, struct proto_error *e) {
    *r = (struct proto_completion_req){.logprobs = -1, .best_of = 0};
    proto_gen_init(&r->gen);
    json_t *root;
    int rc = proto_json_parse_object(body, len, &root, e);
    if (rc) return rc;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        rc = proto_fields_decode(completion_fields,
                                 sizeof completion_fields / sizeof completion_fields[0], key, v,
                                 r, lim, e);
        if (rc == 0) rc = proto_gen_decode_field(&r->gen, key, v, lim, e);
        if (rc == 0) {
            proto_error_set(e, 400, key, "unknown_parameter",
                            "Unrecognized request argument supplied: %.64s", key);
            rc = XD_E_INVALID;
        }
        if (rc < 0) goto fail;
    }
    rc = XD_E_INVALID;
    if (!r->prompts) {
        proto_error_set(e, 400, "prompt", "missing_required_parameter",
                        "you must provide a prompt parameter");
        goto fail;
    }
    if (r->best_of && r->best_of != r->gen.n) {
        proto_error_set(e, 400, "best_of", "unsupported_parameter",
                        "'best_of' is not supported by this server unless it equals 'n'");
        goto fail;
    }
    if ((rc = proto_gen_finish(&r->gen, e))) goto fail;
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    proto_completion_req_free(r);
    return rc < 0 ? rc : XD_E_INVALID;
}

/* ---- encoding ------------------------------------------------------------------------------- */

static json_t *logprobs_json(const struct proto_choice *c, bool *ok) {
    if (!c->has_logprobs) return json_null();
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(),
           *offs = json_array(), *o = json_object();
    if (!tokens || !lps || !tops || !offs || !o) *ok = false;
    for (size_t i = 0; i < c->n_lp && *ok; i++) {
        const struct proto_token_logprob *t = &c->lp[i];
        json_array_append_new(tokens, proto__chk(json_stringn(t->token, t->len), ok));
        json_array_append_new(lps, t->has_logprob ? json_real(t->logprob) : json_null());
        json_t *top = json_null();
        if (t->has_logprob) {
            top = proto__chk(json_object(), ok);
            for (size_t k = 0; k < t->n_top && *ok; k++) {
                /* jansson object keys are C strings: a token holding NUL is cut there */
                char *key = strndup(t->top[k].token, t->top[k].len);
                if (!key) *ok = false;
                else if (!json_object_get(top, key))
                    json_object_set_new(top, key, json_real(t->top[k].logprob));
                free(key);
            }
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer(t->text_offset));
    }
    json_object_set_new(o, "tokens", tokens);
    json_object_set_new(o, "token_logprobs", lps);
    json_object_set_new(o, "top_logprobs", tops);
    json_object_set_new(o, "text_offset", offs);
    return o;
}

static json_t *choice_json(const struct proto_choice *c, bool *ok) {
    json_t *o = proto__chk(json_object(), ok);
    json_object_set_new(o, "index", json_integer(c->index));
    json_object_set_new(o, "text", proto__chk(json_stringn(c->text ? c->text : "", c->len), ok));
    json_object_set_new(o, "logprobs", proto__chk(logprobs_json(c, ok), ok));
    json_object_set_new(o, "finish_reason",
                        c->finish_reason ? json_string(c->finish_reason) : json_null());
    return o;
}

int proto_completion_encode(const struct proto_meta *m, const struct proto_choice *choices,
                            size_t n_choices, const struct proto_usage *u, struct proto_buf *out) {
    bool ok = true;
    json_t *o = proto__head_json(m, "text_completion", &ok), *arr = proto__chk(json_array(), &ok);
    for (size_t i = 0; i < n_choices && ok; i++)
        json_array_append_new(arr, choice_json(&choices[i], &ok));
    json_object_set_new(o, "choices", arr);
    json_object_set_new(o, "usage", proto__usage_json(u, &ok));
    return proto__dump(o, ok, "", "", out);
}

int proto_completion_chunk(const struct proto_meta *m, const struct proto_choice *c,
                           bool usage_null, struct proto_buf *out) {
    bool ok = true;
    json_t *o = proto__head_json(m, "text_completion", &ok), *arr = proto__chk(json_array(), &ok);
    if (ok) json_array_append_new(arr, choice_json(c, &ok));
    json_object_set_new(o, "choices", arr);
    if (usage_null) json_object_set_new(o, "usage", json_null());
    return proto__dump(o, ok, "data: ", "\n\n", out);
}

int proto_completion_usage_chunk(const struct proto_meta *m, const struct proto_usage *u,
                                 struct proto_buf *out) {
    bool ok = true;
    json_t *o = proto__head_json(m, "text_completion", &ok);
    json_object_set_new(o, "choices", proto__chk(json_array(), &ok));
    json_object_set_new(o, "usage", proto__usage_json(u, &ok));
    return proto__dump(o, ok, "data: ", "\n\n", out);
}

int proto_sse_done(struct proto_buf *out) {
    return proto_buf_puts(out, "data: [DONE]\n\n");
}

int proto_sse_error(const struct proto_error *e, struct proto_buf *out) {
    proto_buf_puts(out, "data: ");
    proto_error_encode(e, out);
    return proto_buf_puts(out, "\n\n");
}
