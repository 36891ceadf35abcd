/* proto_error.h - OpenAI-style error bodies and HTTP reason phrases.
 *
 * Every failure a client sees is one struct proto_error, filled where the failure is found
 * (a decoder names the parameter and the accepted range) and encoded once as
 *   {"error":{"message":"...","type":"...","param":"..."|null,"code":"..."|null}}
 * The `type` follows from the HTTP status through one table (proto_error.c).
 */
#ifndef XD_PROTO_ERROR_H
#define XD_PROTO_ERROR_H

#include "proto_buf.h"

struct proto_error {
    int status;       /* HTTP status, 0 while no error is set */
    const char *code; /* static string or NULL (null in JSON) */
    char param[64];   /* "" is null in JSON */
    char message[384];
};

/* Sets every field of e. param and code may be NULL; the message is formatted from a literal
 * fmt (request text enters only as %s arguments and is cut to fit). Cannot fail. */
void proto_error_set(struct proto_error *e, int status, const char *param, const char *code,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The OpenAI `type` for an HTTP status: "invalid_request_error" for 4xx but 401
 * ("authentication_error") and 429 ("rate_limit_error"), "server_error" for 5xx. */
const char *proto_error_type(int status);

/* Appends the JSON body of e (no trailing newline). 0 or XD_E_NOMEM. */
int proto_error_encode(const struct proto_error *e, struct proto_buf *out);

/* Reason phrase of an HTTP status ("Not Found"); "Unknown" for codes it does not know. */
const char *proto_http_reason(int status);

#endif
