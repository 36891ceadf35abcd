/* bench_run.c - one load level of `expertd bench serve`: send every prepared request, closed
 * loop (a fixed number in flight) or open loop (arrivals on a Poisson/gamma schedule), stream
 * each response and time every chunk of text.
 *
 * Timing. Every timestamp is uv_hrtime() taken in the callback that saw the bytes (not the
 * loop's cached uv_now, which is up to one loop turn stale): send = before the connection is
 * taken or opened, TTFB = response headers parsed, TTFT = the first SSE chunk whose
 * choices[0].text is not empty, ITL = gaps between such chunks, E2E = the response's last byte.
 * So TTFT and E2E include connecting (as curl's time_starttransfer and time_total do) and the
 * client's own parse time. A chunk that carries several tokens counts as one gap: ITL is what
 * a reader of the stream sees, and output tokens come from usage.completion_tokens when the
 * server sends it (stream_options.include_usage), else from the number of text chunks.
 *
 * Trade-off: open-loop arrivals ride a libuv timer with millisecond resolution, so an arrival
 * can be up to 1 ms late; at the rates a CPU or single-GPU MoE server sustains (< 100 req/s)
 * that is noise, and it keeps the loop single-threaded with no busy-waiting. Timeouts are
 * checked by one 100 ms tick over the requests in flight, not one timer per request. Not here:
 * several target URLs, retrying failed requests (a failure is a measurement), chat endpoints.
 *
 * Request lifecycle (struct run_req):
 *
 *   PLANNED --launch--> IN_FLIGHT --on_done--> DONE (record filled, buffers freed)
 *                          |
 *                          +-- tick: past --request-timeout -> xd_http_cancel(ETIMEDOUT)
 *                          +-- tick: past --max-duration     -> xd_http_cancel(ECANCELED)
 *   PLANNED requests left when the level's deadline passes are never sent (n_sent < n_planned).
 *
 * The level ends when no request is in flight and none will be launched: finish() stops the
 * timers and closes the connections, and uv_run returns once every handle is closed.
 */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_impl.h"
#include "sse.h"
#include "xd_error.h"

#define TICK_MS 100
#define MAX_EVENT_BYTES (1u << 20) /* one SSE event; a completion chunk is a few hundred */
#define MAX_ERROR_BODY 512         /* bytes of a failed response kept for the log */

enum run_req_state { REQ_PLANNED, REQ_IN_FLIGHT, REQ_DONE };

struct bench_run;

struct run_req {
    struct xd_http_req http;
    struct bench_run *run;
    size_t idx;
    enum run_req_state state;
    uint64_t t_start, t_headers, t_first, t_last;
    struct xd_sse sse;
    double *itl;
    size_t n_itl, cap_itl, n_chunks;
    int64_t usage_prompt, usage_completion; /* -1: the server sent no usage */
    const char *fail_key;                   /* a stream-level failure ("stream_error") */
    struct proto_buf errbody;               /* a failed response's first bytes */
};

struct bench_run {
    uv_loop_t loop;
    struct xd_http_client client;
    const struct xd_bench_config *cfg;
    const struct xd_bench_prompt *prompts;
    struct xd_bench_result *res;
    struct run_req *reqs;
    double *arrivals; /* open loop: seconds from t0 */
    size_t n, next, n_active, n_done, n_failed, first_active, concurrency;
    uint64_t t0, t_last_end, deadline, req_timeout;
    uv_timer_t arrival, tick;
    bool stopping, finished;
    bool filling; /* inside fill(): a synchronous failure must not recurse into it */
};

static double ms(uint64_t ns) { return (double)ns / 1e6; }

/* ---- the progress bar (stderr is a TTY) ----------------------------------------------------- */

static void progress_draw(const struct bench_run *run, bool last) {
    if (!run->cfg->progress) return;
    const int width = 30;
    int fill = run->n ? (int)((double)run->n_done / (double)run->n * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s=%g [%s] %zu/%zu done  %zu in flight  %zu failed  %.1f s ",
            run->cfg->closed ? "concurrency" : "rate", run->res->level, bar, run->n_done, run->n,
            run->n_active, run->n_failed, (double)(uv_hrtime() - run->t0) / 1e9);
    if (last) fputc('\n', stderr);
    fflush(stderr);
}

/* ---- the end of the level ------------------------------------------------------------------- */

static void finish(struct bench_run *run) {
    if (run->finished) return;
    run->finished = true;
    progress_draw(run, true);
    uv_timer_stop(&run->arrival);
    uv_timer_stop(&run->tick);
    uv_close((uv_handle_t *)&run->arrival, NULL);
    uv_close((uv_handle_t *)&run->tick, NULL);
    xd_http_client_close(&run->client);
}

static void maybe_finish(struct bench_run *run) {
    if (run->n_active == 0 && (run->next == run->n || run->stopping)) finish(run);
}

/* ---- one request ---------------------------------------------------------------------------- */

static void push_itl(struct run_req *rr, double v) {
    if (rr->n_itl == rr->cap_itl) {
        size_t cap = rr->cap_itl ? 2 * rr->cap_itl : 64;
        double *p = realloc(rr->itl, cap * sizeof *p);
        if (!p) return; /* an out-of-memory gap is dropped, not the request */
        rr->itl = p;
        rr->cap_itl = cap;
    }
    rr->itl[rr->n_itl++] = v;
}

static int64_t int_field(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* One SSE event of a 200 response. */
static int on_event(void *arg, const char *data, size_t len) {
    struct run_req *rr = arg;
    uint64_t now = uv_hrtime();
    if (len == 6 && !memcmp(data, "[DONE]", 6)) return 0;
    json_error_t je;
    json_t *j = json_loadb(data, len, JSON_ALLOW_NUL, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        if (!rr->fail_key) rr->fail_key = "bad_chunk";
        return 0;
    }
    json_t *err = json_object_get(j, "error");
    if (err && !json_is_null(err)) {
        if (!rr->fail_key) {
            rr->fail_key = "stream_error";
            json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;
            struct xd_bench_result *res = rr->run->res;
            if (!res->first_error[0])
                snprintf(res->first_error, sizeof res->first_error, "error event: %s",
                         json_is_string(m) ? json_string_value(m) : "(no message)");
        }
        json_decref(j);
        return 0;
    }
    json_t *choices = json_object_get(j, "choices");
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        json_t *text = json_object_get(json_array_get(choices, 0), "text");
        if (json_is_string(text) && json_string_length(text) > 0) {
            if (rr->n_chunks == 0)
                rr->t_first = now;
            else
                push_itl(rr, ms(now - rr->t_last));
            rr->t_last = now;
            rr->n_chunks++;
        }
    }
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        rr->usage_prompt = int_field(usage, "prompt_tokens");
        rr->usage_completion = int_field(usage, "completion_tokens");
    }
    json_decref(j);
    return 0;
}

static void on_status(struct xd_http_req *r) {
    struct run_req *rr = r->data;
    rr->t_headers = uv_hrtime();
}

static int on_body(struct xd_http_req *r, const char *p, size_t n) {
    struct run_req *rr = r->data;
    if (r->status != 200) {
        size_t room = MAX_ERROR_BODY > rr->errbody.len ? MAX_ERROR_BODY - rr->errbody.len : 0;
        proto_buf_append(&rr->errbody, p, n < room ? n : room);
        return 0;
    }
    return xd_sse_feed(&rr->sse, p, n, on_event, rr);
}

/* The record's error key: the HTTP status if one other than 200 arrived, else what failed. */
static void error_key(const struct run_req *rr, int err, struct xd_bench_record *rec) {
    char *k = rec->error_key;
    size_t cap = sizeof rec->error_key;
    if (rr->http.status && rr->http.status != 200)
        snprintf(k, cap, "%d", rr->http.status);
    else if (err == UV_ETIMEDOUT)
        snprintf(k, cap, "timeout");
    else if (err == UV_ECANCELED)
        snprintf(k, cap, "cancelled");
    else if (err == XD_E_INVALID)
        snprintf(k, cap, "bad_stream"); /* SSE event over 1 MiB */
    else if (err <= XD_E__BASE)
        snprintf(k, cap, "%s", xd_err_name(err));
    else if (err)
        snprintf(k, cap, "%s", uv_err_name(err));
    else if (rr->fail_key)
        snprintf(k, cap, "%s", rr->fail_key);
    else
        snprintf(k, cap, "no_tokens");
}

static void fill(struct bench_run *run);

static void on_done(struct xd_http_req *r, int err) {
    struct run_req *rr = r->data;
    struct bench_run *run = rr->run;
    uint64_t now = uv_hrtime();
    struct xd_bench_record *rec = &run->res->rec[rr->idx];
    const struct xd_bench_prompt *q = &run->prompts[rr->idx];
    rec->status = r->status;
    rec->err = err;
    rec->e2e_ms = ms(now - rr->t_start);
    rec->ttfb_ms = rr->t_headers ? ms(rr->t_headers - rr->t_start) : NAN;
    rec->ttft_ms = rr->n_chunks ? ms(rr->t_first - rr->t_start) : NAN;
    rec->prompt_from_usage = rr->usage_prompt >= 0;
    rec->prompt_tokens = rr->usage_prompt >= 0 ? rr->usage_prompt : q->words;
    rec->output_from_usage = rr->usage_completion >= 0;
    rec->output_tokens = rr->usage_completion >= 0 ? rr->usage_completion : (int64_t)rr->n_chunks;
    rec->max_tokens = q->max_tokens;
    rec->tpot_ms = rr->n_chunks && rec->output_tokens > 1
                       ? (rec->e2e_ms - rec->ttft_ms) / (double)(rec->output_tokens - 1)
                       : NAN;
    rec->itl_ms = rr->itl;
    rec->n_itl = rr->n_itl;
    rr->itl = NULL;
    rec->ok = err == 0 && r->status == 200 && !rr->fail_key && rr->n_chunks > 0;
    if (!rec->ok) {
        error_key(rr, err, rec);
        run->n_failed++;
        struct xd_bench_result *res = run->res;
        if (!res->first_error[0]) {
            if (r->status && r->status != 200) {
                proto_buf_append(&rr->errbody, "", 1);
                snprintf(res->first_error, sizeof res->first_error, "HTTP %d: %s", r->status,
                         rr->errbody.data ? rr->errbody.data : "");
                size_t n = strlen(res->first_error);
                while (n && strchr(" \t\r\n", res->first_error[n - 1])) res->first_error[--n] = 0;
            } else {
                snprintf(res->first_error, sizeof res->first_error, "%s: %s", rec->error_key,
                         err == 0            ? "no text in the stream"
                         : err <= XD_E__BASE ? xd_strerror(err)
                                             : uv_strerror(err));
            }
        }
    }
    xd_sse_free(&rr->sse);
    proto_buf_free(&rr->errbody);
    rr->state = REQ_DONE;
    assert(xd_http_client_check_invariants(&run->client));
    run->n_active--;
    run->n_done++;
    if (now > run->t_last_end) run->t_last_end = now;
    if (run->cfg->closed) fill(run);
    maybe_finish(run);
}

/* PLANNED -> IN_FLIGHT, or straight to DONE when the request cannot be started. */
static void launch(struct bench_run *run, size_t i) {
    struct run_req *rr = &run->reqs[i];
    const struct xd_bench_prompt *q = &run->prompts[i];
    rr->run = run;
    rr->idx = i;
    rr->usage_prompt = rr->usage_completion = -1;
    xd_sse_init(&rr->sse, MAX_EVENT_BYTES);
    proto_buf_init(&rr->errbody);
    rr->http.bytes = q->wire;
    rr->http.len = q->wire_len;
    rr->http.on_status = on_status;
    rr->http.on_body = on_body;
    rr->http.on_done = on_done;
    rr->http.data = rr;
    rr->t_start = uv_hrtime();
    run->res->rec[i].start_s = (double)(rr->t_start - run->t0) / 1e9;
    rr->state = REQ_IN_FLIGHT;
    run->n_active++;
    int rc = xd_http_start(&run->client, &rr->http);
    if (rc) on_done(&rr->http, rc); /* no callback will come: complete it here */
}

/* Closed loop: keep `concurrency` requests in flight. */
static void fill(struct bench_run *run) {
    if (run->filling) return;
    run->filling = true;
    while (!run->stopping && run->next < run->n && run->n_active < run->concurrency)
        launch(run, run->next++);
    run->filling = false;
}

/* Open loop: send every request whose arrival time has come, then sleep to the next. */
static void arrival_cb(uv_timer_t *t) {
    struct bench_run *run = t->data;
    double now = (double)(uv_hrtime() - run->t0) / 1e9;
    while (!run->stopping && run->next < run->n && run->arrivals[run->next] <= now)
        launch(run, run->next++);
    if (!run->stopping && run->next < run->n && !run->finished) {
        double wait_ms = (run->arrivals[run->next] - now) * 1e3;
        uv_timer_start(&run->arrival, arrival_cb, wait_ms > 0 ? (uint64_t)ceil(wait_ms) : 0, 0);
    }
    maybe_finish(run);
}

static void tick_cb(uv_timer_t *t) {
    struct bench_run *run = t->data;
    uint64_t now = uv_hrtime();
    if (!run->stopping && now >= run->deadline) {
        run->stopping = true;
        run->res->deadline_hit = true;
        uv_timer_stop(&run->arrival);
        for (size_t i = run->first_active; i < run->next; i++)
            if (run->reqs[i].state == REQ_IN_FLIGHT)
                xd_http_cancel(&run->reqs[i].http, UV_ECANCELED);
    }
    for (size_t i = run->first_active; i < run->next; i++) {
        struct run_req *rr = &run->reqs[i];
        if (rr->state == REQ_IN_FLIGHT && now - rr->t_start >= run->req_timeout)
            xd_http_cancel(&rr->http, UV_ETIMEDOUT);
    }
    assert(xd_http_client_check_invariants(&run->client));
    while (run->first_active < run->next && run->reqs[run->first_active].state == REQ_DONE)
        run->first_active++;
    if (!run->finished) progress_draw(run, false);
    maybe_finish(run);
}

/* ---- a level -------------------------------------------------------------------------------- */

void xd_bench_result_free(struct xd_bench_result *res) {
    for (size_t i = 0; res->rec && i < res->n_planned; i++) free(res->rec[i].itl_ms);
    free(res->rec);
    memset(res, 0, sizeof *res);
}

int xd_bench_run_level(const struct xd_bench_config *cfg, const struct sockaddr *addr,
                       const struct xd_bench_prompt *prompts, double level,
                       struct xd_bench_result *res) {
    memset(res, 0, sizeof *res);
    struct bench_run *run = calloc(1, sizeof *run);
    size_t n = cfg->num_prompts;
    if (!run) return XD_E_NOMEM;
    res->level = level;
    res->n_planned = n;
    res->rec = calloc(n, sizeof *res->rec);
    run->reqs = calloc(n, sizeof *run->reqs);
    if (!cfg->closed) run->arrivals = malloc(n * sizeof *run->arrivals);
    int rc = (!res->rec || !run->reqs || (!cfg->closed && !run->arrivals)) ? XD_E_NOMEM : 0;
    if (!rc && !cfg->closed)
        rc = xd_bench_schedule(level, cfg->burstiness, XD_BENCH_ARRIVAL_SEED(cfg->seed), n,
                               run->arrivals);
    if (!rc) rc = uv_loop_init(&run->loop);
    if (rc) {
        free(run->reqs);
        free(run->arrivals);
        free(run);
        xd_bench_result_free(res);
        return rc;
    }
    run->cfg = cfg;
    run->prompts = prompts;
    run->res = res;
    run->n = n;
    run->concurrency = cfg->closed ? (size_t)level : n;
    xd_http_client_init(&run->client, &run->loop, addr,
                        cfg->closed ? (size_t)level : (n < 1024 ? n : 1024));
    uv_timer_init(&run->loop, &run->arrival);
    uv_timer_init(&run->loop, &run->tick);
    run->arrival.data = run->tick.data = run;
    run->t0 = run->t_last_end = uv_hrtime();
    run->deadline = run->t0 + (uint64_t)(cfg->max_duration_s * 1e9);
    run->req_timeout = (uint64_t)(cfg->request_timeout_s * 1e9);
    uv_timer_start(&run->tick, tick_cb, TICK_MS, TICK_MS);
    if (cfg->closed) {
        fill(run);
        maybe_finish(run);
    } else {
        arrival_cb(&run->arrival);
    }
    /* Bounded: the deadline stops new sends and cancels what is in flight, so the timers and
     * connections are closed at most max_duration + one tick after the start. */
    uv_run(&run->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&run->loop);
    res->n_sent = run->next;
    res->duration_s = (double)(run->t_last_end - run->t0) / 1e9;
    res->n_connects = run->client.n_connects;
    for (size_t i = 0; i < n; i++) free(run->reqs[i].itl); /* only set if never completed */
    free(run->reqs);
    free(run->arrivals);
    free(run);
    return rc; /* 0; UV_EBUSY would mean a handle leaked, which the tests check */
}

/* ---- one GET (model discovery) -------------------------------------------------------------- */

struct get_ctx {
    uv_loop_t loop;
    struct xd_http_client client;
    struct xd_http_req req;
    uv_timer_t timer;
    struct proto_buf *out;
    int result;
};

static int get_body(struct xd_http_req *r, const char *p, size_t n) {
    struct get_ctx *g = r->data;
    if (g->out->len + n > (4u << 20)) return XD_E_OVERFLOW; /* a models list is a few KiB */
    return proto_buf_append(g->out, p, n);
}

static void get_done(struct xd_http_req *r, int err) {
    struct get_ctx *g = r->data;
    g->result = err ? err : r->status;
    uv_timer_stop(&g->timer);
    uv_close((uv_handle_t *)&g->timer, NULL);
    xd_http_client_close(&g->client);
}

static void get_timeout(uv_timer_t *t) {
    struct get_ctx *g = t->data;
    xd_http_cancel(&g->req, UV_ETIMEDOUT);
}

int xd_bench_http_get(const struct sockaddr *addr, const struct xd_http_url *u, const char *path,
                      const char *api_key, double timeout_s, struct proto_buf *out) {
    struct get_ctx *g = calloc(1, sizeof *g);
    if (!g) return XD_E_NOMEM;
    struct proto_buf w;
    proto_buf_init(&w);
    proto_buf_printf(&w,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: expertd-bench/0.1\r\n"
                     "Accept: application/json\r\n",
                     path, u->host_header);
    if (api_key) proto_buf_printf(&w, "Authorization: Bearer %s\r\n", api_key);
    proto_buf_puts(&w, "Connection: close\r\n\r\n");
    int rc = w.oom ? XD_E_NOMEM : uv_loop_init(&g->loop);
    if (rc) {
        proto_buf_free(&w);
        free(g);
        return rc;
    }
    g->out = out;
    xd_http_client_init(&g->client, &g->loop, addr, 1);
    uv_timer_init(&g->loop, &g->timer);
    g->timer.data = g;
    g->req.bytes = w.data;
    g->req.len = w.len;
    g->req.on_body = get_body;
    g->req.on_done = get_done;
    g->req.data = g;
    rc = xd_http_start(&g->client, &g->req);
    if (rc) {
        g->result = rc;
        uv_close((uv_handle_t *)&g->timer, NULL);
    } else {
        uv_timer_start(&g->timer, get_timeout, (uint64_t)(timeout_s * 1e3), 0);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    uv_loop_close(&g->loop);
    rc = g->result;
    proto_buf_free(&w);
    free(g);
    return rc;
}
