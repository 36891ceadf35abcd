/* chat_template.c - the chat template of a model on top of the Jinja interpreter: where the
 * template comes from (GGUF key, a file, the ChatML fallback), the load-time probe, and the
 * variables a render passes (messages, add_generation_prompt, bos_token, eos_token, plus the
 * caller's extras such as tools or enable_thinking), named and shaped as Hugging Face's
 * apply_chat_template passes them, so the text matches what the model was trained on.
 *
 * The probe renders two small conversations at load time: user/assistant/user with a
 * generation prompt must render (a template that cannot is refused, with its message), and a
 * leading system message is tried to learn whether the template accepts one (Mixtral's
 * raises instead). Trade-off: the probe costs two renders at startup and rejects templates
 * that only fail on inputs nobody sends; in exchange a server never starts with a template
 * that breaks on the first request. Not here: tokenizing the result, and turning an OpenAI
 * request into messages (content parts, tool-call arguments) - the endpoint does that.
 */
#include "chat_template.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "xd_error.h"

struct xd_chat_template {
    struct xd_jinja_tpl *tpl;
    char *src; /* NUL-terminated copy */
    size_t len;
    enum xd_chat_template_origin origin;
    unsigned caps;
};

const char xd_chat_template_chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b) {
    if (err && errlen) snprintf(err, errlen, fmt, a, b);
}

static json_t *probe_messages(bool with_system) {
    json_t *m = json_array();
    if (!m) return NULL;
    if (with_system)
        json_array_append_new(
            m, json_pack("{s:s,s:s}", "role", "system", "content", "You are a helpful assistant."));
    json_array_append_new(m, json_pack("{s:s,s:s}", "role", "user", "content", "Hello"));
    if (!with_system) {
        json_array_append_new(
            m, json_pack("{s:s,s:s}", "role", "assistant", "content", "Hi! How can I help?"));
        json_array_append_new(m,
                              json_pack("{s:s,s:s}", "role", "user", "content", "Tell me a joke."));
    }
    return m;
}

static int probe(struct xd_chat_template *t, char *err, size_t errlen) {
    struct xd_chat_render_opts o = {
        .add_generation_prompt = true, .bos_token = "<s>", .eos_token = "</s>"};
    char msg[512];
    for (int with_system = 0; with_system < 2; with_system++) {
        json_t *m = probe_messages(with_system);
        if (!m) return -ENOMEM;
        char *out = NULL;
        size_t len;
        int rc = xd_chat_template_render(t, m, &o, &out, &len, msg, sizeof msg);
        json_decref(m);
        free(out);
        if (rc == XD_E_TEMPLATE_RAISE && with_system) continue; /* no system role: fine */
        if (rc) {
            set_err(err, errlen,
                    with_system ? "rendering a system/user probe conversation failed: %s%s"
                                : "rendering a user/assistant/user probe conversation failed: "
                                  "%s%s",
                    msg, "");
            return rc;
        }
        if (with_system) t->caps |= XD_CHAT_TPL_SYSTEM;
    }
    return 0;
}

static int load(const char *src, size_t len, const struct xd_jinja_limits *lim,
                enum xd_chat_template_origin origin, struct xd_chat_template **out, char *err,
                size_t errlen) {
    if (err && errlen) err[0] = '\0';
    struct xd_chat_template *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->src = malloc(len + 1);
    if (!t->src) {
        free(t);
        return -ENOMEM;
    }
    if (len) memcpy(t->src, src, len);
    t->src[len] = '\0';
    t->len = len;
    t->origin = origin;
    int rc = xd_jinja_parse(t->src, len, lim, &t->tpl, err, errlen);
    if (!rc) {
        if (xd_jinja_uses_name(t->tpl, "tools")) t->caps |= XD_CHAT_TPL_TOOLS;
        if (xd_jinja_uses_name(t->tpl, "enable_thinking")) t->caps |= XD_CHAT_TPL_THINKING;
        rc = probe(t, err, errlen);
    }
    if (rc) {
        xd_chat_template_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int xd_chat_template_load(const char *src, size_t len, const struct xd_jinja_limits *lim,
                          struct xd_chat_template **out, char *err, size_t errlen) {
    return load(src, len, lim, XD_CHAT_TEMPLATE_STRING, out, err, errlen);
}

int xd_chat_template_load_file(const char *path, const struct xd_jinja_limits *lim,
                               struct xd_chat_template **out, char *err, size_t errlen) {
    struct xd_jinja_limits def;
    if (!lim) {
        xd_jinja_limits_default(&def);
        lim = &def;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        int rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : -ENOMEM;
    while (!rc) {
        if (n == cap) {
            if (cap > lim->max_source) {
                rc = XD_E_TEMPLATE_LIMIT;
                set_err(err, errlen, "%s: %s", path, "template file is over the size limit");
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = -ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) {
            if (ferror(f)) {
                rc = -EIO;
                set_err(err, errlen, "%s: %s", path, "read error");
            }
            break;
        }
    }
    fclose(f);
    if (!rc) rc = load(buf, n, lim, XD_CHAT_TEMPLATE_FILE, out, err, errlen);
    free(buf);
    return rc;
}

int xd_chat_template_gguf_source(const struct xd_gguf *g, const char **src, size_t *len) {
    struct xd_gguf_str s;
    int rc = xd_gguf_get_str(g, "tokenizer.chat_template", &s);
    if (rc) return rc;
    *src = s.ptr;
    *len = (size_t)s.len;
    return 0;
}

int xd_chat_template_load_model(const struct xd_gguf *g, const char *override_path,
                                const struct xd_jinja_limits *lim, struct xd_chat_template **out,
                                char *err, size_t errlen) {
    if (override_path) return xd_chat_template_load_file(override_path, lim, out, err, errlen);
    const char *src;
    size_t len;
    int rc = g ? xd_chat_template_gguf_source(g, &src, &len) : XD_E_MISSING;
    if (rc == XD_E_MISSING)
        return load(xd_chat_template_chatml, strlen(xd_chat_template_chatml), lim,
                    XD_CHAT_TEMPLATE_FALLBACK, out, err, errlen);
    if (rc) {
        set_err(err, errlen, "%s%s", "tokenizer.chat_template is not a string", "");
        return rc;
    }
    return load(src, len, lim, XD_CHAT_TEMPLATE_GGUF, out, err, errlen);
}

void xd_chat_template_free(struct xd_chat_template *t) {
    if (!t) return;
    xd_jinja_free(t->tpl);
    free(t->src);
    free(t);
}

/* json_string for a token text that may be NULL; NULL back on invalid UTF-8 or no memory. */
static json_t *token_json(const char *s) { return json_string(s ? s : ""); }

int xd_chat_template_render(const struct xd_chat_template *t, const json_t *messages,
                            const struct xd_chat_render_opts *opts, char **out, size_t *len,
                            char *err, size_t errlen) {
    *out = NULL;
    if (len) *len = 0;
    if (err && errlen) err[0] = '\0';
    static const struct xd_chat_render_opts none = {0};
    if (!opts) opts = &none;
    if (!json_is_array(messages)) {
        set_err(err, errlen, "%s%s", "messages must be a JSON array", "");
        return XD_E_INVALID;
    }
    if (opts->vars && !json_is_object(opts->vars)) {
        set_err(err, errlen, "%s%s", "template variables must be a JSON object", "");
        return XD_E_INVALID;
    }
    json_t *vars = json_object();
    if (!vars) return -ENOMEM;
    int rc = 0;
    json_t *bos = token_json(opts->bos_token), *eos = token_json(opts->eos_token);
    if (!bos || !eos) {
        json_decref(bos);
        json_decref(eos);
        set_err(err, errlen, "%s%s", "bos/eos token text is not valid UTF-8", "");
        rc = XD_E_INVALID;
    } else if (json_object_set_new(vars, "bos_token", bos) | /* both run: _new owns its value */
               json_object_set_new(vars, "eos_token", eos) |
               json_object_set_new(vars, "add_generation_prompt",
                                   json_boolean(opts->add_generation_prompt)) |
               json_object_set(vars, "messages", (json_t *)messages)) {
        rc = -ENOMEM;
    }
    if (!rc && opts->vars) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)opts->vars, key, val) {
            if (json_object_get(vars, key)) continue;
            if (json_object_set(vars, key, val)) {
                rc = -ENOMEM;
                break;
            }
        }
    }
    if (!rc) {
        struct xd_jinja_render_opts ro = {.limits = opts->limits, .now = opts->now};
        rc = xd_jinja_render(t->tpl, vars, &ro, out, len, err, errlen);
    }
    json_decref(vars);
    return rc;
}

const char *xd_chat_template_source(const struct xd_chat_template *t, size_t *len) {
    if (len) *len = t->len;
    return t->src;
}

enum xd_chat_template_origin xd_chat_template_origin(const struct xd_chat_template *t) {
    return t->origin;
}

const char *xd_chat_template_origin_name(enum xd_chat_template_origin o) {
    switch (o) {
    case XD_CHAT_TEMPLATE_GGUF: return "gguf";
    case XD_CHAT_TEMPLATE_FILE: return "file";
    case XD_CHAT_TEMPLATE_FALLBACK: return "chatml-fallback";
    case XD_CHAT_TEMPLATE_STRING: return "string";
    default: return "unknown";
    }
}

unsigned xd_chat_template_caps(const struct xd_chat_template *t) { return t->caps; }
