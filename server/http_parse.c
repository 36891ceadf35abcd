/* http_parse.c - request framing: llhttp does the HTTP grammar (chunked bodies included);
 * this file keeps the one request being parsed, enforces the size limits as bytes arrive, and
 * pauses llhttp after each complete message so pipelined requests are answered one at a time,
 * in order. Trade-off: one request at a time per connection means no parallelism inside a
 * pipelined connection (clients wanting that open more connections, as browsers do), but
 * responses are trivially in order and a connection never buffers more than one request.
 * It does not know routes, methods allowed, or JSON; it answers nothing itself.
 */
#include "http_parse.h"

#include <string.h>
#include <strings.h>

struct srv_http_limits srv_http_limits_default(void) {
    return (struct srv_http_limits){
        .max_header_bytes = 16 * 1024,
        .max_headers = 100,
        .max_body_bytes = 8u << 20,
    };
}

static struct srv_http_parser *P(llhttp_t *h) { return h->data; }

/* Stops parsing with an HTTP status; llhttp then returns HPE_USER. */
static int fail(struct srv_http_parser *p, int status, const char *reason) {
    p->error_status = status;
    p->error_reason = reason;
    return HPE_USER;
}

static int count_header_bytes(struct srv_http_parser *p, size_t n) {
    p->header_bytes += n;
    if (p->header_bytes > p->lim.max_header_bytes)
        return fail(p, 431, "request header fields too large");
    return 0;
}

static void req_reset(struct srv_http_req *r) {
    proto_buf_reset(&r->url);
    proto_buf_reset(&r->authorization);
    proto_buf_reset(&r->content_type);
    proto_buf_reset(&r->expect);
    proto_buf_reset(&r->body);
    r->method = 0;
    r->keep_alive = false;
    r->has_length = false;
    r->content_length = 0;
    r->upgrade = false;
}

static int on_message_begin(llhttp_t *h) {
    struct srv_http_parser *p = P(h);
    req_reset(&p->req);
    p->header_bytes = p->n_headers = 0;
    p->state = SRV_HTTP_HEADERS;
    return 0;
}

static int on_url(llhttp_t *h, const char *at, size_t n) {
    struct srv_http_parser *p = P(h);
    if (count_header_bytes(p, n)) return HPE_USER;
    if (proto_buf_append(&p->req.url, at, n)) return fail(p, 431, "out of memory");
    return 0;
}

static int on_header_field(llhttp_t *h, const char *at, size_t n) {
    struct srv_http_parser *p = P(h);
    if (count_header_bytes(p, n)) return HPE_USER;
    if (proto_buf_append(&p->field, at, n)) return fail(p, 431, "out of memory");
    return 0;
}

static int on_header_field_complete(llhttp_t *h) {
    struct srv_http_parser *p = P(h);
    if (++p->n_headers > p->lim.max_headers) return fail(p, 431, "too many header fields");
    const char *f = p->field.data ? p->field.data : "";
    struct srv_http_req *r = &p->req;
    p->value = !strcasecmp(f, "authorization")  ? &r->authorization
               : !strcasecmp(f, "content-type") ? &r->content_type
               : !strcasecmp(f, "expect")       ? &r->expect
                                                : NULL;
    /* a repeated header of interest is a client bug: keep the last value only */
    if (p->value) proto_buf_reset(p->value);
    proto_buf_reset(&p->field);
    return 0;
}

static int on_header_value(llhttp_t *h, const char *at, size_t n) {
    struct srv_http_parser *p = P(h);
    if (count_header_bytes(p, n)) return HPE_USER;
    if (p->value && proto_buf_append(p->value, at, n)) return fail(p, 431, "out of memory");
    return 0;
}

static int on_header_value_complete(llhttp_t *h) {
    P(h)->value = NULL;
    return 0;
}

static int on_headers_complete(llhttp_t *h) {
    struct srv_http_parser *p = P(h);
    struct srv_http_req *r = &p->req;
    r->method = llhttp_get_method(h);
    r->http_major = llhttp_get_http_major(h);
    r->http_minor = llhttp_get_http_minor(h);
    if (r->http_major != 1) return fail(p, 505, "HTTP version not supported");
    r->has_length = (h->flags & F_CONTENT_LENGTH) != 0;
    r->content_length = r->has_length ? h->content_length : 0;
    if (r->has_length && r->content_length > p->lim.max_body_bytes)
        return fail(p, 413, "request body too large");
    p->state = SRV_HTTP_BODY;
    if (p->on_headers) {
        int status = p->on_headers(p->arg, r);
        if (status) return fail(p, status, "rejected at headers");
    }
    return 0;
}

static int on_body(llhttp_t *h, const char *at, size_t n) {
    struct srv_http_parser *p = P(h);
    if (p->req.body.len + n > p->lim.max_body_bytes) return fail(p, 413, "request body too large");
    if (proto_buf_append(&p->req.body, at, n)) return fail(p, 413, "out of memory");
    return 0;
}

static int on_message_complete(llhttp_t *h) {
    struct srv_http_parser *p = P(h);
    p->req.keep_alive = llhttp_should_keep_alive(h) != 0;
    p->req.upgrade = h->upgrade != 0;
    if (p->req.upgrade) p->req.keep_alive = false;
    p->state = SRV_HTTP_DONE;
    return HPE_PAUSED; /* one request at a time: the caller answers, then srv_http_next() */
}

void srv_http_init(struct srv_http_parser *p, const struct srv_http_limits *lim,
                   srv_http_headers_cb on_headers, void *arg) {
    memset(p, 0, sizeof *p);
    p->lim = lim ? *lim : srv_http_limits_default();
    p->on_headers = on_headers;
    p->arg = arg;
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_url = on_url;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_field_complete = on_header_field_complete;
    p->settings.on_header_value = on_header_value;
    p->settings.on_header_value_complete = on_header_value_complete;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    llhttp_init(&p->llhttp, HTTP_REQUEST, &p->settings);
    p->llhttp.data = p;
    p->state = SRV_HTTP_IDLE;
}

void srv_http_free(struct srv_http_parser *p) {
    proto_buf_free(&p->req.url);
    proto_buf_free(&p->req.authorization);
    proto_buf_free(&p->req.content_type);
    proto_buf_free(&p->req.expect);
    proto_buf_free(&p->req.body);
    proto_buf_free(&p->field);
}

enum srv_http_state srv_http_execute(struct srv_http_parser *p, const char *data, size_t len,
                                     size_t *used) {
    *used = 0;
    if (p->state == SRV_HTTP_DONE || p->state == SRV_HTTP_ERROR) return p->state;
    if (len == 0) return p->state;
    llhttp_errno_t err = llhttp_execute(&p->llhttp, data, len);
    if (err == HPE_OK) {
        *used = len;
        return p->state;
    }
    const char *pos = llhttp_get_error_pos(&p->llhttp);
    *used = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
    if (err == HPE_PAUSED && p->state == SRV_HTTP_DONE) return p->state;
    if (err == HPE_PAUSED_UPGRADE && p->state == SRV_HTTP_DONE) return p->state;
    if (!p->error_status) { /* llhttp's own error (a callback's keeps its status) */
        p->error_status = 400;
        p->error_reason = llhttp_get_error_reason(&p->llhttp);
    }
    p->state = SRV_HTTP_ERROR;
    return p->state;
}

enum srv_http_state srv_http_eof(struct srv_http_parser *p) {
    if (p->state == SRV_HTTP_HEADERS || p->state == SRV_HTTP_BODY) {
        /* a body delimited by EOF does not exist for requests: anything half-read is broken */
        p->error_status = 400;
        p->error_reason = "connection closed in the middle of a request";
        p->state = SRV_HTTP_ERROR;
    }
    return p->state;
}

void srv_http_next(struct srv_http_parser *p) {
    if (p->state != SRV_HTTP_DONE) return;
    if (p->req.upgrade) {
        p->state = SRV_HTTP_ERROR; /* nothing after an upgrade request can be parsed as HTTP */
        p->error_status = 400;
        p->error_reason = "upgrade is not supported";
        return;
    }
    llhttp_resume(&p->llhttp);
    req_reset(&p->req);
    p->state = SRV_HTTP_IDLE;
}

bool srv_http_check_invariants(const struct srv_http_parser *p) {
    if (p->state == SRV_HTTP_ERROR) return p->error_status >= 400 && p->error_status < 600;
    if (p->error_status) return false;
    if (p->req.body.len > p->lim.max_body_bytes) return false;
    if (p->state != SRV_HTTP_IDLE && p->header_bytes > p->lim.max_header_bytes) return false;
    if (p->state == SRV_HTTP_IDLE && (p->req.body.len || p->req.url.len)) return false;
    return true;
}
