/* api_info.c - the small GET endpoints: /v1/models (OpenAI's list shape), /health (200 when
 * the model serves, 503 while it loads or the server drains) and /metrics (Prometheus text).
 * They answer at once from loop-thread state and an engine stats snapshot; nothing here waits.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "conn.h"
#include "srv.h"

void srv_api_models(struct srv_conn *c, const struct srv_http_req *req) {
    struct srv *s = c->srv;
    json_t *m = json_object(), *root = json_object(), *data = json_array();
    json_object_set_new(m, "id", json_string(s->cfg.model_name));
    json_object_set_new(m, "object", json_string("model"));
    json_int_t created = (json_int_t)(s->metrics.start_ns / 1000000000u);
    json_object_set_new(m, "created", json_integer(created));
    json_object_set_new(m, "owned_by", json_string("expertd"));
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
    struct proto_buf b;
    proto_buf_init(&b);
    if (srv_metrics_render(&s->metrics, &g, s->engine ? &es : NULL, &b)) {
        proto_buf_free(&b);
        srv_conn_close(c);
        return;
    }
    srv_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, "");
    proto_buf_free(&b);
}
