/* forward_cuda.cu - the device-resident forward pass (backend "cuda").
 *
 * Same model, same batch semantics as forward.c, but every activation, the K/V cache (F16,
 * [layer][seq][pos][kv_dim], the host xd_kv keeping only the lengths) and all non-expert
 * weights (in their GGUF types) live in VRAM. Per chunk only token ids, positions and
 * sequence ids go up, and the wanted logits rows come down. Per MoE layer the router logits
 * (n_tokens x n_expert floats) come to the host, where the exact routing of forward.c runs
 * (xd__moe_route: the expert cache needs the selections anyway), the (token, slot) pairs are
 * grouped by expert, and the order and weights go back up (one copy); each expert then runs
 * as two kernels (gate+up+SwiGLU fused, then down) that gather their tokens and scatter into
 * per-(token, slot) rows, summed in slot order at the end — so the result never depends on
 * the order the expert cache hands experts out.
 *
 * Experts: with the everything-resident cache every expert is uploaded once at creation and
 * the cache's mmap views are translated to device addresses. With an offloaded cache whose
 * slots are device memory (xd_cuda_xcb: cudaMalloc slots, pinned staging, commit on a copy
 * stream) views already are device addresses; with host slots (another backend's cache) the
 * expert is copied up per use (correct, slow). Offloaded slots are released only after the
 * compute stream has finished reading them (a stream sync per expert): the cache may refill a
 * released slot at once. Rejected alternative: an event fence that the commit waits on would
 * save that sync but couple the cache backend to this context; in offloaded mode the copy
 * time dominates anyway.
 *
 * Not done: CUDA graphs (decode launches ~12 kernels per layer), a tensor-core prefill path.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_ops.cuh"

extern "C" {
#include "expert_cache.h"
#include "kv_cache.h"
#include "model.h"
#include "stats.h"
void xd__moe_route(const struct xd_hparams *hp, float *probs, int32_t *sel, float *w);
}
#include "xd_cuda.h"

using namespace xdc;

namespace {

/* a resident expert tensor: host range [host, host + bytes) lives at dev */
struct up_tensor {
    const uint8_t *host;
    size_t bytes;
    uint8_t *dev;
};

struct dlayer {
    float *attn_norm, *ffn_norm, *q_norm, *k_norm;
    dmat wq, wk, wv, wo, gate_inp, ffn_gate, ffn_up, ffn_down;
    up_tensor exps[3]; /* gate, up, down (resident cache only) */
};

/* XD_CUDA_PROF=1: a cudaEvent at every phase of the forward pass; at destroy, stderr gets the
 * GPU-timeline time between consecutive marks (kernel time plus any idle gap before the next
 * mark's work arrived) per phase, separately for one-token chunks (decode) and the rest, next
 * to the host wall time of the calls. Off by default: the marks cost ~1 us of host time each. */
constexpr int PROF_MARKS = 512, PROF_PHASES = 48;
struct prof {
    cudaEvent_t ev[PROF_MARKS];
    const char *lab[PROF_MARKS];
    int n;
    struct {
        const char *lab;
        double ms[2];
        long cnt[2];
    } acc[PROF_PHASES];
    int nacc;
    double wall_ms[2];
    long calls[2];
};

}  // namespace

struct xd_cuda_ctx {
    const struct xd_model *m;
    struct xd_xc *xc;
    struct xd_xc_set *set;
    bool offloaded;
    int32_t n_ctx, n_seq, n_batch;
    int32_t prefetch_layers;
    cudaStream_t st;
    char err[256];
    /* weights */
    void **allocs; /* every cudaMalloc of weights, freed at destroy */
    int n_allocs, cap_allocs;
    dmat tok_embd, output;
    float *output_norm;
    dlayer *L;
    /* K/V */
    __half *kc, *vc;
    size_t layer_kv; /* elements of one layer's K (or V) */
    /* activations */
    float *x, *xb, *q, *k, *v, *att, *h, *slot_out, *router, *logits;
    /* 8-bit activations for the Q4_K kernels (quant_q8_256), when the model has Q4_K matrices:
     * qx for the normed rows (d wide) or the attention output (qd wide), qh for the FFN rows */
    bool q8;
    uint8_t *qx, *qh;
    size_t qx_ld_d, qx_ld_qd, qh_ld;
    int32_t *d_in;    /* [4 x n_batch]: tokens, positions, sequences, wanted rows */
    int32_t *d_order; /* [2 x n_batch x k]: per chunk order [n x k], then weights [n x k] */
    uint8_t *fallback; /* one expert, for host-slot caches */
    size_t fallback_bytes;
    /* pinned host mirrors */
    int32_t *h_in;
    float *h_router; /* [(1 + prefetch_layers) x n_batch x n_expert] */
    int32_t *h_order; /* as d_order */
    /* host routing scratch */
    int32_t *sel, *count, *need, *votes, *hint, *spec_sel;
    float *selw, *spec_w;
    prof *pf; /* XD_CUDA_PROF=1 only */
};

namespace {

__attribute__((format(printf, 3, 4))) int fail(xd_cuda_ctx *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

int cuda_fail(xd_cuda_ctx *c, cudaError_t e, const char *what) {
    return fail(c, e == cudaErrorMemoryAllocation ? XD_E_NOMEM : XD_E_IO, "CUDA: %s: %s", what,
                cudaGetErrorString(e));
}

#define CU(c, call, what)                                                                        \
    do {                                                                                         \
        cudaError_t e__ = (call);                                                                \
        if (e__ != cudaSuccess) return cuda_fail((c), e__, (what));                              \
    } while (0)

void mark(xd_cuda_ctx *c, const char *lab) {
    prof *p = c->pf;
    if (!p || p->n == PROF_MARKS) return;
    cudaEventRecord(p->ev[p->n], c->st);
    p->lab[p->n++] = lab;
}

void prof_collect(xd_cuda_ctx *c, int32_t n_tok, double wall_ms) {
    prof *p = c->pf;
    const int k = n_tok == 1 ? 0 : 1;
    p->wall_ms[k] += wall_ms;
    p->calls[k]++;
    for (int i = 0; i + 1 < p->n; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]) != cudaSuccess) continue;
        int a = 0;
        while (a < p->nacc && strcmp(p->acc[a].lab, p->lab[i])) a++;
        if (a == p->nacc) {
            if (p->nacc == PROF_PHASES) continue;
            p->acc[p->nacc++].lab = p->lab[i];
        }
        p->acc[a].ms[k] += ms;
        p->acc[a].cnt[k]++;
    }
    p->n = 0;
}

void prof_report(const xd_cuda_ctx *c) {
    const prof *p = c->pf;
    for (int k = 0; k < 2; k++) {
        if (!p->calls[k]) continue;
        double gpu = 0.0;
        for (int a = 0; a < p->nacc; a++) gpu += p->acc[a].ms[k];
        fprintf(stderr, "cuda profile, %s: %ld calls, host wall %.1f us/call, GPU timeline %.1f us/call\n",
                k ? "chunks of > 1 token" : "one-token chunks", p->calls[k],
                1e3 * p->wall_ms[k] / (double)p->calls[k], 1e3 * gpu / (double)p->calls[k]);
        for (int a = 0; a < p->nacc; a++)
            if (p->acc[a].cnt[k])
                fprintf(stderr, "  %-22s %9.1f us/call  %5.1f%%  (%ld marks)\n", p->acc[a].lab,
                        1e3 * p->acc[a].ms[k] / (double)p->calls[k],
                        gpu > 0 ? 100.0 * p->acc[a].ms[k] / gpu : 0.0, p->acc[a].cnt[k]);
    }
}

int dalloc(xd_cuda_ctx *c, size_t bytes, void **out, const char *what) {
    if (c->n_allocs == c->cap_allocs) {
        int cap = c->cap_allocs ? 2 * c->cap_allocs : 64;
        void **a = (void **)realloc(c->allocs, (size_t)cap * sizeof *a);
        if (!a) return fail(c, XD_E_NOMEM, "out of memory");
        c->allocs = a, c->cap_allocs = cap;
    }
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return fail(c, XD_E_NOMEM, "cannot allocate %.1f MiB of VRAM for %s (%.1f MiB free)",
                    (double)bytes / 1048576.0, what, (double)fr / 1048576.0);
    }
    c->allocs[c->n_allocs++] = p;
    *out = p;
    return 0;
}

size_t tensor_bytes(const struct xd_tensor *t) {
    return xd_row_size(t->type, t->ne[0]) * (size_t)(t->ne[1] ? t->ne[1] : 1) *
           (size_t)(t->ne[2] ? t->ne[2] : 1) * (size_t)(t->ne[3] ? t->ne[3] : 1);
}

int upload(xd_cuda_ctx *c, const struct xd_tensor *t, void **out) {
    const size_t n = tensor_bytes(t);
    int rc = dalloc(c, n, out, t->name ? t->name : "a tensor");
    if (rc) return rc;
    CU(c, cudaMemcpy(*out, t->data, n, cudaMemcpyHostToDevice), t->name ? t->name : "upload");
    return 0;
}

/* an F32 vector (norm weights) */
int upload_vec(xd_cuda_ctx *c, const struct xd_tensor *t, float **out) {
    if (!t->data) {
        *out = nullptr;
        return 0;
    }
    if (t->type != XD_TYPE_F32)
        return fail(c, XD_E_UNSUPPORTED, "%s: norm weights must be F32", t->name);
    return upload(c, t, (void **)out);
}

dmat mat_of(const struct xd_tensor *t, const void *dev) {
    return dmat{t->type, t->ne[0], t->ne[1], t->nb[1], (const uint8_t *)dev};
}

int check_mat(xd_cuda_ctx *c, const struct xd_tensor *t) {
    if (!type_supported(t->type))
        return fail(c, XD_E_UNSUPPORTED, "%s: type %s is not supported by the CUDA backend",
                    t->name, xd_type_name(t->type));
    if (t->ne[0] % 32)
        return fail(c, XD_E_UNSUPPORTED, "%s: rows of %lld elements (the CUDA backend needs a "
                    "multiple of 32)", t->name, (long long)t->ne[0]);
    return 0;
}

int upload_mat(xd_cuda_ctx *c, const struct xd_tensor *t, dmat *out) {
    if (!t->data) {
        *out = dmat{};
        return 0;
    }
    int rc = check_mat(c, t);
    void *p;
    if (!rc) rc = upload(c, t, &p);
    if (!rc) *out = mat_of(t, p);
    return rc;
}

int upload_weights(xd_cuda_ctx *c) {
    const struct xd_model *m = c->m;
    const struct xd_hparams *hp = &m->hp;
    int rc;
    if ((rc = upload_mat(c, &m->tok_embd, &c->tok_embd))) return rc;
    if (m->output.data == m->tok_embd.data) c->output = c->tok_embd;
    else if ((rc = upload_mat(c, &m->output, &c->output))) return rc;
    if ((rc = upload_vec(c, &m->output_norm, &c->output_norm))) return rc;
    c->L = (dlayer *)calloc((size_t)hp->n_layer, sizeof *c->L);
    if (!c->L) return fail(c, XD_E_NOMEM, "out of memory");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const struct xd_layer *S = &m->layers[l];
        dlayer *D = &c->L[l];
        if ((rc = upload_vec(c, &S->attn_norm, &D->attn_norm)) ||
            (rc = upload_vec(c, &S->ffn_norm, &D->ffn_norm)) ||
            (rc = upload_vec(c, &S->q_norm, &D->q_norm)) ||
            (rc = upload_vec(c, &S->k_norm, &D->k_norm)) || (rc = upload_mat(c, &S->wq, &D->wq)) ||
            (rc = upload_mat(c, &S->wk, &D->wk)) || (rc = upload_mat(c, &S->wv, &D->wv)) ||
            (rc = upload_mat(c, &S->wo, &D->wo)) ||
            (rc = upload_mat(c, &S->gate_inp, &D->gate_inp)) ||
            (rc = upload_mat(c, &S->ffn_gate, &D->ffn_gate)) ||
            (rc = upload_mat(c, &S->ffn_up, &D->ffn_up)) ||
            (rc = upload_mat(c, &S->ffn_down, &D->ffn_down)))
            return rc;
        if (!m->moe) continue;
        const struct xd_tensor *ex[3] = {&S->gate_exps, &S->up_exps, &S->down_exps};
        for (int i = 0; i < 3; i++) {
            if ((rc = check_mat(c, ex[i]))) return rc;
            if (c->offloaded) continue;
            void *p;
            if ((rc = upload(c, ex[i], &p))) {
                snprintf(c->err + strlen(c->err), sizeof c->err - strlen(c->err),
                         "; the experts do not fit: use --expert-cache or --gpu-memory");
                return rc;
            }
            D->exps[i] = up_tensor{(const uint8_t *)ex[i]->data, tensor_bytes(ex[i]), (uint8_t *)p};
        }
    }
    return 0;
}

/* whether any matrix of the model would use 8-bit activations */
bool model_wants_q8(const xd_cuda_ctx *c) {
    const struct xd_hparams *hp = &c->m->hp;
    if (mm_wants_q8(c->output)) return true;
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const dlayer *D = &c->L[l];
        const struct xd_layer *S = &c->m->layers[l];
        const dmat ms[] = {D->wq, D->wk, D->wv, D->wo, D->gate_inp, D->ffn_gate, D->ffn_up, D->ffn_down};
        for (const dmat &w : ms)
            if (mm_wants_q8(w)) return true;
        if (c->m->moe && (S->gate_exps.type == XD_TYPE_Q4_K || S->down_exps.type == XD_TYPE_Q4_K))
            return true;
    }
    return false;
}

/* x rows [n x len] as 8-bit codes into buf (ld bytes a row), and the rows operand naming both */
int quant_rows(xd_cuda_ctx *c, float *x, int64_t len, int32_t n, uint8_t *buf, size_t ld,
               const int32_t *idx, int32_t div, rows *out) {
    *out = rows{x, len, idx, div, nullptr, 0};
    if (!c->q8) return 0;
    CU(c, quant_q8_256(*out, n, len, buf, ld, c->st), "8-bit activations");
    out->q8 = buf, out->q8_ld = ld;
    return 0;
}

/* xb = rmsnorm(x) * w over n rows of d, and its 8-bit codes into qx when the model uses them
 * (a kernel of its own: fusing it into the norm is an open item). out: xb as a matmul operand,
 * rows picked through idx. */
int norm_rows(xd_cuda_ctx *c, const float *w, int32_t n, const int32_t *idx, rows *out) {
    const struct xd_hparams *hp = &c->m->hp;
    const int64_t d = hp->d_model;
    CU(c, rmsnorm(c->xb, c->x, w, n, d, hp->rms_eps, c->st), "rmsnorm");
    return quant_rows(c, c->xb, d, n, c->qx, c->qx_ld_d, idx, 1, out);
}

template <class T> T *host_array(size_t n, bool *ok) {
    T *p = (T *)calloc(n ? n : 1, sizeof(T));
    if (!p) *ok = false;
    return p;
}

}  // namespace

extern "C" int xd_cuda_ctx_create(const struct xd_model *m, const struct xd_cuda_ctx_params *p,
                                  struct xd_cuda_ctx **out, char *err, size_t errlen) {
    if (xd_cuda_device_count() == 0) {
        snprintf(err, errlen, "backend cuda: no CUDA device");
        return -ENODEV;
    }
    const struct xd_hparams *hp = &m->hp;
    xd_cuda_ctx *c = (xd_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return XD_E_NOMEM;
    }
    c->m = m;
    c->xc = p->xc;
    c->n_ctx = p->n_ctx, c->n_seq = p->n_seq, c->n_batch = p->n_batch;
    int rc = 0;
    if (m->moe) {
        if (!c->xc) rc = fail(c, XD_E_INVALID, "a MoE model needs an expert cache");
        struct xd_xc_info in;
        if (!rc) {
            xd_xc_info(c->xc, &in);
            c->offloaded = in.offloaded;
            c->prefetch_layers = xd_xc_wants_prefetch(c->xc) ? xd_xc_prefetch_layers(c->xc) : 0;
            if (xd_xc_set_create(c->xc, &c->set)) rc = fail(c, XD_E_NOMEM, "out of memory");
        }
    }
    cudaError_t e;
    if (!rc && (e = cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking)) != cudaSuccess)
        rc = cuda_fail(c, e, "stream");
    const char *pe = getenv("XD_CUDA_PROF");
    if (!rc && pe && *pe == '1') {
        c->pf = (prof *)calloc(1, sizeof *c->pf);
        if (!c->pf) rc = fail(c, XD_E_NOMEM, "out of memory");
        for (int i = 0; !rc && i < PROF_MARKS; i++)
            if ((e = cudaEventCreate(&c->pf->ev[i])) != cudaSuccess) rc = cuda_fail(c, e, "event");
    }
    if (!rc && (e = attention_smem_setup(c->n_ctx)) != cudaSuccess)
        rc = fail(c, XD_E_UNSUPPORTED, "CUDA: attention over %d positions needs %zu KiB of shared "
                  "memory: %s", c->n_ctx, (size_t)c->n_ctx * 4 / 1024, cudaGetErrorString(e));
    if (!rc) rc = upload_weights(c);
    const size_t n = (size_t)c->n_batch, d = (size_t)hp->d_model;
    const size_t qd = (size_t)(hp->n_head * hp->head_dim), kvd = (size_t)(hp->n_head_kv * hp->head_dim);
    const size_t k = (size_t)(hp->n_expert_used ? hp->n_expert_used : 1);
    const size_t ne = (size_t)(hp->n_expert ? hp->n_expert : 1);
    const size_t ff = (size_t)(hp->n_ff_exp > hp->n_ff ? hp->n_ff_exp : hp->n_ff);
    const size_t nv = (size_t)hp->n_vocab;
    const size_t P = (size_t)c->prefetch_layers;
    c->layer_kv = (size_t)c->n_seq * (size_t)c->n_ctx * kvd;
    const size_t kvn = (size_t)hp->n_layer * c->layer_kv;
    struct {
        void **p;
        size_t bytes;
        const char *what;
    } bufs[] = {
        {(void **)&c->kc, kvn * 2, "the K cache"},
        {(void **)&c->vc, kvn * 2, "the V cache"},
        {(void **)&c->x, n * d * 4, "activations"},
        {(void **)&c->xb, n * d * 4, "activations"},
        {(void **)&c->q, n * qd * 4, "activations"},
        {(void **)&c->k, n * kvd * 4, "activations"},
        {(void **)&c->v, n * kvd * 4, "activations"},
        {(void **)&c->att, n * qd * 4, "activations"},
        {(void **)&c->h, n * ff * 4, "activations"},
        {(void **)&c->slot_out, n * k * d * 4, "expert outputs"},
        {(void **)&c->router, (1 + P) * n * ne * 4, "router logits"},
        {(void **)&c->logits, n * nv * 4, "logits"},
        {(void **)&c->d_in, 4 * n * 4, "batch"},
        {(void **)&c->d_order, 2 * n * k * 4, "batch"}, /* order, then weights */
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0] && !rc; i++)
        rc = dalloc(c, bufs[i].bytes, bufs[i].p, bufs[i].what);
    /* every row length that gets quantized must be whole blocks of 256: d, qd, and the FFN
     * widths of the MoE and of any dense layer each (not just the larger one) */
    /* XD_CUDA_Q8=0: Q4_K on float activations (A/B timing of the 8-bit kernels) */
    const char *q8e = getenv("XD_CUDA_Q8");
    c->q8 = !rc && !(q8e && *q8e == '0') && model_wants_q8(c) && d % 256 == 0 && qd % 256 == 0 &&
            hp->n_ff_exp % 256 == 0 && hp->n_ff % 256 == 0;
    if (c->q8) {
        c->qx_ld_d = q8_row_bytes((int64_t)d), c->qx_ld_qd = q8_row_bytes((int64_t)qd);
        c->qh_ld = q8_row_bytes((int64_t)ff);
        const size_t wide = c->qx_ld_d > c->qx_ld_qd ? c->qx_ld_d : c->qx_ld_qd;
        rc = dalloc(c, n * wide, (void **)&c->qx, "8-bit activations");
        if (!rc) rc = dalloc(c, n * c->qh_ld, (void **)&c->qh, "8-bit activations");
    }
    if (!rc && m->moe && c->offloaded) {
        c->fallback_bytes = 0; /* the largest expert of any layer (types may differ) */
        for (int64_t l = 0; l < hp->n_layer; l++) {
            const struct xd_layer *S = &m->layers[l];
            const size_t b = tensor_bytes(&S->gate_exps) / ne + tensor_bytes(&S->up_exps) / ne +
                             tensor_bytes(&S->down_exps) / ne;
            if (b > c->fallback_bytes) c->fallback_bytes = b;
        }
        rc = dalloc(c, c->fallback_bytes, (void **)&c->fallback, "an expert");
    }
    if (!rc && (e = cudaHostAlloc((void **)&c->h_in, 4 * n * 4, 0)) != cudaSuccess)
        rc = cuda_fail(c, e, "pinned memory");
    if (!rc && (e = cudaHostAlloc((void **)&c->h_router, (1 + P) * n * ne * 4, 0)) != cudaSuccess)
        rc = cuda_fail(c, e, "pinned memory");
    if (!rc && (e = cudaHostAlloc((void **)&c->h_order, 2 * n * k * 4, 0)) != cudaSuccess)
        rc = cuda_fail(c, e, "pinned memory");
    if (!rc) {
        bool ok = true;
        c->sel = host_array<int32_t>(n * k, &ok);
        c->selw = host_array<float>(n * k, &ok);
        c->count = host_array<int32_t>(ne + 2, &ok);
        c->need = host_array<int32_t>(ne, &ok);
        c->votes = host_array<int32_t>(ne, &ok);
        c->hint = host_array<int32_t>(ne, &ok);
        c->spec_sel = host_array<int32_t>(n * k, &ok);
        c->spec_w = host_array<float>(n * k, &ok);
        if (!ok) rc = fail(c, XD_E_NOMEM, "out of memory");
    }
    if (!rc && (e = cudaMemsetAsync(c->kc, 0, kvn * 2, c->st)) == cudaSuccess &&
        (e = cudaMemsetAsync(c->vc, 0, kvn * 2, c->st)) == cudaSuccess)
        e = cudaStreamSynchronize(c->st);
    if (!rc && e != cudaSuccess) rc = cuda_fail(c, e, "clearing the KV cache");
    if (rc) {
        snprintf(err, errlen, "backend cuda: %s", c->err);
        xd_cuda_ctx_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

extern "C" void xd_cuda_ctx_destroy(struct xd_cuda_ctx *c) {
    if (!c) return;
    if (c->st) cudaStreamSynchronize(c->st);
    if (c->pf) {
        prof_report(c);
        for (int i = 0; i < PROF_MARKS; i++)
            if (c->pf->ev[i]) cudaEventDestroy(c->pf->ev[i]);
        free(c->pf);
    }
    for (int i = 0; i < c->n_allocs; i++) cudaFree(c->allocs[i]);
    free(c->allocs);
    if (c->st) cudaStreamDestroy(c->st);
    cudaFreeHost(c->h_in);
    cudaFreeHost(c->h_router);
    cudaFreeHost(c->h_order);
    xd_xc_set_destroy(c->set);
    free(c->L);
    void *hs[] = {c->sel, c->selw, c->count, c->need, c->votes, c->hint, c->spec_sel, c->spec_w};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
    free(c);
}

extern "C" const char *xd_cuda_ctx_error(const struct xd_cuda_ctx *c) { return c->err; }

namespace {

/* Device address of an expert matrix view: translated (resident upload), as is (device
 * slots), or copied up into the fallback buffer at off (host slots). */
int expert_ptr(xd_cuda_ctx *c, const dlayer *D, int which, const struct xd_tensor *t,
               size_t *fb_off, const uint8_t **out) {
    const uint8_t *hp = (const uint8_t *)t->data;
    const up_tensor &u = D->exps[which];
    if (u.dev && hp >= u.host && hp < u.host + u.bytes) {
        *out = u.dev + (hp - u.host);
        return 0;
    }
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, hp) == cudaSuccess && a.type == cudaMemoryTypeDevice) {
        *out = hp;
        return 0;
    }
    (void)cudaGetLastError();
    const size_t n = xd_row_size(t->type, t->ne[0]) * (size_t)t->ne[1];
    if (*fb_off + n > c->fallback_bytes) return fail(c, XD_E_INVALID, "expert larger than the largest expert");
    CU(c, cudaMemcpyAsync(c->fallback + *fb_off, hp, n, cudaMemcpyHostToDevice, c->st),
       "copying an expert from host slots");
    *out = c->fallback + *fb_off;
    *fb_off += n;
    return 0;
}

/* Speculative routing hints for layer `target` from its router logits (as forward.c). */
void prefetch_hints(xd_cuda_ctx *c, int64_t target, const float *logits, int32_t n) {
    const struct xd_hparams *hp = &c->m->hp;
    const int64_t k = hp->n_expert_used, ne = hp->n_expert;
    memset(c->votes, 0, (size_t)ne * sizeof *c->votes);
    for (int32_t t = 0; t < n; t++) {
        float *pr = (float *)logits + t * ne;
        xd__moe_route(hp, pr, c->spec_sel + t * k, c->spec_w + t * k);
        for (int64_t j = 0; j < k; j++) c->votes[c->spec_sel[t * k + j]]++;
    }
    int32_t n_hint = 0;
    for (; n_hint < k; n_hint++) {
        int32_t best = -1;
        for (int32_t e = 0; e < ne; e++)
            if (c->votes[e] > 0 && (best < 0 || c->votes[e] > c->votes[best])) best = e;
        if (best < 0) break;
        c->hint[n_hint] = best;
        c->votes[best] = 0;
    }
    xd_xc_prefetch(c->xc, target, c->hint, n_hint);
}

/* MoE FFN of layer l on xb [n x d]; adds into x. */
int moe_ffn(xd_cuda_ctx *c, int64_t l, int32_t n, struct xd_stats *stats) {
    const struct xd_model *m = c->m;
    const struct xd_hparams *hp = &m->hp;
    const dlayer *D = &c->L[l];
    const int64_t d = hp->d_model, k = hp->n_expert_used, ne = hp->n_expert, ff = hp->n_ff_exp;
    const int64_t P = l + c->prefetch_layers < hp->n_layer ? c->prefetch_layers
                                                           : hp->n_layer - 1 - l;
    /* router logits [n x ne] = W_gate_inp @ xb; and the guesses for the next P layers */
    mark(c, "router");
    const rows xq = {c->xb, d, nullptr, 1, c->q8 ? c->qx : nullptr, c->qx_ld_d};
    CU(c, mm(D->gate_inp, xq, rows{c->router, ne, nullptr, 1, nullptr, 0}, n, false,
             c->st), "router");
    for (int64_t i = 0; i < P; i++) {
        const dlayer *N = &c->L[l + 1 + i];
        float *r = c->router + (size_t)(1 + i) * (size_t)n * ne;
        CU(c, rmsnorm(c->att, c->x, N->ffn_norm, n, d, hp->rms_eps, c->st), "rmsnorm");
        CU(c, mm(N->gate_inp, rows{c->att, d, nullptr, 1, nullptr, 0}, rows{r, ne, nullptr, 1, nullptr, 0}, n, false,
                 c->st), "router guess");
    }
    mark(c, "d2h+sync+route+begin");
    CU(c, cudaMemcpyAsync(c->h_router, c->router, (size_t)(1 + P) * n * ne * 4,
                          cudaMemcpyDeviceToHost, c->st), "router logits to host");
    CU(c, cudaStreamSynchronize(c->st), "router");
    for (int32_t t = 0; t < n; t++)
        xd__moe_route(hp, c->h_router + t * ne, c->sel + t * k, c->selw + t * k);
    /* group (token, slot) pairs by expert: counting sort, stable in token order */
    int32_t *count = c->count, *order = c->h_order;
    memset(count, 0, (size_t)(ne + 2) * sizeof *count);
    for (int64_t i = 0; i < n * k; i++) count[c->sel[i] + 2]++;
    for (int64_t e = 0; e < ne; e++) count[e + 2] += count[e + 1];
    for (int64_t i = 0; i < n * k; i++) order[count[c->sel[i] + 1]++] = (int32_t)i;
    /* order then weights, adjacent in pinned memory: one copy up */
    float *h_selw = (float *)(order + n * k), *d_selw = (float *)(c->d_order + n * k);
    memcpy(h_selw, c->selw, (size_t)(n * k) * sizeof(float));
    CU(c, cudaMemcpyAsync(c->d_order, order, (size_t)(2 * n * k) * 4, cudaMemcpyHostToDevice,
                          c->st), "expert order and weights");
    int32_t n_need = 0;
    for (int32_t e = 0; e < ne; e++)
        if (count[e + 1] > count[e]) c->need[n_need++] = e;
    int rc = xd_xc_set_begin(c->set, l, c->need, n_need);
    if (rc) return fail(c, rc, "expert cache: %s", xd_strerror(rc));
    for (int64_t i = 0; i < P; i++)
        prefetch_hints(c, l + 1 + i, c->h_router + (size_t)(1 + i) * (size_t)n * ne, n);
    int32_t e;
    struct xd_expert_view ev;
    mark(c, "experts");
    while ((rc = xd_xc_set_next(c->set, &e, &ev)) > 0) {
        const int32_t lo = count[e], mt = count[e + 1] - lo;
        const uint8_t *pg, *pu, *pd;
        size_t fb = 0;
        int r2 = expert_ptr(c, D, 0, &ev.gate, &fb, &pg);
        if (!r2) r2 = expert_ptr(c, D, 1, &ev.up, &fb, &pu);
        if (!r2) r2 = expert_ptr(c, D, 2, &ev.down, &fb, &pd);
        cudaError_t ce = cudaSuccess;
        if (!r2) {
            /* h [mt x ff] = silu(W_gate @ xg) * (W_up @ xg), xg gathered from xb */
            rows xg = xq;
            xg.idx = c->d_order + lo, xg.div = (int32_t)k;
            ce = mm_swiglu(mat_of(&ev.gate, pg), mat_of(&ev.up, pu), xg,
                           rows{c->h, ff, nullptr, 1, nullptr, 0}, mt, c->st);
            /* slot_out[order[lo+i]] (d,) = W_down @ h[i] */
            rows hr = {c->h, ff, nullptr, 1, nullptr, 0};
            if (ce == cudaSuccess && c->q8) {
                ce = quant_q8_256(hr, mt, ff, c->qh, c->qh_ld, c->st);
                hr.q8 = c->qh, hr.q8_ld = c->qh_ld;
            }
            if (ce == cudaSuccess)
                ce = mm(mat_of(&ev.down, pd), hr, rows{c->slot_out, d, c->d_order + lo, 1, nullptr, 0}, mt,
                        false, c->st);
            /* the cache may refill an offloaded slot as soon as it is released */
            if (ce == cudaSuccess && (c->offloaded || fb)) ce = cudaStreamSynchronize(c->st);
        }
        xd_xc_release(c->xc, l, e);
        if (r2) {
            xd_xc_set_end(c->set);
            return r2;
        }
        if (ce != cudaSuccess) {
            xd_xc_set_end(c->set);
            return cuda_fail(c, ce, "expert matmul");
        }
        stats->expert_tokens += (uint64_t)mt;
        stats->experts_touched++;
    }
    if (rc < 0) return fail(c, rc, "expert read failed: %s", xd_strerror(rc));
    /* x[t] += sum_j w[t,j] * slot_out[t,j], in slot order */
    mark(c, "combine");
    CU(c, moe_combine(c->x, c->slot_out, d_selw, (int)k, d, n, c->st), "moe combine");
    return 0;
}

}  // namespace

extern "C" int xd_cuda_forward(struct xd_cuda_ctx *c, int32_t n, const int32_t *tok,
                               const int32_t *pos, const int32_t *seq, const bool *want,
                               float *logits, int64_t *n_out, struct xd_stats *stats) {
    const struct xd_model *m = c->m;
    const struct xd_hparams *hp = &m->hp;
    const int64_t d = hp->d_model, hd = hp->head_dim;
    const int64_t qd = hp->n_head * hd, kvd = hp->n_head_kv * hd, nv = hp->n_vocab;
    const float scale = 1.0f / sqrtf((float)hd);
    if (n <= 0) return 0;
    if (n > c->n_batch) return fail(c, XD_E_INVALID, "chunk larger than n_batch");
    /* batch up: tokens, positions, sequences, wanted rows */
    struct timespec w0;
    if (c->pf) clock_gettime(CLOCK_MONOTONIC, &w0);
    mark(c, "upload");
    int32_t n_want = 0;
    for (int32_t t = 0; t < n; t++) {
        c->h_in[t] = tok[t];
        c->h_in[c->n_batch + t] = pos[t];
        c->h_in[2 * c->n_batch + t] = seq[t];
        if (want[t]) c->h_in[3 * c->n_batch + n_want++] = t;
    }
    CU(c, cudaMemcpyAsync(c->d_in, c->h_in, (size_t)4 * c->n_batch * 4, cudaMemcpyHostToDevice,
                          c->st), "batch upload");
    const int32_t *d_tok = c->d_in, *d_pos = c->d_in + c->n_batch, *d_seq = c->d_in + 2 * c->n_batch;
    const int32_t *d_want = c->d_in + 3 * c->n_batch;
    const rope_args ra = {(int)hp->n_head, (int)hp->n_head_kv, (int)hd, (int)hp->n_rot,
                          m->rope == XD_ROPE_NEOX, powf(hp->rope_base, -2.0f / (float)hp->n_rot),
                          c->n_ctx};
    const rows X = {c->x, d, nullptr, 1, nullptr, 0};
    mark(c, "embedding");
    CU(c, get_rows(c->tok_embd, d_tok, c->x, n, c->st), "embedding");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const dlayer *D = &c->L[l];
        const size_t loff = (size_t)l * c->layer_kv;
        /* attention: xb = rmsnorm(x); q,k,v = W xb; (qk-norm); rope; store; attend; x += Wo att */
        mark(c, "attn_norm");
        rows XB;
        if (int rc = norm_rows(c, D->attn_norm, n, nullptr, &XB)) return rc;
        mark(c, "wq+wk+wv");
        CU(c, mm(D->wq, XB, rows{c->q, qd, nullptr, 1, nullptr, 0}, n, false, c->st), "wq");
        CU(c, mm(D->wk, XB, rows{c->k, kvd, nullptr, 1, nullptr, 0}, n, false, c->st), "wk");
        CU(c, mm(D->wv, XB, rows{c->v, kvd, nullptr, 1, nullptr, 0}, n, false, c->st), "wv");
        if (m->qk_norm) {
            CU(c, rmsnorm(c->q, c->q, D->q_norm, n * hp->n_head, hd, hp->rms_eps, c->st), "q norm");
            CU(c, rmsnorm(c->k, c->k, D->k_norm, n * hp->n_head_kv, hd, hp->rms_eps, c->st),
               "k norm");
        }
        mark(c, "rope_store");
        CU(c, rope_store(ra, c->q, c->k, c->v, d_pos, d_seq, n, c->kc, c->vc, loff, c->st),
           "rope");
        mark(c, "attention");
        CU(c, attention(ra, c->att, c->q, c->kc, c->vc, loff, d_pos, d_seq, n, scale, c->st),
           "attention");
        mark(c, "wo");
        rows AT;
        if (int rc = quant_rows(c, c->att, qd, n, c->qx, c->qx_ld_qd, nullptr, 1, &AT)) return rc;
        CU(c, mm(D->wo, AT, X, n, true, c->st), "wo");
        /* feed-forward: xb = rmsnorm(x); x += ffn(xb) */
        mark(c, "ffn_norm");
        if (int rc = norm_rows(c, D->ffn_norm, n, nullptr, &XB)) return rc;
        if (m->moe) {
            int rc = moe_ffn(c, l, n, stats);
            if (rc) return rc;
        } else {
            CU(c, mm_swiglu(D->ffn_gate, D->ffn_up, XB, rows{c->h, hp->n_ff, nullptr, 1, nullptr, 0}, n, c->st),
               "ffn gate/up");
            rows H = {c->h, hp->n_ff, nullptr, 1, nullptr, 0};
            if (c->q8 && hp->n_ff % 256 == 0) {
                CU(c, quant_q8_256(H, n, hp->n_ff, c->qh, q8_row_bytes(hp->n_ff), c->st), "8-bit activations");
                H.q8 = c->qh, H.q8_ld = q8_row_bytes(hp->n_ff);
            }
            CU(c, mm(D->ffn_down, H, X, n, true, c->st), "ffn down");
        }
    }
    /* logits of the wanted rows: rmsnorm(x) @ W_out */
    if (n_want) {
        mark(c, "output_norm");
        rows XO;
        if (int rc = norm_rows(c, c->output_norm, n, d_want, &XO)) return rc;
        mark(c, "output");
        CU(c, mm(c->output, XO, rows{c->logits, nv, nullptr, 1, nullptr, 0}, n_want,
                 false, c->st), "output");
        mark(c, "logits_d2h");
        CU(c, cudaMemcpyAsync(logits + *n_out * nv, c->logits, (size_t)n_want * nv * 4,
                              cudaMemcpyDeviceToHost, c->st), "logits to host");
    }
    mark(c, "end");
    CU(c, cudaStreamSynchronize(c->st), "forward");
    if (c->pf) {
        struct timespec w1;
        clock_gettime(CLOCK_MONOTONIC, &w1);
        prof_collect(c, n, 1e3 * (double)(w1.tv_sec - w0.tv_sec) + 1e-6 * (double)(w1.tv_nsec - w0.tv_nsec));
    }
    *n_out += n_want;
    return 0;
}
