/* proto_gen.h - the generation parameters that every OpenAI-style endpoint shares.
 *
 * /v1/completions and /v1/chat/completions (issue 13) accept the same sampling and stopping
 * fields (`model`, `max_tokens`, `n`, `stream`, `stream_options`, `stop`, `temperature`,
 * `top_p`, `presence_penalty`, `frequency_penalty`, `seed`, `logit_bias`, `user`, and the
 * vLLM/llama.cpp extensions `top_k`, `min_p`, `repetition_penalty`, `ignore_eos`). They are
 * decoded here, once, from a table of fields; an endpoint's own decoder offers each key of the
 * body to its own table first and then to proto_gen_decode_field(). Pure: no I/O, no model.
 */
#ifndef XD_PROTO_GEN_H
#define XD_PROTO_GEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_error.h"

#define PROTO_MAX_STOP 4 /* OpenAI's limit on stop strings */

/* What the server accepts; the decoders check every field against these. */
struct proto_limits {
    int32_t n_vocab;           /* token ids and logit_bias keys must be below it (> 0) */
    int32_t max_n;             /* most choices per prompt (the server's --parallel) */
    int32_t max_prompts;       /* most prompts in one request */
    int32_t max_tokens;        /* largest max_tokens accepted */
    int32_t max_prompt_tokens; /* longest token-id prompt */
    int32_t max_logit_bias;    /* most logit_bias entries */
    int32_t max_stop_len;      /* longest stop string, bytes */
};

/* Defaults that suit a server with n_vocab tokens and n_parallel slots. */
struct proto_limits proto_limits_default(int32_t n_vocab, int32_t n_parallel);

struct proto_logit_bias {
    int32_t token;
    float bias;
};

/* Decoded generation parameters. Strings are owned copies (NUL-terminated; the length is kept
 * because JSON strings may hold NUL). */
struct proto_gen {
    char *model;
    int32_t max_tokens;      /* default 16 */
    int32_t n;               /* default 1 */
    bool stream;             /* default false */
    bool include_usage;      /* stream_options.include_usage */
    bool has_stream_options; /* for the "only with stream" check */
    bool ignore_eos;
    char *stop[PROTO_MAX_STOP];
    size_t stop_len[PROTO_MAX_STOP];
    size_t n_stop;
    double temperature;        /* default 1 (OpenAI's) */
    double top_p;              /* default 1 */
    double min_p;              /* default 0 */
    int32_t top_k;             /* 0 = off (-1 accepted as off, as vLLM) */
    double presence_penalty;   /* default 0 */
    double frequency_penalty;  /* default 0 */
    double repetition_penalty; /* default 1 */
    bool has_seed;
    uint64_t seed;             /* a negative JSON seed wraps, as a two's-complement int64 */
    struct proto_logit_bias *logit_bias;
    size_t n_logit_bias;
    char *user;
};

/* OpenAI's defaults. Cannot fail. */
void proto_gen_init(struct proto_gen *g);
/* Frees the owned strings and arrays, leaving g as after proto_gen_init. */
void proto_gen_free(struct proto_gen *g);

/* Decodes one body field if it is a shared one. Returns 1 when key is a shared field and was
 * decoded, 0 when key is not a shared field (nothing touched), or XD_E_INVALID with e set (a
 * 400 naming the parameter and its accepted range). JSON null means "use the default". */
int proto_gen_decode_field(struct proto_gen *g, const char *key, json_t *v,
                           const struct proto_limits *lim, struct proto_error *e);

/* Checks across fields after all are decoded (model present, stream_options only with
 * stream). 0 or XD_E_INVALID with e set. */
int proto_gen_finish(struct proto_gen *g, struct proto_error *e);

/* ---- helpers the endpoint decoders share ---------------------------------------------------- */

/* A field table row: decode v into the struct at base + off. */
struct proto_field {
    const char *name;
    int (*decode)(const struct proto_field *f, json_t *v, void *base,
                  const struct proto_limits *lim, struct proto_error *e);
    size_t off;
    double lo, hi; /* accepted range for numbers and integers */
};

/* Row decoders: double in [lo, hi]; int32 in [lo, hi]; bool; owned string copy (char *). */
int proto_field_number(const struct proto_field *f, json_t *v, void *base,
                       const struct proto_limits *lim, struct proto_error *e);
int proto_field_int(const struct proto_field *f, json_t *v, void *base,
                    const struct proto_limits *lim, struct proto_error *e);
int proto_field_bool(const struct proto_field *f, json_t *v, void *base,
                     const struct proto_limits *lim, struct proto_error *e);
int proto_field_string(const struct proto_field *f, json_t *v, void *base,
                       const struct proto_limits *lim, struct proto_error *e);

/* Looks key up in table[0..n) and decodes it: 1 decoded, 0 not in the table, or the error. */
int proto_fields_decode(const struct proto_field *table, size_t n, const char *key, json_t *v,
                        void *base, const struct proto_limits *lim, struct proto_error *e);

/* Parses a request body into a JSON object; XD_E_INVALID with e set (400) on invalid JSON or a
 * body that is not an object. The caller json_decref()s *out. */
int proto_json_parse_object(const char *body, size_t len, json_t **out, struct proto_error *e);

#endif
