/* sse.c - Server-Sent Events framing (the WHATWG "event stream interpretation") for the bench
 * client's streamed completions.
 *
 * Trade-off: bytes are copied into a line buffer before a line is interpreted, rather than
 * parsed in place from the read buffer: one extra copy of at most a few hundred bytes per
 * token, in exchange for a reader that does not care where the network split the stream.
 * Not here: the "event", "id" and "retry" fields (OpenAI-style servers send only "data"),
 * reconnection, and dispatching a last event that the stream did not end with a blank line
 * (the spec drops it too).
 */
#include "sse.h"

#include <string.h>

#include "xd_error.h"

void xd_sse_init(struct xd_sse *s, size_t max_event) {
    memset(s, 0, sizeof *s);
    proto_buf_init(&s->line);
    proto_buf_init(&s->data);
    s->max_event = max_event;
}

void xd_sse_free(struct xd_sse *s) {
    proto_buf_free(&s->line);
    proto_buf_free(&s->data);
    s->has_data = s->after_cr = false;
}

/* Interprets one complete line (without its terminator). */
static int sse_line(struct xd_sse *s, const char *l, size_t n, xd_sse_event_cb cb, void *arg) {
    if (n == 0) {
        if (!s->has_data) return 0;
        s->has_data = false;
        if (proto_buf_append(&s->data, "", 1)) return XD_E_NOMEM; /* NUL, and data != NULL */
        size_t len = s->data.len - 1;
        int rc = cb(arg, s->data.data, len);
        proto_buf_reset(&s->data);
        return rc;
    }
    if (l[0] == ':') return 0; /* comment */
    const char *colon = memchr(l, ':', n);
    size_t name_len = colon ? (size_t)(colon - l) : n;
    if (name_len != 4 || memcmp(l, "data", 4)) return 0;
    const char *v = colon ? colon + 1 : l + n;
    if (v < l + n && *v == ' ') v++;
    size_t vlen = (size_t)(l + n - v);
    if (s->data.len + vlen + 1 > s->max_event) return XD_E_INVALID;
    if (s->has_data) proto_buf_append(&s->data, "\n", 1);
    proto_buf_append(&s->data, v, vlen);
    s->has_data = true;
    return s->data.oom ? XD_E_NOMEM : 0;
}

int xd_sse_feed(struct xd_sse *s, const char *p, size_t n, xd_sse_event_cb cb, void *arg) {
    size_t i = 0;
    while (i < n) {
        if (s->after_cr) {
            s->after_cr = false;
            if (p[i] == '\n') {
                i++;
                continue;
            }
        }
        /* the rest of this line, up to the first CR or LF */
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        if (s->line.len + (j - i) > s->max_event) return XD_E_INVALID;
        if (j == n) {
            if (proto_buf_append(&s->line, p + i, j - i)) return XD_E_NOMEM;
            return 0;
        }
        int rc;
        if (s->line.len == 0) {
            rc = sse_line(s, p + i, j - i, cb, arg); /* whole line in the caller's bytes */
        } else {
            if (proto_buf_append(&s->line, p + i, j - i)) return XD_E_NOMEM;
            rc = sse_line(s, s->line.data, s->line.len, cb, arg);
            proto_buf_reset(&s->line);
        }
        if (rc) return rc;
        s->after_cr = p[j] == '\r';
        i = j + 1;
    }
    return 0;
}
