/* cuda_ops.cuh - launchers of ops.cu (the non-matmul kernels of the forward pass). */
#ifndef XD_CUDA_OPS_CUH
#define XD_CUDA_OPS_CUH

#include "cuda_impl.cuh"

namespace xdc {

struct rope_args {
    int n_head, n_head_kv, hd, n_rot, neox;
    float theta_scale; /* base^(-2/n_rot), computed on the host with the CPU's powf */
    int32_t n_ctx;     /* positions per sequence in the cache */
};

/* y[r] = rmsnorm(x[r]) * w for n_rows rows of len (y may be x) */
cudaError_t rmsnorm(float *y, const float *x, const float *w, int64_t n_rows, int64_t len,
                    float eps, cudaStream_t st);
/* RoPE q and k of n_tok tokens in place, then store k, v as F16 rows of the cache */
cudaError_t rope_store(const rope_args &a, float *q, float *k, const float *v, const int32_t *pos,
                       const int32_t *seq, int n_tok, __half *kc, __half *vc, size_t layer_off,
                       cudaStream_t st);
/* let the attention kernel use max_pos floats of dynamic shared memory */
cudaError_t attention_smem_setup(int32_t max_pos);
cudaError_t attention(const rope_args &a, float *out, const float *q, const __half *kc,
                      const __half *vc, size_t layer_off, const int32_t *pos, const int32_t *seq,
                      int n_tok, float scale, cudaStream_t st);
cudaError_t moe_combine(float *x, const float *y, const float *w, int k, int64_t d, int n_tok,
                        cudaStream_t st);

}  // namespace xdc

#endif
