/* engine.c - the engine thread: a waiting queue, sequence slots, and an iteration-level step.
 *
 * Each step (engine_step) does, in order: retire cancelled requests; build one batch from the
 * next token of every decoding sequence, then chunks of pending prompts (and recomputations)
 * in admission order until the step's token budget is spent; run xd_forward once; advance the
 * sequences and sample every row that needs it (engine_gen.c); retire requests whose sequences
 * are all done. Admission (engine_admit) happens between steps: requests leave the queue
 * strictly first-come first-served, each when as many slots are free as it has sequences and
 * the KV pool has room for its prompt beyond what the running requests still need - a large
 * request at the head waits rather than being overtaken (no starvation; the cost is some idle
 * slots meanwhile).
 *
 * KV blocks (kv_cache.c) are reserved before the forward pass, so it never runs out half way.
 * A decode that finds no free block preempts the most recently admitted running request (vLLM's
 * recompute policy): its blocks go back, it returns to the head of the queue with its samplers,
 * stop matchers and sampled tokens, and once readmitted reruns prompt + samples as a chunked
 * prefill that samples nothing, then decodes on - the same tokens, only later. Recompute rather
 * than swapping to host memory: the CPU backend's KV already is host memory, and a rerun costs
 * prompt-speed tokens. A prefill chunk is cut to the free room instead of preempting anyone;
 * when nothing at all can run, the newest request is preempted.
 *
 * n > 1: sequence 0 prefills the prompt alone (where the K/V rows live in the host cache; a
 * backend with its own K/V, cuda, has every sequence prefill its copy); the row that samples
 * its first token also samples the others' (the logits of a row do not depend on the
 * sequence), and their block tables take the prompt's blocks by reference. The last, partial block is copied by each
 * sequence that writes into it (copy-on-write in kv_cache.c). A finished sequence's blocks are
 * released at once, not when its request ends.
 *
 * One failing forward pass must fail only the request that caused it. The batch's KV writes
 * are undone by truncating every sequence back to where it stood, then each request's part of
 * the batch is run on its own: the failures are failed, the others proceed. Rows of the
 * forward pass do not depend on what else is in the batch, so the rerun gives the same bits.
 *
 * Locks: `mu` guards the waiting queue, the stop flag and the stats snapshot; `mbox_mu` guards
 * the mailbox. Order: mu before mbox_mu. Everything else (slots, running requests, batch
 * arrays) belongs to the engine thread alone. END events never allocate: the request itself is
 * linked into the mailbox's end list, so the "exactly one END" promise holds even when memory
 * runs out.
 *
 * Prefix sharing across requests (share_prefix): a sequence starting its prefill takes the full
 * blocks of the longest prefix a running sequence has stored with the same tokens.
 *
 * Cache-aware scheduling (hold_prefill, off by default): prompt chunks may wait a few steps
 * while the decodes' experts fit an offloaded cache; measured 0.91-0.99x of the throughput
 * without it (docs/benchmarks.md), hence off.
 *
 * Not here: keeping blocks of finished requests for later prefix hits, admitting by resident
 * experts (which experts a prompt needs is known only once it has run), swapping KV out
 * instead of recomputing.
 */
#include "engine.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_gen.h"
#include "expert_cache.h"
#include "kv_cache.h"
#include "xd_error.h"

enum entry_kind { ENT_PLAIN, ENT_SAMPLE, ENT_PROMPT_LP };

/* One token of the step's batch and what to do with its logits row. */
struct entry {
    struct xd_gen *g;
    int32_t i; /* sequence */
    int32_t token, pos;
    enum entry_kind kind;
};

struct mail {
    struct xd_gen_event ev;
    char *text; /* owned copy of ev.text */
};

struct xd_engine {
    const struct xd_model *m;
    struct xd_ctx *ctx;
    struct xd_engine_params p;
    int32_t n_vocab;
    pthread_t thread;
    bool started;

    pthread_mutex_t mu; /* --- guarded by mu --- */
    pthread_cond_t cv;
    struct xd_gen *q_head, *q_tail;
    int32_t n_waiting;
    bool stop;
    struct xd_engine_stats snap;

    pthread_mutex_t mbox_mu; /* --- guarded by mbox_mu --- */
    struct mail *mbox;
    size_t n_mbox, cap_mbox;
    struct xd_gen *end_head, *end_tail;

    /* --- engine thread only --- */
    struct xd_gen *staged_head, *staged_tail; /* ENDs of this step, posted after publish_stats */
    struct xd_gen **running; /* admission order */
    int32_t n_running;
    bool *slot_busy;
    int32_t n_free;
    struct entry *ent, *sub; /* the step's batch; a request's part of it */
    int32_t cap_ent;
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_logits;
    float *logits;
    int32_t kv_blocks; /* in the pool */
    bool kv_on_host;   /* sequences can share blocks (xd_ctx_kv_on_host) */
    bool notify_pending;
    int32_t xc_slots;       /* slots of an offloaded expert cache (0: resident or dense) */
    uint64_t decode_set;    /* experts (over layers) of the last decode-only step; 0: none yet */
    int32_t held;           /* consecutive steps prompt chunks have waited (prefill_hold) */
    struct xd_engine_stats st; /* counters; copied into snap after each step */
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- mailbox -------------------------------------------------------------------------------- */

static int emit(void *ctx, const struct xd_gen_event *ev) {
    struct xd_engine *e = ctx;
    struct mail m = {.ev = *ev};
    if (ev->len || ev->text) {
        if (!(m.text = malloc(ev->len + 1))) return XD_E_NOMEM;
        memcpy(m.text, ev->text, ev->len);
        m.text[ev->len] = 0;
        m.ev.text = m.text;
    }
    pthread_mutex_lock(&e->mbox_mu);
    if (e->n_mbox == e->cap_mbox) {
        size_t cap = e->cap_mbox ? e->cap_mbox * 2 : 64;
        struct mail *nm = realloc(e->mbox, cap * sizeof *nm);
        if (!nm) {
            pthread_mutex_unlock(&e->mbox_mu);
            free(m.text);
            return XD_E_NOMEM;
        }
        e->mbox = nm;
        e->cap_mbox = cap;
    }
    e->mbox[e->n_mbox++] = m;
    pthread_mutex_unlock(&e->mbox_mu);
    e->notify_pending = true;
    return 0;
}

/* The request's last event. Never fails; afterwards g belongs to whoever drains. */
static void emit_end(struct xd_engine *e, struct xd_gen *g, int status) {
    g->info.status = status;
    g->info.t_end = now_ns();
    g->state = XD_GEN_ENDED;
    if (status == 0) e->st.requests_ok++;
    else if (status == -ECANCELED) e->st.requests_cancelled++;
    else e->st.requests_failed++;
    g->next = NULL;
    if (e->staged_tail) e->staged_tail->next = g;
    else e->staged_head = g;
    e->staged_tail = g;
    e->notify_pending = true;
}

/* Make the staged ENDs drainable. Called after publish_stats, so whoever drains an END finds the
 * request counted in xd_engine_stats (requests_ok, tokens, ...): no reader sees a finished
 * request that the counters do not yet include. */
static void post_ends(struct xd_engine *e) {
    if (!e->staged_head) return;
    pthread_mutex_lock(&e->mbox_mu);
    if (e->end_tail) e->end_tail->next = e->staged_head;
    else e->end_head = e->staged_head;
    e->end_tail = e->staged_tail;
    pthread_mutex_unlock(&e->mbox_mu);
    e->staged_head = e->staged_tail = NULL;
}

size_t xd_engine_drain(struct xd_engine *e, xd_gen_event_cb cb, void *arg) {
    pthread_mutex_lock(&e->mbox_mu);
    struct mail *box = e->mbox;
    size_t n = e->n_mbox;
    struct xd_gen *ends = e->end_head;
    e->mbox = NULL;
    e->n_mbox = e->cap_mbox = 0;
    e->end_head = e->end_tail = NULL;
    pthread_mutex_unlock(&e->mbox_mu);
    size_t count = n;
    for (size_t k = 0; k < n; k++) {
        cb(&box[k].ev, arg);
        free(box[k].text);
    }
    free(box);
    while (ends) {
        struct xd_gen *g = ends;
        ends = g->next; /* read first: the callback may destroy g */
        struct xd_gen_event ev = {.kind = XD_GEN_END, .gen = g, .user = g->user,
                                  .status = g->info.status};
        cb(&ev, arg);
        count++;
    }
    return count;
}

/* ---- slots and retirement (engine thread) --------------------------------------------------- */

/* Frees g's slots and sampler state, removes it from the running list and emits END. */
static void release_slots(struct xd_engine *e, struct xd_gen *g);
static void running_remove(struct xd_engine *e, struct xd_gen *g);

static void retire(struct xd_engine *e, struct xd_gen *g, int status) {
    release_slots(e, g);
    xd__gen_stop(g);
    running_remove(e, g);
    emit_end(e, g, status);
}

/* A sequence of n > 1 that waits for sequence 0 to prefill the prompt they share. */
static bool is_follower(const struct xd_gen *g, int32_t i) {
    return g->share_prompt && i > 0 && g->seq[i].state == XD_SEQ_PREFILL;
}

/* Positions sequence i must have stored before it samples next: the prompt (PREFILL), or all
 * before its next token (DECODE; more than n_past while it recomputes after a preemption). */
static int32_t seq_target(const struct xd_gen *g, int32_t i) {
    const struct xd_seq *s = &g->seq[i];
    if (s->state == XD_SEQ_DECODE) return g->n_prompt + s->n_gen - 1;
    if (s->state == XD_SEQ_PREFILL && !is_follower(g, i)) return g->n_prompt;
    return 0;
}

/* KV blocks g will still take before each of its sequences has sampled once more: up to its
 * target and the next decode position; a follower takes a copy of the shared partial block. */
static int32_t gen_blocks_to_come(const struct xd_engine *e, const struct xd_gen *g) {
    const struct xd_kv *kv = xd_ctx_kv(e->ctx);
    int32_t need = 0;
    for (int32_t i = 0; i < g->p.n; i++) {
        const struct xd_seq *s = &g->seq[i];
        if (s->state == XD_SEQ_DONE) continue;
        if (is_follower(g, i)) {
            need++;
            continue;
        }
        int32_t b = xd_kv_blocks_for(seq_target(g, i) + 1);
        if (s->slot >= 0) b -= xd_kv_seq_blocks(kv, s->slot);
        need += b > 0 ? b : 0;
    }
    return need;
}

/* Gives back g's slots and KV. */
static void release_slots(struct xd_engine *e, struct xd_gen *g) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    for (int32_t i = 0; i < g->p.n; i++) {
        struct xd_seq *s = &g->seq[i];
        if (s->slot < 0) continue;
        xd_kv_seq_truncate(kv, s->slot, 0);
        e->slot_busy[s->slot] = false;
        e->n_free++;
        s->slot = -1;
        s->n_past = 0;
    }
}

static void running_remove(struct xd_engine *e, struct xd_gen *g) {
    for (int32_t k = 0; k < e->n_running; k++) {
        if (e->running[k] != g) continue;
        memmove(&e->running[k], &e->running[k + 1],
                (size_t)(e->n_running - k - 1) * sizeof *e->running);
        e->n_running--;
        return;
    }
}

/* Drops g's entries from the step's batch ent[0..*n). */
static void entries_drop(struct xd_engine *e, const struct xd_gen *g, int32_t *n) {
    int32_t m = 0;
    for (int32_t k = 0; k < *n; k++)
        if (e->ent[k].g != g) e->ent[m++] = e->ent[k];
    *n = m;
}

/* RUNNING -> PREEMPTED: frees g's KV and slots, keeps its sampling state, and puts it back at
 * the head of the queue, where it is readmitted first. */
static void preempt(struct xd_engine *e, struct xd_gen *g, int32_t *n) {
    entries_drop(e, g, n);
    release_slots(e, g);
    running_remove(e, g);
    g->state = XD_GEN_PREEMPTED;
    e->st.preemptions++;
    pthread_mutex_lock(&e->mu);
    g->next = e->q_head;
    e->q_head = g;
    if (!e->q_tail) e->q_tail = g;
    e->n_waiting++;
    pthread_mutex_unlock(&e->mu);
}

/* Makes positions up to pos_end of g's sequence in slot writable, preempting the most
 * recently admitted requests until the blocks are there. False when g itself was preempted,
 * or failed (it could not fit alone: g->info.status set); its entries are then dropped. */
static bool kv_reserve(struct xd_engine *e, struct xd_gen *g, int32_t slot, int32_t pos_end,
                       int32_t *n) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    for (;;) {
        int rc = xd_kv_seq_reserve(kv, slot, pos_end);
        if (!rc) return true;
        struct xd_gen *victim = e->running[e->n_running - 1];
        if (rc != -ENOSPC || (victim == g && e->n_running == 1)) {
            entries_drop(e, g, n);
            g->info.status = rc;
            return false;
        }
        if (victim->info.status) { /* failed this step: its blocks go back now */
            entries_drop(e, victim, n);
            retire(e, victim, victim->info.status);
        } else {
            preempt(e, victim, n);
        }
        if (victim == g) return false;
    }
}

/* Takes requests off the queue while the one at the head fits in the free slots and the KV
 * pool (a request that is alone always gets in: submit checked that it fits then). */
static void engine_admit(struct xd_engine *e) {
    struct xd_gen *admitted = NULL, **tail = &admitted, *cancelled = NULL;
    struct xd_kv_usage ku;
    xd_kv_usage(xd_ctx_kv(e->ctx), &ku);
    int64_t kv_avail = ku.n_blocks - ku.n_used;
    for (int32_t r = 0; r < e->n_running; r++) kv_avail -= gen_blocks_to_come(e, e->running[r]);
    int32_t n_running = e->n_running;
    pthread_mutex_lock(&e->mu);
    /* cancelled requests leave the queue wherever they are */
    for (struct xd_gen **pp = &e->q_head; *pp;) {
        struct xd_gen *g = *pp;
        if (atomic_load(&g->cancel)) {
            *pp = g->next;
            e->n_waiting--;
            g->next = cancelled;
            cancelled = g;
        } else {
            pp = &g->next;
        }
    }
    e->q_tail = NULL;
    for (struct xd_gen *g = e->q_head; g; g = g->next) e->q_tail = g;
    int32_t free_slots = e->n_free;
    while (e->q_head && e->q_head->p.n <= free_slots) {
        struct xd_gen *g = e->q_head;
        const int32_t need = gen_blocks_to_come(e, g);
        if (n_running > 0 && need > kv_avail) break;
        kv_avail -= need;
        n_running++;
        e->q_head = g->next;
        if (!e->q_head) e->q_tail = NULL;
        e->n_waiting--;
        free_slots -= g->p.n;
        g->next = NULL;
        *tail = g;
        tail = &g->next;
    }
    pthread_mutex_unlock(&e->mu);
    while (cancelled) {
        struct xd_gen *g = cancelled;
        cancelled = g->next;
        xd__gen_stop(g); /* a preempted request still holds its samplers */
        emit_end(e, g, -ECANCELED);
    }
    while (admitted) {
        struct xd_gen *g = admitted;
        admitted = g->next;
        int32_t *sl = malloc((size_t)g->p.n * sizeof *sl);
        int rc = sl ? 0 : XD_E_NOMEM;
        for (int32_t i = 0, s = 0; i < g->p.n && !rc; i++) {
            while (e->slot_busy[s]) s++;
            sl[i] = s++;
        }
        if (!rc && g->state == XD_GEN_PREEMPTED) { /* resumes: recomputes its positions */
            for (int32_t i = 0; i < g->p.n; i++) g->seq[i].slot = sl[i];
            g->state = XD_GEN_RUNNING;
        } else if (!rc) {
            rc = xd__gen_start(g, e->m->tok, e->n_vocab, sl);
        }
        if (rc) {
            free(sl);
            xd__gen_stop(g);
            emit_end(e, g, rc);
            continue;
        }
        for (int32_t i = 0; i < g->p.n; i++) e->slot_busy[sl[i]] = true;
        free(sl);
        e->n_free -= g->p.n;
        if (!g->info.t_admit) g->info.t_admit = now_ns();
        e->running[e->n_running++] = g;
    }
}

/* ---- one step ------------------------------------------------------------------------------- */

/* Samples sequence i of g from its logits row (or ends it: max_tokens 0); a sequence that is
 * done gives its KV blocks back at once. */
static int sample_seq(struct xd_engine *e, struct xd_gen *g, int32_t i, const float *lg) {
    int st;
    if (g->p.max_tokens == 0) {
        st = xd__seq_finish_length(g, i, emit, e);
    } else {
        int64_t before = g->info.n_generated;
        st = xd__seq_sample(g, i, lg, e->m->tok, xd_kv_n_ctx(xd_ctx_kv(e->ctx)), emit, e);
        e->st.generated_tokens += (uint64_t)(g->info.n_generated - before);
        if (!g->info.t_first_token) g->info.t_first_token = now_ns();
    }
    if (g->seq[i].state == XD_SEQ_DONE) xd_kv_seq_truncate(xd_ctx_kv(e->ctx), g->seq[i].slot, 0);
    return st;
}

/* Sequence 0 of g has run its prompt's last position (row lg): the waiting sequences take the
 * prompt's KV blocks by reference - before sequence 0 samples, as a sequence that is done at
 * once gives its blocks back - then all sample their first tokens from the same row. */
static int sample_first(struct xd_engine *e, struct xd_gen *g, const float *lg) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    for (int32_t j = 1; j < g->p.n; j++) {
        struct xd_seq *f = &g->seq[j];
        if (f->state != XD_SEQ_PREFILL) continue;
        int st = xd_kv_seq_share(kv, f->slot, g->seq[0].slot, g->n_prompt);
        if (st) return st;
        f->n_past = f->n_hw = g->n_prompt;
    }
    int st = sample_seq(e, g, 0, lg);
    for (int32_t j = 1; j < g->p.n && !st; j++)
        if (g->seq[j].state == XD_SEQ_PREFILL) st = sample_seq(e, g, j, lg);
    return st;
}

/* Prefix sharing across requests: sequence i of g, about to compute its positions from 0
 * (a new prompt, or a recompute after preemption), takes by reference the full blocks of the
 * longest prefix it has in common with what some running sequence has stored - the same tokens
 * at the same positions give the same K/V rows, so nothing changes but the work. Full blocks
 * only: they are never written again, so no copy is ever made of them. Not done when the
 * prompt's logprobs are wanted (those rows must run) or when the backend keeps its own K/V.
 * Rejected: a hash table of blocks kept after their sequences end (vLLM's automatic prefix
 * caching) - it needs an eviction order for cached-but-free blocks; this finds the running
 * ones by a scan of the running sequences, which costs nothing next to a forward pass.
 * Returns the positions taken. */
static int32_t share_prefix(struct xd_engine *e, struct xd_gen *g, int32_t i) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    struct xd_seq *s = &g->seq[i];
    if (!e->kv_on_host || s->n_past || xd_kv_seq_blocks(kv, s->slot)) return 0;
    if (g->p.prompt_logprobs && s->state == XD_SEQ_PREFILL) return 0;
    /* a prompt's last position must run: it samples */
    const int32_t cap = s->state == XD_SEQ_PREFILL ? g->n_prompt - 1 : seq_target(g, i);
    int32_t best = 0, best_slot = -1;
    for (int32_t r = 0; r < e->n_running && cap >= XD_KV_BLOCK; r++) {
        const struct xd_gen *h = e->running[r];
        for (int32_t j = 0; j < h->p.n; j++) {
            const struct xd_seq *src = &h->seq[j];
            if (src->slot < 0 || src == s) continue;
            const int32_t len = xd_kv_seq_len(kv, src->slot), lim = len < cap ? len : cap;
            if (lim / XD_KV_BLOCK * XD_KV_BLOCK <= best) continue;
            int32_t m = 0;
            while (m < lim && xd__seq_token_at(h, j, m) == xd__seq_token_at(g, i, m)) m++;
            m = m / XD_KV_BLOCK * XD_KV_BLOCK;
            if (m > best) best = m, best_slot = src->slot;
        }
    }
    if (!best || xd_kv_seq_share(kv, s->slot, best_slot, best)) return 0;
    s->n_past = best;
    if (s->n_hw < best) s->n_hw = best;
    e->st.prefix_shared_tokens += (uint64_t)best;
    return best;
}

/* Runs ent[0..n) as one batch and handles every logits row. Returns the xd_forward error (then
 * nothing has advanced: the caller truncates). An error of the sampling pipeline fails only its
 * request: it is recorded in g->info.status, and the caller retires the request. */
static int run_entries(struct xd_engine *e, const struct entry *ent, int32_t n) {
    for (int32_t k = 0; k < n; k++) {
        e->b_tok[k] = ent[k].token;
        e->b_pos[k] = ent[k].pos;
        e->b_seq[k] = ent[k].g->seq[ent[k].i].slot;
        e->b_logits[k] = ent[k].kind != ENT_PLAIN;
    }
    struct xd_batch b = {.n_tokens = n, .token = e->b_tok, .pos = e->b_pos, .seq = e->b_seq,
                         .logits = e->b_logits};
    int rc = xd_forward(e->ctx, &b, e->logits);
    if (rc) return rc;
    for (int32_t k = 0; k < n; k++) {
        struct xd_seq *s = &ent[k].g->seq[ent[k].i];
        if (ent[k].pos < s->n_hw) e->st.recomputed_tokens++;
        else if (s->state == XD_SEQ_PREFILL) e->st.prompt_tokens++;
        if (ent[k].pos + 1 > s->n_past) s->n_past = ent[k].pos + 1;
        if (s->n_past > s->n_hw) s->n_hw = s->n_past;
    }
    int64_t row = 0;
    for (int32_t k = 0; k < n; k++) {
        if (ent[k].kind == ENT_PLAIN) continue;
        const float *lg = e->logits + row++ * e->n_vocab;
        struct xd_gen *g = ent[k].g;
        if (g->info.status) continue; /* failed earlier in this step */
        int st = 0;
        if (ent[k].kind == ENT_PROMPT_LP) {
            struct xd_gen_event ev = {.kind = XD_GEN_PROMPT_LOGPROB, .gen = g, .user = g->user,
                                      .index = ent[k].i, .pos = ent[k].pos + 1,
                                      .token = g->prompt[ent[k].pos + 1], .has_logprobs = true};
            xd_logprobs_compute(lg, e->n_vocab, ev.token, g->p.sampler.n_logprobs, &ev.lp);
            st = emit(e, &ev);
            g->lp_next = ent[k].pos + 2;
        } else {
            if (g->seq[ent[k].i].state == XD_SEQ_PREFILL && g->share_prompt)
                st = sample_first(e, g, lg); /* ent[k].i is 0: followers run no rows */
            else
                st = sample_seq(e, g, ent[k].i, lg);
        }
        if (st) g->info.status = st;
    }
    return 0;
}

/* Undo a failed batch: forget every position the batch may have stored. */
static void truncate_entries(struct xd_engine *e, const struct entry *ent, int32_t n) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    for (int32_t k = 0; k < n; k++) {
        const struct xd_seq *s = &ent[k].g->seq[ent[k].i];
        xd_kv_seq_truncate(kv, s->slot, s->n_past);
    }
}

/* Slots: every busy slot belongs to exactly one running sequence, free ones to none; every
 * running request is consistent; a sequence's KV never runs ahead of what it has computed;
 * the KV cache's own invariants hold. For assert() after each step. */
__attribute__((unused)) static bool engine_check_invariants(const struct xd_engine *e) {
    const struct xd_kv *kv = xd_ctx_kv(e->ctx);
    int32_t busy = 0;
    for (int32_t s = 0; s < e->p.n_parallel; s++) busy += e->slot_busy[s];
    if (busy != e->p.n_parallel - e->n_free) return false;
    int32_t owned = 0;
    for (int32_t r = 0; r < e->n_running; r++) {
        const struct xd_gen *g = e->running[r];
        if (g->state != XD_GEN_RUNNING || !xd_gen_check_invariants(g)) return false;
        for (int32_t i = 0; i < g->p.n; i++) {
            const struct xd_seq *s = &g->seq[i];
            if (!e->slot_busy[s->slot]) return false;
            if (s->state != XD_SEQ_DONE && xd_kv_seq_len(kv, s->slot) != s->n_past) return false;
            owned++;
        }
    }
    return owned == busy && xd_kv_check_invariants(kv);
}

/* Whether this step runs decodes only, holding prompt chunks back (prefill_hold): the cache
 * is offloaded, its slots can hold what the decodes touched in their last decode-only step,
 * some prompt chunk is pending, and it has waited fewer than prefill_hold steps in a row. A
 * prefill touches nearly every expert; held chunks run together in the step after the wait,
 * so one sweep of expert reads serves all of them, and the decodes keep hitting in between.
 * Bounded: a chunk waits at most prefill_hold steps. */
static bool hold_prefill(struct xd_engine *e, int32_t n_decode) {
    if (e->p.prefill_hold <= 0 || e->xc_slots <= 0 || n_decode == 0 || e->decode_set == 0 ||
        e->decode_set > (uint64_t)e->xc_slots || e->held >= e->p.prefill_hold) {
        e->held = 0;
        return false;
    }
    bool pending = false;
    for (int32_t r = 0; r < e->n_running && !pending; r++) {
        struct xd_gen *g = e->running[r];
        if (g->info.status) continue;
        for (int32_t i = 0; i < g->p.n && !pending; i++) {
            const struct xd_seq *s = &g->seq[i];
            pending = s->state != XD_SEQ_DONE && s->n_past < seq_target(g, i);
        }
    }
    if (!pending) {
        e->held = 0;
        return false;
    }
    e->held++;
    e->st.prefill_holds++;
    return true;
}

static void engine_step(struct xd_engine *e) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    for (int32_t k = e->n_running - 1; k >= 0; k--)
        if (atomic_load(&e->running[k]->cancel)) retire(e, e->running[k], -ECANCELED);

    /* decodes first: every sequence at its sampling point runs one position */
    int32_t n = 0;
    for (int32_t r = 0; r < e->n_running; r++) {
        struct xd_gen *g = e->running[r];
        for (int32_t i = 0; i < g->p.n; i++) {
            struct xd_seq *s = &g->seq[i];
            if (s->state != XD_SEQ_DECODE || s->n_past != seq_target(g, i)) continue;
            if (!kv_reserve(e, g, s->slot, s->n_past + 1, &n)) break;
            e->ent[n++] = (struct entry){g, i, s->next, s->n_past, ENT_SAMPLE};
        }
    }
    /* then prompt chunks and recomputations, in admission order, cut to the budget and to the
     * free KV room (no preemption for a prefill) - unless they are held back this step */
    const int32_t n_decode = n;
    int32_t budget = hold_prefill(e, n_decode) ? 0 : e->p.step_tokens - n;
    for (int32_t r = 0; r < e->n_running && budget > 0; r++) {
        struct xd_gen *g = e->running[r];
        if (g->info.status) continue;
        for (int32_t i = 0; i < g->p.n && budget > 0; i++) {
            struct xd_seq *s = &g->seq[i];
            const int32_t target = seq_target(g, i);
            if (s->state == XD_SEQ_DONE || s->n_past >= target) continue;
            if (s->n_past == 0 && share_prefix(e, g, i) && s->n_past >= target) continue;
            int32_t take = target - s->n_past < budget ? target - s->n_past : budget;
            const int32_t room = xd_kv_seq_room(kv, s->slot);
            take = take < room ? take : room;
            if (take <= 0 || xd_kv_seq_reserve(kv, s->slot, s->n_past + take)) continue;
            for (int32_t t = 0; t < take; t++) {
                const int32_t pos = s->n_past + t;
                enum entry_kind kind = ENT_PLAIN;
                if (s->state == XD_SEQ_PREFILL) {
                    if (pos == g->n_prompt - 1) kind = ENT_SAMPLE;
                    else if (g->p.prompt_logprobs && i == 0 && pos + 1 >= g->lp_next)
                        kind = ENT_PROMPT_LP;
                }
                e->ent[n++] = (struct entry){g, i, xd__seq_token_at(g, i, pos), pos, kind};
            }
            budget -= take;
        }
    }
    bool failed = false; /* failing requests free their blocks below */
    for (int32_t r = 0; r < e->n_running; r++) failed |= e->running[r]->info.status != 0;
    if (n == 0 && !failed && e->n_running > 1) {
        /* nothing fits: the newest request makes room for the older ones */
        preempt(e, e->running[e->n_running - 1], &n);
    } else if (n == 0 && !failed && e->n_running == 1) {
        struct xd_gen *g = e->running[0]; /* all done: retired below; else it cannot fit */
        if (g->n_done < g->p.n) g->info.status = -ENOSPC;
    }
    if (n > 0) {
        e->st.steps++;
        const uint64_t touched0 = xd_ctx_stats(e->ctx)->experts_touched;
        int rc = run_entries(e, e->ent, n);
        if (rc) {
            /* isolate: rerun each request's part alone; only the ones that fail again fail */
            e->st.forward_failures++;
            truncate_entries(e, e->ent, n);
            for (int32_t k = 0; k < n; k++) {
                struct xd_gen *g = e->ent[k].g;
                bool seen = false;
                for (int32_t j = 0; j < k && !seen; j++) seen = e->ent[j].g == g;
                if (seen) continue;
                int32_t m = 0;
                for (int32_t j = k; j < n; j++)
                    if (e->ent[j].g == g) e->sub[m++] = e->ent[j];
                int rc2 = m == n ? rc : run_entries(e, e->sub, m);
                if (rc2) {
                    if (m != n) e->st.forward_failures++;
                    truncate_entries(e, e->sub, m);
                    g->info.status = rc2;
                }
            }
        }
        e->st.experts_last_step = xd_ctx_stats(e->ctx)->experts_touched - touched0;
        if (n == n_decode) e->decode_set = e->st.experts_last_step;
        if (e->m->moe) xd_stats_hist_add(e->st.experts_per_step, e->st.experts_last_step);
    }
    for (int32_t k = e->n_running - 1; k >= 0; k--) {
        struct xd_gen *g = e->running[k];
        if (g->info.status) retire(e, g, g->info.status);
        else if (g->n_done == g->p.n) retire(e, g, 0);
    }
    assert(engine_check_invariants(e));
}

static void publish_stats(struct xd_engine *e) {
    struct xd_engine_stats s = e->st;
    s.fwd = *xd_ctx_stats(e->ctx);
    struct xd_xc *xc = xd_ctx_xc(e->ctx);
    if (xc) xd_xc_stats_get(xc, &s.xc); /* consistent: the I/O threads update it too */
    s.running = e->n_running;
    s.slots_used = e->p.n_parallel - e->n_free;
    struct xd_kv_usage ku;
    xd_kv_usage(xd_ctx_kv(e->ctx), &ku);
    s.kv_block_size = ku.block_size;
    s.kv_blocks_total = ku.n_blocks;
    s.kv_blocks_used = ku.n_used;
    s.kv_blocks_shared = ku.n_shared;
    s.kv_bytes_used = (uint64_t)ku.n_used * ku.block_bytes;
    s.kv_cow_copies = ku.cow_copies;
    pthread_mutex_lock(&e->mu);
    s.waiting = e->n_waiting;
    e->snap = s;
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg) {
    struct xd_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && e->n_running == 0 && !e->q_head) pthread_cond_wait(&e->cv, &e->mu);
        bool stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        engine_admit(e);
        engine_step(e);
        publish_stats(e);
        post_ends(e);
        if (e->notify_pending && e->p.notify) e->p.notify(e->p.notify_arg);
        e->notify_pending = false;
    }
    while (e->n_running) retire(e, e->running[e->n_running - 1], -ECANCELED);
    pthread_mutex_lock(&e->mu);
    struct xd_gen *q = e->q_head;
    e->q_head = e->q_tail = NULL;
    e->n_waiting = 0;
    pthread_mutex_unlock(&e->mu);
    while (q) {
        struct xd_gen *g = q;
        q = g->next;
        xd__gen_stop(g);
        emit_end(e, g, -ECANCELED);
    }
    publish_stats(e);
    post_ends(e);
    if (e->notify_pending && e->p.notify) e->p.notify(e->p.notify_arg);
    return NULL;
}

/* ---- public API ----------------------------------------------------------------------------- */

int xd_engine_create(const struct xd_model *m, const struct xd_engine_params *p,
                     struct xd_engine **out, char *err, size_t errlen) {
    struct xd_engine_params d = p ? *p : (struct xd_engine_params){0};
    if (d.n_parallel <= 0) d.n_parallel = 4;
    if (d.step_tokens <= 0) d.step_tokens = 512;
    if (d.step_tokens < d.n_parallel) d.step_tokens = d.n_parallel;
    if (d.max_waiting <= 0) d.max_waiting = 64;
    struct xd_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return XD_E_NOMEM;
    }
    e->m = m;
    e->n_vocab = (int32_t)m->hp.n_vocab;
    struct xd_ctx_params cp = {.n_ctx = d.n_ctx, .n_seq = d.n_parallel,
                               .n_batch = d.step_tokens, .ops = d.ops, .xc = d.xc,
                               .backend = d.backend, .n_threads = d.n_threads,
                               .kv_bytes = d.kv_bytes, .no_repack = d.no_repack};
    int rc = xd_ctx_create(m, &cp, &e->ctx, err, errlen);
    if (rc) {
        free(e);
        return rc;
    }
    d.n_ctx = xd_kv_n_ctx(xd_ctx_kv(e->ctx));
    e->p = d;
    if (d.xc) {
        struct xd_xc_info xi;
        xd_xc_info(d.xc, &xi);
        e->xc_slots = xi.offloaded ? xi.n_slots : 0;
    }
    e->cap_ent = d.step_tokens + d.n_parallel;
    size_t ne = (size_t)e->cap_ent;
    e->running = calloc((size_t)d.n_parallel, sizeof *e->running);
    e->slot_busy = calloc((size_t)d.n_parallel, sizeof *e->slot_busy);
    e->ent = calloc(ne, sizeof *e->ent);
    e->sub = calloc(ne, sizeof *e->sub);
    e->b_tok = calloc(ne, sizeof *e->b_tok);
    e->b_pos = calloc(ne, sizeof *e->b_pos);
    e->b_seq = calloc(ne, sizeof *e->b_seq);
    e->b_logits = calloc(ne, sizeof *e->b_logits);
    e->logits = calloc(ne * (size_t)e->n_vocab, sizeof *e->logits);
    e->n_free = d.n_parallel;
    e->st.n_parallel = d.n_parallel;
    e->st.n_ctx = d.n_ctx;
    e->st.kv_bytes = xd_kv_bytes(xd_ctx_kv(e->ctx));
    struct xd_kv_usage ku;
    xd_kv_usage(xd_ctx_kv(e->ctx), &ku);
    e->kv_blocks = ku.n_blocks;
    e->kv_on_host = xd_ctx_kv_on_host(e->ctx);
    e->st.kv_block_size = ku.block_size;
    e->st.kv_blocks_total = ku.n_blocks;
    e->snap = e->st;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->mbox_mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (!e->running || !e->slot_busy || !e->ent || !e->sub || !e->b_tok || !e->b_pos ||
        !e->b_seq || !e->b_logits || !e->logits) {
        xd_engine_destroy(e);
        snprintf(err, errlen, "out of memory for the engine's batch of %d tokens", e->cap_ent);
        return XD_E_NOMEM;
    }
    if ((rc = pthread_create(&e->thread, NULL, engine_main, e))) {
        xd_engine_destroy(e);
        snprintf(err, errlen, "cannot start the engine thread");
        return -rc;
    }
    e->started = true;
    *out = e;
    return 0;
}

int xd_engine_submit(struct xd_engine *e, struct xd_gen *g) {
    if (g->state != XD_GEN_CREATED) return XD_E_INVALID;
    if (g->p.n > e->p.n_parallel) return XD_E_INVALID;
    if (g->p.sampler.n_logprobs < 0 || g->p.sampler.n_logprobs > XD_LOGPROBS_MAX)
        return XD_E_INVALID;
    for (int32_t t = 0; t < g->n_prompt; t++)
        if (g->prompt[t] < 0 || g->prompt[t] >= e->n_vocab) return XD_E_INVALID;
    if ((int64_t)g->n_prompt + g->p.max_tokens > e->p.n_ctx) return XD_E_CONTEXT;
    /* alone it must fit in the KV pool even unshared (a preempted n > 1 recomputes apart) */
    if ((int64_t)g->p.n * xd_kv_blocks_for(g->n_prompt + g->p.max_tokens) > e->kv_blocks)
        return XD_E_CONTEXT;
    g->share_prompt = g->p.n > 1 && xd_ctx_kv_on_host(e->ctx); /* fixed after create */
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    if (e->stop) rc = -ESHUTDOWN;
    else if (e->n_waiting >= e->p.max_waiting) rc = -EAGAIN;
    if (!rc) {
        g->state = XD_GEN_QUEUED;
        g->info.t_submit = now_ns();
        g->next = NULL;
        if (e->q_tail) e->q_tail->next = g;
        else e->q_head = g;
        e->q_tail = g;
        e->n_waiting++;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void xd_engine_cancel(struct xd_engine *e, struct xd_gen *g) {
    atomic_store(&g->cancel, true);
    pthread_mutex_lock(&e->mu);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

struct xd_xc *xd_engine_xc(struct xd_engine *e) { return xd_ctx_xc(e->ctx); }

void xd_engine_stats(struct xd_engine *e, struct xd_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->snap;
    out->waiting = e->n_waiting; /* exact: the server's 429 decision reads it */
    pthread_mutex_unlock(&e->mu);
}

void xd_engine_shutdown(struct xd_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    e->started = false;
}

void xd_engine_destroy(struct xd_engine *e) {
    if (!e) return;
    xd_engine_shutdown(e);
    for (size_t k = 0; k < e->n_mbox; k++) free(e->mbox[k].text);
    free(e->mbox);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->mbox_mu);
    pthread_cond_destroy(&e->cv);
    xd_ctx_destroy(e->ctx);
    free(e->running);
    free(e->slot_busy);
    free(e->ent);
    free(e->sub);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_logits);
    free(e->logits);
    free(e);
}
