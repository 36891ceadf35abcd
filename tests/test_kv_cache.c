/* test_kv_cache.c - engine/kv_cache.c: blocks taken as positions are stored and given back on
 * truncate, all-or-nothing reserves, the budget, sharing with copy-on-write, the invariant
 * checker after every step, and attention through scattered blocks giving the same bits as
 * through consecutive ones on every CPU backend. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "kv_cache.h"
#include "ops.h"
#include "quant.h"
#include "xd_error.h"

#define DIM 8
#define BB (2ull * 2 * XD_KV_BLOCK * DIM * 2) /* block bytes: K+V, F16, 2 layers */

static void row(float *k, float *v, int32_t seq, int32_t pos, int64_t layer) {
    for (int i = 0; i < DIM; i++) {
        k[i] = (float)(seq * 1000 + pos) + 0.125f * (float)i + (float)layer * 0.5f;
        v[i] = -k[i];
    }
}

static void store(struct xd_kv *kv, int32_t seq, int32_t from, int32_t to) {
    float k[DIM], v[DIM];
    for (int32_t p = from; p < to; p++)
        for (int64_t l = 0; l < 2; l++) {
            row(k, v, seq, p, l);
            cr_assert_eq(xd_kv_store(kv, l, seq, p, k, v), 0, "seq %d pos %d", seq, p);
        }
    cr_assert(xd_kv_check_invariants(kv));
}

/* rows of seq read back as written by `as` (the sequence whose values they carry) */
static void check_rows(const struct xd_kv *kv, int32_t seq, int32_t as, int32_t from,
                       int32_t to) {
    float k[DIM], v[DIM];
    for (int32_t p = from; p < to; p++)
        for (int64_t l = 0; l < 2; l++) {
            row(k, v, as, p, l);
            const uint16_t *kr = xd_kv_key(kv, l, seq, p), *vr = xd_kv_value(kv, l, seq, p);
            for (int i = 0; i < DIM; i++) {
                cr_assert_eq(kr[i], xd_fp32_to_fp16(k[i]), "seq %d pos %d", seq, p);
                cr_assert_eq(vr[i], xd_fp32_to_fp16(v[i]));
            }
        }
}

static int32_t used(const struct xd_kv *kv) {
    struct xd_kv_usage u;
    xd_kv_usage(kv, &u);
    return u.n_used;
}

Test(kv_cache, default_budget_is_the_contiguous_footprint) {
    struct xd_kv *kv;
    cr_assert_eq(xd_kv_create(2, 3, 40, DIM, &kv), 0);
    struct xd_kv_usage u;
    xd_kv_usage(kv, &u);
    cr_assert_eq(u.n_blocks, 3 * 3); /* 40 positions: 3 blocks of 16 per sequence */
    cr_assert_eq(u.n_used, 0);
    cr_assert_eq(u.block_size, XD_KV_BLOCK);
    cr_assert_eq(u.block_bytes, BB);
    cr_assert_eq(xd_kv_bytes(kv), 9 * BB);
    xd_kv_destroy(kv);
    cr_assert_eq(xd_kv_create_paged(2, 3, 40, DIM, BB - 1, &kv), XD_E_INVALID);
    cr_assert_eq(xd_kv_create_paged(2, 3, 40, DIM, 5 * BB + 7, &kv), 0);
    xd_kv_usage(kv, &u);
    cr_assert_eq(u.n_blocks, 5);
    xd_kv_destroy(kv);
}

Test(kv_cache, blocks_follow_stores_and_truncates) {
    struct xd_kv *kv;
    cr_assert_eq(xd_kv_create_paged(2, 2, 64, DIM, 4 * BB, &kv), 0);
    store(kv, 0, 0, 1);
    cr_assert_eq(used(kv), 1);
    store(kv, 0, 1, 17);
    cr_assert_eq(used(kv), 2);
    cr_assert_eq(xd_kv_seq_len(kv, 0), 17);
    cr_assert_eq(xd_kv_seq_blocks(kv, 0), 2);
    store(kv, 1, 0, 20); /* interleaved: seq 1 takes blocks 2 and 3 */
    check_rows(kv, 0, 0, 0, 17);
    check_rows(kv, 1, 1, 0, 20);
    /* the pool is full: the next block cannot be had, and nothing is written */
    float k[DIM], v[DIM];
    row(k, v, 1, 32, 0);
    store(kv, 1, 20, 32);
    cr_assert_eq(xd_kv_store(kv, 0, 1, 32, k, v), -ENOSPC);
    cr_assert_eq(xd_kv_seq_len(kv, 1), 32);
    cr_assert_eq(xd_kv_seq_room(kv, 1), 0);
    cr_assert_eq(xd_kv_seq_room(kv, 0), 15); /* the rest of its last block */
    /* out of order and out of range */
    cr_assert_eq(xd_kv_store(kv, 0, 0, 40, k, v), XD_E_INVALID);
    cr_assert_eq(xd_kv_store(kv, 0, 0, 64, k, v), XD_E_CONTEXT);
    cr_assert_eq(xd_kv_store(kv, 2, 0, 0, k, v), XD_E_INVALID);
    /* truncate inside a block keeps it, past a block boundary frees the rest */
    xd_kv_seq_truncate(kv, 1, 17);
    cr_assert_eq(used(kv), 4);
    xd_kv_seq_truncate(kv, 1, 16);
    cr_assert_eq(used(kv), 3);
    cr_assert(xd_kv_check_invariants(kv));
    check_rows(kv, 1, 1, 0, 16);
    xd_kv_seq_truncate(kv, 0, 0);
    xd_kv_seq_truncate(kv, 1, 0);
    cr_assert_eq(used(kv), 0);
    cr_assert_eq(xd_kv_seq_len(kv, 0), 0);
    cr_assert(xd_kv_check_invariants(kv));
    xd_kv_destroy(kv);
}

Test(kv_cache, reserve_is_all_or_nothing) {
    struct xd_kv *kv;
    cr_assert_eq(xd_kv_create_paged(2, 2, 128, DIM, 4 * BB, &kv), 0);
    cr_assert_eq(xd_kv_seq_room(kv, 0), 64);
    cr_assert_eq(xd_kv_seq_reserve(kv, 0, 65), -ENOSPC);
    cr_assert_eq(used(kv), 0);
    cr_assert_eq(xd_kv_seq_reserve(kv, 0, 129), XD_E_CONTEXT);
    cr_assert_eq(xd_kv_seq_reserve(kv, 0, 40), 0);
    cr_assert_eq(used(kv), 3);
    cr_assert_eq(xd_kv_seq_len(kv, 0), 0); /* reserved, not stored */
    cr_assert_eq(xd_kv_seq_room(kv, 1), 16);
    cr_assert(xd_kv_check_invariants(kv));
    store(kv, 0, 0, 40); /* takes no further block */
    cr_assert_eq(used(kv), 3);
    cr_assert_eq(xd_kv_seq_room(kv, 0), 8 + 16);
    xd_kv_seq_truncate(kv, 0, 0);
    cr_assert_eq(used(kv), 0);
    /* a reserve ahead of the stores is given back by truncate too */
    cr_assert_eq(xd_kv_seq_reserve(kv, 1, 64), 0);
    xd_kv_seq_truncate(kv, 1, 0);
    cr_assert_eq(used(kv), 0);
    cr_assert(xd_kv_check_invariants(kv));
    xd_kv_destroy(kv);
}

Test(kv_cache, share_then_copy_on_write) {
    struct xd_kv *kv;
    cr_assert_eq(xd_kv_create_paged(2, 3, 64, DIM, 8 * BB, &kv), 0);
    store(kv, 0, 0, 20);
    cr_assert_eq(xd_kv_seq_share(kv, 1, 0, 20), 0);
    cr_assert_eq(xd_kv_seq_share(kv, 2, 0, 20), 0);
    cr_assert_eq(xd_kv_seq_share(kv, 2, 0, 20), XD_E_INVALID); /* not empty */
    cr_assert_eq(xd_kv_seq_share(kv, 1, 0, 21), XD_E_INVALID);
    struct xd_kv_usage u;
    xd_kv_usage(kv, &u);
    cr_assert_eq(u.n_used, 2);
    cr_assert_eq(u.n_shared, 2);
    cr_assert_eq(xd_kv_seq_len(kv, 2), 20);
    check_rows(kv, 2, 0, 0, 20);
    cr_assert(xd_kv_check_invariants(kv));
    /* writing into the shared partial block copies it for the writer only */
    store(kv, 1, 20, 22);
    xd_kv_usage(kv, &u);
    cr_assert_eq(u.n_used, 3);
    cr_assert_eq(u.cow_copies, 1);
    check_rows(kv, 1, 0, 0, 20); /* the copied prefix */
    check_rows(kv, 1, 1, 20, 22);
    check_rows(kv, 0, 0, 0, 20);
    /* seq 2 needs a copy of its shared last block first: 12 positions in it, 4 more blocks;
     * capped by n_ctx */
    cr_assert_eq(xd_kv_seq_room(kv, 2), 44);
    store(kv, 2, 20, 21);
    store(kv, 0, 20, 21); /* the last sharer of that block writes in place */
    xd_kv_usage(kv, &u);
    cr_assert_eq(u.n_used, 4);
    cr_assert_eq(u.cow_copies, 2);
    check_rows(kv, 0, 0, 0, 21);
    check_rows(kv, 2, 0, 0, 20);
    check_rows(kv, 2, 2, 20, 21);
    /* a sharer leaving keeps the full block alive for the others */
    xd_kv_seq_truncate(kv, 0, 0);
    xd_kv_usage(kv, &u);
    cr_assert_eq(u.n_used, 3);
    check_rows(kv, 1, 0, 0, 16);
    xd_kv_seq_truncate(kv, 1, 0);
    xd_kv_seq_truncate(kv, 2, 0);
    cr_assert_eq(used(kv), 0);
    cr_assert(xd_kv_check_invariants(kv));
    xd_kv_destroy(kv);
}

/* Attention over 40 positions whose blocks lie in pool order, and the same over blocks
 * scattered between another sequence's: the same bits on every backend. */
Test(kv_cache, attention_through_scattered_blocks_is_bit_identical) {
    const int64_t n_head = 4, n_kv = 2, hd = 16, dim = n_kv * hd;
    const int32_t n_pos = 40;
    struct xd_kv *a, *b;
    cr_assert_eq(xd_kv_create(1, 2, 64, dim, &a), 0);
    cr_assert_eq(xd_kv_create(1, 2, 64, dim, &b), 0);
    float k[32], v[32], q[2][64], out_a[2][64], out_b[2][64];
    uint32_t s = 12345;
    for (int32_t p = 0; p < n_pos; p++) {
        for (int i = 0; i < dim; i++) {
            s = s * 1664525u + 1013904223u;
            k[i] = (float)(s >> 8) / (float)(1 << 24) - 0.5f;
            v[i] = (float)((s >> 3) & 0xffff) / 65536.0f - 0.5f;
        }
        cr_assert_eq(xd_kv_store(a, 0, 0, p, k, v), 0);
        cr_assert_eq(xd_kv_store(b, 0, 0, p, v, k), 0); /* other values in seq 0 of b */
        cr_assert_eq(xd_kv_store(b, 0, 1, p, k, v), 0); /* interleaved blocks */
    }
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < n_head * hd; i++)
            q[t][i] = (float)((i * 7 + t * 3) % 11) / 11.0f - 0.4f;
    const char *names[] = {"cpu-ref", "cpu-scalar", "cpu-avx2", "cpu-avx512"};
    for (size_t bi = 0; bi < sizeof names / sizeof names[0]; bi++) {
        struct xd_backend *be;
        char err[256];
        struct xd_backend_params bp = {.name = names[bi], .n_threads = 2, .max_tokens = 16,
                                       .max_pos = 64};
        int rc = xd_backend_create(&bp, &be, err, sizeof err);
        if (rc == XD_E_UNSUPPORTED) continue;
        cr_assert_eq(rc, 0, "%s", err);
        const int32_t seq_a[2] = {0, 0}, seq_b[2] = {1, 1}, pos[2] = {n_pos - 2, n_pos - 1};
        xd_backend_ops(be)->attention(be, out_a[0], q[0], n_head * hd, a, 0, seq_a, pos, 2,
                                      n_head, n_kv, hd, 0.25f);
        xd_backend_ops(be)->attention(be, out_b[0], q[0], n_head * hd, b, 0, seq_b, pos, 2,
                                      n_head, n_kv, hd, 0.25f);
        cr_assert_eq(memcmp(out_a, out_b, sizeof out_a), 0, "%s", names[bi]);
        xd_backend_destroy(be);
    }
    xd_kv_destroy(a);
    xd_kv_destroy(b);
}

/* xd_kv_mark (backends holding K/V elsewhere): lengths and blocks as if stored */
Test(kv_cache, mark_counts_blocks_like_store) {
    struct xd_kv *kv;
    cr_assert_eq(xd_kv_create_paged(2, 2, 64, DIM, 2 * BB, &kv), 0);
    for (int32_t p = 0; p < 17; p++) cr_assert_eq(xd_kv_mark(kv, 0, p), 0);
    cr_assert_eq(xd_kv_seq_len(kv, 0), 17);
    cr_assert_eq(used(kv), 2);
    cr_assert_eq(xd_kv_mark(kv, 1, 0), -ENOSPC);
    cr_assert_eq(xd_kv_mark(kv, 0, 19), XD_E_INVALID);
    cr_assert_eq(xd_kv_mark(kv, 0, 64), XD_E_CONTEXT);
    cr_assert(xd_kv_check_invariants(kv));
    xd_kv_seq_truncate(kv, 0, 0);
    cr_assert_eq(used(kv), 0);
    xd_kv_destroy(kv);
}
