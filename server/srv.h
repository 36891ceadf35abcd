/* srv.h - the HTTP server: one libuv loop thread for every connection, the engine on its own
 * thread, the model loaded off the loop. Internal to server/ (api_*.c, conn.c, srv.c).
 */
#ifndef XD_SRV_H
#define XD_SRV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "engine.h"
#include "http_parse.h"
#include "model.h"
#include "proto_gen.h"
#include "srv_metrics.h"

struct srv_config {
    const char *model_path;
    const char *model_name;    /* the id clients send as "model" (default: file name sans .gguf) */
    const char *host;          /* default 127.0.0.1 */
    int port;                  /* default 8080; 0 picks a free port */
    const char *port_file;     /* write the bound port here once listening */
    const char *api_key;       /* NULL: no key needed */
    int32_t n_parallel;        /* engine sequence slots (default 4) */
    int32_t n_ctx;             /* positions per slot (default min(model, 4096)) */
    int32_t step_tokens;       /* engine token budget per step (default 512) */
    int32_t max_queue;         /* requests waiting for slots before 429 (default 64) */
    int32_t max_connections;   /* open connections before new ones get 503 (default 256) */
    struct srv_http_limits http;
    uint64_t header_timeout_ms; /* first byte of a request to the end of its headers (10 s) */
    uint64_t body_timeout_ms;   /* end of headers to the end of the body (30 s) */
    uint64_t idle_timeout_ms;   /* keep-alive connection with no request (60 s) */
    uint64_t drain_timeout_ms;  /* SIGTERM: in-flight work gets this long (30 s) */
    uint64_t stall_bytes;       /* unsent response bytes before a reader counts as gone (4 MiB) */
    bool quiet;                 /* no per-request log lines */
};

/* Fills c with the defaults above. Cannot fail. */
void srv_config_default(struct srv_config *c);

enum srv_state { SRV_LOADING, SRV_READY, SRV_DRAINING, SRV_STOPPED };

struct srv_conn;

struct srv {
    uv_loop_t *loop;
    struct srv_config cfg;
    enum srv_state state;
    uv_tcp_t listener;
    uv_async_t engine_async;      /* the engine's notify: drain its mailbox */
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uv_work_t load_work;
    bool loading;                 /* load_work in flight */
    bool load_failed;
    char load_err[512];
    struct xd_model *model;
    struct xd_engine *engine;
    struct proto_limits limits;
    struct srv_conn *conns;       /* every open connection (doubly linked) */
    int32_t n_conns;
    int32_t n_jobs;               /* completion jobs not yet ended (attached or not) */
    uint64_t id_seed, id_counter; /* completion ids */
    struct srv_metrics metrics;
    int exit_code;
    bool handles_closing;
};

/* Runs the server until it drains (exit code 0) or fails to start (1). */
int srv_run(const struct srv_config *cfg);

/* Called by conn.c / api_*.c. */
void srv_maybe_finish(struct srv *s);
uint64_t srv_now_ns(void);

#endif
