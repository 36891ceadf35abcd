/* srv_job.h - a generation job: what /v1/completions and /v1/chat/completions share once a
 * request is decoded and its prompts tokenized. The job submits one engine request per prompt,
 * turns the engine's events into SSE chunks or one JSON response, and lives until every engine
 * request has ended. An endpoint differs only in its decoder, how it makes prompt tokens, and
 * its encoders - the srv_job_fmt table. Loop thread only.
 *
 * Job states:  FILLING --srv_job_submit ok--> RUNNING --last END--> (freed)
 *              FILLING --any failure--> (freed by srv_job_fail, which answers the client)
 *              RUNNING --client gone--> DETACHED (conn NULL, requests cancelled) --last END-->
 * In RUNNING and DETACHED every submitted engine request gets exactly one END, and the last
 * one frees the job, so no engine event can reach freed memory.
 */
#ifndef XD_SRV_JOB_H
#define XD_SRV_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "api_logprobs.h"
#include "engine.h"
#include "proto_completion.h"
#include "proto_gen.h"
#include "router.h"
#include "tokenizer.h"

struct srv;
struct srv_conn;
struct srv_http_req;

struct srv_job_prompt {
    struct xd_tokens ids;
    struct proto_buf echo; /* the prompt's text, for echo */
    struct srv_lp_list lp; /* echo + logprobs: one entry per prompt token */
    struct xd_gen *gen;    /* NULL once it ended (or was never submitted) */
};

struct srv_job_choice {
    struct proto_buf text; /* generated text (non-streaming) */
    struct srv_lp_list lp; /* generated tokens' logprobs */
    uint32_t offset;       /* text_offset of the next token */
    const char *finish;    /* "stop", "length" or NULL */
    bool started;          /* streaming: the choice's opening chunk went out */
};

struct srv_job;

/* What makes an endpoint: its route (metrics), id prefix and encoders. */
struct srv_job_fmt {
    enum srv_route_id route;
    const char *id_prefix;    /* "cmpl-", "chatcmpl-" */
    const char *prompt_param; /* the field errors about the prompt name: "prompt", "messages" */
    /* streaming: the chunk that opens choice k (completions: the echo; chat: the role) */
    int (*open)(const struct srv_job *j, size_t k, struct proto_buf *out);
    /* proto_completion_chunk's contract */
    int (*chunk)(const struct proto_meta *m, const struct proto_choice *c, bool usage_null,
                 struct proto_buf *out);
    int (*usage_chunk)(const struct proto_meta *m, const struct proto_usage *u,
                       struct proto_buf *out);
    int (*whole)(const struct proto_meta *m, const struct proto_choice *choices, size_t n_choices,
                 const struct proto_usage *u, struct proto_buf *out);
    void (*req_free)(void *req); /* frees the endpoint's decoded request */
};

struct srv_job {
    struct srv *srv;
    struct srv_conn *conn; /* NULL once the client is gone */
    const struct srv_job_fmt *fmt;
    void *req;                  /* the endpoint's decoded request (fmt->req_free) */
    const struct proto_gen *gp; /* its generation fields (inside req) */
    struct srv_job_prompt *prompts;
    size_t n_prompts;
    int32_t n;
    struct srv_job_choice *choices; /* n_prompts * n */
    size_t n_live;                  /* submitted, END not yet seen */
    int status;                     /* first failure of an engine request */
    bool stream, logprobs, echo;
    bool exact_top;     /* top alternatives exactly as asked (chat), not + the chosen one */
    int32_t n_top;      /* top alternatives per token */
    int32_t max_tokens; /* per sequence; -1: the rest of the context (chat's default) */
    char id[40];
    int64_t created;
    uint64_t t_recv;
    int64_t prompt_tokens, completion_tokens;
};

/* A new job for connection c with endpoint fmt; NULL after answering 503 (out of memory). */
struct srv_job *srv_job_create(struct srv_conn *c, const struct srv_job_fmt *fmt);

/* Sets the decoded request (owned from now on), checks its model against the served one and
 * allocates n_prompts prompts of gp->n choices each. 0, or the error to answer in e. */
int srv_job_begin(struct srv_job *j, void *req, const struct proto_gen *gp, size_t n_prompts,
                  struct proto_error *e);

/* Tokenizes text as a model input (BOS per the vocabulary, special tokens recognised when
 * parse_special) into prompt p, keeping the text for echo. 0 or the error in e (param names
 * the field). */
int srv_job_tokenize(struct srv_job *j, size_t p, const char *text, size_t len, bool parse_special,
                     const char *param, struct proto_error *e);

/* Checks prompt p against the context (max_tokens -1 becomes what is left of it) and makes
 * its echo and prompt-logprob slots. 0 or the error in e. */
int srv_job_prompt_ready(struct srv_job *j, size_t p, struct proto_error *e);

/* Submits every prompt and attaches the job to its connection; from then on the job answers
 * by itself. On failure the client has been answered and the job freed. */
void srv_job_submit(struct srv_job *j);

/* Answers e (or the error rc stands for when e is not set) and frees the job. */
void srv_job_fail(struct srv_job *j, int rc, struct proto_error *e);
/* The drain deadline: cancel the job's engine requests but keep its connection, so that the
 * client still gets an explicit answer (503 "cancelled", or that error as the stream's last
 * event before [DONE]) once the engine has ended them. A job still FILLING is left alone (it
 * ends on its own). */
void srv_job_cancel(struct srv_job *j);

/* The engine mailbox's callback (srv.c drains into it): each event's user is its job. */
void srv_job_event(const struct xd_gen_event *ev, void *arg);

/* Id, time and model of the job's responses. */
struct proto_meta srv_job_meta(const struct srv_job *j);

#endif
