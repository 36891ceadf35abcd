/* api_completions.c - POST /v1/completions: decode the request, make each prompt's tokens (text
 * is tokenized, token ids are taken as they are) and hand the rest to the shared generation job
 * (srv_job.c), with the completions encoders of proto_completion.c. A request with several
 * prompts is one job with one engine request per prompt; echo and prompt logprobs are this
 * endpoint's alone. Not here: best_of > n, suffix (both 400s from the decoder).
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "conn.h"
#include "proto_completion.h"
#include "srv.h"
#include "srv_job.h"
#include "xd_error.h"

static void req_free(void *r) {
    proto_completion_req_free(r);
    free(r);
}

/* Streaming echo: the prompt's text (and its logprobs) before the choice's first tokens. */
static int open_choice(const struct srv_job *j, size_t k, struct proto_buf *out) {
    if (!j->echo) return 0;
    const struct srv_job_prompt *p = &j->prompts[k / (size_t)j->n];
    struct proto_token_logprob *lp = calloc(p->lp.n + 1, sizeof *lp);
    struct proto_top_logprob *tops = calloc(p->lp.n_tops + 1, sizeof *tops);
    int rc = lp && tops ? 0 : XD_E_NOMEM;
    struct proto_choice ch = {.index = (int32_t)k,
                              .text = p->echo.data ? p->echo.data : "",
                              .len = p->echo.len,
                              .has_logprobs = j->logprobs};
    if (!rc && j->logprobs) {
        srv_lp_resolve(&p->lp, 0, p->lp.n, lp, tops);
        ch.lp = lp;
        ch.n_lp = p->lp.n;
    }
    struct proto_meta m = srv_job_meta(j);
    if (!rc) rc = proto_completion_chunk(&m, &ch, j->gp->include_usage, out);
    free(lp);
    free(tops);
    return rc;
}

static const struct srv_job_fmt completions_fmt = {
    .route = SRV_ROUTE_COMPLETIONS,
    .prompt_param = "prompt",
    .id_prefix = "cmpl-",
    .open = open_choice,
    .chunk = proto_completion_chunk,
    .usage_chunk = proto_completion_usage_chunk,
    .whole = proto_completion_encode,
    .req_free = req_free,
};

/* Token ids given by the client: taken as they are, detokenized for echo. */
static int take_ids(struct srv_job *j, size_t p, const struct proto_prompt *in) {
    struct srv_job_prompt *out = &j->prompts[p];
    if (!(out->ids.ids = malloc(in->n_tokens * sizeof *out->ids.ids))) return XD_E_NOMEM;
    memcpy(out->ids.ids, in->tokens, in->n_tokens * sizeof *out->ids.ids);
    out->ids.n = out->ids.cap = in->n_tokens;
    if (!j->echo) return 0;
    char *text = NULL;
    size_t len = 0;
    int rc = xd_detokenize(j->srv->model->tok, in->tokens, in->n_tokens, XD_DETOK_TEXT_START, &text,
                           &len);
    if (!rc) rc = proto_buf_append(&out->echo, text, len);
    free(text);
    return rc;
}

void srv_api_completions(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    struct proto_error e = {0};
    struct srv_job *j = srv_job_create(c, &completions_fmt);
    if (!j) return;
    struct proto_completion_req *r = malloc(sizeof *r);
    if (!r) {
        srv_job_fail(j, XD_E_NOMEM, &e);
        return;
    }
    if (proto_completion_decode(req->body.data ? req->body.data : "", req->body.len, &s->limits, r,
                                &e)) {
        free(r);
        srv_job_fail(j, XD_E_INVALID, &e);
        return;
    }
    int rc = srv_job_begin(j, r, &r->gen, r->n_prompts, &e);
    j->echo = r->echo;
    j->logprobs = r->logprobs >= 0;
    j->n_top = r->logprobs > 0 ? r->logprobs : 0;
    for (size_t p = 0; !rc && p < r->n_prompts; p++) {
        const struct proto_prompt *in = &r->prompts[p];
        rc = in->is_tokens ? take_ids(j, p, in)
                           : srv_job_tokenize(j, p, in->text, in->len, true, "prompt", &e);
        if (!rc) rc = srv_job_prompt_ready(j, p, &e);
    }
    if (rc) {
        srv_job_fail(j, rc, &e);
        return;
    }
    srv_job_submit(j);
}
