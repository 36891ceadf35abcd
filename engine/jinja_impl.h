/* jinja_impl.h - what the files of the Jinja interpreter share, and nothing else includes:
 * the arena, the value model, tokens, the syntax tree and the render context.
 *
 *   jinja_value.c     arena, strings, Python str()/repr(), json.dumps, equality and ordering,
 *                     JSON input to values
 *   jinja_lex.c       source bytes -> tokens (whitespace control, trim/lstrip_blocks, raw)
 *   jinja_parse.c     tokens -> syntax tree (statements, Jinja's expression grammar)
 *   jinja_eval.c      syntax tree + variables -> text (scopes, loops, macros, limits)
 *   jinja_builtins.c  filters, tests, globals, str/dict/list methods, attribute lookup
 *
 * Memory: everything a parse or a render makes lives in one arena per parse or render and is
 * freed with it, so no value is ever freed on its own (the sandbox is immutable: a value, once
 * made, never changes - only namespaces and frames are written). The arena counts its bytes
 * against a limit; allocation past it fails cleanly.
 */
#ifndef XD_JINJA_IMPL_H
#define XD_JINJA_IMPL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja.h"

/* ---- arena ------------------------------------------------------------------------------- */
struct xd__jchunk;
struct xd__jarena {
    struct xd__jchunk *head; /* newest chunk first */
    size_t used;             /* bytes handed out plus chunk overhead */
    size_t limit;            /* used never exceeds it */
};

void xd__jarena_init(struct xd__jarena *a, size_t limit);
void xd__jarena_free(struct xd__jarena *a);
/* n zeroed bytes, 16-aligned; NULL past the limit or when malloc fails (a unchanged). */
void *xd__jarena_alloc(struct xd__jarena *a, size_t n);

/* ---- values ------------------------------------------------------------------------------ */
struct xd__jstr {
    const char *p;
    size_t n;
};

enum xd__jtype {
    XJ_UNDEF,  /* Jinja's Undefined; hint says why (for the error when it is used) */
    XJ_NONE,   /* None */
    XJ_BOOL,   /* True / False */
    XJ_INT,    /* int (64-bit; overflow is an error, not a bignum) */
    XJ_FLOAT,  /* float */
    XJ_STR,    /* str: UTF-8 bytes; XJ_F_SAFE marks markupsafe.Markup */
    XJ_LIST,   /* list, or tuple with XJ_F_TUPLE; never changed once built */
    XJ_DICT,   /* dict: insertion-ordered, never changed once built */
    XJ_NS,     /* namespace(): the one value templates may write */
    XJ_MACRO,  /* a {% macro %} bound to the frame it was defined in */
    XJ_FUNC,   /* a global function: range, namespace, dict, raise_exception, ... */
    XJ_METHOD, /* a bound str/dict/list method: "abc".upper */
    XJ_LOOP,   /* the loop object of a for loop */
};

enum { XJ_F_SAFE = 1, XJ_F_TUPLE = 2 };

/* Why a value is undefined, for the message when it is used. */
enum xd__jhint {
    XJ_H_NONE,  /* no hint */
    XJ_H_NAME,  /* 'x' is undefined */
    XJ_H_ATTR,  /* '<type> object' has no attribute 'x' */
    XJ_H_INDEX, /* '<type> object' has no element N (index in u.i) */
    XJ_H_MSG,   /* the message is in u.s */
};

struct xd__jlist;
struct xd__jdict;
struct xd__jns;
struct xd__jmacro;
struct xd__jmethod;
struct xd__jloop;

struct xd__jval {
    uint8_t t;         /* enum xd__jtype */
    uint8_t f;         /* XJ_F_* */
    uint8_t hint;      /* XJ_UNDEF: enum xd__jhint */
    uint8_t hint_type; /* XJ_UNDEF: the type of the object the lookup failed on */
    union {
        bool b;
        int64_t i;
        double d;
        struct xd__jstr s; /* XJ_STR; XJ_UNDEF: the name, attribute or message */
        struct xd__jlist *l;
        struct xd__jdict *m;
        struct xd__jns *ns;
        struct xd__jmacro *mac;
        int fn; /* XJ_FUNC: index into the globals table */
        struct xd__jmethod *meth;
        struct xd__jloop *loop;
    } u;
};

struct xd__jlist {
    size_t n;
    struct xd__jval *v;
};

struct xd__jdict {
    size_t n;
    struct xd__jval *k, *v; /* keys are unique (Python equality) */
};

struct xd__jns {
    size_t n, cap;
    struct xd__jstr *k;
    struct xd__jval *v;
};

struct xd__jmethod {
    struct xd__jval self;
    struct xd__jstr name;
};

struct xd__jnode;
struct xd__jframe;

struct xd__jmacro {
    const struct xd__jnode *node;
    struct xd__jframe *frame; /* where it was defined: its free names resolve from there */
};

struct xd__jloop {
    const struct xd__jval *items;
    size_t n, i;
    struct xd__jval changed; /* loop.changed(): the last values (a tuple), XJ_UNDEF before */
};

/* ---- tokens ------------------------------------------------------------------------------ */
enum xd__jtok {
    JT_EOF,
    JT_DATA,
    JT_VAR_BEGIN,
    JT_VAR_END,
    JT_BLOCK_BEGIN,
    JT_BLOCK_END,
    JT_NAME,
    JT_STRING,
    JT_INT,
    JT_FLOAT,
    JT_OP,
};

/* Operators: the lexer's, then the ones only the parser makes. */
enum xd__jop {
    JO_NONE,
    JO_ADD,
    JO_SUB,
    JO_DIV,
    JO_FLOORDIV,
    JO_MUL,
    JO_MOD,
    JO_POW,
    JO_TILDE,
    JO_LBRACKET,
    JO_RBRACKET,
    JO_LPAREN,
    JO_RPAREN,
    JO_LBRACE,
    JO_RBRACE,
    JO_EQ,
    JO_NE,
    JO_GT,
    JO_GTEQ,
    JO_LT,
    JO_LTEQ,
    JO_ASSIGN,
    JO_DOT,
    JO_COLON,
    JO_PIPE,
    JO_COMMA,
    JO_SEMICOLON,
    JO_IN,
    JO_NOTIN,
    JO_NEG,
    JO_POS,
};

struct xd__jtoken {
    uint8_t type; /* enum xd__jtok */
    uint8_t op;   /* JT_OP: enum xd__jop */
    uint32_t line;
    struct xd__jstr s; /* JT_DATA text, JT_NAME, JT_STRING (unescaped) */
    int64_t i;         /* JT_INT */
    double d;          /* JT_FLOAT */
};

/* Tokenize src[0..len) (already newline-normalized, see jinja_lex.c) into an arena array
 * ending with JT_EOF. 0, or XD_E_TEMPLATE / XD_E_UNSUPPORTED / XD_E_TEMPLATE_LIMIT / -ENOMEM
 * with "line N: message" in err. */
int xd__jinja_lex(const char *src, size_t len, struct xd__jarena *a, size_t max_tokens,
                  struct xd__jtoken **out, size_t *n_out, char *err, size_t errlen);
/* Newline normalization the way Jinja's lexer does it: \r\n and \r become \n, and one
 * trailing newline is dropped (keep_trailing_newline=False). Returns a copy in the arena. */
int xd__jinja_normalize(const char *src, size_t len, struct xd__jarena *a, struct xd__jstr *out);

/* ---- syntax tree ------------------------------------------------------------------------- */
enum xd__jnkind {
    /* statements */
    JN_DATA,        /* s: text */
    JN_OUTPUT,      /* {{ a }} */
    JN_IF,          /* if a: v[] else w[] (an elif is an else holding one JN_IF) */
    JN_FOR,         /* for a (target) in b [if c]: v[] else w[] */
    JN_SET,         /* set a (target) = b */
    JN_SETBLOCK,    /* set a (target): v[] | w[] (filters with a == NULL) */
    JN_MACRO,       /* macro s(names[] = w[] defaults, NULL where none): v[] */
    JN_FILTERBLOCK, /* filter w[] (filters with a == NULL): v[] */
    JN_WITH,        /* with w[] (JN_SET nodes, evaluated outside): v[] */
    JN_BREAK,
    JN_CONTINUE,
    JN_SCOPE, /* v[] in place: {% generation %} and {% block %} */
    /* expressions */
    JN_CONST,   /* val */
    JN_NAME,    /* s */
    JN_GETATTR, /* a.s */
    JN_GETITEM, /* a[b] */
    JN_SLICE,   /* a:b:c, NULL where left out */
    JN_CALL,    /* a(v[], names[] = w[]) */
    JN_FILTER,  /* a | s(v[], names[] = w[]); fn: the filter */
    JN_TEST,    /* a is s(v[], names[] = w[]); fn: the test */
    JN_BINOP,   /* a op b */
    JN_UNARY,   /* op a */
    JN_COMPARE, /* a, then v[] of JN_OPERAND */
    JN_OPERAND, /* op a */
    JN_AND,
    JN_OR,
    JN_NOT,
    JN_COND,   /* b if a else c (c NULL: undefined) */
    JN_CONCAT, /* v[0] ~ v[1] ~ ... */
    JN_LIST,   /* [v[]] */
    JN_TUPLE,  /* (v[]) */
    JN_DICT,   /* {v[i]: w[i]} */
    JN_NSREF,  /* set target s.s2 */
};

enum { JN_F_VARARGS = 1, JN_F_KWARGS = 2 }; /* JN_MACRO: the body reads varargs / kwargs */

struct xd__jnode {
    uint8_t kind; /* enum xd__jnkind */
    uint8_t op;   /* enum xd__jop */
    uint16_t flags;
    uint16_t height; /* expressions: 1 + the tallest child (bounded by the parser) */
    uint32_t line;
    struct xd__jnode *a, *b, *c;
    struct xd__jnode **v, **w;
    uint32_t n, nw;
    struct xd__jstr s, s2;
    struct xd__jstr *names;
    uint32_t nnames;
    struct xd__jval val;
    const void *fn; /* JN_FILTER: const struct xd__jfilter *, JN_TEST: const struct xd__jtest * */
};

struct xd_jinja_tpl {
    struct xd__jarena arena; /* the tree, token texts and the normalized source */
    struct xd__jnode **body;
    uint32_t n;
    struct xd_jinja_limits lim;
};

/* Parse tokens into t (t->arena already holds them). 0 or an error code with err set. */
int xd__jinja_parse_tokens(struct xd_jinja_tpl *t, const struct xd__jtoken *toks, size_t n,
                           char *err, size_t errlen);

/* ---- render context ---------------------------------------------------------------------- */
/* A growable byte buffer in the render arena (old storage is left to the arena). */
struct xd__jbuf {
    char *p;
    size_t n, cap;
};

struct xd__jframe {
    struct xd__jframe *parent; /* NULL at the top: then the render's variables, then globals */
    size_t n, cap;
    struct xd__jstr *k;
    struct xd__jval *v;
};

struct xd__jctx {
    struct xd__jarena arena;
    const struct xd_jinja_limits *lim;
    const struct xd__jdict *vars; /* the render's variables */
    struct xd__jbuf *out;         /* where text goes now (a macro call swaps it) */
    uint64_t steps, iters;
    unsigned depth;
    int64_t now;
    uint32_t line; /* of the node being evaluated, for messages */
    int err;       /* the first error, once set */
    char *errbuf;
    size_t errlen;
};

/* Record an error (the first one wins) with "line N: " before the message; returns code. */
int xd__jerr(struct xd__jctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Record an error whose message is exactly msg (raise_exception). Returns code. */
int xd__jerr_raw(struct xd__jctx *c, int code, const char *msg, size_t n);
/* Count work: one step plus one per 16 bytes; 0, or XD_E_TEMPLATE_LIMIT past max_steps. */
int xd__jcharge(struct xd__jctx *c, size_t bytes);
/* Arena memory for the render; NULL with the error recorded (c->err) on failure. */
void *xd__jalloc(struct xd__jctx *c, size_t n);

/* Buffers (output limit enforced by xd__jbuf_put against max_output). */
int xd__jbuf_put(struct xd__jctx *c, struct xd__jbuf *b, const char *p, size_t n);
int xd__jbuf_putc(struct xd__jctx *c, struct xd__jbuf *b, char ch);
int xd__jbuf_printf(struct xd__jctx *c, struct xd__jbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
struct xd__jstr xd__jbuf_str(const struct xd__jbuf *b);

/* ---- value helpers (jinja_value.c) -------------------------------------------------------- */
static inline struct xd__jval xd__jv_undef(void) { return (struct xd__jval){.t = XJ_UNDEF}; }
static inline struct xd__jval xd__jv_none(void) { return (struct xd__jval){.t = XJ_NONE}; }
static inline struct xd__jval xd__jv_bool(bool b) {
    return (struct xd__jval){.t = XJ_BOOL, .u.b = b};
}
static inline struct xd__jval xd__jv_int(int64_t i) {
    return (struct xd__jval){.t = XJ_INT, .u.i = i};
}
static inline struct xd__jval xd__jv_float(double d) {
    return (struct xd__jval){.t = XJ_FLOAT, .u.d = d};
}
static inline struct xd__jval xd__jv_str(const char *p, size_t n) {
    return (struct xd__jval){.t = XJ_STR, .u.s = {p, n}};
}
static inline struct xd__jstr xd__js(const char *cstr) {
    size_t n = 0;
    while (cstr[n]) n++;
    return (struct xd__jstr){cstr, n};
}
bool xd__jstr_eq(struct xd__jstr a, const char *cstr);
bool xd__jstr_same(struct xd__jstr a, struct xd__jstr b);

/* An undefined value that remembers why. */
struct xd__jval xd__jv_undef_name(struct xd__jstr name);
struct xd__jval xd__jv_undef_attr(const struct xd__jval *obj, struct xd__jstr attr);
struct xd__jval xd__jv_undef_index(const struct xd__jval *obj, int64_t index);
struct xd__jval xd__jv_undef_msg(const char *msg);
/* Error for using an undefined value ("'x' is undefined"). Returns XD_E_TEMPLATE. */
int xd__jerr_undef(struct xd__jctx *c, const struct xd__jval *v);

/* Python's type name of a value ("str", "dict", "NoneType", ...). */
const char *xd__jtype_name(const struct xd__jval *v);
/* Python truthiness. */
bool xd__jtruthy(const struct xd__jval *v);
/* New list / dict / string in the arena (NULL-free: error recorded, returns c->err). */
int xd__jlist_new(struct xd__jctx *c, size_t n, bool tuple, struct xd__jval *out);
int xd__jstr_copy(struct xd__jctx *c, const char *p, size_t n, struct xd__jval *out);
/* Dict lookup by Python equality; NULL when absent. */
const struct xd__jval *xd__jdict_get(const struct xd__jdict *m, const struct xd__jval *key);
const struct xd__jval *xd__jdict_get_str(const struct xd__jdict *m, struct xd__jstr key);

/* Python == (deep; 1 == 1.0 == True; tuples never equal lists). Can fail on depth. */
int xd__jeq(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b, bool *eq);
/* Python <-style ordering: *cmp < 0, 0, > 0; XD_E_TEMPLATE for unorderable types. */
int xd__jcmp(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b, int *cmp);

/* Append Python's str(v) / repr(v) (undefined prints as ""). */
int xd__jto_str(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v);
int xd__jrepr(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v);
/* str(v) as a string value (no copy when v is already a str). */
int xd__jstringify(struct xd__jctx *c, const struct xd__jval *v, struct xd__jval *out);
/* Python's repr() of a float ("1.0", "1e+16", "0.30000000000000004"). n <= 32 bytes. */
size_t xd__jfloat_repr(double d, char out[32]);

struct xd__jjson_opts {
    bool ensure_ascii, sort_keys;
    const char *indent; /* NULL: one line */
    size_t indent_n;
    struct xd__jstr item_sep, key_sep;
};
/* Append json.dumps(v) with Python's formatting (float repr, escaping, separators). */
int xd__jto_json(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v,
                 const struct xd__jjson_opts *o);

/* JSON from jansson to a value; strings point into j (which must outlive the render). */
int xd__jfrom_json(struct xd__jctx *c, const json_t *j, struct xd__jval *out);

/* ---- UTF-8 and Python character classes ---------------------------------------------------- */
/* Code points in s. */
size_t xd__jutf8_len(const char *s, size_t n);
/* Byte offset of code point index cp (clamped to n). */
size_t xd__jutf8_off(const char *s, size_t n, size_t cp);
/* Decode one code point at s[*i] (i < n), advancing *i; ill-formed bytes decode as U+FFFD. */
uint32_t xd__jutf8_next(const char *s, size_t n, size_t *i);
/* Python str.isspace() of one code point. */
bool xd__jpy_isspace(uint32_t cp);
/* Python str.isprintable() of one code point (repr escapes the others). */
bool xd__jpy_isprintable(uint32_t cp);

/* ---- Unicode as CPython's str sees it (jinja_unicode.c; data in jinja_unicode_tables.c,
 * generated by engine/gen_jinja_unicode.py from the reference Python) ---------------------- */
enum {
    XJ_U_LOWER = 1,      /* str.islower() of the character (the Lowercase property) */
    XJ_U_UPPER = 2,      /* str.isupper() (Uppercase) */
    XJ_U_TITLE = 4,      /* general category Lt */
    XJ_U_IGNORABLE = 8,  /* Case_Ignorable (for lower()'s final-sigma rule) */
    XJ_U_PRINTABLE = 16, /* str.isprintable() */
    XJ_U_ALPHA = 32,     /* str.isalpha() */
    XJ_U_DECIMAL = 64,   /* str.isdecimal() */
    XJ_U_DIGIT = 128,    /* str.isdigit() */
    XJ_U_NUMERIC = 256,  /* str.isnumeric() */
};

struct xd__jumap {
    uint32_t cp;
    int32_t d[3]; /* lower, upper, title as code point deltas */
};
struct xd__jumap_full {
    uint32_t cp;
    struct {
        uint8_t n;
        uint32_t cp[3];
    } m[3]; /* lower, upper, title */
};
extern const char xd__jucd_version[];
extern const uint32_t xd__jucd_ranges[];
extern const size_t xd__jucd_n_ranges;
extern const struct xd__jumap xd__jucd_maps[];
extern const size_t xd__jucd_n_maps;
extern const struct xd__jumap_full xd__jucd_full[];
extern const size_t xd__jucd_n_full;

/* XJ_U_* flags of a code point. Can't fail. */
unsigned xd__jpy_flags(uint32_t cp);

enum xd__jcasemode { XJ_CM_LOWER, XJ_CM_UPPER, XJ_CM_TITLE, XJ_CM_CAPITALIZE, XJ_CM_SWAPCASE };
/* str.lower() / upper() / title() / capitalize() / swapcase() of s, exactly as CPython (full
 * mappings, final sigma). The result is a new string in the arena (flags cleared). */
int xd__jpy_case(struct xd__jctx *c, struct xd__jstr s, enum xd__jcasemode m, struct xd__jval *out);

/* ---- builtins (jinja_builtins.c) ---------------------------------------------------------- */
struct xd__jargs {
    const struct xd__jval *pos;
    size_t npos;
    const struct xd__jstr *kwn; /* keyword names */
    const struct xd__jval *kw;
    size_t nkw;
};

typedef int (*xd__jfilter_fn)(struct xd__jctx *c, const struct xd__jval *in,
                              const struct xd__jargs *args, struct xd__jval *out);
typedef int (*xd__jtest_fn)(struct xd__jctx *c, const struct xd__jval *in,
                            const struct xd__jargs *args, bool *out);

struct xd__jfilter {
    const char *name;
    xd__jfilter_fn fn;
};
struct xd__jtest {
    const char *name;
    xd__jtest_fn fn;
};

/* Python's fmt % args (printf-style), fmt a str value. */
int xd__jpercent(struct xd__jctx *c, const struct xd__jval *fmt, const struct xd__jval *args,
                 struct xd__jval *out);
/* Lookup by name; NULL when unknown. */
const struct xd__jfilter *xd__jfind_filter(struct xd__jstr name);
const struct xd__jtest *xd__jfind_test(struct xd__jstr name);
/* A Jinja builtin filter or test this interpreter knows of but does not implement. */
bool xd__jfilter_unsupported(struct xd__jstr name);
bool xd__jtest_unsupported(struct xd__jstr name);

/* Global names (range, namespace, dict, raise_exception, strftime_now); false when unknown. */
bool xd__jglobal(struct xd__jstr name, struct xd__jval *out);
/* Call a function value (XJ_FUNC or XJ_METHOD). */
int xd__jcall_builtin(struct xd__jctx *c, const struct xd__jval *fn, const struct xd__jargs *args,
                      struct xd__jval *out);
/* Jinja's environment.getattr / getitem under the sandbox (methods before keys for obj.attr,
 * keys before methods for obj[key]; undefined, not an error, where Python raises Lookup- or
 * TypeError; an error for any lookup on an undefined value). */
int xd__jgetattr(struct xd__jctx *c, const struct xd__jval *obj, struct xd__jstr attr,
                 struct xd__jval *out);
int xd__jgetitem(struct xd__jctx *c, const struct xd__jval *obj, const struct xd__jval *key,
                 struct xd__jval *out);
/* Python slicing obj[start:stop:step] (each may be none/undefined for "left out"). */
int xd__jslice(struct xd__jctx *c, const struct xd__jval *obj, const struct xd__jval *start,
               const struct xd__jval *stop, const struct xd__jval *step, struct xd__jval *out);
/* The items a for loop or list() sees: list/tuple items, dict keys, str characters, nothing
 * for undefined; XD_E_TEMPLATE for what is not iterable. */
int xd__jiterate(struct xd__jctx *c, const struct xd__jval *v, struct xd__jlist *out);

#endif
