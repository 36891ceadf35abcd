/* bench_serve.c - `expertd bench serve`: options, the target, the model name, then one run per
 * load level (bench_run.c), the tables and JSON (bench_report.c) and the plots (bench_plot.c).
 *
 * A sweep (`--concurrency 1,4,16,64` or `--rate 1,2,4`) replays the same prepared requests at
 * every level, so levels differ only in load. The tool talks to exactly one address: the one
 * --url names (default loopback), resolved once; it follows no redirects and reads no
 * address from a response.
 *
 * Trade-off: the levels run one after another in one process with a fresh event loop each,
 * rather than in parallel or with warm-up requests between them: a level starts against a
 * server that just finished the previous one (warm caches, possibly still draining cancelled
 * work), which is what a user stepping load up sees. Not here: a warm-up phase (run a short
 * level first and drop it), multi-URL or chat-completion targets.
 */
#include "bench_serve.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_impl.h"
#include "xd_error.h"

#define DEFAULT_URL "http://127.0.0.1:8080/v1/completions"

static void usage(FILE *f) {
    fprintf(f,
            "usage: expertd bench serve (--concurrency C[,C...] | --rate R[,R...]) [options]\n"
            "\n"
            "Load-tests an OpenAI-compatible /v1/completions server over HTTP, streaming every\n"
            "response: TTFT, TPOT, ITL, end-to-end latency, throughputs, goodput, errors.\n"
            "\n"
            "target:\n"
            "  --url URL              http://HOST[:PORT][/PATH] [" DEFAULT_URL "];\n"
            "                         a URL without a path gets /v1/completions\n"
            "  --model NAME           \"model\" of the requests [the first of GET /v1/models]\n"
            "  --api-key KEY          send 'Authorization: Bearer KEY' [$EXPERTD_API_KEY]\n"
            "load (one of):\n"
            "  --concurrency C,...    closed loop: C requests in flight; a list sweeps\n"
            "  --rate R,...           open loop: R requests/s (inf: all at once); a list sweeps\n"
            "  --burstiness B         gamma shape of the arrival gaps: 1 Poisson, <1 burstier [1]\n"
            "requests:\n"
            "  --num-prompts N        requests per level [100]\n"
            "  --input-len A[:B]      synthetic prompts of A..B words (~tokens) [128]\n"
            "  --output-len A[:B]     max_tokens A..B, with ignore_eos [128]\n"
            "  --prompts FILE         prompts from FILE (JSON list of strings, or JSON lines of\n"
            "                         strings or {\"prompt\": ...}), cycled in order\n"
            "  --seed S               lengths, words and arrivals [0]\n"
            "  --temperature T        [0]\n"
            "  --no-ignore-eos        let the model stop early (outputs may be shorter)\n"
            "  --dump-requests FILE   write the request bodies as JSON lines (to replay them)\n"
            "goodput (completed requests meeting every SLO given, per second):\n"
            "  --slo-ttft MS  --slo-tpot MS  --slo-e2e MS\n"
            "output:\n"
            "  --json OUT             the report with every request's timings\n"
            "  --plot OUT.png|.html   latency CDFs (and throughput/latency against the level)\n"
            "  --no-progress          no progress bar (it is drawn only when stderr is a TTY)\n"
            "  --quiet                no tables on stdout\n"
            "bounds:\n"
            "  --request-timeout S    one request, send to last byte [600]\n"
            "  --max-duration S       one level; requests still in flight are cancelled [3600]\n"
            "\n"
            "Exit status: 0 every request completed, 1 some failed or the run could not start,\n"
            "2 bad options.\n");
}

static bool parse_num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "expertd bench serve: %s expects a number in [%g, %g], got '%s'\n", flag,
                lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* "A" or "A:B" with 0 <= A <= B <= hi. */
static bool parse_range(const char *flag, const char *s, int32_t lo_min, int32_t hi, int32_t *a,
                        int32_t *b) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *colon = strchr(buf, ':');
    if (colon) *colon = 0;
    double x, y;
    if (!parse_num(flag, buf, lo_min, hi, &x)) return false;
    y = x;
    if (colon && !parse_num(flag, colon + 1, lo_min, hi, &y)) return false;
    if (x != floor(x) || y != floor(y) || y < x) {
        fprintf(stderr, "expertd bench serve: %s expects integers A[:B] with A <= B, got '%s'\n",
                flag, s);
        return false;
    }
    *a = (int32_t)x;
    *b = (int32_t)y;
    return true;
}

/* "1,4,16" into cfg->levels. Concurrencies are integers >= 1; rates > 0 or "inf". */
static bool parse_levels(const char *flag, const char *s, bool closed,
                         struct xd_bench_config *cfg) {
    char buf[1024];
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "expertd bench serve: %s: list too long\n", flag);
        return false;
    }
    snprintf(buf, sizeof buf, "%s", s);
    cfg->n_levels = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (cfg->n_levels == XD_BENCH_MAX_LEVELS) {
            fprintf(stderr, "expertd bench serve: %s: at most %d levels\n", flag,
                    XD_BENCH_MAX_LEVELS);
            return false;
        }
        double v;
        if (!closed && !strcmp(t, "inf"))
            v = INFINITY;
        else if (!parse_num(flag, t, closed ? 1 : 1e-6, closed ? 100000 : 1e6, &v))
            return false;
        if (closed && v != floor(v)) {
            fprintf(stderr, "expertd bench serve: %s expects whole numbers, got '%s'\n", flag, t);
            return false;
        }
        cfg->levels[cfg->n_levels++] = v;
    }
    if (!cfg->n_levels) {
        fprintf(stderr, "expertd bench serve: %s needs a value\n", flag);
        return false;
    }
    return true;
}

/* Options into cfg: 0, or 2 (message printed), or -1 for --help. */
static int parse_args(int argc, char **argv, struct xd_bench_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->url = DEFAULT_URL;
    cfg->api_key = getenv("EXPERTD_API_KEY");
    cfg->burstiness = 1;
    cfg->num_prompts = 100;
    cfg->in_lo = cfg->in_hi = 128;
    cfg->out_lo = cfg->out_hi = 128;
    cfg->ignore_eos = true;
    cfg->request_timeout_s = 600;
    cfg->max_duration_s = 3600;
    bool no_progress = false, have_rate = false, have_conc = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        double v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return -1;
        if (!strcmp(a, "--no-progress")) {
            no_progress = true;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            cfg->quiet = true;
            continue;
        }
        if (!strcmp(a, "--no-ignore-eos")) {
            cfg->ignore_eos = false;
            continue;
        }
        if (i + 1 >= argc || strncmp(a, "--", 2)) {
            fprintf(stderr, "expertd bench serve: unknown option or missing value: %s\n", a);
            return 2;
        }
        const char *val = argv[++i];
        if (!strcmp(a, "--url"))
            cfg->url = val;
        else if (!strcmp(a, "--model"))
            cfg->model = val;
        else if (!strcmp(a, "--api-key"))
            cfg->api_key = val;
        else if (!strcmp(a, "--prompts"))
            cfg->prompts_file = val;
        else if (!strcmp(a, "--json"))
            cfg->json_out = val;
        else if (!strcmp(a, "--plot"))
            cfg->plot_out = val;
        else if (!strcmp(a, "--dump-requests"))
            cfg->dump_requests = val;
        else if (!strcmp(a, "--concurrency")) {
            if (!parse_levels(a, val, true, cfg)) return 2;
            have_conc = true;
        } else if (!strcmp(a, "--rate")) {
            if (!parse_levels(a, val, false, cfg)) return 2;
            have_rate = true;
        } else if (!strcmp(a, "--burstiness")) {
            if (!parse_num(a, val, 1e-3, 1e3, &cfg->burstiness)) return 2;
        } else if (!strcmp(a, "--num-prompts")) {
            if (!parse_num(a, val, 1, XD_BENCH_MAX_PROMPTS, &v) || v != floor(v)) return 2;
            cfg->num_prompts = (size_t)v;
        } else if (!strcmp(a, "--input-len")) {
            if (!parse_range(a, val, 0, 1 << 20, &cfg->in_lo, &cfg->in_hi)) return 2;
        } else if (!strcmp(a, "--output-len")) {
            if (!parse_range(a, val, 1, 1 << 20, &cfg->out_lo, &cfg->out_hi)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!parse_num(a, val, 0, 9007199254740992.0, &v) || v != floor(v)) return 2;
            cfg->seed = (uint64_t)v;
        } else if (!strcmp(a, "--temperature")) {
            if (!parse_num(a, val, 0, 2, &cfg->temperature)) return 2;
        } else if (!strcmp(a, "--slo-ttft")) {
            if (!parse_num(a, val, 1e-3, 1e9, &cfg->slo_ttft_ms)) return 2;
        } else if (!strcmp(a, "--slo-tpot")) {
            if (!parse_num(a, val, 1e-3, 1e9, &cfg->slo_tpot_ms)) return 2;
        } else if (!strcmp(a, "--slo-e2e")) {
            if (!parse_num(a, val, 1e-3, 1e9, &cfg->slo_e2e_ms)) return 2;
        } else if (!strcmp(a, "--request-timeout")) {
            if (!parse_num(a, val, 1e-3, 86400, &cfg->request_timeout_s)) return 2;
        } else if (!strcmp(a, "--max-duration")) {
            if (!parse_num(a, val, 1e-3, 7 * 86400, &cfg->max_duration_s)) return 2;
        } else {
            fprintf(stderr, "expertd bench serve: unknown option: %s\n", a);
            return 2;
        }
    }
    if (have_rate == have_conc) {
        fprintf(stderr, "expertd bench serve: give one of --concurrency C or --rate R\n");
        return 2;
    }
    cfg->closed = have_conc;
    if (cfg->api_key && strpbrk(cfg->api_key, "\r\n")) {
        fprintf(stderr, "expertd bench serve: --api-key must be one line\n");
        return 2;
    }
    int rc = xd_http_url_parse(cfg->url, &cfg->u);
    if (rc) {
        fprintf(stderr, "expertd bench serve: --url %s: %s\n", cfg->url,
                rc == XD_E_UNSUPPORTED ? "only http:// is supported"
                                       : "expected http://HOST[:PORT][/PATH]");
        return 2;
    }
    if (!cfg->u.path[0] || !strcmp(cfg->u.path, "/"))
        snprintf(cfg->u.path, sizeof cfg->u.path, "/v1/completions");
    cfg->progress = !no_progress && isatty(STDERR_FILENO);
    return 0;
}

/* The one address the benchmark talks to. */
static int resolve(const struct xd_http_url *u, struct sockaddr_storage *out) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(u->host, u->port, &hints, &ai);
    if (rc || !ai) {
        fprintf(stderr, "expertd bench serve: cannot resolve %s: %s\n", u->host,
                rc ? gai_strerror(rc) : "no address");
        return XD_E_INVALID;
    }
    memset(out, 0, sizeof *out);
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
}

/* GET <prefix>/v1/models and take data[0].id; owned string or NULL (message printed). */
static char *discover_model(const struct xd_bench_config *cfg, const struct sockaddr *addr) {
    char path[2100];
    const char *v1 = strstr(cfg->u.path, "/v1/");
    int prefix = v1 ? (int)(v1 - cfg->u.path) : 0;
    snprintf(path, sizeof path, "%.*s/v1/models", prefix, cfg->u.path);
    struct proto_buf body;
    proto_buf_init(&body);
    int st = xd_bench_http_get(addr, &cfg->u, path, cfg->api_key, 30, &body);
    char *id = NULL;
    if (st == 200 && body.len) {
        json_t *j = json_loadb(body.data, body.len, 0, NULL);
        json_t *m = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
        if (json_is_string(m)) id = strdup(json_string_value(m));
        json_decref(j);
    }
    if (!id) {
        if (st < 0)
            fprintf(stderr, "expertd bench serve: GET %s on %s: %s; is the server up?\n", path,
                    cfg->u.host_header, st <= XD_E__BASE ? xd_strerror(st) : uv_strerror(st));
        else
            fprintf(stderr,
                    "expertd bench serve: GET %s gave HTTP %d without a model id; "
                    "give --model\n",
                    path, st);
    }
    proto_buf_free(&body);
    return id;
}

static int dump_requests(const char *path, const struct xd_bench_prompt *p, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "expertd bench serve: %s: %s\n", path, strerror(errno));
        return XD_E_IO;
    }
    for (size_t i = 0; i < n; i++) {
        fwrite(p[i].body, 1, p[i].body_len, f);
        fputc('\n', f);
    }
    if (fclose(f)) {
        fprintf(stderr, "expertd bench serve: %s: write failed\n", path);
        return XD_E_IO;
    }
    return 0;
}

int xd_bench_serve_main(int argc, char **argv) {
    struct xd_bench_config cfg;
    int rc = parse_args(argc, argv, &cfg);
    if (rc == -1) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    struct sockaddr_storage addr;
    if (resolve(&cfg.u, &addr)) return 1;
    char *model = cfg.model ? strdup(cfg.model) : discover_model(&cfg, (struct sockaddr *)&addr);
    if (!model) return 1;
    char msg[512] = "";
    struct xd_bench_prompt *prompts = NULL;
    if ((rc = xd_bench_prompts_build(&cfg, model, &prompts, msg, sizeof msg))) {
        fprintf(stderr, "expertd bench serve: %s\n", msg);
        free(model);
        return 1;
    }
    if (cfg.dump_requests && dump_requests(cfg.dump_requests, prompts, cfg.num_prompts)) {
        xd_bench_prompts_free(prompts, cfg.num_prompts);
        free(model);
        return 1;
    }
    struct xd_bench_result res[XD_BENCH_MAX_LEVELS];
    struct xd_bench_report rep[XD_BENCH_MAX_LEVELS];
    size_t n_run = 0;
    int status = 0;
    if (!cfg.quiet)
        printf("target %s (model %s), %s, %zu requests per level\n", cfg.url, model,
               cfg.closed ? "closed loop" : "open loop", cfg.num_prompts);
    for (size_t i = 0; i < cfg.n_levels; i++) {
        rc =
            xd_bench_run_level(&cfg, (struct sockaddr *)&addr, prompts, cfg.levels[i], &res[n_run]);
        if (rc) {
            fprintf(stderr, "expertd bench serve: level %g could not run: %s\n", cfg.levels[i],
                    rc <= XD_E__BASE ? xd_strerror(rc) : uv_strerror(rc));
            status = 1;
            break;
        }
        if (xd_bench_report_make(&cfg, &res[n_run], &rep[n_run])) {
            fprintf(stderr, "expertd bench serve: out of memory\n");
            xd_bench_result_free(&res[n_run]);
            status = 1;
            break;
        }
        const struct xd_bench_report *r = &rep[n_run];
        if (r->failed || r->not_sent) status = 1;
        if (!cfg.quiet && cfg.n_levels == 1)
            xd_bench_report_print(stdout, &cfg, &res[0], r);
        else if (!cfg.quiet)
            printf("level %g: %zu ok, %zu failed, %.2f req/s, %.1f output tok/s\n", cfg.levels[i],
                   r->completed, r->failed + r->not_sent, r->request_throughput,
                   r->output_throughput);
        if (r->failed && res[n_run].first_error[0])
            fprintf(stderr, "expertd bench serve: level %g: first failure: %s\n", cfg.levels[i],
                    res[n_run].first_error);
        fflush(stdout);
        n_run++;
    }
    if (!cfg.quiet && n_run > 1) {
        printf("\n");
        xd_bench_report_table(stdout, &cfg, res, rep, n_run);
    }
    if (cfg.json_out && n_run) {
        json_t *j = xd_bench_report_json(&cfg, model, res, rep, n_run);
        if (!j || json_dump_file(j, cfg.json_out, JSON_INDENT(1) | JSON_REAL_PRECISION(9))) {
            fprintf(stderr, "expertd bench serve: cannot write %s\n", cfg.json_out);
            status = 1;
        }
        json_decref(j);
    }
    if (cfg.plot_out && n_run &&
        xd_bench_plot(cfg.plot_out, &cfg, res, rep, n_run, msg, sizeof msg)) {
        fprintf(stderr, "expertd bench serve: plot: %s\n", msg);
        status = 1;
    }
    for (size_t i = 0; i < n_run; i++) {
        xd_bench_report_free(&rep[i]);
        xd_bench_result_free(&res[i]);
    }
    xd_bench_prompts_free(prompts, cfg.num_prompts);
    free(model);
    return status;
}
