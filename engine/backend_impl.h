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

/* One weight tensor repacked into the panel layout (kernels.h): bytes [src, src + len) of the
 * model's mapping are at dst, permuted within each panel of rows. */
struct xd_panel_map {
    const uint8_t *src;
    size_t len;
    const uint8_t *dst;
    size_t row;         /* bytes per row */
    size_t panel_bytes; /* panel rows x row bytes: views must start at a multiple */
};

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
    struct xd_panel_map *pmap; /* sorted by src; xd_backend_repack */
    int n_pmap;
    uint8_t *pmem; /* the repacked copies (anonymous mmap), pmem_bytes */
    size_t pmem_bytes;
};

/* The kernel entry of a type: the backend's table, then its second choice; NULL if neither. */
const struct xd_kern_type *xd__kern_for(const struct xd_backend *be, uint32_t type);
/* The repacked copy holding data, or NULL (bsearch over be->pmap). */
const struct xd_panel_map *xd__panel_find(const struct xd_backend *be, const void *data);

/* The fast ops table (ops_cpu_fast.c) and the reference ops it shares (ops_cpu.c). */
const struct xd_ops *xd__ops_cpu_fast(void);
void xd__rmsnorm_ref(struct xd_backend *be, float *y, const float *x, const float *w, int64_t n,
                     float eps);
void xd__get_row_ref(struct xd_backend *be, float *y, const struct xd_tensor *emb, int64_t row);

#endif
