/* proto_completion.h - POST /v1/completions (OpenAI's legacy completions API): the request
 * decoder and validator, and the response and SSE chunk encoders. Pure functions over bytes
 * and structs; byte-exact output (tests/test_proto.c pins it).
 */
#ifndef XD_PROTO_COMPLETION_H
#define XD_PROTO_COMPLETION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_error.h"
#include "proto_gen.h"

#define PROTO_MAX_LOGPROBS 5 /* OpenAI's limit for the completions endpoint */

/* One prompt: text to tokenize, or token ids given by the client. */
struct proto_prompt {
    bool is_tokens;
    char *text; /* owned, NUL-terminated; len bytes (may hold NUL) */
    size_t len;
    int32_t *tokens; /* owned; every id checked against limits.n_vocab */
    size_t n_tokens;
};

struct proto_completion_req {
    struct proto_gen gen;
    struct proto_prompt *prompts; /* string -> 1; array of strings / of id arrays -> many */
    size_t n_prompts;
    bool echo;
    int32_t logprobs; /* -1: null (none); 0..5 alternatives per token */
    int32_t best_of;  /* accepted only when equal to n (then it means nothing more) */
};

/* Decodes and validates a request body. On success 0 and *r owns its contents (free with
 * proto_completion_req_free). On failure XD_E_INVALID (or XD_E_NOMEM) with e set to the status
 * and message the client gets; *r is left freed (safe to free again). */
int proto_completion_decode(const char *body, size_t len, const struct proto_limits *lim,
                            struct proto_completion_req *r, struct proto_error *e);
void proto_completion_req_free(struct proto_completion_req *r);

/* ---- response ------------------------------------------------------------------------------- */

/* One alternative at one position: its text (token strings are client-visible text: the
 * server turns bytes that are not UTF-8 into "bytes:\xNN" escapes before they get here). */
struct proto_top_logprob {
    const char *token;
    size_t len;
    float logprob;
};

/* One token of a choice's logprobs. has_logprob false -> null (the first token of an echoed
 * prompt has no logprob), and then its top_logprobs entry is null too. */
struct proto_token_logprob {
    const char *token;
    size_t len;
    bool has_logprob;
    float logprob;
    uint32_t text_offset;
    const struct proto_top_logprob *top;
    size_t n_top;
};

struct proto_choice {
    int32_t index;
    const char *text; /* valid UTF-8 */
    size_t len;
    bool has_logprobs; /* false -> "logprobs":null */
    const struct proto_token_logprob *lp;
    size_t n_lp;
    const char *finish_reason; /* "stop", "length", or NULL -> null */
};

struct proto_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
};

struct proto_meta {
    const char *id; /* "cmpl-..." */
    int64_t created; /* Unix seconds */
    const char *model;
};

/* The whole non-streamed response. 0, XD_E_INVALID (text not UTF-8) or XD_E_NOMEM. */
int proto_completion_encode(const struct proto_meta *m, const struct proto_choice *choices,
                            size_t n_choices, const struct proto_usage *u, struct proto_buf *out);

/* One SSE event "data: {chunk}\n\n" with one choice; usage_null adds "usage":null (every chunk
 * but the last when stream_options.include_usage is set). */
int proto_completion_chunk(const struct proto_meta *m, const struct proto_choice *c,
                           bool usage_null, struct proto_buf *out);
/* The usage chunk: "choices":[] and the usage object. */
int proto_completion_usage_chunk(const struct proto_meta *m, const struct proto_usage *u,
                                 struct proto_buf *out);
/* "data: [DONE]\n\n" */
int proto_sse_done(struct proto_buf *out);
/* An error inside a stream that has already started: "data: {"error":{...}}\n\n". */
int proto_sse_error(const struct proto_error *e, struct proto_buf *out);

#endif
