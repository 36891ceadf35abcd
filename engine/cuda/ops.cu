/* ops.cu - the small kernels of the forward pass: RMSNorm, RoPE + K/V store, attention,
 * the MoE combine. One block per row (or per (token, head)); reductions are fixed block trees
 * in double where the CPU reference sums in double (norms, softmax denominators), so results
 * are deterministic and stay close to ops_cpu.c. The weighted sums of V and of expert outputs
 * are evaluated with separate multiply and add roundings in the CPU's order.
 */
#include "cuda_ops.cuh"

namespace xdc {
namespace {

/* y[r] (len,) = x[r] * 1/sqrt(mean(x[r]^2) + eps) * w; y may be x */
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int64_t len, float eps) {
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * len;
    float *yr = y + (int64_t)blockIdx.x * len;
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = block_sum_d(ss, sh);
    const float scale = 1.0f / sqrtf((float)(ss / (double)len) + eps);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) yr[i] = xr[i] * scale * w[i];
}

/* Rotate the pairs of q (n_head heads) and k (n_head_kv heads) of token blockIdx.x, then store
 * k and v as F16 at (layer, seq, pos) of the cache. theta advances by repeated multiplication
 * exactly as ops_cpu.c (and ggml) do. */
__global__ void k_rope_store(float *q, float *k, const float *v, int64_t qd, int64_t kvd,
                             const int32_t *pos, const int32_t *seq, int n_head, int n_head_kv,
                             int hd, int n_rot, float theta_scale, int neox, __half *kc,
                             __half *vc, size_t layer_off, int32_t n_ctx) {
    /* block (h, t): head h of token t (q heads, then k heads); a k head also stores its K and
     * V rows. One block per head keeps this a ~3 us kernel at decode (one block per token
     * walking every head took ~20 us on an H100). */
    const int h = blockIdx.x, t = blockIdx.y;
    const int p = pos[t];
    const int half = n_rot / 2;
    float *vh = h < n_head ? q + t * qd + h * hd : k + t * kvd + (h - n_head) * hd;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = (float)p;
        for (int s = 0; s < i; s++) theta *= theta_scale;
        const float c = cosf(theta), sn = sinf(theta);
        const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const float x0 = vh[a], x1 = vh[b];
        vh[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
        vh[b] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
    }
    if (h < n_head) return;
    __syncthreads();
    const int64_t off = (int64_t)(h - n_head) * hd;
    const size_t row = layer_off + ((size_t)seq[t] * (size_t)n_ctx + (size_t)p) * (size_t)kvd + off;
    for (int64_t i = threadIdx.x; i < hd; i += blockDim.x) {
        kc[row + i] = __float2half_rn(vh[i]);
        vc[row + i] = __float2half_rn(v[t * kvd + off + i]);
    }
}

/* out[t] head blockIdx.x = softmax(q K^T * scale) V over positions 0..pos[t] of seq[t].
 * Dynamic shared memory: max_pos scores. Warps take positions round-robin for the scores
 * (lanes split the head dims); each thread owns output dims for the weighted sum. */
__global__ void k_attention(float *out, const float *q, int64_t ld, const __half *kc,
                            const __half *vc, size_t layer_off, int32_t n_ctx, int64_t kvd,
                            const int32_t *pos, const int32_t *seq, int group, int hd,
                            float scale) {
    extern __shared__ float sc[];
    __shared__ double shd[32];
    __shared__ float shf[32];
    const int h = blockIdx.x, t = blockIdx.y, kvh = h / group;
    const int np = pos[t] + 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const float *qh = q + t * ld + h * hd;
    const size_t base = layer_off + (size_t)seq[t] * (size_t)n_ctx * (size_t)kvd + (size_t)kvh * hd;
    for (int p = warp; p < np; p += nw) {
        const __half *kr = kc + base + (size_t)p * kvd;
        float s = 0.0f;
        for (int i = lane; i < hd; i += 32) s = fmaf(qh[i], __half2float(kr[i]), s);
        s = warp_sum(s);
        if (lane == 0) sc[p] = s * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int p = threadIdx.x; p < np; p += blockDim.x) mx = fmaxf(mx, sc[p]);
    mx = block_max(mx, shf);
    double sum = 0.0;
    for (int p = threadIdx.x; p < np; p += blockDim.x) {
        const float e = expf(sc[p] - mx);
        sc[p] = e;
        sum += e;
    }
    sum = block_sum_d(sum, shd); /* ends with __syncthreads() before the reads below */
    __syncthreads();
    const float inv = (float)(1.0 / sum);
    float *oh = out + t * ld + h * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float o = 0.0f;
        const __half *vr = vc + base + i;
        for (int p = 0; p < np; p++) o = mad_nc(sc[p] * inv, __half2float(vr[(size_t)p * kvd]), o);
        oh[i] = o;
    }
}

/* The same attention with the work spread over a block of 256 threads (the kernel above is
 * latency-bound at decode: 32 blocks, each warp walking positions one at a time, then each
 * thread walking all positions for one output dim — ~100 us per layer at 600 positions).
 * Scores: a thread per position, the whole head dot product in dim order from 16-byte K
 * loads, q in shared memory. Softmax: as above. Weighted sum: ATT_THREADS / (hd / 2) groups
 * of threads, each taking a contiguous range of positions for two dims (half2 V loads), the
 * group partials then added in group order. Every (token, head) follows the same fixed
 * order whatever the batch holds, so batch == alone still holds bit for bit; the order
 * differs from ops_cpu.c only like any reassociation. Used where hd is a multiple of 8 and
 * hd / 2 divides ATT_THREADS (every common head size). */
constexpr int ATT_THREADS = 256;

__global__ void __launch_bounds__(ATT_THREADS)
    k_attention_wide(float *out, const float *q, int64_t ld, const __half *kc, const __half *vc,
                     size_t layer_off, int32_t n_ctx, int64_t kvd, const int32_t *pos,
                     const int32_t *seq, int group, int hd, float scale) {
    extern __shared__ float sc[];
    __shared__ double shd[32];
    __shared__ float shf[32];
    __shared__ __align__(16) float qs[256];
    __shared__ float part[1024];
    const int h = blockIdx.x, t = blockIdx.y, kvh = h / group;
    const int np = pos[t] + 1, tid = threadIdx.x;
    const float *qh = q + t * ld + h * hd;
    for (int i = tid; i < hd; i += ATT_THREADS) qs[i] = qh[i];
    const size_t base = layer_off + (size_t)seq[t] * (size_t)n_ctx * (size_t)kvd + (size_t)kvh * hd;
    __syncthreads();
    for (int p = tid; p < np; p += ATT_THREADS) {
        const uint4 *kr = (const uint4 *)(kc + base + (size_t)p * kvd);
        float s = 0.0f;
        for (int i = 0; i < hd / 8; i++) {
            const uint4 u = __ldg(kr + i);
            const uint32_t a[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float2 f = __half22float2(*(const __half2 *)&a[j]);
                s = __fmaf_rn(qs[8 * i + 2 * j], f.x, s);
                s = __fmaf_rn(qs[8 * i + 2 * j + 1], f.y, s);
            }
        }
        sc[p] = __fmul_rn(s, scale);
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int p = tid; p < np; p += ATT_THREADS) mx = fmaxf(mx, sc[p]);
    mx = block_max(mx, shf);
    double sum = 0.0;
    for (int p = tid; p < np; p += ATT_THREADS) {
        const float e = expf(sc[p] - mx);
        sc[p] = e;
        sum += e;
    }
    sum = block_sum_d(sum, shd);
    __syncthreads();
    const float inv = (float)(1.0 / sum);
    const int half = hd / 2, G = ATT_THREADS / half, g = tid / half, dp = tid % half;
    const int lo = (int)((int64_t)np * g / G), hi = (int)((int64_t)np * (g + 1) / G);
    float o0 = 0.0f, o1 = 0.0f;
    const __half2 *vr = (const __half2 *)(vc + base) + dp;
    const int64_t vstride = kvd / 2;
#pragma unroll 4
    for (int p = lo; p < hi; p++) {
        const float w = __fmul_rn(sc[p], inv);
        const float2 v = __half22float2(vr[(size_t)p * vstride]);
        o0 = mad_nc(w, v.x, o0);
        o1 = mad_nc(w, v.y, o1);
    }
    part[g * hd + 2 * dp] = o0;
    part[g * hd + 2 * dp + 1] = o1;
    __syncthreads();
    float *oh = out + t * ld + h * hd;
    for (int i = tid; i < hd; i += ATT_THREADS) {
        float o = part[i];
        for (int j = 1; j < G; j++) o = __fadd_rn(o, part[j * hd + i]);
        oh[i] = o;
    }
}

bool attention_wide_ok(int hd, int64_t kvd) {
    return hd % 8 == 0 && hd <= 256 && ATT_THREADS % (hd / 2) == 0 && kvd % 8 == 0;
}

/* x[t] += sum_j w[t,j] * y[t*k + j], j in slot order (the per-(token, slot) expert outputs) */
__global__ void k_moe_combine(float *x, const float *y, const float *w, int k, int64_t d) {
    const int t = blockIdx.y;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d;
         i += (int64_t)gridDim.x * blockDim.x) {
        float o = 0.0f;
        for (int j = 0; j < k; j++) o = mad_nc(w[t * k + j], y[((int64_t)t * k + j) * d + i], o);
        x[t * d + i] = __fadd_rn(x[t * d + i], o);
    }
}

}  // namespace

cudaError_t rmsnorm(float *y, const float *x, const float *w, int64_t n_rows, int64_t len,
                    float eps, cudaStream_t st) {
    if (n_rows <= 0) return cudaSuccess;
    /* the row is one block (one reduction): as many threads as elements, up to 1024, so each
     * thread's loop is short (it is latency, not bandwidth, at decode) */
    const int threads = len >= 1024 ? 1024 : len >= 256 ? 256 : 64;
    k_rmsnorm<<<(unsigned)n_rows, threads, 0, st>>>(y, x, w, len, eps);
    return cudaGetLastError();
}

cudaError_t rope_store(const rope_args &a, float *q, float *k, const float *v, const int32_t *pos,
                       const int32_t *seq, int n_tok, __half *kc, __half *vc, size_t layer_off,
                       cudaStream_t st) {
    if (n_tok <= 0) return cudaSuccess;
    k_rope_store<<<dim3((unsigned)(a.n_head + a.n_head_kv), (unsigned)n_tok), 64, 0, st>>>(q, k, v, (int64_t)a.n_head * a.hd,
                                        (int64_t)a.n_head_kv * a.hd, pos, seq, a.n_head,
                                        a.n_head_kv, a.hd, a.n_rot, a.theta_scale, a.neox, kc, vc,
                                        layer_off, a.n_ctx);
    return cudaGetLastError();
}

cudaError_t attention_smem_setup(int32_t max_pos) {
    const size_t bytes = (size_t)max_pos * sizeof(float);
    if (bytes <= 40 * 1024) return cudaSuccess; /* 48 KiB with k_attention_wide's static 6 KiB */
    cudaError_t e = cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)bytes);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(k_attention_wide, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)bytes);
    return e;
}

cudaError_t attention(const rope_args &a, float *out, const float *q, const __half *kc,
                      const __half *vc, size_t layer_off, const int32_t *pos, const int32_t *seq,
                      int n_tok, float scale, cudaStream_t st) {
    if (n_tok <= 0) return cudaSuccess;
    const int64_t ld = (int64_t)a.n_head * a.hd, kvd = (int64_t)a.n_head_kv * a.hd;
    if (attention_wide_ok(a.hd, kvd)) {
        k_attention_wide<<<dim3((unsigned)a.n_head, (unsigned)n_tok), ATT_THREADS,
                           (size_t)a.n_ctx * sizeof(float), st>>>(
            out, q, ld, kc, vc, layer_off, a.n_ctx, kvd, pos, seq, a.n_head / a.n_head_kv, a.hd,
            scale);
        return cudaGetLastError();
    }
    k_attention<<<dim3((unsigned)a.n_head, (unsigned)n_tok), 128,
                  (size_t)a.n_ctx * sizeof(float), st>>>(out, q, ld, kc, vc, layer_off, a.n_ctx,
                                                         kvd, pos, seq, a.n_head / a.n_head_kv,
                                                         a.hd, scale);
    return cudaGetLastError();
}

cudaError_t moe_combine(float *x, const float *y, const float *w, int k, int64_t d, int n_tok,
                        cudaStream_t st) {
    if (n_tok <= 0) return cudaSuccess;
    /* a thread per element (one block per token walking d took ~20 us at decode) */
    k_moe_combine<<<dim3((unsigned)((d + 255) / 256), (unsigned)n_tok), 256, 0, st>>>(x, y, w, k, d);
    return cudaGetLastError();
}

}  // namespace xdc
