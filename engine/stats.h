/* stats.h - what the engine counts. One struct that `run --json`, /metrics and bench read. */
#ifndef XD_STATS_H
#define XD_STATS_H

#include <stdint.h>

struct xd_stats {
    uint64_t forward_calls;     /* xd_forward calls */
    uint64_t tokens;            /* tokens run through the layers */
    uint64_t logit_rows;        /* rows of logits computed */
    uint64_t expert_tokens;     /* (token, routed expert) pairs executed */
    uint64_t experts_touched;   /* distinct experts run, summed over layers and forward calls */
    uint64_t forward_ns;        /* wall time inside xd_forward */
};

#endif
