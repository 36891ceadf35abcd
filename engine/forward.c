/* forward.c - the transformer forward pass over a batch of tokens (Mixtral, Qwen3-MoE, llama).
 *
 * Reads like llama2.c's forward(), one op per line with shapes, but batch-first: activations
 * are [n x dim] matrices, so the matmuls are GEMMs that degrade to GEMV at one token. The MoE
 * layer routes every token, groups the batch's tokens by expert, acquires each selected expert
 * once from the expert cache, runs it over all of its tokens, and writes each token's expert
 * outputs into per-(token, slot) rows that are summed in slot order at the end — so the order
 * in which experts run (resident first, streamed later) never changes a single bit.
 *
 * Scratch memory is sized once for n_batch tokens at context creation; larger batches are
 * processed in chunks of n_batch (their K/V is stored chunk by chunk, so causality holds).
 */
#include "forward.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"
#include "xd_error.h"
#ifdef XD_HAVE_CUDA
#include "xd_cuda.h"
#endif

struct xd_ctx {
    const struct xd_model *m;
    const struct xd_ops *ops;
    struct xd_backend *be; /* owned: threads, kernels and scratch of the ops */
    struct xd_kv *kv;
    struct xd_xc *xc;
    bool own_xc;
    int32_t n_batch;
    struct xd_stats stats;
    /* scratch, sized for n_batch tokens */
    float *x;        /* [n x d_model] residual stream */
    float *xb;       /* [n x d_model] normed input of a block */
    float *xb2;      /* [n x d_model] block output */
    float *q;        /* [n x n_head*head_dim] */
    float *k, *v;    /* [n x n_head_kv*head_dim] */
    float *att;      /* [n x n_head*head_dim] */
    float *router;   /* [n x n_expert] */
    int32_t *sel;    /* [n x k] selected experts */
    float *selw;     /* [n x k] their weights */
    float *slot_out; /* [n x k x d_model] */
    int32_t *order;  /* [n x k] (token, slot) pairs grouped by expert */
    int32_t *count;  /* [n_expert + 1] */
    float *xg;       /* [n x d_model] gathered expert inputs */
    float *hg, *hu;  /* [n x ff] gate and up projections */
    float *yo;       /* [n x d_model] expert outputs */
    /* expert cache traffic */
    struct xd_xc_set *set; /* the layer's experts, acquired together (ready ones first) */
    int32_t *need;   /* [n_expert] experts this batch routes to, for the set */
    int32_t *spec_sel; /* [n x k] next layer's guessed experts (speculative routing) */
    float *spec_w;   /* [n x k] their weights (unused) */
    int32_t *votes;  /* [n_expert] tokens guessing each expert */
    int32_t *hint;   /* [n_expert] experts to prefetch, most voted first */
    /* backend "cuda": the device-resident forward pass this context delegates to */
    struct xd_cuda_ctx *cuda;
    bool *want;      /* [n] logits flags of a chunk */
};

__attribute__((format(printf, 4, 5))) static int errf(char *err, size_t errlen, int code,
                                                      const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void *scratch(size_t n, size_t size, bool *ok) {
    void *p = calloc(n ? n : 1, size);
    if (!p) *ok = false;
    return p;
}

int xd_ctx_create(const struct xd_model *m, const struct xd_ctx_params *p, struct xd_ctx **out,
                  char *err, size_t errlen) {
    const struct xd_hparams *hp = &m->hp;
    struct xd_ctx_params d = p ? *p : (struct xd_ctx_params){0};
    if (d.n_ctx <= 0) d.n_ctx = hp->n_ctx_train < 4096 ? (int32_t)hp->n_ctx_train : 4096;
    if (d.n_seq <= 0) d.n_seq = 1;
    if (d.n_batch <= 0) d.n_batch = 512;
    if (d.ops == xd_ops_cpu_ref() && !d.backend) d.backend = "cpu-ref";
    struct xd_ctx *c = calloc(1, sizeof *c);
    if (!c) return errf(err, errlen, XD_E_NOMEM, "out of memory");
    c->m = m;
    c->n_batch = d.n_batch;
    int rc = xd_kv_create_paged(hp->n_layer, d.n_seq, d.n_ctx, hp->n_head_kv * hp->head_dim,
                                d.kv_bytes, &c->kv);
    if (rc) {
        free(c);
        return errf(err, errlen, rc,
                    "cannot allocate the KV cache (%d sequences x %d positions, budget %llu bytes; "
                    "one block of %d positions needs %llu)",
                    d.n_seq, d.n_ctx, (unsigned long long)d.kv_bytes, XD_KV_BLOCK,
                    (unsigned long long)(4ull * XD_KV_BLOCK * (uint64_t)hp->n_layer *
                                         (uint64_t)(hp->n_head_kv * hp->head_dim)));
    }
    if (m->moe) {
        c->xc = d.xc;
        if (!c->xc) {
            if ((rc = xd_xc_create_resident(m, &c->xc))) {
                xd_ctx_destroy(c);
                return errf(err, errlen, rc, "cannot create the expert cache");
            }
            c->own_xc = true;
        }
    }
    size_t n = (size_t)d.n_batch, dm = (size_t)hp->d_model;
    size_t qd = (size_t)(hp->n_head * hp->head_dim), kvd = (size_t)(hp->n_head_kv * hp->head_dim);
    size_t k = (size_t)(hp->n_expert_used ? hp->n_expert_used : 1);
    size_t ff = (size_t)(hp->n_ff_exp > hp->n_ff ? hp->n_ff_exp : hp->n_ff);
    bool ok = true;
    c->x = scratch(n * dm, sizeof(float), &ok);
    c->xb = scratch(n * dm, sizeof(float), &ok);
    c->xb2 = scratch(n * dm, sizeof(float), &ok);
    c->q = scratch(n * qd, sizeof(float), &ok);
    c->k = scratch(n * kvd, sizeof(float), &ok);
    c->v = scratch(n * kvd, sizeof(float), &ok);
    c->att = scratch(n * qd, sizeof(float), &ok);
    c->router = scratch(n * (size_t)(hp->n_expert ? hp->n_expert : 1), sizeof(float), &ok);
    c->sel = scratch(n * k, sizeof(int32_t), &ok);
    c->selw = scratch(n * k, sizeof(float), &ok);
    c->slot_out = scratch(n * k * dm, sizeof(float), &ok);
    c->order = scratch(n * k, sizeof(int32_t), &ok);
    c->count = scratch((size_t)hp->n_expert + 2, sizeof(int32_t), &ok);
    c->xg = scratch(n * dm, sizeof(float), &ok);
    c->hg = scratch(n * ff, sizeof(float), &ok);
    c->hu = scratch(n * ff, sizeof(float), &ok);
    c->yo = scratch(n * dm, sizeof(float), &ok);
    c->need = scratch((size_t)hp->n_expert + 1, sizeof(int32_t), &ok);
    c->spec_sel = scratch(n * k, sizeof(int32_t), &ok);
    c->spec_w = scratch(n * k, sizeof(float), &ok);
    c->votes = scratch((size_t)hp->n_expert + 1, sizeof(int32_t), &ok);
    c->hint = scratch((size_t)hp->n_expert + 1, sizeof(int32_t), &ok);
    if (ok && c->xc && xd_xc_set_create(c->xc, &c->set)) ok = false;
    if (!ok) {
        xd_ctx_destroy(c);
        return errf(err, errlen, XD_E_NOMEM, "out of memory for activations of %d tokens",
                    d.n_batch);
    }
    /* the backend: its scratch is sized by the longest matmul input and the context */
    int64_t max_row = hp->d_model > (int64_t)ff ? hp->d_model : (int64_t)ff;
    max_row = max_row > (int64_t)qd ? max_row : (int64_t)qd;
    const bool cuda = d.backend && !strcmp(d.backend, "cuda");
    /* backend "cuda" keeps a one-thread CPU backend so xd_ctx_backend() never returns NULL */
    struct xd_backend_params bp = {.name = cuda ? "cpu" : d.backend,
                                   .n_threads = cuda ? 1 : d.n_threads,
                                   .max_tokens = d.n_batch, .max_row = max_row,
                                   .max_pos = d.n_ctx};
    if ((rc = xd_backend_create(&bp, &c->be, err, errlen))) {
        xd_ctx_destroy(c);
        return rc;
    }
    /* the CPU backend's own copy of the weights in its kernels' panel layout; the routed
     * experts only when they are read from the mapping (not an offloaded cache's slots) */
    if (!cuda && !d.no_repack &&
        (rc = xd_backend_repack(c->be, m, !c->xc || xd_xc_is_resident(c->xc), err, errlen))) {
        xd_ctx_destroy(c);
        return rc;
    }
    if (cuda) {
#ifdef XD_HAVE_CUDA
        struct xd_cuda_ctx_params cp = {.n_ctx = d.n_ctx, .n_seq = d.n_seq, .n_batch = d.n_batch,
                                        .xc = c->xc};
        c->want = scratch((size_t)d.n_batch, sizeof(bool), &ok);
        if (!ok) rc = errf(err, errlen, XD_E_NOMEM, "out of memory");
        else rc = xd_cuda_ctx_create(m, &cp, &c->cuda, err, errlen);
#else
        rc = errf(err, errlen, XD_E_UNSUPPORTED, "backend cuda: this build has no CUDA "
                  "(configure with -DEXPERTD_CUDA=ON)");
#endif
        if (rc) {
            xd_ctx_destroy(c);
            return rc;
        }
    }
    c->ops = xd_backend_ops(c->be);
    *out = c;
    return 0;
}

void xd_ctx_destroy(struct xd_ctx *c) {
    if (!c) return;
#ifdef XD_HAVE_CUDA
    xd_cuda_ctx_destroy(c->cuda);
#endif
    free(c->want);
    xd_kv_destroy(c->kv);
    xd_backend_destroy(c->be);
    xd_xc_set_destroy(c->set);
    if (c->own_xc) xd_xc_destroy(c->xc);
    free(c->need);
    free(c->spec_sel);
    free(c->spec_w);
    free(c->votes);
    free(c->hint);
    float *bufs[] = {c->x,   c->xb,       c->xb2, c->q,  c->k,  c->v,  c->att,
                     c->router, c->selw, c->slot_out, c->xg, c->hg, c->hu, c->yo};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c->sel);
    free(c->order);
    free(c->count);
    free(c);
}

struct xd_kv *xd_ctx_kv(struct xd_ctx *c) { return c->kv; }

bool xd_ctx_kv_on_host(const struct xd_ctx *c) {
#ifdef XD_HAVE_CUDA
    if (c->cuda) return false;
#endif
    (void)c;
    return true;
}
struct xd_xc *xd_ctx_xc(struct xd_ctx *c) { return c->xc; }
const struct xd_stats *xd_ctx_stats(const struct xd_ctx *c) { return &c->stats; }
struct xd_backend *xd_ctx_backend(struct xd_ctx *c) { return c->be; }
const char *xd_ctx_backend_name(const struct xd_ctx *c) {
    return c->cuda ? "cuda" : xd_backend_name(c->be);
}

/* probs (n,) = softmax(logits), max-subtracted, denominator in double (as ggml) */
static void softmax(float *probs, const float *logits, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (probs[i] = expf(logits[i] - mx));
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) probs[i] *= inv;
}

/* Router of one token: softmax over all experts -> top-k (ties: lower id) -> weights
 * renormalized over the k (sum clamped below at 2^-14 as llama.cpp) and scaled. */
void xd__moe_route(const struct xd_hparams *hp, float *probs, int32_t *sel, float *w) {
    const int64_t n = hp->n_expert, k = hp->n_expert_used;
    softmax(probs, probs, n);
    for (int64_t j = 0; j < k; j++) {
        int32_t best = -1;
        for (int64_t e = 0; e < n; e++) {
            bool taken = false;
            for (int64_t i = 0; i < j && !taken; i++) taken = sel[i] == e;
            if (!taken && (best < 0 || probs[e] > probs[best])) best = (int32_t)e;
        }
        sel[j] = best;
        w[j] = probs[best];
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < k; j++) sum += w[j];
    sum = sum < 6.103515625e-5f ? 6.103515625e-5f : sum;
    for (int64_t j = 0; j < k; j++) {
        w[j] /= sum;
        if (hp->expert_weights_scale != 0.0f && hp->expert_weights_scale != 1.0f)
            w[j] *= hp->expert_weights_scale;
    }
}

/* Speculative routing (Mixtral-offloading's trick): apply a later layer's norm and router to
 * the residual stream as it stands in layer l, and prefetch the experts most tokens would
 * pick, so their reads overlap the compute in between. A hint only: a wrong guess costs I/O,
 * never a bit of the result. Capped at top-k experts (by votes) so a long prefill does not
 * flush the cache. */
static void prefetch_layer(struct xd_ctx *c, int64_t target, int32_t n) {
    const struct xd_hparams *hp = &c->m->hp;
    const struct xd_layer *N = &c->m->layers[target];
    const int64_t d = hp->d_model, k = hp->n_expert_used, ne = hp->n_expert;
    for (int32_t t = 0; t < n; t++)
        c->ops->rmsnorm(c->be, c->xg + t * d, c->x + t * d, N->ffn_norm.data, d, hp->rms_eps);
    c->ops->matmul(c->be, &N->gate_inp, c->xg, d, c->router, ne, n); /* [n x ne] guess logits */
    memset(c->votes, 0, (size_t)ne * sizeof *c->votes);
    for (int32_t t = 0; t < n; t++) {
        xd__moe_route(hp, c->router + t * ne, c->spec_sel + t * k, c->spec_w + t * k);
        for (int64_t j = 0; j < k; j++) c->votes[c->spec_sel[t * k + j]]++;
    }
    int32_t n_hint = 0;
    for (; n_hint < k; n_hint++) { /* the k most voted, ties to the lower id */
        int32_t best = -1;
        for (int32_t e = 0; e < ne; e++)
            if (c->votes[e] > 0 && (best < 0 || c->votes[e] > c->votes[best])) best = e;
        if (best < 0) break;
        c->hint[n_hint] = best;
        c->votes[best] = 0;
    }
    xd_xc_prefetch(c->xc, target, c->hint, n_hint);
}

/* MoE FFN: xb [n x d] -> out [n x d] */
static int moe_ffn(struct xd_ctx *c, int64_t l, int32_t n, float *out) {
    const struct xd_model *m = c->m;
    const struct xd_hparams *hp = &m->hp;
    const struct xd_ops *ops = c->ops;
    const struct xd_layer *L = &m->layers[l];
    const int64_t d = hp->d_model, k = hp->n_expert_used, ne = hp->n_expert, ff = hp->n_ff_exp;

    /* router logits [n x n_expert] = W_gate_inp @ xb, then per-token top-k */
    ops->matmul(c->be, &L->gate_inp, c->xb, d, c->router, ne, n);
    for (int32_t t = 0; t < n; t++) xd__moe_route(hp, c->router + t * ne, c->sel + t * k, c->selw + t * k);

    /* group (token, slot) pairs by expert: counting sort, stable in token order */
    memset(c->count, 0, (size_t)(ne + 2) * sizeof *c->count);
    for (int64_t i = 0; i < n * k; i++) c->count[c->sel[i] + 2]++;
    for (int64_t e = 0; e < ne; e++) c->count[e + 2] += c->count[e + 1];
    for (int64_t i = 0; i < n * k; i++) c->order[c->count[c->sel[i] + 1]++] = (int32_t)i;
    /* now experts e's pairs are order[count[e] .. count[e+1]) */

    /* acquire the layer's experts as one set: misses start reading now, resident experts are
     * handed out first and the rest as their reads land (the order cannot change the sums) */
    int32_t n_need = 0;
    for (int32_t e = 0; e < ne; e++)
        if (c->count[e + 1] > c->count[e]) c->need[n_need++] = e;
    int rc = xd_xc_set_begin(c->set, l, c->need, n_need);
    if (rc) return rc;
    for (int64_t t = l + 1; t <= l + xd_xc_prefetch_layers(c->xc) && t < hp->n_layer; t++)
        prefetch_layer(c, t, n);
    int32_t e;
    struct xd_expert_view ev;
    while ((rc = xd_xc_set_next(c->set, &e, &ev)) > 0) {
        const int32_t lo = c->count[e], hi = c->count[e + 1], mt = hi - lo;
        for (int32_t i = 0; i < mt; i++)
            memcpy(c->xg + i * d, c->xb + (c->order[lo + i] / k) * d, (size_t)d * sizeof(float));
        ops->matmul(c->be, &ev.gate, c->xg, d, c->hg, ff, mt); /* hg [mt x ff] = W_gate @ xg */
        ops->matmul(c->be, &ev.up, c->xg, d, c->hu, ff, mt);   /* hu [mt x ff] = W_up @ xg */
        for (int32_t i = 0; i < mt; i++) ops->swiglu(c->be, c->hg + i * ff, c->hg + i * ff, c->hu + i * ff, ff);
        ops->matmul(c->be, &ev.down, c->hg, ff, c->yo, d, mt); /* yo [mt x d] = W_down @ h */
        xd_xc_release(c->xc, l, e);
        for (int32_t i = 0; i < mt; i++)
            memcpy(c->slot_out + (size_t)c->order[lo + i] * d, c->yo + i * d, (size_t)d * sizeof(float));
        c->stats.expert_tokens += (uint64_t)mt;
        c->stats.experts_touched++;
    }
    xd_stats_hist_add(c->stats.experts_per_layer, (uint64_t)n_need);
    if (rc < 0) return rc; /* a read failed after its retry; the set has dropped its pins */
    /* out[t] = sum_j w[t,j] * slot_out[t,j], in slot order */
    for (int32_t t = 0; t < n; t++) {
        float *o = out + t * d;
        memset(o, 0, (size_t)d * sizeof *o);
        for (int64_t j = 0; j < k; j++) {
            const float w = c->selw[t * k + j], *y = c->slot_out + (t * k + j) * d;
            for (int64_t i = 0; i < d; i++) o[i] += w * y[i];
        }
    }
    return 0;
}

/* Dense SwiGLU FFN: xb [n x d] -> out [n x d] */
static void dense_ffn(struct xd_ctx *c, int64_t l, int32_t n, float *out) {
    const struct xd_hparams *hp = &c->m->hp;
    const struct xd_layer *L = &c->m->layers[l];
    const int64_t d = hp->d_model, ff = hp->n_ff;
    c->ops->matmul(c->be, &L->ffn_gate, c->xb, d, c->hg, ff, n);
    c->ops->matmul(c->be, &L->ffn_up, c->xb, d, c->hu, ff, n);
    for (int32_t t = 0; t < n; t++) c->ops->swiglu(c->be, c->hg + t * ff, c->hg + t * ff, c->hu + t * ff, ff);
    c->ops->matmul(c->be, &L->ffn_down, c->hg, ff, out, d, n);
}

/* One chunk of at most n_batch tokens. */
static int forward_chunk(struct xd_ctx *c, const struct xd_batch *b, int32_t off, int32_t n,
                         float *logits, int64_t *n_out) {
    const struct xd_model *m = c->m;
    const struct xd_hparams *hp = &m->hp;
    const struct xd_ops *ops = c->ops;
    const int64_t d = hp->d_model, hd = hp->head_dim;
    const int64_t qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int32_t *tok = b->token + off, *pos = b->pos + off, *seq = b->seq + off;
    int rc;

#ifdef XD_HAVE_CUDA
    if (c->cuda) { /* the whole chunk on the device; the host KV keeps only the lengths */
        for (int32_t t = 0; t < n; t++)
            c->want[t] = b->logits ? b->logits[off + t] : off + t == b->n_tokens - 1;
        if ((rc = xd_cuda_forward(c->cuda, n, tok, pos, seq, c->want, logits, n_out, &c->stats)))
            return rc;
        for (int32_t t = 0; t < n; t++)
            if ((rc = xd_kv_mark(c->kv, seq[t], pos[t]))) return rc;
        c->stats.tokens += (uint64_t)n;
        return 0;
    }
#endif

    for (int32_t t = 0; t < n; t++) ops->get_row(c->be, c->x + t * d, &m->tok_embd, tok[t]);

    for (int64_t l = 0; l < hp->n_layer; l++) {
        const struct xd_layer *L = &m->layers[l];
        /* attention block: xb = rmsnorm(x) ; q,k,v = W xb ; rope ; attend ; x += Wo att */
        for (int32_t t = 0; t < n; t++)
            ops->rmsnorm(c->be, c->xb + t * d, c->x + t * d, L->attn_norm.data, d, hp->rms_eps);
        ops->matmul(c->be, &L->wq, c->xb, d, c->q, qd, n);
        ops->matmul(c->be, &L->wk, c->xb, d, c->k, kvd, n);
        ops->matmul(c->be, &L->wv, c->xb, d, c->v, kvd, n);
        for (int32_t t = 0; t < n; t++) {
            float *q = c->q + t * qd, *k = c->k + t * kvd;
            if (m->qk_norm) {
                for (int64_t h = 0; h < hp->n_head; h++)
                    ops->rmsnorm(c->be, q + h * hd, q + h * hd, L->q_norm.data, hd, hp->rms_eps);
                for (int64_t h = 0; h < hp->n_head_kv; h++)
                    ops->rmsnorm(c->be, k + h * hd, k + h * hd, L->k_norm.data, hd, hp->rms_eps);
            }
            ops->rope(c->be, q, hp->n_head, hd, hp->n_rot, pos[t], hp->rope_base, m->rope);
            ops->rope(c->be, k, hp->n_head_kv, hd, hp->n_rot, pos[t], hp->rope_base, m->rope);
            if ((rc = xd_kv_store(c->kv, l, seq[t], pos[t], k, c->v + t * kvd))) return rc;
        }
        ops->attention(c->be, c->att, c->q, qd, c->kv, l, seq, pos, n, hp->n_head, hp->n_head_kv, hd,
                       scale);
        ops->matmul(c->be, &L->wo, c->att, qd, c->xb2, d, n);
        for (int64_t i = 0; i < n * d; i++) c->x[i] += c->xb2[i];

        /* feed-forward block: xb = rmsnorm(x) ; x += ffn(xb) */
        for (int32_t t = 0; t < n; t++)
            ops->rmsnorm(c->be, c->xb + t * d, c->x + t * d, L->ffn_norm.data, d, hp->rms_eps);
        if (m->moe) {
            if ((rc = moe_ffn(c, l, n, c->xb2))) return rc;
        } else {
            dense_ffn(c, l, n, c->xb2);
        }
        for (int64_t i = 0; i < n * d; i++) c->x[i] += c->xb2[i];
    }

    /* logits of the wanted rows: rmsnorm(x) @ W_out, the rows gathered into one matmul (the
     * head is the largest matrix of a decode step; one matmul per row read it once per row,
     * and a row's result does not depend on how many rows share the call) */
    int32_t n_want = 0;
    for (int32_t t = 0; t < n; t++) {
        bool want = b->logits ? b->logits[off + t] : off + t == b->n_tokens - 1;
        if (!want) continue;
        ops->rmsnorm(c->be, c->xb + n_want * d, c->x + t * d, m->output_norm.data, d, hp->rms_eps);
        n_want++;
    }
    if (n_want) {
        ops->matmul(c->be, &m->output, c->xb, d, logits + *n_out * hp->n_vocab, hp->n_vocab, n_want);
        *n_out += n_want;
    }
    c->stats.tokens += (uint64_t)n;
    return 0;
}

int xd_forward(struct xd_ctx *c, const struct xd_batch *b, float *logits) {
    const struct xd_hparams *hp = &c->m->hp;
    const int32_t n_seq = xd_kv_n_seq(c->kv), n_ctx = xd_kv_n_ctx(c->kv);
    for (int32_t t = 0; t < b->n_tokens; t++) {
        if (b->token[t] < 0 || b->token[t] >= hp->n_vocab) return XD_E_INVALID;
        if (b->seq[t] < 0 || b->seq[t] >= n_seq || b->pos[t] < 0) return XD_E_INVALID;
        if (b->pos[t] >= n_ctx) return XD_E_CONTEXT;
        /* attention reads positions 0..pos: they must be stored or come earlier in this batch */
        if (b->pos[t] > xd_kv_seq_len(c->kv, b->seq[t])) {
            bool earlier = false;
            for (int32_t u = t - 1; u >= 0 && !earlier; u--)
                earlier = b->seq[u] == b->seq[t] && b->pos[u] == b->pos[t] - 1;
            if (!earlier) return XD_E_INVALID;
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t n_out = 0;
    int rc = 0;
    for (int32_t off = 0; off < b->n_tokens && !rc; off += c->n_batch) {
        int32_t n = b->n_tokens - off < c->n_batch ? b->n_tokens - off : c->n_batch;
        rc = forward_chunk(c, b, off, n, logits, &n_out);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    c->stats.forward_calls++;
    c->stats.logit_rows += (uint64_t)n_out;
    c->stats.forward_ns +=
        (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return rc;
}
