/* srv.c - the server's life: listen, load the model off the loop, route engine events back,
 * and drain on SIGTERM.
 *
 * The loop thread never blocks: the model loads in libuv's thread pool (uv_queue_work) while
 * /health answers 503; the engine runs on its own thread and wakes the loop through one
 * uv_async_t, whose callback drains the whole engine mailbox (async sends coalesce, so one
 * wakeup may stand for many events). Signals arrive as uv_signal_t callbacks; there is no
 * global state.
 *
 * Server states:  LOADING --load done--> READY --SIGTERM/SIGINT--> DRAINING --all done--> STOPPED
 *                 LOADING --SIGTERM--> DRAINING (the load finishes first: it cannot be stopped)
 *                 LOADING --load failed--> DRAINING (exit code 1)
 * DRAINING: the listener is closed, idle connections are closed, requests still arriving on
 * open connections get 503 + Connection: close, in-flight work finishes; at drain_timeout the
 * remaining connections are closed (their requests cancelled). STOPPED once no connection and
 * no job is left: the engine is shut down and every handle closed, so uv_run returns.
 */
#include "srv.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "api_completions.h"
#include "conn.h"
#include "xd_error.h"

void srv_config_default(struct srv_config *c) {
    *c = (struct srv_config){
        .host = "127.0.0.1",
        .port = 8080,
        .n_parallel = 4,
        .step_tokens = 512,
        .max_queue = 64,
        .max_connections = 256,
        .http = srv_http_limits_default(),
        .header_timeout_ms = 10000,
        .body_timeout_ms = 30000,
        .idle_timeout_ms = 60000,
        .drain_timeout_ms = 30000,
        .stall_bytes = 4u << 20,
    };
}

uint64_t srv_now_ns(void) { return uv_hrtime(); }

static void on_close_noop(uv_handle_t *h) {}

void srv_maybe_finish(struct srv *s) {
    if (s->state != SRV_DRAINING || s->loading || s->n_conns || s->n_jobs || s->handles_closing)
        return;
    s->handles_closing = true;
    s->state = SRV_STOPPED;
    if (s->engine) {
        xd_engine_shutdown(s->engine);
        xd_engine_drain(s->engine, srv_api_completions_event, s); /* nothing is left: no job */
    }
    uv_close((uv_handle_t *)&s->engine_async, on_close_noop);
    uv_close((uv_handle_t *)&s->sigterm, on_close_noop);
    uv_close((uv_handle_t *)&s->sigint, on_close_noop);
    uv_close((uv_handle_t *)&s->drain_timer, on_close_noop);
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_close_noop);
    if (!s->cfg.quiet || s->exit_code) fprintf(stderr, "expertd serve: stopped\n");
}

static void on_drain_timeout(uv_timer_t *t) {
    struct srv *s = t->data;
    fprintf(stderr, "expertd serve: drain deadline reached, closing %d connection(s)\n",
            s->n_conns);
    for (struct srv_conn *c = s->conns; c; c = c->next) srv_conn_close(c);
}

static void drain_begin(struct srv *s) {
    if (s->state == SRV_DRAINING || s->state == SRV_STOPPED) return;
    s->state = SRV_DRAINING;
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_close_noop);
    uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg.drain_timeout_ms, 0);
    for (struct srv_conn *c = s->conns; c; c = c->next) srv_conn_close_if_idle(c);
    srv_maybe_finish(s);
}

static void on_signal(uv_signal_t *h, int signum) {
    struct srv *s = h->data;
    fprintf(stderr, "expertd serve: %s, draining (%d connection(s), %d request(s) in flight)\n",
            signum == SIGTERM ? "SIGTERM" : "SIGINT", s->n_conns, s->n_jobs);
    drain_begin(s);
}

/* ---- the engine's events -------------------------------------------------------------------- */

static void on_engine_notify(void *arg) {
    struct srv *s = arg;
    uv_async_send(&s->engine_async); /* thread-safe; coalesces */
}

static void on_engine_async(uv_async_t *a) {
    struct srv *s = a->data;
    if (s->engine) xd_engine_drain(s->engine, srv_api_completions_event, s);
}

/* ---- loading the model off the loop --------------------------------------------------------- */

static void load_work(uv_work_t *w) {
    struct srv *s = w->data;
    uint64_t t0 = uv_hrtime();
    int rc = xd_model_load(s->cfg.model_path, &s->model, s->load_err, sizeof s->load_err);
    if (!rc) {
        struct xd_engine_params ep = {
            .n_parallel = s->cfg.n_parallel,
            .n_ctx = s->cfg.n_ctx,
            .step_tokens = s->cfg.step_tokens,
            /* a backstop: the server answers 429 before this is reached */
            .max_waiting = s->cfg.max_queue + (s->cfg.n_parallel > 0 ? s->cfg.n_parallel : 4),
            .notify = on_engine_notify,
            .notify_arg = s,
        };
        rc = xd_engine_create(s->model, &ep, &s->engine, s->load_err, sizeof s->load_err);
    }
    s->load_failed = rc != 0;
    s->metrics.load_seconds = (double)(uv_hrtime() - t0) * 1e-9;
}

static void load_done(uv_work_t *w, int status) {
    struct srv *s = w->data;
    s->loading = false;
    if (s->load_failed || status) {
        fprintf(stderr, "expertd serve: %s: %s\n", s->cfg.model_path, s->load_err);
        s->exit_code = 1;
        drain_begin(s);
        srv_maybe_finish(s);
        return;
    }
    struct xd_engine_stats es;
    xd_engine_stats(s->engine, &es);
    s->limits = proto_limits_default((int32_t)s->model->hp.n_vocab, es.n_parallel);
    s->limits.max_prompt_tokens = es.n_ctx;
    s->limits.max_tokens = es.n_ctx;
    fprintf(stderr,
            "expertd serve: model '%s' loaded in %.2f s (%d slots x %d positions); ready\n",
            s->cfg.model_name, s->metrics.load_seconds, es.n_parallel, es.n_ctx);
    if (s->state == SRV_LOADING) s->state = SRV_READY;
    srv_maybe_finish(s);
}

/* ---- listening ------------------------------------------------------------------------------ */

static void on_connection(uv_stream_t *server, int status) {
    struct srv *s = server->data;
    if (status < 0 || s->state == SRV_DRAINING || s->state == SRV_STOPPED) return;
    srv_conn_accept(s);
}

static int listen_on(struct srv *s) {
    struct sockaddr_storage addr;
    const struct srv_config *c = &s->cfg;
    int rc = strchr(c->host, ':') ? uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&addr)
                                  : uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&addr);
    if (!rc) rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (!rc) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc) {
        fprintf(stderr, "expertd serve: cannot listen on %s:%d: %s\n", c->host, c->port,
                uv_strerror(rc));
        return rc;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    int port = c->port;
    if (!uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len))
        port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    fprintf(stderr, "expertd serve: listening on http://%s%s%s:%d (model loading)\n",
            strchr(c->host, ':') ? "[" : "", c->host, strchr(c->host, ':') ? "]" : "", port);
    if (c->port_file) {
        FILE *f = fopen(c->port_file, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f)) {
            fprintf(stderr, "expertd serve: cannot write %s\n", c->port_file);
            return -EIO;
        }
    }
    return 0;
}

int srv_run(const struct srv_config *cfg) {
    struct srv *s = calloc(1, sizeof *s);
    if (!s) return 1;
    uv_loop_t loop;
    if (uv_loop_init(&loop)) {
        free(s);
        return 1;
    }
    s->loop = &loop;
    s->cfg = *cfg;
    s->state = SRV_LOADING;
    srv_metrics_init(&s->metrics);
    s->metrics.start_ns = (uint64_t)time(NULL) * 1000000000u;
    if (getrandom(&s->id_seed, sizeof s->id_seed, 0) != sizeof s->id_seed)
        s->id_seed = uv_hrtime() ^ (uint64_t)getpid() << 32;
    uv_tcp_init(&loop, &s->listener);
    uv_async_init(&loop, &s->engine_async, on_engine_async);
    uv_signal_init(&loop, &s->sigterm);
    uv_signal_init(&loop, &s->sigint);
    uv_timer_init(&loop, &s->drain_timer);
    s->listener.data = s->engine_async.data = s->sigterm.data = s->sigint.data = s;
    s->drain_timer.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    if (listen_on(s)) {
        s->exit_code = 1;
        drain_begin(s);
    } else {
        s->load_work.data = s;
        s->loading = true;
        if (uv_queue_work(&loop, &s->load_work, load_work, load_done)) {
            s->loading = false;
            s->exit_code = 1;
            drain_begin(s);
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int code = s->exit_code;
    xd_engine_destroy(s->engine);
    xd_model_free(s->model);
    if (uv_loop_close(&loop)) {
        fprintf(stderr, "expertd serve: handles left open at exit\n");
        code = code ? code : 1;
    }
    free(s);
    return code;
}
