/* jinja.h - a small sandboxed Jinja2 interpreter, enough for the chat templates models ship.
 *
 * A template is parsed once (xd_jinja_parse: bytes in, a read-only syntax tree out, no I/O) and
 * rendered any number of times, from any number of threads at once (xd_jinja_render: the tree
 * is never written; each render owns its arena). The dialect is Jinja2 3.1 configured the way
 * Hugging Face's apply_chat_template configures it: ImmutableSandboxedEnvironment,
 * trim_blocks=True, lstrip_blocks=True, the loopcontrols extension (break/continue), the
 * {% generation %} block, the globals raise_exception(msg) and strftime_now(fmt), and tojson as
 * json.dumps(x, ensure_ascii=False, indent, separators, sort_keys). Rendering a supported
 * template gives the bytes Python's Jinja2 gives (tests/test_template.c checks every stored
 * template); the values, string methods and filters it knows are listed in docs/chat-template.md.
 *
 * Every render is bounded: by output bytes, arena bytes, evaluation steps (string and list work
 * is charged by size), total loop iterations, and recursion depth; parsing by source bytes,
 * syntax-tree nodes and nesting. A hostile template or conversation stops with
 * XD_E_TEMPLATE_LIMIT and a message naming the limit - never a crash, a hang or an unbounded
 * allocation.
 */
#ifndef XD_JINJA_H
#define XD_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct xd_jinja_limits {
    size_t max_source;       /* template bytes */
    size_t max_nodes;        /* syntax-tree nodes */
    unsigned max_nesting;    /* nested blocks plus nested brackets while parsing */
    size_t max_output;       /* bytes of rendered text (also of any one macro or block set) */
    size_t max_memory;       /* bytes one render may allocate (values, captured output) */
    uint64_t max_steps;      /* evaluation work: one per node, plus one per 16 bytes handled */
    uint64_t max_loop_iters; /* for-loop iterations over the whole render */
    unsigned max_depth;      /* nested evaluation: statements, expressions, macro calls */
};

/* The defaults: 1 MiB source, 1M nodes, nesting 100; 8 MiB output, 128 MiB memory, 50M steps,
 * 1M loop iterations, depth 500. Can't fail. */
void xd_jinja_limits_default(struct xd_jinja_limits *lim);

struct xd_jinja_tpl;

/* Parse src[0..len) (UTF-8; need not be NUL-terminated). On success 0 and *out (free it with
 * xd_jinja_free); on failure *out is untouched and a negative code comes back with a message
 * in err ("line 3: unexpected end of template, expected 'endfor'"): XD_E_TEMPLATE for a
 * syntax error, XD_E_UNSUPPORTED for a Jinja feature this interpreter lacks (the message
 * names it), XD_E_TEMPLATE_LIMIT past a limit, -ENOMEM. lim NULL means the defaults; the
 * render limits in it are kept for xd_jinja_render calls that pass none. */
int xd_jinja_parse(const char *src, size_t len, const struct xd_jinja_limits *lim,
                   struct xd_jinja_tpl **out, char *err, size_t errlen);

/* Free a parsed template; NULL is fine. */
void xd_jinja_free(struct xd_jinja_tpl *t);

struct xd_jinja_render_opts {
    const struct xd_jinja_limits *limits; /* NULL: the ones given to xd_jinja_parse */
    int64_t now; /* seconds since the epoch for strftime_now (local time); 0: the clock */
};

/* Render t with the variables of the JSON object vars (borrowed, not modified; NULL = none).
 * On success 0, *out a malloc'd NUL-terminated string the caller frees and *len its length
 * (the text may itself contain NUL bytes from the variables). On failure *out is NULL and a
 * negative code comes back with a message in err: XD_E_TEMPLATE_RAISE with exactly the text
 * the template passed to raise_exception, XD_E_TEMPLATE for an evaluation error ("line 7:
 * 'dict object' has no attribute 'role'"), XD_E_TEMPLATE_LIMIT, XD_E_UNSUPPORTED, -ENOMEM. */
int xd_jinja_render(const struct xd_jinja_tpl *t, const json_t *vars,
                    const struct xd_jinja_render_opts *opts, char **out, size_t *len, char *err,
                    size_t errlen);

/* Whether the template reads a variable called name anywhere (a Name node), e.g. "tools".
 * Pure; can't fail. */
int xd_jinja_uses_name(const struct xd_jinja_tpl *t, const char *name);

#endif
