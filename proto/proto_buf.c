/* proto_buf.c - the growable buffer of proto_buf.h: doubling growth, a NUL kept after the last
 * byte so text can be handed to C string functions, and a sticky out-of-memory flag instead of
 * an error check after every append. It does no formatting of its own beyond vsnprintf. */
#include "proto_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xd_error.h"

void proto_buf_init(struct proto_buf *b) { *b = (struct proto_buf){0}; }

void proto_buf_free(struct proto_buf *b) {
    free(b->data);
    *b = (struct proto_buf){0};
}

void proto_buf_reset(struct proto_buf *b) {
    b->len = 0;
    b->oom = false;
    if (b->data) b->data[0] = 0;
}

/* Makes room for n more bytes plus the NUL. */
static int reserve(struct proto_buf *b, size_t n) {
    if (b->oom) return XD_E_NOMEM;
    if (n > (size_t)-1 / 2 - b->len) goto fail;
    size_t need = b->len + n + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) goto fail;
    b->data = p;
    b->cap = cap;
    return 0;
fail:
    b->oom = true;
    return XD_E_NOMEM;
}

int proto_buf_append(struct proto_buf *b, const void *p, size_t n) {
    if (reserve(b, n)) return XD_E_NOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int proto_buf_puts(struct proto_buf *b, const char *s) { return proto_buf_append(b, s, strlen(s)); }

int proto_buf_printf(struct proto_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n)) {
        b->oom = true;
        return XD_E_NOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *proto_buf_take(struct proto_buf *b, size_t *len) {
    char *p = b->oom || !b->len ? NULL : b->data;
    if (len) *len = p ? b->len : 0;
    if (!p) free(b->data);
    *b = (struct proto_buf){0};
    return p;
}
