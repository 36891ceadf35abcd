/* stats.h - what the engine counts. One struct that `run --json`, /metrics and bench read. */
#ifndef XD_STATS_H
#define XD_STATS_H

#include <stdint.h>

/* buckets of the power-of-two histograms: le 1 .. 2^15, +Inf */
#define XD_STATS_HIST_N 17

struct xd_stats {
    uint64_t forward_calls;     /* xd_forward calls */
    uint64_t tokens;            /* tokens run through the layers */
    uint64_t logit_rows;        /* rows of logits computed */
    uint64_t expert_tokens;     /* (token, routed expert) pairs executed */
    uint64_t experts_touched;   /* distinct experts run, summed over layers and forward calls */
    uint64_t forward_ns;        /* wall time inside xd_forward */
    /* distinct experts one MoE layer ran in one forward call: bucket i counts calls with at
     * most 2^i experts (i < XD_STATS_HIST_N - 1), the last bucket the rest */
    uint64_t experts_per_layer[XD_STATS_HIST_N];
};

/* Adds v to a histogram of power-of-two buckets (le 1, 2, 4, ..., 2^(N-2), +Inf). */
static inline void xd_stats_hist_add(uint64_t *hist, uint64_t v) {
    int i = 0;
    while (i < XD_STATS_HIST_N - 1 && v > (1ull << i)) i++;
    hist[i]++;
}

#endif
