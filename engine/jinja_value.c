/* jinja_value.c - the values of the Jinja interpreter and the Python behaviour they must copy.
 *
 * A rendered chat template is compared byte for byte with Python's Jinja2, so everything that
 * turns a value into text follows CPython exactly: str() and repr() of None, bools, floats
 * (shortest round-trip digits, "1e+16", "1.0"), lists, tuples and dicts; json.dumps with
 * ensure_ascii, indent, separators and sort_keys; == across int/float/bool and deep over
 * containers; ordering of numbers, strings and sequences. Values live in the render's arena
 * (one malloc'd chunk list, freed at once), which also counts every byte against the render's
 * memory limit; strings that come from the caller's JSON are not copied.
 *
 * Trade-off: ints are 64-bit - a template computing past 2^63 gets an error where Python would
 * grow a bignum. Not here: Unicode case mapping (jinja_unicode.c) and parsing.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_impl.h"
#include "unicode.h"
#include "xd_error.h"

/* Values nest at most this deep (lists in lists...) for repr, json, == and JSON input. */
#define XJ_MAX_VALUE_DEPTH 512

/* ---- arena --------------------------------------------------------------------------------- */
struct xd__jchunk {
    struct xd__jchunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

void xd__jarena_init(struct xd__jarena *a, size_t limit) {
    a->head = NULL;
    a->used = 0;
    a->limit = limit;
}

void xd__jarena_free(struct xd__jarena *a) {
    struct xd__jchunk *ch = a->head;
    while (ch) {
        struct xd__jchunk *next = ch->next;
        free(ch);
        ch = next;
    }
    a->head = NULL;
    a->used = 0;
}

void *xd__jarena_alloc(struct xd__jarena *a, size_t n) {
    if (n > SIZE_MAX / 2) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    struct xd__jchunk *h = a->head;
    if (!h || h->cap - h->used < n) {
        /* Chunks double from 16 KiB to 1 MiB, so a small render touches little memory and a
         * big one makes few mallocs; an allocation bigger than that gets a chunk of its own. */
        size_t want = h ? h->cap * 2 : 16384;
        if (want > (1u << 20)) want = 1u << 20;
        if (want < n) want = n;
        size_t bytes = sizeof(struct xd__jchunk) + want;
        if (a->used + bytes > a->limit || a->used + bytes < a->used) return NULL;
        struct xd__jchunk *ch = malloc(bytes);
        if (!ch) return NULL;
        ch->cap = want;
        ch->used = 0;
        ch->next = h;
        a->head = h = ch;
        a->used += bytes;
    }
    void *p = h->data + h->used;
    h->used += n;
    memset(p, 0, n);
    return p;
}

/* ---- context: errors, work, memory ---------------------------------------------------------- */
static int set_err(struct xd__jctx *c, int code, const char *msg, size_t n, bool with_line) {
    if (c->err) return c->err;
    c->err = code;
    if (c->errbuf && c->errlen) {
        int k = with_line ? snprintf(c->errbuf, c->errlen, "line %u: ", (unsigned)c->line) : 0;
        if (k < 0) k = 0;
        size_t at = (size_t)k < c->errlen ? (size_t)k : c->errlen - 1;
        size_t room = c->errlen - 1 - at;
        if (n > room) n = room;
        memcpy(c->errbuf + at, msg, n);
        c->errbuf[at + n] = '\0';
    }
    return code;
}

int xd__jerr(struct xd__jctx *c, int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (k < 0) k = 0;
    return set_err(c, code, msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg - 1, true);
}

int xd__jerr_raw(struct xd__jctx *c, int code, const char *msg, size_t n) {
    return set_err(c, code, msg, n, false);
}

int xd__jcharge(struct xd__jctx *c, size_t bytes) {
    c->steps += 1 + bytes / 16;
    if (c->steps > c->lim->max_steps)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "evaluation step limit (%" PRIu64 ") exceeded",
                        c->lim->max_steps);
    return 0;
}

void *xd__jalloc(struct xd__jctx *c, size_t n) {
    if (c->err) return NULL;
    void *p = xd__jarena_alloc(&c->arena, n);
    if (p) return p;
    if (n > SIZE_MAX / 2 || c->arena.used + n + 4096 > c->arena.limit) {
        xd__jerr(c, XD_E_TEMPLATE_LIMIT, "memory limit (%zu bytes) exceeded", c->arena.limit);
    } else {
        xd__jerr(c, -ENOMEM, "out of memory");
    }
    return NULL;
}

/* ---- buffers ------------------------------------------------------------------------------ */
int xd__jbuf_put(struct xd__jctx *c, struct xd__jbuf *b, const char *p, size_t n) {
    if (c->err) return c->err;
    if (n == 0) return 0;
    if (b->n + n > c->lim->max_output || b->n + n < b->n)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "output limit (%zu bytes) exceeded",
                        c->lim->max_output);
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n) cap *= 2;
        if (cap > c->lim->max_output + 1) cap = c->lim->max_output + 1;
        char *np = xd__jalloc(c, cap);
        if (!np) return c->err;
        if (b->n) memcpy(np, b->p, b->n);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

int xd__jbuf_putc(struct xd__jctx *c, struct xd__jbuf *b, char ch) {
    return xd__jbuf_put(c, b, &ch, 1);
}

int xd__jbuf_printf(struct xd__jctx *c, struct xd__jbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof tmp) return xd__jerr(c, XD_E_TEMPLATE, "formatting failed");
    return xd__jbuf_put(c, b, tmp, (size_t)k);
}

struct xd__jstr xd__jbuf_str(const struct xd__jbuf *b) {
    return (struct xd__jstr){b->p ? b->p : "", b->n};
}

/* ---- small helpers --------------------------------------------------------------------------- */
bool xd__jstr_eq(struct xd__jstr a, const char *cstr) {
    size_t n = strlen(cstr);
    return a.n == n && (n == 0 || memcmp(a.p, cstr, n) == 0);
}

bool xd__jstr_same(struct xd__jstr a, struct xd__jstr b) {
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

struct xd__jval xd__jv_undef_name(struct xd__jstr name) {
    return (struct xd__jval){.t = XJ_UNDEF, .hint = XJ_H_NAME, .u.s = name};
}

struct xd__jval xd__jv_undef_attr(const struct xd__jval *obj, struct xd__jstr attr) {
    return (struct xd__jval){.t = XJ_UNDEF, .hint = XJ_H_ATTR, .hint_type = obj->t, .u.s = attr};
}

struct xd__jval xd__jv_undef_index(const struct xd__jval *obj, int64_t index) {
    return (struct xd__jval){.t = XJ_UNDEF, .hint = XJ_H_INDEX, .hint_type = obj->t, .u.i = index};
}

struct xd__jval xd__jv_undef_msg(const char *msg) {
    return (struct xd__jval){.t = XJ_UNDEF, .hint = XJ_H_MSG, .u.s = xd__js(msg)};
}

static const char *type_name_of(uint8_t t, uint8_t f) {
    switch (t) {
    case XJ_UNDEF: return "Undefined";
    case XJ_NONE: return "NoneType";
    case XJ_BOOL: return "bool";
    case XJ_INT: return "int";
    case XJ_FLOAT: return "float";
    case XJ_STR: return (f & XJ_F_SAFE) ? "Markup" : "str";
    case XJ_LIST: return (f & XJ_F_TUPLE) ? "tuple" : "list";
    case XJ_DICT: return "dict";
    case XJ_NS: return "Namespace";
    case XJ_MACRO: return "Macro";
    case XJ_FUNC: return "function";
    case XJ_METHOD: return "builtin_function_or_method";
    case XJ_LOOP: return "LoopContext";
    default: return "object";
    }
}

const char *xd__jtype_name(const struct xd__jval *v) { return type_name_of(v->t, v->f); }

int xd__jerr_undef(struct xd__jctx *c, const struct xd__jval *v) {
    const struct xd__jstr s = v->u.s;
    switch (v->hint) {
    case XJ_H_NAME: return xd__jerr(c, XD_E_TEMPLATE, "'%.*s' is undefined", (int)s.n, s.p);
    case XJ_H_ATTR:
        if (v->hint_type == XJ_NONE)
            return xd__jerr(c, XD_E_TEMPLATE, "'None' has no attribute '%.*s'", (int)s.n, s.p);
        return xd__jerr(c, XD_E_TEMPLATE, "'%s object' has no attribute '%.*s'",
                        type_name_of(v->hint_type, 0), (int)s.n, s.p);
    case XJ_H_INDEX:
        return xd__jerr(c, XD_E_TEMPLATE, "'%s object' has no element %" PRId64,
                        type_name_of(v->hint_type, 0), v->u.i);
    case XJ_H_MSG: return xd__jerr(c, XD_E_TEMPLATE, "%.*s", (int)s.n, s.p);
    default: return xd__jerr(c, XD_E_TEMPLATE, "value is undefined");
    }
}

bool xd__jtruthy(const struct xd__jval *v) {
    switch (v->t) {
    case XJ_UNDEF:
    case XJ_NONE: return false;
    case XJ_BOOL: return v->u.b;
    case XJ_INT: return v->u.i != 0;
    case XJ_FLOAT: return v->u.d != 0.0;
    case XJ_STR: return v->u.s.n != 0;
    case XJ_LIST: return v->u.l->n != 0;
    case XJ_DICT: return v->u.m->n != 0;
    default: return true;
    }
}

int xd__jlist_new(struct xd__jctx *c, size_t n, bool tuple, struct xd__jval *out) {
    struct xd__jlist *l = xd__jalloc(c, sizeof *l);
    if (!l) return c->err;
    if (n) {
        if (n > SIZE_MAX / sizeof(struct xd__jval))
            return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "list too long");
        l->v = xd__jalloc(c, n * sizeof *l->v);
        if (!l->v) return c->err;
    }
    l->n = n;
    *out = (struct xd__jval){.t = XJ_LIST, .f = tuple ? XJ_F_TUPLE : 0, .u.l = l};
    return 0;
}

int xd__jstr_copy(struct xd__jctx *c, const char *p, size_t n, struct xd__jval *out) {
    char *q = xd__jalloc(c, n + 1);
    if (!q) return c->err;
    if (n) memcpy(q, p, n);
    *out = xd__jv_str(q, n);
    return 0;
}

/* Key equality for dict lookup: == for scalars and tuples of them (tuples nested past
 * XJ_MAX_VALUE_DEPTH compare unequal rather than recurse further). */
static bool key_eq(const struct xd__jval *a, const struct xd__jval *b, unsigned depth);

const struct xd__jval *xd__jdict_get(const struct xd__jdict *m, const struct xd__jval *key) {
    for (size_t i = 0; i < m->n; i++)
        if (key_eq(&m->k[i], key, 0)) return &m->v[i];
    return NULL;
}

const struct xd__jval *xd__jdict_get_str(const struct xd__jdict *m, struct xd__jstr key) {
    for (size_t i = 0; i < m->n; i++)
        if (m->k[i].t == XJ_STR && xd__jstr_same(m->k[i].u.s, key)) return &m->v[i];
    return NULL;
}

/* ---- UTF-8 and character classes --------------------------------------------------------- */
uint32_t xd__jutf8_next(const char *s, size_t n, size_t *i) {
    int k = xd_utf8_check(s + *i, n - *i);
    if (k <= 0) {
        *i += 1;
        return XD_UNICODE_REPLACEMENT;
    }
    return xd_utf8_decode(s, n, i);
}

size_t xd__jutf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) k++;
    return k;
}

size_t xd__jutf8_off(const char *s, size_t n, size_t cp) {
    size_t i = 0;
    while (i < n && cp > 0) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        cp--;
    }
    return i;
}

bool xd__jpy_isspace(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
    }
}

bool xd__jpy_isprintable(uint32_t cp) {
    if (cp < 0x80) return cp >= 0x20 && cp < 0x7F;
    return (xd__jpy_flags(cp) & XJ_U_PRINTABLE) != 0;
}

/* ---- equality and ordering ----------------------------------------------------------------- */
static bool is_num(const struct xd__jval *v) {
    return v->t == XJ_BOOL || v->t == XJ_INT || v->t == XJ_FLOAT;
}

static int64_t as_i64(const struct xd__jval *v) { return v->t == XJ_BOOL ? v->u.b : v->u.i; }

/* Compare two numbers exactly, as Python does (an int and a float are compared by value, not
 * after rounding the int). NaN compares unordered: returns 2. */
static int num_cmp(const struct xd__jval *a, const struct xd__jval *b) {
    if (a->t != XJ_FLOAT && b->t != XJ_FLOAT) {
        int64_t x = as_i64(a), y = as_i64(b);
        return (x > y) - (x < y);
    }
    if (a->t == XJ_FLOAT && b->t == XJ_FLOAT) {
        double x = a->u.d, y = b->u.d;
        if (isnan(x) || isnan(y)) return 2;
        return (x > y) - (x < y);
    }
    bool flip = a->t != XJ_FLOAT;
    double d = flip ? b->u.d : a->u.d;
    int64_t i = flip ? as_i64(a) : as_i64(b);
    int r;
    if (isnan(d)) return 2;
    if (d >= 9223372036854775808.0)
        r = 1;
    else if (d < -9223372036854775808.0)
        r = -1;
    else {
        double fl = floor(d);
        int64_t di = (int64_t)fl;
        if (di != i)
            r = di > i ? 1 : -1;
        else
            r = d > fl ? 1 : 0;
    }
    return flip ? -r : r;
}

static bool key_eq(const struct xd__jval *a, const struct xd__jval *b, unsigned depth) {
    if (depth > XJ_MAX_VALUE_DEPTH) return false;
    if (a->t == XJ_STR && b->t == XJ_STR) return xd__jstr_same(a->u.s, b->u.s);
    if (is_num(a) && is_num(b)) return num_cmp(a, b) == 0;
    if (a->t != b->t) return false;
    if (a->t == XJ_NONE) return true;
    if (a->t == XJ_LIST && (a->f & XJ_F_TUPLE) == (b->f & XJ_F_TUPLE) && a->u.l->n == b->u.l->n) {
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!key_eq(&a->u.l->v[i], &b->u.l->v[i], depth + 1)) return false;
        return true;
    }
    return false;
}

static int eq_rec(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b,
                  unsigned depth, bool *eq) {
    if (depth > XJ_MAX_VALUE_DEPTH)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "values nested too deeply to compare");
    *eq = false;
    if (is_num(a) && is_num(b)) {
        *eq = num_cmp(a, b) == 0;
        return 0;
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case XJ_UNDEF:
    case XJ_NONE: *eq = true; return 0;
    case XJ_STR: *eq = xd__jstr_same(a->u.s, b->u.s); return 0;
    case XJ_LIST: {
        if ((a->f & XJ_F_TUPLE) != (b->f & XJ_F_TUPLE) || a->u.l->n != b->u.l->n) return 0;
        int rc = xd__jcharge(c, a->u.l->n);
        if (rc) return rc;
        for (size_t i = 0; i < a->u.l->n; i++) {
            rc = eq_rec(c, &a->u.l->v[i], &b->u.l->v[i], depth + 1, eq);
            if (rc || !*eq) return rc;
        }
        *eq = true;
        return 0;
    }
    case XJ_DICT: {
        const struct xd__jdict *x = a->u.m, *y = b->u.m;
        if (x->n != y->n) return 0;
        int rc = xd__jcharge(c, x->n * x->n);
        if (rc) return rc;
        for (size_t i = 0; i < x->n; i++) {
            const struct xd__jval *w = xd__jdict_get(y, &x->k[i]);
            if (!w) return 0;
            rc = eq_rec(c, &x->v[i], w, depth + 1, eq);
            if (rc || !*eq) return rc;
        }
        *eq = true;
        return 0;
    }
    case XJ_NS: *eq = a->u.ns == b->u.ns; return 0;
    case XJ_MACRO: *eq = a->u.mac->node == b->u.mac->node; return 0;
    case XJ_FUNC: *eq = a->u.fn == b->u.fn; return 0;
    case XJ_METHOD: *eq = a->u.meth == b->u.meth; return 0;
    case XJ_LOOP: *eq = a->u.loop == b->u.loop; return 0;
    default: return 0;
    }
}

int xd__jeq(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b, bool *eq) {
    return eq_rec(c, a, b, 0, eq);
}

static int cmp_rec(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b,
                   unsigned depth, int *out) {
    if (depth > XJ_MAX_VALUE_DEPTH)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "values nested too deeply to compare");
    if (is_num(a) && is_num(b)) {
        int r = num_cmp(a, b);
        *out = r == 2 ? 2 : r;
        return 0;
    }
    if (a->t == XJ_STR && b->t == XJ_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        if (r == 0) r = (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
        *out = (r > 0) - (r < 0);
        return xd__jcharge(c, n);
    }
    if (a->t == XJ_LIST && b->t == XJ_LIST && (a->f & XJ_F_TUPLE) == (b->f & XJ_F_TUPLE)) {
        const struct xd__jlist *x = a->u.l, *y = b->u.l;
        size_t n = x->n < y->n ? x->n : y->n;
        for (size_t i = 0; i < n; i++) {
            bool eq;
            int rc = eq_rec(c, &x->v[i], &y->v[i], depth + 1, &eq);
            if (rc) return rc;
            if (!eq) return cmp_rec(c, &x->v[i], &y->v[i], depth + 1, out);
        }
        *out = (x->n > y->n) - (x->n < y->n);
        return 0;
    }
    return xd__jerr(c, XD_E_TEMPLATE, "'<' not supported between instances of '%s' and '%s'",
                    xd__jtype_name(a), xd__jtype_name(b));
}

int xd__jcmp(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b, int *out) {
    return cmp_rec(c, a, b, 0, out);
}

/* ---- str() and repr() ------------------------------------------------------------------------ */
size_t xd__jfloat_repr(double d, char out[32]) {
    if (isnan(d)) return (size_t)snprintf(out, 32, "nan");
    if (isinf(d)) return (size_t)snprintf(out, 32, d < 0 ? "-inf" : "inf");
    /* The fewest significant digits that read back as d - what CPython's repr picks (glibc's
     * printf rounds correctly, so the digits equal Gay's shortest). Then CPython's layout:
     * positional for exponents -4..15 with a ".0" where needed, else d.ddde+XX. */
    char buf[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (prec > 17) prec = 17;
    char digits[20];
    size_t nd = 0;
    const char *p = buf;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < sizeof digits) digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++) out[o++] = (size_t)i < nd ? digits[i] : '0';
            out[o++] = '.';
            if ((size_t)exp10 + 1 < nd)
                for (size_t i = (size_t)exp10 + 1; i < nd; i++) out[o++] = digits[i];
            else
                out[o++] = '0';
        } else {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -exp10 - 1; i++) out[o++] = '0';
            for (size_t i = 0; i < nd; i++) out[o++] = digits[i];
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (size_t i = 1; i < nd; i++) out[o++] = digits[i];
        }
        o += (size_t)snprintf(out + o, 32 - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    out[o] = '\0';
    return o;
}

static int repr_str(struct xd__jctx *c, struct xd__jbuf *b, struct xd__jstr s) {
    bool has_sq = memchr(s.p, '\'', s.n) != NULL, has_dq = memchr(s.p, '"', s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    rc = xd__jbuf_putc(c, b, q);
    size_t i = 0;
    while (!rc && i < s.n) {
        size_t at = i;
        uint32_t cp = xd__jutf8_next(s.p, s.n, &i);
        if (cp == (uint32_t)q || cp == '\\') {
            char e[2] = {'\\', (char)cp};
            rc = xd__jbuf_put(c, b, e, 2);
        } else if (cp == '\n')
            rc = xd__jbuf_put(c, b, "\\n", 2);
        else if (cp == '\r')
            rc = xd__jbuf_put(c, b, "\\r", 2);
        else if (cp == '\t')
            rc = xd__jbuf_put(c, b, "\\t", 2);
        else if (xd__jpy_isprintable(cp))
            rc = xd__jbuf_put(c, b, s.p + at, i - at);
        else if (cp <= 0xFF)
            rc = xd__jbuf_printf(c, b, "\\x%02x", cp);
        else if (cp <= 0xFFFF)
            rc = xd__jbuf_printf(c, b, "\\u%04x", cp);
        else
            rc = xd__jbuf_printf(c, b, "\\U%08x", cp);
    }
    return rc ? rc : xd__jbuf_putc(c, b, q);
}

static int repr_rec(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v,
                    unsigned depth, bool top_str);

static int repr_ns(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jns *ns,
                   unsigned depth) {
    int rc = xd__jbuf_put(c, b, "<Namespace {", 12);
    for (size_t i = 0; !rc && i < ns->n; i++) {
        if (i) rc = xd__jbuf_put(c, b, ", ", 2);
        if (!rc) rc = repr_str(c, b, ns->k[i]);
        if (!rc) rc = xd__jbuf_put(c, b, ": ", 2);
        if (!rc) rc = repr_rec(c, b, &ns->v[i], depth + 1, false);
    }
    return rc ? rc : xd__jbuf_put(c, b, "}>", 2);
}

/* top_str: print a str as itself (str()), not quoted (repr()). */
static int repr_rec(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v,
                    unsigned depth, bool top_str) {
    if (depth > XJ_MAX_VALUE_DEPTH)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "values nested too deeply to print");
    int rc = xd__jcharge(c, 0);
    if (rc) return rc;
    switch (v->t) {
    case XJ_UNDEF: return top_str ? 0 : xd__jbuf_put(c, b, "Undefined", 9);
    case XJ_NONE: return xd__jbuf_put(c, b, "None", 4);
    case XJ_BOOL: return v->u.b ? xd__jbuf_put(c, b, "True", 4) : xd__jbuf_put(c, b, "False", 5);
    case XJ_INT: return xd__jbuf_printf(c, b, "%" PRId64, v->u.i);
    case XJ_FLOAT: {
        char tmp[32];
        size_t n = xd__jfloat_repr(v->u.d, tmp);
        return xd__jbuf_put(c, b, tmp, n);
    }
    case XJ_STR:
        if (top_str) {
            rc = xd__jcharge(c, v->u.s.n);
            return rc ? rc : xd__jbuf_put(c, b, v->u.s.p, v->u.s.n);
        }
        if (v->f & XJ_F_SAFE) {
            rc = xd__jbuf_put(c, b, "Markup(", 7);
            if (!rc) rc = repr_str(c, b, v->u.s);
            return rc ? rc : xd__jbuf_putc(c, b, ')');
        }
        return repr_str(c, b, v->u.s);
    case XJ_LIST: {
        bool tuple = v->f & XJ_F_TUPLE;
        const struct xd__jlist *l = v->u.l;
        rc = xd__jbuf_putc(c, b, tuple ? '(' : '[');
        for (size_t i = 0; !rc && i < l->n; i++) {
            if (i) rc = xd__jbuf_put(c, b, ", ", 2);
            if (!rc) rc = repr_rec(c, b, &l->v[i], depth + 1, false);
        }
        if (!rc && tuple && l->n == 1) rc = xd__jbuf_putc(c, b, ',');
        return rc ? rc : xd__jbuf_putc(c, b, tuple ? ')' : ']');
    }
    case XJ_DICT: {
        const struct xd__jdict *m = v->u.m;
        rc = xd__jbuf_putc(c, b, '{');
        for (size_t i = 0; !rc && i < m->n; i++) {
            if (i) rc = xd__jbuf_put(c, b, ", ", 2);
            if (!rc) rc = repr_rec(c, b, &m->k[i], depth + 1, false);
            if (!rc) rc = xd__jbuf_put(c, b, ": ", 2);
            if (!rc) rc = repr_rec(c, b, &m->v[i], depth + 1, false);
        }
        return rc ? rc : xd__jbuf_putc(c, b, '}');
    }
    case XJ_NS: return repr_ns(c, b, v->u.ns, depth);
    case XJ_MACRO: {
        struct xd__jstr name = v->u.mac->node->s;
        return xd__jbuf_printf(c, b, "<Macro '%.*s'>", (int)(name.n > 64 ? 64 : name.n), name.p);
    }
    case XJ_FUNC: return xd__jbuf_put(c, b, "<function>", 10);
    case XJ_METHOD: {
        struct xd__jstr name = v->u.meth->name;
        return xd__jbuf_printf(c, b, "<built-in method %.*s of %s object>",
                               (int)(name.n > 64 ? 64 : name.n), name.p,
                               xd__jtype_name(&v->u.meth->self));
    }
    case XJ_LOOP:
        return xd__jbuf_printf(c, b, "<LoopContext %zu/%zu>", v->u.loop->i + 1, v->u.loop->n);
    default: return xd__jerr(c, XD_E_TEMPLATE, "cannot print this value");
    }
}

int xd__jto_str(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v) {
    return repr_rec(c, b, v, 0, true);
}

int xd__jrepr(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v) {
    return repr_rec(c, b, v, 0, false);
}

int xd__jstringify(struct xd__jctx *c, const struct xd__jval *v, struct xd__jval *out) {
    if (v->t == XJ_STR) {
        *out = *v;
        return 0;
    }
    struct xd__jbuf b = {0};
    int rc = xd__jto_str(c, &b, v);
    if (rc) return rc;
    *out = xd__jv_str(b.p ? b.p : "", b.n);
    return 0;
}

/* ---- json.dumps ---------------------------------------------------------------------------- */
static int json_str(struct xd__jctx *c, struct xd__jbuf *b, struct xd__jstr s, bool ascii) {
    int rc = xd__jcharge(c, s.n);
    if (!rc) rc = xd__jbuf_putc(c, b, '"');
    size_t i = 0, run = 0; /* bytes [run, i) are copied as they are */
    while (!rc && i < s.n) {
        unsigned char ch = (unsigned char)s.p[i];
        /* ensure_ascii=False escapes only '"', '\\' and C0 controls; True also anything past
         * '~' (0x7F included), as \uXXXX with surrogate pairs. */
        if (ch >= 0x20 && ch != '"' && ch != '\\' && (!ascii || ch < 0x7F)) {
            i++;
            continue;
        }
        if (i > run) rc = xd__jbuf_put(c, b, s.p + run, i - run);
        if (rc) break;
        uint32_t cp = xd__jutf8_next(s.p, s.n, &i);
        switch (cp) {
        case '"': rc = xd__jbuf_put(c, b, "\\\"", 2); break;
        case '\\': rc = xd__jbuf_put(c, b, "\\\\", 2); break;
        case '\n': rc = xd__jbuf_put(c, b, "\\n", 2); break;
        case '\r': rc = xd__jbuf_put(c, b, "\\r", 2); break;
        case '\t': rc = xd__jbuf_put(c, b, "\\t", 2); break;
        case '\b': rc = xd__jbuf_put(c, b, "\\b", 2); break;
        case '\f': rc = xd__jbuf_put(c, b, "\\f", 2); break;
        default:
            if (cp > 0xFFFF) {
                uint32_t v = cp - 0x10000;
                rc = xd__jbuf_printf(c, b, "\\u%04x\\u%04x", 0xD800 + (v >> 10),
                                     0xDC00 + (v & 0x3FF));
            } else {
                rc = xd__jbuf_printf(c, b, "\\u%04x", cp);
            }
        }
        run = i;
    }
    if (!rc && i > run) rc = xd__jbuf_put(c, b, s.p + run, i - run);
    return rc ? rc : xd__jbuf_putc(c, b, '"');
}

static int json_newline(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jjson_opts *o,
                        unsigned level) {
    int rc = xd__jbuf_putc(c, b, '\n');
    for (unsigned i = 0; !rc && i < level; i++) rc = xd__jbuf_put(c, b, o->indent, o->indent_n);
    return rc;
}

static int json_key(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *k,
                    const struct xd__jjson_opts *o) {
    char tmp[40];
    switch (k->t) {
    case XJ_STR: return json_str(c, b, k->u.s, o->ensure_ascii);
    case XJ_NONE: return json_str(c, b, xd__js("null"), false);
    case XJ_BOOL: return json_str(c, b, xd__js(k->u.b ? "true" : "false"), false);
    case XJ_INT: {
        int n = snprintf(tmp, sizeof tmp, "%" PRId64, k->u.i);
        return json_str(c, b, (struct xd__jstr){tmp, (size_t)n}, false);
    }
    case XJ_FLOAT: {
        const char *special = isnan(k->u.d)   ? "NaN"
                              : isinf(k->u.d) ? (k->u.d < 0 ? "-Infinity" : "Infinity")
                                              : NULL;
        if (special) return json_str(c, b, xd__js(special), false);
        size_t n = xd__jfloat_repr(k->u.d, tmp);
        return json_str(c, b, (struct xd__jstr){tmp, n}, false);
    }
    default:
        return xd__jerr(c, XD_E_TEMPLATE, "keys must be str, int, float, bool or None, not %s",
                        xd__jtype_name(k));
    }
}

static int json_rec(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v,
                    const struct xd__jjson_opts *o, unsigned level) {
    if (level > XJ_MAX_VALUE_DEPTH)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "values nested too deeply for tojson");
    int rc = xd__jcharge(c, 0);
    if (rc) return rc;
    switch (v->t) {
    case XJ_NONE: return xd__jbuf_put(c, b, "null", 4);
    case XJ_BOOL: return v->u.b ? xd__jbuf_put(c, b, "true", 4) : xd__jbuf_put(c, b, "false", 5);
    case XJ_INT: return xd__jbuf_printf(c, b, "%" PRId64, v->u.i);
    case XJ_FLOAT: {
        double d = v->u.d;
        if (isnan(d)) return xd__jbuf_put(c, b, "NaN", 3);
        if (isinf(d))
            return d < 0 ? xd__jbuf_put(c, b, "-Infinity", 9) : xd__jbuf_put(c, b, "Infinity", 8);
        char tmp[32];
        size_t n = xd__jfloat_repr(d, tmp);
        return xd__jbuf_put(c, b, tmp, n);
    }
    case XJ_STR: return json_str(c, b, v->u.s, o->ensure_ascii);
    case XJ_LIST: {
        const struct xd__jlist *l = v->u.l;
        if (l->n == 0) return xd__jbuf_put(c, b, "[]", 2);
        rc = xd__jbuf_putc(c, b, '[');
        if (!rc && o->indent) rc = json_newline(c, b, o, level + 1);
        for (size_t i = 0; !rc && i < l->n; i++) {
            if (i) {
                rc = xd__jbuf_put(c, b, o->item_sep.p, o->item_sep.n);
                if (!rc && o->indent) rc = json_newline(c, b, o, level + 1);
            }
            if (!rc) rc = json_rec(c, b, &l->v[i], o, level + 1);
        }
        if (!rc && o->indent) rc = json_newline(c, b, o, level);
        return rc ? rc : xd__jbuf_putc(c, b, ']');
    }
    case XJ_DICT: {
        const struct xd__jdict *m = v->u.m;
        if (m->n == 0) return xd__jbuf_put(c, b, "{}", 2);
        size_t *order = xd__jalloc(c, m->n * sizeof *order);
        if (!order) return c->err;
        for (size_t i = 0; i < m->n; i++) order[i] = i;
        if (o->sort_keys) { /* insertion sort: stable, and dicts are small */
            rc = xd__jcharge(c, m->n * m->n);
            for (size_t i = 1; !rc && i < m->n; i++) {
                size_t cur = order[i], j = i;
                while (j > 0) {
                    int cmp;
                    rc = xd__jcmp(c, &m->k[order[j - 1]], &m->k[cur], &cmp);
                    if (rc || cmp <= 0) break;
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = cur;
            }
            if (rc) return rc;
        }
        rc = xd__jbuf_putc(c, b, '{');
        if (!rc && o->indent) rc = json_newline(c, b, o, level + 1);
        for (size_t i = 0; !rc && i < m->n; i++) {
            if (i) {
                rc = xd__jbuf_put(c, b, o->item_sep.p, o->item_sep.n);
                if (!rc && o->indent) rc = json_newline(c, b, o, level + 1);
            }
            if (!rc) rc = json_key(c, b, &m->k[order[i]], o);
            if (!rc) rc = xd__jbuf_put(c, b, o->key_sep.p, o->key_sep.n);
            if (!rc) rc = json_rec(c, b, &m->v[order[i]], o, level + 1);
        }
        if (!rc && o->indent) rc = json_newline(c, b, o, level);
        return rc ? rc : xd__jbuf_putc(c, b, '}');
    }
    default:
        return xd__jerr(c, XD_E_TEMPLATE, "Object of type %s is not JSON serializable",
                        xd__jtype_name(v));
    }
}

int xd__jto_json(struct xd__jctx *c, struct xd__jbuf *b, const struct xd__jval *v,
                 const struct xd__jjson_opts *o) {
    return json_rec(c, b, v, o, 0);
}

/* ---- JSON input ----------------------------------------------------------------------------- */
static int from_json_rec(struct xd__jctx *c, const json_t *j, struct xd__jval *out,
                         unsigned depth) {
    if (depth > XJ_MAX_VALUE_DEPTH)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "input JSON nested too deeply");
    int rc = xd__jcharge(c, 0);
    if (rc) return rc;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(j);
        struct xd__jdict *m = xd__jalloc(c, sizeof *m);
        if (!m) return c->err;
        if (n) {
            m->k = xd__jalloc(c, n * sizeof *m->k);
            m->v = xd__jalloc(c, n * sizeof *m->v);
            if (!m->k || !m->v) return c->err;
        }
        const char *key;
        json_t *val;
        size_t i = 0;
        /* jansson keeps object keys in insertion order, as Python's dicts do. */
        json_object_foreach((json_t *)j, key, val) {
            if (i >= n) break;
            m->k[i] = xd__jv_str(key, strlen(key));
            rc = from_json_rec(c, val, &m->v[i], depth + 1);
            if (rc) return rc;
            i++;
        }
        m->n = i;
        *out = (struct xd__jval){.t = XJ_DICT, .u.m = m};
        return 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        rc = xd__jlist_new(c, n, false, out);
        for (size_t i = 0; !rc && i < n; i++)
            rc = from_json_rec(c, json_array_get(j, i), &out->u.l->v[i], depth + 1);
        return rc;
    }
    case JSON_STRING: *out = xd__jv_str(json_string_value(j), json_string_length(j)); return 0;
    case JSON_INTEGER: *out = xd__jv_int((int64_t)json_integer_value(j)); return 0;
    case JSON_REAL: *out = xd__jv_float(json_real_value(j)); return 0;
    case JSON_TRUE: *out = xd__jv_bool(true); return 0;
    case JSON_FALSE: *out = xd__jv_bool(false); return 0;
    case JSON_NULL: *out = xd__jv_none(); return 0;
    default: return xd__jerr(c, XD_E_INVALID, "unknown JSON value type");
    }
}

int xd__jfrom_json(struct xd__jctx *c, const json_t *j, struct xd__jval *out) {
    return from_json_rec(c, j, out, 0);
}
