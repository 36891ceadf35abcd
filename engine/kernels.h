/* kernels.h - internal: the matmul kernels of the CPU backend, one table per instruction set.
 *
 * A weight type is multiplied with activations in one format (ggml's "vec_dot_type"): float
 * rows for F32 and F16, bf16 rows for BF16, 8-bit blocks of 32 (struct xd_qa32) for Q8_0 and
 * 8-bit blocks of 256 with sub-block sums (struct xd_qa256) for the k-quants. The backend
 * converts each activation row once per matmul, then calls the table's gemm for a range of
 * output rows.
 *
 * The numbers every table must produce (kernels_ref.c spells them out in scalar C):
 *  - quantized types: per block, the exact integer dot product of the weight and activation
 *    codes (with the block's integer scales and mins applied in integers), then one float
 *    step per block in block order: acc = fma(d_w * d_x, (float)isum, acc) (k-quants with
 *    mins add acc = fma(-(dmin_w * d_x), (float)isum_min, acc)). Integer sums are exact in any
 *    order, so every instruction set gives the same bits, and so does any batch size.
 *  - float types: 16 float lanes, element j of the row accumulated into lane j % 16 with fma
 *    in element order (for BF16 with dot-product pairs: lane j of each 32 takes element 2j+1,
 *    then 2j, as vdpbf16ps does), then the lanes summed as ((0+8)+(4+12))+((2+10)+(6+14)) ...
 *    — the fixed tree of hsum16 in kernels_ref.c.
 * So a row's result never depends on which rows or tokens share the call, or on the thread.
 */
#ifndef XD_KERNELS_H
#define XD_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model.h"
#include "quant.h"

enum xd_act {
    XD_ACT_NONE = 0, /* no fast kernel: the backend uses the type's vec_dot_f32 */
    XD_ACT_F32,      /* the float rows as given */
    XD_ACT_BF16,     /* bf16, round to nearest even */
    XD_ACT_Q8_32,    /* struct xd_qa32 per 32 values */
    XD_ACT_Q8_256,   /* struct xd_qa256 per 256 values */
    XD_ACT_COUNT,
};

/* 32 activations as x = d * q, q in [-127, 127]; sum = sum of q (for the unsigned-weight
 * trick of the VNNI kernels). */
struct xd_qa32 {
    float d;
    int32_t sum;
    int8_t q[32];
};

/* 256 activations as x = d * q; sums of q over each 16 and each 32 (for k-quant mins and the
 * Q6_K offset). */
struct xd_qa256 {
    float d;
    int16_t bsum16[16];
    int16_t bsum32[8];
    int8_t q[256];
};

#define XD_ATTN_MAXQ 4 /* query heads per attention kernel call */
#define XD_ATTN_BLK 16 /* positions per attention kernel call */

/* Bytes of one converted activation row of n values (n a multiple of the format's block);
 * 0 for XD_ACT_NONE/F32 (used in place). */
size_t xd__act_row_size(enum xd_act a, int64_t n);

/* Convert one row of n floats into format a at dst. */
typedef void (*xd_act_convert_fn)(const float *x, void *dst, int64_t n);

/* y[t * ldy + r] = row r of w . activation row t, for r in [r0, r1), t < n_tok. xa: activation
 * rows of format act(w->type), xa_stride bytes apart (for F32: the float rows). scratch:
 * XD_KERN_SCRATCH(n_tok) bytes, 64-byte aligned, owned by the calling thread. */
typedef void (*xd_gemm_fn)(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                           size_t xa_stride, int64_t n_tok, float *y, int64_t ldy, void *scratch);

/* Scratch a gemm may use (XD_KERN_SCRATCH(n_tok) bytes): packed weights of one panel of rows
 * over a slice of the row, and the float accumulators of every token of the call. */
#define XD_KERN_PANEL_BYTES (96 * 1024)
#define XD_KERN_SCRATCH(n_tok) ((size_t)XD_KERN_PANEL_BYTES + (size_t)(n_tok)*16 * sizeof(float))

struct xd_kern_type {
    enum xd_act act;
    xd_gemm_fn gemm;
    int64_t panel; /* rows handled together: ranges given to gemm should be multiples */
    /* The same product, bit for bit, of weights in the panel layout (xd__panel_repack with
     * this panel): the transposes of the row layout are plain loads. NULL: rows only. */
    xd_gemm_fn gemm_panel;
    int panel_head; /* the head argument of xd__panel_repack for this type */
};

/* The panel layout of a weight matrix of rows x row_bytes, rows a multiple of panel: for each
 * panel of `panel` rows and each block b of blk_bytes, a chunk of panel * blk_bytes bytes at
 * (panel index * panel * row_bytes) + b * panel * blk_bytes. With nd = (blk_bytes - head) / 4,
 * it holds, for j < nd, the dword at byte head + 4j of the block of every row (row order) at
 * 4 * panel * j, then the rest of every row's block (its first head bytes, then the bytes
 * after the last dword) at 4 * panel * nd. So the chunk is what the kernels' register
 * transposes of the row layout produce, in address order: one sequential stream per panel.
 * Same size as the rows, and a view of whole panels (an expert of a merged tensor) keeps its
 * offset. head: 2 for Q8_0 (its fp16 d precedes the codes), 0 for the k-quants. */
void xd__panel_repack(void *dst, const void *src, int64_t rows, size_t row_bytes, size_t blk_bytes,
                      size_t head, int64_t panel);

struct xd_kernels {
    const char *name;
    struct xd_kern_type type[XD_TYPE_COUNT];
    xd_act_convert_fn convert[XD_ACT_COUNT];
    /* attention over the F16 KV cache, nq <= XD_ATTN_MAXQ queries (head vectors q[h]) and
     * np <= XD_ATTN_BLK positions (rows k[p], v[p] of n values) at a time:
     *   dot_f16:  out[h * ldo + p] = q[h] . k[p], in the 16 lanes of the float types;
     *   axpy_f16: y[h][i] = fma(a[h * lda + p], v[p][i], y[h][i]) for p = 0, 1, ... in order
     *             (every element independent, so any width agrees).
     * Each row is widened from fp16 once for all queries. */
    void (*dot_f16)(float *out, int64_t ldo, const float *const *q, int nq,
                    const uint16_t *const *k, int np, int64_t n);
    void (*axpy_f16)(float *const *y, const float *a, int64_t lda, int nq, const uint16_t *const *v,
                     int np, int64_t n);
    /* element-wise, every element independent and computed by the same float operations in
     * every table (so any vector width agrees): y = x rounded to fp16 (round to nearest even);
     * s[i] = exp(s[i] - mx); y = gate / (1 + exp(-gate)) * up. exp is xd__expf_ref's. */
    void (*round_f16)(float *y, const float *x, int64_t n);
    void (*exp_sub)(float *s, float mx, int64_t n);
    void (*swiglu)(float *y, const float *gate, const float *up, int64_t n);
};

/* The tables. ref: portable scalar C, the definition of the numbers above. avx2 needs AVX2,
 * FMA and F16C; avx512 needs AVX-512 F/BW/VL/VNNI (its BF16 entry needs AVX512-BF16, so the
 * table is chosen by the caller's features: xd__kernels_avx512(has_bf16)). */
const struct xd_kernels *xd__kernels_ref(void);
const struct xd_kernels *xd__kernels_avx2(void);
const struct xd_kernels *xd__kernels_avx512(int has_bf16);

/* exp(x) as every table computes it: Cephes' expf, 2^n * p(r) with n = round(x / ln2) and
 * |r| <= ln2/2, in float mul/add only (no fma, no libm), ~1 ulp. x is clamped to [-87.3, 88]
 * first (NaN to 88), so 2^n stays a normal number. */
static inline float xd__expf_ref(float x) {
    x = x < 88.0f ? x : 88.0f;
    x = x > -87.3f ? x : -87.3f;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t e = ((int32_t)n + 127) * (1 << 23);
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

/* Scalar reference pieces, shared with the SIMD files for their odd ends. */
float xd__hsum16_ref(const float acc[16]);
void xd__act_q8_32_ref(const float *x, void *dst, int64_t n);
void xd__act_q8_256_ref(const float *x, void *dst, int64_t n);
void xd__act_bf16_ref(const float *x, void *dst, int64_t n);

#endif
