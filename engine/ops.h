/* ops.h - the backend's operations, one table per backend (calm's transformer.forward idea).
 *
 * The forward pass calls only these; the CPU reference table is ops_cpu.c, and the SIMD and
 * CUDA backends are further tables with the same contracts. Shapes are in the comments:
 * activations are row-major [n_tok x dim] with an explicit leading dimension, weights are
 * struct xd_tensor views (ne[0] = input size, ne[1] = output size).
 *
 * Determinism contract: every output row depends only on its own input row and the weights,
 * computed in a fixed order — never on which other rows are in the batch.
 */
#ifndef XD_OPS_H
#define XD_OPS_H

#include <stdint.h>

#include "kv_cache.h"
#include "model.h"

struct xd_ops {
    const char *name;
    /* W (ne0=n_in, ne1=n_out) @ x[t] (n_in,) -> y[t] (n_out,) for t < n_tok */
    void (*matmul)(const struct xd_tensor *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                   int64_t n_tok);
    /* y (n,) = x / rms(x) * w  (w F32, n values); y may alias x */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    /* rotate the first n_rot dims of each of n_head heads (head_dim apart) of x at pos */
    void (*rope)(float *x, int64_t n_head, int64_t head_dim, int64_t n_rot, int32_t pos,
                 float base, enum xd_rope_style style);
    /* out (n_head*head_dim,) = softmax(q K^T * scale) V over positions 0..n_pos-1 of seq in
     * layer; grouped-query: head h reads KV head h / (n_head / n_head_kv). scratch: n_pos
     * floats. */
    void (*attention)(float *out, const float *q, const struct xd_kv *kv, int64_t layer,
                      int32_t seq, int32_t n_pos, int64_t n_head, int64_t n_head_kv,
                      int64_t head_dim, float scale, float *scratch);
    /* y (n,) = silu(gate) * up */
    void (*swiglu)(float *y, const float *gate, const float *up, int64_t n);
    /* y (ne0,) = row `row` of emb, as float */
    void (*get_row)(float *y, const struct xd_tensor *emb, int64_t row);
};

/* The portable scalar reference backend. Never NULL. */
const struct xd_ops *xd_ops_cpu_ref(void);

#endif
