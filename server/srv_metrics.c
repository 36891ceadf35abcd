/* srv_metrics.c - the server's counters and the /metrics exposition.
 *
 * Names follow Prometheus conventions: expertd_ prefix, base units in the name (_seconds,
 * _bytes), _total for counters. Latency buckets are spaced for LLM serving: TTFT and queue time
 * from 5 ms to a minute, time per output token from 1 ms to 2.5 s, end-to-end up to 10 min.
 * Engine and expert-cache counters are rows of tables over struct offsets (the offloading work
 * adds rows, not code). Trade-off: the exposition is rebuilt from scratch per scrape (a few KiB
 * of printf), which is cheaper than keeping it incrementally in sync. Not here: per-request
 * labels (unbounded cardinality), process metrics (RSS, fds: node_exporter's job).
 */
#include "srv_metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "xd_error.h"

static const double ttft_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60};
static const double tpot_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,   0.25,   0.5,   1,    2.5};
static const double e2e_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                    5,    10,    20,   30,  60,   120, 300, 600};

static void hist_init(struct srv_hist *h, const double *bounds, size_t n) {
    memset(h, 0, sizeof *h);
    h->h.bounds = bounds;
    h->h.n_bounds = n;
    h->h.counts = h->counts;
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

void srv_metrics_init(struct srv_metrics *m) {
    memset(m, 0, sizeof *m);
    hist_init(&m->queue_time, ttft_bounds, N_OF(ttft_bounds));
    hist_init(&m->ttft, ttft_bounds, N_OF(ttft_bounds));
    hist_init(&m->tpot, tpot_bounds, N_OF(tpot_bounds));
    hist_init(&m->e2e, e2e_bounds, N_OF(e2e_bounds));
}

void srv_metrics_request(struct srv_metrics *m, enum srv_route_id route, int status) {
    if (route < 0 || route >= SRV_ROUTE__N) route = SRV_ROUTE_OTHER;
    for (int i = 0; i < SRV_METRICS_MAX_STATUS; i++) {
        if (m->requests[route][i].status == status || !m->requests[route][i].status) {
            m->requests[route][i].status = status;
            m->requests[route][i].count++;
            return;
        }
    }
}

/* ---- counter tables over the engine's structs ----------------------------------------------- */

enum field_kind { F_U64, F_I32, F_NS_AS_S };

struct stat_row {
    const char *name, *type, *help;
    size_t off;
    enum field_kind kind;
};

#define E(f) offsetof(struct xd_engine_stats, f)
#define FW(f) (offsetof(struct xd_engine_stats, fwd) + offsetof(struct xd_stats, f))
static const struct stat_row engine_rows[] = {
    {"expertd_engine_steps_total", "counter", "Scheduler steps that ran a forward pass.",
     E(steps), F_U64},
    {"expertd_engine_prompt_tokens_total", "counter",
     "Prompt tokens run through prefill (a request's n sequences share one prefill).",
     E(prompt_tokens), F_U64},
    {"expertd_engine_preemptions_total", "counter",
     "Requests preempted for KV cache blocks (their KV freed, recomputed when readmitted).",
     E(preemptions), F_U64},
    {"expertd_engine_recomputed_tokens_total", "counter",
     "Positions run again after a preemption.", E(recomputed_tokens), F_U64},
    {"expertd_engine_prefill_holds_total", "counter",
     "Steps that ran decodes only while prompt chunks waited (--prefill-hold).",
     E(prefill_holds), F_U64},
    {"expertd_engine_prefix_shared_tokens_total", "counter",
     "Prompt positions not computed: taken from a running sequence's KV blocks with the same "
     "prefix.", E(prefix_shared_tokens), F_U64},
    {"expertd_engine_generated_tokens_total", "counter", "Tokens sampled by the engine.",
     E(generated_tokens), F_U64},
    {"expertd_engine_forward_failures_total", "counter",
     "Forward passes that failed (each failure is isolated to the request that caused it).",
     E(forward_failures), F_U64},
    {"expertd_requests_running", "gauge", "Requests holding sequence slots.", E(running), F_I32},
    {"expertd_requests_waiting", "gauge", "Requests queued for a sequence slot.", E(waiting),
     F_I32},
    {"expertd_kv_slots_used", "gauge", "Sequence slots (KV cache sequences) in use.",
     E(slots_used), F_I32},
    {"expertd_kv_slots", "gauge", "Sequence slots (--parallel).", E(n_parallel), F_I32},
    {"expertd_kv_cache_bytes", "gauge", "Bytes of the KV cache pool (--kv-cache).", E(kv_bytes),
     F_U64},
    {"expertd_kv_cache_used_bytes", "gauge", "Bytes of KV cache blocks held by sequences.",
     E(kv_bytes_used), F_U64},
    {"expertd_kv_cache_blocks", "gauge", "Blocks in the KV cache pool.", E(kv_blocks_total),
     F_I32},
    {"expertd_kv_cache_blocks_used", "gauge", "KV cache blocks held by sequences.",
     E(kv_blocks_used), F_I32},
    {"expertd_kv_cache_blocks_shared", "gauge",
     "KV cache blocks held by more than one sequence (n > 1 sharing a prompt).",
     E(kv_blocks_shared), F_I32},
    {"expertd_kv_cache_block_positions", "gauge", "Positions per KV cache block.",
     E(kv_block_size), F_I32},
    {"expertd_kv_cache_cow_copies_total", "counter",
     "Shared KV cache blocks copied before a write.", E(kv_cow_copies), F_U64},
    {"expertd_context_tokens", "gauge", "Positions per sequence slot.", E(n_ctx), F_I32},
    {"expertd_forward_calls_total", "counter", "Calls of the forward pass.", FW(forward_calls),
     F_U64},
    {"expertd_forward_tokens_total", "counter", "Tokens run through the layers.", FW(tokens),
     F_U64},
    {"expertd_forward_logit_rows_total", "counter", "Rows of logits computed.", FW(logit_rows),
     F_U64},
    {"expertd_expert_tokens_total", "counter", "(token, routed expert) pairs executed.",
     FW(expert_tokens), F_U64},
    {"expertd_experts_touched_total", "counter",
     "Distinct experts run, summed over layers and forward calls.", FW(experts_touched), F_U64},
    {"expertd_experts_touched_last_step", "gauge",
     "Distinct experts run by the last engine step, summed over layers.",
     E(experts_last_step), F_U64},
    {"expertd_forward_seconds_total", "counter", "Wall time inside the forward pass.",
     FW(forward_ns), F_NS_AS_S},
};
#define XC(f) (offsetof(struct xd_engine_stats, xc) + offsetof(struct xd_xc_stats, f))
static const struct stat_row xc_rows[] = {
    {"expertd_expert_cache_acquires_total", "counter", "Expert acquisitions.", XC(acquires),
     F_U64},
    {"expertd_expert_cache_hits_total", "counter", "Acquisitions served without a read.",
     XC(hits), F_U64},
    {"expertd_expert_cache_misses_total", "counter", "Acquisitions that read from storage.",
     XC(misses), F_U64},
    {"expertd_expert_cache_read_bytes_total", "counter", "Expert bytes read from storage.",
     XC(bytes_read), F_U64},
    {"expertd_expert_cache_evictions_total", "counter", "Experts evicted from the cache.",
     XC(evictions), F_U64},
    {"expertd_expert_cache_prefetches_total", "counter", "Prefetch hints received.",
     XC(prefetches), F_U64},
    {"expertd_expert_cache_distinct_experts", "gauge",
     "Distinct (layer, expert) pairs ever acquired.", XC(distinct), F_U64},
    {"expertd_expert_cache_prefetch_reads_total", "counter",
     "Expert reads started by a prefetch hint.", XC(prefetch_issued), F_U64},
    {"expertd_expert_cache_prefetch_hits_total", "counter",
     "Acquisitions served by a prefetched read (done or in flight).", XC(prefetch_hits), F_U64},
    {"expertd_expert_cache_prefetch_wasted_total", "counter",
     "Prefetched experts evicted or failed before any acquisition.", XC(prefetch_wasted), F_U64},
    {"expertd_expert_cache_prefetch_correct_total", "counter",
     "Hinted experts that the layer then asked for (accuracy = this / prefetches).",
     XC(prefetch_correct), F_U64},
    {"expertd_expert_cache_reads_total", "counter", "Expert reads completed.", XC(reads), F_U64},
    {"expertd_expert_cache_read_retries_total", "counter",
     "Expert reads retried after an error or a checksum mismatch.", XC(read_retries), F_U64},
    {"expertd_expert_cache_read_errors_total", "counter",
     "Expert reads that failed after their retry (the requests needing them failed).",
     XC(read_errors), F_U64},
    {"expertd_expert_cache_stall_seconds_total", "counter",
     "Time the forward pass waited for experts to arrive.", XC(stall_ns), F_NS_AS_S},
    {"expertd_expert_cache_io_busy_seconds_total", "counter",
     "Wall time with at least one expert read in flight.", XC(io_busy_ns), F_NS_AS_S},
};
#undef E
#undef FW
#undef XC

static double field(const struct xd_engine_stats *es, const struct stat_row *r) {
    const char *p = (const char *)es + r->off;
    switch (r->kind) {
    case F_I32: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    case F_NS_AS_S: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return (double)v * 1e-9;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return (double)v;
    }
    }
}

static void rows_out(struct proto_buf *b, const struct stat_row *rows, size_t n,
                     const struct xd_engine_stats *es) {
    for (size_t i = 0; i < n; i++) {
        proto_prom_family(b, rows[i].name, rows[i].type, rows[i].help);
        proto_prom_sample(b, rows[i].name, NULL, 0, field(es, &rows[i]));
    }
}

static void one(struct proto_buf *b, const char *name, const char *type, const char *help,
                double v) {
    proto_prom_family(b, name, type, help);
    proto_prom_sample(b, name, NULL, 0, v);
}

/* A power-of-two histogram of stats.h (le 1, 2, 4, ..., +Inf) whose observations sum to sum. */
static void pow2_hist_out(struct proto_buf *b, const char *name, const char *help,
                          const uint64_t *counts, double sum) {
    double bounds[XD_STATS_HIST_N - 1];
    uint64_t n = 0;
    for (int i = 0; i < XD_STATS_HIST_N; i++) {
        if (i < XD_STATS_HIST_N - 1) bounds[i] = (double)(1ull << i);
        n += counts[i];
    }
    struct proto_hist h = {.bounds = bounds, .n_bounds = XD_STATS_HIST_N - 1,
                           .counts = (uint64_t *)counts, .sum = sum, .count = n};
    proto_prom_family(b, name, "histogram", help);
    proto_prom_hist(b, name, NULL, 0, &h);
}

static void hist_out(struct proto_buf *b, const char *name, const char *help,
                     const struct srv_hist *h) {
    proto_prom_family(b, name, "histogram", help);
    proto_prom_hist(b, name, NULL, 0, &h->h);
}

int srv_metrics_render(const struct srv_metrics *m, const struct srv_gauges *g,
                       const struct xd_engine_stats *es, struct proto_buf *out) {
    proto_prom_family(out, "expertd_requests_total", "counter",
                      "HTTP requests answered, by endpoint and status code.");
    for (int r = 0; r < SRV_ROUTE__N; r++) {
        for (int i = 0; i < SRV_METRICS_MAX_STATUS && m->requests[r][i].status; i++) {
            char status[16];
            snprintf(status, sizeof status, "%d", m->requests[r][i].status);
            struct proto_label l[2] = {{"endpoint", srv_route_name((enum srv_route_id)r)},
                                       {"status", status}};
            proto_prom_sample(out, "expertd_requests_total", l, 2,
                              (double)m->requests[r][i].count);
        }
    }
    one(out, "expertd_requests_cancelled_total", "counter",
        "Completion requests cancelled because the client went away or the server drained.",
        (double)m->requests_cancelled);
    one(out, "expertd_prompt_tokens_total", "counter", "Prompt tokens of completed requests.",
        (double)m->prompt_tokens);
    one(out, "expertd_generation_tokens_total", "counter",
        "Completion tokens of completed requests.", (double)m->generation_tokens);
    hist_out(out, "expertd_request_queue_time_seconds",
             "Time from submission to the engine until the request got its sequence slots.",
             &m->queue_time);
    hist_out(out, "expertd_time_to_first_token_seconds",
             "Time from the request's arrival to its first sampled token.", &m->ttft);
    hist_out(out, "expertd_time_per_output_token_seconds",
             "Mean time between output tokens of a sequence, after the first.", &m->tpot);
    hist_out(out, "expertd_e2e_request_latency_seconds",
             "Time from the request's arrival to its last byte queued for sending.", &m->e2e);
    one(out, "expertd_connections", "gauge", "Open client connections.", g->connections);
    one(out, "expertd_connections_total", "counter", "Client connections accepted.",
        (double)m->connections_total);
    one(out, "expertd_connections_rejected_total", "counter",
        "Connections refused because --max-connections were open.",
        (double)m->connections_rejected);
    one(out, "expertd_model_loaded", "gauge", "1 once the model is loaded and serving.",
        g->ready);
    one(out, "expertd_draining", "gauge", "1 while the server drains after SIGTERM.",
        g->draining);
    one(out, "expertd_model_load_seconds", "gauge", "Time the model took to load.",
        m->load_seconds);
    if (es) {
        rows_out(out, engine_rows, N_OF(engine_rows), es);
        rows_out(out, xc_rows, N_OF(xc_rows), es);
        one(out, "expertd_kv_cache_usage_ratio", "gauge",
            "Fraction of the KV cache pool's blocks held by sequences.",
            es->kv_blocks_total ? (double)es->kv_blocks_used / es->kv_blocks_total : 0.0);
        pow2_hist_out(out, "expertd_experts_touched_per_step",
                      "Distinct experts run by one engine step, summed over layers (MoE).",
                      es->experts_per_step, (double)es->fwd.experts_touched);
        pow2_hist_out(out, "expertd_experts_touched_per_layer",
                      "Distinct experts one MoE layer ran in one forward call.",
                      es->fwd.experts_per_layer, (double)es->fwd.experts_touched);
        /* per-read latency, from the cache's fixed buckets */
        double bounds[XD_XC_LAT_BUCKETS - 1];
        uint64_t counts[XD_XC_LAT_BUCKETS], n = 0;
        for (int i = 0; i < XD_XC_LAT_BUCKETS; i++) {
            if (i < XD_XC_LAT_BUCKETS - 1) bounds[i] = xd_xc_lat_bucket_le(i);
            counts[i] = es->xc.read_lat[i];
            n += counts[i];
        }
        struct proto_hist h = {.bounds = bounds, .n_bounds = XD_XC_LAT_BUCKETS - 1,
                               .counts = counts, .sum = (double)es->xc.read_ns_sum * 1e-9,
                               .count = n};
        proto_prom_family(out, "expertd_expert_cache_read_seconds", "histogram",
                          "Latency of one expert read, submission to verified.");
        proto_prom_hist(out, "expertd_expert_cache_read_seconds", NULL, 0, &h);
    }
    if (g->resident_per_layer) {
        proto_prom_family(out, "expertd_expert_cache_resident_experts", "gauge",
                          "Experts in the cache, by layer.");
        for (int32_t l = 0; l < g->n_layer; l++) {
            char layer[16];
            snprintf(layer, sizeof layer, "%d", (int)l);
            struct proto_label lab = {"layer", layer};
            proto_prom_sample(out, "expertd_expert_cache_resident_experts", &lab, 1,
                              (double)g->resident_per_layer[l]);
        }
    }
    return out->oom ? XD_E_NOMEM : 0;
}
