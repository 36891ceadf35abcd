/* kernels_ref.c - the scalar reference of the CPU backend's matmul kernels.
 *
 * This file defines the numbers (see kernels.h): activation rows are converted once (8-bit
 * blocks with a float scale for the quantized weight types, bf16 for BF16, floats otherwise),
 * each quantized block contributes its exact integer dot product through one fma, and float
 * types accumulate in 16 fixed lanes. The AVX2 and AVX-512 tables must give exactly these bits
 * (tests/test_kernels.c); the only exception is stated there (vdpbf16ps flushes denormals).
 * Written for clarity, not speed: one output at a time, every loop in element order.
 *
 * Trade-off of 8-bit activations: about the accuracy llama.cpp has (its golden outputs are made
 * that way), for integer dot products that run 4-8x faster than float ones. The float scale of
 * an activation block is kept in float (llama.cpp rounds it to fp16), which costs nothing.
 * Not here: types without a fast kernel (Q4_0, Q5_*, Q2_K, Q3_K, ...) keep quant.c's
 * vec_dot_f32, which the backend calls directly.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "quant_blocks.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

size_t xd__act_row_size(enum xd_act a, int64_t n) {
    switch (a) {
    case XD_ACT_BF16: return (size_t)n * 2;
    case XD_ACT_Q8_32: return (size_t)(n / 32) * sizeof(struct xd_qa32);
    case XD_ACT_Q8_256: return (size_t)(n / 256) * sizeof(struct xd_qa256);
    default: return 0;
    }
}

/* ---- activation conversion ----------------------------------------------------------------- */

/* round(v) to nearest even, clamped to [-127, 127]; NaN gives -127, as cvtps2dq's
 * "integer indefinite" clamped by the SIMD kernels does. */
static inline int8_t q8_round(float v) {
    if (!(v >= -127.0f)) return -127;
    if (v > 127.0f) return 127;
    return (int8_t)nearbyintf(v);
}

/* x = d * q with d = max|x| / 127 per 32 values, q = round(x * 127 / max|x|). The scale is
 * kept as llama.cpp keeps it (rounded to fp16 here, 1 / (127 / max|x|) for 256 values below):
 * its 8-bit golden outputs then differ from ours by summation order, not by rounding. */
void xd__act_q8_32_ref(const float *x, void *dst, int64_t n) {
    struct xd_qa32 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = xd_fp16_to_fp32(xd_fp32_to_fp16(amax / 127.0f)); /* fp16, as llama.cpp */
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) sum += y[b].q[j] = q8_round(x[j] * id);
        y[b].sum = sum;
    }
}

/* The same per 256, with sums of the codes over each 16 and each 32. */
void xd__act_q8_256_ref(const float *x, void *dst, int64_t n) {
    struct xd_qa256 *y = dst;
    for (int64_t b = 0; b < n / 256; b++, x += 256) {
        float amax = 0.0f;
        for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = amax != 0.0f ? 1.0f / id : 0.0f; /* 1/id, as llama.cpp's q8_K */
        for (int j = 0; j < 256; j++) y[b].q[j] = q8_round(x[j] * id);
        for (int s = 0; s < 16; s++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].q[16 * s + j];
            y[b].bsum16[s] = (int16_t)sum;
        }
        for (int s = 0; s < 8; s++)
            y[b].bsum32[s] = (int16_t)(y[b].bsum16[2 * s] + y[b].bsum16[2 * s + 1]);
    }
}

void xd__act_bf16_ref(const float *x, void *dst, int64_t n) {
    uint16_t *y = dst;
    for (int64_t j = 0; j < n; j++) y[j] = xd_fp32_to_bf16(x[j]);
}

/* ---- float types: 16 lanes ------------------------------------------------------------------ */

/* The fixed tree: lanes i and i+8, then i and i+4, i and i+2, 0 and 1. */
float xd__hsum16_ref(const float a[16]) {
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

static inline float ld_f16(const uint8_t *p, int64_t j) {
    uint16_t h;
    memcpy(&h, p + 2 * j, 2);
    return xd_fp16_to_fp32(h);
}

static inline float ld_bf16(const uint8_t *p, int64_t j) {
    uint16_t h;
    memcpy(&h, p + 2 * j, 2);
    return xd_bf16_to_fp32(h);
}

/* Element j into lane j % 16; the last chunk is padded with 0 * 0 as the masked SIMD loads do. */
static float dot_f32(const void *row, const void *xa, int64_t n) {
    const float *w = row, *x = xa;
    float acc[16] = {0};
    for (int64_t j = 0; j < (n + 15) / 16 * 16; j++) {
        const float wj = j < n ? w[j] : 0.0f, xj = j < n ? x[j] : 0.0f;
        acc[j % 16] = fmaf(wj, xj, acc[j % 16]);
    }
    return xd__hsum16_ref(acc);
}

static float dot_f16(const void *row, const void *xa, int64_t n) {
    const float *x = xa;
    float acc[16] = {0};
    for (int64_t j = 0; j < (n + 15) / 16 * 16; j++) {
        const float wj = j < n ? ld_f16(row, j) : 0.0f, xj = j < n ? x[j] : 0.0f;
        acc[j % 16] = fmaf(wj, xj, acc[j % 16]);
    }
    return xd__hsum16_ref(acc);
}

/* vdpbf16ps order (Intel SDM): in each 32 elements, lane i adds the product of element 2i+1,
 * then that of element 2i, each rounded to float (a bf16 product is exact in float, so each
 * step is one fma). */
static float dot_bf16(const void *row, const void *xa, int64_t n) {
    float acc[16] = {0};
    for (int64_t j = 0; j < (n + 31) / 32 * 32; j += 2) {
        const int lane = (int)(j % 32) / 2;
        for (int64_t e = j + 1; e >= j; e--) {
            const float we = e < n ? ld_bf16(row, e) : 0.0f, xe = e < n ? ld_bf16(xa, e) : 0.0f;
            acc[lane] = fmaf(we, xe, acc[lane]);
        }
    }
    return xd__hsum16_ref(acc);
}

/* ---- attention primitives ------------------------------------------------------------------ */

static void attn_dot_f16(float *out, int64_t ldo, const float *const *q, int nq,
                         const uint16_t *const *k, int np, int64_t n) {
    for (int h = 0; h < nq; h++)
        for (int p = 0; p < np; p++) out[h * ldo + p] = dot_f16(k[p], q[h], n);
}

static void attn_axpy_f16(float *const *y, const float *a, int64_t lda, int nq,
                          const uint16_t *const *v, int np, int64_t n) {
    for (int h = 0; h < nq; h++)
        for (int p = 0; p < np; p++)
            for (int64_t i = 0; i < n; i++)
                y[h][i] = fmaf(a[h * lda + p], xd_fp16_to_fp32(v[p][i]), y[h][i]);
}

static void ew_round_f16(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = xd_fp16_to_fp32(xd_fp32_to_fp16(x[i]));
}

static void ew_exp_sub(float *s, float mx, int64_t n) {
    for (int64_t i = 0; i < n; i++) s[i] = xd__expf_ref(s[i] - mx);
}

static void ew_swiglu(float *y, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + xd__expf_ref(-g[i])) * u[i];
}

/* ---- quantized types: exact integer blocks, one fma each ---------------------------------- */

static float dot_q8_0(const void *row, const void *xa, int64_t n) {
    const struct xd_block_q8_0 *w = row;
    const struct xd_qa32 *x = xa;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t is = 0;
        for (int j = 0; j < 32; j++) is += w[b].qs[j] * x[b].q[j];
        acc = fmaf(xd_fp16_to_fp32(w[b].d) * x[b].d, (float)is, acc);
    }
    return acc;
}

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (quant.c's k4_scale_min). */
static inline void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* The two fma of a k-quant block with mins: d*I1 - dmin*I2. */
static inline float k_step(float acc, float d, float dmin, float dx, int32_t i1, int32_t i2) {
    acc = fmaf(d * dx, (float)i1, acc);
    return fmaf(-(dmin * dx), (float)i2, acc);
}

/* Q4_K: I1 = sum_s sc_s * (q . x over sub-block s), I2 = sum_s m_s * (sum of x codes of s). */
static float dot_q4_K(const void *row, const void *xa, int64_t n) {
    const struct xd_block_q4_K *w = row;
    const struct xd_qa256 *x = xa;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 256; b++) {
        int32_t i1 = 0, i2 = 0;
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(w[b].scales, s, &sc, &m);
            const uint8_t *q = w[b].qs + 32 * (s / 2);
            int32_t is = 0;
            for (int l = 0; l < 32; l++)
                is += ((q[l] >> (4 * (s % 2))) & 0x0f) * x[b].q[32 * s + l];
            i1 += sc * is;
            i2 += m * x[b].bsum32[s];
        }
        acc = k_step(acc, xd_fp16_to_fp32(w[b].d), xd_fp16_to_fp32(w[b].dmin), x[b].d, i1, i2);
    }
    return acc;
}

/* Q5_K: Q4_K's codes plus bit s of qh[l] as the fifth bit. */
static float dot_q5_K(const void *row, const void *xa, int64_t n) {
    const struct xd_block_q5_K *w = row;
    const struct xd_qa256 *x = xa;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 256; b++) {
        int32_t i1 = 0, i2 = 0;
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(w[b].scales, s, &sc, &m);
            const uint8_t *q = w[b].qs + 32 * (s / 2);
            int32_t is = 0;
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> (4 * (s % 2))) & 0x0f) | ((w[b].qh[l] >> s) & 1) << 4;
                is += v * x[b].q[32 * s + l];
            }
            i1 += sc * is;
            i2 += m * x[b].bsum32[s];
        }
        acc = k_step(acc, xd_fp16_to_fp32(w[b].d), xd_fp16_to_fp32(w[b].dmin), x[b].d, i1, i2);
    }
    return acc;
}

/* Q6_K: I = sum over the 16 sub-blocks of 16 of sc * ((q - 32) . x). */
static float dot_q6_K(const void *row, const void *xa, int64_t n) {
    const struct xd_block_q6_K *w = row;
    const struct xd_qa256 *x = xa;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 256; b++) {
        int32_t isum = 0;
        for (int e0 = 0; e0 < 256; e0 += 16) {
            const int half = e0 / 128, k = (e0 % 128) / 32, l0 = e0 % 32;
            const uint8_t *ql = w[b].ql + 64 * half + 32 * (k % 2), *qh = w[b].qh + 32 * half;
            int32_t is = 0;
            for (int l = l0; l < l0 + 16; l++) {
                const int q = (((ql[l] >> (4 * (k / 2))) & 0x0f) | ((qh[l] >> (2 * k)) & 3) << 4);
                is += (q - 32) * x[b].q[e0 + l - l0];
            }
            isum += w[b].scales[e0 / 16] * is;
        }
        acc = fmaf(xd_fp16_to_fp32(w[b].d) * x[b].d, (float)isum, acc);
    }
    return acc;
}

/* ---- the table ------------------------------------------------------------------------------ */

typedef float (*dot_fn)(const void *row, const void *xa, int64_t n);

static const dot_fn ref_dot[XD_TYPE_COUNT] = {
    [XD_TYPE_F32] = dot_f32,   [XD_TYPE_F16] = dot_f16,   [XD_TYPE_BF16] = dot_bf16,
    [XD_TYPE_Q8_0] = dot_q8_0, [XD_TYPE_Q4_K] = dot_q4_K, [XD_TYPE_Q5_K] = dot_q5_K,
    [XD_TYPE_Q6_K] = dot_q6_K,
};

/* One dot product per output, rows outer. */
static void gemm_ref(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                     size_t xa_stride, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    (void)scratch;
    const dot_fn dot = ref_dot[w->type];
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const char *)w->data + (size_t)r * w->nb[1];
        for (int64_t t = 0; t < n_tok; t++)
            y[t * ldy + r] = dot(row, (const char *)xa + (size_t)t * xa_stride, w->ne[0]);
    }
}

static const struct xd_kernels kernels_ref = {
    .name = "ref",
    .type =
        {
            [XD_TYPE_F32] = {.act = XD_ACT_F32, .gemm = gemm_ref, .panel = 1},
            [XD_TYPE_F16] = {.act = XD_ACT_F32, .gemm = gemm_ref, .panel = 1},
            [XD_TYPE_BF16] = {.act = XD_ACT_BF16, .gemm = gemm_ref, .panel = 1},
            [XD_TYPE_Q8_0] = {.act = XD_ACT_Q8_32, .gemm = gemm_ref, .panel = 1},
            [XD_TYPE_Q4_K] = {.act = XD_ACT_Q8_256, .gemm = gemm_ref, .panel = 1},
            [XD_TYPE_Q5_K] = {.act = XD_ACT_Q8_256, .gemm = gemm_ref, .panel = 1},
            [XD_TYPE_Q6_K] = {.act = XD_ACT_Q8_256, .gemm = gemm_ref, .panel = 1},
        },
    .convert =
        {
            [XD_ACT_BF16] = xd__act_bf16_ref,
            [XD_ACT_Q8_32] = xd__act_q8_32_ref,
            [XD_ACT_Q8_256] = xd__act_q8_256_ref,
        },
    .dot_f16 = attn_dot_f16,
    .axpy_f16 = attn_axpy_f16,
    .round_f16 = ew_round_f16,
    .exp_sub = ew_exp_sub,
    .swiglu = ew_swiglu,
};

const struct xd_kernels *xd__kernels_ref(void) { return &kernels_ref; }

void xd__panel_repack(void *dst, const void *src, int64_t rows, size_t row_bytes, size_t blk_bytes,
                      size_t head, int64_t panel) {
    const size_t nd = (blk_bytes - head) / 4, tail = (blk_bytes - head) % 4;
    const size_t rest = head + tail, nblk = row_bytes / blk_bytes;
    const size_t np = (size_t)panel;
    for (int64_t p0 = 0; p0 < rows; p0 += panel) {
        const uint8_t *in = (const uint8_t *)src + (size_t)p0 * row_bytes;
        uint8_t *out = (uint8_t *)dst + (size_t)p0 * row_bytes;
        for (size_t b = 0; b < nblk; b++, out += np * blk_bytes)
            for (size_t r = 0; r < np; r++) {
                const uint8_t *blk = in + r * row_bytes + b * blk_bytes;
                for (size_t j = 0; j < nd; j++)
                    memcpy(out + 4 * (np * j + r), blk + head + 4 * j, 4);
                uint8_t *o = out + 4 * np * nd + r * rest;
                memcpy(o, blk, head);
                memcpy(o + head, blk + head + 4 * nd, tail);
            }
    }
}
