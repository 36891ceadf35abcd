/* proto_chat.h - POST /v1/chat/completions (OpenAI's chat completions API): the request decoder
 * and validator, and the response and SSE chunk encoders. Pure functions over bytes and structs;
 * byte-exact output (tests/test_chat.c pins it). The generation fields are proto_gen's, decoded
 * by the same code as /v1/completions; the response types are proto_completion.h's.
 */
#ifndef XD_PROTO_CHAT_H
#define XD_PROTO_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_completion.h"
#include "proto_error.h"
#include "proto_gen.h"

#define PROTO_CHAT_MAX_TOP_LOGPROBS 20 /* OpenAI's limit for chat */
#define PROTO_CHAT_MAX_MESSAGES 4096

struct proto_chat_req {
    struct proto_gen gen; /* gen.max_tokens -1: not given (the rest of the context) */
    /* The conversation as the chat template gets it (owned): an array of objects with "role"
     * ("developer" becomes "system", as OpenAI does for models without a developer role),
     * "content" a string (text parts joined with "\n", as llama.cpp and vLLM join them;
     * an assistant's null content is ""), and "name" / "reasoning_content" when given. */
    json_t *messages;
    bool logprobs;
    int32_t top_logprobs;    /* 0..20; only with logprobs */
    json_t *template_kwargs; /* chat_template_kwargs (owned object) or NULL: template variables */
};

/* Decodes and validates a request body. On success 0 and *r owns its contents (free with
 * proto_chat_req_free). On failure XD_E_INVALID (or XD_E_NOMEM) with e set to the status and
 * message the client gets; *r is left freed (safe to free again). */
int proto_chat_decode(const char *body, size_t len, const struct proto_limits *lim,
                      struct proto_chat_req *r, struct proto_error *e);
void proto_chat_req_free(struct proto_chat_req *r);

/* ---- response ------------------------------------------------------------------------------- */

/* The whole response, object "chat.completion": each choice's text becomes
 * message {"role":"assistant","content":text}; has_logprobs gives chat's
 * {"content":[{token,logprob,bytes,top_logprobs}],"refusal":null}. 0, XD_E_INVALID (text not
 * UTF-8) or XD_E_NOMEM. */
int proto_chat_encode(const struct proto_meta *m, const struct proto_choice *choices,
                      size_t n_choices, const struct proto_usage *u, struct proto_buf *out);

/* The SSE events of one choice's step, objects "chat.completion.chunk": a content chunk when
 * c has text or logprobs (delta {"content":...}), then, when c->finish_reason is set, the
 * finish chunk (delta {}). usage_null adds "usage":null to each. Nothing at all for an empty c
 * without a finish reason. */
int proto_chat_chunk(const struct proto_meta *m, const struct proto_choice *c, bool usage_null,
                     struct proto_buf *out);
/* The first chunk of choice index: delta {"role":"assistant","content":""}. */
int proto_chat_role_chunk(const struct proto_meta *m, int32_t index, bool usage_null,
                          struct proto_buf *out);
/* The usage chunk: "choices":[] and the usage object. */
int proto_chat_usage_chunk(const struct proto_meta *m, const struct proto_usage *u,
                           struct proto_buf *out);

#endif
