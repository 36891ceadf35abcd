/* engine.c - the engine thread: a waiting queue, sequence slots, and an iteration-level step.
 *
 * Each step (engine_step) does, in order: retire cancelled requests; build one batch from the
 * next token of every decoding sequence, then chunks of pending prompts in admission order until
 * the step's token budget is spent; run xd_forward once; advance the sequences and sample every
 * row that needs it (engine_gen.c); retire requests whose sequences are all done. Admission
 * (engine_admit) happens between steps: requests leave the queue strictly first-come first-
 * served, each when as many slots are free as it has sequences - a large n at the head waits
 * for slots rather than being overtaken (no starvation; the cost is some idle slots meanwhile).
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
 * Not here (issue 6): paged KV, preemption, prefix sharing (n sequences each prefill their own
 * copy of the prompt), cache-aware admission.
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
    struct xd_gen **running; /* admission order */
    int32_t n_running;
    bool *slot_busy;
    int32_t n_free;
    struct entry *ent, *sub; /* the step's batch; a request's part of it */
    int32_t cap_ent;
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_logits;
    float *logits;
    bool notify_pending;
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
    pthread_mutex_lock(&e->mbox_mu);
    if (e->end_tail) e->end_tail->next = g;
    else e->end_head = g;
    e->end_tail = g;
    pthread_mutex_unlock(&e->mbox_mu);
    e->notify_pending = true;
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
static void retire(struct xd_engine *e, struct xd_gen *g, int status) {
    struct xd_kv *kv = xd_ctx_kv(e->ctx);
    for (int32_t i = 0; i < g->p.n; i++) {
        int32_t slot = g->seq[i].slot;
        if (slot < 0) continue;
        xd_kv_seq_truncate(kv, slot, 0);
        e->slot_busy[slot] = false;
        e->n_free++;
    }
    xd__gen_stop(g);
    for (int32_t k = 0; k < e->n_running; k++) {
        if (e->running[k] != g) continue;
        memmove(&e->running[k], &e->running[k + 1],
                (size_t)(e->n_running - k - 1) * sizeof *e->running);
        e->n_running--;
        break;
    }
    emit_end(e, g, status);
}

/* Takes requests off the queue while the one at the head fits in the free slots. */
static void engine_admit(struct xd_engine *e) {
    struct xd_gen *admitted = NULL, **tail = &admitted, *cancelled = NULL;
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
        if (!rc) rc = xd__gen_start(g, e->m->tok, e->n_vocab, sl);
        if (rc) {
            free(sl);
            emit_end(e, g, rc);
            continue;
        }
        for (int32_t i = 0; i < g->p.n; i++) e->slot_busy[sl[i]] = true;
        free(sl);
        e->n_free -= g->p.n;
        g->info.t_admit = now_ns();
        e->running[e->n_running++] = g;
    }
}

/* ---- one step ------------------------------------------------------------------------------- */

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
        if (ent[k].pos + 1 > s->n_past) s->n_past = ent[k].pos + 1;
        if (s->state == XD_SEQ_PREFILL) e->st.prompt_tokens++;
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
        } else if (g->p.max_tokens == 0) {
            st = xd__seq_finish_length(g, ent[k].i, emit, e);
        } else {
            int64_t before = g->info.n_generated;
            st = xd__seq_sample(g, ent[k].i, lg, e->m->tok, xd_kv_n_ctx(xd_ctx_kv(e->ctx)),
                                emit, e);
            e->st.generated_tokens += (uint64_t)(g->info.n_generated - before);
            if (!g->info.t_first_token) g->info.t_first_token = now_ns();
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
 * running request is consistent. For assert() after each step. */
__attribute__((unused)) static bool engine_check_invariants(const struct xd_engine *e) {
    int32_t busy = 0;
    for (int32_t s = 0; s < e->p.n_parallel; s++) busy += e->slot_busy[s];
    if (busy != e->p.n_parallel - e->n_free) return false;
    int32_t owned = 0;
    for (int32_t r = 0; r < e->n_running; r++) {
        const struct xd_gen *g = e->running[r];
        if (g->state != XD_GEN_RUNNING || !xd_gen_check_invariants(g)) return false;
        for (int32_t i = 0; i < g->p.n; i++) {
            if (!e->slot_busy[g->seq[i].slot]) return false;
            owned++;
        }
    }
    return owned == busy;
}

static void engine_step(struct xd_engine *e) {
    for (int32_t k = e->n_running - 1; k >= 0; k--)
        if (atomic_load(&e->running[k]->cancel)) retire(e, e->running[k], -ECANCELED);

    int32_t n = 0, budget = e->p.step_tokens;
    for (int32_t r = 0; r < e->n_running; r++) {
        struct xd_gen *g = e->running[r];
        for (int32_t i = 0; i < g->p.n; i++) {
            struct xd_seq *s = &g->seq[i];
            if (s->state != XD_SEQ_DECODE) continue;
            e->ent[n++] = (struct entry){g, i, s->next, s->n_past, ENT_SAMPLE};
            budget--;
        }
    }
    for (int32_t r = 0; r < e->n_running && budget > 0; r++) {
        struct xd_gen *g = e->running[r];
        for (int32_t i = 0; i < g->p.n && budget > 0; i++) {
            struct xd_seq *s = &g->seq[i];
            if (s->state != XD_SEQ_PREFILL) continue;
            int32_t take = g->n_prompt - s->n_past < budget ? g->n_prompt - s->n_past : budget;
            for (int32_t t = 0; t < take; t++) {
                int32_t pos = s->n_past + t;
                enum entry_kind kind = ENT_PLAIN;
                if (pos == g->n_prompt - 1) kind = ENT_SAMPLE;
                else if (g->p.prompt_logprobs && i == 0) kind = ENT_PROMPT_LP;
                e->ent[n++] = (struct entry){g, i, g->prompt[pos], pos, kind};
            }
            budget -= take;
        }
    }
    if (n == 0) return;
    e->st.steps++;

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
    if (xc) s.xc = *xd_xc_stats(xc);
    s.running = e->n_running;
    s.slots_used = e->p.n_parallel - e->n_free;
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
        emit_end(e, g, -ECANCELED);
    }
    publish_stats(e);
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
                               .n_batch = d.step_tokens, .ops = d.ops, .xc = d.xc};
    int rc = xd_ctx_create(m, &cp, &e->ctx, err, errlen);
    if (rc) {
        free(e);
        return rc;
    }
    d.n_ctx = xd_kv_n_ctx(xd_ctx_kv(e->ctx));
    e->p = d;
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
