/* proto_chat.c - the /v1/chat/completions wire format: request decode/validate, response and
 * SSE chunk encode.
 *
 * Decoding walks the body's keys once, as proto_completion.c does: each key goes to this
 * endpoint's table (messages, max_completion_tokens, logprobs, top_logprobs, response_format,
 * tools, ...), then to the shared generation table (proto_gen.c), and a key neither knows is a
 * 400 naming it. The messages are checked field by field and normalized into the shape chat
 * templates expect (content a string), because a template is an untyped program: what it gets
 * must already be valid. Everything the server cannot honour is refused with a 400 that says so
 * rather than ignored: content parts other than text, response formats other than text, tools
 * and tool messages. Encoding shares proto_enc.c's building blocks with the completions encoder.
 * Not here: rendering the template, tokenizing, the context check (the server has the model).
 */
#include "proto_chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto_enc.h"
#include "xd_error.h"

static int nomem(struct proto_error *e) {
    proto_error_set(e, 503, NULL, NULL, "out of memory");
    return XD_E_NOMEM;
}

/* snprintf for parameter paths: a path longer than the buffer is cut (proto_error keeps 63
 * bytes of a param anyway). */
static void pathf(char *b, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *b, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, n, fmt, ap);
    va_end(ap);
}

/* A 400 whose param is a path like "messages[2].content[0].type". */
static int bad_msg(struct proto_error *e, const char *param, const char *code, const char *what,
                   const char *arg) {
    proto_error_set(e, 400, param, code, what, param, arg ? arg : "");
    return XD_E_INVALID;
}

/* ---- messages ------------------------------------------------------------------------------- */

enum { ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL, ROLE_FUNCTION, ROLE__N };

static const char *const role_names[ROLE__N] = {
    [ROLE_SYSTEM] = "system",       [ROLE_DEVELOPER] = "developer", [ROLE_USER] = "user",
    [ROLE_ASSISTANT] = "assistant", [ROLE_TOOL] = "tool",           [ROLE_FUNCTION] = "function",
};

/* content (string or array of text parts) as one string; text parts joined with "\n". */
static int content_text(json_t *c, const char *where, struct proto_buf *b, struct proto_error *e) {
    char p[64];
    if (json_is_string(c)) return proto_buf_append(b, json_string_value(c), json_string_length(c));
    if (!json_is_array(c))
        return bad_msg(e, where, "invalid_type",
                       "'%s' must be a string or an array of content parts%s", NULL);
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        pathf(p, sizeof p, "%s[%zu]", where, i);
        json_t *type = json_object_get(part, "type");
        if (!json_is_object(part) || !json_is_string(type))
            return bad_msg(e, p, "invalid_type", "'%s' must be an object with a string 'type'%s",
                           NULL);
        if (strcmp(json_string_value(type), "text")) {
            pathf(p, sizeof p, "%s[%zu].type", where, i);
            return bad_msg(e, p, "unsupported_value",
                           "'%s': content parts of type '%.40s' are not supported by this server "
                           "(only 'text')",
                           json_string_value(type));
        }
        json_t *text = json_object_get(part, "text");
        const char *k;
        json_t *x;
        json_object_foreach(part, k, x) {
            if (strcmp(k, "type") && strcmp(k, "text")) {
                pathf(p, sizeof p, "%s[%zu]", where, i);
                return bad_msg(e, p, "unknown_parameter",
                               "'%s': unrecognized field '%.40s' in a text part", k);
            }
        }
        if (!json_is_string(text)) {
            pathf(p, sizeof p, "%s[%zu].text", where, i);
            return bad_msg(e, p, "invalid_type", "'%s' must be a string%s", NULL);
        }
        if (i > 0) proto_buf_puts(b, "\n");
        proto_buf_append(b, json_string_value(text), json_string_length(text));
    }
    return b->oom ? XD_E_NOMEM : 0;
}

/* Fields a message may carry besides role and content; tool-call fields are refused. */
static bool tool_field(const char *k) {
    return !strcmp(k, "tool_calls") || !strcmp(k, "function_call") || !strcmp(k, "tool_call_id");
}

/* One message, checked, into a fresh normalized object in *out. */
static int decode_message(json_t *m, size_t i, json_t **out, struct proto_error *e) {
    char where[64], p[64];
    pathf(where, sizeof where, "messages[%zu]", i);
    if (!json_is_object(m))
        return bad_msg(e, where, "invalid_type", "'%s' must be an object%s", NULL);
    json_t *role = json_object_get(m, "role");
    pathf(p, sizeof p, "%s.role", where);
    if (!json_is_string(role))
        return bad_msg(e, p, "invalid_value",
                       "'%s' must be one of 'system', 'developer', 'user', 'assistant'%s", NULL);
    int r = 0;
    while (r < ROLE__N && strcmp(role_names[r], json_string_value(role))) r++;
    if (r == ROLE_TOOL || r == ROLE_FUNCTION)
        return bad_msg(e, p, "unsupported_value",
                       "'%s': '%s' messages are not supported by this server (it does not "
                       "implement tool calling)",
                       role_names[r]);
    if (r == ROLE__N)
        return bad_msg(e, p, "invalid_value",
                       "'%s' must be one of 'system', 'developer', 'user', 'assistant', got "
                       "'%.40s'",
                       json_string_value(role));
    const char *k;
    json_t *x;
    json_object_foreach(m, k, x) {
        pathf(p, sizeof p, "%s.%.40s", where, k);
        bool assistant_only = !strcmp(k, "refusal") || !strcmp(k, "reasoning_content");
        if (tool_field(k) && r == ROLE_ASSISTANT &&
            (json_is_null(x) || (json_is_array(x) && json_array_size(x) == 0)))
            continue; /* an empty tool_calls is no tool call */
        if (tool_field(k))
            return bad_msg(e, p, "unsupported_parameter",
                           "'%s' is not supported by this server (it does not implement tool "
                           "calling)%s",
                           NULL);
        if (assistant_only && r != ROLE_ASSISTANT)
            return bad_msg(e, p, "invalid_value", "'%s' is allowed on assistant messages only%s",
                           NULL);
        if (strcmp(k, "role") && strcmp(k, "content") && strcmp(k, "name") && !assistant_only)
            return bad_msg(e, p, "unknown_parameter", "Unrecognized message field: '%s'%s", NULL);
        if (!json_is_null(x) && !json_is_string(x) && strcmp(k, "content"))
            return bad_msg(e, p, "invalid_type", "'%s' must be a string%s", NULL);
    }
    json_t *content = json_object_get(m, "content");
    pathf(p, sizeof p, "%s.content", where);
    if ((!content || json_is_null(content)) && r != ROLE_ASSISTANT)
        return bad_msg(e, p, "missing_required_parameter", "'%s' is required%s", NULL);
    struct proto_buf text;
    proto_buf_init(&text);
    int rc = content && !json_is_null(content) ? content_text(content, p, &text, e) : 0;
    json_t *o = json_object();
    if (!rc && o) {
        json_object_set_new(o, "role",
                            json_string(role_names[r == ROLE_DEVELOPER ? ROLE_SYSTEM : r]));
        json_object_set_new(o, "content", json_stringn(text.data ? text.data : "", text.len));
        json_t *name = json_object_get(m, "name"), *rc_ = json_object_get(m, "reasoning_content");
        if (json_is_string(name)) json_object_set(o, "name", name);
        if (json_is_string(rc_)) json_object_set(o, "reasoning_content", rc_);
    }
    bool built = o && json_is_string(json_object_get(o, "content"));
    proto_buf_free(&text);
    if (rc || !built) {
        json_decref(o);
        return rc ? rc : nomem(e);
    }
    *out = o;
    return 0;
}

static int decode_messages(const struct proto_field *f, json_t *v, void *base,
                           const struct proto_limits *lim, struct proto_error *e) {
    struct proto_chat_req *r = base;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad_msg(e, "messages", "invalid_value",
                       "'%s' must be a non-empty array of messages%s", NULL);
    if (json_array_size(v) > PROTO_CHAT_MAX_MESSAGES) {
        proto_error_set(e, 400, "messages", "invalid_value",
                        "'messages' may hold at most %d messages", PROTO_CHAT_MAX_MESSAGES);
        return XD_E_INVALID;
    }
    json_t *out = json_array();
    if (!out) return nomem(e);
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        json_t *o = NULL;
        int rc = decode_message(m, i, &o, e);
        if (!rc && json_array_append_new(out, o)) rc = nomem(e);
        if (rc) {
            json_decref(out);
            return rc;
        }
    }
    json_decref(r->messages); /* a duplicate key: jansson keeps the last, so do we */
    r->messages = out;
    return 1;
}

/* ---- other chat fields ---------------------------------------------------------------------- */

/* max_completion_tokens: max_tokens' row under its own name (it wins over max_tokens). */
static int decode_max_completion_tokens(const struct proto_field *f, json_t *v, void *base,
                                        const struct proto_limits *lim, struct proto_error *e) {
    struct proto_field row = *f;
    row.hi = lim->max_tokens;
    return proto_field_int(&row, v, base, lim, e);
}

static int decode_response_format(const struct proto_field *f, json_t *v, void *base,
                                  const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v)) return 1;
    json_t *type = json_object_get(v, "type");
    if (!json_is_object(v) || !json_is_string(type))
        return bad_msg(e, "response_format", "invalid_value",
                       "'%s' must be an object with a 'type'%s", NULL);
    const char *t = json_string_value(type);
    if (!strcmp(t, "text")) return 1;
    if (!strcmp(t, "json_object") || !strcmp(t, "json_schema"))
        return bad_msg(e, "response_format", "unsupported_value",
                       "'%s' of type '%s' is not supported yet (only 'text')", t);
    return bad_msg(e, "response_format", "invalid_value",
                   "'%s' type must be 'text', 'json_object' or 'json_schema', got '%.40s'", t);
}

/* tools / functions: absent, null or [] only - no tool calling yet. */
static int decode_tools(const struct proto_field *f, json_t *v, void *base,
                        const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0)) return 1;
    return bad_msg(e, f->name, "unsupported_parameter",
                   "'%s' is not supported by this server yet (no tool calling); send the "
                   "request without tools%s",
                   NULL);
}

/* tool_choice / function_call: null, "none" or "auto" (which, without tools, is "none"). */
static int decode_tool_choice(const struct proto_field *f, json_t *v, void *base,
                              const struct proto_limits *lim, struct proto_error *e) {
    const char *s = json_string_value(v);
    if (json_is_null(v) || (s && (!strcmp(s, "none") || !strcmp(s, "auto")))) return 1;
    return bad_msg(e, f->name, "unsupported_parameter",
                   "'%s' other than 'none' or 'auto' is not supported by this server yet (no "
                   "tool calling)%s",
                   NULL);
}

static int decode_parallel_tool_calls(const struct proto_field *f, json_t *v, void *base,
                                      const struct proto_limits *lim, struct proto_error *e) {
    if (json_is_null(v) || json_is_boolean(v)) return 1; /* nothing to do without tools */
    return bad_msg(e, f->name, "invalid_value", "'%s' must be a boolean%s", NULL);
}

static int decode_template_kwargs(const struct proto_field *f, json_t *v, void *base,
                                  const struct proto_limits *lim, struct proto_error *e) {
    struct proto_chat_req *r = base;
    if (json_is_null(v)) return 1;
    if (!json_is_object(v))
        return bad_msg(e, f->name, "invalid_value", "'%s' must be an object%s", NULL);
    json_decref(r->template_kwargs);
    r->template_kwargs = json_incref(v);
    return 1;
}

#define C(field) offsetof(struct proto_chat_req, field)
static const struct proto_field chat_fields[] = {
    {"messages", decode_messages, 0, 0, 0},
    {"logprobs", proto_field_bool, C(logprobs), 0, 0},
    {"top_logprobs", proto_field_int, C(top_logprobs), 0, PROTO_CHAT_MAX_TOP_LOGPROBS},
    {"response_format", decode_response_format, 0, 0, 0},
    {"tools", decode_tools, 0, 0, 0},
    {"functions", decode_tools, 0, 0, 0},
    {"tool_choice", decode_tool_choice, 0, 0, 0},
    {"function_call", decode_tool_choice, 0, 0, 0},
    {"parallel_tool_calls", decode_parallel_tool_calls, 0, 0, 0},
    {"chat_template_kwargs", decode_template_kwargs, 0, 0, 0},
};
#undef C

void proto_chat_req_free(struct proto_chat_req *r) {
    proto_gen_free(&r->gen);
    json_decref(r->messages);
    json_decref(r->template_kwargs);
    r->messages = r->template_kwargs = NULL;
}

int proto_chat_decode(const char *body, size_t len, const struct proto_limits *lim,
                      struct proto_chat_req *r, struct proto_error *e) {
    *r = (struct proto_chat_req){0};
    proto_gen_init(&r->gen);
    r->gen.max_tokens = -1; /* chat's default: until EOS or the end of the context */
    int32_t max_completion = -1;
    const struct proto_field mct = {"max_completion_tokens", decode_max_completion_tokens, 0, 0, 0};
    json_t *root;
    int rc = proto_json_parse_object(body, len, &root, e);
    if (rc) return rc;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "max_completion_tokens"))
            rc = mct.decode(&mct, v, &max_completion, lim, e);
        else
            rc = proto_fields_decode(chat_fields, sizeof chat_fields / sizeof chat_fields[0], key,
                                     v, r, lim, e);
        if (rc == 0) rc = proto_gen_decode_field(&r->gen, key, v, lim, e);
        if (rc == 0) {
            proto_error_set(e, 400, key, "unknown_parameter",
                            "Unrecognized request argument supplied: %.64s", key);
            rc = XD_E_INVALID;
        }
        if (rc < 0) goto fail;
    }
    rc = XD_E_INVALID;
    if (!r->messages) {
        proto_error_set(e, 400, "messages", "missing_required_parameter",
                        "you must provide a messages parameter");
        goto fail;
    }
    if (max_completion >= 0) r->gen.max_tokens = max_completion;
    if (r->top_logprobs > 0 && !r->logprobs) {
        proto_error_set(e, 400, "top_logprobs", "invalid_value",
                        "'top_logprobs' requires 'logprobs' to be true");
        goto fail;
    }
    if ((rc = proto_gen_finish(&r->gen, e))) goto fail;
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    proto_chat_req_free(r);
    return rc < 0 ? rc : XD_E_INVALID;
}

/* ---- encoding ------------------------------------------------------------------------------- */

/* The bytes of a token string as OpenAI's "bytes" lists them. Token strings are the piece's
 * text, or "bytes:\xNN..." for a piece that is not valid UTF-8 (api_logprobs.c): the escapes
 * are decoded back. Caveat: a vocabulary piece whose text really is "bytes:\x41" would list the
 * byte 0x41 rather than its ten characters; no real vocabulary has one. */
static json_t *token_bytes(const char *t, size_t len, bool *ok) {
    json_t *a = proto__chk(json_array(), ok);
    bool esc = len > 6 && !memcmp(t, "bytes:", 6) && (len - 6) % 4 == 0;
    for (size_t i = 6; esc && i < len; i += 4) {
        unsigned v;
        esc = t[i] == '\\' && t[i + 1] == 'x' && sscanf(t + i + 2, "%2x", &v) == 1;
    }
    for (size_t i = esc ? 6 : 0; i < len && *ok; i += esc ? 4 : 1) {
        unsigned v = (unsigned char)t[i];
        if (esc) sscanf(t + i + 2, "%2x", &v);
        json_array_append_new(a, json_integer(v));
    }
    return a;
}

static json_t *token_json(const char *t, size_t len, float lp, bool *ok) {
    json_t *o = proto__chk(json_object(), ok);
    json_object_set_new(o, "token", proto__chk(json_stringn(t, len), ok));
    json_object_set_new(o, "logprob", json_real(lp));
    json_object_set_new(o, "bytes", token_bytes(t, len, ok));
    return o;
}

static json_t *logprobs_json(const struct proto_choice *c, bool *ok) {
    if (!c->has_logprobs) return json_null();
    json_t *o = proto__chk(json_object(), ok), *content = proto__chk(json_array(), ok);
    for (size_t i = 0; i < c->n_lp && *ok; i++) {
        const struct proto_token_logprob *t = &c->lp[i];
        json_t *x = token_json(t->token, t->len, t->logprob, ok);
        json_t *tops = proto__chk(json_array(), ok);
        for (size_t k = 0; k < t->n_top && *ok; k++)
            json_array_append_new(
                tops, token_json(t->top[k].token, t->top[k].len, t->top[k].logprob, ok));
        json_object_set_new(x, "top_logprobs", tops);
        json_array_append_new(content, x);
    }
    json_object_set_new(o, "content", content);
    json_object_set_new(o, "refusal", json_null());
    return o;
}

static json_t *text_json(const struct proto_choice *c, bool *ok) {
    return proto__chk(json_stringn(c->text ? c->text : "", c->len), ok);
}

static json_t *choice_json(const struct proto_choice *c, bool *ok) {
    json_t *o = proto__chk(json_object(), ok), *msg = proto__chk(json_object(), ok);
    json_object_set_new(msg, "role", json_string("assistant"));
    json_object_set_new(msg, "content", text_json(c, ok));
    json_object_set_new(o, "index", json_integer(c->index));
    json_object_set_new(o, "message", msg);
    json_object_set_new(o, "logprobs", proto__chk(logprobs_json(c, ok), ok));
    json_object_set_new(o, "finish_reason",
                        c->finish_reason ? json_string(c->finish_reason) : json_null());
    return o;
}

int proto_chat_encode(const struct proto_meta *m, const struct proto_choice *choices,
                      size_t n_choices, const struct proto_usage *u, struct proto_buf *out) {
    bool ok = true;
    json_t *o = proto__head_json(m, "chat.completion", &ok), *arr = proto__chk(json_array(), &ok);
    for (size_t i = 0; i < n_choices && ok; i++)
        json_array_append_new(arr, choice_json(&choices[i], &ok));
    json_object_set_new(o, "choices", arr);
    json_object_set_new(o, "usage", proto__usage_json(u, &ok));
    return proto__dump(o, ok, "", "", out);
}

/* One chunk event with one choice whose delta is given (consumed). */
static int delta_chunk(const struct proto_meta *m, int32_t index, json_t *delta, json_t *logprobs,
                       const char *finish, bool usage_null, bool ok, struct proto_buf *out) {
    json_t *o = proto__head_json(m, "chat.completion.chunk", &ok);
    json_t *arr = proto__chk(json_array(), &ok), *ch = proto__chk(json_object(), &ok);
    json_object_set_new(ch, "index", json_integer(index));
    json_object_set_new(ch, "delta", proto__chk(delta, &ok));
    json_object_set_new(ch, "logprobs", proto__chk(logprobs, &ok));
    json_object_set_new(ch, "finish_reason", finish ? json_string(finish) : json_null());
    json_array_append_new(arr, ch);
    json_object_set_new(o, "choices", arr);
    if (usage_null) json_object_set_new(o, "usage", json_null());
    return proto__dump(o, ok, "data: ", "\n\n", out);
}

int proto_chat_chunk(const struct proto_meta *m, const struct proto_choice *c, bool usage_null,
                     struct proto_buf *out) {
    int rc = 0;
    if (c->len || c->n_lp) {
        bool ok = true;
        json_t *d = proto__chk(json_object(), &ok);
        json_object_set_new(d, "content", text_json(c, &ok));
        rc = delta_chunk(m, c->index, d, logprobs_json(c, &ok), NULL, usage_null, ok, out);
    }
    if (!rc && c->finish_reason)
        rc = delta_chunk(m, c->index, json_object(), json_null(), c->finish_reason, usage_null,
                         true, out);
    return rc;
}

int proto_chat_role_chunk(const struct proto_meta *m, int32_t index, bool usage_null,
                          struct proto_buf *out) {
    bool ok = true;
    json_t *d = proto__chk(json_object(), &ok);
    json_object_set_new(d, "role", json_string("assistant"));
    json_object_set_new(d, "content", json_string(""));
    return delta_chunk(m, index, d, json_null(), NULL, usage_null, ok, out);
}

int proto_chat_usage_chunk(const struct proto_meta *m, const struct proto_usage *u,
                           struct proto_buf *out) {
    bool ok = true;
    json_t *o = proto__head_json(m, "chat.completion.chunk", &ok);
    json_object_set_new(o, "choices", proto__chk(json_array(), &ok));
    json_object_set_new(o, "usage", proto__usage_json(u, &ok));
    return proto__dump(o, ok, "data: ", "\n\n", out);
}
