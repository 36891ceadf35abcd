/* forward.h - the batch-first forward pass of a model on one backend.
 *
 * A batch is any number of tokens from any number of sequences: token id, position, sequence
 * id and whether its logits are wanted. Serving one sequence is a batch of its prompt, then
 * batches of one token; continuous batching only changes who fills the batch.
 */
#ifndef XD_FORWARD_H
#define XD_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "expert_cache.h"
#include "kv_cache.h"
#include "model.h"
#include "ops.h"
#include "stats.h"

struct xd_batch {
    int32_t n_tokens;
    const int32_t *token;
    const int32_t *pos; /* positions of one sequence must be 0,1,2,... in batch order */
    const int32_t *seq;
    const bool *logits; /* NULL: logits for the last token only */
};

struct xd_ctx_params {
    int32_t n_ctx;            /* positions per sequence (default: min(model's, 4096)) */
    int32_t n_seq;            /* sequences (default 1) */
    int32_t n_batch;          /* tokens per internal step (default 512) */
    const char *backend;      /* CPU backend (ops.h: XD_BACKEND_NAMES); NULL = "cpu", the
                                 fastest kernels this CPU runs; "cuda": the device-resident
                                 forward pass (engine/cuda, builds with XD_HAVE_CUDA) */
    int32_t n_threads;        /* kernel threads, caller included; 0 = one per online CPU */
    const struct xd_ops *ops; /* xd_ops_cpu_ref() = backend "cpu-ref"; other values ignored */
    struct xd_xc *xc;         /* expert cache, borrowed; NULL: an everything-resident one */
    uint64_t kv_bytes;        /* KV cache pool (kv_cache.h); 0 = n_seq x n_ctx positions */
    bool no_repack;           /* keep every weight in the file's row layout: no repacked copy
                                 in the kernels' panel layout (xd_backend_repack; the same
                                 numbers, slower k-quant matmuls) */
};

struct xd_ctx;

/* Create an inference context over m (which must outlive it). 0 or a negative code with a
 * message in err; *out untouched on failure. */
int xd_ctx_create(const struct xd_model *m, const struct xd_ctx_params *p, struct xd_ctx **out,
                  char *err, size_t errlen);
void xd_ctx_destroy(struct xd_ctx *c);

/* Run the batch through the model, storing its K/V, and write one row of n_vocab logits per
 * token whose logits flag is set, in batch order. Returns 0, XD_E_INVALID (bad token, seq or
 * position; nothing is computed), XD_E_CONTEXT (position beyond n_ctx), or an expert-cache
 * error (the KV of this batch may then be partly written: truncate the sequences). */
int xd_forward(struct xd_ctx *c, const struct xd_batch *b, float *logits);

struct xd_kv *xd_ctx_kv(struct xd_ctx *c);
/* True when the K/V rows live in xd_ctx_kv's blocks (the CPU backends), so that sequences can
 * share them (xd_kv_seq_share); false when the backend keeps its own K/V (cuda) and the host
 * cache only counts positions and blocks. */
bool xd_ctx_kv_on_host(const struct xd_ctx *c);
struct xd_xc *xd_ctx_xc(struct xd_ctx *c);
const struct xd_stats *xd_ctx_stats(const struct xd_ctx *c);
/* The backend the context computes with (xd_backend_name, xd_backend_n_threads). */
struct xd_backend *xd_ctx_backend(struct xd_ctx *c);
/* "cuda" for a CUDA context, else the CPU backend's resolved name. */
const char *xd_ctx_backend_name(const struct xd_ctx *c);

/* Internal, shared with the CUDA backend: route one token from its router logits probs
 * (n_expert, overwritten with the softmax): top-k (ties: lower id) -> sel, weights
 * renormalized over the k (sum clamped below at 2^-14) and scaled -> w. */
void xd__moe_route(const struct xd_hparams *hp, float *probs, int32_t *sel, float *w);

#endif
