/* proto_enc.c - the jansson building blocks every response encoder of proto/ uses. Building a
 * tree and dumping it compact with a fixed key order makes the output byte-for-byte stable (the
 * tests pin it); a failed allocation or a string that is not UTF-8 turns into one error at the
 * dump instead of a check after every call.
 */
#include "proto_enc.h"

#include <stdlib.h>

#include "xd_error.h"

json_t *proto__chk(json_t *j, bool *ok) {
    if (!j) *ok = false;
    return j;
}

json_t *proto__head_json(const struct proto_meta *m, const char *object, bool *ok) {
    json_t *o = proto__chk(json_object(), ok);
    json_object_set_new(o, "id", proto__chk(json_string(m->id), ok));
    json_object_set_new(o, "object", proto__chk(json_string(object), ok));
    json_object_set_new(o, "created", json_integer(m->created));
    json_object_set_new(o, "model", proto__chk(json_string(m->model), ok));
    return o;
}

json_t *proto__usage_json(const struct proto_usage *u, bool *ok) {
    json_t *o = proto__chk(json_object(), ok);
    json_object_set_new(o, "prompt_tokens", json_integer(u->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(u->completion_tokens));
    json_object_set_new(o, "total_tokens", json_integer(u->prompt_tokens + u->completion_tokens));
    return o;
}

int proto__dump(json_t *o, bool ok, const char *prefix, const char *suffix, struct proto_buf *out) {
    char *s = ok && o ? json_dumps(o, PROTO__DUMP_FLAGS) : NULL;
    json_decref(o);
    if (!s) return ok ? XD_E_NOMEM : XD_E_INVALID;
    proto_buf_puts(out, prefix);
    proto_buf_puts(out, s);
    proto_buf_puts(out, suffix);
    free(s);
    return out->oom ? XD_E_NOMEM : 0;
}
