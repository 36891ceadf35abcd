/* conn.c - an HTTP/1.1 connection on the libuv loop: reading, framing (http_parse.c), timeouts,
 * dispatch through the route table, and writing responses in order.
 *
 * Everything a connection needs is embedded in its struct (socket, timer, parser, read
 * buffer), so one allocation per connection, freed in the last close callback. Received bytes
 * are appended to `in` and parsed by pump(); a complete request moves the connection to BUSY
 * and parsing stops until the request is answered, so pipelined requests are answered one at a
 * time, in order, while reading continues (a client that disconnects mid-generation is seen
 * at once and its request cancelled). Reading stops only when more than 1 MiB of unparsed
 * pipelined bytes pile up. Each write owns a copy of its bytes (uv_write_t + data in one
 * block). Closing after a response uses uv_shutdown, so queued bytes still go out.
 *
 * States and transitions (srv_conn_check_invariants() holds in each):
 *
 *   IDLE --first byte (pump)--> READING --request complete (pump)--> BUSY
 *    ^                             |                                   |
 *    +-------- request_done <------|-----------------------------------+  (keep-alive)
 *   any --timeout, EOF, error, !keep-alive, drain (srv_conn_close / conn_shutdown)--> CLOSING
 *
 *   IDLE     no request bytes parsed; idle timer armed; no job.
 *   READING  parser in HEADERS/BODY; header or body timer armed; no job.
 *   BUSY     parser DONE; no timer; a handler owes exactly one respond or stream_end; a job may
 *            be attached (aborted if the connection closes first).
 *   CLOSING  handles closing; no job; nothing more is written.
 *
 * Not here: TLS (put a reverse proxy in front), HTTP/2, request bodies streamed to handlers
 * (bodies are small JSON, buffered up to the limit).
 */
#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "proto_buf.h"
#include "srv.h"

#define PENDING_MAX (1u << 20) /* unparsed bytes buffered while BUSY before reading pauses */

struct srv_write {
    uv_write_t req;
    struct srv_conn *c;
    size_t len;
    char data[];
};

static void pump(struct srv_conn *c);
static void conn_shutdown(struct srv_conn *c);
static void arm(struct srv_conn *c, uint64_t ms);

bool srv_conn_check_invariants(const struct srv_conn *c) {
    switch (c->state) {
    case SRV_CONN_IDLE: return c->http.state == SRV_HTTP_IDLE && !c->job;
    case SRV_CONN_READING:
        return (c->http.state == SRV_HTTP_IDLE || c->http.state == SRV_HTTP_HEADERS ||
                c->http.state == SRV_HTTP_BODY || c->http.state == SRV_HTTP_ERROR) &&
               !c->job;
    case SRV_CONN_BUSY: return c->http.state == SRV_HTTP_DONE || c->http.state == SRV_HTTP_ERROR;
    case SRV_CONN_CLOSING: return !c->job;
    }
    return false;
}

/* ---- closing -------------------------------------------------------------------------------- */

static void on_handle_close(uv_handle_t *h) {
    struct srv_conn *c = h->data;
    if (--c->open_handles > 0) return;
    struct srv *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    srv_http_free(&c->http);
    proto_buf_free(&c->in);
    free(c);
    srv_maybe_finish(s);
}

void srv_conn_close(struct srv_conn *c) {
    if (c->state == SRV_CONN_CLOSING) return;
    if (c->job) {
        void *job = c->job;
        srv_job_abort_fn abort_fn = c->job_abort;
        c->job = NULL;
        c->job_abort = NULL;
        abort_fn(job);
    }
    c->state = SRV_CONN_CLOSING;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_close);
    uv_close((uv_handle_t *)&c->tcp, on_handle_close);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    struct srv_conn *c = req->data;
    free(req);
    srv_conn_close(c);
}

/* Close once the queued writes are out. */
static void conn_shutdown(struct srv_conn *c) {
    if (c->state == SRV_CONN_CLOSING || c->shutting_down) return;
    c->shutting_down = true;
    uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        srv_conn_close(c);
        return;
    }
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown)) {
        free(req);
        srv_conn_close(c);
    }
}

void srv_conn_close_if_idle(struct srv_conn *c) {
    if (c->state == SRV_CONN_IDLE || (c->state == SRV_CONN_READING &&
                                      c->http.state == SRV_HTTP_IDLE))
        srv_conn_close(c);
}

/* ---- writing -------------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
    struct srv_write *w = (struct srv_write *)req;
    struct srv_conn *c = w->c;
    free(w);
    if (status < 0) srv_conn_close(c);
}

/* Queues a..b as one write. 0 or -EPIPE (closing, or the write failed: the connection is then
 * closed). */
static int conn_write(struct srv_conn *c, const char *a, size_t alen, const char *b, size_t blen,
                      const char *z, size_t zlen) {
    if (c->state == SRV_CONN_CLOSING || c->shutting_down) return -EPIPE;
    struct srv_write *w = malloc(sizeof *w + alen + blen + zlen);
    if (!w) {
        srv_conn_close(c);
        return -EPIPE;
    }
    w->c = c;
    w->len = alen + blen + zlen;
    if (alen) memcpy(w->data, a, alen);
    if (blen) memcpy(w->data + alen, b, blen);
    if (zlen) memcpy(w->data + alen + blen, z, zlen);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write)) {
        free(w);
        srv_conn_close(c);
        return -EPIPE;
    }
    return 0;
}

size_t srv_conn_unsent(const struct srv_conn *c) { return c->tcp.write_queue_size; }

static bool keep_alive(const struct srv_conn *c) {
    return c->http.state == SRV_HTTP_DONE && c->http.req.keep_alive && !c->close_after &&
           c->srv->state != SRV_DRAINING && c->srv->state != SRV_STOPPED;
}

/* The status line and headers; length < 0: chunked or close-delimited. */
static void head(struct srv_conn *c, struct proto_buf *b, int status, const char *content_type,
                 long long length, const char *extra) {
    bool keep = keep_alive(c);
    bool http10 = c->http.req.http_minor == 0 && c->http.state == SRV_HTTP_DONE;
    c->chunked = length < 0 && !http10;
    if (length < 0 && http10) keep = false;
    if (!keep) c->close_after = true;
    c->status = status;
    c->head_sent = true;
    proto_buf_printf(b, "HTTP/1.1 %d %s\r\n", status, proto_http_reason(status));
    if (content_type) proto_buf_printf(b, "Content-Type: %s\r\n", content_type);
    if (length >= 0) proto_buf_printf(b, "Content-Length: %lld\r\n", length);
    else if (c->chunked) proto_buf_puts(b, "Transfer-Encoding: chunked\r\n");
    if (length < 0) proto_buf_puts(b, "Cache-Control: no-cache\r\n");
    proto_buf_printf(b, "Connection: %s\r\n", keep ? "keep-alive" : "close");
    proto_buf_puts(b, extra ? extra : "");
    proto_buf_puts(b, "\r\n");
}

/* The request is answered: count it, then the next pipelined request or close. */
static void request_done(struct srv_conn *c) {
    struct srv *s = c->srv;
    srv_metrics_request(&s->metrics, c->route, c->status);
    if (!s->cfg.quiet) {
        const struct srv_http_req *r = &c->http.req;
        const char *url = r->url.data ? r->url.data : "";
        int n = (int)strcspn(url, "?\r\n");
        fprintf(stderr, "expertd serve: %s %.*s %d %.1f ms\n",
                c->http.state == SRV_HTTP_DONE ? llhttp_method_name((llhttp_method_t)r->method)
                                                : "-",
                n > 120 ? 120 : n, url, c->status,
                (double)(srv_now_ns() - c->t_recv_ns) * 1e-6);
    }
    c->job = NULL;
    c->job_abort = NULL;
    c->head_sent = false;
    if (c->close_after || c->http.state != SRV_HTTP_DONE) {
        conn_shutdown(c);
        return;
    }
    srv_http_next(&c->http);
    c->state = SRV_CONN_IDLE;
    assert(srv_conn_check_invariants(c));
    arm(c, c->srv->cfg.idle_timeout_ms);
    pump(c);
}

void srv_conn_respond(struct srv_conn *c, int status, const char *content_type,
                      const char *body, size_t len, const char *extra_headers) {
    if (c->state == SRV_CONN_CLOSING) return;
    struct proto_buf h;
    proto_buf_init(&h);
    head(c, &h, status, content_type, (long long)len, extra_headers);
    if (h.oom) srv_conn_close(c);
    else conn_write(c, h.data, h.len, body, len, NULL, 0);
    proto_buf_free(&h);
    if (c->state != SRV_CONN_CLOSING) request_done(c);
}

void srv_conn_respond_error(struct srv_conn *c, const struct proto_error *e,
                            const char *extra_headers) {
    struct proto_buf b;
    proto_buf_init(&b);
    proto_error_encode(e, &b);
    proto_buf_puts(&b, "\n");
    if (b.oom) srv_conn_close(c);
    else srv_conn_respond(c, e->status, "application/json", b.data, b.len, extra_headers);
    proto_buf_free(&b);
}

void srv_conn_stream_begin(struct srv_conn *c, int status, const char *content_type) {
    if (c->state == SRV_CONN_CLOSING) return;
    struct proto_buf h;
    proto_buf_init(&h);
    head(c, &h, status, content_type, -1, "X-Accel-Buffering: no\r\n");
    if (h.oom) srv_conn_close(c);
    else conn_write(c, h.data, h.len, NULL, 0, NULL, 0);
    proto_buf_free(&h);
}

int srv_conn_stream_send(struct srv_conn *c, const char *data, size_t len) {
    if (!len) return c->state == SRV_CONN_CLOSING ? -EPIPE : 0;
    if (!c->chunked) return conn_write(c, data, len, NULL, 0, NULL, 0);
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    return conn_write(c, size, (size_t)n, data, len, "\r\n", 2);
}

void srv_conn_stream_end(struct srv_conn *c) {
    if (c->state == SRV_CONN_CLOSING) return;
    if (c->chunked) conn_write(c, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    if (c->state != SRV_CONN_CLOSING) request_done(c);
}

void srv_conn_set_job(struct srv_conn *c, void *job, srv_job_abort_fn abort_fn) {
    c->job = job;
    c->job_abort = abort_fn;
}

/* ---- reading and dispatch ------------------------------------------------------------------- */

static void error_and_close(struct srv_conn *c, int status, const char *what) {
    struct proto_error e;
    if (status == 413)
        proto_error_set(&e, 413, NULL, "request_too_large",
                        "Request body too large (this server accepts at most %zu bytes)",
                        c->srv->cfg.http.max_body_bytes);
    else if (status == 431)
        proto_error_set(&e, 431, NULL, "headers_too_large",
                        "Request header fields too large (at most %zu bytes, %zu fields)",
                        c->srv->cfg.http.max_header_bytes, c->srv->cfg.http.max_headers);
    else proto_error_set(&e, status, NULL, NULL, "%s", what ? what : proto_http_reason(status));
    c->close_after = true;
    c->state = SRV_CONN_BUSY;
    uv_timer_stop(&c->timer);
    srv_conn_respond_error(c, &e, "");
}

static void dispatch(struct srv_conn *c) {
    struct srv *s = c->srv;
    const struct srv_http_req *req = &c->http.req;
    struct proto_error e;
    const char *allow = NULL;
    c->t_recv_ns = srv_now_ns();
    c->route = SRV_ROUTE_OTHER;
    const struct srv_route *r = srv_route_request(req, s->cfg.api_key, &e, &allow);
    if (r) c->route = r->id;
    if (s->state == SRV_DRAINING && r && r->id != SRV_ROUTE_HEALTH &&
        r->id != SRV_ROUTE_METRICS) {
        proto_error_set(&e, 503, NULL, "shutting_down", "The server is shutting down");
        c->close_after = true;
        srv_conn_respond_error(c, &e, "Retry-After: 5\r\n");
        return;
    }
    if (!r) {
        char extra[64] = "";
        if (allow) snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        if (e.status == 401) snprintf(extra, sizeof extra, "WWW-Authenticate: Bearer\r\n");
        srv_conn_respond_error(c, &e, extra);
        return;
    }
    if (r->needs_model && s->state == SRV_LOADING) {
        proto_error_set(&e, 503, NULL, "model_loading", "The model is still loading");
        srv_conn_respond_error(c, &e, "Retry-After: 5\r\n");
        return;
    }
    r->handler(c, req);
}

static void on_timer(uv_timer_t *t) {
    struct srv_conn *c = t->data;
    if (c->state == SRV_CONN_IDLE) srv_conn_close(c);
    else if (c->state == SRV_CONN_READING) error_and_close(c, 408, "Request timed out");
}

static void arm(struct srv_conn *c, uint64_t ms) {
    if (c->state == SRV_CONN_CLOSING) return;
    if (ms) uv_timer_start(&c->timer, on_timer, ms, 0);
    else uv_timer_stop(&c->timer);
}

/* Headers are complete: the body timer starts; Expect is answered. */
static int on_headers(void *arg, const struct srv_http_req *r) {
    struct srv_conn *c = arg;
    arm(c, c->srv->cfg.body_timeout_ms);
    if (!r->expect.len) return 0;
    if (strcasecmp(r->expect.data, "100-continue")) return 417;
    if (r->http_minor >= 1) conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    struct srv_conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    struct srv_conn *c = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        /* EOF or error. BUSY: the client went away (its request is cancelled by close). A
         * request cut in the middle gets no answer: nobody reads it. */
        srv_conn_close(c);
        return;
    }
    if (proto_buf_append(&c->in, buf->base, (size_t)nread)) {
        srv_conn_close(c);
        return;
    }
    pump(c);
}

/* Parses what has arrived while the connection may take a request. */
static void pump(struct srv_conn *c) {
    if (c->pumping) return;
    c->pumping = true;
    while ((c->state == SRV_CONN_IDLE || c->state == SRV_CONN_READING) && !c->shutting_down &&
           c->in_off < c->in.len) {
        if (c->state == SRV_CONN_IDLE) {
            c->state = SRV_CONN_READING;
            arm(c, c->srv->cfg.header_timeout_ms);
        }
        size_t used = 0;
        enum srv_http_state st =
            srv_http_execute(&c->http, c->in.data + c->in_off, c->in.len - c->in_off, &used);
        c->in_off += used;
        if (st == SRV_HTTP_ERROR) {
            error_and_close(c, c->http.error_status, c->http.error_reason);
            break;
        }
        if (st != SRV_HTTP_DONE) break; /* all consumed: need more bytes */
        c->state = SRV_CONN_BUSY;
        uv_timer_stop(&c->timer);
        dispatch(c);
    }
    if (c->in_off == c->in.len) {
        proto_buf_reset(&c->in);
        c->in_off = 0;
    } else if (c->in_off > (64u << 10)) {
        memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
        c->in.len -= c->in_off;
        c->in_off = 0;
    }
    c->pumping = false;
    assert(srv_conn_check_invariants(c));
    assert(srv_http_check_invariants(&c->http));
    if (c->state == SRV_CONN_CLOSING || c->shutting_down) return;
    bool want = c->in.len - c->in_off < PENDING_MAX;
    if (want && !c->reading) {
        c->reading = true;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    } else if (!want && c->reading) {
        c->reading = false;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

void srv_conn_accept(struct srv *s) {
    struct srv_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    srv_http_init(&c->http, &s->cfg.http, on_headers, c);
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp)) {
        srv_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    s->metrics.connections_total++;
    if (s->n_conns > s->cfg.max_connections) {
        s->metrics.connections_rejected++;
        struct proto_error e;
        proto_error_set(&e, 503, NULL, "too_many_connections",
                        "Too many open connections (at most %d)", s->cfg.max_connections);
        c->state = SRV_CONN_BUSY;
        c->http.state = SRV_HTTP_ERROR; /* no request was read: close after the answer */
        c->http.error_status = 503;
        c->t_recv_ns = srv_now_ns();
        c->route = SRV_ROUTE_OTHER;
        srv_conn_respond_error(c, &e, "Retry-After: 1\r\n");
        return;
    }
    c->state = SRV_CONN_IDLE;
    arm(c, s->cfg.idle_timeout_ms);
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
