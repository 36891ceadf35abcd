/* kernels_avx2.c - the matmul kernels for AVX2 + FMA + F16C (x86-64 of the last decade).
 *
 * Quantized weights: the panel kernels of kernels_simd.h with 8 rows per ymm. AVX2 has no
 * vpdpbusd, so a u8 x s8 step is maddubs (pairs to int16) then madd with ones (to int32); that
 * is exact only while a pair of products fits in int16, which holds for the k-quant codes
 * (<= 63) but not for Q8_0 shifted to unsigned, so Q8_0 uses the sign trick instead:
 * |w| x (x with w's sign), no offset. Float weights: the 16 lanes of kernels.h as two ymm,
 * 2 rows x 2 tokens per step (16 ymm registers). Results equal kernels_ref.c and the AVX-512
 * file bit for bit. Every function carries its target attribute (the file is built for
 * baseline x86-64). Not done: AVX-VNNI (256-bit vpdpbusd on recent Intel/AMD) as a third table.
 */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "kernels.h"
#include "quant_blocks.h"

#if defined(__x86_64__)

#define XK_TARGET __attribute__((target("avx2,fma,f16c")))
#define XK_INLINE __attribute__((always_inline))
#define XK_NL 8
#define XK_TMAX_Q8 4
#define XK_TMAX_K 4

typedef __m256i vi;
typedef __m256 vf;

/* ---- primitives for kernels_simd.h -------------------------------------------------------- */

struct xk_rows;
XK_TARGET static inline vi xk_load(const vi *p) { return _mm256_load_si256(p); }
XK_TARGET static inline vi xk_loadu(const void *p) {
    return _mm256_loadu_si256((const __m256i *)p);
}
/* 16 bytes repeated in every 128 bits; a byte shuffle within each 128 bits (-1: zero) */
XK_TARGET static inline vi xk_bcast128(const void *p) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
}
XK_TARGET static inline vi xk_shuffle8(vi v, vi ctrl) { return _mm256_shuffle_epi8(v, ctrl); }
XK_TARGET static inline void xk_store(vi *p, vi v) { _mm256_store_si256(p, v); }
XK_TARGET static inline vf xk_loadf(const void *p) { return _mm256_load_ps(p); }
XK_TARGET static inline void xk_storef(void *p, vf v) { _mm256_store_ps(p, v); }
XK_TARGET static inline vi xk_zero(void) { return _mm256_setzero_si256(); }
XK_TARGET static inline vf xk_zerof(void) { return _mm256_setzero_ps(); }
XK_TARGET static inline vi xk_set1(int v) { return _mm256_set1_epi32(v); }
XK_TARGET static inline vi xk_set1_8(int v) { return _mm256_set1_epi8((char)v); }
XK_TARGET static inline vf xk_set1f(float v) { return _mm256_set1_ps(v); }
XK_TARGET static inline vi xk_bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
XK_TARGET static inline vi xk_and(vi a, vi b) { return _mm256_and_si256(a, b); }
XK_TARGET static inline vi xk_or(vi a, vi b) { return _mm256_or_si256(a, b); }
XK_TARGET static inline vi xk_add32(vi a, vi b) { return _mm256_add_epi32(a, b); }
XK_TARGET static inline vi xk_mullo32(vi a, vi b) { return _mm256_mullo_epi32(a, b); }
XK_TARGET static inline vi xk_min32(vi a, vi b) { return _mm256_min_epi32(a, b); }
XK_TARGET static inline vi xk_srli16(vi a, int k) { return _mm256_srli_epi16(a, k); }
XK_TARGET static inline vi xk_slli16(vi a, int k) { return _mm256_slli_epi16(a, k); }
XK_TARGET static inline vi xk_srli32(vi a, int k) { return _mm256_srli_epi32(a, k); }
XK_TARGET static inline vi xk_slli32(vi a, int k) { return _mm256_slli_epi32(a, k); }
XK_TARGET static inline vi xk_srai32(vi a, int k) { return _mm256_srai_epi32(a, k); }
XK_TARGET static inline vf xk_cvt(vi a) { return _mm256_cvtepi32_ps(a); }
XK_TARGET static inline vf xk_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
XK_TARGET static inline vf xk_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
XK_TARGET static inline vf xk_fnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
/* acc + 4 u8 x s8 products per lane; exact for u <= 127 (a pair stays within int16) */
XK_TARGET static inline vi xk_dot_u8(vi acc, vi u, vi s) {
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
XK_TARGET static inline vi xk_dot_s16(vi acc, vi a, vi b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}
/* Q8_0: signed codes kept; |w| x sign(x, w) stays within int16 per pair (<= 2 * 128 * 127) */
XK_TARGET static inline vi xk_q8_prep(vi w) { return w; }
XK_TARGET static inline vi xk_q8_init(int32_t xsum) {
    (void)xsum;
    return _mm256_setzero_si256();
}
XK_TARGET static inline vi xk_q8_dot(vi acc, vi w, vi x) {
    const vi p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
XK_TARGET static inline vf xk_f16_lo(vi v) {
    const vi m = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
    return _mm256_cvtph_ps(
        _mm_packus_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)));
}
/* 8 fp16 at p -> float */
XK_TARGET static inline vf xk_f16_load(const void *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
XK_TARGET static inline void xk_store_rows(float *dst, const float *src, int nr) {
    memcpy(dst, src, (size_t)nr * sizeof(float));
}

XK_TARGET static inline XK_INLINE void xk_transpose8(const struct xk_rows *rp, size_t off,
                                                     vi out[8]);
XK_TARGET static inline XK_INLINE void xk_transpose4(const struct xk_rows *rp, size_t off,
                                                     vi out[4]);
XK_TARGET static inline XK_INLINE vi xk_gather_rows(const struct xk_rows *rp, size_t off);

#include "kernels_simd.h"

/* 8 rows x 8 dwords -> out[g] lane r = dword g of row r (the classic 8x8 transpose). */
XK_TARGET static inline XK_INLINE void xk_transpose8(const struct xk_rows *rp, size_t off,
                                                     vi out[8]) {
    vi r[8], t[8], u[8];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_si256((const __m256i *)(rp->r[i] + off));
#pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        out[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
        out[j + 4] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
}

/* 8 rows x 4 dwords -> out[j] lane r = dword j of row r. */
XK_TARGET static inline XK_INLINE void xk_transpose4(const struct xk_rows *rp, size_t off,
                                                     vi out[4]) {
    vi z[4];
#pragma GCC unroll 16
    for (int k = 0; k < 4; k++)
        z[k] = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(rp->r[k] + off))),
            _mm_loadu_si128((const __m128i *)(rp->r[k + 4] + off)), 1);
    const vi t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
    const vi t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
    out[0] = _mm256_unpacklo_epi64(t0, t2);
    out[1] = _mm256_unpackhi_epi64(t0, t2);
    out[2] = _mm256_unpacklo_epi64(t1, t3);
    out[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* The dword at off of every row, in one gather. */
XK_TARGET static inline XK_INLINE vi xk_gather_rows(const struct xk_rows *rp, size_t off) {
    return _mm256_i32gather_epi32((const int *)(rp->r[0] + off), rp->roff, 1);
}

/* ---- activation conversion (bit-exact with kernels_ref.c) --------------------------------- */

XK_TARGET static inline float hmax8(__m256 v) {
    __m128 b = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    b = _mm_max_ps(b, _mm_movehl_ps(b, b));
    b = _mm_max_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

XK_TARGET static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* clamp in float (NaN -> -127: max_ps returns its second operand), round to nearest even */
XK_TARGET static inline __m256i q8_codes(__m256 x, __m256 id) {
    const __m256 v = _mm256_max_ps(_mm256_mul_ps(x, id), _mm256_set1_ps(-127.0f));
    return _mm256_cvtps_epi32(_mm256_min_ps(v, _mm256_set1_ps(127.0f)));
}

/* 32 int32 codes (4 x 8) -> 32 bytes in order */
XK_TARGET static inline void store_codes32(int8_t *dst, const __m256i q[4]) {
    const __m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i b = _mm256_packs_epi16(p01, p23);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256((__m256i *)dst, _mm256_permutevar8x32_epi32(b, perm));
}

XK_TARGET static inline float amax_abs(const float *x, int n) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8)
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + j), sign));
    return hmax8(m);
}

XK_TARGET static void act_q8_32(const float *x, void *dst, int64_t n) {
    struct xd_qa32 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        const float amax = amax_abs(x, 32);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        y[b].d = xd_fp16_to_fp32(xd_fp32_to_fp16(amax / 127.0f)); /* fp16, as llama.cpp */
        __m256i q[4];
#pragma GCC unroll 16
        for (int i = 0; i < 4; i++) q[i] = q8_codes(_mm256_loadu_ps(x + 8 * i), id);
        store_codes32(y[b].q, q);
        y[b].sum =
            hsum8i(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    }
}

XK_TARGET static void act_q8_256(const float *x, void *dst, int64_t n) {
    struct xd_qa256 *y = dst;
    for (int64_t b = 0; b < n / 256; b++, x += 256) {
        const float amax = amax_abs(x, 256);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        y[b].d = amax != 0.0f ? 1.0f / (127.0f / amax) : 0.0f; /* 1/id, as llama.cpp */
#pragma GCC unroll 16
        for (int c = 0; c < 8; c++) {
            __m256i q[4];
#pragma GCC unroll 16
            for (int i = 0; i < 4; i++) q[i] = q8_codes(_mm256_loadu_ps(x + 32 * c + 8 * i), id);
            store_codes32(y[b].q + 32 * c, q);
            y[b].bsum16[2 * c] = (int16_t)hsum8i(_mm256_add_epi32(q[0], q[1]));
            y[b].bsum16[2 * c + 1] = (int16_t)hsum8i(_mm256_add_epi32(q[2], q[3]));
            y[b].bsum32[c] = (int16_t)(y[b].bsum16[2 * c] + y[b].bsum16[2 * c + 1]);
        }
    }
}

/* ---- float weights: the 16 lanes as two ymm, 2 rows x 2 tokens per step -------------------- */

/* lanes lo (0..7) and hi (8..15) by the tree of kernels.h */
XK_TARGET static inline float hsum16(__m256 lo, __m256 hi) {
    const __m256 s8 = _mm256_add_ps(lo, hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

enum wkind { W_F32, W_F16 };

/* 16 weights from element j of a row as floats; a short tail is staged zero-padded. */
XK_TARGET static inline void wload16(enum wkind k, const uint8_t *row, int64_t j, int64_t n,
                                     __m256 out[2]) {
    if (n - j >= 16) {
        if (k == W_F16) {
            out[0] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j)));
            out[1] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j + 16)));
        } else {
            out[0] = _mm256_loadu_ps((const float *)row + j);
            out[1] = _mm256_loadu_ps((const float *)row + j + 8);
        }
        return;
    }
    float buf[16] = {0};
    for (int64_t i = j; i < n; i++) {
        uint16_t h;
        if (k == W_F16) memcpy(&h, row + 2 * i, 2);
        buf[i - j] = k == W_F16 ? xd_fp16_to_fp32(h) : ((const float *)row)[i];
    }
    out[0] = _mm256_loadu_ps(buf);
    out[1] = _mm256_loadu_ps(buf + 8);
}

XK_TARGET static inline void xload16(const float *x, int64_t j, int64_t n, __m256 out[2]) {
    if (n - j >= 16) {
        out[0] = _mm256_loadu_ps(x + j);
        out[1] = _mm256_loadu_ps(x + j + 8);
        return;
    }
    float buf[16] = {0};
    memcpy(buf, x + j, (size_t)(n - j) * sizeof(float));
    out[0] = _mm256_loadu_ps(buf);
    out[1] = _mm256_loadu_ps(buf + 8);
}

#define XK_FR 2
#define XK_FT 2

XK_TARGET static XK_ALWAYS void gemm_float(enum wkind k, const struct xd_tensor *w, int64_t r0,
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
            __m256 acc[XK_FR][XK_FT][2];
            for (int i = 0; i < XK_FR; i++)
                for (int t = 0; t < XK_FT; t++) acc[i][t][0] = acc[i][t][1] = _mm256_setzero_ps();
            for (int64_t j = 0; j < n; j += 16) {
                __m256 wv[XK_FR][2], xv[XK_FT][2];
                for (int i = 0; i < XK_FR; i++) wload16(k, row[i], j, n, wv[i]);
                for (int t = 0; t < XK_FT; t++) xload16(x[t], j, n, xv[t]);
                for (int i = 0; i < XK_FR; i++)
                    for (int t = 0; t < XK_FT; t++)
#pragma GCC unroll 16
                        for (int h = 0; h < 2; h++)
                            acc[i][t][h] = _mm256_fmadd_ps(wv[i][h], xv[t][h], acc[i][t][h]);
            }
            for (int i = 0; i < nr; i++)
                for (int t = 0; t < nt; t++)
                    y[(t0 + t) * ldy + r + i] = hsum16(acc[i][t][0], acc[i][t][1]);
        }
    }
}

XK_TARGET static void gemm_f32(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                               size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    (void)scratch;
    gemm_float(W_F32, w, r0, r1, xa, xs, n_tok, y, ldy);
}

XK_TARGET static void gemm_f16(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                               size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    (void)scratch;
    gemm_float(W_F16, w, r0, r1, xa, xs, n_tok, y, ldy);
}

/* 16 bf16 from element j (zero-padded tail) as 8 lanes of pairs: even and odd elements. */
XK_TARGET static inline void bf16_pairs(const uint8_t *p, int64_t j, int64_t n, __m256 *even,
                                        __m256 *odd) {
    __m256i v;
    if (n - j >= 16) {
        v = _mm256_loadu_si256((const __m256i *)(p + 2 * j));
    } else {
        uint16_t buf[16] = {0};
        memcpy(buf, p + 2 * j, (size_t)(n - j) * 2);
        v = _mm256_loadu_si256((const __m256i *)buf);
    }
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
}

/* BF16 with vdpbf16ps's lanes emulated by two fma per pair, odd element first as the SDM
 * specifies (denormals are kept, where vdpbf16ps flushes them). */
XK_TARGET static void gemm_bf16(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa,
                                size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    (void)scratch;
    const int64_t n = w->ne[0];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->nb[1];
        for (int64_t t = 0; t < n_tok; t++) {
            const uint8_t *x = (const uint8_t *)xa + (size_t)t * xs;
            __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t j = 0; j < n; j += 32) {
#pragma GCC unroll 16
                for (int h = 0; h < 2; h++) {
                    const int64_t jh = j + 16 * h;
                    if (jh >= n) break;
                    __m256 we, wo, xe, xo;
                    bf16_pairs(row, jh, n, &we, &wo);
                    bf16_pairs(x, jh, n, &xe, &xo);
                    acc[h] = _mm256_fmadd_ps(we, xe, _mm256_fmadd_ps(wo, xo, acc[h]));
                }
            }
            y[t * ldy + r] = hsum16(acc[0], acc[1]);
        }
    }
}

/* ---- attention primitives ------------------------------------------------------------------ */

XK_TARGET static void attn_dot_f16(float *out, int64_t ldo, const float *const *q, int nq,
                                   const uint16_t *const *k, int np, int64_t n) {
    for (int p = 0; p < np; p++) {
        __m256 acc[XD_ATTN_MAXQ][2];
        for (int h = 0; h < XD_ATTN_MAXQ; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            __m256 kv[2], qv[2];
            wload16(W_F16, (const uint8_t *)k[p], j, n, kv);
            for (int h = 0; h < nq; h++) {
                xload16(q[h], j, n, qv);
                for (int i = 0; i < 2; i++) acc[h][i] = _mm256_fmadd_ps(kv[i], qv[i], acc[h][i]);
            }
        }
        for (int h = 0; h < nq; h++) out[h * ldo + p] = hsum16(acc[h][0], acc[h][1]);
    }
}

XK_TARGET static void attn_axpy_f16(float *const *y, const float *a, int64_t lda, int nq,
                                    const uint16_t *const *v, int np, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 acc[XD_ATTN_MAXQ];
        for (int h = 0; h < nq; h++) acc[h] = _mm256_loadu_ps(y[h] + j);
        for (int p = 0; p < np; p++) {
            const __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v[p] + j)));
            for (int h = 0; h < nq; h++)
                acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(a[h * lda + p]), vv, acc[h]);
        }
        for (int h = 0; h < nq; h++) _mm256_storeu_ps(y[h] + j, acc[h]);
    }
    for (; j < n; j++)
        for (int h = 0; h < nq; h++)
            for (int p = 0; p < np; p++)
                y[h][j] = __builtin_fmaf(a[h * lda + p], xd_fp16_to_fp32(v[p][j]), y[h][j]);
}

/* ---- element-wise (the operations of kernels.h's xd__expf_ref, 8 at a time) -------------- */

XK_TARGET static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.0f)); /* x < c ? x : c, NaN -> c, as the ref */
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 n = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), magic), magic);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r),
                      _mm256_set1_ps(1.0f));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

XK_TARGET static void ew_round_f16(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = xd_fp16_to_fp32(xd_fp32_to_fp16(x[i]));
}

XK_TARGET static void ew_exp_sub(float *s, float mx, int64_t n) {
    const __m256 m = _mm256_set1_ps(mx);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(s + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), m)));
    for (; i < n; i++) s[i] = xd__expf_ref(s[i] - mx);
}

XK_TARGET static void ew_swiglu(float *y, const float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 d = _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, gv)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(gv, d), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + xd__expf_ref(-g[i])) * u[i];
}

static const struct xd_kernels kernels_avx2 = {
    .name = "avx2",
    .type =
        {
            [XD_TYPE_F32] = {.act = XD_ACT_F32, .gemm = gemm_f32, .panel = XK_FR},
            [XD_TYPE_F16] = {.act = XD_ACT_F32, .gemm = gemm_f16, .panel = XK_FR},
            [XD_TYPE_BF16] = {.act = XD_ACT_BF16, .gemm = gemm_bf16, .panel = 1},
            XK_QUANT_TYPES,
        },
    .convert = {[XD_ACT_BF16] = xd__act_bf16_ref,
                [XD_ACT_Q8_32] = act_q8_32,
                [XD_ACT_Q8_256] = act_q8_256},
    .dot_f16 = attn_dot_f16,
    .axpy_f16 = attn_axpy_f16,
    .round_f16 = ew_round_f16,
    .exp_sub = ew_exp_sub,
    .swiglu = ew_swiglu,
};

const struct xd_kernels *xd__kernels_avx2(void) { return &kernels_avx2; }

#else

const struct xd_kernels *xd__kernels_avx2(void) { return NULL; }

#endif
