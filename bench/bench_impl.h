/* bench_impl.h - what the files of `expertd bench serve` share: the options, the prepared
 * requests, one request's measured outcome, one load level's result and its summary.
 * Internal to bench/ (bench_serve.c, bench_prompts.c, bench_run.c, bench_report.c,
 * bench_plot.c) and the tests.
 */
#ifndef XD_BENCH_IMPL_H
#define XD_BENCH_IMPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bench_stats.h"
#include "http_client.h"
#include "proto_buf.h"

#define XD_BENCH_MAX_LEVELS 32
#define XD_BENCH_MAX_PROMPTS 10000000 /* --num-prompts ceiling: bounds memory and the run */
/* The arrival schedule's seed, distinct from the prompts' stream of the same --seed. */
#define XD_BENCH_ARRIVAL_SEED(seed) ((uint64_t)(seed) ^ 0xa5a5f00dull)

struct xd_bench_config {
    const char *url;
    struct xd_http_url u; /* parsed url; u.path is the completions path */
    const char *model;    /* NULL: ask GET /v1/models */
    const char *api_key;  /* NULL: no Authorization header */
    bool closed;          /* --concurrency (closed loop) rather than --rate (open loop) */
    double levels[XD_BENCH_MAX_LEVELS]; /* concurrencies or rates (INFINITY: all at once) */
    size_t n_levels;
    double burstiness;        /* gamma shape of the gaps; 1 = Poisson */
    size_t num_prompts;       /* requests per level */
    int32_t in_lo, in_hi;     /* synthetic prompt words, uniform in [lo, hi] */
    int32_t out_lo, out_hi;   /* max_tokens, uniform in [lo, hi] */
    const char *prompts_file; /* JSONL or a JSON list of strings; NULL: synthetic prompts */
    uint64_t seed;
    double temperature;
    bool ignore_eos;
    double slo_ttft_ms, slo_tpot_ms, slo_e2e_ms; /* 0: no such SLO */
    const char *json_out, *plot_out, *dump_requests;
    double request_timeout_s; /* one request, send to last byte */
    double max_duration_s;    /* one level, first send to the end */
    bool progress;            /* draw the progress bar (stderr is a TTY, no --no-progress) */
    bool quiet;               /* no tables on stdout */
};

/* One prepared request: the same list is replayed at every level. */
struct xd_bench_prompt {
    char *text;    /* the prompt, owned */
    int32_t words; /* synthetic words (an estimate of its tokens), -1 for file prompts */
    int32_t max_tokens;
    char *wire; /* the whole HTTP request, owned */
    size_t wire_len;
    const char *body; /* the JSON body inside wire */
    size_t body_len;
};

/* One request's outcome. Times in milliseconds from its send; NAN when not measured. */
struct xd_bench_record {
    double start_s; /* send time from the level's start */
    double ttfb_ms; /* response headers */
    double ttft_ms; /* first chunk with text */
    double e2e_ms;  /* last byte */
    double tpot_ms; /* (e2e - ttft) / (output_tokens - 1) */
    double *itl_ms; /* gaps between text chunks, owned */
    size_t n_itl;
    int64_t prompt_tokens; /* usage.prompt_tokens, or the word estimate, or -1 */
    bool prompt_from_usage;
    int64_t output_tokens; /* usage.completion_tokens, or the number of text chunks */
    bool output_from_usage;
    int32_t max_tokens; /* what was asked */
    int status;         /* HTTP status, 0 when none arrived */
    int err;            /* 0 or the transport / stream error */
    bool ok;
    char error_key[32]; /* "" when ok; "404", "ECONNREFUSED", "timeout", "stream_error" */
};

/* One level's run. */
struct xd_bench_result {
    double level;                /* the concurrency or the rate */
    struct xd_bench_record *rec; /* n_sent records, in send order */
    size_t n_sent, n_planned;
    double duration_s; /* first send to last completion */
    uint64_t n_connects;
    bool deadline_hit;     /* --max-duration ended it */
    char first_error[256]; /* the first failure's message, for the log */
};

struct xd_bench_error_count {
    char key[32];
    size_t n;
};

/* A result's summary: what the tables, the JSON and the plots print. */
struct xd_bench_report {
    size_t completed, failed, not_sent;
    size_t short_outputs; /* completed with fewer tokens than max_tokens (EOS not ignored) */
    int64_t input_tokens, output_tokens;
    bool prompt_tokens_from_usage; /* every completed request had usage.prompt_tokens */
    double request_throughput, input_throughput, output_throughput, total_throughput;
    double goodput; /* completed requests meeting every SLO, per second; NAN: no SLO */
    size_t good;
    struct xd_bench_summary ttfb, ttft, tpot, itl, e2e;
    struct xd_bench_error_count *errors; /* sorted by key, owned */
    size_t n_errors;
};

/* ---- bench_prompts.c ------------------------------------------------------------------------ */

/* Reads FILE: a JSON list of strings, or JSON lines each a string or an object with "prompt".
 * On success 0 and *texts (owned strings, owned array), *n >= 1. XD_E_IO / XD_E_FORMAT /
 * XD_E_NOMEM with msg set; nothing allocated on failure. */
int xd_bench_prompts_read(const char *path, char ***texts, size_t *n, char *msg, size_t msg_cap);
/* Appends `words` space-separated common English words (about one token each in SentencePiece
 * and GPT-2 vocabularies) drawn from rng to out. */
void xd_bench_prompt_synth(struct xd_bench_rng *rng, int32_t words, struct proto_buf *out);
/* Builds cfg->num_prompts requests for model (file prompts cycled in order, or synthetic), with
 * lengths from cfg->seed. 0 or a negative error with msg set; *out owned (free with
 * xd_bench_prompts_free). */
int xd_bench_prompts_build(const struct xd_bench_config *cfg, const char *model,
                           struct xd_bench_prompt **out, char *msg, size_t msg_cap);
void xd_bench_prompts_free(struct xd_bench_prompt *p, size_t n);

/* ---- bench_run.c ---------------------------------------------------------------------------- */

/* Runs one level: every prompt once, closed loop at `level` in flight or open loop at `level`
 * requests/s, bounded by cfg's timeouts. 0 with *res filled (free with xd_bench_result_free),
 * or a negative error when the run could not start (nothing to free). */
int xd_bench_run_level(const struct xd_bench_config *cfg, const struct sockaddr *addr,
                       const struct xd_bench_prompt *prompts, double level,
                       struct xd_bench_result *res);
void xd_bench_result_free(struct xd_bench_result *res);
/* One request (GET path), whole body into out, bounded by timeout_s. Returns the HTTP status,
 * or a negative error. For GET /v1/models before the run. */
int xd_bench_http_get(const struct sockaddr *addr, const struct xd_http_url *u, const char *path,
                      const char *api_key, double timeout_s, struct proto_buf *out);

/* ---- bench_report.c ------------------------------------------------------------------------- */

/* Summarizes res under cfg's SLOs. 0 or XD_E_NOMEM (r freed). */
int xd_bench_report_make(const struct xd_bench_config *cfg, const struct xd_bench_result *res,
                         struct xd_bench_report *r);
void xd_bench_report_free(struct xd_bench_report *r);
/* The detailed block of one level (vLLM's layout, so numbers are read the same way). */
void xd_bench_report_print(FILE *f, const struct xd_bench_config *cfg,
                           const struct xd_bench_result *res, const struct xd_bench_report *r);
/* One row per level: the sweep table (Markdown, so it pastes into docs/benchmarks.md). */
void xd_bench_report_table(FILE *f, const struct xd_bench_config *cfg,
                           const struct xd_bench_result *res, const struct xd_bench_report *r,
                           size_t n);
/* The JSON report of every level; NULL on out of memory. */
json_t *xd_bench_report_json(const struct xd_bench_config *cfg, const char *model,
                             const struct xd_bench_result *res, const struct xd_bench_report *r,
                             size_t n);

/* ---- bench_plot.c --------------------------------------------------------------------------- */

/* Writes the plots of n levels to path: .html (self-contained SVG) or .png (gnuplot). 0 or a
 * negative error with msg set. */
int xd_bench_plot(const char *path, const struct xd_bench_config *cfg,
                  const struct xd_bench_result *res, const struct xd_bench_report *r, size_t n,
                  char *msg, size_t msg_cap);

#endif
