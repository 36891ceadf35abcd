/* proto_error.c - the OpenAI error body and the HTTP status tables.
 *
 * Two small tables, status -> reason phrase and status class -> OpenAI error type, so that every
 * module prints the same words. The body is built with jansson (string escaping is then
 * jansson's, not ours). It does not pick statuses: callers do, or xd_err_http_status() does for
 * engine codes.
 */
#include "proto_error.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xd_error.h"

struct status_row {
    int status;
    const char *reason;
};

static const struct status_row statuses[] = {
    {100, "Continue"},
    {200, "OK"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {411, "Length Required"},
    {413, "Payload Too Large"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {503, "Service Unavailable"},
    {505, "HTTP Version Not Supported"},
};

const char *proto_http_reason(int status) {
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].status == status) return statuses[i].reason;
    return "Unknown";
}

const char *proto_error_type(int status) {
    if (status == 401) return "authentication_error";
    if (status == 429) return "rate_limit_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

void proto_error_set(struct proto_error *e, int status, const char *param, const char *code,
                     const char *fmt, ...) {
    e->status = status;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* A JSON string of s, with bytes that are not valid UTF-8 (a message may quote request text cut
 * mid-character) replaced by '?'. */
static json_t *lossy_string(const char *s) {
    json_t *j = json_string(s);
    if (j) return j;
    size_t n = strlen(s);
    char *c = malloc(n + 1);
    if (!c) return NULL;
    for (size_t i = 0; i <= n; i++) c[i] = (s[i] & 0x80) ? '?' : s[i];
    j = json_string(c);
    free(c);
    return j;
}

int proto_error_encode(const struct proto_error *e, struct proto_buf *out) {
    json_t *inner = json_object(), *root = json_object();
    int rc = XD_E_NOMEM;
    if (!inner || !root) goto done;
    json_object_set_new(inner, "message", lossy_string(e->message));
    json_object_set_new(inner, "type", json_string(proto_error_type(e->status)));
    json_object_set_new(inner, "param", e->param[0] ? lossy_string(e->param) : json_null());
    json_object_set_new(inner, "code", e->code ? json_string(e->code) : json_null());
    json_object_set(root, "error", inner);
    char *s = json_dumps(root, JSON_COMPACT);
    if (s) {
        rc = proto_buf_puts(out, s);
        free(s);
    }
done:
    json_decref(inner);
    json_decref(root);
    return rc;
}
