/* srv.c - the server's life: listen, load the model off the loop, route engine events back,
 * and drain on SIGTERM.
 *
 * The loop thread never blocks: the model loads in libuv's thread pool (uv_queue_work) while
 * /health answers 503; the engine runs on its own thread and wakes the loop through one
 * uv_async_t, whose callback drains the whole engine mailbox (async sends coalesce, so one
 * wakeup may stand for many events). Signals arrive as uv_signal_t callbacks; there is no
 * global state.
 *
 * The chat template loads with the model (load_chat_template), so a broken one is known, and
 * logged, before the first request.
 *
 * Server states:  LOADING --load done--> READY --SIGTERM/SIGINT--> DRAINING --all done--> STOPPED
 *                 LOADING --SIGTERM--> DRAINING (the load finishes first: it cannot be stopped)
 *                 LOADING --load failed--> DRAINING (exit code 1)
 * DRAINING: the listener is closed, idle connections are closed, requests still arriving on
 * open connections get 503 + Connection: close, in-flight work finishes; at drain_timeout the
 * requests still running are cancelled and answered with an explicit 503 error (as the last SSE
 * event of a stream), and 2 s later whatever is still open is closed. STOPPED once no connection and
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

#include "conn.h"
#ifdef XD_HAVE_CUDA
#include "xd_cuda.h"
#endif
#include "srv_job.h"
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
        xd_engine_drain(s->engine, srv_job_event, s); /* nothing is left: no job */
    }
    uv_close((uv_handle_t *)&s->engine_async, on_close_noop);
    uv_close((uv_handle_t *)&s->sigterm, on_close_noop);
    uv_close((uv_handle_t *)&s->sigint, on_close_noop);
    uv_close((uv_handle_t *)&s->drain_timer, on_close_noop);
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_close_noop);
    if (!s->cfg.quiet || s->exit_code) fprintf(stderr, "expertd serve: stopped\n");
}

/* The drain deadline: every request still running is cancelled, and its client gets that as
 * an explicit error (srv_job_cancel) rather than a closed socket; connections without a job are
 * closed. Whatever is still open 2 s later (an engine step that would not end) is closed. */
static void on_drain_timeout(uv_timer_t *t) {
    struct srv *s = t->data;
    if (!s->drain_deadline_passed) {
        s->drain_deadline_passed = true;
        fprintf(stderr, "expertd serve: drain deadline reached, cancelling %d request(s)\n",
                s->n_jobs);
        for (struct srv_conn *c = s->conns, *next; c; c = next) {
            next = c->next;
            if (c->job) srv_job_cancel(c->job);
            else srv_conn_close(c);
        }
        uv_timer_start(&s->drain_timer, on_drain_timeout, 2000, 0);
        return;
    }
    fprintf(stderr, "expertd serve: closing %d connection(s)\n", s->n_conns);
    for (struct srv_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        srv_conn_close(c);
    }
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
    if (s->engine) xd_engine_drain(s->engine, srv_job_event, s);
}

/* ---- loading the model off the loop --------------------------------------------------------- */

/* The text of token id as a template's bos_token / eos_token: "" when there is none. */
static char *token_text(const struct xd_tokenizer *tok, int32_t id) {
    size_t len = 0;
    const char *p = id >= 0 ? xd_tokenizer_piece(tok, id, XD_DETOK_SPECIAL, &len) : NULL;
    char *t = malloc(len + 1);
    if (t && len) memcpy(t, p, len);
    if (t) t[len] = 0;
    return t;
}

/* The chat template: --chat-template FILE (a failure fails the load: the operator asked for
 * it), else the model's own (a failure leaves chat_tpl NULL: the chat endpoint answers 500 with
 * the reason and the rest serves), else ChatML. Runs in the thread pool with the model load. */
static int load_chat_template(struct srv *s) {
    const struct xd_tokenizer *tok = s->model->tok;
    s->bos_text = token_text(tok, xd_tokenizer_bos(tok));
    s->eos_text = token_text(tok, xd_tokenizer_eos(tok));
    if (!s->bos_text || !s->eos_text) return XD_E_NOMEM;
    char err[480];
    int rc = xd_chat_template_load_model(&s->model->gguf, s->cfg.chat_template_path, NULL,
                                         &s->chat_tpl, err, sizeof err);
    if (rc && s->cfg.chat_template_path) {
        snprintf(s->load_err, sizeof s->load_err, "--chat-template %.200s: %.280s",
                 s->cfg.chat_template_path, err);
        return rc;
    }
    if (rc) snprintf(s->chat_tpl_err, sizeof s->chat_tpl_err, "%s", err);
    return 0;
}

static void load_work(uv_work_t *w) {
    struct srv *s = w->data;
    uint64_t t0 = uv_hrtime();
    int rc = xd_model_load(s->cfg.model_path, &s->model, s->load_err, sizeof s->load_err);
    if (!rc) rc = load_chat_template(s);
    const bool cuda = s->cfg.backend && !strcmp(s->cfg.backend, "cuda");
    if (!rc && s->model->moe && cuda) {
        /* experts in VRAM: all of them when they fit beside the rest, else VRAM slots */
#ifdef XD_HAVE_CUDA
        struct xd_xc_config xc = s->cfg.xc;
        xc.model_path = s->cfg.model_path;
        const int64_t train = s->model->hp.n_ctx_train;
        const int32_t n_ctx = s->cfg.n_ctx ? s->cfg.n_ctx : (int32_t)(train < 4096 ? train : 4096);
        rc = xd_cuda_open_xc(s->model, &xc, s->cfg.gpu_memory, n_ctx,
                             s->cfg.n_parallel > 0 ? s->cfg.n_parallel : 4,
                             s->cfg.step_tokens > 0 ? s->cfg.step_tokens : 512, &s->xcb, &s->xc,
                             s->load_err, sizeof s->load_err);
#else
        rc = XD_E_UNSUPPORTED;
        snprintf(s->load_err, sizeof s->load_err,
                 "backend cuda: this build has no CUDA (configure with -DEXPERTD_CUDA=ON)");
#endif
    } else if (!rc && s->model->moe && (s->cfg.xc.budget || s->cfg.xc.trace_path)) {
        struct xd_xc_config xc = s->cfg.xc;
        xc.model_path = s->cfg.model_path;
        rc = xd_xc_open(s->model, &xc, &s->xc, s->load_err, sizeof s->load_err);
    }
    if (!rc) {
        struct xd_engine_params ep = {
            .backend = s->cfg.backend,
            .n_threads = s->cfg.n_threads,
            .no_repack = s->cfg.no_repack,
            .xc = s->xc,
            .n_parallel = s->cfg.n_parallel,
            .n_ctx = s->cfg.n_ctx,
            .step_tokens = s->cfg.step_tokens,
            .prefill_hold = s->cfg.prefill_hold,
            .kv_bytes = s->cfg.kv_bytes,
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
            "expertd serve: model '%s' loaded in %.2f s (%d slots x %d positions, KV cache "
            "%d blocks of %d positions, %.1f MiB); ready\n",
            s->cfg.model_name, s->metrics.load_seconds, es.n_parallel, es.n_ctx,
            es.kv_blocks_total, es.kv_block_size, (double)es.kv_bytes / (1 << 20));
    char xc_line[1024];
    if (s->xc && *xd_xc_describe(s->xc, xc_line, sizeof xc_line)) /* NULL: all resident */
        fprintf(stderr, "expertd serve: %s\n", xc_line);
    if (!s->chat_tpl)
        fprintf(stderr,
                "expertd serve: the model's chat template cannot be used: %s; "
                "/v1/chat/completions will answer 500 (--chat-template FILE overrides it)\n",
                s->chat_tpl_err);
    else if (xd_chat_template_origin(s->chat_tpl) == XD_CHAT_TEMPLATE_FALLBACK)
        fprintf(stderr, "expertd serve: the model has no chat template (tokenizer.chat_template); "
                        "chat uses the ChatML fallback\n");
    else
        fprintf(stderr, "expertd serve: chat template from %s\n",
                xd_chat_template_origin(s->chat_tpl) == XD_CHAT_TEMPLATE_FILE
                    ? s->cfg.chat_template_path
                    : "the model (tokenizer.chat_template)");
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
    xd_chat_template_free(s->chat_tpl);
    free(s->bos_text);
    free(s->eos_text);
    xd_xc_destroy(s->xc);
#ifdef XD_HAVE_CUDA
    xd_cuda_xcb_destroy(s->xcb); /* after the cache whose slots it holds */
#endif
    xd_model_free(s->model);
    if (uv_loop_close(&loop)) {
        fprintf(stderr, "expertd serve: handles left open at exit\n");
        code = code ? code : 1;
    }
    free(s);
    return code;
}
