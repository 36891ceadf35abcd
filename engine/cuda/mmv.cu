/* mmv.cu - quantized matrix multiply with dequantization inside the kernel, and embedding rows.
 *
 * One warp per output row: the warp walks the row 256 elements at a time, lane i decoding the
 * 8-element slice i of each step into registers (cuda_impl.cuh: oct<T>) and dotting it with up
 * to NT token rows of x, so the weights are read once per NT tokens and both the weight and the
 * x loads of a warp are contiguous; a fixed shuffle tree sums the lanes. (The first version
 * gave each lane a whole 32-element unit: every lane then read its own 128 bytes of x, 32
 * cache lines per load instruction, and decode ran at 13% of the HBM limit.) A token's result
 * is therefore the same whatever else is in the batch (the per-token order of operations does
 * not depend on NT or on the grid), which makes "batched == alone" and "offloaded ==
 * resident" hold bit for bit on this backend, and the kernel never needs float atomics.
 *
 * The trade-off: at one token this is a bandwidth-bound GEMV, which is what decode needs. For
 * long prefills it re-decodes each weight once per 8 tokens instead of running a tensor-core
 * GEMM (dequantize to F16/BF16 + cuBLAS GemmEx would be several times faster there, but its
 * rounding depends on the batch shape; not done yet — see docs/benchmarks.md).
 *
 * Q4_K (the common decode type) has its own kernel below (k_mm_q4k: 16-byte loads, nibbles to
 * floats without int->float conversions, scales applied per 16-element run, 2 rows per warp):
 * 25% faster decode than k_mm on an H100 (docs/benchmarks.md). It is picked from the matrix
 * shape alone, so a matrix always takes the same kernel wherever its copy lives.
 *
 * Row indirection (struct rows) lets the MoE layer gather an expert's tokens straight from the
 * normed activations and scatter its outputs into per-(token, slot) rows without copy kernels.
 */
#include <stdlib.h>

#include "cuda_impl.cuh"

namespace xdc {
namespace {

constexpr int MM_WARPS = 4; /* rows per block */

__device__ __forceinline__ const float *row_of(const rows &r, int i) {
    const int64_t j = r.idx ? r.idx[i] / r.div : i;
    return r.base + j * r.ld;
}

/* acc += w (8,) . x (8,), in element order */
__device__ __forceinline__ float dot8(const float *w, const float *x, float acc) {
    const float4 a = ((const float4 *)x)[0], b = ((const float4 *)x)[1];
    acc = fmaf(w[0], a.x, acc);
    acc = fmaf(w[1], a.y, acc);
    acc = fmaf(w[2], a.z, acc);
    acc = fmaf(w[3], a.w, acc);
    acc = fmaf(w[4], b.x, acc);
    acc = fmaf(w[5], b.y, acc);
    acc = fmaf(w[6], b.z, acc);
    acc = fmaf(w[7], b.w, acc);
    return acc;
}

template <uint32_t T, int NT, bool DUAL>
__global__ void __launch_bounds__(MM_WARPS * 32)
    k_mm(dmat w, dmat w2, rows x, rows y, int n_tok, bool add) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    if (r >= w.n_out) return; /* whole warps only */
    const int t0 = (int)blockIdx.y * NT;
    const int nt = n_tok - t0 < NT ? n_tok - t0 : NT;
    const float *xr[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) xr[t] = t < nt ? row_of(x, t0 + t) : nullptr;
    float acc[NT], acc2[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = acc2[t] = 0.0f;
    const uint8_t *row = w.data + (size_t)r * w.row_bytes;
    const uint8_t *row2 = DUAL ? w2.data + (size_t)r * w2.row_bytes : nullptr;
    const int64_t ng = w.n_in / 8;
    for (int64_t g = lane; g < ng; g += 32) {
        float wv[8];
        oct<T>::load(row, g, wv);
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < nt) acc[t] = dot8(wv, xr[t] + g * 8, acc[t]);
        if (DUAL) {
            oct<T>::load(row2, g, wv);
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < nt) acc2[t] = dot8(wv, xr[t] + g * 8, acc2[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= nt) break;
        const float s = warp_sum(acc[t]);
        float v = s;
        if (DUAL) {
            const float s2 = warp_sum(acc2[t]);
            v = s / (1.0f + expf(-s)) * s2; /* silu(gate) * up, as ops_cpu.c */
        }
        if (lane == 0) {
            float *yr = (float *)row_of(y, t0 + t) + r;
            *yr = add ? *yr + v : v;
        }
    }
}

/* ---- Q4_K: 16-byte loads, scales applied per 16-element run, several rows per warp ------ *
 * A warp step covers 4 super-blocks (1024 elements) of R rows: lane l takes super-block l/8
 * and byte run c = l%8 of its 128 quant bytes (one 16-byte load): the low nibbles are 16
 * elements of sub-block 2(c/2), the high nibbles the same 16 positions of sub-block 2(c/2)+1.
 * Nibbles become floats without the (quarter-rate) int->float conversion: the byte goes
 * into the mantissa of 2^23 (one PRMT) and 2^23 is subtracted (exact). Per run of 16 the lane
 * forms sum(q*x) and sum(x), then acc += dl*sum(q*x) - ml*sum(x) (dl = d*sc, ml = dmin*m as
 * quant.c): the same sum as dequantize-then-dot in another order, and a fixed one — every
 * token's operations are the same whatever R, NT or the grid are, so batch == alone holds bit
 * for bit. Header (d, dmin, scales: 16 bytes) is one broadcast 16-byte load. x is read through
 * L1 as float4s (16 KiB - 56 KiB per token: it stays resident). */
constexpr int Q4K_WARPS = 4;

__device__ __forceinline__ float nib_f(uint32_t v, uint32_t sel) {
    return __fsub_rn(__uint_as_float(__byte_perm(v, 0x4B000000u, sel)), 8388608.0f);
}
__device__ __forceinline__ void nib16(const uint4 q, int shift, float *w) {
    const uint32_t a[4] = {(q.x >> shift) & 0x0F0F0F0Fu, (q.y >> shift) & 0x0F0F0F0Fu,
                           (q.z >> shift) & 0x0F0F0F0Fu, (q.w >> shift) & 0x0F0F0F0Fu};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        w[4 * j + 0] = nib_f(a[j], 0x7440u);
        w[4 * j + 1] = nib_f(a[j], 0x7441u);
        w[4 * j + 2] = nib_f(a[j], 0x7442u);
        w[4 * j + 3] = nib_f(a[j], 0x7443u);
    }
}
/* 16 bytes at p: one 16-byte load where aligned, else four 4-byte loads (Q4_K blocks are
 * 4-aligned wherever they live; the values, hence the results, are the same either way) */
__device__ __forceinline__ uint4 ld128(const uint8_t *p, bool a16) {
    if (a16) return __ldg((const uint4 *)p);
    const uint32_t *q = (const uint32_t *)p;
    return make_uint4(__ldg(q), __ldg(q + 1), __ldg(q + 2), __ldg(q + 3));
}
__device__ __forceinline__ int byte_of(const uint4 &h, int i) { /* byte i of scales (h.y..h.w) */
    const uint32_t w = i < 4 ? h.y : i < 8 ? h.z : h.w;
    return (int)((w >> (8 * (i & 3))) & 0xff);
}
/* the 6-bit scale and min of sub-block j, as integers (as k4_scale_min) */
__device__ __forceinline__ void q4k_scm(const uint4 &h, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = byte_of(h, j) & 63;
        *m = byte_of(h, j + 4) & 63;
    } else {
        *sc = (byte_of(h, j + 4) & 0x0f) | ((byte_of(h, j - 4) >> 6) << 4);
        *m = (byte_of(h, j + 4) >> 4) | ((byte_of(h, j) >> 6) << 4);
    }
}
/* dl, ml of sub-block j (as unit<Q4_K>) */
__device__ __forceinline__ void q4k_dm(const uint4 &h, int j, float *dl, float *ml) {
    int sc, m;
    q4k_scm(h, j, &sc, &m);
    const float d = h2f((uint16_t)(h.x & 0xffff)), dmin = h2f((uint16_t)(h.x >> 16));
    *dl = __fmul_rn(d, (float)sc);
    *ml = __fmul_rn(dmin, (float)m);
}
/* sum of 16 x in order, and sum of w*x in order (FMA chain from 0) */
__device__ __forceinline__ float sum16(const float4 *x) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++)
        s = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(s, x[j].x), x[j].y), x[j].z), x[j].w);
    return s;
}
__device__ __forceinline__ float dot16(const float *w, const float4 *x) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        s = __fmaf_rn(w[4 * j + 0], x[j].x, s);
        s = __fmaf_rn(w[4 * j + 1], x[j].y, s);
        s = __fmaf_rn(w[4 * j + 2], x[j].z, s);
        s = __fmaf_rn(w[4 * j + 3], x[j].w, s);
    }
    return s;
}

/* The row pointers of a warp's R rows in each of its NM matrices (rows past the end clamped:
 * computed, never stored) and zeroed accumulators; shared by both Q4_K kernels. */
template <int NM, int R, int NT>
__device__ __forceinline__ void q4k_begin(const dmat &w, const dmat &w2, int64_t r0,
                                          const uint8_t *(&rp)[NM][R], float (&acc)[NM][R][NT]) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int64_t rr = r0 + r < w.n_out ? r0 + r : w.n_out - 1;
        rp[0][r] = w.data + (size_t)rr * w.row_bytes;
        if (NM == 2) rp[NM - 1][r] = w2.data + (size_t)rr * w2.row_bytes;
    }
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int t = 0; t < NT; t++) acc[m][r][t] = 0.0f;
}

/* Lanes summed by the fixed tree, silu(gate) * up when NM == 2 (as ops_cpu.c), lane 0 stores
 * (or adds) each row of each token. */
template <int NM, int R, int NT>
__device__ __forceinline__ void q4k_store(float (&acc)[NM][R][NT], const dmat &w, const rows &y,
                                          int64_t r0, int t0, int nt, int lane, bool add) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= nt) break;
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float s = warp_sum(acc[0][r][t]);
            float v = s;
            if (NM == 2) {
                const float s2 = warp_sum(acc[NM - 1][r][t]);
                v = s / (1.0f + expf(-s)) * s2;
            }
            if (lane == 0 && r0 + r < w.n_out) {
                float *yr = (float *)row_of(y, t0 + t) + r0 + r;
                *yr = add ? *yr + v : v;
            }
        }
    }
}

template <int NT, int R, bool DUAL>
__global__ void __launch_bounds__(Q4K_WARPS * 32)
    k_mm_q4k(dmat w, dmat w2, rows x, rows y, int n_tok, bool add) {
    constexpr int NM = DUAL ? 2 : 1; /* matrices */
    const int lane = threadIdx.x & 31, sbi = lane >> 3, c = lane & 7;
    const int64_t r0 = ((int64_t)blockIdx.x * Q4K_WARPS + (threadIdx.x >> 5)) * R;
    if (r0 >= w.n_out) return; /* whole warps only */
    const int t0 = (int)blockIdx.y * NT;
    const int nt = n_tok - t0 < NT ? n_tok - t0 : NT;
    const float *xr[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        xr[t] = t < nt ? row_of(x, t0 + t) + 64 * (c >> 1) + 16 * (c & 1) : nullptr;
    const uint8_t *rp[NM][R];
    float acc[NM][R][NT];
    q4k_begin<NM, R, NT>(w, w2, r0, rp, acc);
    const int nsb = (int)(w.n_in / 256);
    const bool a16 = (((uintptr_t)w.data | (uintptr_t)(DUAL ? w2.data : w.data)) & 15) == 0;
    const int qoff = 16 + 32 * (c >> 1) + 16 * (c & 1), j0 = 2 * (c >> 1);
    for (int sb = sbi; sb < nsb; sb += 4) {
        uint4 hd[NM][R], qs[NM][R];
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint8_t *b = rp[m][r] + (size_t)sb * 144;
                hd[m][r] = ld128(b, a16);
                qs[m][r] = ld128(b + qoff, a16);
            }
        float wl[NM][R][16], wh[NM][R][16], dl[NM][R][2], ml[NM][R][2];
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int r = 0; r < R; r++) {
                nib16(qs[m][r], 0, wl[m][r]);
                nib16(qs[m][r], 4, wh[m][r]);
                q4k_dm(hd[m][r], j0, &dl[m][r][0], &ml[m][r][0]);
                q4k_dm(hd[m][r], j0 + 1, &dl[m][r][1], &ml[m][r][1]);
            }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= nt) break;
            const float4 *xp = (const float4 *)(xr[t] + (size_t)sb * 256);
            float4 xl[4], xh[4];
#pragma unroll
            for (int j = 0; j < 4; j++) xl[j] = __ldg(xp + j), xh[j] = __ldg(xp + 8 + j);
            const float sl = sum16(xl), sh = sum16(xh);
#pragma unroll
            for (int m = 0; m < NM; m++)
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float a = acc[m][r][t];
                    a = __fmaf_rn(dl[m][r][0], dot16(wl[m][r], xl), a);
                    a = __fmaf_rn(-ml[m][r][0], sl, a);
                    a = __fmaf_rn(dl[m][r][1], dot16(wh[m][r], xh), a);
                    a = __fmaf_rn(-ml[m][r][1], sh, a);
                    acc[m][r][t] = a;
                }
        }
    }
    q4k_store<NM, R, NT>(acc, w, y, r0, t0, nt, lane, add);
}

/* ---- Q4_K with 8-bit activations (llama.cpp's mmvq idea, our layout) ------------------- *
 * x arrives quantized per 256 values exactly as the CPU backend quantizes it for k-quants
 * (quant_q8_256: codes, one scale per 256, sums of the codes per 32). Lane l takes the same
 * 16-byte run of quant bytes as k_mm_q4k and the 2 x 16 matching activation codes (two more
 * 16-byte loads), forms the two 16-element integer dot products with 8 dp4a (nibbles masked
 * out 4 at a time: no per-weight conversion at all), applies the sub-block scales and mins
 * in integers, and adds its part with two fma: acc = fma(d*dx, I1, acc), acc = fma(-(dmin*dx),
 * I2, acc). Lanes are summed by the fixed tree at the end. Integer parts are exact; the float
 * order per token is fixed (lane, then super-block, then tree), so batch == alone and
 * offloaded == resident hold bit for bit as for the float kernels. The activation rounding
 * is the CPU backend's (and llama.cpp's): the golden rule's 8-bit-activation tolerance. */
template <int NT, int R, bool DUAL>
__global__ void __launch_bounds__(Q4K_WARPS * 32)
    k_mm_q4k8(dmat w, dmat w2, rows x, rows y, int n_tok, bool add) {
    constexpr int NM = DUAL ? 2 : 1;
    const int lane = threadIdx.x & 31, sbi = lane >> 3, c = lane & 7;
    const int64_t r0 = ((int64_t)blockIdx.x * Q4K_WARPS + (threadIdx.x >> 5)) * R;
    if (r0 >= w.n_out) return; /* whole warps only */
    const int t0 = (int)blockIdx.y * NT;
    const int nt = n_tok - t0 < NT ? n_tok - t0 : NT;
    const int nsb = (int)(w.n_in / 256);
    const uint8_t *xq[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int64_t j = t < nt ? (x.idx ? x.idx[t0 + t] / x.div : t0 + t) : 0;
        xq[t] = x.q8 + (size_t)j * x.q8_ld;
    }
    const uint8_t *rp[NM][R];
    float acc[NM][R][NT];
    q4k_begin<NM, R, NT>(w, w2, r0, rp, acc);
    const bool a16 = (((uintptr_t)w.data | (uintptr_t)(DUAL ? w2.data : w.data)) & 15) == 0;
    const int qoff = 16 + 32 * (c >> 1) + 16 * (c & 1), j0 = 2 * (c >> 1);
    const int xoff = 32 * j0 + 16 * (c & 1);
    const bool even = (c & 1) == 0; /* adds the mins of sub-blocks j0, j0+1 (once per pair) */
    for (int sb = sbi; sb < nsb; sb += 4) {
        uint4 hd[NM][R], qs[NM][R];
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint8_t *b = rp[m][r] + (size_t)sb * 144;
                hd[m][r] = ld128(b, a16);
                qs[m][r] = ld128(b + qoff, a16);
            }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= nt) break;
            const uint8_t *xb = xq[t];
            const uint4 xl = __ldg((const uint4 *)(xb + (size_t)sb * 256 + xoff));
            const uint4 xh = __ldg((const uint4 *)(xb + (size_t)sb * 256 + xoff + 32));
            const float dx = __ldg((const float *)(xb + w.n_in) + sb);
            int bs0 = 0, bs1 = 0;
            if (even) {
                const int32_t *bs = (const int32_t *)(xb + w.n_in + 4 * (size_t)nsb) + sb * 8 + j0;
                bs0 = __ldg(bs), bs1 = __ldg(bs + 1);
            }
#pragma unroll
            for (int m = 0; m < NM; m++)
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const uint4 q = qs[m][r], h = hd[m][r];
                    int il = __dp4a((int)(q.x & 0x0F0F0F0Fu), (int)xl.x, 0);
                    il = __dp4a((int)(q.y & 0x0F0F0F0Fu), (int)xl.y, il);
                    il = __dp4a((int)(q.z & 0x0F0F0F0Fu), (int)xl.z, il);
                    il = __dp4a((int)(q.w & 0x0F0F0F0Fu), (int)xl.w, il);
                    int ih = __dp4a((int)((q.x >> 4) & 0x0F0F0F0Fu), (int)xh.x, 0);
                    ih = __dp4a((int)((q.y >> 4) & 0x0F0F0F0Fu), (int)xh.y, ih);
                    ih = __dp4a((int)((q.z >> 4) & 0x0F0F0F0Fu), (int)xh.z, ih);
                    ih = __dp4a((int)((q.w >> 4) & 0x0F0F0F0Fu), (int)xh.w, ih);
                    int sc0, m0, sc1, m1;
                    q4k_scm(h, j0, &sc0, &m0);
                    q4k_scm(h, j0 + 1, &sc1, &m1);
                    const int i1 = sc0 * il + sc1 * ih, i2 = m0 * bs0 + m1 * bs1;
                    const float d = h2f((uint16_t)(h.x & 0xffff)), dmin = h2f((uint16_t)(h.x >> 16));
                    float a = acc[m][r][t];
                    a = __fmaf_rn(__fmul_rn(d, dx), (float)i1, a);
                    a = __fmaf_rn(-__fmul_rn(dmin, dx), (float)i2, a);
                    acc[m][r][t] = a;
                }
        }
    }
    q4k_store<NM, R, NT>(acc, w, y, r0, t0, nt, lane, add);
}

/* codes of 256 floats per block of 256 threads: thread j quantizes element j; each warp is
 * one sub-block of 32 and sums its codes */
__global__ void __launch_bounds__(256)
    k_quant_q8_256(const float *x, int64_t ld, int64_t n, uint8_t *dst, size_t dst_ld) {
    __shared__ float sh[32];
    const int sb = blockIdx.x, row = blockIdx.y, j = threadIdx.x;
    const float v = x[(int64_t)row * ld + (int64_t)sb * 256 + j];
    const float amax = block_max(fabsf(v), sh);
    const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    const float s = __fmul_rn(v, id);
    /* q8_round of kernels_ref.c: nearest even, clamped; NaN to -127 */
    const int q = !(s >= -127.0f) ? -127 : s > 127.0f ? 127 : (int)__float2int_rn(s);
    uint8_t *o = dst + (size_t)row * dst_ld;
    o[(int64_t)sb * 256 + j] = (uint8_t)(int8_t)q;
    int sum = q;
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if ((j & 31) == 0) ((int32_t *)(o + n + 4 * (n / 256)))[sb * 8 + (j >> 5)] = sum;
    if (j == 0) ((float *)(o + n))[sb] = amax != 0.0f ? __fdiv_rn(1.0f, id) : 0.0f;
}

/* XD_CUDA_GENERIC_MMV=1: every type through k_mm (A/B timing of the Q4_K kernel only; both
 * paths are deterministic, but they round differently, so never mix them in one comparison) */
bool generic_only() {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("XD_CUDA_GENERIC_MMV");
        v = e && *e == '1';
    }
    return v == 1;
}


bool q4k_fast_ok(const dmat &w) {
    /* shape only (never the address), so resident and offloaded copies of a matrix always
     * take the same kernel */
    return w.type == XD_TYPE_Q4_K && w.n_in % 256 == 0 && w.row_bytes % 16 == 0;
}

template <int NT, int R, bool DUAL>
void launch_q4k_t(const dmat &w, const dmat &w2, rows x, rows y, int n_tok, bool add,
                  cudaStream_t st) {
    const int64_t per = (int64_t)Q4K_WARPS * R;
    const unsigned gx = (unsigned)((w.n_out + per - 1) / per);
    const dim3 grid(gx, (unsigned)((n_tok + NT - 1) / NT));
    if (x.q8) k_mm_q4k8<NT, R, DUAL><<<grid, Q4K_WARPS * 32, 0, st>>>(w, w2, x, y, n_tok, add);
    else k_mm_q4k<NT, R, DUAL><<<grid, Q4K_WARPS * 32, 0, st>>>(w, w2, x, y, n_tok, add);
}

template <bool DUAL>
cudaError_t launch_q4k(const dmat &w, const dmat &w2, rows x, rows y, int n_tok, bool add,
                       cudaStream_t st) {
    /* R from the shape only (never from n_tok): 2 rows per warp where there are rows enough
     * (in the fused gate/up only with 8-bit activations, where registers allow; rows per warp
     * never change a token's order of operations: 1 and 2 gave the same logits hash on an
     * H100, docs/benchmarks.md) */
    const bool r2 = w.n_out >= 4096 && (!DUAL || x.q8);
    if (n_tok <= 1) {
        if (r2) launch_q4k_t<1, 2, DUAL>(w, w2, x, y, n_tok, add, st);
        else launch_q4k_t<1, 1, DUAL>(w, w2, x, y, n_tok, add, st);
    } else if (n_tok <= 2) {
        if (r2) launch_q4k_t<2, 2, DUAL>(w, w2, x, y, n_tok, add, st);
        else launch_q4k_t<2, 1, DUAL>(w, w2, x, y, n_tok, add, st);
    } else if (n_tok <= 4) {
        if (r2) launch_q4k_t<4, 2, DUAL>(w, w2, x, y, n_tok, add, st);
        else launch_q4k_t<4, 1, DUAL>(w, w2, x, y, n_tok, add, st);
    } else {
        if (r2) launch_q4k_t<8, 2, DUAL>(w, w2, x, y, n_tok, add, st);
        else launch_q4k_t<8, 1, DUAL>(w, w2, x, y, n_tok, add, st);
    }
    return cudaGetLastError();
}

template <uint32_t T, bool DUAL>
cudaError_t launch_mm(const dmat &w, const dmat &w2, rows x, rows y, int n_tok, bool add,
                      cudaStream_t st) {
    const unsigned gx = (unsigned)((w.n_out + MM_WARPS - 1) / MM_WARPS);
    const dim3 blk(MM_WARPS * 32);
    if (n_tok <= 1)
        k_mm<T, 1, DUAL><<<dim3(gx, (unsigned)n_tok), blk, 0, st>>>(w, w2, x, y, n_tok, add);
    else if (n_tok <= 2)
        k_mm<T, 2, DUAL><<<dim3(gx, 1), blk, 0, st>>>(w, w2, x, y, n_tok, add);
    else if (n_tok <= 4)
        k_mm<T, 4, DUAL><<<dim3(gx, 1), blk, 0, st>>>(w, w2, x, y, n_tok, add);
    else
        k_mm<T, 8, DUAL><<<dim3(gx, (unsigned)((n_tok + 7) / 8)), blk, 0, st>>>(w, w2, x, y,
                                                                               n_tok, add);
    return cudaGetLastError();
}

template <uint32_t T> __global__ void k_get_rows(dmat emb, const int32_t *tok, float *y) {
    const int t = blockIdx.x;
    const uint8_t *row = emb.data + (size_t)tok[t] * emb.row_bytes;
    float *out = y + (int64_t)t * emb.n_in;
    for (int64_t u = threadIdx.x; u < emb.n_in / 32; u += blockDim.x) {
        float wv[32];
        unit<T>::load(row, u, wv);
#pragma unroll
        for (int i = 0; i < 32; i++) out[u * 32 + i] = wv[i];
    }
}

struct mm_fn {
    const dmat &w, &w2;
    rows x, y;
    int n_tok;
    bool add, dual;
    cudaStream_t st;
    cudaError_t rc;
    template <uint32_t T> void run() {
        if (T == XD_TYPE_Q4_K && !generic_only() && q4k_fast_ok(w) && (!dual || q4k_fast_ok(w2))) {
            rc = dual ? launch_q4k<true>(w, w2, x, y, n_tok, add, st)
                      : launch_q4k<false>(w, w2, x, y, n_tok, add, st);
            return;
        }
        rc = dual ? launch_mm<T, true>(w, w2, x, y, n_tok, add, st)
                  : launch_mm<T, false>(w, w2, x, y, n_tok, add, st);
    }
};

struct rows_fn {
    const dmat &emb;
    const int32_t *tok;
    float *y;
    int n_tok;
    cudaStream_t st;
    cudaError_t rc;
    template <uint32_t T> void run() {
        k_get_rows<T><<<n_tok, 128, 0, st>>>(emb, tok, y);
        rc = cudaGetLastError();
    }
};

}  // namespace

cudaError_t mm(const dmat &w, rows x, rows y, int n_tok, bool add, cudaStream_t st) {
    if (n_tok <= 0) return cudaSuccess;
    mm_fn f{w, w, x, y, n_tok, add, false, st, cudaErrorInvalidValue};
    dispatch_type(w.type, f);
    return f.rc;
}

cudaError_t mm_swiglu(const dmat &wg, const dmat &wu, rows x, rows y, int n_tok, cudaStream_t st) {
    if (n_tok <= 0) return cudaSuccess;
    if (wg.type != wu.type || wg.n_in != wu.n_in || wg.n_out != wu.n_out)
        return cudaErrorInvalidValue;
    mm_fn f{wg, wu, x, y, n_tok, false, true, st, cudaErrorInvalidValue};
    dispatch_type(wg.type, f);
    return f.rc;
}

bool mm_wants_q8(const dmat &w) {
    return w.data && w.type == XD_TYPE_Q4_K && !generic_only() && q4k_fast_ok(w);
}

cudaError_t quant_q8_256(const rows &x, int n_rows, int64_t n, uint8_t *dst, size_t dst_ld,
                         cudaStream_t st) {
    if (n_rows <= 0) return cudaSuccess;
    if (n % 256) return cudaErrorInvalidValue;
    k_quant_q8_256<<<dim3((unsigned)(n / 256), (unsigned)n_rows), 256, 0, st>>>(x.base, x.ld, n,
                                                                              dst, dst_ld);
    return cudaGetLastError();
}

cudaError_t get_rows(const dmat &emb, const int32_t *tok, float *y, int n_tok, cudaStream_t st) {
    if (n_tok <= 0) return cudaSuccess;
    rows_fn f{emb, tok, y, n_tok, st, cudaErrorInvalidValue};
    dispatch_type(emb.type, f);
    return f.rc;
}

}  // namespace xdc
