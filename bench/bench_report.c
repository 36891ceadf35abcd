/* bench_report.c - what a load level measured, summarized: throughputs, latency percentiles,
 * goodput under the SLOs and failures by cause; printed as vLLM's block, as one Markdown table
 * row per level, and as JSON.
 *
 * Definitions (vLLM's benchmark_serving, so figures compare with it):
 *   request throughput = completed / duration, duration = first send to last completion;
 *   input / output throughput = the completed requests' prompt / output tokens / duration;
 *   TPOT = (E2E - TTFT) / (output tokens - 1), over requests with more than one output token;
 *   ITL = every gap between text chunks of every completed request;
 *   goodput = completed requests meeting every SLO given / duration.
 * Only completed requests enter the latency figures: a failure's latency measures the failure.
 *
 * Trade-off: the summary copies each metric's samples to sort them (bench_stats.c), so memory
 * is a few doubles per token; the exact percentiles are worth it at benchmark sizes. Not here:
 * histograms in the text output (the plots draw the distributions).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_impl.h"
#include "xd_error.h"

static int cmp_err(const void *a, const void *b) {
    return strcmp(((const struct xd_bench_error_count *)a)->key,
                  ((const struct xd_bench_error_count *)b)->key);
}

void xd_bench_report_free(struct xd_bench_report *r) {
    free(r->errors);
    memset(r, 0, sizeof *r);
}

static bool meets_slo(const struct xd_bench_config *cfg, const struct xd_bench_record *x) {
    if (cfg->slo_ttft_ms > 0 && !(x->ttft_ms <= cfg->slo_ttft_ms)) return false;
    if (cfg->slo_tpot_ms > 0 && isfinite(x->tpot_ms) && !(x->tpot_ms <= cfg->slo_tpot_ms))
        return false;
    if (cfg->slo_e2e_ms > 0 && !(x->e2e_ms <= cfg->slo_e2e_ms)) return false;
    return true;
}

int xd_bench_report_make(const struct xd_bench_config *cfg, const struct xd_bench_result *res,
                         struct xd_bench_report *r) {
    memset(r, 0, sizeof *r);
    size_t n = res->n_sent, n_itl = 0;
    for (size_t i = 0; i < n; i++)
        if (res->rec[i].ok) n_itl += res->rec[i].n_itl;
    double *ttfb = malloc((n + 1) * sizeof *ttfb), *ttft = malloc((n + 1) * sizeof *ttft);
    double *tpot = malloc((n + 1) * sizeof *tpot), *e2e = malloc((n + 1) * sizeof *e2e);
    double *itl = malloc((n_itl + 1) * sizeof *itl);
    r->errors = calloc(n + 1, sizeof *r->errors);
    int rc = ttfb && ttft && tpot && e2e && itl && r->errors ? 0 : XD_E_NOMEM;
    size_t n_ttfb = 0, n_tpot = 0, k = 0;
    r->prompt_tokens_from_usage = true;
    for (size_t i = 0; !rc && i < n; i++) {
        const struct xd_bench_record *x = &res->rec[i];
        if (!x->ok) {
            r->failed++;
            size_t e = 0;
            while (e < r->n_errors && strcmp(r->errors[e].key, x->error_key)) e++;
            if (e == r->n_errors) {
                snprintf(r->errors[e].key, sizeof r->errors[e].key, "%s", x->error_key);
                r->n_errors++;
            }
            r->errors[e].n++;
            continue;
        }
        r->completed++;
        if (x->prompt_tokens > 0) r->input_tokens += x->prompt_tokens;
        if (!x->prompt_from_usage) r->prompt_tokens_from_usage = false;
        r->output_tokens += x->output_tokens;
        if (x->output_tokens < x->max_tokens) r->short_outputs++;
        if (isfinite(x->ttfb_ms)) ttfb[n_ttfb++] = x->ttfb_ms;
        ttft[r->completed - 1] = x->ttft_ms;
        e2e[r->completed - 1] = x->e2e_ms;
        if (isfinite(x->tpot_ms)) tpot[n_tpot++] = x->tpot_ms;
        for (size_t j = 0; j < x->n_itl; j++) itl[k++] = x->itl_ms[j];
        if (meets_slo(cfg, x)) r->good++;
    }
    if (!rc) {
        if (r->completed == 0) r->prompt_tokens_from_usage = false;
        r->not_sent = res->n_planned - res->n_sent;
        xd_bench_summarize(ttfb, n_ttfb, &r->ttfb);
        xd_bench_summarize(ttft, r->completed, &r->ttft);
        xd_bench_summarize(tpot, n_tpot, &r->tpot);
        xd_bench_summarize(itl, k, &r->itl);
        xd_bench_summarize(e2e, r->completed, &r->e2e);
        qsort(r->errors, r->n_errors, sizeof *r->errors, cmp_err);
        double d = res->duration_s > 0 ? res->duration_s : NAN;
        r->request_throughput = (double)r->completed / d;
        r->input_throughput = (double)r->input_tokens / d;
        r->output_throughput = (double)r->output_tokens / d;
        r->total_throughput = (double)(r->input_tokens + r->output_tokens) / d;
        bool slo = cfg->slo_ttft_ms > 0 || cfg->slo_tpot_ms > 0 || cfg->slo_e2e_ms > 0;
        r->goodput = slo ? (double)r->good / d : NAN;
    }
    free(ttfb);
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    if (rc) xd_bench_report_free(r);
    return rc;
}

/* ---- text ----------------------------------------------------------------------------------- */

static const char *level_name(const struct xd_bench_config *cfg) {
    return cfg->closed ? "concurrency" : "rate (req/s)";
}

static void line_num(FILE *f, const char *label, double v, int prec) {
    if (isfinite(v))
        fprintf(f, "%-40s %.*f\n", label, prec, v);
    else
        fprintf(f, "%-40s %s\n", label, "-");
}

static void block(FILE *f, const char *title, const char *abbr, const struct xd_bench_summary *s) {
    char label[64];
    fprintf(f, "%s\n", title);
    snprintf(label, sizeof label, "Mean %s (ms):", abbr);
    line_num(f, label, s->mean, 2);
    snprintf(label, sizeof label, "Median %s (ms):", abbr);
    line_num(f, label, s->median, 2);
    snprintf(label, sizeof label, "P90 %s (ms):", abbr);
    line_num(f, label, s->p90, 2);
    snprintf(label, sizeof label, "P99 %s (ms):", abbr);
    line_num(f, label, s->p99, 2);
}

void xd_bench_report_print(FILE *f, const struct xd_bench_config *cfg,
                           const struct xd_bench_result *res, const struct xd_bench_report *r) {
    fprintf(f, "============ Serving Benchmark Result ============\n");
    if (cfg->closed)
        fprintf(f, "%-40s %g (closed loop)\n", "Concurrency:", res->level);
    else if (isinf(res->level))
        fprintf(f, "%-40s %s\n", "Request rate (req/s):", "inf");
    else
        fprintf(f, "%-40s %g (burstiness %g)\n", "Request rate (req/s):", res->level,
                cfg->burstiness);
    fprintf(f, "%-40s %zu\n", "Successful requests:", r->completed);
    fprintf(f, "%-40s %zu\n", "Failed requests:", r->failed);
    if (r->not_sent)
        fprintf(f, "%-40s %zu (--max-duration reached)\n", "Requests not sent:", r->not_sent);
    line_num(f, "Benchmark duration (s):", res->duration_s, 2);
    fprintf(f, "%-40s %lld%s\n", "Total input tokens:", (long long)r->input_tokens,
            r->prompt_tokens_from_usage ? "" : " (estimated: no usage from the server)");
    fprintf(f, "%-40s %lld\n", "Total generated tokens:", (long long)r->output_tokens);
    if (r->short_outputs)
        fprintf(f, "%-40s %zu (the server stopped before max_tokens)\n",
                "Shorter outputs:", r->short_outputs);
    line_num(f, "Request throughput (req/s):", r->request_throughput, 2);
    if (isfinite(r->goodput)) line_num(f, "Request goodput (req/s):", r->goodput, 2);
    line_num(f, "Input token throughput (tok/s):", r->input_throughput, 2);
    line_num(f, "Output token throughput (tok/s):", r->output_throughput, 2);
    line_num(f, "Total token throughput (tok/s):", r->total_throughput, 2);
    block(f, "---------------Time to First Token----------------", "TTFT", &r->ttft);
    block(f, "-----Time per Output Token (excl. 1st token)------", "TPOT", &r->tpot);
    block(f, "---------------Inter-token Latency----------------", "ITL", &r->itl);
    block(f, "----------------End-to-end Latency----------------", "E2E", &r->e2e);
    if (r->n_errors) {
        fprintf(f, "---------------------Errors-----------------------\n");
        for (size_t i = 0; i < r->n_errors; i++)
            fprintf(f, "%-40s %zu\n", r->errors[i].key, r->errors[i].n);
        if (res->first_error[0]) fprintf(f, "first: %s\n", res->first_error);
    }
    fprintf(f, "==================================================\n");
}

static void cell(FILE *f, double v, int prec) {
    if (isfinite(v))
        fprintf(f, " %.*f |", prec, v);
    else
        fprintf(f, " - |");
}

void xd_bench_report_table(FILE *f, const struct xd_bench_config *cfg,
                           const struct xd_bench_result *res, const struct xd_bench_report *r,
                           size_t n) {
    fprintf(f,
            "| %s | ok | failed | req/s | in tok/s | out tok/s | TTFT p50 | TTFT p99 | "
            "TPOT p50 | TPOT p99 | ITL p50 | ITL p99 | E2E p50 | E2E p99 | goodput |\n",
            level_name(cfg));
    fprintf(f, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        if (isinf(res[i].level))
            fprintf(f, "| inf |");
        else
            fprintf(f, "| %g |", res[i].level);
        fprintf(f, " %zu | %zu |", r[i].completed, r[i].failed + r[i].not_sent);
        cell(f, r[i].request_throughput, 2);
        cell(f, r[i].input_throughput, 1);
        cell(f, r[i].output_throughput, 1);
        cell(f, r[i].ttft.median, 1);
        cell(f, r[i].ttft.p99, 1);
        cell(f, r[i].tpot.median, 2);
        cell(f, r[i].tpot.p99, 2);
        cell(f, r[i].itl.median, 2);
        cell(f, r[i].itl.p99, 2);
        cell(f, r[i].e2e.median, 1);
        cell(f, r[i].e2e.p99, 1);
        cell(f, r[i].goodput, 2);
        fputc('\n', f);
    }
    fprintf(f, "(latencies in ms)\n");
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *summary_json(const struct xd_bench_summary *s) {
    json_t *o = json_object();
    json_object_set_new(o, "n", json_integer((json_int_t)s->n));
    json_object_set_new(o, "mean", jnum(s->mean));
    json_object_set_new(o, "std", jnum(s->std));
    json_object_set_new(o, "min", jnum(s->min));
    json_object_set_new(o, "median", jnum(s->median));
    json_object_set_new(o, "p90", jnum(s->p90));
    json_object_set_new(o, "p99", jnum(s->p99));
    json_object_set_new(o, "max", jnum(s->max));
    return o;
}

static json_t *record_json(const struct xd_bench_record *x) {
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(x->ok));
    json_object_set_new(o, "status", json_integer(x->status));
    json_object_set_new(o, "error", x->ok ? json_null() : json_string(x->error_key));
    json_object_set_new(o, "start_s", jnum(x->start_s));
    json_object_set_new(o, "ttfb_ms", jnum(x->ttfb_ms));
    json_object_set_new(o, "ttft_ms", jnum(x->ttft_ms));
    json_object_set_new(o, "tpot_ms", jnum(x->tpot_ms));
    json_object_set_new(o, "e2e_ms", jnum(x->e2e_ms));
    json_object_set_new(o, "prompt_tokens", json_integer(x->prompt_tokens));
    json_object_set_new(o, "prompt_tokens_from_usage", json_boolean(x->prompt_from_usage));
    json_object_set_new(o, "output_tokens", json_integer(x->output_tokens));
    json_object_set_new(o, "output_tokens_from_usage", json_boolean(x->output_from_usage));
    json_object_set_new(o, "max_tokens", json_integer(x->max_tokens));
    json_t *itl = json_array();
    for (size_t i = 0; i < x->n_itl; i++) json_array_append_new(itl, json_real(x->itl_ms[i]));
    json_object_set_new(o, "itl_ms", itl);
    return o;
}

static json_t *level_json(const struct xd_bench_config *cfg, const struct xd_bench_result *res,
                          const struct xd_bench_report *r) {
    json_t *o = json_object();
    json_object_set_new(o, cfg->closed ? "concurrency" : "rate",
                        isinf(res->level) ? json_string("inf") : json_real(res->level));
    if (!cfg->closed) json_object_set_new(o, "burstiness", json_real(cfg->burstiness));
    json_object_set_new(o, "num_prompts", json_integer((json_int_t)res->n_planned));
    json_object_set_new(o, "sent", json_integer((json_int_t)res->n_sent));
    json_object_set_new(o, "completed", json_integer((json_int_t)r->completed));
    json_object_set_new(o, "failed", json_integer((json_int_t)r->failed));
    json_object_set_new(o, "not_sent", json_integer((json_int_t)r->not_sent));
    json_object_set_new(o, "deadline_hit", json_boolean(res->deadline_hit));
    json_object_set_new(o, "duration_s", jnum(res->duration_s));
    json_object_set_new(o, "connections_opened", json_integer((json_int_t)res->n_connects));
    json_object_set_new(o, "total_input_tokens", json_integer(r->input_tokens));
    json_object_set_new(o, "prompt_tokens_from_usage", json_boolean(r->prompt_tokens_from_usage));
    json_object_set_new(o, "total_output_tokens", json_integer(r->output_tokens));
    json_object_set_new(o, "short_outputs", json_integer((json_int_t)r->short_outputs));
    json_object_set_new(o, "request_throughput", jnum(r->request_throughput));
    json_object_set_new(o, "input_throughput", jnum(r->input_throughput));
    json_object_set_new(o, "output_throughput", jnum(r->output_throughput));
    json_object_set_new(o, "total_token_throughput", jnum(r->total_throughput));
    json_object_set_new(o, "goodput", jnum(r->goodput));
    json_object_set_new(o, "good_requests", json_integer((json_int_t)r->good));
    json_object_set_new(o, "ttfb_ms", summary_json(&r->ttfb));
    json_object_set_new(o, "ttft_ms", summary_json(&r->ttft));
    json_object_set_new(o, "tpot_ms", summary_json(&r->tpot));
    json_object_set_new(o, "itl_ms", summary_json(&r->itl));
    json_object_set_new(o, "e2e_ms", summary_json(&r->e2e));
    json_t *errs = json_object();
    for (size_t i = 0; i < r->n_errors; i++)
        json_object_set_new(errs, r->errors[i].key, json_integer((json_int_t)r->errors[i].n));
    json_object_set_new(o, "errors", errs);
    json_object_set_new(o, "first_error",
                        res->first_error[0] ? json_string(res->first_error) : json_null());
    json_t *reqs = json_array();
    for (size_t i = 0; i < res->n_sent; i++) json_array_append_new(reqs, record_json(&res->rec[i]));
    json_object_set_new(o, "requests", reqs);
    return o;
}

json_t *xd_bench_report_json(const struct xd_bench_config *cfg, const char *model,
                             const struct xd_bench_result *res, const struct xd_bench_report *r,
                             size_t n) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "tool", json_string("expertd bench serve"));
    json_object_set_new(o, "url", json_string(cfg->url));
    json_object_set_new(o, "model", json_string(model));
    json_object_set_new(o, "mode", json_string(cfg->closed ? "concurrency" : "rate"));
    json_object_set_new(o, "seed", json_integer((json_int_t)cfg->seed));
    json_object_set_new(o, "num_prompts", json_integer((json_int_t)cfg->num_prompts));
    json_object_set_new(o, "prompts_file",
                        cfg->prompts_file ? json_string(cfg->prompts_file) : json_null());
    json_object_set_new(o, "input_len",
                        cfg->prompts_file ? json_null()
                                          : json_pack("[ii]", cfg->in_lo, cfg->in_hi));
    json_object_set_new(o, "output_len", json_pack("[ii]", cfg->out_lo, cfg->out_hi));
    json_object_set_new(o, "ignore_eos", json_boolean(cfg->ignore_eos));
    json_object_set_new(o, "temperature", json_real(cfg->temperature));
    json_t *slo = json_object();
    if (cfg->slo_ttft_ms > 0) json_object_set_new(slo, "ttft_ms", json_real(cfg->slo_ttft_ms));
    if (cfg->slo_tpot_ms > 0) json_object_set_new(slo, "tpot_ms", json_real(cfg->slo_tpot_ms));
    if (cfg->slo_e2e_ms > 0) json_object_set_new(slo, "e2e_ms", json_real(cfg->slo_e2e_ms));
    json_object_set_new(o, "slo", slo);
    json_object_set_new(o, "request_timeout_s", json_real(cfg->request_timeout_s));
    json_object_set_new(o, "max_duration_s", json_real(cfg->max_duration_s));
    json_t *runs = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(runs, level_json(cfg, &res[i], &r[i]));
    json_object_set_new(o, "runs", runs);
    return o;
}
