/* api_info.c - the small GET endpoints: /v1/models (OpenAI's list shape, plus a "meta" object
 * naming the chat template in use), /props (llama.cpp's: the template's source), /health (200 when
 * the model serves, 503 while it loads or the server drains) and /metrics (Prometheus text).
 * They answer at once from loop-thread state and an engine stats snapshot; nothing here waits.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "conn.h"
#include "srv.h"

/* Which chat template serves /v1/chat/completions: {"chat_template": origin, "chat_template_
 * caps": [...], "n_ctx": ...}; origin is "gguf", "file", "chatml-fallback" or "error". */
static json_t *chat_meta(const struct srv *s) {
    json_t *o = json_object(), *caps = json_array();
    const struct xd_chat_template *t = s->chat_tpl;
    json_object_set_new(o, "chat_template",
                        json_string(t ? xd_chat_template_origin_name(xd_chat_template_origin(t))
                                      : "error"));
    unsigned c = t ? xd_chat_template_caps(t) : 0;
    if (c & XD_CHAT_TPL_SYSTEM) json_array_append_new(caps, json_string("system"));
    if (c & XD_CHAT_TPL_TOOLS) json_array_append_new(caps, json_string("tools"));
    if (c & XD_CHAT_TPL_THINKING) json_array_append_new(caps, json_string("enable_thinking"));
    json_object_set_new(o, "chat_template_caps", caps);
    json_object_set_new(o, "n_ctx", json_integer(s->limits.max_prompt_tokens));
    json_object_set_new(o, "n_vocab", json_integer(s->limits.n_vocab));
    return o;
}

/* GET /props, after llama.cpp's server: the chat template's source and origin, the texts it
 * gets as bos_token / eos_token, the context and the slots. */
void srv_api_props(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    json_t *o = json_object();
    const struct xd_chat_template *t = s->chat_tpl;
    json_object_set_new(o, "model", json_string(s->cfg.model_name));
    json_object_set_new(o, "chat_template", t ? json_string(xd_chat_template_source(t, NULL))
                                              : json_null());
    json_object_set_new(o, "chat_template_origin",
                        json_string(t ? xd_chat_template_origin_name(xd_chat_template_origin(t))
                                      : "error"));
    if (!t) json_object_set_new(o, "chat_template_error", json_string(s->chat_tpl_err));
    json_object_set_new(o, "bos_token", json_string(s->bos_text ? s->bos_text : ""));
    json_object_set_new(o, "eos_token", json_string(s->eos_text ? s->eos_text : ""));
    json_object_set_new(o, "n_ctx", json_integer(s->limits.max_prompt_tokens));
    json_object_set_new(o, "total_slots", json_integer(s->limits.max_n));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body) {
        srv_conn_close(c);
        return;
    }
    srv_conn_respond(c, 200, "application/json", body, strlen(body), "");
    free(body);
}

void srv_api_models(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    json_t *m = json_object(), *root = json_object(), *data = json_array();
    json_object_set_new(m, "id", json_string(s->cfg.model_name));
    json_object_set_new(m, "object", json_string("model"));
    json_int_t created = (json_int_t)(s->metrics.start_ns / 1000000000u);
    json_object_set_new(m, "created", json_integer(created));
    json_object_set_new(m, "owned_by", json_string("expertd"));
    if (s->model) json_object_set_new(m, "meta", chat_meta(s));
    json_array_append_new(data, m);
    json_object_set_new(root, "object", json_string("list"));
    json_object_set_new(root, "data", data);
    char *body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!body) {
        srv_conn_close(c);
        return;
    }
    srv_conn_respond(c, 200, "application/json", body, strlen(body), "");
    free(body);
}

void srv_api_health(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    if (s->state == SRV_READY) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        srv_conn_respond(c, 200, "application/json", ok, sizeof ok - 1, "");
    } else {
        static const char loading[] = "{\"status\":\"loading\"}\n";
        static const char draining[] = "{\"status\":\"draining\"}\n";
        const char *b = s->state == SRV_LOADING ? loading : draining;
        srv_conn_respond(c, 503, "application/json", b, strlen(b), "Retry-After: 5\r\n");
    }
}

void srv_api_metrics(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    struct xd_engine_stats es;
    if (s->engine) xd_engine_stats(s->engine, &es);
    struct srv_gauges g = {.connections = s->n_conns,
                           .ready = s->state == SRV_READY || s->state == SRV_DRAINING,
                           .draining = s->state == SRV_DRAINING};
    uint32_t *resident = NULL;
    struct xd_xc *xc = s->engine ? xd_engine_xc(s->engine) : NULL;
    if (xc && (resident = calloc((size_t)s->model->hp.n_layer, sizeof *resident))) {
        xd_xc_resident_per_layer(xc, resident); /* under the cache's lock */
        g.resident_per_layer = resident;
        g.n_layer = (int32_t)s->model->hp.n_layer;
    }
    struct proto_buf b;
    proto_buf_init(&b);
    int rc = srv_metrics_render(&s->metrics, &g, s->engine ? &es : NULL, &b);
    free(resident);
    if (rc) {
        proto_buf_free(&b);
        srv_conn_close(c);
        return;
    }
    srv_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, "");
    proto_buf_free(&b);
}
