/* kv_cache.c - contiguous F16 K/V rows per (layer, sequence, position).
 *
 * Layout: one allocation, [layer][seq][pos][kv_dim] for K and the same for V. Simple and
 * cache-friendly for one sequence's attention scan; it reserves n_ctx positions for every
 * sequence, which is what paging (fixed blocks + a block table) will fix for batching.
 */
#include "kv_cache.h"

#include <stdlib.h>

#include "quant.h"
#include "xd_error.h"

struct xd_kv {
    int64_t n_layer, kv_dim;
    int32_t n_seq, n_ctx;
    uint16_t *k, *v;
    int32_t *len; /* per sequence */
};

int xd_kv_create(int64_t n_layer, int32_t n_seq, int32_t n_ctx, int64_t kv_dim,
                 struct xd_kv **out) {
    if (n_layer <= 0 || n_seq <= 0 || n_ctx <= 0 || kv_dim <= 0) return XD_E_INVALID;
    size_t rows = (size_t)n_layer * (size_t)n_seq * (size_t)n_ctx;
    if (rows > SIZE_MAX / 2 / (size_t)kv_dim / sizeof(uint16_t)) return XD_E_NOMEM;
    struct xd_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return XD_E_NOMEM;
    kv->n_layer = n_layer;
    kv->kv_dim = kv_dim;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->k = malloc(rows * (size_t)kv_dim * sizeof(uint16_t));
    kv->v = malloc(rows * (size_t)kv_dim * sizeof(uint16_t));
    kv->len = calloc((size_t)n_seq, sizeof *kv->len);
    if (!kv->k || !kv->v || !kv->len) {
        xd_kv_destroy(kv);
        return XD_E_NOMEM;
    }
    *out = kv;
    return 0;
}

void xd_kv_destroy(struct xd_kv *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->len);
    free(kv);
}

static size_t row_index(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos) {
    return (((size_t)layer * (size_t)kv->n_seq + (size_t)seq) * (size_t)kv->n_ctx + (size_t)pos) *
           (size_t)kv->kv_dim;
}

int xd_kv_store(struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos, const float *k,
                const float *v) {
    if (seq < 0 || seq >= kv->n_seq || layer < 0 || layer >= kv->n_layer || pos < 0)
        return XD_E_INVALID;
    if (pos >= kv->n_ctx) return XD_E_CONTEXT;
    uint16_t *kd = kv->k + row_index(kv, layer, seq, pos);
    uint16_t *vd = kv->v + row_index(kv, layer, seq, pos);
    for (int64_t i = 0; i < kv->kv_dim; i++) {
        kd[i] = xd_fp32_to_fp16(k[i]);
        vd[i] = xd_fp32_to_fp16(v[i]);
    }
    if (pos + 1 > kv->len[seq]) kv->len[seq] = pos + 1;
    return 0;
}

const uint16_t *xd_kv_key(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos) {
    return kv->k + row_index(kv, layer, seq, pos);
}

const uint16_t *xd_kv_value(const struct xd_kv *kv, int64_t layer, int32_t seq, int32_t pos) {
    return kv->v + row_index(kv, layer, seq, pos);
}

void xd_kv_seq_truncate(struct xd_kv *kv, int32_t seq, int32_t pos) {
    if (seq >= 0 && seq < kv->n_seq && pos < kv->len[seq]) kv->len[seq] = pos < 0 ? 0 : pos;
}

int32_t xd_kv_seq_len(const struct xd_kv *kv, int32_t seq) {
    return seq >= 0 && seq < kv->n_seq ? kv->len[seq] : 0;
}

int32_t xd_kv_n_ctx(const struct xd_kv *kv) { return kv->n_ctx; }
int32_t xd_kv_n_seq(const struct xd_kv *kv) { return kv->n_seq; }

uint64_t xd_kv_bytes(const struct xd_kv *kv) {
    return 2ull * (uint64_t)kv->n_layer * (uint64_t)kv->n_seq * (uint64_t)kv->n_ctx *
           (uint64_t)kv->kv_dim * sizeof(uint16_t);
}
