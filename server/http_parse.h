/* http_parse.h - HTTP/1.1 request framing over llhttp: bytes in, one complete request out.
 *
 * Pure: no sockets, no event loop, no allocation beyond the request's own buffers, so the same
 * code runs in the server and in the fuzzer (tests/fuzz/fuzz_http_request.c). The caller feeds
 * bytes with srv_http_execute(); parsing stops right after each complete request (pipelined
 * bytes after it are left unconsumed) until the caller has answered it and calls
 * srv_http_next(). Limits are enforced while parsing, so a hostile client never makes us
 * buffer more than max_header_bytes + max_body_bytes.
 *
 * States:   IDLE --bytes--> HEADERS --headers complete--> BODY --message complete--> DONE
 *           DONE --srv_http_next--> IDLE;   any --malformed or over a limit--> ERROR (final)
 */
#ifndef XD_HTTP_PARSE_H
#define XD_HTTP_PARSE_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"

struct srv_http_limits {
    size_t max_header_bytes; /* request line + header fields and values (default 16 KiB) */
    size_t max_headers;      /* header lines (default 100) */
    size_t max_body_bytes;   /* decoded body, chunked or not (default 8 MiB) */
};

enum srv_http_state { SRV_HTTP_IDLE, SRV_HTTP_HEADERS, SRV_HTTP_BODY, SRV_HTTP_DONE,
                      SRV_HTTP_ERROR };

/* The request being parsed. Header values are kept only for the headers the server reads. */
struct srv_http_req {
    int method;          /* llhttp_method_t */
    uint8_t http_major, http_minor;
    struct proto_buf url;
    struct proto_buf authorization;
    struct proto_buf content_type;
    struct proto_buf expect;
    struct proto_buf body;
    bool keep_alive;     /* valid in DONE */
    bool has_length;     /* Content-Length given */
    uint64_t content_length;
    bool upgrade;        /* Upgrade/CONNECT: the connection cannot continue as HTTP */
};

/* Called when the headers are complete (before any body byte): return 0 to go on, or an HTTP
 * status (413, 417, ...) to stop with that error. */
typedef int (*srv_http_headers_cb)(void *arg, const struct srv_http_req *req);

struct srv_http_parser {
    llhttp_t llhttp;
    llhttp_settings_t settings;
    struct srv_http_limits lim;
    enum srv_http_state state;
    struct srv_http_req req;
    struct proto_buf field; /* the header name being read */
    struct proto_buf *value; /* where its value goes (NULL: dropped) */
    size_t header_bytes, n_headers;
    int error_status;        /* ERROR: the status to answer with */
    const char *error_reason;
    srv_http_headers_cb on_headers;
    void *arg;
};

/* Sensible limits (see struct). */
struct srv_http_limits srv_http_limits_default(void);

/* Starts a parser in IDLE. on_headers may be NULL. Cannot fail. */
void srv_http_init(struct srv_http_parser *p, const struct srv_http_limits *lim,
                   srv_http_headers_cb on_headers, void *arg);
/* Frees the request buffers. */
void srv_http_free(struct srv_http_parser *p);

/* Parses data[0..len). *used gets the bytes consumed. Returns the state after it: IDLE, HEADERS
 * or BODY (all consumed, more needed), DONE (a request is complete; *used stops right after
 * it), or ERROR (p->error_status set: 400, 413, 417, 431, 505). In DONE and ERROR, nothing
 * more is consumed. */
enum srv_http_state srv_http_execute(struct srv_http_parser *p, const char *data, size_t len,
                                     size_t *used);
/* The connection ended (EOF): a request cut in the middle is an error. Returns the state. */
enum srv_http_state srv_http_eof(struct srv_http_parser *p);

/* DONE -> IDLE: forget the answered request, ready for the next one. */
void srv_http_next(struct srv_http_parser *p);

/* True when the parser's state is consistent with its buffers. For assert() and tests. */
bool srv_http_check_invariants(const struct srv_http_parser *p);

#endif
