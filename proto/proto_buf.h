/* proto_buf.h - a growable byte buffer that the encoders of proto/ append to.
 *
 * Out of memory is sticky: an append that cannot grow the buffer sets `oom`, drops the bytes and
 * every later append does nothing, so an encoder appends freely and checks once at the end.
 */
#ifndef XD_PROTO_BUF_H
#define XD_PROTO_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct proto_buf {
    char *data; /* NUL-terminated when len > 0; owned */
    size_t len;
    size_t cap;
    bool oom;
};

/* Zeroes b; nothing allocated yet. Cannot fail. */
void proto_buf_init(struct proto_buf *b);
/* Frees the bytes and zeroes b. */
void proto_buf_free(struct proto_buf *b);
/* Forgets the content, keeps the memory, clears oom. */
void proto_buf_reset(struct proto_buf *b);
/* Appends n bytes; on failure sets b->oom and returns XD_E_NOMEM (content unchanged). */
int proto_buf_append(struct proto_buf *b, const void *p, size_t n);
int proto_buf_puts(struct proto_buf *b, const char *s);
/* printf-style append; fmt is always a literal of the caller, never request data. */
int proto_buf_printf(struct proto_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hands the bytes to the caller (free()), leaving b empty. NULL when oom or empty. */
char *proto_buf_take(struct proto_buf *b, size_t *len);

#endif
