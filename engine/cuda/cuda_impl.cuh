/* cuda_impl.cuh - what the CUDA backend's .cu files share: block layouts, the 32-element
 * dequantizers every kernel loads weights through, warp/block reduction primitives, and the
 * launchers of each kernel family (defined in their own .cu, called by forward_cuda.cu).
 *
 * Weights are read in their GGUF types; every quantized type is decoded in "units" of 32
 * consecutive elements of a row (a 32-block, or one 32-element slice of a 256-element K-quant
 * super-block), in the same float operations as quant.c's to_float, so a unit's values are
 * bit-identical to the CPU reference and only the order of the dot-product sums differs.
 * All reductions are fixed trees (shuffles in lane order, then warps in order): no float
 * atomics, so every kernel is deterministic bit for bit.
 */
#ifndef XD_CUDA_IMPL_CUH
#define XD_CUDA_IMPL_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "quant.h"
#include "quant_blocks.h"
#include "xd_error.h"
}

namespace xdc {

/* ---- conversions (identical to quant.c's: hardware cvt is exact for half -> float) ------ */
__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
/* two bytes at a 2-aligned address, little-endian */
__device__ __forceinline__ uint16_t ld16(const uint8_t *p) { return *(const uint16_t *)p; }
/* four bytes at a 4-aligned address */
__device__ __forceinline__ uint32_t ld32(const uint8_t *p) { return *(const uint32_t *)p; }
/* a * b + c rounded twice, never fused: the CPU reference (ISO C, no contraction) does this */
__device__ __forceinline__ float mad_nc(float a, float b, float c) {
    return __fadd_rn(__fmul_rn(a, b), c);
}

/* ---- warp and block reductions (fixed trees: deterministic) ----------------------------- */
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over a block of up to 1024 threads (blockDim.x a multiple of 32); every thread gets it.
 * sh: 32 doubles of shared memory. */
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(v);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

/* ---- 32-element units ------------------------------------------------------------------- */
/* Geometry of a type: elements per block and bytes per block. */
struct type_geom {
    int blck;
    int bytes;
};
__host__ __device__ inline type_geom geom(uint32_t t) {
    switch (t) {
    case XD_TYPE_F32: return {32, 128}; /* 32-element "blocks" of plain values */
    case XD_TYPE_F16:
    case XD_TYPE_BF16: return {32, 64};
    case XD_TYPE_Q4_0: return {32, (int)sizeof(xd_block_q4_0)};
    case XD_TYPE_Q4_1: return {32, (int)sizeof(xd_block_q4_1)};
    case XD_TYPE_Q5_0: return {32, (int)sizeof(xd_block_q5_0)};
    case XD_TYPE_Q5_1: return {32, (int)sizeof(xd_block_q5_1)};
    case XD_TYPE_Q8_0: return {32, (int)sizeof(xd_block_q8_0)};
    case XD_TYPE_Q2_K: return {256, (int)sizeof(xd_block_q2_K)};
    case XD_TYPE_Q3_K: return {256, (int)sizeof(xd_block_q3_K)};
    case XD_TYPE_Q4_K: return {256, (int)sizeof(xd_block_q4_K)};
    case XD_TYPE_Q5_K: return {256, (int)sizeof(xd_block_q5_K)};
    case XD_TYPE_Q6_K: return {256, (int)sizeof(xd_block_q6_K)};
    case XD_TYPE_Q8_K: return {256, (int)sizeof(xd_block_q8_K)};
    default: return {0, 0};
    }
}

/* Whether the backend computes with type t (the types quant.c has to_float for). */
__host__ inline bool type_supported(uint32_t t) { return geom(t).blck > 0; }

template <uint32_t T> struct unit;

/* unit<T>::load(row, u, w): elements 32u .. 32u+31 of row into w. */
template <> struct unit<XD_TYPE_F32> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const float4 *p = (const float4 *)(row + u * 128);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 v = p[i];
            w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
        }
    }
};
template <> struct unit<XD_TYPE_F16> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *p = row + u * 64;
#pragma unroll
        for (int i = 0; i < 32; i++) w[i] = h2f(ld16(p + 2 * i));
    }
};
template <> struct unit<XD_TYPE_BF16> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *p = row + u * 64;
#pragma unroll
        for (int i = 0; i < 32; i++) w[i] = bf2f(ld16(p + 2 * i));
    }
};
template <> struct unit<XD_TYPE_Q8_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + u * 34;
        const float d = h2f(ld16(b));
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const uint16_t q = ld16(b + 2 + 2 * i);
            w[2 * i] = (float)(int8_t)(q & 0xff) * d;
            w[2 * i + 1] = (float)(int8_t)(q >> 8) * d;
        }
    }
};
template <> struct unit<XD_TYPE_Q4_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + u * 18;
        const float d = h2f(ld16(b));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const uint8_t q = b[2 + j];
            w[j] = (float)((q & 0x0f) - 8) * d;
            w[j + 16] = (float)((q >> 4) - 8) * d;
        }
    }
};
template <> struct unit<XD_TYPE_Q4_1> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + u * 20;
        const float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const uint8_t q = b[4 + j];
            w[j] = mad_nc((float)(q & 0x0f), d, m);
            w[j + 16] = mad_nc((float)(q >> 4), d, m);
        }
    }
};
__device__ __forceinline__ uint32_t ld32_2(const uint8_t *p) { /* 4 bytes at a 2-aligned address */
    return (uint32_t)ld16(p) | (uint32_t)ld16(p + 2) << 16;
}
template <> struct unit<XD_TYPE_Q5_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + u * 22;
        const float d = h2f(ld16(b));
        const uint32_t qh = ld32_2(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const uint8_t q = b[6 + j];
            const int h0 = (int)((qh >> j) & 1u) << 4, h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            w[j] = (float)(((q & 0x0f) | h0) - 16) * d;
            w[j + 16] = (float)(((q >> 4) | h1) - 16) * d;
        }
    }
};
template <> struct unit<XD_TYPE_Q5_1> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + u * 24;
        const float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
        const uint32_t qh = ld32_2(b + 4);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const uint8_t q = b[8 + j];
            const int h0 = (int)((qh >> j) & 1u) << 4, h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            w[j] = mad_nc((float)((q & 0x0f) | h0), d, m);
            w[j + 16] = mad_nc((float)((q >> 4) | h1), d, m);
        }
    }
};
/* K-quants: unit u is sub-slice s = u % 8 of super-block u / 8 */
template <> struct unit<XD_TYPE_Q2_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const xd_block_q2_K *b = (const xd_block_q2_K *)(row + (u >> 3) * sizeof(xd_block_q2_K));
        const int s32 = (int)(u & 7);
        const float d = h2f(b->d), dmin = h2f(b->dmin);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int s = 2 * s32 + h; /* 16-element sub-block */
            const uint8_t *q = b->qs + 32 * (s / 8) + 16 * (s % 2);
            const int shift = 2 * ((s % 8) / 2);
            const float dl = d * (b->scales[s] & 0x0f), ml = dmin * (b->scales[s] >> 4);
#pragma unroll
            for (int l = 0; l < 16; l++) w[16 * h + l] = mad_nc(dl, (float)((q[l] >> shift) & 3), -ml);
        }
    }
};
template <> struct unit<XD_TYPE_Q3_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const xd_block_q3_K *b = (const xd_block_q3_K *)(row + (u >> 3) * sizeof(xd_block_q3_K));
        const int s32 = (int)(u & 7);
        const float d = h2f(b->d);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int s = 2 * s32 + h;
            const int half = s / 8, pass = (s % 8) / 2, off = 16 * (s % 2);
            const uint8_t *q = b->qs + 32 * half + off, *hm = b->hmask + off;
            const int shift = 2 * pass;
            const uint8_t bit = (uint8_t)(1u << (4 * half + pass));
            const int lo = (b->scales[s % 8] >> (4 * (s / 8))) & 0x0f;
            const int hi = (b->scales[8 + s % 4] >> (2 * (s / 4))) & 3;
            const float dl = d * ((lo | hi << 4) - 32);
#pragma unroll
            for (int l = 0; l < 16; l++)
                w[16 * h + l] = dl * (((q[l] >> shift) & 3) - ((hm[l] & bit) ? 0 : 4));
        }
    }
};
__device__ __forceinline__ void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}
template <> struct unit<XD_TYPE_Q4_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + (u >> 3) * 144; /* 144-byte blocks: 4-aligned */
        const int s = (int)(u & 7);
        const uint32_t dd = ld32(b);
        const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
        int sc, m;
        k4_scale_min(b + 4, s, &sc, &m);
        const float dl = d * sc, ml = dmin * m;
        const uint8_t *q = b + 16 + 32 * (s / 2);
        const int shift = 4 * (s % 2);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t v = ld32(q + 4 * i) >> shift;
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * i + k] = mad_nc(dl, (float)((v >> (8 * k)) & 0x0f), -ml);
        }
    }
};
template <> struct unit<XD_TYPE_Q5_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + (u >> 3) * 176; /* 176-byte blocks: 4-aligned */
        const int s = (int)(u & 7);
        const uint32_t dd = ld32(b);
        const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
        int sc, m;
        k4_scale_min(b + 4, s, &sc, &m);
        const float dl = d * sc, ml = dmin * m;
        const uint8_t *qh = b + 16, *q = b + 48 + 32 * (s / 2);
        const int shift = 4 * (s % 2);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t v = ld32(q + 4 * i) >> shift, h = ld32(qh + 4 * i) >> s;
#pragma unroll
            for (int k = 0; k < 4; k++)
                w[4 * i + k] = mad_nc(
                    dl, (float)(int)(((v >> (8 * k)) & 0x0f) + (((h >> (8 * k)) & 1) << 4)), -ml);
        }
    }
};
template <> struct unit<XD_TYPE_Q6_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const uint8_t *b = row + (u >> 3) * 210; /* 210-byte blocks: 2-aligned */
        const int s = (int)(u & 7), half = s / 4, k = s % 4;
        const uint8_t *ql = b + 64 * half + 32 * (k % 2), *qh = b + 128 + 32 * half;
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * half);
        const float d = h2f(ld16(b + 208));
        const int nshift = 4 * (k / 2);
        const float d0 = d * sc[2 * k], d1 = d * sc[2 * k + 1];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const uint16_t lo = ld16(ql + 2 * i), hi = ld16(qh + 2 * i);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int l = 2 * i + e;
                const int q = ((((lo >> (8 * e)) >> nshift) & 0x0f) |
                               ((((hi >> (8 * e)) >> (2 * k)) & 3) << 4)) - 32;
                w[l] = (l < 16 ? d0 : d1) * q;
            }
        }
    }
};
template <> struct unit<XD_TYPE_Q8_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t u, float *w) {
        const xd_block_q8_K *b = (const xd_block_q8_K *)(row + (u >> 3) * sizeof(xd_block_q8_K));
        const int s = (int)(u & 7);
        const float d = b->d;
#pragma unroll
        for (int l = 0; l < 32; l++) w[l] = d * b->qs[32 * s + l];
    }
};

/* ---- 8-element slices: the matmul's loads ------------------------------------------------ */
/* oct<T>::load(row, g, w): elements 8g .. 8g+7 of row into w, the same float operations as
 * unit<T> (so the same values). A warp reads 256 consecutive elements per step, lane l the
 * slice l: loads of neighbouring lanes are contiguous, and x is read as coalesced float4s. */
template <uint32_t T> struct oct { /* generic: through the 32-element unit (rare types) */
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        float u[32];
        unit<T>::load(row, g >> 2, u);
        const int o = (int)(g & 3) * 8;
#pragma unroll
        for (int i = 0; i < 32; i++)
            if (i >= o && i < o + 8) w[i - o] = u[i];
    }
};
template <> struct oct<XD_TYPE_F32> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const float4 *p = (const float4 *)(row + g * 32);
        const float4 a = p[0], b = p[1];
        w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z,
        w[7] = b.w;
    }
};
template <> struct oct<XD_TYPE_F16> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint4 v = *(const uint4 *)(row + g * 16);
        const uint32_t a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[2 * i] = h2f((uint16_t)(a[i] & 0xffff));
            w[2 * i + 1] = h2f((uint16_t)(a[i] >> 16));
        }
    }
};
template <> struct oct<XD_TYPE_BF16> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint4 v = *(const uint4 *)(row + g * 16);
        const uint32_t a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[2 * i] = bf2f((uint16_t)(a[i] & 0xffff));
            w[2 * i + 1] = bf2f((uint16_t)(a[i] >> 16));
        }
    }
};
template <> struct oct<XD_TYPE_Q8_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint8_t *b = row + (g >> 2) * 34;
        const float d = h2f(ld16(b));
        const uint8_t *q = b + 2 + (g & 3) * 8;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t v = ld16(q + 2 * i);
            w[2 * i] = (float)(int8_t)(v & 0xff) * d;
            w[2 * i + 1] = (float)(int8_t)(v >> 8) * d;
        }
    }
};
template <> struct oct<XD_TYPE_Q4_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint8_t *b = row + (g >> 2) * 18;
        const float d = h2f(ld16(b));
        const int j = (int)(g & 3) * 8; /* 0, 8: low nibbles of qs[j..]; 16, 24: high of qs[j-16..] */
        const uint8_t *q = b + 2 + (j & 15);
        const int sh = j >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t v = ld16(q + 2 * i);
            w[2 * i] = (float)((((v & 0xff) >> sh) & 0x0f) - 8) * d;
            w[2 * i + 1] = (float)((((v >> 8) >> sh) & 0x0f) - 8) * d;
        }
    }
};
template <> struct oct<XD_TYPE_Q4_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint8_t *b = row + (g >> 5) * 144;
        const int j = (int)(g & 31) * 8, s = j / 32, l = j % 32;
        const uint32_t dd = ld32(b);
        const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
        int sc, m;
        k4_scale_min(b + 4, s, &sc, &m);
        const float dl = d * sc, ml = dmin * m;
        const uint8_t *q = b + 16 + 32 * (s / 2) + l;
        const int shift = 4 * (s % 2);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const uint32_t v = ld32(q + 4 * i) >> shift;
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * i + k] = mad_nc(dl, (float)((v >> (8 * k)) & 0x0f), -ml);
        }
    }
};
template <> struct oct<XD_TYPE_Q5_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint8_t *b = row + (g >> 5) * 176;
        const int j = (int)(g & 31) * 8, s = j / 32, l = j % 32;
        const uint32_t dd = ld32(b);
        const float d = h2f((uint16_t)(dd & 0xffff)), dmin = h2f((uint16_t)(dd >> 16));
        int sc, m;
        k4_scale_min(b + 4, s, &sc, &m);
        const float dl = d * sc, ml = dmin * m;
        const uint8_t *qh = b + 16 + l, *q = b + 48 + 32 * (s / 2) + l;
        const int shift = 4 * (s % 2);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const uint32_t v = ld32(q + 4 * i) >> shift, h = ld32(qh + 4 * i) >> s;
#pragma unroll
            for (int k = 0; k < 4; k++)
                w[4 * i + k] = mad_nc(
                    dl, (float)(int)(((v >> (8 * k)) & 0x0f) + (((h >> (8 * k)) & 1) << 4)), -ml);
        }
    }
};
template <> struct oct<XD_TYPE_Q6_K> {
    static __device__ __forceinline__ void load(const uint8_t *row, int64_t g, float *w) {
        const uint8_t *b = row + (g >> 5) * 210;
        const int j = (int)(g & 31) * 8, half = j / 128, jj = j % 128, k = jj / 32, l = jj % 32;
        const uint8_t *ql = b + 64 * half + 32 * (k % 2) + l, *qh = b + 128 + 32 * half + l;
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * half);
        const float d = h2f(ld16(b + 208));
        const float dl = d * sc[2 * k + l / 16];
        const int nshift = 4 * (k / 2);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t lo = ld16(ql + 2 * i), hi = ld16(qh + 2 * i);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int q = ((((lo >> (8 * e)) >> nshift) & 0x0f) |
                               ((((hi >> (8 * e)) >> (2 * k)) & 3) << 4)) - 32;
                w[2 * i + e] = dl * q;
            }
        }
    }
};

/* Call f.template run<T>() with the type as a template argument; false for types the backend
 * does not compute with. */
template <class F> __host__ bool dispatch_type(uint32_t t, F &&f) {
    switch (t) {
    case XD_TYPE_F32: f.template run<XD_TYPE_F32>(); return true;
    case XD_TYPE_F16: f.template run<XD_TYPE_F16>(); return true;
    case XD_TYPE_BF16: f.template run<XD_TYPE_BF16>(); return true;
    case XD_TYPE_Q4_0: f.template run<XD_TYPE_Q4_0>(); return true;
    case XD_TYPE_Q4_1: f.template run<XD_TYPE_Q4_1>(); return true;
    case XD_TYPE_Q5_0: f.template run<XD_TYPE_Q5_0>(); return true;
    case XD_TYPE_Q5_1: f.template run<XD_TYPE_Q5_1>(); return true;
    case XD_TYPE_Q8_0: f.template run<XD_TYPE_Q8_0>(); return true;
    case XD_TYPE_Q2_K: f.template run<XD_TYPE_Q2_K>(); return true;
    case XD_TYPE_Q3_K: f.template run<XD_TYPE_Q3_K>(); return true;
    case XD_TYPE_Q4_K: f.template run<XD_TYPE_Q4_K>(); return true;
    case XD_TYPE_Q5_K: f.template run<XD_TYPE_Q5_K>(); return true;
    case XD_TYPE_Q6_K: f.template run<XD_TYPE_Q6_K>(); return true;
    case XD_TYPE_Q8_K: f.template run<XD_TYPE_Q8_K>(); return true;
    default: return false;
    }
}

/* A weight matrix on the device: n_out rows of n_in elements of type, row_bytes apart. */
struct dmat {
    uint32_t type;
    int64_t n_in, n_out;
    size_t row_bytes;
    const uint8_t *data;
};

/* Row indirection of a matmul operand: row i of the operand is base + (idx ? idx[i] / div : i)
 * rows of ld floats. */
struct rows {
    float *base;
    int64_t ld;
    const int32_t *idx;
    int32_t div;
    /* optional: the same rows quantized by quant_q8_256 (q8_ld bytes apart, same indexing);
     * Q4_K matrices then take the 8-bit-activation kernel */
    const uint8_t *q8;
    size_t q8_ld;
};

/* Bytes of one row of n (a multiple of 256) activations quantized by quant_q8_256: the n
 * codes, then n/256 float scales, then n/256 x 8 int32 sums of the codes of each 32. */
inline size_t q8_row_bytes(int64_t n) { return ((size_t)n + 36 * (size_t)(n / 256) + 15) & ~(size_t)15; }

/* ---- launchers (all on stream st; 0 or a cudaError_t from the launch) --------------------- */
/* y[i] (n_out,) = W @ x[i] (+ y[i] when add), for i < n_tok. Rows: see struct rows. */
cudaError_t mm(const dmat &w, rows x, rows y, int n_tok, bool add, cudaStream_t st);
/* y[i] (n_out,) = silu(Wg @ x[i]) * (Wu @ x[i]); Wg and Wu of the same shape and type. */
cudaError_t mm_swiglu(const dmat &wg, const dmat &wu, rows x, rows y, int n_tok, cudaStream_t st);
/* dst row r (dst_ld bytes apart) = rows 0..n_rows-1 of x (n floats each, x.idx ignored)
 * quantized per 256 as the CPU's xd__act_q8_256_ref: d = 1/(127/max|x|), q = round(x/d) */
cudaError_t quant_q8_256(const rows &x, int n_rows, int64_t n, uint8_t *dst, size_t dst_ld,
                         cudaStream_t st);
/* whether a matmul with w would use the 8-bit activations of rows.q8 */
bool mm_wants_q8(const dmat &w);
/* y[t] (n,) = row tok[t] of emb as floats */
cudaError_t get_rows(const dmat &emb, const int32_t *tok, float *y, int n_tok, cudaStream_t st);

}  // namespace xdc

#endif
