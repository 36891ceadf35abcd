/* ops_cpu_fast.c - the fast CPU ops (cpu, cpu-avx512, cpu-avx2, cpu-scalar): kernels from the
 * backend's table, work spread over its thread pool.
 *
 * matmul converts each activation row once (8-bit blocks, bf16 or floats, as the weight type
 * asks; kernels.h), then the threads claim guided chunks of output rows (whole panels, long runs
 * first) from a shared counter and run the table's gemm over every token for them; attention
 * hands out (pair of tokens, KV head) tiles the same way. A chunk's outputs are computed
 * identically whoever claims it, so the results do not depend on the thread count, and since
 * each row's sums run in a fixed order they do not depend on the batch either (ops.h).
 *
 * Trade-off: one pool run per matmul (a few microseconds of hand-off on 2-16 cores) keeps
 * the forward pass a plain sequence of ops; fusing gate+up or whole layers into one run would
 * save those hand-offs at the cost of the ops-table shape every backend shares.
 * Not done: rmsnorm and get_row are the reference's (they are a fraction of a percent);
 * rope computes each angle once per call instead of once per head (same values); swiglu and the
 * softmax use the kernels' exp (kernels.h: same bits at every vector width), not libm's.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "backend_impl.h"
#include "quant.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

static xd_act_convert_fn convert_for(const struct xd_backend *be, enum xd_act a) {
    if (be->kern && be->kern->convert[a]) return be->kern->convert[a];
    return be->kern2 ? be->kern2->convert[a] : NULL;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- matmul ---------------------------------------------------------------------------------- */

struct mm_job {
    struct xd_backend *be;
    const struct xd_tensor *w;
    const struct xd_kern_type *kt; /* NULL: vec_dot_f32 on float activations */
    xd_gemm_fn gemm;               /* kt's gemm, or its gemm_panel when w is a repacked copy */
    xd_act_convert_fn convert;
    const float *x;
    int64_t ldx;
    const void *xa;
    size_t xs;
    float *y;
    int64_t ldy, n_tok, chunk;
    _Atomic int64_t next;
};

static void mm_convert_task(void *arg, int ith, int nth) {
    (void)ith, (void)nth;
    struct mm_job *j = arg;
    int64_t t0, len;
    while ((t0 = xd_pool_claim(&j->next, j->n_tok, 4, &len)) >= 0)
        for (int64_t t = t0; t < t0 + len; t++)
            j->convert(j->x + t * j->ldx, (uint8_t *)j->be->xq + (size_t)t * j->xs, j->w->ne[0]);
}

static void mm_task(void *arg, int ith, int nth) {
    struct mm_job *j = arg;
    const int64_t rows = j->w->ne[1];
    void *scratch = j->be->scratch + (size_t)ith * j->be->scratch_stride;
    int64_t r0, len;
    while ((r0 = xd_pool_claim_guided(&j->next, rows, j->chunk, nth, &len)) >= 0) {
        if (j->kt) {
            j->gemm(j->w, r0, r0 + len, j->xa, j->xs, j->n_tok, j->y, j->ldy, scratch);
            continue;
        }
        const xd_vec_dot_f32_fn dot = xd_type_traits(j->w->type)->vec_dot_f32;
        for (int64_t r = r0; r < r0 + len; r++) {
            const void *row = (const char *)j->w->data + (size_t)r * j->w->nb[1];
            for (int64_t t = 0; t < j->n_tok; t++)
                j->y[t * j->ldy + r] = dot(row, j->x + t * j->ldx, j->w->ne[0]);
        }
    }
}

/* W (n_in, n_out) @ x[t] (n_in,) -> y[t] (n_out,) */
static void matmul(struct xd_backend *be, const struct xd_tensor *w, const float *x, int64_t ldx,
                   float *y, int64_t ldy, int64_t n_tok) {
    const uint64_t t_start = now_ns();
    const int64_t n = w->ne[0], rows = w->ne[1];
    struct mm_job j = {.be = be, .w = w, .x = x, .ldx = ldx, .y = y, .ldy = ldy};
    j.kt = xd__kern_for(be, w->type);
    size_t xs = 0;
    if (j.kt && j.kt->act != XD_ACT_F32) {
        /* rows of whole activation blocks that fit the buffer, or the float path */
        const int64_t blk = j.kt->act == XD_ACT_Q8_32 ? 32 : j.kt->act == XD_ACT_Q8_256 ? 256 : 1;
        xs = xd__act_row_size(j.kt->act, n);
        j.convert = convert_for(be, j.kt->act);
        if (n % blk || n > be->max_row || !j.convert || xs == 0) j.kt = NULL;
    }
    /* the backend's copy in the panel layout if w lies in one (xd_backend_repack) */
    struct xd_tensor wpl;
    if (j.kt) j.gemm = j.kt->gemm;
    if (j.kt && j.kt->gemm_panel && be->n_pmap) {
        const struct xd_panel_map *pm = xd__panel_find(be, w->data);
        const size_t o = pm ? (size_t)((const uint8_t *)w->data - pm->src) : 0;
        if (pm && w->nb[1] == pm->row && o % pm->panel_bytes == 0 &&
            o + (size_t)rows * pm->row <= pm->len) {
            wpl = *w;
            wpl.data = pm->dst + o;
            j.w = &wpl;
            j.gemm = j.kt->gemm_panel;
        }
    }
    const int64_t panel = j.kt ? j.kt->panel : 1;
    const int nth = be->n_threads;
    /* rows are claimed in guided chunks (threadpool.h) of whole panels, at least 1/32 of the
     * rows per thread: long runs stream (the kernels prefetch within a run), the short last
     * ones even out the threads' finishing times */
    int64_t chunk = (rows + 32 * nth - 1) / (32 * nth);
    chunk = (chunk + panel - 1) / panel * panel;
    j.chunk = chunk < panel ? panel : chunk;
    /* tokens in slices that fit the converted-activation buffer (one slice in practice) */
    int64_t slice = j.kt ? be->max_tokens : n_tok; /* the kernels' scratch holds max_tokens */
    if (j.kt && xs && (int64_t)(be->xq_size / xs) < slice) slice = (int64_t)(be->xq_size / xs);
    slice = slice < 1 ? 1 : slice;
    for (int64_t t0 = 0; t0 < n_tok; t0 += slice) {
        j.n_tok = n_tok - t0 < slice ? n_tok - t0 : slice;
        j.x = x + t0 * ldx;
        j.y = y + t0 * ldy;
        if (j.kt && j.kt->act == XD_ACT_F32) {
            j.xa = j.x;
            j.xs = (size_t)ldx * sizeof(float);
        } else if (j.kt) {
            j.xa = be->xq;
            j.xs = xs;
            atomic_store_explicit(&j.next, 0, memory_order_relaxed);
            if (j.n_tok * n >= 16384 && nth > 1)
                xd_pool_run(be->pool, mm_convert_task, &j);
            else
                mm_convert_task(&j, 0, 1);
        }
        atomic_store_explicit(&j.next, 0, memory_order_relaxed);
        if (rows <= j.chunk || nth == 1)
            mm_task(&j, 0, 1);
        else
            xd_pool_run(be->pool, mm_task, &j);
    }
    be->stats.matmul_calls++;
    be->stats.matmul_weight_bytes += (uint64_t)rows * w->nb[1];
    be->stats.matmul_ns += now_ns() - t_start;
}

/* ---- attention ----------------------------------------------------------------------------- */

struct attn_job {
    struct xd_backend *be;
    float *out;
    const float *q;
    int64_t ld;
    const struct xd_kv *kv;
    int64_t layer;
    const int32_t *seq, *pos;
    int64_t n_tok, n_head, n_head_kv, head_dim;
    float scale;
    _Atomic int64_t next;
};

/* The KV rows of head g for positions [p0, min(p0 + XD_ATTN_BLK, end)) into rows, each
 * prefetched: a row is head_dim fp16 values at a 2 * n_head_kv * head_dim-byte stride within
 * a block and anywhere across blocks, which the hardware prefetchers do not follow (decode
 * attention stalled on these loads: 10% of a 16-row step at 80 positions). */
static inline void kv_rows(const struct attn_job *j,
                           const uint16_t *(*row)(const struct xd_kv *, int64_t, int32_t, int32_t),
                           int32_t seq, int64_t g, int32_t p0, int32_t end,
                           const uint16_t **rows) {
    const int64_t bytes = j->head_dim * (int64_t)sizeof(uint16_t);
    for (int32_t p = p0; p < end && p < p0 + XD_ATTN_BLK; p++) {
        rows[p - p0] = row(j->kv, j->layer, seq, p) + g * j->head_dim;
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)rows[p - p0] + o);
    }
}

/* Attention of a tile of nt consecutive tokens of one sequence (positions pos[t0], +1, ...) for
 * KV head g: the queries are (token, head) pairs, token-major, XD_ATTN_MAXQ of them sharing
 * each K and V row as it is widened from fp16, XD_ATTN_BLK rows per kernel call. Per query:
 * scores over its own positions 0..pos, softmax (sum in double, in position order), then
 * out += w_p * v_p in position order, exactly as if it were alone (the tile's later tokens see
 * more rows: the earlier tokens' extra scores are computed and ignored, and their V rows are
 * run only for the queries that see them). As in llama.cpp's attention over an F16 cache, q and
 * the softmax weights are rounded to fp16 before they meet K and V (the golden outputs were made
 * so, and matching it keeps the 8-bit path close to them); sums stay in float.
 * s: XD_ATTN_MAXQ rows of s_stride floats, qh: XD_ATTN_MAXQ * head_dim floats of scratch. */
static void attend_tile(const struct attn_job *j, int64_t t0, int nt, int64_t g, float *s,
                        size_t s_stride, float *qh) {
    const struct xd_kernels *k = j->be->kern;
    const int64_t hd = j->head_dim, group = j->n_head / j->n_head_kv;
    const int32_t seq = j->seq[t0];
    const int64_t hc = XD_ATTN_MAXQ / nt; /* heads per pass */
    for (int64_t h0 = g * group; h0 < (g + 1) * group; h0 += hc) {
        const int nh = (int)((g + 1) * group - h0 < hc ? (g + 1) * group - h0 : hc);
        const int nq = nt * nh;
        const float *q[XD_ATTN_MAXQ] = {0};
        float *y[XD_ATTN_MAXQ] = {0};
        int32_t npos[XD_ATTN_MAXQ] = {0};
        for (int qi = 0; qi < nq; qi++) {
            const int64_t t = t0 + qi / nh, h = h0 + qi % nh;
            k->round_f16(qh + qi * hd, j->q + t * j->ld + h * hd, hd);
            q[qi] = qh + qi * hd;
            y[qi] = j->out + t * j->ld + h * hd;
            npos[qi] = j->pos[t] + 1;
            memset(y[qi], 0, (size_t)hd * sizeof(float));
        }
        const int32_t n_pos = npos[nq - 1]; /* the last token's: the most rows */
        const uint16_t *rows[2][XD_ATTN_BLK];
        int cur = 0;
        kv_rows(j, xd_kv_key, seq, g, 0, n_pos, rows[cur]);
        for (int32_t p0 = 0; p0 < n_pos; p0 += XD_ATTN_BLK) {
            const int np = n_pos - p0 < XD_ATTN_BLK ? n_pos - p0 : XD_ATTN_BLK;
            kv_rows(j, xd_kv_key, seq, g, p0 + XD_ATTN_BLK, n_pos, rows[cur ^ 1]);
            k->dot_f16(s + p0, (int64_t)s_stride, q, nq, rows[cur], np, hd);
            cur ^= 1;
        }
        kv_rows(j, xd_kv_value, seq, g, 0, npos[0], rows[cur]); /* the softmax hides it */
        for (int qi = 0; qi < nq; qi++) {
            float *sq = s + qi * s_stride, mx = -INFINITY;
            for (int32_t p = 0; p < npos[qi]; p++) {
                sq[p] *= j->scale;
                mx = sq[p] > mx ? sq[p] : mx;
            }
            k->exp_sub(sq, mx, npos[qi]);
            double sum = 0.0;
            for (int32_t p = 0; p < npos[qi]; p++) sum += sq[p];
            const float inv = (float)(1.0 / sum);
            for (int32_t p = 0; p < npos[qi]; p++) sq[p] *= inv;
            k->round_f16(sq, sq, npos[qi]);
        }
        /* rows [npos of token i-1, npos of token i) go to the queries of tokens i.. (a suffix) */
        for (int ti = 0; ti < nt; ti++) {
            const int qa = ti * nh;
            const int32_t lo = ti ? npos[qa - 1] : 0, hi = npos[qa];
            if (ti) kv_rows(j, xd_kv_value, seq, g, lo, hi, rows[cur]);
            for (int32_t p0 = lo; p0 < hi; p0 += XD_ATTN_BLK) {
                const int np = hi - p0 < XD_ATTN_BLK ? hi - p0 : XD_ATTN_BLK;
                kv_rows(j, xd_kv_value, seq, g, p0 + XD_ATTN_BLK, hi, rows[cur ^ 1]);
                k->axpy_f16(y + qa, s + (size_t)qa * s_stride + p0, (int64_t)s_stride, nq - qa,
                            rows[cur], np, hd);
                cur ^= 1;
            }
        }
    }
}

/* Tiles: pairs of tokens (2i, 2i+1) when they are consecutive positions of one sequence and
 * XD_ATTN_MAXQ holds both tokens' heads of a group; otherwise the tokens go one by one. */
static void attn_task(void *arg, int ith, int nth) {
    (void)nth;
    struct attn_job *j = arg;
    float *s = j->be->scores + (size_t)ith * j->be->scores_stride;
    const size_t s_stride = ((size_t)j->be->max_pos + 15) / 16 * 16;
    float *qh = s + XD_ATTN_MAXQ * s_stride;
    const int64_t group = j->n_head / j->n_head_kv, n_tiles = (j->n_tok + 1) / 2;
    const int64_t total = n_tiles * j->n_head_kv;
    int64_t i, len;
    while ((i = xd_pool_claim(&j->next, total, 1, &len)) >= 0) {
        const int64_t t0 = 2 * (i / j->n_head_kv), g = i % j->n_head_kv;
        const bool pair = t0 + 1 < j->n_tok && 2 * group <= XD_ATTN_MAXQ &&
                          j->seq[t0 + 1] == j->seq[t0] && j->pos[t0 + 1] == j->pos[t0] + 1;
        if (pair) {
            attend_tile(j, t0, 2, g, s, s_stride, qh);
        } else {
            attend_tile(j, t0, 1, g, s, s_stride, qh);
            if (t0 + 1 < j->n_tok) attend_tile(j, t0 + 1, 1, g, s, s_stride, qh);
        }
    }
}

static void attention(struct xd_backend *be, float *out, const float *q, int64_t ld,
                      const struct xd_kv *kv, int64_t layer, const int32_t *seq, const int32_t *pos,
                      int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                      float scale) {
    const uint64_t t_start = now_ns();
    struct attn_job j = {.be = be,
                         .out = out,
                         .q = q,
                         .ld = ld,
                         .kv = kv,
                         .layer = layer,
                         .seq = seq,
                         .pos = pos,
                         .n_tok = n_tok,
                         .n_head = n_head,
                         .n_head_kv = n_head_kv,
                         .head_dim = head_dim,
                         .scale = scale};
    atomic_store_explicit(&j.next, 0, memory_order_relaxed);
    if (be->n_threads == 1 || n_tok * n_head_kv == 1)
        attn_task(&j, 0, 1);
    else
        xd_pool_run(be->pool, attn_task, &j);
    be->stats.attn_calls++;
    be->stats.attn_ns += now_ns() - t_start;
}

/* ---- element-wise ---------------------------------------------------------------------------- */

/* As the reference (same float operations, same order), with each angle's cos/sin computed
 * once for all heads instead of once per head. */
static void rope(struct xd_backend *be, float *x, int64_t n_head, int64_t head_dim, int64_t n_rot,
                 int32_t pos, float base, enum xd_rope_style style) {
    (void)be;
    float cs[512][2];
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    for (int64_t i0 = 0; i0 < n_rot / 2; i0 += 512) { /* n_rot/2 <= 512 in one pass in practice */
        const int64_t m = n_rot / 2 - i0 < 512 ? n_rot / 2 - i0 : 512;
        float theta = (float)pos;
        for (int64_t i = 0; i < i0; i++) theta *= theta_scale;
        for (int64_t i = 0; i < m; i++, theta *= theta_scale) {
            cs[i][0] = cosf(theta);
            cs[i][1] = sinf(theta);
        }
        for (int64_t h = 0; h < n_head; h++) {
            float *v = x + h * head_dim;
            for (int64_t i = 0; i < m; i++) {
                const int64_t ii = i0 + i;
                const int64_t a = style == XD_ROPE_NORM ? 2 * ii : ii;
                const int64_t b = style == XD_ROPE_NORM ? 2 * ii + 1 : ii + n_rot / 2;
                const float x0 = v[a], x1 = v[b], c = cs[i][0], s = cs[i][1];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}

/* y = gate * sigmoid(gate) * up, evaluated as gate / (1 + exp(-gate)) * up (kernels.h) */
static void swiglu(struct xd_backend *be, float *y, const float *gate, const float *up, int64_t n) {
    be->kern->swiglu(y, gate, up, n);
}

static const struct xd_ops ops_cpu_fast = {
    .name = "cpu",
    .matmul = matmul,
    .rmsnorm = xd__rmsnorm_ref,
    .rope = rope,
    .attention = attention,
    .swiglu = swiglu,
    .get_row = xd__get_row_ref,
};

const struct xd_ops *xd__ops_cpu_fast(void) { return &ops_cpu_fast; }
