/* srv_metrics.h - what the server counts, and /metrics rendered from it.
 *
 * All of it lives on the loop thread (no locks): request counts by endpoint and status, the
 * latency histograms, token counts. The engine's and the expert cache's counters come from
 * xd_engine_stats() snapshots at render time, through tables of (name, help, field offset), so
 * a new counter in struct xd_stats / xd_xc_stats is one new row.
 */
#ifndef XD_SRV_METRICS_H
#define XD_SRV_METRICS_H

#include <stdint.h>

#include "engine.h"
#include "proto_buf.h"
#include "proto_prom.h"
#include "router.h"

#define SRV_METRICS_MAX_STATUS 24 /* distinct HTTP statuses tracked per endpoint */
#define SRV_HIST_MAX_BOUNDS 20

struct srv_hist {
    struct proto_hist h;
    uint64_t counts[SRV_HIST_MAX_BOUNDS + 1];
};

struct srv_metrics {
    struct {
        int status;
        uint64_t count;
    } requests[SRV_ROUTE__N][SRV_METRICS_MAX_STATUS];
    struct srv_hist queue_time, ttft, tpot, e2e; /* seconds */
    uint64_t prompt_tokens, generation_tokens;   /* as reported in usage */
    uint64_t connections_total, connections_rejected, requests_cancelled;
    double load_seconds;
    uint64_t start_ns;
};

/* Zeroes m and sets the histogram buckets. Cannot fail. */
void srv_metrics_init(struct srv_metrics *m);
/* Counts one answered request. Cannot fail (statuses beyond the table's room go uncounted). */
void srv_metrics_request(struct srv_metrics *m, enum srv_route_id route, int status);

/* Gauges the server knows at render time. */
struct srv_gauges {
    int32_t connections;
    int ready;    /* 1 once the model is loaded */
    int draining; /* 1 after SIGTERM */
    const uint32_t *resident_per_layer; /* experts in the cache per MoE layer, or NULL */
    int32_t n_layer;
};

/* Appends the whole exposition. es may be NULL (model still loading). 0 or XD_E_NOMEM. */
int srv_metrics_render(const struct srv_metrics *m, const struct srv_gauges *g,
                       const struct xd_engine_stats *es, struct proto_buf *out);

#endif
