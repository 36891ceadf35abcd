/* srv_job.c - the generation job both OpenAI endpoints share: submit, engine events, SSE or one
 * JSON response, and the job's end (states in srv_job.h).
 *
 * A job has one engine request (xd_gen) per prompt, each with n sequences, so choice index =
 * prompt * n + sequence, as OpenAI orders them. The job lives until every one of its engine
 * requests has delivered END - even when the client is gone: closing the connection detaches
 * the job (conn = NULL) and cancels its requests, and the last END frees it. Streaming sends
 * the endpoint's opening chunk for a choice before its first text, then one chunk per event that
 * carries text, logprobs or the finish reason; non-streaming accumulates text and logprobs per
 * choice and encodes once. A reader that lets more than stall_bytes of response pile up unsent
 * is treated as gone. The endpoints differ only in the srv_job_fmt table (encoders, id prefix,
 * route) - one code path, not a copy per endpoint.
 *
 * Trade-off: prompts are tokenized on the loop thread. The body limit bounds that work (about a
 * millisecond per 10 KiB of text); moving it to uv_queue_work would add a state (TOKENIZING)
 * for little gain at these sizes.
 */
#include "srv_job.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "srv.h"
#include "xd_error.h"

static void job_free(struct srv_job *j) {
    for (size_t p = 0; j->prompts && p < j->n_prompts; p++) {
        xd_tokens_free(&j->prompts[p].ids);
        proto_buf_free(&j->prompts[p].echo);
        srv_lp_free(&j->prompts[p].lp);
        xd_gen_destroy(j->prompts[p].gen);
    }
    for (size_t i = 0; j->choices && i < j->n_prompts * (size_t)j->n; i++) {
        proto_buf_free(&j->choices[i].text);
        srv_lp_free(&j->choices[i].lp);
    }
    free(j->prompts);
    free(j->choices);
    if (j->req) j->fmt->req_free(j->req);
    free(j);
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void respond_error(struct srv_conn *c, int status, const char *param, const char *code,
                          const char *msg) {
    struct proto_error e;
    proto_error_set(&e, status, param, code, "%s", msg);
    srv_conn_respond_error(c, &e, status == 429 || status == 503 ? "Retry-After: 1\r\n" : "");
}

/* The error a failed engine request (or a failure of ours) gives the client. */
static void engine_error(int status, struct proto_error *e) {
    if (status == -ECANCELED)
        proto_error_set(e, 503, NULL, "cancelled", "The request was cancelled (server draining)");
    else if (status == XD_E_NOMEM || status == -ENOMEM)
        proto_error_set(e, 503, NULL, NULL, "out of memory");
    else
        proto_error_set(e, xd_err_http_status(status) >= 500 ? 500 : xd_err_http_status(status),
                        NULL, "engine_error", "Generation failed: %s", xd_strerror(status));
}

struct proto_meta srv_job_meta(const struct srv_job *j) {
    return (struct proto_meta){j->id, j->created, j->srv->cfg.model_name};
}

/* ---- building a job ------------------------------------------------------------------------- */

struct srv_job *srv_job_create(struct srv_conn *c, const struct srv_job_fmt *fmt) {
    struct srv_job *j = calloc(1, sizeof *j);
    if (!j) {
        respond_error(c, 503, NULL, NULL, "out of memory");
        return NULL;
    }
    j->srv = c->srv;
    j->conn = c;
    j->fmt = fmt;
    j->t_recv = c->t_recv_ns;
    return j;
}

void srv_job_fail(struct srv_job *j, int rc, struct proto_error *e) {
    struct srv_conn *c = j->conn;
    if (!e->status) engine_error(rc, e);
    srv_conn_respond_error(c, e, e->status == 429 || e->status == 503 ? "Retry-After: 1\r\n" : "");
    job_free(j);
}

int srv_job_begin(struct srv_job *j, void *req, const struct proto_gen *gp, size_t n_prompts,
                  struct proto_error *e) {
    const struct srv *s = j->srv;
    j->req = req;
    j->gp = gp;
    if (strcmp(gp->model, s->cfg.model_name)) {
        proto_error_set(e, 404, "model", "model_not_found",
                        "The model '%.100s' does not exist (this server serves '%.100s')",
                        gp->model, s->cfg.model_name);
        return XD_E_INVALID;
    }
    j->n_prompts = n_prompts;
    j->n = gp->n;
    j->stream = gp->stream;
    j->max_tokens = gp->max_tokens;
    j->prompts = calloc(n_prompts, sizeof *j->prompts);
    j->choices = calloc(n_prompts * (size_t)j->n, sizeof *j->choices);
    if (!j->prompts || !j->choices) {
        j->n_prompts = 0; /* nothing inside them to free */
        proto_error_set(e, 503, NULL, NULL, "out of memory");
        return XD_E_NOMEM;
    }
    return 0;
}

int srv_job_tokenize(struct srv_job *j, size_t p, const char *text, size_t len, bool parse_special,
                     const char *param, struct proto_error *e) {
    struct srv_job_prompt *out = &j->prompts[p];
    unsigned flags = XD_TOK_ADD_SPECIAL | (parse_special ? XD_TOK_PARSE_SPECIAL : 0);
    int rc = xd_tokenize(j->srv->model->tok, text, len, flags, &out->ids);
    if (rc) {
        proto_error_set(e, 400, param, "invalid_prompt", "The %s cannot be tokenized: %s", param,
                        xd_strerror(rc));
        return XD_E_INVALID;
    }
    if (j->echo && proto_buf_append(&out->echo, text, len)) return XD_E_NOMEM;
    return 0;
}

int srv_job_prompt_ready(struct srv_job *j, size_t p, struct proto_error *e) {
    const struct srv *s = j->srv;
    const struct xd_tokenizer *tok = s->model->tok;
    struct srv_job_prompt *out = &j->prompts[p];
    if (out->ids.n == 0) {
        proto_error_set(e, 400, j->fmt->prompt_param, "invalid_prompt",
                        "The prompt is empty (and this model's vocabulary adds no BOS token)");
        return XD_E_INVALID;
    }
    int32_t n_ctx = s->limits.max_prompt_tokens;
    int64_t want = j->max_tokens < 0 ? 1 : j->max_tokens;
    if ((int64_t)out->ids.n + want > n_ctx) {
        proto_error_set(e, 400, j->fmt->prompt_param, "context_length_exceeded",
                        "This model's maximum context length is %d tokens, however you requested "
                        "%lld tokens (%zu in your prompt; %lld for the completion). Please reduce "
                        "your prompt or completion length.",
                        n_ctx, (long long)out->ids.n + want, out->ids.n, (long long)want);
        return XD_E_INVALID;
    }
    /* generated tokens' text_offset continues after the echoed prompt */
    for (int32_t i = 0; j->echo && i < j->n; i++)
        j->choices[p * (size_t)j->n + (size_t)i].offset = (uint32_t)out->echo.len;
    if (j->echo && j->logprobs) {
        uint32_t off = 0;
        for (size_t i = 0; i < out->ids.n; i++) {
            /* nulls now; XD_GEN_PROMPT_LOGPROB fills positions 1.. as the prefill runs */
            if (srv_lp_add(&out->lp, tok, out->ids.ids[i], NULL, off)) return XD_E_NOMEM;
            off += (uint32_t)srv_token_text_len(tok, out->ids.ids[i]);
        }
    }
    return out->echo.oom ? XD_E_NOMEM : 0;
}

/* ---- responses ------------------------------------------------------------------------------ */

/* Resolves entries of a list into fresh arrays (caller frees *lp and *tops). */
static int resolve(const struct srv_lp_list *l, size_t from, size_t n,
                   struct proto_token_logprob **lp, struct proto_top_logprob **tops) {
    *lp = calloc(n ? n : 1, sizeof **lp);
    *tops = calloc(l->n_tops ? l->n_tops : 1, sizeof **tops);
    if (!*lp || !*tops) return XD_E_NOMEM;
    srv_lp_resolve(l, from, n, *lp, *tops);
    return 0;
}

/* Sends out's bytes; a failed send closed the connection (job aborted); a reader that does not
 * keep up is gone. */
static void send_bytes(struct srv_job *j, int rc, const struct proto_buf *b) {
    if (!rc) rc = srv_conn_stream_send(j->conn, b->data, b->len);
    struct srv_conn *c = j->conn;
    if (!rc && c && srv_conn_unsent(c) > j->srv->cfg.stall_bytes)
        srv_conn_close(c);
    else if (rc && c)
        srv_conn_close(c);
}

/* Sends one SSE chunk for choice k: text, the logprob entries [from, from+n) of list l. */
static void send_chunk(struct srv_job *j, size_t k, const char *text, size_t len,
                       const struct srv_lp_list *l, size_t from, size_t n, const char *finish) {
    if (!j->conn) return;
    struct proto_token_logprob *lp = NULL;
    struct proto_top_logprob *tops = NULL;
    struct proto_choice ch = {.index = (int32_t)k,
                              .text = text,
                              .len = len,
                              .has_logprobs = j->logprobs && l,
                              .finish_reason = finish};
    struct proto_meta m = srv_job_meta(j);
    struct proto_buf b;
    proto_buf_init(&b);
    int rc = 0;
    if (ch.has_logprobs && !(rc = resolve(l, from, n, &lp, &tops))) {
        ch.lp = lp;
        ch.n_lp = n;
    }
    if (!rc) rc = j->fmt->chunk(&m, &ch, j->gp->include_usage, &b);
    send_bytes(j, rc, &b);
    free(lp);
    free(tops);
    proto_buf_free(&b);
}

/* Streaming: the endpoint's opening chunk of choice k, before its first tokens. */
static void send_open(struct srv_job *j, size_t k) {
    struct srv_job_choice *ch = &j->choices[k];
    if (ch->started || !j->conn) return;
    ch->started = true;
    struct proto_buf b;
    proto_buf_init(&b);
    int rc = j->fmt->open(j, k, &b);
    if (rc || b.len) send_bytes(j, rc, &b);
    proto_buf_free(&b);
}

static void respond_whole(struct srv_job *j) {
    size_t n_ch = j->n_prompts * (size_t)j->n;
    struct proto_choice *ch = calloc(n_ch, sizeof *ch);
    struct proto_buf *texts = calloc(n_ch, sizeof *texts);
    struct proto_token_logprob **lps = calloc(n_ch, sizeof *lps);
    struct proto_top_logprob **tops = calloc(n_ch * 2, sizeof *tops);
    bool ok = ch && texts && lps && tops;
    for (size_t k = 0; ok && k < n_ch; k++) {
        const struct srv_job_choice *c = &j->choices[k];
        const struct srv_job_prompt *p = &j->prompts[k / (size_t)j->n];
        proto_buf_init(&texts[k]);
        if (j->echo) proto_buf_append(&texts[k], p->echo.data, p->echo.len);
        proto_buf_append(&texts[k], c->text.data, c->text.len);
        ok = !texts[k].oom;
        ch[k] = (struct proto_choice){.index = (int32_t)k,
                                      .text = texts[k].data,
                                      .len = texts[k].len,
                                      .has_logprobs = j->logprobs,
                                      .finish_reason = c->finish ? c->finish : "length"};
        if (ok && j->logprobs) {
            size_t ne = j->echo ? p->lp.n : 0, n = ne + c->lp.n;
            lps[k] = calloc(n ? n : 1, sizeof **lps);
            tops[2 * k] = calloc(p->lp.n_tops + 1, sizeof **tops);
            tops[2 * k + 1] = calloc(c->lp.n_tops + 1, sizeof **tops);
            ok = lps[k] && tops[2 * k] && tops[2 * k + 1];
            if (ok) {
                srv_lp_resolve(&p->lp, 0, ne, lps[k], tops[2 * k]);
                srv_lp_resolve(&c->lp, 0, c->lp.n, lps[k] + ne, tops[2 * k + 1]);
                ch[k].lp = lps[k];
                ch[k].n_lp = n;
            }
        }
    }
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_meta m = srv_job_meta(j);
    struct proto_usage u = {j->prompt_tokens, j->completion_tokens};
    if (ok && !j->fmt->whole(&m, ch, n_ch, &u, &b) && !proto_buf_puts(&b, "\n"))
        srv_conn_respond(j->conn, 200, "application/json", b.data, b.len, "");
    else
        respond_error(j->conn, 500, NULL, "encode_error", "Could not encode the response");
    proto_buf_free(&b);
    for (size_t k = 0; texts && k < n_ch; k++) proto_buf_free(&texts[k]);
    for (size_t k = 0; lps && k < n_ch; k++) free(lps[k]);
    for (size_t k = 0; tops && k < 2 * n_ch; k++) free(tops[k]);
    free(ch);
    free(texts);
    free(lps);
    free(tops);
}

/* Every engine request of the job has ended: answer (if anyone listens) and free. */
static void job_finish(struct srv_job *j) {
    struct srv *s = j->srv;
    struct srv_conn *c = j->conn;
    if (c) {
        srv_conn_set_job(c, NULL, NULL);
        if (!j->stream && j->status) {
            struct proto_error e;
            engine_error(j->status, &e);
            srv_conn_respond_error(c, &e, "");
        } else if (!j->stream) {
            respond_whole(j);
        } else {
            struct proto_buf b;
            proto_buf_init(&b);
            if (j->status) {
                struct proto_error e;
                engine_error(j->status, &e);
                proto_sse_error(&e, &b);
            } else if (j->gp->include_usage) {
                struct proto_meta m = srv_job_meta(j);
                struct proto_usage u = {j->prompt_tokens, j->completion_tokens};
                j->fmt->usage_chunk(&m, &u, &b);
            }
            proto_sse_done(&b);
            if (!b.oom) srv_conn_stream_send(c, b.data, b.len);
            proto_buf_free(&b);
            srv_conn_stream_end(c);
        }
        if (!j->status)
            proto_hist_observe(&s->metrics.e2e.h, (double)(srv_now_ns() - j->t_recv) * 1e-9);
    }
    if (!j->status) {
        s->metrics.prompt_tokens += (uint64_t)j->prompt_tokens;
        s->metrics.generation_tokens += (uint64_t)j->completion_tokens;
    }
    s->n_jobs--;
    job_free(j);
    srv_maybe_finish(s);
}

/* The connection is going away before the answer: cancel; the last END frees the job. */
static void job_abort(void *arg) {
    struct srv_job *j = arg;
    j->conn = NULL;
    j->srv->metrics.requests_cancelled++;
    srv_metrics_request(&j->srv->metrics, j->fmt->route, 499);
    for (size_t p = 0; p < j->n_prompts; p++)
        if (j->prompts[p].gen) xd_engine_cancel(j->srv->engine, j->prompts[p].gen);
}

void srv_job_cancel(struct srv_job *j) {
    for (size_t p = 0; p < j->n_prompts; p++)
        if (j->prompts[p].gen) xd_engine_cancel(j->srv->engine, j->prompts[p].gen);
}

/* ---- engine events -------------------------------------------------------------------------- */

static void on_end(struct srv_job *j, size_t p, const struct xd_gen_event *ev) {
    struct srv *s = j->srv;
    const struct xd_gen_info *in = xd_gen_info(ev->gen);
    if (ev->status && !j->status) j->status = ev->status;
    if (!ev->status) {
        if (in->t_admit)
            proto_hist_observe(&s->metrics.queue_time.h,
                               (double)(in->t_admit - in->t_submit) * 1e-9);
        if (in->t_first_token) {
            proto_hist_observe(&s->metrics.ttft.h, (double)(in->t_first_token - j->t_recv) * 1e-9);
            double per_seq = (double)in->n_generated / j->n;
            if (per_seq > 1)
                proto_hist_observe(&s->metrics.tpot.h,
                                   (double)(in->t_end - in->t_first_token) * 1e-9 / (per_seq - 1));
        }
    }
    j->prompt_tokens += in->n_prompt;
    j->completion_tokens += in->n_generated;
    xd_gen_destroy(ev->gen);
    j->prompts[p].gen = NULL;
    if (ev->status && ev->status != -ECANCELED) {
        /* one prompt failed: the answer is an error, stop the others */
        for (size_t q = 0; q < j->n_prompts; q++)
            if (j->prompts[q].gen) xd_engine_cancel(s->engine, j->prompts[q].gen);
    }
    if (--j->n_live == 0) job_finish(j);
}

void srv_job_event(const struct xd_gen_event *ev, void *arg) {
    struct srv_job *j = ev->user;
    const struct xd_tokenizer *tok = j->srv->model->tok;
    size_t p = 0;
    while (p < j->n_prompts && j->prompts[p].gen != ev->gen) p++;
    if (p == j->n_prompts) return; /* cannot happen: every event's request is in its job */
    if (ev->kind == XD_GEN_END) {
        on_end(j, p, ev);
        return;
    }
    struct srv_job_prompt *pr = &j->prompts[p];
    if (ev->kind == XD_GEN_PROMPT_LOGPROB) {
        /* the prompt's list holds a null entry per token from submit; fill this one */
        srv_lp_set(&pr->lp, (size_t)ev->pos, tok, ev->token, &ev->lp);
        return;
    }
    size_t k = p * (size_t)j->n + (size_t)ev->index;
    struct srv_job_choice *ch = &j->choices[k];
    size_t lp_from = ch->lp.n;
    if (ev->kind == XD_GEN_TOKEN && j->logprobs && ev->has_logprobs && ev->token >= 0) {
        srv_lp_add(&ch->lp, tok, ev->token, &ev->lp, ch->offset);
        ch->offset += (uint32_t)srv_token_text_len(tok, ev->token);
    }
    if (ev->kind == XD_GEN_FINISH) ch->finish = ev->finish == XD_FINISH_STOP ? "stop" : "length";
    if (!j->stream) {
        proto_buf_append(&ch->text, ev->text, ev->len);
        return;
    }
    send_open(j, k);
    size_t n_lp = ch->lp.n - lp_from;
    if (ev->len || n_lp || ev->kind == XD_GEN_FINISH)
        send_chunk(j, k, ev->text, ev->len, n_lp ? &ch->lp : (j->logprobs ? &ch->lp : NULL),
                   lp_from, n_lp, ev->kind == XD_GEN_FINISH ? ch->finish : NULL);
}

/* ---- submitting ----------------------------------------------------------------------------- */

static struct xd_gen_params gen_params(const struct srv_job *j, uint64_t seed,
                                       struct xd_logit_bias *bias) {
    const struct proto_gen *g = j->gp;
    struct xd_sampler_params sp = xd_sampler_params_default();
    sp.temperature = (float)g->temperature;
    sp.top_k = g->top_k;
    sp.top_p = (float)g->top_p;
    sp.min_p = (float)g->min_p;
    sp.seed = seed;
    sp.repetition_penalty = (float)g->repetition_penalty;
    sp.presence_penalty = (float)g->presence_penalty;
    sp.frequency_penalty = (float)g->frequency_penalty;
    for (size_t i = 0; i < g->n_logit_bias; i++)
        bias[i] = (struct xd_logit_bias){g->logit_bias[i].token, g->logit_bias[i].bias};
    sp.logit_bias = bias;
    sp.n_logit_bias = g->n_logit_bias;
    sp.n_logprobs = j->logprobs ? j->n_top : 0;
    return (struct xd_gen_params){
        .sampler = sp,
        .n = g->n,
        .max_tokens = j->max_tokens,
        .ignore_eos = g->ignore_eos,
        .logprobs = j->logprobs,
        .prompt_logprobs = j->echo && j->logprobs,
        .stop = (const char *const *)g->stop,
        .stop_len = g->stop_len,
        .n_stop = g->n_stop,
    };
}

void srv_job_submit(struct srv_job *j) {
    struct srv *s = j->srv;
    struct srv_conn *c = j->conn;
    struct proto_error e = {0};
    struct xd_engine_stats es;
    xd_engine_stats(s->engine, &es);
    /* the queue is what waits beyond the free slots (a request is queued until the engine's
     * next step admits it, even when slots are free) */
    int64_t free_slots = es.n_parallel - es.slots_used;
    if (es.waiting + (int64_t)j->n_prompts > s->cfg.max_queue + free_slots) {
        proto_error_set(&e, 429, NULL, "queue_full",
                        "The server is busy (request queue full); retry after a moment");
        srv_job_fail(j, 0, &e);
        return;
    }
    for (size_t k = 0; k < j->n_prompts * (size_t)j->n; k++)
        j->choices[k].lp.exact_top = j->exact_top;
    /* ids and seeds: no seed given means a fresh one per request */
    uint64_t x = s->id_seed ^ ++s->id_counter;
    uint64_t a = splitmix64(&x), b = splitmix64(&x);
    snprintf(j->id, sizeof j->id, "%s%016" PRIx64 "%08" PRIx64, j->fmt->id_prefix, a, b >> 32);
    j->created = (int64_t)time(NULL);
    uint64_t seed = j->gp->has_seed ? j->gp->seed : splitmix64(&x);
    struct xd_logit_bias *bias = calloc(j->gp->n_logit_bias + 1, sizeof *bias);
    if (!bias) {
        srv_job_fail(j, XD_E_NOMEM, &e);
        return;
    }
    int rc = 0;
    for (size_t p = 0; p < j->n_prompts && !rc; p++) {
        /* chat's default max_tokens: the rest of the context after this prompt */
        int32_t saved = j->max_tokens;
        if (j->max_tokens < 0)
            j->max_tokens = s->limits.max_prompt_tokens - (int32_t)j->prompts[p].ids.n;
        struct xd_gen_params gp = gen_params(j, seed, bias);
        j->max_tokens = saved;
        rc = xd_gen_create(&gp, j->prompts[p].ids.ids, j->prompts[p].ids.n, j, &j->prompts[p].gen);
    }
    free(bias);
    for (size_t p = 0; p < j->n_prompts && !rc; p++) {
        rc = xd_engine_submit(s->engine, j->prompts[p].gen);
        if (!rc) j->n_live++;
    }
    if (rc && j->n_live == 0) {
        if (rc == -EAGAIN)
            proto_error_set(&e, 429, NULL, "queue_full", "The request queue is full");
        else if (rc == -ESHUTDOWN)
            proto_error_set(&e, 503, NULL, "shutting_down", "Shutting down");
        srv_job_fail(j, rc, &e);
        return;
    }
    /* gens created but not submitted after a failure are freed with the job */
    for (size_t p = 0; rc && p < j->n_prompts; p++) {
        struct xd_gen *g = j->prompts[p].gen;
        if (g && xd_gen_info(g)->t_submit)
            xd_engine_cancel(s->engine, g);
        else if (g) {
            xd_gen_destroy(g);
            j->prompts[p].gen = NULL;
        }
    }
    if (rc) j->status = rc;
    s->n_jobs++;
    srv_conn_set_job(c, j, job_abort);
    if (j->stream) srv_conn_stream_begin(c, 200, "text/event-stream");
}
