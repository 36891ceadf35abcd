/* quant.c - the type traits table and the scalar reference conversions of every type.
 *
 * One table row per ggml type id says how big a block is and, where the engine computes with
 * the type, how to turn it into floats (to_float), how to write it (from_float, for `expertd
 * gen`) and how to take the dot product of one row with a float vector (vec_dot_f32, the
 * reference matmul kernel). Dequantization reproduces ggml's reference dequantize_row_* bit for
 * bit: every value is computed with the same float operations in the same order (d*sc first,
 * then *q, then -m, ...), and the file must be compiled without floating-point contraction into
 * FMA, which -std=c11 gives on GCC and the pragma below gives on clang. The quantizers follow
 * ggml's reference quantizers (quantize_row_*_ref); Q8_0 and Q4_K are checked to give exactly
 * llama-quantize's bytes on the fixture models, and Q4_0, F16 and BF16 use the same arithmetic.
 *
 * Trade-off: everything here is plain, portable C the compiler may auto-vectorize (inner loops
 * have constant trip counts and no data-dependent branches), not hand-written SIMD. That keeps
 * one obviously-correct reference for later SIMD/CUDA kernels to be tested against, at the cost
 * of speed: at -O2 on one core, Q8_0 quantizes ~340 M floats/s (a 4 GB model in ~12 s), F16
 * ~600 M/s, and vec_dot_f32 runs at 1-2 G elements/s; Q4_K quantization, with its 21-grid
 * search per sub-block, is ~12 M/s.
 *
 * vec_dot_f32's summation order (fixed, so results are deterministic and independent of any
 * batching): the row is dequantized 256 elements at a time into a stack buffer; within a chunk,
 * element j is accumulated into float lane j%8, the 8 lanes are added pairwise into a float
 * chunk sum, and the chunk sums are accumulated in a double. Rejected alternative: one float
 * accumulator over the whole row (error grows with n, and it cannot vectorize without
 * reassociation); a double per element (half the speed for no accuracy the engine can see).
 *
 * Not done here: the IQ*, TQ*, MXFP4, NVFP4, Q1_0/Q2_0 families and Q8_1 are known by size only;
 * non-finite inputs to the quantizers give well-defined but meaningless blocks.
 */
#include "quant.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "quant_blocks.h"
#include "xd_error.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define XD_DOT_CHUNK 256 /* elements dequantized per vec_dot step; multiple of every blck_size */
#define XD_DOT_LANES 8

/* ---------------------------------------------------------------------------------------- */
/* fp16 / bf16                                                                              */
/* ---------------------------------------------------------------------------------------- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Widening is exact; computed branch-free so loops over it vectorize. */
static inline float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;                  /* exponent and mantissa */
    uint32_t normal = (em << 13) + 0x38000000u; /* rebias exponent 15 -> 127 */
    uint32_t inf_nan = normal + 0x38000000u;    /* exponent 31 -> 255, payload kept */
    float sub = (float)em * 0x1p-24f;           /* exponent 0: mantissa * 2^-24, exact */
    uint32_t mag = em >= 0x7c00u ? inf_nan : em >= 0x0400u ? normal : f32_bits(sub);
    return f32_from_bits(sign | mag);
}

/* Narrowing with round-to-nearest-even. Three candidates, one chosen by magnitude:
 *  - fp16 normal range (2^-14 <= |f| < 65536): rebias, then add 0xfff plus the lowest kept
 *    bit before dropping 13 bits, which is RNE; a carry out of the mantissa bumps the exponent,
 *    so 65520 and above correctly become infinity;
 *  - |f| < 2^-14: adding 0.5f makes the FPU round |f| to a multiple of 2^-24 (the ulp at 0.5)
 *    with its own RNE, and the mantissa of the sum is the fp16 subnormal (0x400 when it rounds
 *    up to the smallest normal, which is also the right bit pattern);
 *  - |f| >= 65536, Inf, NaN: Inf, or a NaN keeping the top of the payload with the quiet bit. */
static inline uint16_t fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    uint32_t norm = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
    uint32_t sub = f32_bits(f32_from_bits(ax) + 0.5f) - 0x3f000000u;
    uint32_t big = ax > 0x7f800000u ? (0x7e00u | ((ax >> 13) & 0x3ffu)) : 0x7c00u;
    uint32_t mag = ax >= 0x47800000u ? big : ax >= 0x38800000u ? norm : sub;
    return (uint16_t)(sign | mag);
}

static inline float bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* RNE on the 16 dropped bits; a NaN keeps sign and payload top and gets the quiet bit (as
 * ggml does), since rounding could otherwise turn it into an infinity. */
static inline uint16_t fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t rne = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    uint32_t nan = (x >> 16) | 0x40u;
    return (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? nan : rne);
}

float xd_fp16_to_fp32(uint16_t h) { return fp16_to_fp32(h); }
uint16_t xd_fp32_to_fp16(float f) { return fp32_to_fp16(f); }
float xd_bf16_to_fp32(uint16_t h) { return bf16_to_fp32(h); }
uint16_t xd_fp32_to_bf16(float f) { return fp32_to_bf16(f); }

/* ---------------------------------------------------------------------------------------- */
/* to_float: one block at a time, in ggml's operation order                                  */
/* ---------------------------------------------------------------------------------------- */

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2); /* rows of F16 need not be 2-byte aligned in a GGUF view */
        dst[i] = fp16_to_fp32(h);
    }
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_fp32(h);
    }
}

/* x = d * (q - 8); element j in the low nibble of qs[j], element j+16 in its high nibble. */
static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / XD_QK4_0; i++, dst += XD_QK4_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < XD_QK4_0 / 2; j++) {
            const int x0 = (b[i].qs[j] & 0x0f) - 8;
            const int x1 = (b[i].qs[j] >> 4) - 8;
            dst[j] = x0 * d;
            dst[j + XD_QK4_0 / 2] = x1 * d;
        }
    }
}

/* x = d * q + m */
static void q4_1_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / XD_QK4_1; i++, dst += XD_QK4_1) {
        const float d = fp16_to_fp32(b[i].d);
        const float m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < XD_QK4_1 / 2; j++) {
            const int x0 = b[i].qs[j] & 0x0f;
            const int x1 = b[i].qs[j] >> 4;
            dst[j] = x0 * d + m;
            dst[j + XD_QK4_1 / 2] = x1 * d + m;
        }
    }
}

static inline uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* x = d * (q - 16); bit j of qh is the fifth bit of element j. */
static void q5_0_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / XD_QK5_0; i++, dst += XD_QK5_0) {
        const float d = fp16_to_fp32(b[i].d);
        const uint32_t qh = load_u32le(b[i].qh);
        for (int j = 0; j < XD_QK5_0 / 2; j++) {
            const int h0 = (int)((qh >> j) & 1u) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            const int x0 = ((b[i].qs[j] & 0x0f) | h0) - 16;
            const int x1 = ((b[i].qs[j] >> 4) | h1) - 16;
            dst[j] = x0 * d;
            dst[j + XD_QK5_0 / 2] = x1 * d;
        }
    }
}

/* x = d * q + m */
static void q5_1_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / XD_QK5_1; i++, dst += XD_QK5_1) {
        const float d = fp16_to_fp32(b[i].d);
        const float m = fp16_to_fp32(b[i].m);
        const uint32_t qh = load_u32le(b[i].qh);
        for (int j = 0; j < XD_QK5_1 / 2; j++) {
            const int h0 = (int)((qh >> j) & 1u) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            const int x0 = (b[i].qs[j] & 0x0f) | h0;
            const int x1 = (b[i].qs[j] >> 4) | h1;
            dst[j] = x0 * d + m;
            dst[j + XD_QK5_1 / 2] = x1 * d + m;
        }
    }
}

/* x = q * d */
static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / XD_QK8_0; i++, dst += XD_QK8_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < XD_QK8_0; j++) dst[j] = b[i].qs[j] * d;
    }
}

/* Q2_K: 16 sub-blocks of 16; x = (d*scale) * q - (dmin*min), q two bits. Each 128-element half
 * reads 32 bytes of qs four times, two bits deeper each time; within one pass the first 16
 * elements come from bytes 0..15, the next 16 from bytes 16..31, each with its own scale. */
static void q2_K_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q2_K *b = src;
    for (int64_t i = 0; i < n / XD_QK_K; i++) {
        const float d = fp16_to_fp32(b[i].d);
        const float dmin = fp16_to_fp32(b[i].dmin);
        for (int s = 0; s < XD_QK_K / 16; s++) {
            const uint8_t *q = b[i].qs + 32 * (s / 8) + 16 * (s % 2);
            const int shift = 2 * ((s % 8) / 2);
            const float dl = d * (b[i].scales[s] & 0x0f);
            const float ml = dmin * (b[i].scales[s] >> 4);
            for (int l = 0; l < 16; l++) dst[l] = dl * ((q[l] >> shift) & 3) - ml;
            dst += 16;
        }
    }
}

/* The 16 six-bit Q3_K scales: low four bits of scale s in byte s%8 (low nibble for s < 8,
 * high nibble after), high two bits in byte 8 + s%4 at bit 2*(s/4). Stored biased by 32. */
static inline int q3_K_scale(const uint8_t *sc, int s) {
    const int lo = (sc[s % 8] >> (4 * (s / 8))) & 0x0f;
    const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Q3_K: x = (d*scale) * (q - (hmask bit ? 0 : 4)); q's low bits laid out as in Q2_K, the
 * high bit of element 32*p + l (p = pass 0..7 over both halves) is bit p of hmask[l]. */
static void q3_K_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q3_K *b = src;
    for (int64_t i = 0; i < n / XD_QK_K; i++) {
        const float d = fp16_to_fp32(b[i].d);
        for (int s = 0; s < XD_QK_K / 16; s++) {
            const int half = s / 8, pass = (s % 8) / 2, off = 16 * (s % 2);
            const uint8_t *q = b[i].qs + 32 * half + off;
            const uint8_t *hm = b[i].hmask + off;
            const int shift = 2 * pass;
            const uint8_t bit = (uint8_t)(1u << (4 * half + pass));
            const float dl = d * q3_K_scale(b[i].scales, s);
            for (int l = 0; l < 16; l++) {
                const int v = ((q[l] >> shift) & 3) - ((hm[l] & bit) ? 0 : 4);
                dst[l] = dl * v;
            }
            dst += 16;
        }
    }
}

/* Q4_K/Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes: for j < 4 scale j is
 * bits 0..5 of byte j and min j bits 0..5 of byte j+4; for j >= 4 the low four bits are the
 * nibbles of byte j+4 (scale low, min high) and the top two bits are bits 6..7 of bytes j-4
 * (scale) and j (min). */
static inline void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K: 8 sub-blocks of 32; x = (d*sc) * q - (dmin*m); each 64 elements share 32 bytes of qs,
 * the first 32 in the low nibbles, the next 32 in the high ones. */
static void q4_K_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q4_K *b = src;
    for (int64_t i = 0; i < n / XD_QK_K; i++) {
        const float d = fp16_to_fp32(b[i].d);
        const float dmin = fp16_to_fp32(b[i].dmin);
        for (int s = 0; s < XD_QK_K / 32; s++) {
            const uint8_t *q = b[i].qs + 32 * (s / 2);
            const int shift = 4 * (s % 2);
            int sc, m;
            k4_scale_min(b[i].scales, s, &sc, &m);
            const float dl = d * sc;
            const float ml = dmin * m;
            for (int l = 0; l < 32; l++) dst[l] = dl * ((q[l] >> shift) & 0x0f) - ml;
            dst += 32;
        }
    }
}

/* Q5_K: Q4_K plus a fifth bit: element l of sub-block s has it in bit s of qh[l]. */
static void q5_K_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q5_K *b = src;
    for (int64_t i = 0; i < n / XD_QK_K; i++) {
        const float d = fp16_to_fp32(b[i].d);
        const float dmin = fp16_to_fp32(b[i].dmin);
        for (int s = 0; s < XD_QK_K / 32; s++) {
            const uint8_t *q = b[i].qs + 32 * (s / 2);
            const int shift = 4 * (s % 2);
            int sc, m;
            k4_scale_min(b[i].scales, s, &sc, &m);
            const float dl = d * sc;
            const float ml = dmin * m;
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> shift) & 0x0f) + (((b[i].qh[l] >> s) & 1) << 4);
                dst[l] = dl * v - ml;
            }
            dst += 32;
        }
    }
}

/* Q6_K: 16 sub-blocks of 16; x = d * scale * (q - 32), evaluated as (d*scale)*q. Each half of
 * 128 uses 64 bytes of ql and 32 of qh: element 32*k + l (k = 0..3) takes the low (k < 2) or
 * high nibble of ql[l + 32*(k%2)] and bits 2k..2k+1 of qh[l]. */
static void q6_K_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q6_K *b = src;
    for (int64_t i = 0; i < n / XD_QK_K; i++) {
        const float d = fp16_to_fp32(b[i].d);
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = b[i].ql + 64 * half;
            const uint8_t *qh = b[i].qh + 32 * half;
            const int8_t *sc = b[i].scales + 8 * half;
            for (int k = 0; k < 4; k++) {
                const uint8_t *lo = ql + 32 * (k % 2);
                const int nshift = 4 * (k / 2);
                for (int l = 0; l < 32; l++) {
                    const int q =
                        (((lo[l] >> nshift) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                    dst[32 * k + l] = d * sc[2 * k + l / 16] * q;
                }
            }
            dst += 128;
        }
    }
}

/* Q8_K: x = d * q, d a float32. */
static void q8_K_to_float(const void *src, float *dst, int64_t n) {
    const struct xd_block_q8_K *b = src;
    for (int64_t i = 0; i < n / XD_QK_K; i++, dst += XD_QK_K) {
        for (int j = 0; j < XD_QK_K; j++) dst[j] = b[i].d * b[i].qs[j];
    }
}

/* ---------------------------------------------------------------------------------------- */
/* from_float                                                                               */
/* ---------------------------------------------------------------------------------------- */

static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = fp32_to_fp16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = fp32_to_bf16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* roundf() (half away from zero) for |v| <= 127, without a libm call so the loop vectorizes:
 * truncate, then v - t is exact and says which way to step. A NaN is clamped to 127 first so
 * the conversion is always defined. */
static inline int round_half_away_127(float v) {
    v = v < 127.0f ? v : 127.0f;
    v = v > -127.0f ? v : -127.0f;
    const int t = (int)v;
    const float fr = v - (float)t;
    return t + (fr >= 0.5f) - (fr <= -0.5f);
}

/* ggml's quantize_row_q8_0_ref: d = amax/127 stored as fp16, q = round(x / d) with the
 * unrounded d, so the bytes equal llama.cpp's. Clamping at +-127 changes nothing for finite
 * inputs (|x/d| <= 127 up to one rounding). */
static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    struct xd_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / XD_QK8_0; i++, src += XD_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < XD_QK8_0; j++) {
            const float a = fabsf(src[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        for (int j = 0; j < XD_QK8_0; j++) b[i].qs[j] = (int8_t)round_half_away_127(src[j] * id);
    }
}

/* ggml's quantize_row_q4_0_ref: the element of largest magnitude maps to -8 exactly
 * (d = max / -8), q = trunc(x/d + 8.5) capped at 15. */
static void q4_0_from_float(const float *src, void *dst, int64_t n) {
    struct xd_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / XD_QK4_0; i++, src += XD_QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < XD_QK4_0; j++) {
            if (amax < fabsf(src[j])) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        for (int j = 0; j < XD_QK4_0 / 2; j++) {
            float v0 = src[j] * id + 8.5f;
            float v1 = src[j + XD_QK4_0 / 2] * id + 8.5f;
            v0 = v0 > 0.0f ? (v0 < 15.5f ? v0 : 15.5f) : 0.0f; /* trunc then cap at 15 */
            v1 = v1 > 0.0f ? (v1 < 15.5f ? v1 : 15.5f) : 0.0f;
            b[i].qs[j] = (uint8_t)((int)v0 | (int)v1 << 4);
        }
    }
}

/* Round to nearest, ties to even, after clamping to [lo, hi] (NaN -> lo): adding 1.5*2^23
 * leaves the rounded integer in the low mantissa bits. */
static inline int nearest_clamped(float v, int lo, int hi) {
    v = v > (float)lo ? v : (float)lo;
    v = v < (float)hi ? v : (float)hi;
    const uint32_t bits = f32_bits(v + 12582912.0f);
    return (int)(bits & 0x007fffffu) - 0x00400000;
}

/* Fit x ~ scale * L - mn over one sub-block, L in 0..nmax, by ggml's make_qkx2_quants method:
 * start from the min/max grid, then try nstep+1 grids with nmax+rmin+rdelta*k levels over
 * [min, max], for each solve the weighted least-squares scale and offset given the levels
 * (offset kept <= 0), and keep whichever has the lowest weighted squared error. Returns the
 * scale; *neg_min is -offset (>= 0). */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *neg_min, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        min = x[i] < min ? x[i] : min;
        max = x[i] > max ? x[i] : max;
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (!(max > min)) { /* constant (or NaN) sub-block */
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)nearest_clamped(iscale * (x[i] - min), 0, nmax);
        const float diff = scale * L[i] + min - x[i];
        best += w[i] * diff * diff;
    }
    uint8_t aux[32];
    for (int k = 0; k <= nstep; k++) {
        iscale = (rmin + rdelta * k + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = nearest_clamped(iscale * (x[i] - min), 0, nmax);
            aux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float det = sum_w * sum_l2 - sum_l * sum_l;
        if (!(det > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (this_min > 0) { /* an offset above zero cannot be stored: refit through zero */
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            const float diff = this_scale * aux[i] + this_min - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

/* Q4_K as ggml's quantize_row_q4_K_ref: fit each sub-block of 32 (weights rms + |x|), quantize
 * the 8 scales and 8 mins to 6 bits against the super-block's largest (d = max/63 in fp16),
 * then requantize every element with the scales as stored so the levels match the decoder. */
static void q4_K_from_float(const float *src, void *dst, int64_t n) {
    struct xd_block_q4_K *b = dst;
    uint8_t L[XD_QK_K];
    float w[32], scales[8], mins[8];
    for (int64_t i = 0; i < n / XD_QK_K; i++, src += XD_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int s = 0; s < 8; s++) {
            const float *x = src + 32 * s;
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += x[l] * x[l];
            const float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[l]);
            scales[s] = fit_scale_min(32, 15, x, w, L + 32 * s, &mins[s], -1.0f, 0.1f, 20);
            max_scale = scales[s] > max_scale ? scales[s] : max_scale;
            max_min = mins[s] > max_min ? mins[s] : max_min;
        }
        const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
        const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int s = 0; s < 8; s++) {
            const int ls = nearest_clamped(inv_scale * scales[s], 0, 63);
            const int lm = nearest_clamped(inv_min * mins[s], 0, 63);
            if (s < 4) {
                b[i].scales[s] = (uint8_t)ls;
                b[i].scales[s + 4] = (uint8_t)lm;
            } else {
                b[i].scales[s + 4] = (uint8_t)((ls & 0x0f) | (lm & 0x0f) << 4);
                b[i].scales[s - 4] |= (uint8_t)((ls >> 4) << 6);
                b[i].scales[s] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        b[i].d = fp32_to_fp16(max_scale / 63.0f);
        b[i].dmin = fp32_to_fp16(max_min / 63.0f);
        const float d = fp16_to_fp32(b[i].d);
        const float dmin = fp16_to_fp32(b[i].dmin);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(b[i].scales, s, &sc, &m);
            const float dl = d * sc;
            if (dl == 0.0f) continue; /* every element decodes to -dmin*m whatever L is */
            const float ml = dmin * m;
            for (int l = 0; l < 32; l++)
                L[32 * s + l] = (uint8_t)nearest_clamped((src[32 * s + l] + ml) / dl, 0, 15);
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* vec_dot_f32                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* Sum of a[j]*b[j] over m elements: lane j%8 in float, lanes combined pairwise. The fixed
 * lane assignment lets the compiler vectorize without changing the result. */
static inline float dot_lanes(const float *a, const float *b, int64_t m) {
    float acc[XD_DOT_LANES] = {0};
    int64_t j = 0;
    for (; j + XD_DOT_LANES <= m; j += XD_DOT_LANES)
        for (int k = 0; k < XD_DOT_LANES; k++) acc[k] += a[j + k] * b[j + k];
    for (int k = 0; j < m; j++, k++) acc[k] += a[j] * b[j];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Dequantize 256 elements at a time (whole blocks: every blck_size divides 256) into a stack
 * buffer and dot them with x; chunk sums accumulate in a double. Inlined into each type's
 * wrapper so the dequantizer is a direct call. */
static inline float dot_chunked(xd_to_float_fn deq, int64_t blck, size_t tsize, const void *row,
                                const float *x, int64_t n) {
    float buf[XD_DOT_CHUNK];
    const uint8_t *p = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i += XD_DOT_CHUNK) {
        const int64_t m = n - i < XD_DOT_CHUNK ? n - i : XD_DOT_CHUNK;
        deq(p + (size_t)(i / blck) * tsize, buf, m);
        sum += dot_lanes(buf, x + i, m);
    }
    return (float)sum;
}

static float f32_vec_dot(const void *row, const float *x, int64_t n) {
    const float *w = row; /* F32 rows are 4-byte aligned in any GGUF (alignment >= 32) */
    double sum = 0.0;
    for (int64_t i = 0; i < n; i += XD_DOT_CHUNK)
        sum += dot_lanes(w + i, x + i, n - i < XD_DOT_CHUNK ? n - i : XD_DOT_CHUNK);
    return (float)sum;
}

static float f16_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(f16_to_float, 1, 2, r, x, n);
}
static float bf16_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(bf16_to_float, 1, 2, r, x, n);
}
static float q4_0_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q4_0_to_float, XD_QK4_0, sizeof(struct xd_block_q4_0), r, x, n);
}
static float q4_1_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q4_1_to_float, XD_QK4_1, sizeof(struct xd_block_q4_1), r, x, n);
}
static float q5_0_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q5_0_to_float, XD_QK5_0, sizeof(struct xd_block_q5_0), r, x, n);
}
static float q5_1_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q5_1_to_float, XD_QK5_1, sizeof(struct xd_block_q5_1), r, x, n);
}
static float q8_0_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q8_0_to_float, XD_QK8_0, sizeof(struct xd_block_q8_0), r, x, n);
}
static float q2_K_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q2_K_to_float, XD_QK_K, sizeof(struct xd_block_q2_K), r, x, n);
}
static float q3_K_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q3_K_to_float, XD_QK_K, sizeof(struct xd_block_q3_K), r, x, n);
}
static float q4_K_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q4_K_to_float, XD_QK_K, sizeof(struct xd_block_q4_K), r, x, n);
}
static float q5_K_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q5_K_to_float, XD_QK_K, sizeof(struct xd_block_q5_K), r, x, n);
}
static float q6_K_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q6_K_to_float, XD_QK_K, sizeof(struct xd_block_q6_K), r, x, n);
}
static float q8_K_vec_dot(const void *r, const float *x, int64_t n) {
    return dot_chunked(q8_K_to_float, XD_QK_K, sizeof(struct xd_block_q8_K), r, x, n);
}

/* ---------------------------------------------------------------------------------------- */
/* the table                                                                                */
/* ---------------------------------------------------------------------------------------- */

#define XD_SIZE_ONLY(nm, blck, st)                                                                 \
    { .name = nm, .blck_size = blck, .type_size = sizeof(st) }

static const struct xd_type_traits type_traits[XD_TYPE_COUNT] = {
    [XD_TYPE_F32] = {.name = "F32",
                     .blck_size = 1,
                     .type_size = sizeof(float),
                     .to_float = f32_to_float,
                     .from_float = f32_from_float,
                     .vec_dot_f32 = f32_vec_dot},
    [XD_TYPE_F16] = {.name = "F16",
                     .blck_size = 1,
                     .type_size = sizeof(uint16_t),
                     .to_float = f16_to_float,
                     .from_float = f16_from_float,
                     .vec_dot_f32 = f16_vec_dot},
    [XD_TYPE_BF16] = {.name = "BF16",
                      .blck_size = 1,
                      .type_size = sizeof(uint16_t),
                      .to_float = bf16_to_float,
                      .from_float = bf16_from_float,
                      .vec_dot_f32 = bf16_vec_dot},
    [XD_TYPE_Q4_0] = {.name = "Q4_0",
                      .blck_size = XD_QK4_0,
                      .type_size = sizeof(struct xd_block_q4_0),
                      .to_float = q4_0_to_float,
                      .from_float = q4_0_from_float,
                      .vec_dot_f32 = q4_0_vec_dot},
    [XD_TYPE_Q4_1] = {.name = "Q4_1",
                      .blck_size = XD_QK4_1,
                      .type_size = sizeof(struct xd_block_q4_1),
                      .to_float = q4_1_to_float,
                      .vec_dot_f32 = q4_1_vec_dot},
    [XD_TYPE_Q5_0] = {.name = "Q5_0",
                      .blck_size = XD_QK5_0,
                      .type_size = sizeof(struct xd_block_q5_0),
                      .to_float = q5_0_to_float,
                      .vec_dot_f32 = q5_0_vec_dot},
    [XD_TYPE_Q5_1] = {.name = "Q5_1",
                      .blck_size = XD_QK5_1,
                      .type_size = sizeof(struct xd_block_q5_1),
                      .to_float = q5_1_to_float,
                      .vec_dot_f32 = q5_1_vec_dot},
    [XD_TYPE_Q8_0] = {.name = "Q8_0",
                      .blck_size = XD_QK8_0,
                      .type_size = sizeof(struct xd_block_q8_0),
                      .to_float = q8_0_to_float,
                      .from_float = q8_0_from_float,
                      .vec_dot_f32 = q8_0_vec_dot},
    [XD_TYPE_Q8_1] = XD_SIZE_ONLY("Q8_1", XD_QK8_1, struct xd_block_q8_1),
    [XD_TYPE_Q2_K] = {.name = "Q2_K",
                      .blck_size = XD_QK_K,
                      .type_size = sizeof(struct xd_block_q2_K),
                      .to_float = q2_K_to_float,
                      .vec_dot_f32 = q2_K_vec_dot},
    [XD_TYPE_Q3_K] = {.name = "Q3_K",
                      .blck_size = XD_QK_K,
                      .type_size = sizeof(struct xd_block_q3_K),
                      .to_float = q3_K_to_float,
                      .vec_dot_f32 = q3_K_vec_dot},
    [XD_TYPE_Q4_K] = {.name = "Q4_K",
                      .blck_size = XD_QK_K,
                      .type_size = sizeof(struct xd_block_q4_K),
                      .to_float = q4_K_to_float,
                      .from_float = q4_K_from_float,
                      .vec_dot_f32 = q4_K_vec_dot},
    [XD_TYPE_Q5_K] = {.name = "Q5_K",
                      .blck_size = XD_QK_K,
                      .type_size = sizeof(struct xd_block_q5_K),
                      .to_float = q5_K_to_float,
                      .vec_dot_f32 = q5_K_vec_dot},
    [XD_TYPE_Q6_K] = {.name = "Q6_K",
                      .blck_size = XD_QK_K,
                      .type_size = sizeof(struct xd_block_q6_K),
                      .to_float = q6_K_to_float,
                      .vec_dot_f32 = q6_K_vec_dot},
    [XD_TYPE_Q8_K] = {.name = "Q8_K",
                      .blck_size = XD_QK_K,
                      .type_size = sizeof(struct xd_block_q8_K),
                      .to_float = q8_K_to_float,
                      .vec_dot_f32 = q8_K_vec_dot},
    [XD_TYPE_IQ2_XXS] = XD_SIZE_ONLY("IQ2_XXS", XD_QK_K, struct xd_block_iq2_xxs),
    [XD_TYPE_IQ2_XS] = XD_SIZE_ONLY("IQ2_XS", XD_QK_K, struct xd_block_iq2_xs),
    [XD_TYPE_IQ3_XXS] = XD_SIZE_ONLY("IQ3_XXS", XD_QK_K, struct xd_block_iq3_xxs),
    [XD_TYPE_IQ1_S] = XD_SIZE_ONLY("IQ1_S", XD_QK_K, struct xd_block_iq1_s),
    [XD_TYPE_IQ4_NL] = XD_SIZE_ONLY("IQ4_NL", XD_QK4_NL, struct xd_block_iq4_nl),
    [XD_TYPE_IQ3_S] = XD_SIZE_ONLY("IQ3_S", XD_QK_K, struct xd_block_iq3_s),
    [XD_TYPE_IQ2_S] = XD_SIZE_ONLY("IQ2_S", XD_QK_K, struct xd_block_iq2_s),
    [XD_TYPE_IQ4_XS] = XD_SIZE_ONLY("IQ4_XS", XD_QK_K, struct xd_block_iq4_xs),
    [XD_TYPE_I8] = XD_SIZE_ONLY("I8", 1, int8_t),
    [XD_TYPE_I16] = XD_SIZE_ONLY("I16", 1, int16_t),
    [XD_TYPE_I32] = XD_SIZE_ONLY("I32", 1, int32_t),
    [XD_TYPE_I64] = XD_SIZE_ONLY("I64", 1, int64_t),
    [XD_TYPE_F64] = XD_SIZE_ONLY("F64", 1, double),
    [XD_TYPE_IQ1_M] = XD_SIZE_ONLY("IQ1_M", XD_QK_K, struct xd_block_iq1_m),
    [XD_TYPE_TQ1_0] = XD_SIZE_ONLY("TQ1_0", XD_QK_K, struct xd_block_tq1_0),
    [XD_TYPE_TQ2_0] = XD_SIZE_ONLY("TQ2_0", XD_QK_K, struct xd_block_tq2_0),
    [XD_TYPE_MXFP4] = XD_SIZE_ONLY("MXFP4", XD_QK_MXFP4, struct xd_block_mxfp4),
    [XD_TYPE_NVFP4] = XD_SIZE_ONLY("NVFP4", XD_QK_NVFP4, struct xd_block_nvfp4),
    [XD_TYPE_Q1_0] = XD_SIZE_ONLY("Q1_0", XD_QK1_0, struct xd_block_q1_0),
    [XD_TYPE_Q2_0] = XD_SIZE_ONLY("Q2_0", XD_QK2_0, struct xd_block_q2_0),
};

#undef XD_SIZE_ONLY

const struct xd_type_traits *xd_type_traits(uint32_t id) {
    if (id >= XD_TYPE_COUNT || type_traits[id].name == NULL) return NULL;
    return &type_traits[id];
}

const char *xd_type_name(uint32_t id) {
    const struct xd_type_traits *t = xd_type_traits(id);
    return t ? t->name : "?";
}

int xd_type_from_name(const char *name) {
    if (name == NULL) return -1;
    for (int id = 0; id < XD_TYPE_COUNT; id++)
        if (type_traits[id].name && strcasecmp(type_traits[id].name, name) == 0) return id;
    return -1;
}

size_t xd_row_size(uint32_t id, int64_t n) {
    const struct xd_type_traits *t = xd_type_traits(id);
    if (t == NULL || n < 0 || n % t->blck_size != 0) return 0;
    const uint64_t blocks = (uint64_t)(n / t->blck_size);
    if (blocks > SIZE_MAX / t->type_size) return 0;
    return (size_t)blocks * t->type_size;
}

int xd_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n) {
    const struct xd_type_traits *t = xd_type_traits(type);
    if (t == NULL || t->to_float == NULL) return XD_E_UNSUPPORTED;
    if (n < 0 || n % t->blck_size != 0) return XD_E_INVALID;
    t->to_float(src, dst, n);
    return 0;
}

int xd_quantize_row(uint32_t type, const float *src, void *dst, int64_t n) {
    const struct xd_type_traits *t = xd_type_traits(type);
    if (t == NULL || t->from_float == NULL) return XD_E_UNSUPPORTED;
    if (n < 0 || n % t->blck_size != 0) return XD_E_INVALID;
    t->from_float(src, dst, n);
    return 0;
}
