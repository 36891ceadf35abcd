/* xd_error.h - the project's error codes.
 *
 * Errors are plain ints: 0 is success, a negative errno passes through unchanged (-EIO from a
 * read, cqe->res from io_uring), and the project's own codes live below XD_E__BASE so they never
 * collide with errno values. One X-macro yields code, name, message and HTTP status, so the
 * server, the CLI and the metrics all print the same words for the same failure.
 */
#ifndef XD_ERROR_H
#define XD_ERROR_H

/* X(code suffix, value offset, message, http status) */
#define XD_ERRNO_MAP(X)                                                                        \
    X(FORMAT, 1, "malformed model file", 500)                                                  \
    X(TRUNCATED, 2, "model file is truncated", 500)                                            \
    X(VERSION, 3, "unsupported GGUF version", 500)                                             \
    X(UNSUPPORTED, 4, "unsupported feature", 500)                                              \
    X(BAD_TYPE, 5, "value has the wrong type", 500)                                            \
    X(MISSING, 6, "required key or tensor is missing", 500)                                    \
    X(SHAPE, 7, "tensor has the wrong shape", 500)                                             \
    X(OVERFLOW, 8, "size overflows", 500)                                                      \
    X(NOMEM, 9, "out of memory", 503)                                                          \
    X(IO, 10, "I/O error", 500)                                                                \
    X(INVALID, 11, "invalid argument", 400)                                                    \
    X(TOKENIZE, 12, "text cannot be tokenized", 400)                                           \
    X(CONTEXT, 13, "context length exceeded", 400)                                             \
    X(TEMPLATE, 14, "chat template error", 400)                                                \
    X(TEMPLATE_RAISE, 15, "the chat template rejected the conversation", 400)                  \
    X(TEMPLATE_LIMIT, 16, "chat template exceeded a limit", 400)

#define XD_E__BASE (-10000)

enum {
#define XD__ERR_ENUM(name, off, msg, status) XD_E_##name = XD_E__BASE - (off),
    XD_ERRNO_MAP(XD__ERR_ENUM)
#undef XD__ERR_ENUM
};

/* Message for any code this project returns: project codes, negative errno, 0. Never NULL. */
const char *xd_strerror(int err);
/* Short symbolic name ("XD_E_FORMAT", "EIO"); never NULL. */
const char *xd_err_name(int err);
/* HTTP status a request failing with err should get (500 for unknown codes). */
int xd_err_http_status(int err);

#endif
