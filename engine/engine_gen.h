/* engine_gen.h - internals of a generation request, shared by engine.c (the scheduler) and
 * engine_gen.c (the request and its per-sequence text pipeline). Not a public API. */
#ifndef XD_ENGINE_GEN_H
#define XD_ENGINE_GEN_H

#include <stdatomic.h>

#include "engine.h"
#include "stop.h"
#include "tokenizer.h"

enum xd_gen_state { XD_GEN_CREATED, XD_GEN_QUEUED, XD_GEN_RUNNING, XD_GEN_PREEMPTED, XD_GEN_ENDED };
enum xd_seq_state { XD_SEQ_PREFILL, XD_SEQ_DECODE, XD_SEQ_DONE };

struct xd_seq {
    enum xd_seq_state state;
    int32_t slot;   /* KV sequence id while RUNNING, -1 otherwise */
    int32_t n_past; /* positions of this sequence stored in the KV cache */
    int32_t n_hw;   /* most positions ever stored: below it, a rerun is a recompute */
    int32_t n_gen;  /* tokens sampled */
    int32_t next;   /* DECODE: the token to run next, at position n_prompt + n_gen - 1 */
    int32_t *toks;  /* the n_gen tokens sampled (max_tokens of room): replayed after preemption */
    struct xd_sampler *smp;
    struct xd_stop *stop;
    struct xd_detok dt;
};

struct xd_gen {
    struct xd_gen_params p; /* stop and logit_bias point at the copies below */
    char **stop_copy;
    size_t *stop_len_copy;
    struct xd_logit_bias *bias_copy;
    int32_t *prompt;
    int32_t n_prompt;
    void *user;
    enum xd_gen_state state;
    atomic_bool cancel;
    struct xd_seq *seq; /* p.n */
    int32_t n_done;     /* sequences in XD_SEQ_DONE */
    int32_t lp_next;    /* prompt_logprobs: first prompt position whose event is not yet out */
    bool share_prompt;  /* n > 1: sequences 1.. take sequence 0's prompt KV (engine.c) */
    char *piece;        /* detok scratch, piece_cap bytes */
    size_t piece_cap;
    struct xd_gen *next; /* the engine's waiting queue */
    struct xd_gen_info info;
};

/* Emits one event; the engine copies what it needs (text included). 0 or XD_E_NOMEM. */
typedef int (*xd__emit_fn)(void *ctx, const struct xd_gen_event *ev);

/* RUNNING: allocates every sequence's sampler, stop matcher and detokenizer, binds slot[i] to
 * sequence i, and tells the samplers the prompt. 0 or XD_E_NOMEM/XD_E_INVALID (then nothing is
 * held). */
int xd__gen_start(struct xd_gen *g, const struct xd_tokenizer *tok, int32_t n_vocab,
                  const int32_t *slots);
/* Frees what xd__gen_start allocated; the slots are the caller's to truncate. Cannot fail. */
void xd__gen_stop(struct xd_gen *g);

/* The token sequence i runs at position pos (< n_prompt + n_gen): prompt, then its samples. */
static inline int32_t xd__seq_token_at(const struct xd_gen *g, int32_t i, int32_t pos) {
    return pos < g->n_prompt ? g->prompt[pos] : g->seq[i].toks[pos - g->n_prompt];
}

/* Sequence i's logits for its next token: samples, detokenizes, matches stop strings and emits
 * TOKEN and, when it ends, FINISH. Afterwards the sequence is DECODE (seq->next set) or DONE.
 * Returns 0 or a negative code (no token can be sampled, out of memory): the request fails. */
int xd__seq_sample(struct xd_gen *g, int32_t i, const float *logits,
                   const struct xd_tokenizer *tok, int32_t n_ctx, xd__emit_fn emit, void *ctx);

/* Ends sequence i without sampling (max_tokens 0): emits FINISH length. */
int xd__seq_finish_length(struct xd_gen *g, int32_t i, xd__emit_fn emit, void *ctx);

#endif
