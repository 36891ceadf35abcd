/* sse.h - a Server-Sent Events reader: body bytes in, one callback per complete event.
 * Pure (no I/O), so the tests feed it every split of a stream.
 */
#ifndef XD_SSE_H
#define XD_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "proto_buf.h"

/* One event: its data lines joined by '\n' (NUL-terminated, len bytes). Return 0 to go on;
 * any other value stops xd_sse_feed(), which returns it. */
typedef int (*xd_sse_event_cb)(void *arg, const char *data, size_t len);

struct xd_sse {
    struct proto_buf line; /* the line being read */
    struct proto_buf data; /* the data of the event being assembled */
    bool has_data;         /* a data field was seen since the last dispatch */
    bool after_cr;         /* the last byte ended a line with '\r': a '\n' next belongs to it */
    size_t max_event;      /* bytes one line or one event may hold */
};

/* Zeroes s; events over max_event bytes fail the stream. Cannot fail. */
void xd_sse_init(struct xd_sse *s, size_t max_event);
void xd_sse_free(struct xd_sse *s);
/* Consumes all n bytes, calling cb for each event completed by a blank line (CRLF, LF or CR
 * line ends; "data:" fields joined; comments and other fields ignored; one space after the
 * colon dropped). Returns 0, cb's nonzero value, XD_E_INVALID when a line or event exceeds
 * max_event, or XD_E_NOMEM. After a nonzero return the reader is undefined: free it. */
int xd_sse_feed(struct xd_sse *s, const char *p, size_t n, xd_sse_event_cb cb, void *arg);

#endif
