/* kv_cache.h - keys and values of past positions, behind a small interface.
 *
 * The forward pass only stores a position's K/V rows and reads a sequence's rows back, one row
 * pointer at a time, so the storage behind it is paged (vLLM's PagedAttention layout): one pool
 * of fixed-size blocks of XD_KV_BLOCK positions, sized by a byte budget, and a block table per
 * sequence. Blocks are taken as positions are stored and given back on truncate; a block may
 * be shared by several sequences (reference counts) and is copied before one of them writes
 * into it (copy-on-write), which is how a request's n samples share their prompt's KV.
 * Rows are stored as F16, as llama.cpp's default KV type does.
 */
#ifndef XD_KV_CACHE_H
#define XD_KV_CACHE_H

#include <stdbool.h>
#include <stdint.h>

/* Positions per block. Small enough that a sequence wastes little of its last block, large
 * enough that the block table stays short and attention walks 16 contiguous rows at a time. */
#define XD_KV_BLOCK 16

struct xd_kv;

/* A cache for n_seq sequences of up to n_ctx positions each, n_layer layers, kv_dim values per
 * row for K and for V, with a pool of budget_bytes (rounded down to whole blocks; 0 = enough
 * for every sequence to reach n_ctx, the contiguous layout's footprint). The pool's pages are
 * touched only as blocks are used. Returns 0 or XD_E_NOMEM / XD_E_INVALID (also when the budget
 * holds no block); *out untouched on failure. */
int xd_kv_create_paged(int64_t n_layer, int32_t n_seq, int32_t n_ctx, int64_t kv_dim,
                       uint64_t budget_bytes, struct xd_kv **out);
/* xd_kv_create_paged with the default budget. */
int xd_kv_create(int64_t n_layer, int32_t n_seq, int32_t n_ctx, int64_t kv_dim,
                 struct xd_kv **out);
void xd_kv_destroy(struct xd_kv *kv);

/* Store the K and V rows of (seq, pos) in layer, taking a block (or copying a shared one)
 * when needed. XD_E_CONTEXT when pos >= n_ctx, XD_E_INVALID for a bad seq or layer, or for a
 * pos beyond the sequence's length (positions are stored in order), -ENOSPC when no block is
 * free; nothing is written on failure. Never fails for positions made ready by
 * xd_kv_seq_reserve. */
int xd_kv_store(struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos, const float *k,
                const float *v);
/* Record (seq, pos) as stored without writing rows: for backends that keep K/V elsewhere
 * (the CUDA backend's device cache), so the lengths stay right. Codes as xd_kv_store. */
int xd_kv_mark(struct xd_kv *kv, int32_t seq, int32_t pos);
/* The F16 rows of (seq, pos) in layer; the caller guarantees the position was stored. */
const uint16_t *xd_kv_key(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos);
const uint16_t *xd_kv_value(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos);

/* Make positions seq_len..pos_end-1 of seq writable: blocks taken, a shared block copied.
 * All or nothing: 0, or -ENOSPC (not enough free blocks) / XD_E_CONTEXT / XD_E_INVALID with
 * nothing changed. */
int xd_kv_seq_reserve(struct xd_kv *kv, int32_t seq, int32_t pos_end);
/* How many positions past seq_len the free blocks (and seq's own last block) could hold now,
 * capped at n_ctx - seq_len: xd_kv_seq_reserve(seq, len + room) succeeds. */
int32_t xd_kv_seq_room(const struct xd_kv *kv, int32_t seq);
/* dst, an empty sequence, gets src's first n_pos positions by reference (no copy): the blocks
 * are shared until one side writes into one. 0, or XD_E_INVALID (dst not empty, n_pos above
 * src's length) with nothing changed. Never allocates. */
int xd_kv_seq_share(struct xd_kv *kv, int32_t dst, int32_t src, int32_t n_pos);

/* Forget every position of seq from pos on (pos 0: the whole sequence); blocks no sequence
 * refers to any more go back to the pool. */
void xd_kv_seq_truncate(struct xd_kv *kv, int32_t seq, int32_t pos);
/* Positions stored for seq (one past the highest stored position). */
int32_t xd_kv_seq_len(const struct xd_kv *kv, int32_t seq);
/* Blocks in seq's table (reserved ones included). */
int32_t xd_kv_seq_blocks(const struct xd_kv *kv, int32_t seq);
int32_t xd_kv_n_ctx(const struct xd_kv *kv);
int32_t xd_kv_n_seq(const struct xd_kv *kv);
/* Bytes of K/V storage in the pool (used or not). */
uint64_t xd_kv_bytes(const struct xd_kv *kv);

struct xd_kv_usage {
    int32_t block_size;   /* positions per block (XD_KV_BLOCK) */
    int32_t n_blocks;     /* in the pool */
    int32_t n_used;       /* referenced by at least one sequence */
    int32_t n_shared;     /* referenced by more than one */
    uint64_t block_bytes; /* K and V of one block, all layers */
    uint64_t cow_copies;  /* shared blocks copied before a write */
};
void xd_kv_usage(const struct xd_kv *kv, struct xd_kv_usage *out);

/* Blocks needed to hold n_pos positions. */
static inline int32_t xd_kv_blocks_for(int32_t n_pos) {
    return n_pos <= 0 ? 0 : (n_pos + XD_KV_BLOCK - 1) / XD_KV_BLOCK;
}

/* Reference counts match the block tables, the free list holds exactly the unreferenced
 * blocks, tables are dense prefixes covering each length. For assert() and tests. */
bool xd_kv_check_invariants(const struct xd_kv *kv);

#endif
