/* http_client.c - the load generator's HTTP/1.1 client: libuv TCP, llhttp in response mode,
 * keep-alive connection reuse, and exactly one completion per request.
 *
 * Trade-off: one request per connection at a time (no pipelining), and a connection pool that
 * grows to the number of requests in flight - the way vLLM's aiohttp client and curl behave, so
 * the server sees the load a real client fleet gives it. A request that a server-closed
 * keep-alive connection fails before any response byte (EOF, ECONNRESET, EPIPE) is moved once
 * to a fresh connection, because that race is the client's, not the server's, failure. Not
 * here: TLS, redirects (the client only ever talks to the one address it was given), proxies,
 * request bodies streamed from disk, responses to HEAD.
 *
 * Connection lifecycle:
 *
 *     start_fresh         connect_cb ok            message complete, keep-alive
 *   ------------> CONNECTING ---------> BUSY ------------------------------> IDLE
 *                     |                 |  ^                                  |
 *                     |                 |  +---------- xd_http_start ---------+
 *                     |                 |                                     |
 *                     +---- error, EOF, cancel, no keep-alive, bytes while idle +
 *                                       v
 *                                    CLOSING --close_cb--> freed
 *
 *   CONNECTING  req attached; connect_req in flight.           (start_fresh)
 *   BUSY        req attached; write maybe in flight; reading.  (connect_cb, xd_http_start)
 *   IDLE        no req; on the idle list; reading, so a close by the server is noticed.
 *                                                               (conn_complete)
 *   CLOSING     uv_close called; a req still attached gets on_done(close_err) in close_cb,
 *               then the memory is freed.                       (conn_close, conn_fail)
 *
 * A request is NEW until xd_http_start, ACTIVE while a connection holds it, DONE after its one
 * on_done call.
 */
#include "http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "xd_error.h"

enum conn_state { CONN_CONNECTING, CONN_BUSY, CONN_IDLE, CONN_CLOSING };

struct xd_http_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    llhttp_t parser;
    struct xd_http_client *client;
    struct xd_http_req *req;
    enum conn_state state;
    struct xd_http_conn *prev, *next; /* client->conns */
    struct xd_http_conn *idle_next;   /* client->idle, while IDLE */
    bool writing;                     /* write_req in flight */
    bool message_done;                /* the response ended (parser paused there) */
    bool keep_alive;                  /* the response allows another request */
    int user_err;                     /* the body callback's error */
    int close_err;                    /* what an attached request gets from close_cb */
    char rbuf[64 * 1024];
};

/* ---- URLs ----------------------------------------------------------------------------------- */

int xd_http_url_parse(const char *url, struct xd_http_url *u) {
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, "http://", 7)) return strstr(url, "://") ? XD_E_UNSUPPORTED : XD_E_INVALID;
    for (const char *q = url; *q; q++) /* no spaces or controls: they would end up in headers */
        if ((unsigned char)*q <= ' ' || *q == 0x7f) return XD_E_INVALID;
    const char *p = url + 7, *auth = p;
    const char *host, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) return XD_E_INVALID;
        p = host_end + 1;
    } else {
        host = p;
        while (*p && *p != ':' && *p != '/' && *p != '?' && *p != '#' && *p != '@') p++;
        host_end = p;
    }
    if (*p == '@' || host_end == host || (size_t)(host_end - host) >= sizeof u->host)
        return XD_E_INVALID;
    memcpy(u->host, host, (size_t)(host_end - host));
    if (*p == ':') {
        p++;
        unsigned long port = 0;
        size_t digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
            port = port * 10 + (unsigned long)(*p - '0');
        if (digits == 0 || port == 0 || port > 65535) return XD_E_INVALID;
        snprintf(u->port, sizeof u->port, "%lu", port);
    } else {
        snprintf(u->port, sizeof u->port, "80");
    }
    if (*p && *p != '/') return XD_E_INVALID;
    if ((size_t)(p - auth) >= sizeof u->host_header || strlen(p) >= sizeof u->path)
        return XD_E_INVALID;
    memcpy(u->host_header, auth, (size_t)(p - auth));
    snprintf(u->path, sizeof u->path, "%s", p);
    return 0;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void idle_remove(struct xd_http_client *c, struct xd_http_conn *k) {
    for (struct xd_http_conn **pp = &c->idle; *pp; pp = &(*pp)->idle_next)
        if (*pp == k) {
            *pp = k->idle_next;
            k->idle_next = NULL;
            c->n_idle--;
            return;
        }
}

static void close_cb(uv_handle_t *h) {
    struct xd_http_conn *k = h->data;
    struct xd_http_client *c = k->client;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->conns = k->next;
    if (k->next) k->next->prev = k->prev;
    c->n_conns--;
    struct xd_http_req *r = k->req;
    int err = k->close_err ? k->close_err : UV_ECANCELED;
    free(k);
    if (r) {
        r->conn = NULL;
        r->state = XD_HTTP_REQ_DONE;
        r->on_done(r, err);
    }
}

/* -> CLOSING. An attached request is failed with k->close_err from close_cb. */
static void conn_close(struct xd_http_conn *k) {
    if (k->state == CONN_CLOSING) return;
    if (k->state == CONN_IDLE) idle_remove(k->client, k);
    k->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&k->tcp, close_cb);
}

static int start_fresh(struct xd_http_client *c, struct xd_http_req *r);

/* The request on k failed with err. A request that a stale keep-alive connection lost before
 * any response byte moves once to a fresh connection; otherwise k closes and the request gets
 * err from close_cb. */
static void conn_fail(struct xd_http_conn *k, int err) {
    struct xd_http_req *r = k->req;
    bool stale = err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE;
    if (r && stale && r->reused && !r->retried && !r->got_response) {
        k->req = NULL;
        r->conn = NULL;
        r->retried = true;
        conn_close(k);
        int rc = start_fresh(k->client, r);
        if (rc) {
            r->state = XD_HTTP_REQ_DONE;
            r->on_done(r, rc);
        }
        return;
    }
    k->close_err = err;
    conn_close(k);
}

/* The response ended: hand the connection back (or close it), then complete the request. */
static void conn_complete(struct xd_http_conn *k) {
    struct xd_http_client *c = k->client;
    struct xd_http_req *r = k->req;
    k->req = NULL;
    r->conn = NULL;
    r->state = XD_HTTP_REQ_DONE;
    if (k->keep_alive && !k->writing && c->n_idle < c->max_idle) {
        k->state = CONN_IDLE;
        k->idle_next = c->idle;
        c->idle = k;
        c->n_idle++;
    } else {
        conn_close(k);
    }
    r->on_done(r, 0);
}

/* ---- llhttp callbacks ----------------------------------------------------------------------- */

static int on_headers_complete(llhttp_t *p) {
    struct xd_http_conn *k = p->data;
    k->req->status = (int)p->status_code;
    if (k->req->on_status) k->req->on_status(k->req);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
    struct xd_http_conn *k = p->data;
    if (!k->req->on_body) return 0;
    int rc = k->req->on_body(k->req, at, n);
    if (rc) {
        k->user_err = rc;
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    struct xd_http_conn *k = p->data;
    k->message_done = true;
    k->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* stop right after this response: bytes after it are not ours */
}

static const llhttp_settings_t response_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- libuv callbacks ------------------------------------------------------------------------ */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    struct xd_http_conn *k = h->data;
    buf->base = k->rbuf;
    buf->len = sizeof k->rbuf;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    struct xd_http_conn *k = s->data;
    if (k->state == CONN_CLOSING || nread == 0) return;
    if (k->state == CONN_IDLE) { /* the server closed a kept-alive connection, or sent junk */
        conn_close(k);
        return;
    }
    if (nread < 0) {
        /* a body delimited by the connection's end completes here */
        if (nread == UV_EOF && k->req->got_response && !k->message_done) {
            llhttp_finish(&k->parser); /* HPE_PAUSED from on_message_complete when it ended */
            if (k->message_done) {
                k->keep_alive = false;
                conn_complete(k);
                return;
            }
        }
        conn_fail(k, (int)nread);
        return;
    }
    k->req->got_response = true;
    llhttp_errno_t e = llhttp_execute(&k->parser, buf->base, (size_t)nread);
    if (k->state == CONN_CLOSING) return;
    if (k->message_done) {
        if (llhttp_get_error_pos(&k->parser) != buf->base + nread) k->keep_alive = false;
        conn_complete(k);
    } else if (e != HPE_OK) {
        conn_fail(k, k->user_err ? k->user_err : UV_EPROTO);
    }
}

static void write_cb(uv_write_t *w, int status) {
    struct xd_http_conn *k = w->data;
    k->writing = false;
    if (k->state == CONN_CLOSING) return;
    if (status < 0 && k->req)
        conn_fail(k, status);
    else if (status < 0)
        conn_close(k);
}

/* BUSY: reset the parser and write the request. */
static int conn_send(struct xd_http_conn *k) {
    llhttp_init(&k->parser, HTTP_RESPONSE, &response_settings);
    k->parser.data = k;
    k->message_done = k->keep_alive = false;
    k->user_err = 0;
    k->state = CONN_BUSY;
    uv_buf_t b = uv_buf_init((char *)k->req->bytes, (unsigned)k->req->len);
    k->write_req.data = k;
    int rc = uv_write(&k->write_req, (uv_stream_t *)&k->tcp, &b, 1, write_cb);
    if (!rc) k->writing = true;
    return rc;
}

static void connect_cb(uv_connect_t *cr, int status) {
    struct xd_http_conn *k = cr->data;
    if (k->state == CONN_CLOSING) return;
    if (status < 0) {
        conn_fail(k, status);
        return;
    }
    uv_tcp_nodelay(&k->tcp, 1); /* a request is one write; do not let Nagle hold it */
    int rc = uv_read_start((uv_stream_t *)&k->tcp, alloc_cb, read_cb);
    if (!rc) rc = conn_send(k);
    if (rc) conn_fail(k, rc);
}

static int start_fresh(struct xd_http_client *c, struct xd_http_req *r) {
    struct xd_http_conn *k = calloc(1, sizeof *k);
    if (!k) return UV_ENOMEM;
    k->client = c;
    int rc = uv_tcp_init(c->loop, &k->tcp);
    if (rc) {
        free(k);
        return rc;
    }
    k->tcp.data = k;
    k->connect_req.data = k;
    k->next = c->conns;
    if (c->conns) c->conns->prev = k;
    c->conns = k;
    c->n_conns++;
    rc = uv_tcp_connect(&k->connect_req, &k->tcp, (const struct sockaddr *)&c->addr, connect_cb);
    if (rc) {
        conn_close(k); /* no request attached: close_cb only frees */
        return rc;
    }
    c->n_connects++;
    k->state = CONN_CONNECTING;
    k->req = r;
    r->conn = k;
    return 0;
}

/* ---- the client ----------------------------------------------------------------------------- */

void xd_http_client_init(struct xd_http_client *c, uv_loop_t *loop, const struct sockaddr *addr,
                         size_t max_idle) {
    memset(c, 0, sizeof *c);
    c->loop = loop;
    memcpy(&c->addr, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    c->max_idle = max_idle;
}

int xd_http_start(struct xd_http_client *c, struct xd_http_req *r) {
    r->state = XD_HTTP_REQ_ACTIVE;
    r->status = 0;
    r->got_response = r->reused = r->retried = false;
    r->conn = NULL;
    while (c->idle) { /* bounded: each failed try closes one idle connection */
        struct xd_http_conn *k = c->idle;
        idle_remove(c, k);
        k->req = r;
        r->conn = k;
        r->reused = true;
        if (!conn_send(k)) return 0;
        k->req = NULL;
        r->conn = NULL;
        r->reused = false;
        conn_close(k);
    }
    int rc = start_fresh(c, r);
    if (rc) r->state = XD_HTTP_REQ_NEW;
    return rc;
}

void xd_http_cancel(struct xd_http_req *r, int err) {
    if (r->state != XD_HTTP_REQ_ACTIVE || !r->conn || r->conn->state == CONN_CLOSING) return;
    r->conn->close_err = err;
    conn_close(r->conn);
}

void xd_http_client_close(struct xd_http_client *c) {
    for (struct xd_http_conn *k = c->conns; k; k = k->next) {
        if (k->state == CONN_CLOSING) continue;
        k->close_err = UV_ECANCELED;
        conn_close(k);
    }
}

bool xd_http_client_check_invariants(const struct xd_http_client *c) {
    size_t n = 0, n_idle = 0;
    const struct xd_http_conn *prev = NULL;
    for (const struct xd_http_conn *k = c->conns; k; prev = k, k = k->next) {
        if (k->prev != prev || k->client != c || ++n > c->n_conns) return false;
        if (k->state == CONN_IDLE && k->req) return false;
        if ((k->state == CONN_BUSY || k->state == CONN_CONNECTING) &&
            (!k->req || k->req->conn != k || k->req->state != XD_HTTP_REQ_ACTIVE))
            return false;
    }
    for (const struct xd_http_conn *k = c->idle; k; k = k->idle_next)
        if (k->state != CONN_IDLE || ++n_idle > c->n_idle) return false;
    return n == c->n_conns && n_idle == c->n_idle && n_idle <= c->max_idle;
}
