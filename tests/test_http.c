/* test_http.c - server/http_parse.c and server/router.c: framing of pipelined, chunked and
 * Expect requests, every incomplete prefix, the limits, and routing / API-key decisions. */
#include <criterion/criterion.h>
#include <string.h>

#include "http_parse.h"
#include "router.h"

/* Feeds s in pieces of `step` bytes through exact-size copies (ASan catches over-reads) until
 * a request completes or an error; returns the state and the bytes consumed. */
static enum srv_http_state feed(struct srv_http_parser *p, const char *s, size_t n, size_t step,
                                size_t *consumed) {
    size_t off = 0;
    enum srv_http_state st = p->state;
    while (off < n) {
        size_t k = n - off < step ? n - off : step, used = 0;
        char *copy = malloc(k);
        memcpy(copy, s + off, k);
        st = srv_http_execute(p, copy, k, &used);
        free(copy);
        cr_assert(srv_http_check_invariants(p));
        off += used;
        if (st == SRV_HTTP_DONE || st == SRV_HTTP_ERROR) break;
        cr_assert_eq(used, k, "all bytes consumed while the request is incomplete");
    }
    *consumed = off;
    return st;
}

static const char POST[] = "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\n"
                           "Authorization: Bearer k1\r\nContent-Type: application/json\r\n"
                           "Content-Length: 5\r\n\r\nhello";

Test(http_parse, one_request_any_split) {
    for (size_t step = 1; step <= sizeof POST; step++) {
        struct srv_http_parser p;
        srv_http_init(&p, NULL, NULL, NULL);
        size_t used;
        cr_assert_eq(feed(&p, POST, sizeof POST - 1, step, &used), SRV_HTTP_DONE, "step %zu",
                     step);
        cr_assert_eq(used, sizeof POST - 1);
        cr_assert_eq(p.req.method, HTTP_POST);
        cr_assert_str_eq(p.req.url.data, "/v1/completions?x=1");
        cr_assert_str_eq(p.req.authorization.data, "Bearer k1");
        cr_assert_str_eq(p.req.content_type.data, "application/json");
        cr_assert_eq(p.req.body.len, 5);
        cr_assert_str_eq(p.req.body.data, "hello");
        cr_assert(p.req.keep_alive);
        srv_http_free(&p);
    }
}

Test(http_parse, every_incomplete_prefix_needs_more) {
    for (size_t k = 0; k < sizeof POST - 1; k++) {
        struct srv_http_parser p;
        srv_http_init(&p, NULL, NULL, NULL);
        size_t used;
        enum srv_http_state st = feed(&p, POST, k, 64, &used);
        cr_assert(st != SRV_HTTP_DONE && st != SRV_HTTP_ERROR, "prefix %zu", k);
        cr_assert_eq(srv_http_eof(&p), k ? SRV_HTTP_ERROR : SRV_HTTP_IDLE, "prefix %zu", k);
        srv_http_free(&p);
    }
}

Test(http_parse, pipelined_requests_one_at_a_time) {
    const char two[] = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct srv_http_parser p;
    srv_http_init(&p, NULL, NULL, NULL);
    size_t used;
    cr_assert_eq(srv_http_execute(&p, two, sizeof two - 1, &used), SRV_HTTP_DONE);
    cr_assert_str_eq(p.req.url.data, "/health");
    cr_assert(p.req.keep_alive);
    size_t first = used;
    cr_assert_lt(first, sizeof two - 1);
    size_t more;
    cr_assert_eq(srv_http_execute(&p, two + first, sizeof two - 1 - first, &more), SRV_HTTP_DONE,
                 "nothing is parsed until the request is answered");
    cr_assert_eq(more, 0);
    srv_http_next(&p);
    cr_assert_eq(srv_http_execute(&p, two + first, sizeof two - 1 - first, &used), SRV_HTTP_DONE);
    cr_assert_str_eq(p.req.url.data, "/metrics");
    cr_assert_not(p.req.keep_alive);
    cr_assert_eq(first + used, sizeof two - 1);
    srv_http_free(&p);
}

Test(http_parse, chunked_body) {
    const char req[] = "POST /v1/completions HTTP/1.1\r\nHost: a\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    for (size_t step = 1; step < sizeof req; step += 7) {
        struct srv_http_parser p;
        srv_http_init(&p, NULL, NULL, NULL);
        size_t used;
        cr_assert_eq(feed(&p, req, sizeof req - 1, step, &used), SRV_HTTP_DONE);
        cr_assert_str_eq(p.req.body.data, "abc0123456789abcdef");
        cr_assert_not(p.req.has_length);
        srv_http_free(&p);
    }
}

static int expect_seen;
static int on_headers(void *arg, const struct srv_http_req *r) {
    expect_seen = r->expect.len > 0;
    return *(int *)arg;
}

Test(http_parse, headers_callback_before_body) {
    const char req[] = "POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\n"
                       "Content-Length: 2\r\n\r\n";
    int verdict = 0;
    struct srv_http_parser p;
    srv_http_init(&p, NULL, on_headers, &verdict);
    size_t used;
    cr_assert_eq(srv_http_execute(&p, req, sizeof req - 1, &used), SRV_HTTP_BODY);
    cr_assert(expect_seen);
    cr_assert_eq(srv_http_execute(&p, "{}", 2, &used), SRV_HTTP_DONE);
    srv_http_free(&p);

    verdict = 417;
    srv_http_init(&p, NULL, on_headers, &verdict);
    cr_assert_eq(srv_http_execute(&p, req, sizeof req - 1, &used), SRV_HTTP_ERROR);
    cr_assert_eq(p.error_status, 417);
    srv_http_free(&p);
}

Test(http_parse, limits) {
    struct srv_http_limits lim = {.max_header_bytes = 64, .max_headers = 3, .max_body_bytes = 8};
    struct {
        const char *req;
        int status;
    } cases[] = {
        {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
         431},
        {"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n", 431},
        {"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n", 413},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n12345\r\n", 413},
        {"GET / HTTP/2.0\r\n\r\n", 505},
        {"BREW / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400},
        {"\x01\x02\x03", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct srv_http_parser p;
        srv_http_init(&p, &lim, NULL, NULL);
        size_t used;
        cr_assert_eq(feed(&p, cases[i].req, strlen(cases[i].req), 5, &used), SRV_HTTP_ERROR,
                     "case %zu", i);
        cr_assert_eq(p.error_status, cases[i].status, "case %zu: %d", i, p.error_status);
        cr_assert_leq(p.req.body.len, lim.max_body_bytes);
        srv_http_free(&p);
    }
}

Test(http_parse, http10_and_upgrade_close) {
    struct srv_http_parser p;
    srv_http_init(&p, NULL, NULL, NULL);
    size_t used;
    const char r10[] = "GET /health HTTP/1.0\r\n\r\n";
    cr_assert_eq(srv_http_execute(&p, r10, sizeof r10 - 1, &used), SRV_HTTP_DONE);
    cr_assert_not(p.req.keep_alive);
    cr_assert_eq(p.req.http_minor, 0);
    srv_http_free(&p);
    srv_http_init(&p, NULL, NULL, NULL);
    const char up[] = "GET /health HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n";
    cr_assert_eq(srv_http_execute(&p, up, sizeof up - 1, &used), SRV_HTTP_DONE);
    cr_assert(p.req.upgrade);
    cr_assert_not(p.req.keep_alive);
    srv_http_next(&p);
    cr_assert_eq(p.state, SRV_HTTP_ERROR);
    srv_http_free(&p);
}

/* ---- routing -------------------------------------------------------------------------------- */

static struct srv_http_req req_of(int method, const char *url, const char *auth) {
    struct srv_http_req r = {.method = method};
    proto_buf_puts(&r.url, url);
    if (auth) proto_buf_puts(&r.authorization, auth);
    return r;
}

static void req_free(struct srv_http_req *r) {
    proto_buf_free(&r->url);
    proto_buf_free(&r->authorization);
}

Test(router, routes_404_405_401) {
    struct proto_error e;
    const char *allow = NULL;
    struct srv_http_req r = req_of(HTTP_POST, "/v1/completions?a=b", "Bearer key");
    const struct srv_route *rt = srv_route_request(&r, "key", &e, &allow);
    cr_assert_not_null(rt);
    cr_assert_eq(rt->id, SRV_ROUTE_COMPLETIONS);
    req_free(&r);

    r = req_of(HTTP_GET, "/v1/completions", "Bearer key");
    cr_assert_null(srv_route_request(&r, "key", &e, &allow));
    cr_assert_eq(e.status, 405);
    cr_assert_str_eq(allow, "POST");
    req_free(&r);

    r = req_of(HTTP_GET, "/v2/nothing", NULL);
    cr_assert_null(srv_route_request(&r, NULL, &e, &allow));
    cr_assert_eq(e.status, 404);
    cr_assert_str_eq(e.message, "Invalid URL (GET /v2/nothing)");
    req_free(&r);

    const char *bad[] = {NULL, "Bearer kex", "Bearer ke", "Bearer key2", "Basic key", "Bearer "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = req_of(HTTP_GET, "/v1/models", bad[i]);
        cr_assert_null(srv_route_request(&r, "key", &e, &allow), "auth %zu", i);
        cr_assert_eq(e.status, 401);
        req_free(&r);
    }
    r = req_of(HTTP_GET, "/health", NULL);
    rt = srv_route_request(&r, "key", &e, &allow);
    cr_assert_not_null(rt, "health needs no key");
    req_free(&r);
    r = req_of(HTTP_GET, "/v1/models", "bearer key");
    cr_assert_not_null(srv_route_request(&r, "key", &e, &allow), "scheme is case-insensitive");
    req_free(&r);
    cr_assert(srv_auth_ok(NULL, NULL, 0));
    cr_assert(srv_auth_ok("", "x", 1));
    cr_assert_str_eq(srv_route_name(SRV_ROUTE_OTHER), "other");
}
