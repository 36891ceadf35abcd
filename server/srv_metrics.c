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
     "Prompt tokens run through prefill (each of a request's n sequences counts).",
     E(prompt_tokens), F_U64},
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
    {"expertd_kv_cache_bytes", "gauge", "Bytes of KV cache allocated.", E(kv_bytes), F_U64},
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
    }
    return out->oom ? XD_E_NOMEM : 0;
}
