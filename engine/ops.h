/* ops.h - the backend's operations, one table per backend (calm's transformer.forward idea).
 *
 * The forward pass calls only these, always with the backend object they belong to (its
 * threads, its scratch, the kernels its CPU runs). Backends:
 *   cpu-ref     ops_cpu.c: scalar, one thread, float activations (quant.c's vec_dot_f32);
 *               the numbers of llama.cpp's float path ("golden-float").
 *   cpu-scalar  ops_cpu_fast.c with kernels_ref.c: activations rounded to 8 bits per block
 *               (bf16 for BF16 weights) and exact integer block sums, threaded; the definition
 *               the SIMD backends are tested against.
 *   cpu-avx2, cpu-avx512   the same numbers, bit for bit, from AVX2 / AVX-512 (VNNI) kernels.
 *   cpu         the widest of those the CPU runs (the default).
 * Shapes are in the comments: activations are row-major [n_tok x dim] with an explicit leading
 * dimension, weights are struct xd_tensor views (ne[0] = input size, ne[1] = output size).
 *
 * Determinism contract: every output row depends only on its own input row and the weights,
 * computed in a fixed order - never on which other rows are in the batch, nor on the number
 * of threads.
 */
#ifndef XD_OPS_H
#define XD_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_cache.h"
#include "model.h"

struct xd_backend;

struct xd_ops {
    const char *name;
    /* W (ne0=n_in, ne1=n_out) @ x[t] (n_in,) -> y[t] (n_out,) for t < n_tok (<= max_tokens) */
    void (*matmul)(struct xd_backend *be, const struct xd_tensor *w, const float *x, int64_t ldx,
                   float *y, int64_t ldy, int64_t n_tok);
    /* y (n,) = x / rms(x) * w  (w F32, n values); y may alias x */
    void (*rmsnorm)(struct xd_backend *be, float *y, const float *x, const float *w, int64_t n,
                    float eps);
    /* rotate the first n_rot dims of each of n_head heads (head_dim apart) of x at pos */
    void (*rope)(struct xd_backend *be, float *x, int64_t n_head, int64_t head_dim, int64_t n_rot,
                 int32_t pos, float base, enum xd_rope_style style);
    /* for t < n_tok: out[t] (n_head*head_dim,) = softmax(q[t] K^T * scale) V over positions
     * 0..pos[t] of sequence seq[t] in layer (already stored); rows of q and out are ld floats
     * apart. Grouped-query: head h reads KV head h / (n_head / n_head_kv). pos[t] < max_pos. */
    void (*attention)(struct xd_backend *be, float *out, const float *q, int64_t ld,
                      const struct xd_kv *kv, int64_t layer, const int32_t *seq,
                      const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                      int64_t head_dim, float scale);
    /* y (n,) = silu(gate) * up */
    void (*swiglu)(struct xd_backend *be, float *y, const float *gate, const float *up, int64_t n);
    /* y (ne0,) = row `row` of emb, as float */
    void (*get_row)(struct xd_backend *be, float *y, const struct xd_tensor *emb, int64_t row);
};

struct xd_backend_params {
    const char *name;   /* see above; NULL or "" = "cpu" */
    int32_t n_threads;  /* threads for the kernels, caller included; 0 = one per online CPU */
    int64_t max_tokens; /* most tokens one matmul or attention call gets (the context's n_batch) */
    int64_t max_row;    /* longest matmul input row */
    int32_t max_pos;    /* most positions one attention call reads (the context's n_ctx) */
};

/* Create a backend: probes the CPU, starts its threads, allocates its scratch. 0, or
 * XD_E_UNSUPPORTED (unknown name, or kernels this CPU cannot run), XD_E_INVALID, XD_E_NOMEM or a
 * negative errno, with a message in err; *out untouched on failure. */
int xd_backend_create(const struct xd_backend_params *p, struct xd_backend **out, char *err,
                      size_t errlen);
/* Joins the threads and frees everything. NULL is a no-op. */
void xd_backend_destroy(struct xd_backend *be);

/* Give the backend its own copy, in the panel layout of its kernels (kernels.h), of every
 * matmul weight of m they have panel kernels for (Q8_0 and the k-quants on cpu-avx2 and
 * cpu-avx512; rows a multiple of the panel): attention, dense FFN and the LM head (not when
 * tied to the embedding table, which get_row reads by rows), and the routed experts too if
 * experts. The matmuls then read the copy whenever a weight view falls inside one, bit for
 * bit the same numbers with no transposes; views elsewhere (an offloaded expert cache's
 * slots) keep the row kernels. The mapping's pages of each copied range are dropped from the
 * process (madvise DONTNEED; the page cache keeps them), so resident memory stays one copy. m
 * must outlive the backend. 0, or XD_E_NOMEM (nothing repacked, message in err). A second call
 * is a no-op. */
int xd_backend_repack(struct xd_backend *be, const struct xd_model *m, bool experts, char *err,
                      size_t errlen);
/* Bytes the backend repacked (0: none). */
uint64_t xd_backend_repacked_bytes(const struct xd_backend *be);
const struct xd_ops *xd_backend_ops(const struct xd_backend *be);
/* The backend's resolved name ("cpu-avx512" for "cpu" on this machine). */
const char *xd_backend_name(const struct xd_backend *be);
int xd_backend_n_threads(const struct xd_backend *be);
/* What the fast backends count (cpu-ref counts nothing): wall time inside matmul and attention
 * and the weight bytes the matmuls read, so a benchmark can print GB/s per stage. */
struct xd_backend_stats {
    uint64_t matmul_calls, matmul_ns, matmul_weight_bytes;
    uint64_t attn_calls, attn_ns;
};
const struct xd_backend_stats *xd_backend_stats(const struct xd_backend *be);
void xd_backend_stats_reset(struct xd_backend *be);

/* The names accepted by xd_backend_create, for --help texts. */
#define XD_BACKEND_NAMES "cpu, cpu-avx512, cpu-avx2, cpu-scalar, cpu-ref"

/* The reference table (cpu-ref). Kept for callers that pick a backend by its table: a context
 * given this in xd_ctx_params.ops creates a cpu-ref backend. Never NULL. */
const struct xd_ops *xd_ops_cpu_ref(void);

#endif
