/* backend_impl.h - internal: the CPU backend object shared by ops_cpu.c, ops_cpu_fast.c and
 * backend.c. Everything an op needs beyond its arguments hangs off this object (threads,
 * scratch, the kernel table chosen from cpuid), never off a file static.
 */
#ifndef XD_BACKEND_IMPL_H
#define XD_BACKEND_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"
#include "kernels.h"
#include "ops.h"
#include "threadpool.h"

struct xd_backend {
    const struct xd_ops *ops;
    char name[32];
    struct xd_cpu_features cpu;
    const struct xd_kernels *kern;  /* NULL for cpu-ref */
    const struct xd_kernels *kern2; /* second choice for a type kern lacks (may be NULL) */
    struct xd_pool *pool;
    int n_threads;
    int64_t max_tokens, max_row;
    int32_t max_pos;
    uint8_t *xq; /* converted activation rows */
    size_t xq_size;
    uint8_t *scratch; /* per thread: kernel scratch, scratch_stride bytes each, 64-aligned */
    size_t scratch_stride;
    float *scores;        /* per thread: XD_ATTN_MAXQ x (max_pos scores + max_row of q) */
    size_t scores_stride; /* floats */
    struct xd_backend_stats stats;
};

/* The fast ops table (ops_cpu_fast.c) and the reference ops it shares (ops_cpu.c). */
const struct xd_ops *xd__ops_cpu_fast(void);
void xd__rmsnorm_ref(struct xd_backend *be, float *y, const float *x, const float *w, int64_t n,
                     float eps);
void xd__get_row_ref(struct xd_backend *be, float *y, const struct xd_tensor *emb, int64_t row);

#endif
