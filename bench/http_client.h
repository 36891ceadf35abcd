/* http_client.h - a small HTTP/1.1 client on libuv for the load generator: one target address,
 * keep-alive connections reused LIFO, responses parsed with llhttp and handed over as status,
 * body bytes (de-chunked) and exactly one completion per request.
 */
#ifndef XD_HTTP_CLIENT_H
#define XD_HTTP_CLIENT_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- URLs (pure) ---------------------------------------------------------------------------- */

struct xd_http_url {
    char host[256];        /* as written, without IPv6 brackets */
    char port[8];          /* decimal, "80" when absent */
    char host_header[300]; /* the Host header value: host[:port] as the user wrote it */
    char path[2048];       /* starts with '/'; "" when the URL has no path */
};

/* Parses "http://HOST[:PORT][/PATH]" (HOST a name, an IPv4 literal or [IPv6]). Returns 0,
 * XD_E_UNSUPPORTED for another scheme (https), or XD_E_INVALID; u is undefined on failure. */
int xd_http_url_parse(const char *url, struct xd_http_url *u);

/* ---- the client ----------------------------------------------------------------------------- */

struct xd_http_req;
struct xd_http_conn;

/* Response headers are complete: r->status is set. */
typedef void (*xd_http_status_cb)(struct xd_http_req *r);
/* A piece of the (de-chunked) body. Return 0 to go on, or a negative error to fail the request
 * with it (its connection closes). */
typedef int (*xd_http_body_cb)(struct xd_http_req *r, const char *p, size_t n);
/* The request ended: err 0 when the whole response arrived, else a negative libuv/errno code
 * (UV_ECONNREFUSED, UV_EOF for a connection closed before the response ended, the code given
 * to xd_http_cancel, or the body callback's error). Called exactly once per started request,
 * never from inside xd_http_start(). */
typedef void (*xd_http_done_cb)(struct xd_http_req *r, int err);

enum xd_http_req_state { XD_HTTP_REQ_NEW, XD_HTTP_REQ_ACTIVE, XD_HTTP_REQ_DONE };

struct xd_http_req {
    /* set by the caller before xd_http_start */
    const char *bytes; /* the whole request (head and body); must outlive the request */
    size_t len;
    xd_http_status_cb on_status; /* may be NULL */
    xd_http_body_cb on_body;     /* may be NULL */
    xd_http_done_cb on_done;
    void *data;
    /* set by the client */
    enum xd_http_req_state state;
    int status;        /* HTTP status once the headers arrived, else 0 */
    bool got_response; /* a byte of the response arrived */
    bool retried;      /* moved once to a fresh connection after a stale keep-alive one */
    bool reused;       /* sent on a kept-alive connection */
    struct xd_http_conn *conn;
};

struct xd_http_client {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    struct xd_http_conn *conns; /* every open connection (doubly linked) */
    struct xd_http_conn *idle;  /* idle keep-alive connections, most recent first */
    size_t n_conns, n_idle;
    uint64_t n_connects; /* connections opened so far */
    size_t max_idle;     /* idle connections kept; more are closed */
};

/* Prepares c for the address addr (IPv4 or IPv6). Cannot fail. */
void xd_http_client_init(struct xd_http_client *c, uv_loop_t *loop, const struct sockaddr *addr,
                         size_t max_idle);
/* Sends r on an idle connection or a new one. 0 when started (on_done will follow), or a
 * negative error with nothing started and no callback (r unchanged but for state). */
int xd_http_start(struct xd_http_client *c, struct xd_http_req *r);
/* Fails an active request with err (< 0): its connection closes and on_done(r, err) follows
 * from the close callback. Does nothing unless r is active. */
void xd_http_cancel(struct xd_http_req *r, int err);
/* Closes every connection (active requests fail with UV_ECANCELED); the loop then runs until
 * the handles are gone. Safe to call twice. */
void xd_http_client_close(struct xd_http_client *c);
/* Structural checks for assert() and the tests: list links, counts, request back-pointers. */
bool xd_http_client_check_invariants(const struct xd_http_client *c);

#endif
