/* expert_cache.h - the only way the MoE layer reaches expert weights.
 *
 * The layer asks xd_xc_acquire(layer, expert) for each expert its tokens were routed to and
 * gets 2-D views of that expert's gate/up/down matrices plus a pin; it calls xd_xc_release when
 * done. While pinned, a slot is never evicted. This first implementation keeps everything
 * resident (views into the model's mmap); the offloading work swaps in a fixed pool of slots
 * filled from disk behind the same four calls, so the layer code never changes.
 *
 * Slot states (for the offloading implementation; the resident one is always RESIDENT):
 *   FREE --read--> READING --ok--> RESIDENT <--acquire/release--> PINNED
 *                          \--error--> ERROR
 */
#ifndef XD_EXPERT_CACHE_H
#define XD_EXPERT_CACHE_H

#include <stdint.h>

#include "model.h"

struct xd_expert_view {
    struct xd_tensor gate; /* [d_model, n_ff_exp] */
    struct xd_tensor up;   /* [d_model, n_ff_exp] */
    struct xd_tensor down; /* [n_ff_exp, d_model] */
};

struct xd_xc_stats {
    uint64_t acquires;    /* acquire calls */
    uint64_t hits;        /* acquires served without waiting for a read */
    uint64_t misses;      /* acquires that had to read from disk */
    uint64_t bytes_read;  /* expert bytes read from storage */
    uint64_t evictions;
    uint64_t prefetches;  /* prefetch hints received */
    uint64_t distinct;    /* distinct (layer, expert) pairs ever acquired */
};

struct xd_xc;

/* An everything-resident cache over m's mapped expert tensors. m must outlive the cache.
 * Returns 0, XD_E_INVALID for a dense model, or XD_E_NOMEM; *out untouched on failure. */
int xd_xc_create_resident(const struct xd_model *m, struct xd_xc **out);
void xd_xc_destroy(struct xd_xc *xc);

/* Pin expert of layer and fill *out with its views. Returns 0 or a negative code (a read
 * error in the offloading cache); on failure nothing is pinned. */
int xd_xc_acquire(struct xd_xc *xc, int64_t layer, int64_t expert, struct xd_expert_view *out);
/* Unpin; every successful acquire is matched by exactly one release. */
void xd_xc_release(struct xd_xc *xc, int64_t layer, int64_t expert);
/* Hint that these experts of layer will be acquired soon. May do nothing. Never fails. */
void xd_xc_prefetch(struct xd_xc *xc, int64_t layer, const int32_t *experts, int n);
const struct xd_xc_stats *xd_xc_stats(const struct xd_xc *xc);
/* Total pins outstanding (0 between forward passes); for invariant checks and tests. */
int64_t xd_xc_pinned(const struct xd_xc *xc);

#endif
