/* kernels_avx512.c - the matmul kernels for AVX-512 (F, BW, VL, VNNI; BF16 where present).
 *
 * Quantized weights: the panel kernels of kernels_simd.h with 16 rows per zmm and vpdpbusd.
 * vpdpbusd multiplies unsigned by signed bytes, so Q8_0 codes are packed as w ^ 0x80 = w + 128
 * and each block's integer sum starts at -128 * sum(x codes) (struct xd_qa32 carries the sum);
 * the k-quant codes are non-negative already. Float weights (F32, F16, BF16): 16 lanes over the
 * elements of a row, 4 rows x 4 tokens of accumulators per step, then the fixed lane tree of
 * kernels.h. BF16 uses vdpbf16ps on bf16 activations where the CPU has AVX512-BF16 (the table
 * without it borrows the AVX2 emulation, same lanes). Every function carries its target
 * attribute: the file is compiled for baseline x86-64 and only called after cpuid said yes.
 * Not done: AMX, AVX512-FP16 (F16 weights are widened with vcvtph2ps and use float fma).
 */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "kernels.h"
#include "quant_blocks.h"

#if defined(__x86_64__)

#define XK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define XK_TARGET_BF16                                                                             \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")))
#define XK_INLINE __attribute__((always_inline))
#define XK_NL 16
#define XK_TMAX_Q8 8
#define XK_DIRECT_T_Q8 8 /* 32 zmm registers hold 8 tokens of accumulators */
#define XK_TMAX_K 4

typedef __m512i vi;
typedef __m512 vf;

/* ---- primitives for kernels_simd.h -------------------------------------------------------- */

struct xk_rows;
XK_TARGET static inline vi xk_load(const vi *p) { return _mm512_load_si512(p); }
XK_TARGET static inline vi xk_loadu(const void *p) { return _mm512_loadu_si512(p); }
/* 16 bytes repeated in every 128 bits; a byte shuffle within each 128 bits (-1: zero) */
XK_TARGET static inline vi xk_bcast128(const void *p) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
}
XK_TARGET static inline vi xk_shuffle8(vi v, vi ctrl) { return _mm512_shuffle_epi8(v, ctrl); }
XK_TARGET static inline void xk_store(vi *p, vi v) { _mm512_store_si512(p, v); }
XK_TARGET static inline vf xk_loadf(const void *p) { return _mm512_load_ps(p); }
XK_TARGET static inline void xk_storef(void *p, vf v) { _mm512_store_ps(p, v); }
XK_TARGET static inline vi xk_zero(void) { return _mm512_setzero_si512(); }
XK_TARGET static inline vf xk_zerof(void) { return _mm512_setzero_ps(); }
XK_TARGET static inline vi xk_set1(int v) { return _mm512_set1_epi32(v); }
XK_TARGET static inline vi xk_set1_8(int v) { return _mm512_set1_epi8((char)v); }
XK_TARGET static inline vf xk_set1f(float v) { return _mm512_set1_ps(v); }
XK_TARGET static inline vi xk_bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}
XK_TARGET static inline vi xk_and(vi a, vi b) { return _mm512_and_si512(a, b); }
XK_TARGET static inline vi xk_or(vi a, vi b) { return _mm512_or_si512(a, b); }
XK_TARGET static inline vi xk_add32(vi a, vi b) { return _mm512_add_epi32(a, b); }
XK_TARGET static inline vi xk_mullo32(vi a, vi b) { return _mm512_mullo_epi32(a, b); }
XK_TARGET static inline vi xk_min32(vi a, vi b) { return _mm512_min_epi32(a, b); }
XK_TARGET static inline vi xk_srli16(vi a, int k) { return _mm512_srli_epi16(a, (unsigned)k); }
XK_TARGET static inline vi xk_slli16(vi a, int k) { return _mm512_slli_epi16(a, (unsigned)k); }
XK_TARGET static inline vi xk_srli32(vi a, int k) { return _mm512_srli_epi32(a, (unsigned)k); }
XK_TARGET static inline vi xk_slli32(vi a, int k) { return _mm512_slli_epi32(a, (unsigned)k); }
XK_TARGET static inline vi xk_srai32(vi a, int k) { return _mm512_srai_epi32(a, (unsigned)k); }
XK_TARGET static inline vf xk_cvt(vi a) { return _mm512_cvtepi32_ps(a); }
XK_TARGET static inline vf xk_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
XK_TARGET static inline vf xk_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
XK_TARGET static inline vf xk_fnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
/* acc + sum of 4 u8 x s8 products per lane (u: weight codes, s: activation codes) */
XK_TARGET static inline vi xk_dot_u8(vi acc, vi u, vi s) { return _mm512_dpbusd_epi32(acc, u, s); }
/* acc + sum of 2 s16 x s16 products per lane */
XK_TARGET static inline vi xk_dot_s16(vi acc, vi a, vi b) { return _mm512_dpwssd_epi32(acc, a, b); }
/* Q8_0: codes as unsigned (w + 128); the block sum starts at -128 * sum(x) */
XK_TARGET static inline vi xk_q8_prep(vi w) {
    return _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
}
XK_TARGET static inline vi xk_q8_init(int32_t xsum) { return _mm512_set1_epi32(-128 * xsum); }
XK_TARGET static inline vi xk_q8_dot(vi acc, vi w, vi x) { return _mm512_dpbusd_epi32(acc, w, x); }
/* the low 16 bits of each lane as fp16 -> float */
XK_TARGET static inline vf xk_f16_lo(vi v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }
/* 16 fp16 at p -> float */
XK_TARGET static inline vf xk_f16_load(const void *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

XK_TARGET static inline XK_INLINE void xk_transpose8(const struct xk_rows *rp, size_t off,
                                                     vi out[8]);
XK_TARGET static inline XK_INLINE void xk_transpose4(const struct xk_rows *rp, size_t off,
                                                     vi out[4]);
XK_TARGET static inline XK_INLINE vi xk_gather_rows(const struct xk_rows *rp, size_t off);

/* the first nr lanes of src (16 floats) -> dst */
XK_TARGET static inline void xk_store_rows(float *dst, const float *src, int nr) {
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << nr) - 1), _mm512_load_ps(src));
}

#include "kernels_simd.h"

XK_TARGET static inline XK_INLINE void xk_transpose8(const struct xk_rows *rp, size_t off,
                                                     vi out[8]) {
    vi r[8], t[8], u[8];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(rp->r[i] + off))),
            _mm256_loadu_si256((const __m256i *)(rp->r[i + 8] + off)), 1);
#pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    /* u[j]: dword j (128-bit quarters 0, 2) and j+4 (quarters 1, 3) of rows 0-3 | 8-11;
     * u[4+j]: the same of rows 4-7 | 12-15 */
    const vi lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const vi hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        out[j] = _mm512_permutex2var_epi64(u[j], lo, u[4 + j]);
        out[j + 4] = _mm512_permutex2var_epi64(u[j], hi, u[4 + j]);
    }
}

XK_TARGET static inline XK_INLINE void xk_transpose4(const struct xk_rows *rp, size_t off,
                                                     vi out[4]) {
    vi z[4];
#pragma GCC unroll 16
    for (int k = 0; k < 4; k++) { /* quarter c of z[k] = row 4c + k */
        z[k] = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(rp->r[k] + off)));
        for (int c = 1; c < 4; c++) {
            const __m128i q = _mm_loadu_si128((const __m128i *)(rp->r[4 * c + k] + off));
            switch (c) { /* the quarter index must be an immediate */
            case 1: z[k] = _mm512_inserti32x4(z[k], q, 1); break;
            case 2: z[k] = _mm512_inserti32x4(z[k], q, 2); break;
            default: z[k] = _mm512_inserti32x4(z[k], q, 3); break;
            }
        }
    }
    const vi t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const vi t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    out[1] = _mm512_unpackhi_epi64(t0, t2);
    out[2] = _mm512_unpacklo_epi64(t1, t3);
    out[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* The dword at off of every row, in one gather. */
XK_TARGET static inline XK_INLINE vi xk_gather_rows(const struct xk_rows *rp, size_t off) {
    return _mm512_i32gather_epi32(rp->roff, rp->r[0] + off, 1);
}

/* ---- activation conversion (bit-exact with kernels_ref.c) --------------------------------- */

XK_TARGET static inline float hmax16(__m512 v) {
    __m256 a = _mm256_max_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_max_ps(b, _mm_movehl_ps(b, b));
    b = _mm_max_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

/* 16 floats * id -> codes: clamped to [-127, 127] in float first (max_ps returns its second
 * operand for a NaN, so NaN -> -127 as in the ref), then rounded to nearest even. */
XK_TARGET static inline __m512i q8_codes(__m512 x, __m512 id) {
    const __m512 v = _mm512_max_ps(_mm512_mul_ps(x, id), _mm512_set1_ps(-127.0f));
    return _mm512_cvtps_epi32(_mm512_min_ps(v, _mm512_set1_ps(127.0f)));
}

XK_TARGET static void act_q8_32(const float *x, void *dst, int64_t n) {
    struct xd_qa32 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        const float amax = hmax16(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        y[b].d = xd_fp16_to_fp32(xd_fp32_to_fp16(amax / 127.0f)); /* fp16, as llama.cpp */
        const __m512i q0 = q8_codes(v0, id), q1 = q8_codes(v1, id);
        _mm_storeu_si128((__m128i *)y[b].q, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[b].q + 16), _mm512_cvtepi32_epi8(q1));
        y[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

XK_TARGET static void act_q8_256(const float *x, void *dst, int64_t n) {
    struct xd_qa256 *y = dst;
    for (int64_t b = 0; b < n / 256; b++, x += 256) {
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < 256; j += 16)
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
        const float amax = hmax16(m);
        const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        y[b].d = amax != 0.0f ? 1.0f / (127.0f / amax) : 0.0f; /* 1/id, as llama.cpp */
#pragma GCC unroll 16
        for (int s = 0; s < 16; s++) {
            const __m512i q = q8_codes(_mm512_loadu_ps(x + 16 * s), id);
            _mm_storeu_si128((__m128i *)(y[b].q + 16 * s), _mm512_cvtepi32_epi8(q));
            y[b].bsum16[s] = (int16_t)_mm512_reduce_add_epi32(q);
        }
#pragma GCC unroll 16
        for (int s = 0; s < 8; s++)
            y[b].bsum32[s] = (int16_t)(y[b].bsum16[2 * s] + y[b].bsum16[2 * s + 1]);
    }
}

/* ---- float weights: 16 lanes over the row, 4 rows x 4 tokens per step ---------------------- */

/* The lane tree of kernels.h: (i, i+8), (i, i+4), (i, i+2), (0, 1). */
XK_TARGET static inline float hsum16(__m512 v) {
    const __m256 s8 =
        _mm256_add_ps(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

/* The weights of 16 elements (j0.. of the row, m valid) as floats; zeros past the end. */
XK_TARGET static inline __m512 wload_f32(const uint8_t *row, int64_t j0, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, (const float *)row + j0);
}
XK_TARGET static inline __m512 wload_f16(const uint8_t *row, int64_t j0, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * j0));
}

#define XK_FR 4 /* rows per step */
#define XK_FT 4 /* tokens per step */

XK_TARGET static XK_ALWAYS void gemm_float(bool f16, const struct xd_tensor *w, int64_t r0,
                                           int64_t r1, const void *xa, size_t xs, int64_t n_tok,
                                           float *y, int64_t ldy) {
    const int64_t n = w->ne[0];
    for (int64_t r = r0; r < r1; r += XK_FR) {
        const int nr = r1 - r < XK_FR ? (int)(r1 - r) : XK_FR;
        const uint8_t *row[XK_FR];
        for (int i = 0; i < XK_FR; i++)
            row[i] = (const uint8_t *)w->data + (size_t)(r + (i < nr ? i : nr - 1)) * w->nb[1];
        for (int64_t t0 = 0; t0 < n_tok; t0 += XK_FT) {
            const int nt = n_tok - t0 < XK_FT ? (int)(n_tok - t0) : XK_FT;
            const float *x[XK_FT];
            for (int t = 0; t < XK_FT; t++)
                x[t] = (const float *)((const uint8_t *)xa +
                                       (size_t)(t0 + (t < nt ? t : nt - 1)) * xs);
            __m512 acc[XK_FR][XK_FT];
            for (int i = 0; i < XK_FR; i++)
                for (int t = 0; t < XK_FT; t++) acc[i][t] = _mm512_setzero_ps();
            for (int64_t j = 0; j < n; j += 16) {
                const __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
                __m512 wv[XK_FR], xv[XK_FT];
                for (int i = 0; i < XK_FR; i++)
                    wv[i] = f16 ? wload_f16(row[i], j, m) : wload_f32(row[i], j, m);
                for (int t = 0; t < XK_FT; t++) xv[t] = _mm512_maskz_loadu_ps(m, x[t] + j);
                for (int i = 0; i < XK_FR; i++)
                    for (int t = 0; t < XK_FT; t++)
                        acc[i][t] = _mm512_fmadd_ps(wv[i], xv[t], acc[i][t]);
            }
            for (int i = 0; i < nr; i++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * ldy + r + i] = hsum16(acc[i][t]);
        }
    }
}

XK_TARGET static void gemm_f32(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                               size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    (void)scratch;
    gemm_float(false, w, r0, r1, xa, xs, n_tok, y, ldy);
}

XK_TARGET static void gemm_f16(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                               size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    (void)scratch;
    gemm_float(true, w, r0, r1, xa, xs, n_tok, y, ldy);
}

/* BF16 x bf16 activations with vdpbf16ps: lane i of each 32 adds element 2i+1, then 2i. */
XK_TARGET_BF16 static void gemm_bf16(const struct xd_tensor *w, int64_t r0, int64_t r1,
                                     const void *xa, size_t xs, int64_t n_tok, float *y,
                                     int64_t ldy, void *scratch) {
    (void)scratch;
    const int64_t n = w->ne[0];
    for (int64_t r = r0; r < r1; r += XK_FR) {
        const int nr = r1 - r < XK_FR ? (int)(r1 - r) : XK_FR;
        const uint8_t *row[XK_FR];
        for (int i = 0; i < XK_FR; i++)
            row[i] = (const uint8_t *)w->data + (size_t)(r + (i < nr ? i : nr - 1)) * w->nb[1];
        for (int64_t t0 = 0; t0 < n_tok; t0 += XK_FT) {
            const int nt = n_tok - t0 < XK_FT ? (int)(n_tok - t0) : XK_FT;
            const uint8_t *x[XK_FT];
            for (int t = 0; t < XK_FT; t++)
                x[t] = (const uint8_t *)xa + (size_t)(t0 + (t < nt ? t : nt - 1)) * xs;
            __m512 acc[XK_FR][XK_FT];
            for (int i = 0; i < XK_FR; i++)
                for (int t = 0; t < XK_FT; t++) acc[i][t] = _mm512_setzero_ps();
            for (int64_t j = 0; j < n; j += 32) {
                const __mmask32 m = n - j >= 32 ? 0xffffffffu : (__mmask32)((1u << (n - j)) - 1);
                __m512bh wv[XK_FR], xv[XK_FT];
                for (int i = 0; i < XK_FR; i++)
                    wv[i] = (__m512bh)_mm512_maskz_loadu_epi16(m, row[i] + 2 * j);
                for (int t = 0; t < XK_FT; t++)
                    xv[t] = (__m512bh)_mm512_maskz_loadu_epi16(m, x[t] + 2 * j);
                for (int i = 0; i < XK_FR; i++)
                    for (int t = 0; t < XK_FT; t++)
                        acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], xv[t]);
            }
            for (int i = 0; i < nr; i++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * ldy + r + i] = hsum16(acc[i][t]);
        }
    }
}

/* ---- attention primitives ------------------------------------------------------------------ */

/* The lane sums of 16 vectors, each by hsum16's tree (the same additions in the same order,
 * so the same bits), in one vector: lane L holds the sum of v[HS_SLOT(L)]. 45 instructions
 * where 16 hsum16 take 128 (8 each), most of them on the critical path. */
#define HS_SLOT(L) (4 * ((L) % 4) + (L) / 4)
XK_TARGET static inline __m512 hsum16x16(const __m512 v[16]) {
    __m512 u[8], w[4], x[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* s8 = lo + hi halves: v[2i] in lanes 0..7, v[2i+1] in 8..15 */
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* s4: block b holds v[4i+b]'s */
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xdd));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* s2: pairs within each block */
        x[i] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * i], w[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(w[2 * i], w[2 * i + 1], 0xee));
    return _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], 0x88), _mm512_shuffle_ps(x[0], x[1], 0xdd));
}

/* P = 16 / NQ positions (4 for NQ 3) x NQ queries in 16 accumulators; the slot h * P + i of
 * (query h, position i) is reduced into lane h * P + i by hsum16x16. */
XK_TARGET static inline XK_INLINE void attn_dot_f16_T(float *out, int64_t ldo,
                                                      const float *const *q,
                                                      const uint16_t *const *k, int np, int64_t n,
                                                      const int NQ) {
    const int P = 16 / (NQ == 3 ? 4 : NQ);
    for (int p0 = 0; p0 < np; p0 += P) {
        const int pn = np - p0 < P ? np - p0 : P;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int m = 0; m < 16; m++) acc[m] = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
            __m512 qv[XD_ATTN_MAXQ];
#pragma GCC unroll 4
            for (int h = 0; h < NQ; h++) qv[h] = _mm512_maskz_loadu_ps(m, q[h] + j);
#pragma GCC unroll 16
            for (int i = 0; i < P; i++) {
                if (i >= pn) break;
                const __m512 kv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, k[p0 + i] + j));
#pragma GCC unroll 4
                for (int h = 0; h < NQ; h++)
                    acc[HS_SLOT(h * P + i)] = _mm512_fmadd_ps(kv, qv[h], acc[HS_SLOT(h * P + i)]);
            }
        }
        float s[16];
        _mm512_storeu_ps(s, hsum16x16(acc));
        for (int h = 0; h < NQ; h++)
            for (int i = 0; i < pn; i++) out[h * ldo + p0 + i] = s[h * P + i];
    }
}

_Static_assert(XD_ATTN_MAXQ == 4, "attn_dot_f16 has kernels for 1..4 queries");
XK_TARGET static void attn_dot_f16(float *out, int64_t ldo, const float *const *q, int nq,
                                   const uint16_t *const *k, int np, int64_t n) {
    switch (nq) {
    case 1: attn_dot_f16_T(out, ldo, q, k, np, n, 1); break;
    case 2: attn_dot_f16_T(out, ldo, q, k, np, n, 2); break;
    case 3: attn_dot_f16_T(out, ldo, q, k, np, n, 3); break;
    default: attn_dot_f16_T(out, ldo, q, k, np, n, 4); break;
    }
}

XK_TARGET static void attn_axpy_f16(float *const *y, const float *a, int64_t lda, int nq,
                                    const uint16_t *const *v, int np, int64_t n) {
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        __m512 acc[XD_ATTN_MAXQ];
#pragma GCC unroll 4
        for (int h = 0; h < XD_ATTN_MAXQ; h++)
            acc[h] = h < nq ? _mm512_maskz_loadu_ps(m, y[h] + j) : _mm512_setzero_ps();
        for (int p = 0; p < np; p++) {
            const __m512 vv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v[p] + j));
#pragma GCC unroll 4
            for (int h = 0; h < XD_ATTN_MAXQ; h++)
                if (h < nq) acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(a[h * lda + p]), vv, acc[h]);
        }
#pragma GCC unroll 4
        for (int h = 0; h < XD_ATTN_MAXQ; h++)
            if (h < nq) _mm512_mask_storeu_ps(y[h] + j, m, acc[h]);
    }
}

/* ---- element-wise (the operations of kernels.h's xd__expf_ref, 16 at a time) ------------- */

XK_TARGET static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f)); /* x < c ? x : c, NaN -> c, as the ref */
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 n = _mm512_sub_ps(
        _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), magic), magic);
    __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r),
                      _mm512_set1_ps(1.0f));
    const __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

XK_TARGET static void ew_round_f16(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m256i h =
            _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm512_mask_storeu_ps(y + i, m, _mm512_cvtph_ps(h));
    }
}

XK_TARGET static void ew_exp_sub(float *s, float mx, int64_t n) {
    const __m512 m = _mm512_set1_ps(mx);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(s + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(s + i), m)));
    for (; i < n; i++) s[i] = xd__expf_ref(s[i] - mx);
}

XK_TARGET static void ew_swiglu(float *y, const float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 gv = _mm512_loadu_ps(g + i);
        const __m512 d = _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, gv)));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_div_ps(gv, d), _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + xd__expf_ref(-g[i])) * u[i];
}

#define XK_QUANT_ENTRIES                                                                           \
    [XD_TYPE_F32] = {.act = XD_ACT_F32, .gemm = gemm_f32, .panel = XK_FR},                         \
    [XD_TYPE_F16] = {.act = XD_ACT_F32, .gemm = gemm_f16, .panel = XK_FR},                         \
    XK_QUANT_TYPES

static const struct xd_kernels kernels_bf16 = {
    .name = "avx512-bf16",
    .type = {XK_QUANT_ENTRIES, [XD_TYPE_BF16] = {.act = XD_ACT_BF16,
                                                 .gemm = gemm_bf16,
                                                 .panel = XK_FR}},
    .convert = {[XD_ACT_BF16] = xd__act_bf16_ref,
                [XD_ACT_Q8_32] = act_q8_32,
                [XD_ACT_Q8_256] = act_q8_256},
    .dot_f16 = attn_dot_f16,
    .axpy_f16 = attn_axpy_f16,
    .round_f16 = ew_round_f16,
    .exp_sub = ew_exp_sub,
    .swiglu = ew_swiglu,
};

/* Without AVX512-BF16 the BF16 entry is filled in from the AVX2 table (same lanes and order). */
static const struct xd_kernels kernels_nobf16 = {
    .name = "avx512",
    .type = {XK_QUANT_ENTRIES},
    .convert = {[XD_ACT_BF16] = xd__act_bf16_ref,
                [XD_ACT_Q8_32] = act_q8_32,
                [XD_ACT_Q8_256] = act_q8_256},
    .dot_f16 = attn_dot_f16,
    .axpy_f16 = attn_axpy_f16,
    .round_f16 = ew_round_f16,
    .exp_sub = ew_exp_sub,
    .swiglu = ew_swiglu,
};

const struct xd_kernels *xd__kernels_avx512(int has_bf16) {
    return has_bf16 ? &kernels_bf16 : &kernels_nobf16;
}

#else

const struct xd_kernels *xd__kernels_avx512(int has_bf16) {
    (void)has_bf16;
    return NULL;
}

#endif
