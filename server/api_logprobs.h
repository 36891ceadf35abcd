/* api_logprobs.h - a growing list of per-token logprobs in OpenAI's completions shape, kept as
 * offsets into one string buffer so appending never invalidates earlier entries; resolved into
 * proto_token_logprob arrays only when a response is encoded. Loop thread only. */
#ifndef XD_API_LOGPROBS_H
#define XD_API_LOGPROBS_H

#include <stdbool.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_completion.h"
#include "sampler.h"
#include "tokenizer.h"

struct srv_lp_rec {
    size_t off, len; /* token string in str */
    bool has;        /* false: null logprob and null top_logprobs */
    float logprob;
    uint32_t text_offset;
    size_t top0;     /* first of n_top entries in tops */
    uint32_t n_top;
};

struct srv_lp_top {
    size_t off, len;
    float logprob;
};

struct srv_lp_list {
    struct proto_buf str;
    struct srv_lp_rec *rec;
    size_t n, cap;
    struct srv_lp_top *tops;
    size_t n_tops, cap_tops;
    bool exact_top; /* chat: the top alternatives only, without adding the chosen token */
};

void srv_lp_free(struct srv_lp_list *l);

/* Appends the token string of id as clients see it: its text when that is valid UTF-8, else
 * "bytes:\xNN..." (OpenAI's notation for a piece of a character). Returns 0 or XD_E_NOMEM. */
int srv_token_string(const struct xd_tokenizer *tok, int32_t id, struct proto_buf *out);
/* Byte length of the text token id adds (raw piece bytes); 0 for ids out of range. */
size_t srv_token_text_len(const struct xd_tokenizer *tok, int32_t id);

/* Appends token id: lp NULL gives a null entry (the first token of an echoed prompt); else its
 * logprob and the top alternatives (lp->n_top of them, plus the chosen token when it is not
 * among them, as OpenAI's completions do - unless l->exact_top, as its chat does). 0 or
 * XD_E_NOMEM. */
int srv_lp_add(struct srv_lp_list *l, const struct xd_tokenizer *tok, int32_t id,
               const struct xd_logprobs *lp, uint32_t text_offset);

/* Gives entry i (added with lp NULL) the logprob and alternatives of lp. The old token string
 * stays in the buffer unused. i out of range: nothing. 0 or XD_E_NOMEM. */
int srv_lp_set(struct srv_lp_list *l, size_t i, const struct xd_tokenizer *tok, int32_t id,
               const struct xd_logprobs *lp);

/* Resolves entries [from, from + n) into out[n]; tops must have room for the entries' tops
 * (l->n_tops is always enough). Pointers are valid until l changes. */
void srv_lp_resolve(const struct srv_lp_list *l, size_t from, size_t n,
                    struct proto_token_logprob *out, struct proto_top_logprob *tops);

#endif
