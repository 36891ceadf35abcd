/* test_bench_serve.c - bench/: the statistics and the arrival schedule (values checked), the SSE
 * reader (every split), URLs, prompt files, the report arithmetic, and `bench serve` end to end:
 * against a real `expertd serve` on an ephemeral loopback port with the tiny fixture model, and
 * against failing servers written here with libuv (500s, dropped connections, error events,
 * hangs, a refused port) whose failures must be counted by cause.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "bench_impl.h"
#include "bench_serve.h"
#include "bench_stats.h"
#include "http_client.h"
#include "sse.h"
#include "xd_error.h"
#include "xd_test_util.h"

extern char **environ;

/* ---- statistics ----------------------------------------------------------------------------- */

Test(bench_stats, percentile_linear_interpolation) {
    const double v[] = {1, 2, 3, 4};
    cr_assert_float_eq(xd_bench_percentile(v, 4, 50), 2.5, 1e-12);
    cr_assert_float_eq(xd_bench_percentile(v, 4, 90), 3.7, 1e-12);
    cr_assert_float_eq(xd_bench_percentile(v, 4, 99), 3.97, 1e-12);
    cr_assert_float_eq(xd_bench_percentile(v, 4, 0), 1, 1e-12);
    cr_assert_float_eq(xd_bench_percentile(v, 4, 100), 4, 1e-12);
    cr_assert_float_eq(xd_bench_percentile(v, 4, 25), 1.75, 1e-12);
    const double one[] = {5};
    cr_assert_float_eq(xd_bench_percentile(one, 1, 99), 5, 1e-12);
    cr_assert(isnan(xd_bench_percentile(v, 0, 50)));
    /* 101 values 0..100: percentile p is p itself */
    double h[101];
    for (int i = 0; i <= 100; i++) h[i] = i;
    for (int p = 0; p <= 100; p++) cr_assert_float_eq(xd_bench_percentile(h, 101, p), p, 1e-9);
}

Test(bench_stats, summarize_values) {
    double v[] = {3, 1, 4, 2};
    struct xd_bench_summary s;
    xd_bench_summarize(v, 4, &s);
    cr_assert_eq(s.n, 4);
    cr_assert_float_eq(s.mean, 2.5, 1e-12);
    cr_assert_float_eq(s.std, sqrt(1.25), 1e-12); /* population */
    cr_assert_float_eq(s.min, 1, 1e-12);
    cr_assert_float_eq(s.max, 4, 1e-12);
    cr_assert_float_eq(s.median, 2.5, 1e-12);
    cr_assert_float_eq(s.p90, 3.7, 1e-12);
    cr_assert_float_eq(s.p99, 3.97, 1e-12);
    cr_assert_float_eq(v[0], 1, 0, "sorted in place");
    struct xd_bench_summary e;
    xd_bench_summarize(NULL, 0, &e);
    cr_assert_eq(e.n, 0);
    cr_assert(isnan(e.mean) && isnan(e.median) && isnan(e.p99));
}

Test(bench_stats, rng_reproducible_and_ranges) {
    struct xd_bench_rng a, b, c;
    xd_bench_rng_seed(&a, 42);
    xd_bench_rng_seed(&b, 42);
    xd_bench_rng_seed(&c, 43);
    bool differs = false;
    for (int i = 0; i < 100; i++) {
        uint64_t x = xd_bench_rng_u64(&a);
        cr_assert_eq(x, xd_bench_rng_u64(&b));
        differs |= x != xd_bench_rng_u64(&c);
    }
    cr_assert(differs);
    int seen[7] = {0};
    for (int i = 0; i < 7000; i++) {
        int64_t x = xd_bench_rng_range(&a, 3, 9);
        cr_assert(x >= 3 && x <= 9);
        seen[x - 3]++;
    }
    for (int i = 0; i < 7; i++)
        cr_assert(seen[i] > 800 && seen[i] < 1200, "value %d: %d", i + 3, seen[i]);
    cr_assert_eq(xd_bench_rng_range(&a, 5, 5), 5);
    for (int i = 0; i < 1000; i++) {
        double u = xd_bench_rng_uniform(&a);
        cr_assert(u >= 0 && u < 1);
    }
}

/* Mean and variance of Gamma(k, theta) are k theta and k theta^2. */
Test(bench_stats, gamma_moments) {
    const double shapes[] = {0.3, 1, 2.5, 10};
    for (size_t s = 0; s < 4; s++) {
        struct xd_bench_rng r;
        xd_bench_rng_seed(&r, 7 + s);
        const int n = 200000;
        const double k = shapes[s], theta = 0.5;
        double sum = 0, sum2 = 0;
        for (int i = 0; i < n; i++) {
            double x = xd_bench_rng_gamma(&r, k, theta);
            cr_assert(x > 0);
            sum += x;
            sum2 += x * x;
        }
        double mean = sum / n, var = sum2 / n - mean * mean;
        cr_assert(fabs(mean / (k * theta) - 1) < 0.02, "shape %g: mean %g", k, mean);
        cr_assert(fabs(var / (k * theta * theta) - 1) < 0.05, "shape %g: var %g", k, var);
    }
}

Test(bench_stats, schedule_poisson_gamma) {
    const size_t n = 100000;
    double *t = malloc(n * sizeof *t), *u = malloc(n * sizeof *u);
    const double rate = 20;
    const double bursts[] = {1, 0.5, 4};
    for (size_t b = 0; b < 3; b++) {
        cr_assert_eq(xd_bench_schedule(rate, bursts[b], 11, n, t), 0);
        cr_assert_eq(t[0], 0);
        double sum = 0, sum2 = 0;
        size_t below_median = 0;
        for (size_t i = 1; i < n; i++) {
            double g = t[i] - t[i - 1];
            cr_assert(g >= 0);
            sum += g;
            sum2 += g * g;
            below_median += g < log(2) / rate;
        }
        double m = n - 1, mean = sum / m, var = sum2 / m - mean * mean;
        /* the mean gap is 1/rate whatever the burstiness; CV^2 = 1/burstiness */
        cr_assert(fabs(mean * rate - 1) < 0.02, "b %g: mean gap %g", bursts[b], mean);
        cr_assert(fabs(var / (mean * mean) * bursts[b] - 1) < 0.05, "b %g: cv2 %g", bursts[b],
                  var / (mean * mean));
        if (bursts[b] == 1) /* exponential: half the gaps are below ln2/rate */
            cr_assert(fabs((double)below_median / m - 0.5) < 0.01);
    }
    /* same seed, same schedule; another seed, another */
    cr_assert_eq(xd_bench_schedule(rate, 1, 11, n, u), 0);
    cr_assert_eq(xd_bench_schedule(rate, 1, 11, n, t), 0);
    cr_assert_eq(memcmp(t, u, n * sizeof *t), 0);
    cr_assert_eq(xd_bench_schedule(rate, 1, 12, n, u), 0);
    cr_assert_neq(memcmp(t, u, n * sizeof *t), 0);
    /* all at once; bad arguments */
    cr_assert_eq(xd_bench_schedule(INFINITY, 1, 1, 10, t), 0);
    for (int i = 0; i < 10; i++) cr_assert_eq(t[i], 0);
    cr_assert_eq(xd_bench_schedule(0, 1, 1, 10, t), XD_E_INVALID);
    cr_assert_eq(xd_bench_schedule(1, 0, 1, 10, t), XD_E_INVALID);
    cr_assert_eq(xd_bench_schedule(NAN, 1, 1, 10, t), XD_E_INVALID);
    cr_assert_eq(xd_bench_schedule(1, 1, 1, 0, t), XD_E_INVALID);
    free(t);
    free(u);
}

/* ---- SSE ------------------------------------------------------------------------------------ */

struct events {
    char got[16][128];
    int n;
    int stop_at; /* return 7 from the stop_at-th event (1-based), 0: never */
};

static int collect(void *arg, const char *data, size_t len) {
    struct events *e = arg;
    cr_assert_eq(strlen(data), len, "NUL-terminated");
    cr_assert(e->n < 16);
    snprintf(e->got[e->n], sizeof e->got[0], "%s", data);
    e->n++;
    return e->n == e->stop_at ? 7 : 0;
}

Test(bench_sse, every_split) {
    static const char STREAM[] = ": comment\r\n"
                                 "data: {\"a\":1}\r\n\r\n"
                                 "data:no-space\n\n"
                                 "data: line1\ndata: line2\n\n"
                                 "event: x\nid: 3\ndata: cr\r\r"
                                 "data\n\n"
                                 "\n\n"
                                 "data: [DONE]\n\n"
                                 "data: dropped-no-blank-line";
    static const char *const WANT[] = {"{\"a\":1}", "no-space", "line1\nline2", "cr", "", "[DONE]"};
    const size_t len = sizeof STREAM - 1;
    for (size_t a = 0; a <= len; a++)
        for (size_t b = a; b <= len; b += 7) {
            struct xd_sse s;
            xd_sse_init(&s, 1024);
            struct events e = {.n = 0};
            size_t cuts[] = {0, a, b, len};
            for (int k = 0; k < 3; k++) {
                /* exact-size copies: an over-read is an ASan error */
                size_t n = cuts[k + 1] - cuts[k];
                char *copy = malloc(n ? n : 1);
                memcpy(copy, STREAM + cuts[k], n);
                cr_assert_eq(xd_sse_feed(&s, copy, n, collect, &e), 0);
                free(copy);
            }
            cr_assert_eq(e.n, 6, "split %zu/%zu: %d events", a, b, e.n);
            for (int i = 0; i < 6; i++) cr_assert_str_eq(e.got[i], WANT[i], "split %zu/%zu", a, b);
            xd_sse_free(&s);
        }
}

Test(bench_sse, limits_and_stop) {
    struct xd_sse s;
    xd_sse_init(&s, 16);
    struct events e = {.n = 0};
    cr_assert_eq(xd_sse_feed(&s, "data: 0123456789abcdefXYZ\n\n", 27, collect, &e), XD_E_INVALID);
    xd_sse_free(&s);
    xd_sse_init(&s, 16); /* long line without an end yet */
    cr_assert_eq(xd_sse_feed(&s, "data: 0123456789abcdef", 22, collect, &e), XD_E_INVALID);
    xd_sse_free(&s);
    xd_sse_init(&s, 1024);
    e.stop_at = 2;
    cr_assert_eq(xd_sse_feed(&s, "data: a\n\ndata: b\n\ndata: c\n\n", 27, collect, &e), 7);
    cr_assert_eq(e.n, 2);
    xd_sse_free(&s);
}

/* ---- URLs ----------------------------------------------------------------------------------- */

Test(bench_url, parse) {
    struct xd_http_url u;
    cr_assert_eq(xd_http_url_parse("http://127.0.0.1:8080/v1/completions", &u), 0);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_str_eq(u.port, "8080");
    cr_assert_str_eq(u.host_header, "127.0.0.1:8080");
    cr_assert_str_eq(u.path, "/v1/completions");
    cr_assert_eq(xd_http_url_parse("HTTP://localhost", &u), 0);
    cr_assert_str_eq(u.host, "localhost");
    cr_assert_str_eq(u.port, "80");
    cr_assert_str_eq(u.path, "");
    cr_assert_eq(xd_http_url_parse("http://[::1]:9/x?y=1", &u), 0);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_str_eq(u.port, "9");
    cr_assert_str_eq(u.host_header, "[::1]:9");
    cr_assert_str_eq(u.path, "/x?y=1");
    cr_assert_eq(xd_http_url_parse("https://example.com/", &u), XD_E_UNSUPPORTED);
    const char *bad[] = {"127.0.0.1:8080",     "http://",          "http://:80/",
                         "http://h:0/",        "http://h:65536",   "http://h:8a/",
                         "http://user@h/",     "http://[::1/",     "http://h/a b",
                         "http://h/a\r\nX: y", "http://h:123456/", "http://a\r\nX: y/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(xd_http_url_parse(bad[i], &u), XD_E_INVALID, "%s", bad[i]);
}

/* ---- prompts -------------------------------------------------------------------------------- */

static char **read_prompts(const char *text, size_t *n, int *rc, char *msg) {
    char *path = xd_test_write_temp(text, strlen(text));
    char **t = NULL;
    *rc = xd_bench_prompts_read(path, &t, n, msg, 256);
    unlink(path);
    free(path);
    return t;
}

static void free_prompts(char **t, size_t n) {
    for (size_t i = 0; i < n; i++) free(t[i]);
    free(t);
}

Test(bench_prompts, files) {
    size_t n;
    int rc;
    char msg[256];
    char **t = read_prompts(" [\"a\", {\"prompt\": \"b c\"}, \"\\u00e9\"]", &n, &rc, msg);
    cr_assert_eq(rc, 0, "%s", msg);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(t[0], "a");
    cr_assert_str_eq(t[1], "b c");
    cr_assert_str_eq(t[2], "\xc3\xa9");
    free_prompts(t, n);
    t = read_prompts("\"one\"\n\n{\"prompt\": \"two\", \"x\": 1}\r\n  \n\"three\"", &n, &rc, msg);
    cr_assert_eq(rc, 0, "%s", msg);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(t[2], "three");
    free_prompts(t, n);
    t = read_prompts("\"one\"\n{\"text\": \"two\"}\n", &n, &rc, msg);
    cr_assert_eq(rc, XD_E_FORMAT);
    cr_assert(t == NULL && n == 0);
    cr_assert(strstr(msg, ":2:"), "names the line: %s", msg);
    t = read_prompts("[1, 2]", &n, &rc, msg);
    cr_assert_eq(rc, XD_E_FORMAT);
    t = read_prompts("\n\n", &n, &rc, msg);
    cr_assert_eq(rc, XD_E_FORMAT);
    cr_assert(strstr(msg, "no prompts"));
    char **none = NULL;
    cr_assert_eq(xd_bench_prompts_read("/nonexistent/p.jsonl", &none, &n, msg, sizeof msg),
                 -ENOENT);
}

Test(bench_prompts, synthetic_words_and_requests) {
    struct xd_bench_rng a, b;
    xd_bench_rng_seed(&a, 5);
    xd_bench_rng_seed(&b, 5);
    struct proto_buf x, y;
    proto_buf_init(&x);
    proto_buf_init(&y);
    xd_bench_prompt_synth(&a, 50, &x);
    xd_bench_prompt_synth(&b, 50, &y);
    cr_assert_str_eq(x.data, y.data, "same seed, same words");
    size_t spaces = 0;
    for (size_t i = 0; i < x.len; i++) spaces += x.data[i] == ' ';
    cr_assert_eq(spaces, 49, "50 words");
    proto_buf_free(&x);
    proto_buf_free(&y);

    struct xd_bench_config cfg = {.num_prompts = 20,
                                  .in_lo = 3,
                                  .in_hi = 9,
                                  .out_lo = 4,
                                  .out_hi = 6,
                                  .seed = 1,
                                  .ignore_eos = true};
    cr_assert_eq(xd_http_url_parse("http://127.0.0.1:1/v1/completions", &cfg.u), 0);
    struct xd_bench_prompt *p;
    char msg[256];
    cr_assert_eq(xd_bench_prompts_build(&cfg, "m", &p, msg, sizeof msg), 0);
    for (size_t i = 0; i < 20; i++) {
        cr_assert(p[i].words >= 3 && p[i].words <= 9);
        cr_assert(p[i].max_tokens >= 4 && p[i].max_tokens <= 6);
        cr_assert(!strncmp(p[i].wire, "POST /v1/completions HTTP/1.1\r\n", 31));
        json_t *j = json_loadb(p[i].body, p[i].body_len, 0, NULL);
        cr_assert(json_is_object(j));
        cr_assert_str_eq(json_string_value(json_object_get(j, "prompt")), p[i].text);
        cr_assert_eq(json_integer_value(json_object_get(j, "max_tokens")), p[i].max_tokens);
        cr_assert(json_is_true(json_object_get(j, "stream")));
        cr_assert(json_is_true(json_object_get(j, "ignore_eos")));
        cr_assert(
            json_is_true(json_object_get(json_object_get(j, "stream_options"), "include_usage")));
        json_decref(j);
        char cl[64];
        snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", p[i].body_len);
        cr_assert(strstr(p[i].wire, cl));
    }
    xd_bench_prompts_free(p, 20);
}

/* ---- report arithmetic ---------------------------------------------------------------------- */

Test(bench_report, counts_throughput_goodput) {
    struct xd_bench_record rec[6];
    memset(rec, 0, sizeof rec);
    double itl0[] = {10, 20}, itl1[] = {30};
    for (int i = 0; i < 3; i++) {
        rec[i].ok = true;
        rec[i].status = 200;
        rec[i].prompt_from_usage = true;
        rec[i].ttfb_ms = 1;
    }
    rec[0].ttft_ms = 100, rec[0].e2e_ms = 130, rec[0].output_tokens = 3, rec[0].prompt_tokens = 10;
    rec[0].tpot_ms = 15, rec[0].itl_ms = itl0, rec[0].n_itl = 2;
    rec[1].ttft_ms = 300, rec[1].e2e_ms = 330, rec[1].output_tokens = 2, rec[1].prompt_tokens = 20;
    rec[1].tpot_ms = 30, rec[1].itl_ms = itl1, rec[1].n_itl = 1;
    rec[2].ttft_ms = 200, rec[2].e2e_ms = 200, rec[2].output_tokens = 1, rec[2].prompt_tokens = 30;
    rec[2].tpot_ms = NAN;
    rec[0].max_tokens = 3, rec[1].max_tokens = 2, rec[2].max_tokens = 4; /* rec 2 stopped early */
    snprintf(rec[3].error_key, sizeof rec[3].error_key, "500");
    snprintf(rec[4].error_key, sizeof rec[4].error_key, "EOF");
    snprintf(rec[5].error_key, sizeof rec[5].error_key, "500");
    struct xd_bench_result res = {
        .level = 2, .rec = rec, .n_sent = 6, .n_planned = 8, .duration_s = 2};
    struct xd_bench_config cfg = {.closed = true, .slo_ttft_ms = 250, .slo_tpot_ms = 20};
    struct xd_bench_report r;
    cr_assert_eq(xd_bench_report_make(&cfg, &res, &r), 0);
    cr_assert_eq(r.completed, 3);
    cr_assert_eq(r.failed, 3);
    cr_assert_eq(r.not_sent, 2);
    cr_assert_eq(r.input_tokens, 60);
    cr_assert_eq(r.output_tokens, 6);
    cr_assert_eq(r.short_outputs, 1);
    cr_assert(r.prompt_tokens_from_usage);
    cr_assert_float_eq(r.request_throughput, 1.5, 1e-12);
    cr_assert_float_eq(r.input_throughput, 30, 1e-12);
    cr_assert_float_eq(r.output_throughput, 3, 1e-12);
    cr_assert_float_eq(r.total_throughput, 33, 1e-12);
    /* rec 0 meets both SLOs, rec 1 misses TTFT, rec 2 has no TPOT and meets TTFT */
    cr_assert_eq(r.good, 2);
    cr_assert_float_eq(r.goodput, 1, 1e-12);
    cr_assert_eq(r.ttft.n, 3);
    cr_assert_float_eq(r.ttft.median, 200, 1e-12);
    cr_assert_float_eq(r.ttft.mean, 200, 1e-12);
    cr_assert_eq(r.tpot.n, 2);
    cr_assert_float_eq(r.tpot.median, 22.5, 1e-12);
    cr_assert_eq(r.itl.n, 3);
    cr_assert_float_eq(r.itl.median, 20, 1e-12);
    cr_assert_float_eq(r.e2e.max, 330, 1e-12);
    cr_assert_eq(r.n_errors, 2);
    cr_assert_str_eq(r.errors[0].key, "500");
    cr_assert_eq(r.errors[0].n, 2);
    cr_assert_str_eq(r.errors[1].key, "EOF");
    cr_assert_eq(r.errors[1].n, 1);
    json_t *j = xd_bench_report_json(&cfg, "m", &res, &r, 1);
    json_t *run = json_array_get(json_object_get(j, "runs"), 0);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(run, "errors"), "500")), 2);
    cr_assert(json_is_null(
                  json_object_get(json_array_get(json_object_get(run, "requests"), 2), "tpot_ms")),
              "NAN is written as null");
    cr_assert_eq(json_array_size(json_object_get(run, "requests")), 6);
    json_decref(j);
    xd_bench_report_free(&r);
    cfg.slo_ttft_ms = cfg.slo_tpot_ms = 0;
    cr_assert_eq(xd_bench_report_make(&cfg, &res, &r), 0);
    cr_assert(isnan(r.goodput), "no SLO: no goodput");
    xd_bench_report_free(&r);
}

/* Both plot outputs from a synthetic sweep of two levels: a self-contained HTML file, and a
 * PNG when gnuplot is installed. */
Test(bench_report, plots) {
    struct xd_bench_record rec[2][3];
    memset(rec, 0, sizeof rec);
    double itl[] = {5, 6, 7};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 3; i++) {
            struct xd_bench_record *x = &rec[l][i];
            x->ok = true, x->status = 200, x->output_tokens = 4, x->max_tokens = 4;
            x->ttft_ms = 10.0 * (i + 1) * (l + 1), x->e2e_ms = x->ttft_ms + 18, x->tpot_ms = 6;
            x->itl_ms = itl, x->n_itl = 3;
        }
    struct xd_bench_result res[2] = {
        {.level = 1, .rec = rec[0], .n_sent = 3, .n_planned = 3, .duration_s = 1},
        {.level = 4, .rec = rec[1], .n_sent = 3, .n_planned = 3, .duration_s = 0.5}};
    struct xd_bench_config cfg = {.closed = true, .url = "http://127.0.0.1:1", .num_prompts = 3};
    struct xd_bench_report r[2];
    for (int l = 0; l < 2; l++) cr_assert_eq(xd_bench_report_make(&cfg, &res[l], &r[l]), 0);
    char msg[256] = "";
    char *base = xd_test_write_temp("", 0), path[300];
    snprintf(path, sizeof path, "%s.html", base);
    cr_assert_eq(xd_bench_plot(path, &cfg, res, r, 2, msg, sizeof msg), 0, "%s", msg);
    size_t n;
    char *html = xd_test_read_file(path, &n);
    size_t svgs = 0;
    for (const char *p = html; (p = strstr(p, "<svg")); p++) svgs++;
    cr_assert_eq(svgs, 8, "4 CDFs and 4 sweep charts");
    cr_assert(strstr(html, "c=4") && !strstr(html, "<script") &&
              !strstr(html, "http://www.w3.org/1999"));
    free(html);
    unlink(path);
    snprintf(path, sizeof path, "%s.txt", base);
    cr_assert_eq(xd_bench_plot(path, &cfg, res, r, 2, msg, sizeof msg), XD_E_INVALID);
    snprintf(path, sizeof path, "%s.png", base);
    if (system("command -v gnuplot > /dev/null 2>&1") == 0) {
        cr_assert_eq(xd_bench_plot(path, &cfg, res, r, 2, msg, sizeof msg), 0, "%s", msg);
        char *png = xd_test_read_file(path, &n);
        cr_assert(png && n > 1000 && !memcmp(png, "\x89PNG", 4), "a PNG image");
        free(png);
        unlink(path);
    }
    unlink(base);
    free(base);
    for (int l = 0; l < 2; l++) xd_bench_report_free(&r[l]);
}

/* ---- end to end: helpers -------------------------------------------------------------------- */

static json_t *run_bench(const char *const *args, int *rc) {
    char *json_path = xd_test_write_temp("", 0);
    const char *argv[64];
    int argc = 0;
    argv[argc++] = "serve";
    for (; args[argc - 1]; argc++) argv[argc] = args[argc - 1];
    argv[argc++] = "--json";
    argv[argc++] = json_path;
    argv[argc++] = "--no-progress";
    argv[argc++] = "--quiet";
    argv[argc] = NULL;
    *rc = xd_bench_serve_main(argc, (char **)argv);
    json_error_t je;
    json_t *j = json_load_file(json_path, 0, &je);
    unlink(json_path);
    free(json_path);
    return j;
}

static json_t *run0(json_t *j) { return json_array_get(json_object_get(j, "runs"), 0); }
static json_int_t jint(json_t *o, const char *k) {
    return json_integer_value(json_object_get(o, k));
}
static double jreal(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

static bool rel_eq(double a, double b) { return fabs(a - b) <= 1e-7 * fmax(fabs(a), fabs(b)); }

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A free loopback port: bind port 0, read it, close. */
static int free_port(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t t;
    uv_tcp_init(&loop, &t);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&t, (const struct sockaddr *)&a, 0), 0);
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&t, (struct sockaddr *)&got, &len);
    int port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return port;
}

/* ---- end to end: a real expertd serve ------------------------------------------------------- */

struct served {
    pid_t pid;
    int port;
    char url[64];
};

/* Starts `expertd serve` with the tiny model on an ephemeral port and waits (bounded) until
 * /health answers 200. Skips the test when the server cannot be started. */
static void serve_start(struct served *s) {
    char *model = xd_test_fixture("mixtral-tiny-q8_0.gguf");
    char *port_file = xd_test_write_temp("", 0);
    if (access(XD_EXPERTD_BIN, X_OK)) cr_skip_test("no expertd binary at %s", XD_EXPERTD_BIN);
    const char *argv[] = {XD_EXPERTD_BIN, "serve",   "-m",      model,        "--port", "0",
                          "--port-file",  port_file, "--quiet", "--parallel", "4",      "--ctx",
                          "512",          NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    cr_assert_eq(posix_spawn(&s->pid, XD_EXPERTD_BIN, &fa, NULL, (char **)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    s->port = 0;
    for (int i = 0; i < 300 && !s->port; i++) { /* 30 s */
        size_t n = 0;
        char *txt = xd_test_read_file(port_file, &n);
        if (txt && n) s->port = atoi(txt);
        free(txt);
        int st;
        if (!s->port && waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            cr_skip_test("expertd serve exited before listening (status %d): serve unavailable",
                         st);
        }
        if (!s->port) sleep_ms(100);
    }
    unlink(port_file);
    free(port_file);
    free(model);
    cr_assert(s->port > 0, "expertd serve wrote no port in 30 s");
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    struct xd_http_url u;
    xd_http_url_parse(s->url, &u);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", s->port, &a);
    int st = 0;
    for (int i = 0; i < 300 && st != 200; i++) { /* loading: 503 until ready */
        struct proto_buf b;
        proto_buf_init(&b);
        st = xd_bench_http_get((const struct sockaddr *)&a, &u, "/health", NULL, 5, &b);
        proto_buf_free(&b);
        if (st != 200) sleep_ms(100);
    }
    cr_assert_eq(st, 200, "expertd serve never became healthy");
}

static void serve_stop(struct served *s) {
    if (s->pid <= 0) return;
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; i++) { /* drain, bounded: 30 s then SIGKILL */
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "serve exit status %d", st);
            return;
        }
        sleep_ms(100);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
}

Test(bench_serve_e2e, closed_loop_against_expertd, .timeout = 600) {
    struct served s;
    serve_start(&s);
    char *plot = xd_test_write_temp("", 0);
    char plot_html[256];
    snprintf(plot_html, sizeof plot_html, "%s.html", plot);
    int rc;
    /* no --model: the name comes from GET /v1/models */
    const char *args[] = {
        "--url",   s.url,         "--concurrency", "1,2",          "--num-prompts",
        "6",       "--input-len", "8:16",          "--output-len", "4",
        "--seed",  "7",           "--slo-ttft",    "600000",       "--plot",
        plot_html, NULL};
    json_t *j = run_bench(args, &rc);
    serve_stop(&s);
    cr_assert_eq(rc, 0);
    cr_assert(j, "the JSON report was written");
    cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "mixtral-tiny-q8_0");
    cr_assert_str_eq(json_string_value(json_object_get(j, "mode")), "concurrency");
    cr_assert_eq(jint(j, "num_prompts"), 6);
    cr_assert_eq(json_array_size(json_object_get(j, "runs")), 2);
    for (size_t lv = 0; lv < 2; lv++) {
        json_t *r = json_array_get(json_object_get(j, "runs"), lv);
        cr_assert_float_eq(jreal(r, "concurrency"), lv == 0 ? 1 : 2, 0);
        cr_assert_eq(jint(r, "sent"), 6);
        cr_assert_eq(jint(r, "completed"), 6);
        cr_assert_eq(jint(r, "failed"), 0);
        cr_assert_eq(jint(r, "not_sent"), 0);
        cr_assert_eq(json_object_size(json_object_get(r, "errors")), 0);
        cr_assert(json_is_null(json_object_get(r, "first_error")));
        /* kept-alive connections: one per request in flight */
        cr_assert_eq(jint(r, "connections_opened"), lv == 0 ? 1 : 2);
        /* ignore_eos + max_tokens 4: exactly 4 tokens each, counted from usage */
        cr_assert_eq(jint(r, "total_output_tokens"), 24);
        cr_assert_eq(jint(r, "short_outputs"), 0);
        cr_assert(json_is_true(json_object_get(r, "prompt_tokens_from_usage")));
        double dur = jreal(r, "duration_s");
        cr_assert(dur > 0);
        /* the JSON keeps 9 significant digits: compare relatively */
        cr_assert(rel_eq(jreal(r, "request_throughput"), 6 / dur));
        cr_assert(rel_eq(jreal(r, "output_throughput"), 24 / dur));
        cr_assert(rel_eq(jreal(r, "input_throughput"), jint(r, "total_input_tokens") / dur));
        cr_assert(rel_eq(jreal(r, "goodput"), 6 / dur), "every request meets 600 s");
        json_t *ttft = json_object_get(r, "ttft_ms"), *e2e = json_object_get(r, "e2e_ms");
        cr_assert_eq(jint(ttft, "n"), 6);
        cr_assert_eq(jint(e2e, "n"), 6);
        cr_assert(jreal(ttft, "min") > 0);
        cr_assert(jreal(ttft, "median") <= jreal(e2e, "median"));
        cr_assert(jreal(ttft, "p90") <= jreal(ttft, "p99") &&
                  jreal(ttft, "p99") <= jreal(ttft, "max"));
        json_t *reqs = json_object_get(r, "requests");
        cr_assert_eq(json_array_size(reqs), 6);
        int64_t in_sum = 0;
        size_t i;
        json_t *q;
        json_array_foreach(reqs, i, q) {
            cr_assert(json_is_true(json_object_get(q, "ok")));
            cr_assert_eq(jint(q, "status"), 200);
            cr_assert_eq(jint(q, "output_tokens"), 4);
            cr_assert_eq(jint(q, "max_tokens"), 4);
            cr_assert(json_is_true(json_object_get(q, "output_tokens_from_usage")));
            /* 8..16 words of about one token each, plus BOS */
            cr_assert(jint(q, "prompt_tokens") >= 9 && jint(q, "prompt_tokens") <= 40);
            in_sum += jint(q, "prompt_tokens");
            cr_assert(jreal(q, "ttfb_ms") <= jreal(q, "ttft_ms"));
            cr_assert(jreal(q, "ttft_ms") <= jreal(q, "e2e_ms"));
            cr_assert_float_eq(jreal(q, "tpot_ms"), (jreal(q, "e2e_ms") - jreal(q, "ttft_ms")) / 3,
                               1e-4, "9 significant digits in the JSON");
            /* a gap per text chunk after the first: at most 3 for 4 tokens */
            size_t n_itl = json_array_size(json_object_get(q, "itl_ms"));
            cr_assert(n_itl <= 3);
            if (i) cr_assert(jreal(q, "start_s") >= jreal(json_array_get(reqs, i - 1), "start_s"));
        }
        cr_assert_eq(in_sum, jint(r, "total_input_tokens"));
    }
    /* the same requests at both levels: the same prompt lengths */
    json_t *r0 = json_object_get(json_array_get(json_object_get(j, "runs"), 0), "requests");
    json_t *r1 = json_object_get(json_array_get(json_object_get(j, "runs"), 1), "requests");
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(jint(json_array_get(r0, i), "prompt_tokens"),
                     jint(json_array_get(r1, i), "prompt_tokens"));
    json_decref(j);
    size_t n = 0;
    char *html = xd_test_read_file(plot_html, &n);
    cr_assert(html && strstr(html, "<svg") && strstr(html, "</html>"), "HTML plot written");
    cr_assert(!strstr(html, "<script"), "no JavaScript");
    free(html);
    unlink(plot_html);
    unlink(plot);
    free(plot);
}

Test(bench_serve_e2e, open_loop_schedule_and_404, .timeout = 600) {
    struct served s;
    serve_start(&s);
    int rc;
    const char *args[] = {"--url",
                          s.url,
                          "--model",
                          "mixtral-tiny-q8_0",
                          "--rate",
                          "20",
                          "--burstiness",
                          "0.5",
                          "--num-prompts",
                          "8",
                          "--input-len",
                          "4",
                          "--output-len",
                          "2",
                          "--seed",
                          "3",
                          NULL};
    json_t *j = run_bench(args, &rc);
    cr_assert_eq(rc, 0);
    json_t *r = run0(j);
    cr_assert_eq(jint(r, "completed"), 8);
    cr_assert_float_eq(jreal(r, "rate"), 20, 0);
    cr_assert_float_eq(jreal(r, "burstiness"), 0.5, 0);
    /* every request went out at its scheduled time or after it, never before */
    double t[8];
    cr_assert_eq(xd_bench_schedule(20, 0.5, XD_BENCH_ARRIVAL_SEED(3), 8, t), 0);
    json_t *reqs = json_object_get(r, "requests");
    for (size_t i = 0; i < 8; i++)
        cr_assert(jreal(json_array_get(reqs, i), "start_s") >= t[i] - 1e-9, "request %zu", i);
    json_decref(j);

    /* a wrong path: every request a 404, counted by status */
    char url[96];
    snprintf(url, sizeof url, "%s/v1/nope", s.url);
    const char *bad[] = {"--url",         url, "--model", "m", "--concurrency", "2",
                         "--num-prompts", "5", NULL};
    j = run_bench(bad, &rc);
    serve_stop(&s);
    cr_assert_eq(rc, 1, "failures give exit status 1");
    r = run0(j);
    cr_assert_eq(jint(r, "completed"), 0);
    cr_assert_eq(jint(r, "failed"), 5);
    cr_assert_eq(json_object_size(json_object_get(r, "errors")), 1);
    cr_assert_eq(jint(json_object_get(r, "errors"), "404"), 5);
    cr_assert(strstr(json_string_value(json_object_get(r, "first_error")), "HTTP 404"));
    cr_assert_eq(jint(json_object_get(r, "ttft_ms"), "n"), 0);
    cr_assert(json_is_null(json_object_get(json_object_get(r, "ttft_ms"), "median")));
    json_decref(j);
}

/* ---- end to end: failing servers made here -------------------------------------------------- */

enum fail_mode {
    FAIL_MIXED, /* by request number mod 4: 500, close, good stream, stream with error event */
    FAIL_HANG,  /* read the request, never answer */
    PACED,      /* a good stream on a known clock: PACE_TTFT_MS, then a chunk every PACE_ITL_MS */
};

#define PACE_TTFT_MS 150
#define PACE_ITL_MS 40
#define PACE_TOKENS 5

struct fsrv {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_thread_t thread;
    uv_sem_t ready;
    enum fail_mode mode;
    int port;
    int counter; /* requests seen; loop thread only */
};

struct fconn {
    uv_tcp_t tcp;
    uv_write_t w;
    struct fsrv *s;
    char buf[16384];
    size_t len;
    bool answered;
    uv_timer_t pace; /* PACED: the next chunk */
    int sent;        /* PACED: chunks written */
    uv_write_t pw[PACE_TOKENS + 2];
};

static const char RESP_500[] = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: "
                               "application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n"
                               "{\"error\":{\"message\":\"no\"}}\n";
static const char RESP_GOOD[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"b\"}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"c\",\"finish_reason\":\"length\"}]}\n\n"
    "data: [DONE]\n\n";
static const char RESP_ERROR_EVENT[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n"
    "data: {\"error\":{\"message\":\"engine failed\",\"code\":500}}\n\n"
    "data: [DONE]\n\n";

static void fconn_closed(uv_handle_t *h) { free(h->data); }

static void fconn_close(struct fconn *c);

static void fwrite_done(uv_write_t *w, int status) { fconn_close(w->data); }

static void pace_timer_closed(uv_handle_t *h) {
    struct fconn *c = h->data;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, fconn_closed);
}

/* A connection with a pace timer closes the timer first and the socket from its callback, so
 * the memory goes only after both. */
static void fconn_close(struct fconn *c) {
    if (c->s->mode == PACED && c->answered) {
        if (!uv_is_closing((uv_handle_t *)&c->pace))
            uv_close((uv_handle_t *)&c->pace, pace_timer_closed);
    } else if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, fconn_closed);
    }
}

static void pace_last_written(uv_write_t *w, int status) { fconn_close(w->data); }

/* PACED: one chunk per firing, each scheduled PACE_ITL_MS after the previous one fired, so the
 * server never sends a token early - but for libuv's whole-millisecond clock, which lets a timer
 * fire up to 1 ms before its delay has really passed: TTFT >= PACE_TTFT_MS - 1, and E2E >= the
 * schedule less 1 ms per timer. */
static void pace_cb(uv_timer_t *t) {
    static const char chunk[] = "data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\n";
    static const char tail[] = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
                               "\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";
    struct fconn *c = t->data;
    uv_buf_t b = uv_buf_init((char *)chunk, sizeof chunk - 1);
    c->sent++;
    bool last = c->sent == PACE_TOKENS;
    uv_write(&c->pw[c->sent], (uv_stream_t *)&c->tcp, &b, 1, NULL);
    if (!last) {
        uv_timer_start(&c->pace, pace_cb, PACE_ITL_MS, 0);
        return;
    }
    uv_buf_t tb = uv_buf_init((char *)tail, sizeof tail - 1);
    c->pw[PACE_TOKENS + 1].data = c;
    uv_write(&c->pw[PACE_TOKENS + 1], (uv_stream_t *)&c->tcp, &tb, 1, pace_last_written);
}

static void falloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
    struct fconn *c = h->data;
    b->base = c->buf + c->len;
    b->len = sizeof c->buf - c->len - 1;
}

static void fread_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
    struct fconn *c = st->data;
    if (nread < 0) {
        fconn_close(c);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    const char *cl = strstr(c->buf, "Content-Length: ");
    if (c->answered || !end || !cl) return;
    size_t body = strtoul(cl + 16, NULL, 10);
    if (c->len < (size_t)(end + 4 - c->buf) + body) return; /* the whole request first */
    c->answered = true;
    if (c->s->mode == FAIL_HANG) return;
    if (c->s->mode == PACED) {
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   "Connection: close\r\n\r\n";
        uv_buf_t hb = uv_buf_init((char *)head, sizeof head - 1);
        uv_write(&c->pw[0], st, &hb, 1, NULL);
        uv_timer_init(&c->s->loop, &c->pace);
        c->pace.data = c;
        uv_update_time(&c->s->loop); /* the loop's clock is from before this read */
        uv_timer_start(&c->pace, pace_cb, PACE_TTFT_MS, 0);
        return;
    }
    int k = c->s->counter++ % 4;
    const char *resp = k == 0 ? RESP_500 : k == 2 ? RESP_GOOD : k == 3 ? RESP_ERROR_EVENT : NULL;
    if (!resp) { /* drop the connection without an answer */
        fconn_close(c);
        return;
    }
    uv_buf_t out = uv_buf_init((char *)resp, (unsigned)strlen(resp));
    c->w.data = c;
    uv_write(&c->w, st, &out, 1, fwrite_done);
}

static void fon_conn(uv_stream_t *l, int status) {
    struct fsrv *s = l->data;
    struct fconn *c = calloc(1, sizeof *c);
    c->s = s;
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, fconn_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, falloc, fread_cb);
}

static void fclose_any(uv_handle_t *h, void *arg) {
    if (uv_is_closing(h) || h->type == UV_TIMER) return; /* timers close with their connection */
    if (h->type == UV_TCP && h->data != arg)
        fconn_close(h->data);
    else
        uv_close(h, NULL); /* the listener (data = the server) and the async */
}

static void fstop_cb(uv_async_t *a) {
    struct fsrv *s = a->data;
    uv_walk(&s->loop, fclose_any, s); /* the listener's data is s: not freed */
}

static void fthread(void *arg) {
    struct fsrv *s = arg;
    uv_sem_post(&s->ready);
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

static void fsrv_start(struct fsrv *s, enum fail_mode mode) {
    memset(s, 0, sizeof *s);
    s->mode = mode;
    cr_assert_eq(uv_loop_init(&s->loop), 0);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&s->listener, 64, fon_conn), 0);
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    uv_async_init(&s->loop, &s->stop, fstop_cb);
    s->stop.data = s;
    uv_sem_init(&s->ready, 0);
    cr_assert_eq(uv_thread_create(&s->thread, fthread, s), 0);
    uv_sem_wait(&s->ready);
}

static void fsrv_stop(struct fsrv *s) {
    uv_async_send(&s->stop);
    uv_thread_join(&s->thread);
    cr_assert_eq(uv_loop_close(&s->loop), 0, "the test server's handles all closed");
    uv_sem_destroy(&s->ready);
}

Test(bench_serve_e2e, failures_counted_by_cause, .timeout = 120) {
    struct fsrv s;
    fsrv_start(&s, FAIL_MIXED);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", s.port);
    int rc;
    /* one at a time, so request k gets answer k mod 4 */
    const char *args[] = {
        "--url",        url, "--model", "m", "--concurrency", "1", "--num-prompts", "8",
        "--output-len", "3", NULL};
    json_t *j = run_bench(args, &rc);
    fsrv_stop(&s);
    cr_assert_eq(rc, 1);
    json_t *r = run0(j), *e = json_object_get(r, "errors");
    cr_assert_eq(jint(r, "sent"), 8);
    cr_assert_eq(jint(r, "completed"), 2);
    cr_assert_eq(jint(r, "failed"), 6);
    cr_assert_eq(json_object_size(e), 3, "500, EOF, stream_error");
    cr_assert_eq(jint(e, "500"), 2);
    cr_assert_eq(jint(e, "EOF"), 2);
    cr_assert_eq(jint(e, "stream_error"), 2);
    cr_assert_eq(jint(r, "connections_opened"), 8, "Connection: close: a connection each");
    /* the good streams: 3 text chunks, no usage -> 3 tokens counted from chunks */
    json_t *reqs = json_object_get(r, "requests");
    for (size_t i = 0; i < 8; i++) {
        json_t *q = json_array_get(reqs, i);
        const char *want = i % 4 == 0   ? "500"
                           : i % 4 == 1 ? "EOF"
                           : i % 4 == 3 ? "stream_error"
                                        : NULL;
        if (!want) {
            cr_assert(json_is_true(json_object_get(q, "ok")));
            cr_assert_eq(jint(q, "output_tokens"), 3);
            cr_assert(json_is_false(json_object_get(q, "output_tokens_from_usage")));
            cr_assert_eq(json_array_size(json_object_get(q, "itl_ms")), 2);
            /* synthetic prompt, no usage: the word count stands in */
            cr_assert_eq(jint(q, "prompt_tokens"), 128);
        } else {
            cr_assert_str_eq(json_string_value(json_object_get(q, "error")), want, "request %zu",
                             i);
        }
    }
    cr_assert_eq(jint(r, "total_output_tokens"), 6);
    cr_assert(json_is_false(json_object_get(r, "prompt_tokens_from_usage")));
    json_decref(j);
}

Test(bench_serve_e2e, timeouts_deadline_refused, .timeout = 120) {
    struct fsrv s;
    fsrv_start(&s, FAIL_HANG);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", s.port);
    int rc;
    /* --request-timeout: both requests in flight time out */
    const char *a1[] = {"--url",
                        url,
                        "--model",
                        "m",
                        "--concurrency",
                        "2",
                        "--num-prompts",
                        "2",
                        "--request-timeout",
                        "0.3",
                        NULL};
    json_t *j = run_bench(a1, &rc);
    cr_assert_eq(rc, 1);
    cr_assert_eq(jint(json_object_get(run0(j), "errors"), "timeout"), 2);
    cr_assert(json_is_false(json_object_get(run0(j), "deadline_hit")));
    json_decref(j);
    /* --max-duration: the two in flight are cancelled, the other two never sent */
    const char *a2[] = {
        "--url",          url,   "--model", "m", "--concurrency", "2", "--num-prompts", "4",
        "--max-duration", "0.3", NULL};
    j = run_bench(a2, &rc);
    fsrv_stop(&s);
    cr_assert_eq(rc, 1);
    json_t *r = run0(j);
    cr_assert(json_is_true(json_object_get(r, "deadline_hit")));
    cr_assert_eq(jint(r, "sent"), 2);
    cr_assert_eq(jint(r, "not_sent"), 2);
    cr_assert_eq(jint(json_object_get(r, "errors"), "cancelled"), 2);
    cr_assert(jreal(r, "duration_s") < 5, "bounded by the deadline");
    json_decref(j);
    /* nothing listening: refused, each request once */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", free_port());
    const char *a3[] = {"--url",         url, "--model", "m", "--concurrency", "3",
                        "--num-prompts", "5", NULL};
    j = run_bench(a3, &rc);
    cr_assert_eq(rc, 1);
    cr_assert_eq(jint(json_object_get(run0(j), "errors"), "ECONNREFUSED"), 5);
    json_decref(j);
}

/* Timing against a known clock: the server cannot send a token before its schedule, so every
 * measured TTFT and E2E is at least the schedule; the upper bounds leave room for a loaded
 * machine. */
Test(bench_serve_e2e, timing_against_a_paced_server, .timeout = 120) {
    struct fsrv s;
    fsrv_start(&s, PACED);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", s.port);
    int rc;
    const char *args[] = {
        "--url",        url, "--model", "m", "--concurrency", "2", "--num-prompts", "6",
        "--output-len", "5", NULL};
    json_t *j = run_bench(args, &rc);
    fsrv_stop(&s);
    cr_assert_eq(rc, 0);
    json_t *r = run0(j);
    cr_assert_eq(jint(r, "completed"), 6);
    const double e2e_min = PACE_TTFT_MS + (PACE_TOKENS - 1) * PACE_ITL_MS;
    size_t i;
    json_t *q;
    json_array_foreach(json_object_get(r, "requests"), i, q) {
        double ttft = jreal(q, "ttft_ms"), e2e = jreal(q, "e2e_ms");
        cr_assert(ttft >= PACE_TTFT_MS - 1 && ttft < 2 * PACE_TTFT_MS + 100, "ttft %g", ttft);
        cr_assert(e2e >= e2e_min - PACE_TOKENS && e2e < 2 * e2e_min + 100, "e2e %g", e2e);
        cr_assert(jreal(q, "ttfb_ms") < ttft);
        cr_assert_eq(jint(q, "output_tokens"), PACE_TOKENS);
        cr_assert_eq(jint(q, "prompt_tokens"), 3, "usage wins over the word estimate");
        json_t *itl = json_object_get(q, "itl_ms");
        cr_assert_eq(json_array_size(itl), PACE_TOKENS - 1);
        double sum = 0;
        for (size_t k = 0; k < json_array_size(itl); k++)
            sum += json_real_value(json_array_get(itl, k));
        /* the gaps add up to E2E - TTFT, less the usage and [DONE] events after the last text */
        cr_assert(sum <= e2e - ttft + 1e-3 && sum >= (PACE_TOKENS - 1) * PACE_ITL_MS - 50,
                  "itl sum %g", sum);
        cr_assert_float_eq(jreal(q, "tpot_ms"), (e2e - ttft) / (PACE_TOKENS - 1), 1e-4);
    }
    double med = jreal(json_object_get(r, "ttft_ms"), "median");
    cr_assert(med >= PACE_TTFT_MS - 1 && med < PACE_TTFT_MS * 1.5, "TTFT median %g ms", med);
    json_decref(j);
}

Test(bench_serve_cli, bad_options) {
    const char *cases[][8] = {
        {"serve", NULL},                                      /* no load given */
        {"serve", "--concurrency", "2", "--rate", "1", NULL}, /* both */
        {"serve", "--concurrency", "0", NULL},
        {"serve", "--concurrency", "1.5", NULL},
        {"serve", "--rate", "-1", NULL},
        {"serve", "--concurrency", "1", "--url", "https://x/", NULL},
        {"serve", "--concurrency", "1", "--input-len", "9:3", NULL},
        {"serve", "--concurrency", "1", "--bogus", "1", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int argc = 0;
        while (cases[i][argc]) argc++;
        cr_assert_eq(xd_bench_serve_main(argc, (char **)cases[i]), 2, "case %zu", i);
    }
}
