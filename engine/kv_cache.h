/* kv_cache.h - keys and values of past positions, behind a small interface.
 *
 * The forward pass only stores a position's K/V rows and reads a sequence's rows back, so the
 * contiguous per-sequence layout here can become fixed-size blocks with a block table
 * (continuous batching) without touching the model code. Rows are stored as F16, as
 * llama.cpp's default KV type does: half the memory, and the same rounding as the reference.
 */
#ifndef XD_KV_CACHE_H
#define XD_KV_CACHE_H

#include <stdint.h>

struct xd_kv;

/* A cache for n_seq sequences of up to n_ctx positions, n_layer layers, kv_dim values per row
 * for K and for V. Returns 0 or XD_E_NOMEM / XD_E_INVALID; *out untouched on failure. */
int xd_kv_create(int64_t n_layer, int32_t n_seq, int32_t n_ctx, int64_t kv_dim,
                 struct xd_kv **out);
void xd_kv_destroy(struct xd_kv *kv);

/* Store the K and V rows of (seq, pos) in layer. XD_E_CONTEXT when pos >= n_ctx,
 * XD_E_INVALID for a bad seq; nothing is written on failure. */
int xd_kv_store(struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos, const float *k,
                const float *v);
/* The F16 rows of (seq, pos) in layer; the caller guarantees the position was stored. */
const uint16_t *xd_kv_key(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos);
const uint16_t *xd_kv_value(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos);

/* Forget every position of seq from pos on (pos 0: the whole sequence). */
void xd_kv_seq_truncate(struct xd_kv *kv, int32_t seq, int32_t pos);
/* Positions stored for seq (one past the highest stored position). */
int32_t xd_kv_seq_len(const struct xd_kv *kv, int32_t seq);
int32_t xd_kv_n_ctx(const struct xd_kv *kv);
int32_t xd_kv_n_seq(const struct xd_kv *kv);
/* Bytes of K/V storage allocated. */
uint64_t xd_kv_bytes(const struct xd_kv *kv);

#endif
