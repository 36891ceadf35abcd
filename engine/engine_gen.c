/* engine_gen.c - one generation request: its copy of the parameters and prompt, and the text
 * pipeline of each of its sequences (sample -> detokenize -> stop strings -> events).
 *
 * Every sequence owns its sampler (seeded with seed + index), stop matcher and streaming
 * detokenizer, so a sequence's tokens depend only on its own logits and parameters - never on
 * what else shares the batch. The pipeline runs on the engine thread; this file takes no locks
 * and knows nothing of slots beyond their number. It does not schedule (engine.c does), and it
 * reports the EOS token in the usage count but not as text or logprobs.
 *
 * Request states (the scheduler moves them; xd_gen_check_invariants() holds in each):
 *
 *     CREATED --xd_engine_submit--> QUEUED --admit (xd__gen_start)--> RUNNING <-------+
 *        |                            |                                  |  |         |
 *        |                            +--cancel / shutdown--> ENDED <----+  | preempt | admit
 *        +--xd_gen_destroy                                     ^            v         |
 *                                                              +------- PREEMPTED ----+
 *   CREATED    owned by the caller; no sequence holds anything.
 *   QUEUED     on the engine's waiting list; no slot, no sampler.
 *   RUNNING    every sequence has a slot, a sampler, a stop matcher; n_done counts DONE ones.
 *   PREEMPTED  back at the head of the waiting list without slots or KV (engine.c freed them),
 *              keeping samplers, stop matchers, detokenizers and sampled tokens, so that once
 *              readmitted it recomputes its positions and goes on exactly where it stopped.
 *   ENDED      END emitted; nothing held; the engine forgets it.
 *
 * Sequence states: PREFILL (n_past < n_prompt) -> DECODE (next set, n_past <= n_prompt +
 * n_gen - 1: below it the scheduler is recomputing after a preemption) -> DONE. The
 * transitions are xd__seq_sample / xd__seq_finish_length.
 */
#include "engine_gen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xd_error.h"

int xd_gen_create(const struct xd_gen_params *p, const int32_t *prompt, size_t n_prompt,
                  void *user, struct xd_gen **out) {
    if (!p || !prompt || n_prompt == 0 || n_prompt > INT32_MAX / 2 || p->n < 1 ||
        p->max_tokens < 0 || p->n_stop > 64)
        return XD_E_INVALID;
    struct xd_gen *g = calloc(1, sizeof *g);
    if (!g) return XD_E_NOMEM;
    g->p = *p;
    g->user = user;
    g->n_prompt = (int32_t)n_prompt;
    g->info.n_prompt = (int32_t)n_prompt;
    atomic_init(&g->cancel, false);
    g->prompt = malloc(n_prompt * sizeof *g->prompt);
    g->seq = calloc((size_t)p->n, sizeof *g->seq);
    g->stop_copy = calloc(p->n_stop + 1, sizeof *g->stop_copy);
    g->stop_len_copy = calloc(p->n_stop + 1, sizeof *g->stop_len_copy);
    size_t nb = p->sampler.n_logit_bias;
    g->bias_copy = calloc(nb + 1, sizeof *g->bias_copy);
    bool ok = g->prompt && g->seq && g->stop_copy && g->stop_len_copy && g->bias_copy;
    for (size_t i = 0; ok && i < p->n_stop; i++) {
        size_t len = p->stop_len ? p->stop_len[i] : strlen(p->stop[i]);
        g->stop_copy[i] = malloc(len + 1);
        if (!(ok = g->stop_copy[i] != NULL)) break;
        memcpy(g->stop_copy[i], p->stop[i], len);
        g->stop_copy[i][len] = 0;
        g->stop_len_copy[i] = len;
    }
    if (!ok) {
        xd_gen_destroy(g);
        return XD_E_NOMEM;
    }
    memcpy(g->prompt, prompt, n_prompt * sizeof *prompt);
    if (nb) memcpy(g->bias_copy, p->sampler.logit_bias, nb * sizeof *g->bias_copy);
    g->p.sampler.logit_bias = g->bias_copy;
    g->p.stop = (const char *const *)g->stop_copy;
    g->p.stop_len = g->stop_len_copy;
    for (int32_t i = 0; i < p->n; i++) g->seq[i].slot = -1;
    *out = g;
    return 0;
}

void xd_gen_destroy(struct xd_gen *g) {
    if (!g) return;
    xd__gen_stop(g);
    for (size_t i = 0; g->stop_copy && i < g->p.n_stop; i++) free(g->stop_copy[i]);
    free(g->stop_copy);
    free(g->stop_len_copy);
    free(g->bias_copy);
    free(g->prompt);
    free(g->seq);
    free(g);
}

const struct xd_gen_info *xd_gen_info(const struct xd_gen *g) { return &g->info; }

bool xd_gen_check_invariants(const struct xd_gen *g) {
    int32_t done = 0;
    for (int32_t i = 0; i < g->p.n; i++) {
        const struct xd_seq *s = &g->seq[i];
        bool held = s->smp || s->stop;
        if (g->state == XD_GEN_PREEMPTED) {
            if (s->slot >= 0 || s->n_past || !s->smp || !s->stop || !s->toks) return false;
        } else if (g->state != XD_GEN_RUNNING && (held || s->slot >= 0)) {
            return false;
        }
        if (g->state == XD_GEN_RUNNING || g->state == XD_GEN_PREEMPTED) {
            if (g->state == XD_GEN_RUNNING && (s->slot < 0 || !s->smp || !s->stop)) return false;
            if (s->state == XD_SEQ_PREFILL && (s->n_past >= g->n_prompt || s->n_gen)) return false;
            if (s->state == XD_SEQ_DECODE && s->n_past > g->n_prompt + s->n_gen - 1) return false;
            if (s->n_gen > g->p.max_tokens || s->n_past > s->n_hw) return false;
        }
        done += s->state == XD_SEQ_DONE;
    }
    if ((g->state == XD_GEN_RUNNING || g->state == XD_GEN_PREEMPTED) && done != g->n_done)
        return false;
    return g->n_prompt > 0 && g->p.n >= 1;
}

int xd__gen_start(struct xd_gen *g, const struct xd_tokenizer *tok, int32_t n_vocab,
                  const int32_t *slots) {
    /* ignore_eos: ban every end-of-generation token, as llama.cpp's server does */
    struct xd_logit_bias *bias = NULL;
    struct xd_sampler_params sp = g->p.sampler;
    if (g->p.ignore_eos) {
        size_t n_eog = 0;
        for (int32_t t = 0; t < n_vocab; t++) n_eog += xd_tokenizer_is_eog(tok, t);
        bias = malloc((sp.n_logit_bias + n_eog + 1) * sizeof *bias);
        if (!bias) return XD_E_NOMEM;
        memcpy(bias, sp.logit_bias, sp.n_logit_bias * sizeof *bias);
        size_t k = sp.n_logit_bias;
        for (int32_t t = 0; t < n_vocab; t++)
            if (xd_tokenizer_is_eog(tok, t)) bias[k++] = (struct xd_logit_bias){t, -INFINITY};
        sp.logit_bias = bias;
        sp.n_logit_bias = k;
    }
    int rc = 0;
    g->piece_cap = xd_detok_out_max(tok);
    if (!(g->piece = malloc(g->piece_cap))) rc = XD_E_NOMEM;
    for (int32_t i = 0; i < g->p.n && !rc; i++) {
        struct xd_seq *s = &g->seq[i];
        struct xd_sampler_params spi = sp;
        spi.seed = sp.seed + (uint64_t)i;
        if (!(s->toks = malloc((size_t)(g->p.max_tokens > 0 ? g->p.max_tokens : 1) *
                               sizeof *s->toks))) {
            rc = XD_E_NOMEM;
            break;
        }
        if ((rc = xd_sampler_create(&spi, n_vocab, &s->smp))) break;
        if ((rc = xd_stop_create((const char *const *)g->stop_copy, g->stop_len_copy,
                                 g->p.n_stop, &s->stop)))
            break;
        for (int32_t t = 0; t < g->n_prompt && !rc; t++)
            rc = xd_sampler_accept(s->smp, g->prompt[t], false);
        xd_detok_init(&s->dt, tok, 0);
        s->slot = slots[i];
        s->state = XD_SEQ_PREFILL;
        s->n_past = s->n_hw = s->n_gen = 0;
    }
    free(bias);
    if (rc) {
        xd__gen_stop(g);
        return rc;
    }
    g->n_done = 0;
    g->lp_next = 0;
    g->state = XD_GEN_RUNNING;
    return 0;
}

void xd__gen_stop(struct xd_gen *g) {
    for (int32_t i = 0; g->seq && i < g->p.n; i++) {
        xd_sampler_destroy(g->seq[i].smp);
        xd_stop_destroy(g->seq[i].stop);
        free(g->seq[i].toks);
        g->seq[i].toks = NULL;
        g->seq[i].smp = NULL;
        g->seq[i].stop = NULL;
        g->seq[i].slot = -1;
    }
    free(g->piece);
    g->piece = NULL;
}

static int finish(struct xd_gen *g, int32_t i, enum xd_finish why, const char *text, size_t len,
                  xd__emit_fn emit, void *ctx) {
    struct xd_seq *s = &g->seq[i];
    s->state = XD_SEQ_DONE;
    g->n_done++;
    struct xd_gen_event ev = {.kind = XD_GEN_FINISH, .gen = g, .user = g->user, .index = i,
                              .text = text ? text : "", .len = len, .finish = why};
    return emit(ctx, &ev);
}

/* The detokenizer's held-back bytes, then the stop matcher's: the text that ends a sequence. */
static int flush_and_finish(struct xd_gen *g, int32_t i, enum xd_finish why, xd__emit_fn emit,
                            void *ctx) {
    struct xd_seq *s = &g->seq[i];
    struct xd_stop_out so = {0};
    int w = xd_detok_flush(&s->dt, g->piece, g->piece_cap);
    if (w > 0) {
        int rc = xd_stop_feed(s->stop, g->piece, (size_t)w, &so);
        if (rc) return rc;
        if (so.stop_index >= 0) why = XD_FINISH_STOP;
        if (so.len) {
            struct xd_gen_event ev = {.kind = XD_GEN_TOKEN, .gen = g, .user = g->user,
                                      .index = i, .token = -1, .text = so.text, .len = so.len};
            if ((rc = emit(ctx, &ev))) return rc;
        }
    }
    xd_stop_finish(s->stop, &so);
    return finish(g, i, why, so.text, so.len, emit, ctx);
}

int xd__seq_finish_length(struct xd_gen *g, int32_t i, xd__emit_fn emit, void *ctx) {
    return finish(g, i, XD_FINISH_LENGTH, "", 0, emit, ctx);
}

int xd__seq_sample(struct xd_gen *g, int32_t i, const float *logits,
                   const struct xd_tokenizer *tok, int32_t n_ctx, xd__emit_fn emit, void *ctx) {
    struct xd_seq *s = &g->seq[i];
    struct xd_gen_event ev = {.kind = XD_GEN_TOKEN, .gen = g, .user = g->user, .index = i};
    ev.has_logprobs = g->p.logprobs;
    int tk = xd_sampler_sample(s->smp, logits, g->p.logprobs ? &ev.lp : NULL);
    if (tk < 0) return tk;
    s->toks[s->n_gen++] = tk;
    g->info.n_generated++;
    if (!g->p.ignore_eos && xd_tokenizer_is_eog(tok, tk))
        return flush_and_finish(g, i, XD_FINISH_STOP, emit, ctx);
    int rc = xd_sampler_accept(s->smp, tk, true);
    if (rc) return rc;
    int w = xd_detok_push(&s->dt, tk, g->piece, g->piece_cap);
    if (w < 0) return w;
    struct xd_stop_out so;
    if ((rc = xd_stop_feed(s->stop, g->piece, (size_t)w, &so))) return rc;
    ev.token = tk;
    ev.text = so.text;
    ev.len = so.len;
    if ((rc = emit(ctx, &ev))) return rc;
    if (so.stop_index >= 0) return finish(g, i, XD_FINISH_STOP, "", 0, emit, ctx);
    /* the next token would sit at position n_prompt + n_gen - 1 + 1: it must fit */
    if (s->n_gen >= g->p.max_tokens || g->n_prompt + s->n_gen > n_ctx)
        return flush_and_finish(g, i, XD_FINISH_LENGTH, emit, ctx);
    s->next = tk;
    s->state = XD_SEQ_DECODE;
    return 0;
}
