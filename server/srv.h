/* srv.h - the HTTP server: one libuv loop thread for every connection, the engine on its own
 * thread, the model loaded off the loop. Internal to server/ (api_*.c, conn.c, srv.c).
 */
#ifndef XD_SRV_H
#define XD_SRV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "chat_template.h"
#include "engine.h"
#include "expert_cache.h"
#include "http_parse.h"
#include "model.h"
#include "proto_gen.h"
#include "srv_metrics.h"

struct srv_config {
    const char *model_path;
    const char *model_name;    /* the id clients send as "model" (default: file name sans .gguf) */
    const char *chat_template_path; /* --chat-template FILE: overrides the model's template */
    const char *host;          /* default 127.0.0.1 */
    int port;                  /* default 8080; 0 picks a free port */
    const char *port_file;     /* write the bound port here once listening */
    const char *api_key;       /* NULL: no key needed */
    int32_t n_parallel;        /* engine sequence slots (default 4) */
    int32_t n_ctx;             /* positions per slot (default min(model, 4096)) */
    int32_t step_tokens;       /* engine token budget per step (default 512) */
    int32_t prefill_hold;      /* cache-aware scheduling: xd_engine_params.prefill_hold */
    uint64_t kv_bytes;         /* paged KV cache pool (--kv-cache); 0 = n_parallel x n_ctx */
    int32_t max_queue;         /* requests waiting for slots before 429 (default 64) */
    int32_t max_connections;   /* open connections before new ones get 503 (default 256) */
    struct srv_http_limits http;
    uint64_t header_timeout_ms; /* first byte of a request to the end of its headers (10 s) */
    uint64_t body_timeout_ms;   /* end of headers to the end of the body (30 s) */
    uint64_t idle_timeout_ms;   /* keep-alive connection with no request (60 s) */
    uint64_t drain_timeout_ms;  /* SIGTERM: in-flight work gets this long (30 s) */
    uint64_t stall_bytes;       /* unsent response bytes before a reader counts as gone (4 MiB) */
    bool quiet;                 /* no per-request log lines */
    const char *backend;        /* compute backend (forward.h); NULL = "cpu" */
    int32_t n_threads;          /* kernel threads; 0 = one per online CPU */
    bool no_repack;             /* --no-repack (forward.h xd_ctx_params.no_repack) */
    struct xd_xc_config xc;     /* --expert-* options; budget 0 = every expert resident */
    uint64_t gpu_memory;        /* --gpu-memory: VRAM cap for backend cuda; 0 = what is free */
};

/* Fills c with the defaults above. Cannot fail. */
void srv_config_default(struct srv_config *c);

enum srv_state { SRV_LOADING, SRV_READY, SRV_DRAINING, SRV_STOPPED };

struct srv_conn;
struct xd_cuda_xcb;

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
    /* the chat template (chat_template.h), NULL when the model's own failed to load: then
     * /v1/chat/completions answers 500 with chat_tpl_err and everything else serves */
    struct xd_chat_template *chat_tpl;
    char chat_tpl_err[512];
    char *bos_text, *eos_text; /* the vocabulary's BOS / EOS token texts ("" when none) */
    struct xd_cuda_xcb *xcb;      /* backend cuda: the VRAM slots of xc (NULL otherwise) */
    struct xd_xc *xc;             /* the offloaded expert cache (NULL: resident, owned by the
                                     engine's context) */
    struct proto_limits limits;
    struct srv_conn *conns;       /* every open connection (doubly linked) */
    int32_t n_conns;
    int32_t n_jobs;               /* completion jobs not yet ended (attached or not) */
    uint64_t id_seed, id_counter; /* completion ids */
    struct srv_metrics metrics;
    int exit_code;
    bool handles_closing;
    bool drain_deadline_passed;   /* jobs were cancelled; the next expiry closes everything */
};

/* Runs the server until it drains (exit code 0) or fails to start (1). */
int srv_run(const struct srv_config *cfg);

/* Called by conn.c / api_*.c. */
void srv_maybe_finish(struct srv *s);
uint64_t srv_now_ns(void);

#endif
