/* proto_enc.h - internals the response encoders of proto/ share (proto_completion.c,
 * proto_chat.c): the jansson building blocks and the compact, fixed-precision dump. Not a
 * public API: callers outside proto/ use the endpoint encoders.
 */
#ifndef XD_PROTO_ENC_H
#define XD_PROTO_ENC_H

#include <jansson.h>
#include <stdbool.h>

#include "proto_buf.h"
#include "proto_completion.h"

/* Compact; reals with 9 significant digits (a float's round trip), not jansson's 17. */
#define PROTO__DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

/* Returns j and records a failed build (j NULL) in *ok: keeps the encoders free of checks. */
json_t *proto__chk(json_t *j, bool *ok);
/* {"id","object","created","model"} in that order. */
json_t *proto__head_json(const struct proto_meta *m, const char *object, bool *ok);
/* {"prompt_tokens","completion_tokens","total_tokens"}. */
json_t *proto__usage_json(const struct proto_usage *u, bool *ok);
/* Dumps o (consumed) between prefix and suffix. 0; XD_E_INVALID when building failed (ok
 * false: a string that is not UTF-8, or an allocation); XD_E_NOMEM when the dump could not. */
int proto__dump(json_t *o, bool ok, const char *prefix, const char *suffix, struct proto_buf *out);

#endif
