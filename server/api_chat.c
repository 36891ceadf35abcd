/* api_chat.c - POST /v1/chat/completions: decode the request (proto_chat.c), render the
 * conversation with the model's chat template, tokenize it, and hand the rest to the shared
 * generation job (srv_job.c) with the chat encoders. One conversation is one prompt; n choices
 * are n sequences over it.
 *
 * The prompt is made as llama.cpp's server makes it: the template gets bos_token / eos_token as
 * the vocabulary's token texts and add_generation_prompt true; when the vocabulary adds BOS
 * itself (add_bos_token) a BOS text the template printed at the start is cut first, and an EOS
 * text at the end likewise when it adds EOS (common/chat.cpp does the same), then the text is
 * tokenized with special tokens recognised and BOS/EOS added per the vocabulary - so a template
 * that prints bos_token never yields two BOS tokens, and one that does not still gets the BOS
 * the model expects. Special-token text inside a message is recognised too, as llama.cpp and
 * vLLM do it: the template's output is one string by then.
 *
 * A model without a template is served with ChatML (chat_template.h's documented fallback,
 * also llama.cpp's); a model whose template fails to load is still served, but this endpoint
 * answers 500 with the load error (srv.c loads it). A template that raises on a request
 * (raise_exception, e.g. roles that do not alternate) is the client's 400 with the template's
 * own message. Not here: tools, response formats other than text (400s from the decoder).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "chat_template.h"
#include "conn.h"
#include "proto_chat.h"
#include "srv.h"
#include "srv_job.h"
#include "xd_error.h"

static void req_free(void *r) {
    proto_chat_req_free(r);
    free(r);
}

/* Streaming: every choice opens with the assistant role. */
static int open_choice(const struct srv_job *j, size_t k, struct proto_buf *out) {
    struct proto_meta m = srv_job_meta(j);
    return proto_chat_role_chunk(&m, (int32_t)k, j->gp->include_usage, out);
}

static const struct srv_job_fmt chat_fmt = {
    .route = SRV_ROUTE_CHAT,
    .prompt_param = "messages",
    .id_prefix = "chatcmpl-",
    .open = open_choice,
    .chunk = proto_chat_chunk,
    .usage_chunk = proto_chat_usage_chunk,
    .whole = proto_chat_encode,
    .req_free = req_free,
};

/* Renders r's conversation and tokenizes it into the job's prompt. 0 or the error in e. */
static int make_prompt(struct srv_job *j, const struct proto_chat_req *r, struct proto_error *e) {
    const struct srv *s = j->srv;
    const struct xd_tokenizer *tok = s->model->tok;
    struct xd_chat_render_opts o = {.add_generation_prompt = true,
                                    .bos_token = s->bos_text,
                                    .eos_token = s->eos_text,
                                    .vars = r->template_kwargs};
    char err[384], *text = NULL;
    size_t len = 0;
    int rc = xd_chat_template_render(s->chat_tpl, r->messages, &o, &text, &len, err, sizeof err);
    if (rc == -ENOMEM || rc == XD_E_NOMEM) return XD_E_NOMEM;
    if (rc) {
        proto_error_set(e, 400, "messages", "chat_template_error",
                        "The model's chat template rejected the conversation: %s", err);
        return XD_E_INVALID;
    }
    const char *p = text;
    size_t nb = strlen(s->bos_text), ne = strlen(s->eos_text);
    if (xd_tokenizer_add_bos(tok) && nb && len >= nb && !memcmp(p, s->bos_text, nb)) {
        p += nb;
        len -= nb;
    }
    if (xd_tokenizer_add_eos(tok) && ne && len >= ne && !memcmp(p + len - ne, s->eos_text, ne))
        len -= ne;
    rc = srv_job_tokenize(j, 0, p, len, true, "messages", e);
    free(text);
    return rc;
}

void srv_api_chat(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    struct proto_error e = {0};
    struct srv_job *j = srv_job_create(c, &chat_fmt);
    if (!j) return;
    struct proto_chat_req *r = malloc(sizeof *r);
    if (!r) {
        srv_job_fail(j, XD_E_NOMEM, &e);
        return;
    }
    if (proto_chat_decode(req->body.data ? req->body.data : "", req->body.len, &s->limits, r, &e)) {
        free(r);
        srv_job_fail(j, XD_E_INVALID, &e);
        return;
    }
    int rc = srv_job_begin(j, r, &r->gen, 1, &e);
    j->logprobs = r->logprobs;
    j->n_top = r->top_logprobs;
    j->exact_top = true;
    if (!rc && !s->chat_tpl) {
        proto_error_set(&e, 500, NULL, "chat_template_error",
                        "This model's chat template could not be loaded: %s", s->chat_tpl_err);
        rc = XD_E_TEMPLATE;
    }
    if (!rc) rc = make_prompt(j, r, &e);
    if (!rc) rc = srv_job_prompt_ready(j, 0, &e);
    if (rc) {
        srv_job_fail(j, rc, &e);
        return;
    }
    srv_job_submit(j);
}
