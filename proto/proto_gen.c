/* proto_gen.c - decoding and validating the generation fields every endpoint shares.
 *
 * One table of fields (name, decoder, offset, range); the generic decoders check JSON types
 * strictly ("1" is not a number, 1.5 is not an integer, null means the default) and write
 * 400-errors that name the parameter and its accepted range. Fields with structure of their own
 * (stop, logit_bias, seed, stream_options) have their own small decoders. Trade-off: a table
 * costs a pointer-and-offset indirection per field, but a chat endpoint then shares the exact
 * code and messages instead of a copy. It does not tokenize or look at the model: token-id and
 * context checks that need the vocabulary use proto_limits only.
 */
#include "proto_gen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xd_error.h"

struct proto_limits proto_limits_default(int32_t n_vocab, int32_t n_parallel) {
    return (struct proto_limits){
        .n_vocab = n_vocab,
        .max_n = n_parallel > 0 ? n_parallel : 1,
        .max_prompts = 64,
        .max_tokens = 1 << 20,
        .max_prompt_tokens = 1 << 20,
        .max_logit_bias = 1024,
        .max_stop_len = 256,
    };
}

void proto_gen_init(struct proto_gen *g) {
    *g = (struct proto_gen){
        .max_tokens = 16,
        .n = 1,
        .temperature = 1.0,
        .top_p = 1.0,
        .repetition_penalty = 1.0,
    };
}

void proto_gen_free(struct proto_gen *g) {
    free(g->model);
    for (size_t i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->logit_bias);
    free(g->user);
    proto_gen_init(g);
}

/* ---- generic row decoders ------------------------------------------------------------------- */

static int bad(struct proto_error *e, const char *param, const char *what) {
    proto_error_set(e, 400, param, "invalid_value", "'%s' %s", param, what);
    return XD_E_INVALID;
}

int proto_field_number(const struct proto_field *f, json_t *v, void *base,
                       const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v)) return 1;
    double x = json_number_value(v);
    if (!json_is_number(v) || !(x >= f->lo && x <= f->hi)) {
        proto_error_set(e, 400, f->name, "invalid_value",
                        "'%s' must be a number between %g and %g", f->name, f->lo, f->hi);
        return XD_E_INVALID;
    }
    *(double *)((char *)base + f->off) = x;
    return 1;
}

int proto_field_int(const struct proto_field *f, json_t *v, void *base,
                    const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v)) return 1;
    json_int_t x = json_integer_value(v);
    if (!json_is_integer(v) || (double)x < f->lo || (double)x > f->hi) {
        proto_error_set(e, 400, f->name, "invalid_value",
                        "'%s' must be an integer between %.0f and %.0f", f->name, f->lo, f->hi);
        return XD_E_INVALID;
    }
    *(int32_t *)((char *)base + f->off) = (int32_t)x;
    return 1;
}

int proto_field_bool(const struct proto_field *f, json_t *v, void *base,
                     const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v)) return 1;
    if (!json_is_boolean(v)) return bad(e, f->name, "must be a boolean");
    *(bool *)((char *)base + f->off) = json_is_true(v);
    return 1;
}

/* A NUL-terminated copy of a JSON string of n bytes (which may hold NUL). */
static char *dup_bytes(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (!c) return NULL;
    memcpy(c, s, n);
    c[n] = 0;
    return c;
}

int proto_field_string(const struct proto_field *f, json_t *v, void *base,
                       const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v)) return 1;
    if (!json_is_string(v)) return bad(e, f->name, "must be a string");
    char **dst = (char **)((char *)base + f->off);
    char *c = dup_bytes(json_string_value(v), json_string_length(v));
    if (!c) {
        proto_error_set(e, 503, NULL, NULL, "out of memory");
        return XD_E_NOMEM;
    }
    free(*dst);
    *dst = c;
    return 1;
}

int proto_fields_decode(const struct proto_field *table, size_t n, const char *key, json_t *v,
                        void *base, const struct proto_limits *lim, struct proto_error *e) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(table[i].name, key)) return table[i].decode(&table[i], v, base, lim, e);
    return 0;
}

int proto_json_parse_object(const char *body, size_t len, json_t **out, struct proto_error *e) {
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!root) {
        proto_error_set(e, 400, NULL, "invalid_json",
                        "We could not parse the JSON body of your request: %s (line %d, column "
                        "%d)",
                        je.text, je.line, je.column);
        return XD_E_INVALID;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        proto_error_set(e, 400, NULL, "invalid_json", "The request body must be a JSON object");
        return XD_E_INVALID;
    }
    *out = root;
    return 0;
}

/* ---- fields with structure ------------------------------------------------------------------ */

static int decode_stop(const struct proto_field *f, json_t *v, void *base,
                       const struct proto_limits *lim, struct proto_error *e) {
    struct proto_gen *g = base;
    if (json_is_null(v)) return 1;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > PROTO_MAX_STOP)
            return bad(e, "stop", "must be a string or an array of at most 4 strings");
        items = NULL;
    } else if (!json_is_string(v)) {
        return bad(e, "stop", "must be a string or an array of at most 4 strings");
    }
    for (size_t i = 0; i < g->n_stop; i++) free(g->stop[i]);
    g->n_stop = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s))
            return bad(e, "stop", "must be a string or an array of at most 4 strings");
        size_t len = json_string_length(s);
        if (len > (size_t)lim->max_stop_len) {
            proto_error_set(e, 400, "stop", "invalid_value",
                            "'stop' strings must be at most %d bytes long", lim->max_stop_len);
            return XD_E_INVALID;
        }
        if (!(g->stop[g->n_stop] = dup_bytes(json_string_value(s), len))) {
            proto_error_set(e, 503, NULL, NULL, "out of memory");
            return XD_E_NOMEM;
        }
        g->stop_len[g->n_stop++] = len;
    }
    return 1;
}

/* A token id written as a JSON object key: decimal digits only, below n_vocab. */
static bool parse_token_key(const char *k, int32_t n_vocab, int32_t *out) {
    if (!*k || strlen(k) > 10) return false;
    long long x = 0;
    for (const char *p = k; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        x = x * 10 + (*p - '0');
    }
    if (x >= n_vocab) return false;
    *out = (int32_t)x;
    return true;
}

static int decode_logit_bias(const struct proto_field *f, json_t *v, void *base,
                             const struct proto_limits *lim, struct proto_error *e) {
    struct proto_gen *g = base;
    if (json_is_null(v)) return 1;
    if (!json_is_object(v))
        return bad(e, "logit_bias", "must be an object mapping token ids to numbers");
    size_t n = json_object_size(v);
    if (n > (size_t)lim->max_logit_bias) {
        proto_error_set(e, 400, "logit_bias", "invalid_value",
                        "'logit_bias' may have at most %d entries", lim->max_logit_bias);
        return XD_E_INVALID;
    }
    struct proto_logit_bias *lb = calloc(n ? n : 1, sizeof *lb);
    if (!lb) {
        proto_error_set(e, 503, NULL, NULL, "out of memory");
        return XD_E_NOMEM;
    }
    size_t i = 0;
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        double b = json_number_value(x);
        if (!parse_token_key(k, lim->n_vocab, &lb[i].token)) {
            free(lb);
            proto_error_set(e, 400, "logit_bias", "invalid_value",
                            "'logit_bias' keys must be token ids between 0 and %d, got '%.32s'",
                            lim->n_vocab - 1, k);
            return XD_E_INVALID;
        }
        if (!json_is_number(x) || !(b >= -100 && b <= 100)) {
            free(lb);
            return bad(e, "logit_bias", "values must be numbers between -100 and 100");
        }
        lb[i++].bias = (float)b;
    }
    free(g->logit_bias);
    g->logit_bias = lb;
    g->n_logit_bias = n;
    return 1;
}

static int decode_seed(const struct proto_field *f, json_t *v, void *base,
                       const struct proto_limits *lim, struct proto_error *e) {
    struct proto_gen *g = base;
    if (json_is_null(v)) return 1;
    if (!json_is_integer(v)) return bad(e, "seed", "must be an integer");
    g->has_seed = true;
    g->seed = (uint64_t)json_integer_value(v);
    return 1;
}

static int decode_stream_options(const struct proto_field *f, json_t *v, void *base,
                                 const struct proto_limits *lim, struct proto_error *e) {
    struct proto_gen *g = base;
    if (json_is_null(v)) return 1;
    if (!json_is_object(v)) return bad(e, "stream_options", "must be an object");
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (strcmp(k, "include_usage")) {
            proto_error_set(e, 400, "stream_options", "invalid_value",
                            "Unrecognized stream option: '%.64s'", k);
            return XD_E_INVALID;
        }
        if (!json_is_boolean(x) && !json_is_null(x))
            return bad(e, "stream_options.include_usage", "must be a boolean");
        g->include_usage = json_is_true(x);
    }
    g->has_stream_options = true;
    return 1;
}

static int decode_top_k(const struct proto_field *f, json_t *v, void *base,
                        const struct proto_limits *lim, struct proto_error *e) {
    int rc = proto_field_int(f, v, base, lim, e);
    struct proto_gen *g = base;
    if (rc == 1 && g->top_k < 0) g->top_k = 0;
    return rc;
}

/* max_tokens and n take their upper bound from the limits, so they get a copy of their row
 * with hi filled in. */
static int decode_limited_int(const struct proto_field *f, json_t *v, void *base,
                              const struct proto_limits *lim, struct proto_error *e) {
    struct proto_field row = *f;
    row.hi = f->off == offsetof(struct proto_gen, n) ? lim->max_n : lim->max_tokens;
    return proto_field_int(&row, v, base, lim, e);
}

#define G(field) offsetof(struct proto_gen, field)
static const struct proto_field gen_fields[] = {
    {"model", proto_field_string, G(model), 0, 0},
    {"max_tokens", decode_limited_int, G(max_tokens), 0, 0},
    {"n", decode_limited_int, G(n), 1, 0},
    {"stream", proto_field_bool, G(stream), 0, 0},
    {"stream_options", decode_stream_options, 0, 0, 0},
    {"stop", decode_stop, 0, 0, 0},
    {"temperature", proto_field_number, G(temperature), 0, 2},
    {"top_p", proto_field_number, G(top_p), 0, 1},
    {"min_p", proto_field_number, G(min_p), 0, 1},
    {"top_k", decode_top_k, G(top_k), -1, 1 << 30},
    {"presence_penalty", proto_field_number, G(presence_penalty), -2, 2},
    {"frequency_penalty", proto_field_number, G(frequency_penalty), -2, 2},
    {"repetition_penalty", proto_field_number, G(repetition_penalty), 0.01, 10},
    {"seed", decode_seed, 0, 0, 0},
    {"logit_bias", decode_logit_bias, 0, 0, 0},
    {"user", proto_field_string, G(user), 0, 0},
    {"ignore_eos", proto_field_bool, G(ignore_eos), 0, 0},
};
#undef G

int proto_gen_decode_field(struct proto_gen *g, const char *key, json_t *v,
                           const struct proto_limits *lim, struct proto_error *e) {
    return proto_fields_decode(gen_fields, sizeof gen_fields / sizeof gen_fields[0], key, v, g,
                               lim, e);
}

int proto_gen_finish(struct proto_gen *g, struct proto_error *e) {
    if (!g->model) {
        proto_error_set(e, 400, "model", "missing_required_parameter",
                        "you must provide a model parameter");
        return XD_E_INVALID;
    }
    if (g->has_stream_options && !g->stream) {
        proto_error_set(e, 400, "stream_options", "invalid_value",
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
        return XD_E_INVALID;
    }
    return 0;
}
