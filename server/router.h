/* router.h - the route table: (method, path) -> handler, and the API-key check.
 *
 * Pure: a lookup over a static table, usable by the server and the fuzzer alike. A path that
 * no row has is a 404; a path some row has with another method is a 405 (with the allowed
 * method named). The query string is ignored for matching.
 */
#ifndef XD_ROUTER_H
#define XD_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "http_parse.h"
#include "proto_error.h"

enum srv_route_id {
    SRV_ROUTE_COMPLETIONS,
    SRV_ROUTE_CHAT,
    SRV_ROUTE_MODELS,
    SRV_ROUTE_PROPS,
    SRV_ROUTE_HEALTH,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_OTHER, /* not a route: unknown paths, for the metrics label */
    SRV_ROUTE__N
};

struct srv_conn;
typedef void (*srv_handler_fn)(struct srv_conn *c, const struct srv_http_req *req);

struct srv_route {
    enum srv_route_id id;
    int method;          /* llhttp_method_t */
    const char *path;
    bool needs_auth;     /* the API key, when the server has one */
    bool needs_model;    /* 503 while the model loads */
    srv_handler_fn handler;
};

/* The route for a request, or NULL with e set (404 unknown path, 405 wrong method; allow gets
 * the allowed method's name for the Allow header). */
const struct srv_route *srv_route_find(const struct srv_http_req *req, struct proto_error *e,
                                       const char **allow);
/* The endpoint label of a route id ("/v1/completions", ..., "other"). */
const char *srv_route_name(enum srv_route_id id);

/* True when authorization is "Bearer <key>" (scheme case-insensitive). The key comparison takes
 * time independent of where the first difference is. key NULL or "": always true. */
bool srv_auth_ok(const char *key, const char *authorization, size_t len);

/* Request-path checks shared by the server and the fuzzer: route lookup, then the API key.
 * Returns the route, or NULL with e set (404, 405, 401). */
const struct srv_route *srv_route_request(const struct srv_http_req *req, const char *api_key,
                                          struct proto_error *e, const char **allow);

#endif
