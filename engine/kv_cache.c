/* kv_cache.c - paged F16 K/V storage: a pool of fixed-size blocks and a block table per
 * sequence.
 *
 * Layout: K and V are each one allocation, [layer][block][XD_KV_BLOCK][kv_dim]; a block id
 * names the same block in every layer, so one table per sequence serves all layers and a
 * row's address is pool + ((layer * n_blocks + table[pos / B]) * B + pos % B) * kv_dim. The
 * attention kernels ask for rows one position at a time through xd_kv_key/xd_kv_value, so they
 * read the same F16 values in the same order as from the old contiguous layout: results are
 * bit-identical, only the addresses differ. Trade-off: a table lookup per row instead of a
 * pointer increment; against a head_dim-long dot product it does not show.
 *
 * Allocation: a LIFO free list of block ids (recently freed blocks are warm in cache). Blocks
 * are taken as positions are stored (or reserved ahead by the scheduler, so that a forward
 * pass never runs out half way), and returned when truncate drops the last reference.
 * Sharing: xd_kv_seq_share copies table entries and bumps reference counts; the first write
 * into a shared block copies it (all layers) into a fresh one. Only the block holding a
 * sequence's next position can be written, so at most one copy per sharer is ever made.
 * Not here: prefix caching across requests (a hash of full blocks' tokens), swapping to host.
 *
 * Invariants (xd_kv_check_invariants):
 *   1. table[s][0 .. n_held[s]) are valid block ids, table[s][n_held[s] ..) are -1;
 *   2. xd_kv_blocks_for(len[s]) <= n_held[s] (reserved blocks may run ahead of len);
 *   3. ref[b] == the number of table entries naming b;
 *   4. the free list holds each block with ref 0 exactly once, and nothing else.
 */
#include "kv_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "xd_error.h"

#define B XD_KV_BLOCK

struct xd_kv {
    int64_t n_layer, kv_dim;
    int32_t n_seq, n_ctx;
    int32_t max_blocks;  /* per sequence: blocks_for(n_ctx) */
    int32_t n_blocks;    /* in the pool */
    uint16_t *k, *v;     /* [layer][block][B][kv_dim] */
    int32_t *table;      /* [n_seq][max_blocks] block ids, -1 past n_held */
    int32_t *n_held;     /* [n_seq] */
    int32_t *len;        /* [n_seq] positions stored */
    int32_t *ref;        /* [n_blocks] */
    int32_t *free_ids;   /* [n_blocks] stack of free block ids */
    int32_t n_free;
    uint64_t cow_copies;
};

static size_t block_elems(const struct xd_kv *kv) { return (size_t)B * (size_t)kv->kv_dim; }

int xd_kv_create_paged(int64_t n_layer, int32_t n_seq, int32_t n_ctx, int64_t kv_dim,
                       uint64_t budget_bytes, struct xd_kv **out) {
    if (n_layer <= 0 || n_seq <= 0 || n_ctx <= 0 || kv_dim <= 0) return XD_E_INVALID;
    const int32_t max_blocks = xd_kv_blocks_for(n_ctx);
    /* K and V of one block in every layer */
    if ((uint64_t)kv_dim > UINT64_MAX / 4 / B / (uint64_t)n_layer) return XD_E_NOMEM;
    const uint64_t block_bytes = 2ull * sizeof(uint16_t) * B * (uint64_t)kv_dim * (uint64_t)n_layer;
    uint64_t n_blocks = budget_bytes ? budget_bytes / block_bytes
                                     : (uint64_t)n_seq * (uint64_t)max_blocks;
    if (n_blocks == 0) return XD_E_INVALID;
    if (n_blocks > INT32_MAX / 2 || n_blocks * block_bytes / 2 > SIZE_MAX / 2)
        return XD_E_NOMEM;
    struct xd_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return XD_E_NOMEM;
    kv->n_layer = n_layer;
    kv->kv_dim = kv_dim;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->max_blocks = max_blocks;
    kv->n_blocks = (int32_t)n_blocks;
    /* malloc, not calloc: a block's rows are always written before they are read */
    kv->k = malloc((size_t)(n_blocks * block_bytes / 2));
    kv->v = malloc((size_t)(n_blocks * block_bytes / 2));
    kv->table = malloc((size_t)n_seq * (size_t)max_blocks * sizeof *kv->table);
    kv->n_held = calloc((size_t)n_seq, sizeof *kv->n_held);
    kv->len = calloc((size_t)n_seq, sizeof *kv->len);
    kv->ref = calloc((size_t)n_blocks, sizeof *kv->ref);
    kv->free_ids = malloc((size_t)n_blocks * sizeof *kv->free_ids);
    if (!kv->k || !kv->v || !kv->table || !kv->n_held || !kv->len || !kv->ref || !kv->free_ids) {
        xd_kv_destroy(kv);
        return XD_E_NOMEM;
    }
    memset(kv->table, 0xff, (size_t)n_seq * (size_t)max_blocks * sizeof *kv->table);
    /* block 0 on top of the stack: a fresh cache hands out 0, 1, 2, ... */
    for (int32_t i = 0; i < kv->n_blocks; i++) kv->free_ids[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    *out = kv;
    return 0;
}

int xd_kv_create(int64_t n_layer, int32_t n_seq, int32_t n_ctx, int64_t kv_dim,
                 struct xd_kv **out) {
    return xd_kv_create_paged(n_layer, n_seq, n_ctx, kv_dim, 0, out);
}

void xd_kv_destroy(struct xd_kv *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->table);
    free(kv->n_held);
    free(kv->len);
    free(kv->ref);
    free(kv->free_ids);
    free(kv);
}

static int32_t *table_of(const struct xd_kv *kv, int32_t seq) {
    return kv->table + (size_t)seq * (size_t)kv->max_blocks;
}

static size_t row_index(const struct xd_kv *kv, int64_t layer, int32_t block, int32_t pos) {
    return (((size_t)layer * (size_t)kv->n_blocks + (size_t)block) * B + (size_t)(pos % B)) *
           (size_t)kv->kv_dim;
}

static void block_unref(struct xd_kv *kv, int32_t b) {
    if (--kv->ref[b] == 0) kv->free_ids[kv->n_free++] = b;
}

/* Blocks a reserve of seq up to pos_end would take from the pool. */
static int32_t blocks_needed(const struct xd_kv *kv, int32_t seq, int32_t pos_end) {
    const int32_t *t = table_of(kv, seq);
    int32_t need = 0;
    for (int32_t bi = kv->len[seq] / B; bi < xd_kv_blocks_for(pos_end); bi++)
        need += bi >= kv->n_held[seq] || kv->ref[t[bi]] > 1;
    return need;
}

/* Makes block bi of seq present and exclusively seq's; the caller checked a block is free
 * when one is needed. */
static void block_make_writable(struct xd_kv *kv, int32_t seq, int32_t bi) {
    int32_t *t = table_of(kv, seq);
    while (kv->n_held[seq] <= bi) {
        const int32_t b = kv->free_ids[--kv->n_free];
        kv->ref[b] = 1;
        t[kv->n_held[seq]++] = b;
    }
    const int32_t old = t[bi];
    if (kv->ref[old] == 1) return;
    const int32_t b = kv->free_ids[--kv->n_free]; /* copy-on-write, every layer */
    kv->ref[b] = 1;
    const size_t n = block_elems(kv);
    for (int64_t l = 0; l < kv->n_layer; l++) {
        memcpy(kv->k + row_index(kv, l, b, 0), kv->k + row_index(kv, l, old, 0), n * 2);
        memcpy(kv->v + row_index(kv, l, b, 0), kv->v + row_index(kv, l, old, 0), n * 2);
    }
    kv->ref[old]--; /* still referenced by the sharer(s): never reaches 0 here */
    t[bi] = b;
    kv->cow_copies++;
}

int xd_kv_seq_reserve(struct xd_kv *kv, int32_t seq, int32_t pos_end) {
    if (seq < 0 || seq >= kv->n_seq || pos_end < 0) return XD_E_INVALID;
    if (pos_end > kv->n_ctx) return XD_E_CONTEXT;
    if (blocks_needed(kv, seq, pos_end) > kv->n_free) return -ENOSPC;
    for (int32_t bi = kv->len[seq] / B; bi < xd_kv_blocks_for(pos_end); bi++)
        block_make_writable(kv, seq, bi);
    return 0;
}

int32_t xd_kv_seq_room(const struct xd_kv *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->n_seq) return 0;
    const int32_t len = kv->len[seq], bi = len / B, off = len % B;
    const int32_t *t = table_of(kv, seq);
    int64_t room = 0, free_blocks = kv->n_free, next = bi;
    if (off) { /* the partial last block: ours to write, or a copy away */
        if (bi < kv->n_held[seq] && kv->ref[t[bi]] == 1) room += B - off;
        else if (free_blocks > 0) room += B - off, free_blocks--;
        else return 0;
        next = bi + 1;
    }
    for (int32_t b = (int32_t)next; b < kv->n_held[seq]; b++) room += B; /* reserved ahead */
    room += free_blocks * B;
    const int64_t cap = (int64_t)kv->n_ctx - len;
    return (int32_t)(room < cap ? room : cap);
}

int xd_kv_seq_share(struct xd_kv *kv, int32_t dst, int32_t src, int32_t n_pos) {
    if (dst < 0 || dst >= kv->n_seq || src < 0 || src >= kv->n_seq || dst == src)
        return XD_E_INVALID;
    if (kv->n_held[dst] || kv->len[dst] || n_pos < 0 || n_pos > kv->len[src]) return XD_E_INVALID;
    const int32_t *ts = table_of(kv, src);
    int32_t *td = table_of(kv, dst);
    for (int32_t bi = 0; bi < xd_kv_blocks_for(n_pos); bi++) {
        td[bi] = ts[bi];
        kv->ref[ts[bi]]++;
    }
    kv->n_held[dst] = xd_kv_blocks_for(n_pos);
    kv->len[dst] = n_pos;
    return 0;
}

int xd_kv_store(struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos, const float *k,
                const float *v) {
    if (seq < 0 || seq >= kv->n_seq || layer < 0 || layer >= kv->n_layer || pos < 0)
        return XD_E_INVALID;
    if (pos >= kv->n_ctx) return XD_E_CONTEXT;
    if (pos > kv->len[seq]) return XD_E_INVALID;
    const int32_t bi = pos / B;
    int32_t *t = table_of(kv, seq);
    if (bi >= kv->n_held[seq] || kv->ref[t[bi]] > 1) {
        if (kv->n_free == 0) return -ENOSPC;
        block_make_writable(kv, seq, bi);
    }
    uint16_t *kd = kv->k + row_index(kv, layer, t[bi], pos);
    uint16_t *vd = kv->v + row_index(kv, layer, t[bi], pos);
    for (int64_t i = 0; i < kv->kv_dim; i++) {
        kd[i] = xd_fp32_to_fp16(k[i]);
        vd[i] = xd_fp32_to_fp16(v[i]);
    }
    if (pos + 1 > kv->len[seq]) kv->len[seq] = pos + 1;
    return 0;
}

int xd_kv_mark(struct xd_kv *kv, int32_t seq, int32_t pos) {
    if (seq < 0 || seq >= kv->n_seq || pos < 0) return XD_E_INVALID;
    if (pos >= kv->n_ctx) return XD_E_CONTEXT;
    if (pos > kv->len[seq]) return XD_E_INVALID;
    /* the blocks are accounted for as if the rows were here: the budget and the scheduler's
     * preemption work the same whoever holds the rows */
    const int32_t bi = pos / B;
    if (bi >= kv->n_held[seq] || kv->ref[table_of(kv, seq)[bi]] > 1) {
        if (kv->n_free == 0) return -ENOSPC;
        block_make_writable(kv, seq, bi);
    }
    if (pos + 1 > kv->len[seq]) kv->len[seq] = pos + 1;
    return 0;
}

const uint16_t *xd_kv_key(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos) {
    return kv->k + row_index(kv, layer, table_of(kv, seq)[pos / B], pos);
}

const uint16_t *xd_kv_value(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos) {
    return kv->v + row_index(kv, layer, table_of(kv, seq)[pos / B], pos);
}

void xd_kv_seq_truncate(struct xd_kv *kv, int32_t seq, int32_t pos) {
    if (seq < 0 || seq >= kv->n_seq) return;
    if (pos < 0) pos = 0;
    if (pos < kv->len[seq]) kv->len[seq] = pos;
    /* blocks wholly past pos go back (reserved ones included) */
    int32_t *t = table_of(kv, seq);
    const int32_t keep = xd_kv_blocks_for(pos);
    while (kv->n_held[seq] > keep) {
        const int32_t bi = --kv->n_held[seq];
        block_unref(kv, t[bi]);
        t[bi] = -1;
    }
}

int32_t xd_kv_seq_len(const struct xd_kv *kv, int32_t seq) {
    return seq >= 0 && seq < kv->n_seq ? kv->len[seq] : 0;
}

int32_t xd_kv_seq_blocks(const struct xd_kv *kv, int32_t seq) {
    return seq >= 0 && seq < kv->n_seq ? kv->n_held[seq] : 0;
}

int32_t xd_kv_n_ctx(const struct xd_kv *kv) { return kv->n_ctx; }
int32_t xd_kv_n_seq(const struct xd_kv *kv) { return kv->n_seq; }

uint64_t xd_kv_bytes(const struct xd_kv *kv) {
    return 2ull * (uint64_t)kv->n_layer * (uint64_t)kv->n_blocks * B * (uint64_t)kv->kv_dim *
           sizeof(uint16_t);
}

void xd_kv_usage(const struct xd_kv *kv, struct xd_kv_usage *out) {
    int32_t shared = 0;
    for (int32_t b = 0; b < kv->n_blocks; b++) shared += kv->ref[b] > 1;
    *out = (struct xd_kv_usage){
        .block_size = B,
        .n_blocks = kv->n_blocks,
        .n_used = kv->n_blocks - kv->n_free,
        .n_shared = shared,
        .block_bytes = 2ull * sizeof(uint16_t) * B * (uint64_t)kv->kv_dim * (uint64_t)kv->n_layer,
        .cow_copies = kv->cow_copies,
    };
}

bool xd_kv_check_invariants(const struct xd_kv *kv) {
    int32_t *count = calloc((size_t)kv->n_blocks, sizeof *count);
    if (!count) return true; /* cannot check: do not fail the caller */
    bool ok = kv->n_free >= 0 && kv->n_free <= kv->n_blocks;
    for (int32_t s = 0; s < kv->n_seq && ok; s++) {
        const int32_t *t = table_of(kv, s);
        ok = kv->n_held[s] >= xd_kv_blocks_for(kv->len[s]) && kv->n_held[s] <= kv->max_blocks &&
             kv->len[s] >= 0 && kv->len[s] <= kv->n_ctx;
        for (int32_t bi = 0; bi < kv->max_blocks && ok; bi++) {
            if (bi < kv->n_held[s]) {
                ok = t[bi] >= 0 && t[bi] < kv->n_blocks;
                if (ok) count[t[bi]]++;
            } else {
                ok = t[bi] == -1;
            }
        }
    }
    for (int32_t b = 0; b < kv->n_blocks && ok; b++) ok = count[b] == kv->ref[b];
    for (int32_t i = 0; i < kv->n_free && ok; i++) {
        const int32_t b = kv->free_ids[i];
        ok = b >= 0 && b < kv->n_blocks && kv->ref[b] == 0 && count[b] == 0;
        if (ok) count[b] = -1; /* seen once */
    }
    int32_t unref = 0;
    for (int32_t b = 0; b < kv->n_blocks && ok; b++) unref += kv->ref[b] == 0;
    ok = ok && unref == kv->n_free;
    free(count);
    return ok;
}
