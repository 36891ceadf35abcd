/* router.c - the route table and the API-key check. A linear scan over six rows beats any
 * cleverer structure at this size; the table is the one place that says which endpoints exist,
 * which need the key and which need the model. The handlers live in api_*.c. Not here: what a
 * handler does, CORS, HEAD requests (405 like any other method).
 */
#include "router.h"

#include <string.h>
#include <strings.h>

#include "api.h"

static const struct srv_route routes[] = {
    {SRV_ROUTE_COMPLETIONS, HTTP_POST, "/v1/completions", true, true, srv_api_completions},
    {SRV_ROUTE_CHAT, HTTP_POST, "/v1/chat/completions", true, true, srv_api_chat},
    {SRV_ROUTE_MODELS, HTTP_GET, "/v1/models", true, false, srv_api_models},
    {SRV_ROUTE_PROPS, HTTP_GET, "/props", true, true, srv_api_props},
    {SRV_ROUTE_HEALTH, HTTP_GET, "/health", false, false, srv_api_health},
    {SRV_ROUTE_METRICS, HTTP_GET, "/metrics", false, false, srv_api_metrics},
};

static const char *const route_names[SRV_ROUTE__N] = {
    [SRV_ROUTE_COMPLETIONS] = "/v1/completions",
    [SRV_ROUTE_CHAT] = "/v1/chat/completions",
    [SRV_ROUTE_MODELS] = "/v1/models",
    [SRV_ROUTE_PROPS] = "/props",
    [SRV_ROUTE_HEALTH] = "/health",
    [SRV_ROUTE_METRICS] = "/metrics",
    [SRV_ROUTE_OTHER] = "other",
};

const char *srv_route_name(enum srv_route_id id) {
    return id >= 0 && id < SRV_ROUTE__N ? route_names[id] : "other";
}

const struct srv_route *srv_route_find(const struct srv_http_req *req, struct proto_error *e,
                                       const char **allow) {
    const char *url = req->url.data ? req->url.data : "";
    size_t n = strcspn(url, "?#");
    const struct srv_route *path_match = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strlen(routes[i].path) != n || memcmp(routes[i].path, url, n)) continue;
        if (routes[i].method == req->method) return &routes[i];
        path_match = &routes[i];
    }
    const char *method = llhttp_method_name((llhttp_method_t)req->method);
    if (path_match) {
        *allow = llhttp_method_name((llhttp_method_t)path_match->method);
        proto_error_set(e, 405, NULL, "method_not_allowed",
                        "Method %s is not allowed for %s (use %s)", method, path_match->path,
                        *allow);
    } else {
        proto_error_set(e, 404, NULL, "not_found", "Invalid URL (%s %.*s)", method,
                        (int)(n > 200 ? 200 : n), url);
    }
    return NULL;
}

bool srv_auth_ok(const char *key, const char *authorization, size_t len) {
    if (!key || !*key) return true;
    if (!authorization || len < 7 || strncasecmp(authorization, "Bearer ", 7)) return false;
    const unsigned char *a = (const unsigned char *)authorization + 7;
    size_t alen = len - 7, klen = strlen(key);
    /* compare over the key's length whatever the input; the length difference is folded in */
    unsigned diff = (unsigned)(alen ^ klen);
    for (size_t i = 0; i < klen; i++) {
        unsigned char got = alen ? a[i < alen ? i : 0] : 0;
        diff |= (unsigned)(got ^ (unsigned char)key[i]);
    }
    return diff == 0 && alen > 0;
}

const struct srv_route *srv_route_request(const struct srv_http_req *req, const char *api_key,
                                          struct proto_error *e, const char **allow) {
    const struct srv_route *r = srv_route_find(req, e, allow);
    if (!r) return NULL;
    if (r->needs_auth &&
        !srv_auth_ok(api_key, req->authorization.data, req->authorization.len)) {
        proto_error_set(e, 401, NULL, "invalid_api_key",
                        "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'.");
        return NULL;
    }
    return r;
}
