/* conn.h - one client connection: socket, parser, timers, and the response being written.
 * Internal to server/. The handlers (api_*.c) answer through the srv_conn_respond* and
 * srv_conn_stream_* calls; every answered request ends with exactly one of respond or
 * stream_end, after which the connection takes the next pipelined request or closes.
 */
#ifndef XD_CONN_H
#define XD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "http_parse.h"
#include "proto_error.h"
#include "router.h"

struct srv;

enum srv_conn_state {
    SRV_CONN_IDLE,    /* between requests: idle timer */
    SRV_CONN_READING, /* a request is arriving: header, then body timer */
    SRV_CONN_BUSY,    /* a complete request is being answered: no timer */
    SRV_CONN_CLOSING, /* uv_close called; freed in the last close callback */
};

typedef void (*srv_job_abort_fn)(void *job);

struct srv_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct srv *srv;
    struct srv_conn *prev, *next;
    enum srv_conn_state state;
    struct srv_http_parser http;
    struct proto_buf in; /* received bytes not parsed yet (pipelined while BUSY) */
    size_t in_off;
    int open_handles;    /* handles not yet closed: free at 0 */
    bool pumping, reading, shutting_down, close_after;
    /* the request being answered */
    enum srv_route_id route;
    bool head_sent, chunked;
    int status;
    uint64_t t_recv_ns;
    void *job;               /* the handler's pending work, if any */
    srv_job_abort_fn job_abort; /* called once if the connection goes away before the answer */
    char rbuf[64 * 1024];
};

/* Accepts a pending connection on the listener (or refuses it with 503 when full). */
void srv_conn_accept(struct srv *s);

/* A whole response. extra_headers: "" or lines each ending in "\r\n". Ends the request. */
void srv_conn_respond(struct srv_conn *c, int status, const char *content_type,
                      const char *body, size_t len, const char *extra_headers);
/* An OpenAI error body with e's status; Allow/Retry-After go in extra_headers. */
void srv_conn_respond_error(struct srv_conn *c, const struct proto_error *e,
                            const char *extra_headers);

/* Starts a streamed response (chunked on HTTP/1.1, close-delimited on 1.0). */
void srv_conn_stream_begin(struct srv_conn *c, int status, const char *content_type);
/* Sends bytes of a started stream. 0, or -EPIPE when the connection is going away. */
int srv_conn_stream_send(struct srv_conn *c, const char *data, size_t len);
/* Ends the stream and the request. */
void srv_conn_stream_end(struct srv_conn *c);

/* The handler's pending work: abort is called if the connection closes before it answers. */
void srv_conn_set_job(struct srv_conn *c, void *job, srv_job_abort_fn abort);

/* Response bytes queued but not yet written to the socket. */
size_t srv_conn_unsent(const struct srv_conn *c);

/* Closes now (pending writes dropped); the job, if any, is aborted. */
void srv_conn_close(struct srv_conn *c);
/* Drain: closes the connection if no request is in progress on it. */
void srv_conn_close_if_idle(struct srv_conn *c);

/* True when the connection's state agrees with its fields. For assert() and tests. */
bool srv_conn_check_invariants(const struct srv_conn *c);

#endif
