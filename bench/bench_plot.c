/* bench_plot.c - the pictures of a benchmark: latency CDFs (TTFT, TPOT, ITL, E2E) with one line
 * per load level, and for a sweep, throughput and latency against the level. Two outputs:
 * OUT.html, one self-contained file (inline SVG written here, no JavaScript, no external
 * fetches, opens anywhere), and OUT.png drawn by gnuplot (Debian's gnuplot-nox) from data files
 * in a temporary directory.
 *
 * Trade-off: the SVG is drawn by hand (axes, ticks, polylines) rather than through a plotting
 * library, which keeps the binary free of dependencies at the cost of plain-looking charts; CDFs
 * are cut to at most 400 points per line (every k-th sample of the sorted values plus the last)
 * so a million-token ITL distribution stays a small file. gnuplot runs as a child process with
 * a 60 s limit. Not here: interactive zoom, comparing two JSON reports (load them in a notebook).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_impl.h"
#include "xd_error.h"

#define CDF_POINTS 400
#define GNUPLOT_TIMEOUT_MS 60000

extern char **environ;

static const char *const COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_COLORS (sizeof COLORS / sizeof COLORS[0])

/* ---- the samples ---------------------------------------------------------------------------- */

enum metric { M_TTFT, M_TPOT, M_ITL, M_E2E, N_METRICS };
static const char *const METRIC_TITLE[N_METRICS] = {
    "Time to first token (CDF)", "Time per output token (CDF)", "Inter-token latency (CDF)",
    "End-to-end latency (CDF)"};
static const char *const METRIC_FILE[N_METRICS] = {"ttft", "tpot", "itl", "e2e"};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The completed requests' samples of metric m, sorted; *n set. NULL when empty or on OOM. */
static double *samples(const struct xd_bench_result *res, enum metric m, size_t *n) {
    size_t cap = 0, k = 0;
    for (size_t i = 0; i < res->n_sent; i++)
        if (res->rec[i].ok) cap += m == M_ITL ? res->rec[i].n_itl : 1;
    *n = 0;
    double *v = cap ? malloc(cap * sizeof *v) : NULL;
    if (!v) return NULL;
    for (size_t i = 0; i < res->n_sent; i++) {
        const struct xd_bench_record *x = &res->rec[i];
        if (!x->ok) continue;
        if (m == M_ITL) {
            memcpy(v + k, x->itl_ms, x->n_itl * sizeof *v);
            k += x->n_itl;
            continue;
        }
        double s = m == M_TTFT ? x->ttft_ms : m == M_TPOT ? x->tpot_ms : x->e2e_ms;
        if (isfinite(s)) v[k++] = s;
    }
    qsort(v, k, sizeof *v, cmp_double);
    *n = k;
    if (!k) {
        free(v);
        return NULL;
    }
    return v;
}

/* Index of the j-th of `pts` points cut from n sorted samples (the last is always kept). */
static size_t cdf_index(size_t j, size_t pts, size_t n) {
    return pts >= n ? j : (size_t)((double)j * (double)(n - 1) / (double)(pts - 1));
}

static void level_label(const struct xd_bench_config *cfg, double level, char *buf, size_t cap) {
    if (isinf(level))
        snprintf(buf, cap, "%s=inf", cfg->closed ? "c" : "rate");
    else
        snprintf(buf, cap, "%s=%g", cfg->closed ? "c" : "rate", level);
}

/* ---- SVG ------------------------------------------------------------------------------------ */

struct series {
    char name[48];
    double *x, *y;
    size_t n;
};

enum { W = 600, H = 340, ML = 64, MR = 110, MT = 36, MB = 50 }; /* legend in the right margin */

/* A tick step of 1, 2 or 5 times a power of ten giving about 5 ticks over span. */
static double nice_step(double span) {
    if (!(span > 0)) return 1;
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void svg_text(struct proto_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            proto_buf_puts(b, "&lt;");
        else if (*s == '>')
            proto_buf_puts(b, "&gt;");
        else if (*s == '&')
            proto_buf_puts(b, "&amp;");
        else if (*s == '"')
            proto_buf_puts(b, "&quot;");
        else
            proto_buf_append(b, s, 1);
    }
}

/* One chart: lines (markers when a series has few points), or steps for a CDF. */
static void svg_chart(struct proto_buf *b, const char *title, const char *xlabel,
                      const char *ylabel, const struct series *s, size_t ns, bool log_x,
                      bool steps) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t i = 0; i < ns; i++)
        for (size_t j = 0; j < s[i].n; j++) {
            double x = log_x ? log10(s[i].x[j]) : s[i].x[j];
            if (!isfinite(x) || !isfinite(s[i].y[j])) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, s[i].y[j]), y1 = fmax(y1, s[i].y[j]);
        }
    proto_buf_printf(b,
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                     "font-family=\"sans-serif\" font-size=\"11\">\n",
                     W, H);
    proto_buf_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    proto_buf_printf(b, "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">", W / 2);
    svg_text(b, title);
    proto_buf_puts(b, "</text>\n");
    if (!(x1 >= x0)) {
        proto_buf_printf(b,
                         "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">no data</text>\n"
                         "</svg>\n",
                         W / 2, H / 2);
        return;
    }
    if (!log_x && x0 > 0) x0 = 0;
    if (y0 > 0) y0 = 0;
    if (x1 - x0 < 1e-9) x1 = x0 + 1;
    if (y1 - y0 < 1e-9) y1 = y0 + 1;
    double pw = W - ML - MR, ph = H - MT - MB;
#define PX(x) (ML + ((x)-x0) / (x1 - x0) * pw)
#define PY(y) (MT + ph - ((y)-y0) / (y1 - y0) * ph)
    proto_buf_printf(b,
                     "<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" fill=\"none\" "
                     "stroke=\"#888\"/>\n",
                     ML, MT, pw, ph);
    /* ticks: 1-2-5 steps; on a log axis (a sweep), at the first series' x values */
    double xs = nice_step(x1 - x0), ys = nice_step(y1 - y0);
    size_t n_xt = log_x ? s[0].n : (size_t)((x1 - x0) / xs + 1.5);
    double xt0 = ceil(x0 / xs) * xs;
    for (size_t j = 0; j < n_xt && j < 64; j++) {
        double t = log_x ? log10(s[0].x[j]) : xt0 + (double)j * xs;
        if (!log_x && t > x1 + xs * 1e-9) break;
        double px = PX(t);
        proto_buf_printf(b,
                         "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%g\" stroke=\"#eee\"/>"
                         "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%g</text>\n",
                         px, MT, px, MT + ph, px, MT + ph + 14, log_x ? s[0].x[j] : t);
    }
    for (int j = 0; j < 64; j++) {
        double t = ceil(y0 / ys) * ys + j * ys;
        if (t > y1 + ys * 1e-9) break;
        double py = PY(t);
        proto_buf_printf(b,
                         "<line x1=\"%d\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#eee\"/>"
                         "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                         ML, py, ML + pw, py, ML - 4, py + 4, t);
    }
    proto_buf_printf(b, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">", ML + pw / 2, H - 12);
    svg_text(b, xlabel);
    proto_buf_printf(b,
                     "</text>\n<text transform=\"translate(16,%g) rotate(-90)\" "
                     "text-anchor=\"middle\">",
                     MT + ph / 2);
    svg_text(b, ylabel);
    proto_buf_puts(b, "</text>\n");
    for (size_t i = 0; i < ns; i++) {
        const char *c = COLORS[i % N_COLORS];
        proto_buf_printf(b,
                         "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" "
                         "points=\"",
                         c);
        double prev_y = y0;
        for (size_t j = 0; j < s[i].n; j++) {
            double x = log_x ? log10(s[i].x[j]) : s[i].x[j];
            if (!isfinite(x) || !isfinite(s[i].y[j])) continue;
            if (steps) proto_buf_printf(b, "%.1f,%.1f ", PX(x), PY(prev_y));
            proto_buf_printf(b, "%.1f,%.1f ", PX(x), PY(s[i].y[j]));
            prev_y = s[i].y[j];
        }
        proto_buf_puts(b, "\"/>\n");
        if (!steps && s[i].n <= 16) /* a sweep's few points get markers */
            for (size_t j = 0; j < s[i].n; j++) {
                double x = log_x ? log10(s[i].x[j]) : s[i].x[j];
                if (isfinite(x) && isfinite(s[i].y[j]))
                    proto_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>",
                                     PX(x), PY(s[i].y[j]), c);
            }
        /* legend, top left inside the plot */
        double ly = MT + 10 + 16 * (double)i;
        proto_buf_printf(b,
                         "<rect x=\"%d\" y=\"%.1f\" width=\"14\" height=\"3\" fill=\"%s\"/>"
                         "<text x=\"%d\" y=\"%.1f\">",
                         W - MR + 8, ly - 4, c, W - MR + 26, ly);
        svg_text(b, s[i].name);
        proto_buf_puts(b, "</text>\n");
    }
#undef PX
#undef PY
    proto_buf_puts(b, "</svg>\n");
}

static void series_free(struct series *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(s[i].x);
        free(s[i].y);
    }
}

/* The CDF of metric m at every level, as series (x = ms, y = fraction). */
static int cdf_series(const struct xd_bench_config *cfg, const struct xd_bench_result *res,
                      size_t n, enum metric m, struct series *s) {
    for (size_t i = 0; i < n; i++) {
        memset(&s[i], 0, sizeof s[i]);
        level_label(cfg, res[i].level, s[i].name, sizeof s[i].name);
        size_t k;
        double *v = samples(&res[i], m, &k);
        if (!v) continue;
        size_t pts = k < CDF_POINTS ? k : CDF_POINTS;
        s[i].x = malloc(pts * sizeof(double));
        s[i].y = malloc(pts * sizeof(double));
        if (!s[i].x || !s[i].y) {
            free(v);
            series_free(s, i + 1);
            return XD_E_NOMEM;
        }
        for (size_t j = 0; j < pts; j++) {
            size_t idx = cdf_index(j, pts, k);
            s[i].x[j] = v[idx];
            s[i].y[j] = (double)(idx + 1) / (double)k;
        }
        s[i].n = pts;
        free(v);
    }
    return 0;
}

/* A sweep chart: up to four lines against the level, each a field of the report. */
struct sweep_line {
    const char *name;
    double (*get)(const struct xd_bench_report *r);
};
static double g_out_tps(const struct xd_bench_report *r) { return r->output_throughput; }
static double g_in_tps(const struct xd_bench_report *r) { return r->input_throughput; }
static double g_rps(const struct xd_bench_report *r) { return r->request_throughput; }
static double g_goodput(const struct xd_bench_report *r) { return r->goodput; }
static double g_ttft50(const struct xd_bench_report *r) { return r->ttft.median; }
static double g_ttft99(const struct xd_bench_report *r) { return r->ttft.p99; }
static double g_e2e50(const struct xd_bench_report *r) { return r->e2e.median; }
static double g_e2e99(const struct xd_bench_report *r) { return r->e2e.p99; }
static double g_tpot50(const struct xd_bench_report *r) { return r->tpot.median; }
static double g_tpot99(const struct xd_bench_report *r) { return r->tpot.p99; }
static double g_itl50(const struct xd_bench_report *r) { return r->itl.median; }
static double g_itl99(const struct xd_bench_report *r) { return r->itl.p99; }

#define N_SWEEP_CHARTS 4
static const struct {
    const char *title, *ylabel;
    struct sweep_line lines[4];
} SWEEP[N_SWEEP_CHARTS] = {
    {"Token throughput", "tokens/s", {{"output", g_out_tps}, {"input", g_in_tps}}},
    {"Request throughput", "requests/s", {{"completed", g_rps}, {"goodput", g_goodput}}},
    {"TTFT and E2E",
     "ms",
     {{"TTFT p50", g_ttft50}, {"TTFT p99", g_ttft99}, {"E2E p50", g_e2e50}, {"E2E p99", g_e2e99}}},
    {"TPOT and ITL",
     "ms",
     {{"TPOT p50", g_tpot50}, {"TPOT p99", g_tpot99}, {"ITL p50", g_itl50}, {"ITL p99", g_itl99}}},
};

/* The lines of sweep chart `chart` (a line with no finite value, goodput without an SLO, is
 * left out). */
static int sweep_series(const struct xd_bench_result *res, const struct xd_bench_report *r,
                        size_t n, int chart, struct series *s, size_t *ns) {
    *ns = 0;
    for (size_t k = 0; k < 4 && SWEEP[chart].lines[k].name; k++) {
        bool any = false;
        for (size_t i = 0; i < n; i++) any |= isfinite(SWEEP[chart].lines[k].get(&r[i])) != 0;
        if (!any) continue;
        struct series *q = &s[(*ns)++];
        memset(q, 0, sizeof *q);
        snprintf(q->name, sizeof q->name, "%s", SWEEP[chart].lines[k].name);
        q->x = malloc(n * sizeof(double));
        q->y = malloc(n * sizeof(double));
        if (!q->x || !q->y) {
            series_free(s, *ns);
            return XD_E_NOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            q->x[i] = res[i].level;
            q->y[i] = SWEEP[chart].lines[k].get(&r[i]);
        }
        q->n = n;
    }
    return 0;
}

static bool sweep_log_x(const struct xd_bench_result *res, size_t n) {
    double lo = INFINITY, hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(res[i].level > 0) || isinf(res[i].level)) return false;
        lo = fmin(lo, res[i].level), hi = fmax(hi, res[i].level);
    }
    return hi / lo >= 10;
}

static int write_file(const char *path, const void *p, size_t n, char *msg, size_t cap) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        int e = errno;
        snprintf(msg, cap, "%s: %s", path, strerror(e));
        return -e;
    }
    size_t w = fwrite(p, 1, n, f);
    int bad = fclose(f) != 0 || w != n;
    if (bad) {
        snprintf(msg, cap, "%s: write failed", path);
        return XD_E_IO;
    }
    return 0;
}

static int plot_html(const char *path, const struct xd_bench_config *cfg,
                     const struct xd_bench_result *res, const struct xd_bench_report *r, size_t n,
                     char *msg, size_t cap) {
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_puts(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                       "<title>expertd bench serve</title>\n<style>body{font-family:sans-serif;"
                       "margin:16px}svg{margin:6px;border:1px solid #ddd}table{border-collapse:"
                       "collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
                       "</style></head><body>\n<h2>expertd bench serve: ");
    svg_text(&b, cfg->url);
    proto_buf_printf(&b, "</h2>\n<p>%s, %zu prompts per level, seed %llu</p>\n",
                     cfg->closed ? "closed loop" : "open loop", cfg->num_prompts,
                     (unsigned long long)cfg->seed);
    proto_buf_printf(&b,
                     "<table><tr><th>%s</th><th>ok</th><th>failed</th><th>req/s</th>"
                     "<th>out tok/s</th><th>TTFT p50</th><th>TTFT p99</th><th>TPOT p50</th>"
                     "<th>ITL p50</th><th>E2E p50</th><th>E2E p99</th></tr>\n",
                     cfg->closed ? "concurrency" : "rate");
    for (size_t i = 0; i < n; i++)
        proto_buf_printf(&b,
                         "<tr><td>%g</td><td>%zu</td><td>%zu</td><td>%.2f</td><td>%.1f</td>"
                         "<td>%.1f</td><td>%.1f</td><td>%.2f</td><td>%.2f</td><td>%.1f</td>"
                         "<td>%.1f</td></tr>\n",
                         res[i].level, r[i].completed, r[i].failed + r[i].not_sent,
                         r[i].request_throughput, r[i].output_throughput, r[i].ttft.median,
                         r[i].ttft.p99, r[i].tpot.median, r[i].itl.median, r[i].e2e.median,
                         r[i].e2e.p99);
    proto_buf_puts(&b, "</table><p>latencies in ms</p>\n<div>\n");
    struct series *s = calloc(n > 4 ? n : 4, sizeof *s);
    int rc = s ? 0 : XD_E_NOMEM;
    for (int m = 0; !rc && m < N_METRICS; m++) {
        rc = cdf_series(cfg, res, n, (enum metric)m, s);
        if (rc) break;
        svg_chart(&b, METRIC_TITLE[m], "ms", "fraction of samples", s, n, false, true);
        series_free(s, n);
    }
    for (int chart = 0; !rc && n > 1 && chart < N_SWEEP_CHARTS; chart++) {
        size_t ns;
        rc = sweep_series(res, r, n, chart, s, &ns);
        if (rc) break;
        svg_chart(&b, SWEEP[chart].title, cfg->closed ? "concurrency" : "rate (req/s)",
                  SWEEP[chart].ylabel, s, ns, sweep_log_x(res, n), false);
        series_free(s, ns);
    }
    free(s);
    proto_buf_puts(&b, "</div></body></html>\n");
    if (!rc && b.oom) rc = XD_E_NOMEM;
    if (rc)
        snprintf(msg, cap, "out of memory drawing the plots");
    else
        rc = write_file(path, b.data, b.len, msg, cap);
    proto_buf_free(&b);
    return rc;
}

/* ---- gnuplot -------------------------------------------------------------------------------- */

/* Runs `gnuplot script`, waiting at most GNUPLOT_TIMEOUT_MS. */
static int run_gnuplot(const char *script, char *msg, size_t cap) {
    char *argv[] = {"gnuplot", (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
    if (rc) {
        snprintf(msg, cap,
                 "cannot run gnuplot (%s): apt-get install gnuplot-nox, or use "
                 "--plot OUT.html",
                 strerror(rc));
        return -rc;
    }
    int status = 0;
    for (int waited = 0; waited <= GNUPLOT_TIMEOUT_MS; waited += 10) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
            snprintf(msg, cap, "gnuplot failed (status %d)", status);
            return XD_E_IO;
        }
        if (w < 0) {
            snprintf(msg, cap, "waitpid: %s", strerror(errno));
            return XD_E_IO;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL); /* our own child, by its id */
    waitpid(pid, &status, 0);
    snprintf(msg, cap, "gnuplot took longer than %d s", GNUPLOT_TIMEOUT_MS / 1000);
    return -ETIMEDOUT;
}

static int plot_png(const char *path, const struct xd_bench_config *cfg,
                    const struct xd_bench_result *res, const struct xd_bench_report *r, size_t n,
                    char *msg, size_t cap) {
    char dir[] = "/tmp/xdbench-plot-XXXXXX";
    if (!mkdtemp(dir)) {
        snprintf(msg, cap, "mkdtemp: %s", strerror(errno));
        return XD_E_IO;
    }
    struct proto_buf sc;
    proto_buf_init(&sc);
    bool sweep = n > 1;
    proto_buf_printf(&sc,
                     "set terminal pngcairo size %d,900 font ',10'\n"
                     "set output '%s/plot.png'\nset grid\nset key bottom right\n"
                     "set multiplot layout 2,%d title 'expertd bench serve (%s, %zu "
                     "prompts per level)'\n",
                     sweep ? 2000 : 1100, dir, sweep ? 4 : 2,
                     cfg->closed ? "closed loop" : "open loop", cfg->num_prompts);
    struct series *s = calloc(n > 4 ? n : 4, sizeof *s);
    int rc = s ? 0 : XD_E_NOMEM;
    char fn[512];
    for (int m = 0; !rc && m < N_METRICS; m++) {
        rc = cdf_series(cfg, res, n, (enum metric)m, s);
        if (rc) break;
        proto_buf_printf(&sc,
                         "set title '%s'\nset xlabel 'ms'\nset ylabel 'fraction'\n"
                         "set yrange [0:1]\nplot ",
                         METRIC_TITLE[m]);
        bool any = false;
        for (size_t i = 0; i < n && !rc; i++) {
            if (!s[i].n) continue;
            struct proto_buf d;
            proto_buf_init(&d);
            for (size_t j = 0; j < s[i].n; j++)
                proto_buf_printf(&d, "%.6g %.6g\n", s[i].x[j], s[i].y[j]);
            snprintf(fn, sizeof fn, "%s/%s_%zu.dat", dir, METRIC_FILE[m], i);
            rc = d.oom ? XD_E_NOMEM : write_file(fn, d.data, d.len, msg, cap);
            proto_buf_free(&d);
            proto_buf_printf(&sc, "%s'%s' with steps lw 2 title '%s'", any ? ", " : "", fn,
                             s[i].name);
            any = true;
        }
        if (!any) proto_buf_puts(&sc, "NaN title 'no data'");
        proto_buf_puts(&sc, "\nset yrange [*:*]\n");
        series_free(s, n);
    }
    if (!rc && sweep) { /* sweep.dat: the level, then every line of every sweep chart */
        struct proto_buf d;
        proto_buf_init(&d);
        for (size_t i = 0; i < n; i++) {
            proto_buf_printf(&d, "%g", res[i].level);
            for (int c = 0; c < N_SWEEP_CHARTS; c++)
                for (int k = 0; k < 4 && SWEEP[c].lines[k].name; k++) {
                    double v = SWEEP[c].lines[k].get(&r[i]);
                    if (isfinite(v))
                        proto_buf_printf(&d, " %g", v);
                    else
                        proto_buf_puts(&d, " NaN");
                }
            proto_buf_puts(&d, "\n");
        }
        snprintf(fn, sizeof fn, "%s/sweep.dat", dir);
        rc = d.oom ? XD_E_NOMEM : write_file(fn, d.data, d.len, msg, cap);
        proto_buf_free(&d);
        proto_buf_printf(&sc, "set xlabel '%s'\nset yrange [0:*]\nset key top left\n",
                         cfg->closed ? "concurrency" : "rate (req/s)");
        if (sweep_log_x(res, n)) proto_buf_puts(&sc, "set logscale x 2\n");
        int col = 2;
        for (int c = 0; c < N_SWEEP_CHARTS; c++) {
            proto_buf_printf(&sc, "set title '%s'\nset ylabel '%s'\nplot ", SWEEP[c].title,
                             SWEEP[c].ylabel);
            bool first = true;
            for (int k = 0; k < 4 && SWEEP[c].lines[k].name; k++, col++) {
                bool any = false; /* goodput without an SLO has no values: leave it out */
                for (size_t i = 0; i < n; i++) any |= isfinite(SWEEP[c].lines[k].get(&r[i])) != 0;
                if (!any) continue;
                proto_buf_printf(&sc, "%s'%s' using 1:%d with linespoints lw 2 title '%s'",
                                 first ? "" : ", ", fn, col, SWEEP[c].lines[k].name);
                first = false;
            }
            if (first) proto_buf_puts(&sc, "NaN title 'no data'");
            proto_buf_puts(&sc, "\n");
        }
    }
    free(s);
    proto_buf_puts(&sc, "unset multiplot\n");
    char script[512];
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    if (!rc) rc = sc.oom ? XD_E_NOMEM : write_file(script, sc.data, sc.len, msg, cap);
    proto_buf_free(&sc);
    if (!rc) rc = run_gnuplot(script, msg, cap);
    char png[512];
    snprintf(png, sizeof png, "%s/plot.png", dir);
    if (!rc) { /* copy, not rename: the output may be on another file system */
        FILE *in = fopen(png, "rb");
        struct proto_buf img;
        proto_buf_init(&img);
        char chunk[65536];
        size_t got;
        while (in && (got = fread(chunk, 1, sizeof chunk, in)) > 0)
            proto_buf_append(&img, chunk, got);
        if (in) fclose(in);
        if (!in || img.oom || !img.len) {
            snprintf(msg, cap, "gnuplot wrote no image");
            rc = XD_E_IO;
        } else {
            rc = write_file(path, img.data, img.len, msg, cap);
        }
        proto_buf_free(&img);
    }
    if (rc == XD_E_NOMEM) snprintf(msg, cap, "out of memory drawing the plots");
    /* remove what we wrote: the known names only */
    for (int m = 0; m < N_METRICS; m++)
        for (size_t i = 0; i < n; i++) {
            snprintf(fn, sizeof fn, "%s/%s_%zu.dat", dir, METRIC_FILE[m], i);
            unlink(fn);
        }
    snprintf(fn, sizeof fn, "%s/sweep.dat", dir);
    unlink(fn);
    unlink(script);
    unlink(png);
    rmdir(dir);
    return rc;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

int xd_bench_plot(const char *path, const struct xd_bench_config *cfg,
                  const struct xd_bench_result *res, const struct xd_bench_report *r, size_t n,
                  char *msg, size_t msg_cap) {
    if (ends_with(path, ".html") || ends_with(path, ".htm"))
        return plot_html(path, cfg, res, r, n, msg, msg_cap);
    if (ends_with(path, ".png")) return plot_png(path, cfg, res, r, n, msg, msg_cap);
    snprintf(msg, msg_cap, "%s: --plot wants a .html or .png file name", path);
    return XD_E_INVALID;
}
