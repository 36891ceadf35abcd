/* trace.h - expert access traces and their offline replay (LRU and Belady's optimum).
 *
 * `run --expert-trace FILE` records every acquisition the cache sees, one line per layer step:
 *     # expertd expert trace v1 layers 32 experts 8 topk 2
 *     LAYER EXPERT [EXPERT...]      (the experts one batch needed in that layer)
 * `expertd replay FILE` then asks what hit rate a cache of n slots would have had under the
 * cache's own policies (LRU or expected-next-use eviction, global or per-layer pool; replayed
 * the way expert_cache.c behaves: within a step, experts already resident are touched first,
 * so a step's misses never evict its own hits, and with next-use eviction a miss waits for a
 * slot the step releases rather than evict an expert expected sooner; reads are taken to land
 * in the order they start) and under Belady's MIN (evict the expert whose next use is furthest
 * away), the offline optimum no demand-fetching policy can beat.
 */
#ifndef XD_TRACE_H
#define XD_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "expert_cache.h"

struct xd_xc_trace {
    int64_t n_layer, n_expert, top_k; /* top_k: 2 when the header does not say */
    int64_t n_steps;      /* lines */
    int64_t n_acc;        /* expert accesses in all steps */
    int32_t *step_layer;  /* [n_steps] */
    int64_t *step_start;  /* [n_steps + 1]: step i is acc[step_start[i] .. step_start[i+1]) */
    int32_t *acc;         /* [n_acc] expert ids */
};

/* Parse a trace from n bytes (pure). 0, XD_E_FORMAT (with the line number in err), or
 * XD_E_NOMEM; on failure t is empty (safe to free). */
int xd_xc_trace_parse(const char *buf, size_t n, struct xd_xc_trace *t, char *err, size_t errlen);
/* Read and parse a file. Same codes, plus a negative errno. */
int xd_xc_trace_load(const char *path, struct xd_xc_trace *t, char *err, size_t errlen);
void xd_xc_trace_free(struct xd_xc_trace *t);

struct xd_xc_sim {
    uint64_t accesses, hits;
};

/* Replay with n_slots slots under the cache's pool policy and eviction rule, without prefetch.
 * 0, XD_E_INVALID (n_slots < 1, or per-layer with fewer slots than layers), XD_E_NOMEM. */
int xd_xc_sim_online(const struct xd_xc_trace *t, int64_t n_slots, enum xd_xc_policy policy,
                     enum xd_xc_evict evict, struct xd_xc_sim *out);
/* Replay under Belady's MIN with n_slots slots (one global pool). Same codes. */
int xd_xc_sim_belady(const struct xd_xc_trace *t, int64_t n_slots, struct xd_xc_sim *out);

#endif
