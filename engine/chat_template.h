/* chat_template.h - a model's chat template: OpenAI-style messages in, prompt text out.
 *
 * Load once when the model loads (the template is parsed and then checked by rendering a
 * probe conversation, so a broken or hostile template fails the load, not a request), render
 * per request. A loaded template is read-only: any number of threads may render it at once.
 *
 * Messages are a jansson array of objects passed through to the template as they are - every
 * field a template may read (role, content as a string or a list of parts, tool_calls with
 * arguments as an object, tool_call_id, reasoning_content, thinking, ...) reaches it, and the
 * caller decides how to normalize an OpenAI request first. The rendered text contains the
 * special tokens the template writes (bos_token included where it prints it): tokenize it with
 * special tokens recognised and without adding another BOS.
 */
#ifndef XD_CHAT_TEMPLATE_H
#define XD_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja.h"

struct xd_gguf;
struct xd_chat_template;

/* Where a loaded template came from (for the startup log line and /v1/models). */
enum xd_chat_template_origin {
    XD_CHAT_TEMPLATE_GGUF,     /* the model's tokenizer.chat_template */
    XD_CHAT_TEMPLATE_FILE,     /* --chat-template FILE */
    XD_CHAT_TEMPLATE_FALLBACK, /* the model has none: ChatML (xd_chat_template_chatml) */
    XD_CHAT_TEMPLATE_STRING,   /* given as a string to xd_chat_template_load */
};

/* What the probe renders found out, and which variables the template reads. */
enum {
    XD_CHAT_TPL_SYSTEM = 1u << 0,   /* renders a leading system message (Mixtral's refuses) */
    XD_CHAT_TPL_TOOLS = 1u << 1,    /* reads `tools` */
    XD_CHAT_TPL_THINKING = 1u << 2, /* reads `enable_thinking` */
};

/* The documented fallback for a model without a template: ChatML as Qwen2/Hermes use it,
 * "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n"
 * when a generation prompt is asked for. */
extern const char xd_chat_template_chatml[];

struct xd_chat_render_opts {
    bool add_generation_prompt; /* end with the assistant's header, ready to generate */
    const char *bos_token;      /* the text of the vocabulary's BOS / EOS tokens; NULL: "" */
    const char *eos_token;
    const json_t *vars; /* more template variables (an object; NULL: none): tools,
                           enable_thinking, reasoning_effort, date_string, ... The four above
                           and messages win over a key of the same name here. */
    int64_t now;        /* seconds since the epoch for strftime_now (local time); 0: the clock */
    const struct xd_jinja_limits *limits; /* NULL: the limits the template was loaded with */
};

/* Parse src[0..len) and probe it. 0 and *out (free with xd_chat_template_free); otherwise
 * *out untouched, a negative code and a message in err naming the line and the problem:
 * XD_E_TEMPLATE (syntax, or the probe failed), XD_E_UNSUPPORTED (a Jinja feature this
 * interpreter lacks, named), XD_E_TEMPLATE_RAISE (the template rejects even a plain
 * user/assistant conversation), XD_E_TEMPLATE_LIMIT, -ENOMEM. lim NULL means defaults. */
int xd_chat_template_load(const char *src, size_t len, const struct xd_jinja_limits *lim,
                          struct xd_chat_template **out, char *err, size_t errlen);

/* xd_chat_template_load on a file's bytes (origin FILE). Errors as there, or a negative errno
 * for a file that cannot be read. */
int xd_chat_template_load_file(const char *path, const struct xd_jinja_limits *lim,
                               struct xd_chat_template **out, char *err, size_t errlen);

/* A model's template: override_path when not NULL, else the GGUF's tokenizer.chat_template,
 * else the ChatML fallback (origin FALLBACK - the caller logs that). Errors as
 * xd_chat_template_load; XD_E_BAD_TYPE when the key exists but is not a string. */
int xd_chat_template_load_model(const struct xd_gguf *g, const char *override_path,
                                const struct xd_jinja_limits *lim, struct xd_chat_template **out,
                                char *err, size_t errlen);

/* The template source a GGUF carries: 0 with *src and *len pointing into g (valid while g is
 * open; not NUL-terminated), XD_E_MISSING when it has none, XD_E_BAD_TYPE when not a string. */
int xd_chat_template_gguf_source(const struct xd_gguf *g, const char **src, size_t *len);

/* Free a template; NULL is fine. */
void xd_chat_template_free(struct xd_chat_template *t);

/* Render messages (a JSON array, borrowed) with opts (NULL: no generation prompt, empty
 * tokens). On success 0 and *out, a malloc'd NUL-terminated string the caller frees, with its
 * length in *len. On failure *out is NULL, err says why, and the code is XD_E_TEMPLATE_RAISE
 * (err is exactly the template's raise_exception text, e.g. "Conversation roles must
 * alternate user/assistant/user/assistant/..."), XD_E_TEMPLATE (evaluation error, "line N:
 * ..."), XD_E_TEMPLATE_LIMIT, XD_E_UNSUPPORTED, XD_E_INVALID (messages not an array, a token
 * or variable that is not valid JSON text), or -ENOMEM. Since the template passed its probe at
 * load, a failure here comes from the request: answer it with a 400 (-ENOMEM aside). */
int xd_chat_template_render(const struct xd_chat_template *t, const json_t *messages,
                            const struct xd_chat_render_opts *opts, char **out, size_t *len,
                            char *err, size_t errlen);

/* The template's source text (NUL-terminated; len may be NULL). */
const char *xd_chat_template_source(const struct xd_chat_template *t, size_t *len);
/* Where it came from, and that as a word: "gguf", "file", "chatml-fallback", "string". */
enum xd_chat_template_origin xd_chat_template_origin(const struct xd_chat_template *t);
const char *xd_chat_template_origin_name(enum xd_chat_template_origin o);
/* XD_CHAT_TPL_* bits. */
unsigned xd_chat_template_caps(const struct xd_chat_template *t);

#endif
