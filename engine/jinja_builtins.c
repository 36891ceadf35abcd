/* jinja_builtins.c - what a template can call: filters, tests, globals and the methods of
 * str, dict and list, plus Jinja's sandboxed attribute and item lookup they all go through.
 *
 * Each is a row in a table (name -> function) and behaves as the Jinja2 3.1 builtin or the
 * CPython method of that name does, including on Undefined (|length of it is 0, |default
 * replaces it, iterating it yields nothing, any attribute of it is an error). Lookup copies
 * ImmutableSandboxedEnvironment: obj.name prefers a method over a dict key (so "d.items" is
 * the method, "d['items']" the key), obj[key] the other way round; a missing key, index or
 * attribute is an Undefined, not an error; methods that mutate (list.append, dict.update, ...)
 * are refused as the sandbox refuses them.
 *
 * Also here: printf-style formatting (str % args and the format filter), following CPython's
 * PyUnicode_Format for the conversions, flags, widths and precisions.
 *
 * Trade-offs: range(), dict.items()/keys()/values() and the map/select/reverse filters return
 * lists where Python returns ranges, views or iterators (the same when iterated, joined or
 * counted; only printing one directly differs); range() is capped at 100000 items, as the
 * sandbox caps it. Not supported, each with an error naming it: the filters batch, slice,
 * groupby, truncate, striptags, wordwrap, urlize, urlencode, xmlattr, filesizeformat, pprint,
 * random; format specs in str.format; str.casefold, encode, translate and a few other rare
 * methods.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_impl.h"
#include "unicode.h"
#include "xd_error.h"

#define RANGE_MAX 100000 /* jinja2.sandbox.MAX_RANGE */

/* ---- argument binding ------------------------------------------------------------------------ */
/* Bind args to the parameters names[0..n): positionals in order, then keywords by name.
 * given[i] says whether parameter i was passed. */
static int bind(struct xd__jctx *c, const char *fname, const struct xd__jargs *a,
                const char *const *names, size_t n, struct xd__jval *out, bool *given) {
    for (size_t i = 0; i < n; i++) {
        out[i] = xd__jv_undef();
        given[i] = false;
    }
    if (a->npos > n)
        return xd__jerr(c, XD_E_TEMPLATE, "%s() takes at most %zu argument(s) (%zu given)", fname,
                        n, a->npos);
    for (size_t i = 0; i < a->npos; i++) {
        out[i] = a->pos[i];
        given[i] = true;
    }
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < n && !xd__jstr_eq(a->kwn[k], names[i])) i++;
        if (i == n)
            return xd__jerr(c, XD_E_TEMPLATE, "%s() got an unexpected keyword argument '%.*s'",
                            fname, (int)a->kwn[k].n, a->kwn[k].p);
        if (given[i])
            return xd__jerr(c, XD_E_TEMPLATE, "%s() got multiple values for argument '%s'", fname,
                            names[i]);
        out[i] = a->kw[k];
        given[i] = true;
    }
    return 0;
}

static int need_str(struct xd__jctx *c, const struct xd__jval *v, const char *what) {
    if (v->t == XJ_STR) return 0;
    if (v->t == XJ_UNDEF) return xd__jerr_undef(c, v);
    return xd__jerr(c, XD_E_TEMPLATE, "%s must be str, not %s", what, xd__jtype_name(v));
}

static int need_int(struct xd__jctx *c, const struct xd__jval *v, const char *what, int64_t *out) {
    if (v->t == XJ_INT || v->t == XJ_BOOL) {
        *out = v->t == XJ_BOOL ? v->u.b : v->u.i;
        return 0;
    }
    if (v->t == XJ_UNDEF) return xd__jerr_undef(c, v);
    return xd__jerr(c, XD_E_TEMPLATE, "%s must be an integer, not %s", what, xd__jtype_name(v));
}

static bool arg_true(const struct xd__jval *v, bool given, bool def) {
    return given ? xd__jtruthy(v) : def;
}

/* soft_str: a str stays as it is (Markup included), anything else becomes str(v). */
static int soft_str(struct xd__jctx *c, const struct xd__jval *v, struct xd__jval *out) {
    return xd__jstringify(c, v, out);
}

static int change_case(struct xd__jctx *c, struct xd__jstr s, enum xd__jcasemode m,
                       struct xd__jval *out) {
    return xd__jpy_case(c, s, m, out);
}

/* ---- sequences --------------------------------------------------------------------------------
 */
int xd__jiterate(struct xd__jctx *c, const struct xd__jval *v, struct xd__jlist *out) {
    switch (v->t) {
    case XJ_LIST: *out = *v->u.l; return xd__jcharge(c, out->n);
    case XJ_DICT: *out = (struct xd__jlist){v->u.m->n, v->u.m->k}; return xd__jcharge(c, out->n);
    case XJ_UNDEF: *out = (struct xd__jlist){0, NULL}; return 0;
    case XJ_STR: {
        size_t n = xd__jutf8_len(v->u.s.p, v->u.s.n);
        int rc = xd__jcharge(c, n * 16);
        if (rc) return rc;
        struct xd__jval *items = n ? xd__jalloc(c, n * sizeof *items) : NULL;
        if (n && !items) return c->err;
        size_t i = 0;
        for (size_t k = 0; k < n; k++) {
            size_t at = i;
            xd__jutf8_next(v->u.s.p, v->u.s.n, &i);
            items[k] = xd__jv_str(v->u.s.p + at, i - at);
        }
        *out = (struct xd__jlist){n, items};
        return 0;
    }
    default: return xd__jerr(c, XD_E_TEMPLATE, "'%s' object is not iterable", xd__jtype_name(v));
    }
}

static int len_of(struct xd__jctx *c, const struct xd__jval *v, int64_t *n) {
    switch (v->t) {
    case XJ_STR: *n = (int64_t)xd__jutf8_len(v->u.s.p, v->u.s.n); return xd__jcharge(c, v->u.s.n);
    case XJ_LIST: *n = (int64_t)v->u.l->n; return 0;
    case XJ_DICT: *n = (int64_t)v->u.m->n; return 0;
    case XJ_UNDEF: *n = 0; return 0;
    case XJ_LOOP: *n = (int64_t)v->u.loop->n; return 0;
    default:
        return xd__jerr(c, XD_E_TEMPLATE, "object of type '%s' has no len()", xd__jtype_name(v));
    }
}

/* Python slice index adjustment (PySlice_AdjustIndices). */
static size_t slice_adjust(int64_t len, int64_t *start, int64_t *stop, int64_t step, bool has_start,
                           bool has_stop) {
    if (!has_start)
        *start = step < 0 ? len - 1 : 0;
    else if (*start < 0) {
        *start += len;
        if (*start < 0) *start = step < 0 ? -1 : 0;
    } else if (*start >= len)
        *start = step < 0 ? len - 1 : len;
    if (!has_stop)
        *stop = step < 0 ? -1 : len;
    else if (*stop < 0) {
        *stop += len;
        if (*stop < 0) *stop = step < 0 ? -1 : 0;
    } else if (*stop >= len)
        *stop = step < 0 ? len - 1 : len;
    if (step < 0) return *stop < *start ? (size_t)((*start - *stop - 1) / -step + 1) : 0;
    return *start < *stop ? (size_t)((*stop - *start - 1) / step + 1) : 0;
}

int xd__jslice(struct xd__jctx *c, const struct xd__jval *obj, const struct xd__jval *start,
               const struct xd__jval *stop, const struct xd__jval *step, struct xd__jval *out) {
    if (obj->t == XJ_UNDEF) return xd__jerr_undef(c, obj);
    if (obj->t != XJ_STR && obj->t != XJ_LIST) {
        *out = xd__jv_undef_msg("this object cannot be sliced");
        return 0;
    }
    int64_t st = 1, a = 0, b = 0;
    const struct xd__jval *parts[3] = {start, stop, step};
    int64_t *dst[3] = {&a, &b, &st};
    bool has[3];
    for (int k = 0; k < 3; k++) {
        has[k] = parts[k]->t != XJ_NONE;
        if (has[k] && need_int(c, parts[k], "slice indices", dst[k])) return c->err;
    }
    if (st == 0) return xd__jerr(c, XD_E_TEMPLATE, "slice step cannot be zero");
    if (st == INT64_MIN) st = -INT64_MAX;
    if (obj->t == XJ_LIST) {
        int64_t len = (int64_t)obj->u.l->n;
        size_t cnt = slice_adjust(len, &a, &b, st, has[0], has[1]);
        int rc = xd__jcharge(c, cnt * 16);
        if (!rc) rc = xd__jlist_new(c, cnt, obj->f & XJ_F_TUPLE, out);
        for (size_t k = 0; !rc && k < cnt; k++) out->u.l->v[k] = obj->u.l->v[a + (int64_t)k * st];
        return rc;
    }
    struct xd__jstr s = obj->u.s;
    int64_t len = (int64_t)xd__jutf8_len(s.p, s.n);
    size_t cnt = slice_adjust(len, &a, &b, st, has[0], has[1]);
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    if (len == (int64_t)s.n && st == 1) { /* ASCII, contiguous: a view, no copy */
        *out = xd__jv_str(s.p + a, cnt);
        return 0;
    }
    /* code point start offsets, then gather */
    size_t *off = xd__jalloc(c, ((size_t)len + 1) * sizeof *off);
    if (!off) return c->err;
    size_t i = 0;
    for (int64_t k = 0; k < len; k++) {
        off[k] = i;
        xd__jutf8_next(s.p, s.n, &i);
    }
    off[len] = s.n;
    if (st == 1) {
        *out = xd__jv_str(s.p + off[a], cnt ? off[a + (int64_t)cnt] - off[a] : 0);
        return 0;
    }
    struct xd__jbuf buf = {0};
    for (size_t k = 0; !rc && k < cnt; k++) {
        int64_t idx = a + (int64_t)k * st;
        rc = xd__jbuf_put(c, &buf, s.p + off[idx], off[idx + 1] - off[idx]);
    }
    if (!rc) *out = xd__jv_str(buf.p ? buf.p : "", buf.n);
    return rc;
}

/* ---- methods ------------------------------------------------------------------------------------
 */
typedef int (*method_fn)(struct xd__jctx *c, const struct xd__jval *self, const struct xd__jargs *a,
                         struct xd__jval *out);

struct method {
    const char *name;
    method_fn fn; /* NULL: exists in Python but refused here (the message says why) */
    const char *why;
};

static int str_arg(struct xd__jctx *c, const struct xd__jargs *a, const char *fname,
                   const char *const *names, size_t n, struct xd__jval *v, bool *given) {
    return bind(c, fname, a, names, n, v, given);
}

/* Decode up to 64 code points of a "chars" argument. */
static size_t chars_set(struct xd__jstr chars, uint32_t *set, size_t max) {
    size_t k = 0, i = 0;
    while (i < chars.n && k < max) set[k++] = xd__jutf8_next(chars.p, chars.n, &i);
    return k;
}

static bool in_set(uint32_t cp, const uint32_t *set, size_t n, bool ws) {
    if (ws) return xd__jpy_isspace(cp);
    for (size_t k = 0; k < n; k++)
        if (set[k] == cp) return true;
    return false;
}

/* strip (both ends: 3), lstrip (1), rstrip (2) */
static int do_strip(struct xd__jctx *c, struct xd__jstr s, const struct xd__jval *chars, bool given,
                    int ends, struct xd__jval *out, uint8_t keep_flags) {
    uint32_t set[64];
    size_t nset = 0;
    bool ws = !given || chars->t == XJ_NONE;
    if (!ws) {
        if (need_str(c, chars, "strip chars")) return c->err;
        if (xd__jutf8_len(chars->u.s.p, chars->u.s.n) > 64)
            return xd__jerr(c, XD_E_UNSUPPORTED, "strip() with more than 64 characters");
        nset = chars_set(chars->u.s, set, 64);
    }
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    size_t b = 0, e = s.n;
    if (ends & 1) {
        while (b < e) {
            size_t j = b;
            uint32_t cp = xd__jutf8_next(s.p, e, &j);
            if (!in_set(cp, set, nset, ws)) break;
            b = j;
        }
    }
    if (ends & 2) {
        while (e > b) {
            size_t st = e - 1;
            while (st > b && ((unsigned char)s.p[st] & 0xC0) == 0x80) st--;
            size_t j = st;
            uint32_t cp = xd__jutf8_next(s.p, e, &j);
            if (!in_set(cp, set, nset, ws)) break;
            e = st;
        }
    }
    *out = xd__jv_str(s.p + b, e - b);
    out->f = keep_flags;
    return 0;
}

static int m_strip_any(struct xd__jctx *c, const struct xd__jval *self, const struct xd__jargs *a,
                       struct xd__jval *out, int ends) {
    static const char *const names[] = {"chars"};
    struct xd__jval v[1];
    bool g[1];
    if (str_arg(c, a, "strip", names, 1, v, g)) return c->err;
    return do_strip(c, self->u.s, &v[0], g[0], ends, out, 0);
}
static int m_strip(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return m_strip_any(c, s, a, o, 3);
}
static int m_lstrip(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    return m_strip_any(c, s, a, o, 1);
}
static int m_rstrip(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    return m_strip_any(c, s, a, o, 2);
}

static int no_args(struct xd__jctx *c, const struct xd__jargs *a, const char *fname) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "%s() takes no arguments", fname);
    return 0;
}

static int m_upper(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return no_args(c, a, "upper") ? c->err : change_case(c, s->u.s, XJ_CM_UPPER, o);
}
static int m_lower(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return no_args(c, a, "lower") ? c->err : change_case(c, s->u.s, XJ_CM_LOWER, o);
}
static int m_title(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return no_args(c, a, "title") ? c->err : change_case(c, s->u.s, XJ_CM_TITLE, o);
}
static int m_capitalize(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                        struct xd__jval *o) {
    return no_args(c, a, "capitalize") ? c->err : change_case(c, s->u.s, XJ_CM_CAPITALIZE, o);
}
static int m_swapcase(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                      struct xd__jval *o) {
    return no_args(c, a, "swapcase") ? c->err : change_case(c, s->u.s, XJ_CM_SWAPCASE, o);
}

/* The optional start/end arguments of startswith, find, count, ...: code point indices
 * adjusted as CPython's ADJUST_INDICES does (end clamped to the length, negatives from the
 * end; start is not clamped to the length, so a start past the end finds nothing). The range
 * comes back as byte offsets; *empty says start > end. */
struct span {
    size_t b0, b1; /* bytes [b0, b1) */
    int64_t start; /* start as a code point index */
    bool empty;
};

static int str_span(struct xd__jctx *c, struct xd__jstr s, const struct xd__jval *startv,
                    bool has_start, const struct xd__jval *endv, bool has_end, struct span *sp) {
    int64_t len = (int64_t)xd__jutf8_len(s.p, s.n), start = 0, end = len;
    if (has_start && startv->t != XJ_NONE && need_int(c, startv, "slice indices", &start))
        return c->err;
    if (has_end && endv->t != XJ_NONE && need_int(c, endv, "slice indices", &end)) return c->err;
    if (end > len)
        end = len;
    else if (end < 0) {
        end += len;
        if (end < 0) end = 0;
    }
    if (start < 0) {
        start += len;
        if (start < 0) start = 0;
    }
    sp->start = start;
    sp->empty = start > end;
    if (sp->empty) {
        sp->b0 = sp->b1 = 0;
        return 0;
    }
    sp->b0 = xd__jutf8_off(s.p, s.n, (size_t)start);
    sp->b1 = sp->b0 + xd__jutf8_off(s.p + sp->b0, s.n - sp->b0, (size_t)(end - start));
    return xd__jcharge(c, s.n);
}

/* startswith / endswith (prefix or tuple of prefixes, start, end): CPython's tailmatch. */
static int affix_test(struct xd__jctx *c, const struct xd__jval *self, const struct xd__jargs *a,
                      struct xd__jval *out, bool suffix) {
    static const char *const names[] = {"prefix", "start", "end"};
    const char *fname = suffix ? "endswith" : "startswith";
    struct xd__jval v[3];
    bool g[3];
    if (bind(c, fname, a, names, 3, v, g)) return c->err;
    if (a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "%s() takes no keyword arguments", fname);
    if (!g[0]) return xd__jerr(c, XD_E_TEMPLATE, "%s() takes at least 1 argument", fname);
    struct span sp;
    if (str_span(c, self->u.s, &v[1], g[1], &v[2], g[2], &sp)) return c->err;
    const struct xd__jval *cands = &v[0];
    size_t n = 1;
    if (v[0].t == XJ_LIST && (v[0].f & XJ_F_TUPLE)) {
        cands = v[0].u.l->v;
        n = v[0].u.l->n;
    }
    bool hit = false;
    for (size_t k = 0; k < n && !hit; k++) {
        if (cands[k].t != XJ_STR)
            return xd__jerr(c, XD_E_TEMPLATE, "%s first arg must be str or a tuple of str, not %s",
                            fname, xd__jtype_name(&cands[k]));
        struct xd__jstr x = cands[k].u.s;
        if (sp.empty || x.n > sp.b1 - sp.b0) continue;
        hit =
            x.n == 0 || !memcmp(suffix ? self->u.s.p + sp.b1 - x.n : self->u.s.p + sp.b0, x.p, x.n);
    }
    *out = xd__jv_bool(hit);
    return 0;
}
static int m_startswith(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                        struct xd__jval *o) {
    return affix_test(c, s, a, o, false);
}
static int m_endswith(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                      struct xd__jval *o) {
    return affix_test(c, s, a, o, true);
}

/* Byte offset of the first (or last) occurrence of x in s, or SIZE_MAX. */
static size_t find_bytes(struct xd__jstr s, struct xd__jstr x, bool last) {
    if (x.n > s.n) return SIZE_MAX;
    if (x.n == 0) return last ? s.n : 0;
    if (!last) {
        const char *p = memmem(s.p, s.n, x.p, x.n);
        return p ? (size_t)(p - s.p) : SIZE_MAX;
    }
    for (size_t i = s.n - x.n + 1; i > 0; i--)
        if (!memcmp(s.p + i - 1, x.p, x.n)) return i - 1;
    return SIZE_MAX;
}

/* find / rfind / index / rindex / count (sub, start, end) */
static int sub_args(struct xd__jctx *c, const struct xd__jval *self, const struct xd__jargs *a,
                    const char *fname, struct xd__jstr *sub, struct span *sp) {
    static const char *const names[] = {"sub", "start", "end"};
    struct xd__jval v[3];
    bool g[3];
    if (bind(c, fname, a, names, 3, v, g)) return c->err;
    if (a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "%s() takes no keyword arguments", fname);
    if (!g[0]) return xd__jerr(c, XD_E_TEMPLATE, "%s() takes at least 1 argument", fname);
    if (need_str(c, &v[0], fname)) return c->err;
    *sub = v[0].u.s;
    return str_span(c, self->u.s, &v[1], g[1], &v[2], g[2], sp);
}

static int find_common(struct xd__jctx *c, const struct xd__jval *self, const struct xd__jargs *a,
                       struct xd__jval *out, const char *fname, bool last, bool raise) {
    struct xd__jstr sub = {0};
    struct span sp;
    if (sub_args(c, self, a, fname, &sub, &sp)) return c->err;
    size_t at = SIZE_MAX;
    if (!sp.empty)
        at = find_bytes((struct xd__jstr){self->u.s.p + sp.b0, sp.b1 - sp.b0}, sub, last);
    if (at == SIZE_MAX) {
        if (raise) return xd__jerr(c, XD_E_TEMPLATE, "substring not found");
        *out = xd__jv_int(-1);
        return 0;
    }
    *out = xd__jv_int(sp.start + (int64_t)xd__jutf8_len(self->u.s.p + sp.b0, at));
    return 0;
}
static int m_find(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                  struct xd__jval *o) {
    return find_common(c, s, a, o, "find", false, false);
}
static int m_rfind(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return find_common(c, s, a, o, "rfind", true, false);
}
static int m_index(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return find_common(c, s, a, o, "index", false, true);
}
static int m_rindex(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    return find_common(c, s, a, o, "rindex", true, true);
}

static int m_count(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    struct xd__jstr x = {0};
    struct span sp;
    if (sub_args(c, s, a, "count", &x, &sp)) return c->err;
    if (sp.empty) {
        *o = xd__jv_int(0);
        return 0;
    }
    struct xd__jstr h = {s->u.s.p + sp.b0, sp.b1 - sp.b0};
    if (x.n == 0) {
        *o = xd__jv_int((int64_t)xd__jutf8_len(h.p, h.n) + 1);
        return 0;
    }
    int64_t k = 0;
    for (size_t i = 0; i + x.n <= h.n;) {
        const char *p = memmem(h.p + i, h.n - i, x.p, x.n);
        if (!p) break;
        k++;
        i = (size_t)(p - h.p) + x.n;
    }
    *o = xd__jv_int(k);
    return 0;
}

static int do_replace(struct xd__jctx *c, struct xd__jstr s, struct xd__jstr old,
                      struct xd__jstr new_, int64_t count, struct xd__jval *out) {
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    struct xd__jbuf b = {0};
    if (count < 0) count = INT64_MAX;
    if (old.n == 0) { /* new before every character and at the end, count times */
        size_t i = 0;
        int64_t done = 0;
        while (!rc && done < count) {
            rc = xd__jbuf_put(c, &b, new_.p, new_.n);
            done++;
            if (i >= s.n) break;
            size_t at = i;
            xd__jutf8_next(s.p, s.n, &i);
            if (!rc) rc = xd__jbuf_put(c, &b, s.p + at, i - at);
        }
        if (!rc && i < s.n) rc = xd__jbuf_put(c, &b, s.p + i, s.n - i);
    } else {
        size_t i = 0;
        int64_t done = 0;
        while (!rc && done < count) {
            const char *p = i < s.n ? memmem(s.p + i, s.n - i, old.p, old.n) : NULL;
            if (!p) break;
            size_t at = (size_t)(p - s.p);
            rc = xd__jbuf_put(c, &b, s.p + i, at - i);
            if (!rc) rc = xd__jbuf_put(c, &b, new_.p, new_.n);
            i = at + old.n;
            done++;
        }
        if (!rc) rc = xd__jbuf_put(c, &b, s.p + i, s.n - i);
    }
    if (!rc) *out = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

static int m_replace(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                     struct xd__jval *o) {
    static const char *const names[] = {"old", "new", "count"};
    struct xd__jval v[3];
    bool g[3];
    if (bind(c, "replace", a, names, 3, v, g)) return c->err;
    if (need_str(c, &v[0], "replace() argument 1") || need_str(c, &v[1], "replace() argument 2"))
        return c->err;
    int64_t count = -1;
    if (g[2] && need_int(c, &v[2], "count", &count)) return c->err;
    return do_replace(c, s->u.s, v[0].u.s, v[1].u.s, count, o);
}

/* split / rsplit */
static int do_split(struct xd__jctx *c, struct xd__jstr s, const struct xd__jval *sepv,
                    bool has_sep, int64_t maxsplit, bool right, struct xd__jval *out) {
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    /* collect pieces as (offset, length) in a growing array */
    size_t cap = 8, n = 0;
    struct xd__jstr *pc = xd__jalloc(c, cap * sizeof *pc);
    if (!pc) return c->err;
#define PUSH(P, L)                                                                                 \
    do {                                                                                           \
        if (n == cap) {                                                                            \
            struct xd__jstr *np_ = xd__jalloc(c, cap * 2 * sizeof *np_);                           \
            if (!np_) return c->err;                                                               \
            memcpy(np_, pc, n * sizeof *pc);                                                       \
            pc = np_;                                                                              \
            cap *= 2;                                                                              \
        }                                                                                          \
        pc[n++] = (struct xd__jstr){(P), (L)};                                                     \
    } while (0)
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (!has_sep || sepv->t == XJ_NONE) {
        if (!right) {
            size_t i = 0;
            int64_t splits = 0;
            for (;;) {
                while (i < s.n) { /* skip whitespace */
                    size_t j = i;
                    if (!xd__jpy_isspace(xd__jutf8_next(s.p, s.n, &j))) break;
                    i = j;
                }
                if (i >= s.n) break;
                if (splits == maxsplit) {
                    PUSH(s.p + i, s.n - i);
                    break;
                }
                size_t st = i;
                while (i < s.n) {
                    size_t j = i;
                    if (xd__jpy_isspace(xd__jutf8_next(s.p, s.n, &j))) break;
                    i = j;
                }
                PUSH(s.p + st, i - st);
                splits++;
            }
        } else {
            size_t e = s.n;
            int64_t splits = 0;
            for (;;) {
                while (e > 0) {
                    size_t st = e - 1;
                    while (st > 0 && ((unsigned char)s.p[st] & 0xC0) == 0x80) st--;
                    size_t j = st;
                    if (!xd__jpy_isspace(xd__jutf8_next(s.p, e, &j))) break;
                    e = st;
                }
                if (e == 0) break;
                if (splits == maxsplit) {
                    PUSH(s.p, e);
                    break;
                }
                size_t b = e;
                while (b > 0) {
                    size_t st = b - 1;
                    while (st > 0 && ((unsigned char)s.p[st] & 0xC0) == 0x80) st--;
                    size_t j = st;
                    if (xd__jpy_isspace(xd__jutf8_next(s.p, b, &j))) break;
                    b = st;
                }
                PUSH(s.p + b, e - b);
                e = b;
                splits++;
            }
        }
    } else {
        if (need_str(c, sepv, "separator")) return c->err;
        struct xd__jstr sep = sepv->u.s;
        if (sep.n == 0) return xd__jerr(c, XD_E_TEMPLATE, "empty separator");
        if (!right) {
            size_t i = 0;
            int64_t splits = 0;
            while (splits < maxsplit) {
                const char *p = i <= s.n ? memmem(s.p + i, s.n - i, sep.p, sep.n) : NULL;
                if (!p) break;
                PUSH(s.p + i, (size_t)(p - s.p) - i);
                i = (size_t)(p - s.p) + sep.n;
                splits++;
            }
            PUSH(s.p + i, s.n - i);
        } else {
            size_t e = s.n;
            int64_t splits = 0;
            while (splits < maxsplit) {
                size_t at = find_bytes((struct xd__jstr){s.p, e}, sep, true);
                if (at == SIZE_MAX) break;
                PUSH(s.p + at + sep.n, e - at - sep.n);
                e = at;
                splits++;
            }
            PUSH(s.p, e);
        }
    }
#undef PUSH
    rc = xd__jlist_new(c, n, false, out);
    for (size_t k = 0; !rc && k < n; k++) {
        struct xd__jstr p = right ? pc[n - 1 - k] : pc[k];
        out->u.l->v[k] = xd__jv_str(p.p, p.n);
    }
    return rc;
}

static int split_common(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                        struct xd__jval *o, bool right) {
    static const char *const names[] = {"sep", "maxsplit"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, right ? "rsplit" : "split", a, names, 2, v, g)) return c->err;
    int64_t maxsplit = -1;
    if (g[1] && need_int(c, &v[1], "maxsplit", &maxsplit)) return c->err;
    return do_split(c, s->u.s, &v[0], g[0], maxsplit, right, o);
}
static int m_split(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return split_common(c, s, a, o, false);
}
static int m_rsplit(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    return split_common(c, s, a, o, true);
}

/* Length of the line break at s[i] per str.splitlines, 0 if none. */
static size_t line_break_at(struct xd__jstr s, size_t i) {
    unsigned char ch = (unsigned char)s.p[i];
    if (ch == '\r') return i + 1 < s.n && s.p[i + 1] == '\n' ? 2 : 1;
    if (ch == '\n' || ch == '\v' || ch == '\f' || (ch >= 0x1C && ch <= 0x1E)) return 1;
    if (ch >= 0x80) {
        size_t j = i;
        uint32_t cp = xd__jutf8_next(s.p, s.n, &j);
        if (cp == 0x85 || cp == 0x2028 || cp == 0x2029) return j - i;
    }
    return 0;
}

static int do_splitlines(struct xd__jctx *c, struct xd__jstr s, bool keepends,
                         struct xd__jlist *out) {
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    size_t n = 0;
    for (size_t i = 0; i < s.n;) {
        size_t k = line_break_at(s, i);
        if (k) {
            n++;
            i += k;
        } else
            i++;
    }
    n++;
    struct xd__jval *v = xd__jalloc(c, n * sizeof *v);
    if (!v) return c->err;
    size_t cnt = 0, st = 0;
    for (size_t i = 0; i < s.n;) {
        size_t k = line_break_at(s, i);
        if (!k) {
            i++;
            continue;
        }
        v[cnt++] = xd__jv_str(s.p + st, (keepends ? i + k : i) - st);
        i += k;
        st = i;
    }
    if (st < s.n) v[cnt++] = xd__jv_str(s.p + st, s.n - st);
    *out = (struct xd__jlist){cnt, v};
    return 0;
}

static int m_splitlines(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                        struct xd__jval *o) {
    static const char *const names[] = {"keepends"};
    struct xd__jval v[1];
    bool g[1];
    if (bind(c, "splitlines", a, names, 1, v, g)) return c->err;
    struct xd__jlist l = {0};
    int rc = do_splitlines(c, s->u.s, arg_true(&v[0], g[0], false), &l);
    if (rc) return rc;
    rc = xd__jlist_new(c, l.n, false, o);
    if (!rc && l.n) memcpy(o->u.l->v, l.v, l.n * sizeof *l.v);
    return rc;
}

static int m_join(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                  struct xd__jval *o) {
    if (a->npos != 1 || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "join() takes one argument");
    struct xd__jlist items = {0};
    if (a->pos[0].t == XJ_UNDEF) return xd__jerr_undef(c, &a->pos[0]);
    int rc = xd__jiterate(c, &a->pos[0], &items);
    struct xd__jbuf b = {0};
    for (size_t k = 0; !rc && k < items.n; k++) {
        if (items.v[k].t != XJ_STR)
            return xd__jerr(c, XD_E_TEMPLATE, "sequence item %zu: expected str instance, %s found",
                            k, xd__jtype_name(&items.v[k]));
        if (k) rc = xd__jbuf_put(c, &b, s->u.s.p, s->u.s.n);
        if (!rc) rc = xd__jbuf_put(c, &b, items.v[k].u.s.p, items.v[k].u.s.n);
    }
    if (!rc) *o = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

static int m_affix_remove(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                          struct xd__jval *o, bool suffix) {
    if (a->npos != 1 || a->nkw || need_str(c, &a->pos[0], "argument"))
        return c->err ? c->err : xd__jerr(c, XD_E_TEMPLATE, "takes exactly one argument");
    struct xd__jstr x = a->pos[0].u.s, h = s->u.s;
    *o = *s;
    o->f = 0;
    if (x.n && x.n <= h.n && !memcmp(suffix ? h.p + h.n - x.n : h.p, x.p, x.n))
        *o = xd__jv_str(suffix ? h.p : h.p + x.n, h.n - x.n);
    return 0;
}
static int m_removeprefix(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                          struct xd__jval *o) {
    return m_affix_remove(c, s, a, o, false);
}
static int m_removesuffix(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                          struct xd__jval *o) {
    return m_affix_remove(c, s, a, o, true);
}

enum pred { P_ALPHA, P_DECIMAL, P_DIGIT, P_ALNUM, P_SPACE, P_LOWER, P_UPPER, P_NUMERIC };

/* CPython's str.isalpha() etc.: true when every character has the property (and the string
 * is not empty); islower/isupper: no character of the other case or titlecase, at least one
 * cased character of this one. */
static int str_pred(struct xd__jctx *c, struct xd__jstr s, enum pred p, bool *out) {
    int rc = xd__jcharge(c, s.n);
    if (rc) return rc;
    bool any_cased = false, ok = s.n > 0;
    for (size_t i = 0; ok && i < s.n;) {
        uint32_t cp = xd__jutf8_next(s.p, s.n, &i);
        unsigned f = xd__jpy_flags(cp);
        switch (p) {
        case P_ALPHA: ok = f & XJ_U_ALPHA; break;
        case P_DECIMAL: ok = f & XJ_U_DECIMAL; break;
        case P_DIGIT: ok = f & XJ_U_DIGIT; break;
        case P_NUMERIC: ok = f & XJ_U_NUMERIC; break;
        case P_ALNUM: ok = f & (XJ_U_ALPHA | XJ_U_DECIMAL | XJ_U_DIGIT | XJ_U_NUMERIC); break;
        case P_SPACE: ok = xd__jpy_isspace(cp); break;
        case P_LOWER:
            if (f & (XJ_U_UPPER | XJ_U_TITLE)) ok = false;
            if (f & XJ_U_LOWER) any_cased = true;
            break;
        case P_UPPER:
            if (f & (XJ_U_LOWER | XJ_U_TITLE)) ok = false;
            if (f & XJ_U_UPPER) any_cased = true;
            break;
        }
    }
    if (p == P_LOWER || p == P_UPPER) ok = ok && any_cased;
    *out = ok;
    return 0;
}

#define PRED_METHOD(fname, pred)                                                                   \
    static int m_##fname(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,  \
                         struct xd__jval *o) {                                                     \
        bool r;                                                                                    \
        if (no_args(c, a, #fname) || str_pred(c, s->u.s, pred, &r)) return c->err;                 \
        *o = xd__jv_bool(r);                                                                       \
        return 0;                                                                                  \
    }
PRED_METHOD(isalpha, P_ALPHA)
PRED_METHOD(isdigit, P_DIGIT)
PRED_METHOD(isnumeric, P_NUMERIC)
PRED_METHOD(isdecimal, P_DECIMAL)
PRED_METHOD(isalnum, P_ALNUM)
PRED_METHOD(isspace, P_SPACE)
PRED_METHOD(islower, P_LOWER)
PRED_METHOD(isupper, P_UPPER)
#undef PRED_METHOD

/* center / ljust / rjust with a fill character */
static int pad(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
               struct xd__jval *o, int mode, const char *fname) {
    static const char *const names[] = {"width", "fillchar"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, fname, a, names, 2, v, g)) return c->err;
    int64_t width = 0;
    if (need_int(c, &v[0], "width", &width)) return c->err;
    struct xd__jstr fill = {" ", 1};
    if (g[1]) {
        if (need_str(c, &v[1], "fillchar")) return c->err;
        fill = v[1].u.s;
        if (xd__jutf8_len(fill.p, fill.n) != 1)
            return xd__jerr(c, XD_E_TEMPLATE,
                            "The fill character must be exactly one character long");
    }
    int64_t len = (int64_t)xd__jutf8_len(s->u.s.p, s->u.s.n);
    if (width <= len) {
        *o = xd__jv_str(s->u.s.p, s->u.s.n);
        return 0;
    }
    if ((uint64_t)width > c->lim->max_output)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "output limit (%zu bytes) exceeded",
                        c->lim->max_output);
    int64_t marg = width - len, left;
    if (mode == 0)
        left = marg / 2 + (marg & width & 1); /* CPython's center */
    else if (mode == 1)
        left = 0;
    else
        left = marg;
    struct xd__jbuf b = {0};
    int rc = xd__jcharge(c, (size_t)width);
    for (int64_t k = 0; !rc && k < left; k++) rc = xd__jbuf_put(c, &b, fill.p, fill.n);
    if (!rc) rc = xd__jbuf_put(c, &b, s->u.s.p, s->u.s.n);
    for (int64_t k = 0; !rc && k < marg - left; k++) rc = xd__jbuf_put(c, &b, fill.p, fill.n);
    if (!rc) *o = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}
static int m_center(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    return pad(c, s, a, o, 0, "center");
}
static int m_ljust(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return pad(c, s, a, o, 1, "ljust");
}
static int m_rjust(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return pad(c, s, a, o, 2, "rjust");
}

static int partition(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                     struct xd__jval *o, bool last) {
    if (a->npos != 1 || a->nkw || need_str(c, &a->pos[0], "separator"))
        return c->err ? c->err : xd__jerr(c, XD_E_TEMPLATE, "partition() takes one argument");
    struct xd__jstr h = s->u.s, sep = a->pos[0].u.s;
    if (!sep.n) return xd__jerr(c, XD_E_TEMPLATE, "empty separator");
    int rc = xd__jcharge(c, h.n);
    if (!rc) rc = xd__jlist_new(c, 3, true, o);
    if (rc) return rc;
    size_t at = find_bytes(h, sep, last);
    struct xd__jval *v = o->u.l->v;
    if (at == SIZE_MAX) {
        v[0] = last ? xd__jv_str("", 0) : xd__jv_str(h.p, h.n);
        v[1] = xd__jv_str("", 0);
        v[2] = last ? xd__jv_str(h.p, h.n) : xd__jv_str("", 0);
    } else {
        v[0] = xd__jv_str(h.p, at);
        v[1] = xd__jv_str(h.p + at, sep.n);
        v[2] = xd__jv_str(h.p + at + sep.n, h.n - at - sep.n);
    }
    return 0;
}
static int m_partition(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                       struct xd__jval *o) {
    return partition(c, s, a, o, false);
}
static int m_rpartition(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                        struct xd__jval *o) {
    return partition(c, s, a, o, true);
}

/* str.format: {} {0} {name} with !s / !r; no format specs, no .attr / [key] in fields. */
static int m_format(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    struct xd__jstr f = s->u.s;
    struct xd__jbuf b = {0};
    int rc = xd__jcharge(c, f.n);
    size_t autonum = 0;
    for (size_t i = 0; !rc && i < f.n; i++) {
        char ch = f.p[i];
        if (ch == '}') {
            if (i + 1 < f.n && f.p[i + 1] == '}') {
                rc = xd__jbuf_putc(c, &b, '}');
                i++;
                continue;
            }
            return xd__jerr(c, XD_E_TEMPLATE, "Single '}' encountered in format string");
        }
        if (ch != '{') {
            rc = xd__jbuf_putc(c, &b, ch);
            continue;
        }
        if (i + 1 < f.n && f.p[i + 1] == '{') {
            rc = xd__jbuf_putc(c, &b, '{');
            i++;
            continue;
        }
        size_t e = i + 1;
        while (e < f.n && f.p[e] != '}') e++;
        if (e >= f.n) return xd__jerr(c, XD_E_TEMPLATE, "Single '{' encountered in format string");
        struct xd__jstr field = {f.p + i + 1, e - i - 1};
        char conv = 0;
        const char *bang = memchr(field.p, '!', field.n);
        if (memchr(field.p, ':', field.n) || memchr(field.p, '.', field.n) ||
            memchr(field.p, '[', field.n))
            return xd__jerr(c, XD_E_UNSUPPORTED,
                            "format specs and attribute/index fields in str.format are not "
                            "supported");
        if (bang) {
            if ((size_t)(bang - field.p) + 2 != field.n || (bang[1] != 's' && bang[1] != 'r'))
                return xd__jerr(c, XD_E_TEMPLATE, "bad conversion in format string");
            conv = bang[1];
            field.n = (size_t)(bang - field.p);
        }
        const struct xd__jval *arg = NULL;
        if (field.n == 0) {
            if (autonum >= a->npos)
                return xd__jerr(c, XD_E_TEMPLATE, "Replacement index %zu out of range", autonum);
            arg = &a->pos[autonum++];
        } else if (field.p[0] >= '0' && field.p[0] <= '9') {
            size_t idx = 0;
            for (size_t k = 0; k < field.n; k++) {
                if (field.p[k] < '0' || field.p[k] > '9' || idx > 1000)
                    return xd__jerr(c, XD_E_TEMPLATE, "bad field in format string");
                idx = idx * 10 + (size_t)(field.p[k] - '0');
            }
            if (idx >= a->npos)
                return xd__jerr(c, XD_E_TEMPLATE, "Replacement index %zu out of range", idx);
            arg = &a->pos[idx];
        } else {
            for (size_t k = 0; k < a->nkw && !arg; k++)
                if (xd__jstr_same(a->kwn[k], field)) arg = &a->kw[k];
            if (!arg)
                return xd__jerr(c, XD_E_TEMPLATE, "format key '%.*s' not given",
                                (int)(field.n > 40 ? 40 : field.n), field.p);
        }
        rc = conv == 'r' ? xd__jrepr(c, &b, arg) : xd__jto_str(c, &b, arg);
        i = e;
    }
    if (!rc) *o = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

static int m_zfill(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    int64_t width = 0;
    if (a->npos != 1 || a->nkw || need_int(c, &a->pos[0], "width", &width))
        return c->err ? c->err : xd__jerr(c, XD_E_TEMPLATE, "zfill() takes one argument");
    struct xd__jstr h = s->u.s;
    int64_t len = (int64_t)xd__jutf8_len(h.p, h.n);
    if (width <= len) {
        *o = xd__jv_str(h.p, h.n);
        return 0;
    }
    if ((uint64_t)width > c->lim->max_output)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "output limit (%zu bytes) exceeded",
                        c->lim->max_output);
    struct xd__jbuf b = {0};
    size_t sign = h.n && (h.p[0] == '+' || h.p[0] == '-') ? 1 : 0;
    int rc = xd__jbuf_put(c, &b, h.p, sign);
    for (int64_t k = 0; !rc && k < width - len; k++) rc = xd__jbuf_putc(c, &b, '0');
    if (!rc) rc = xd__jbuf_put(c, &b, h.p + sign, h.n - sign);
    if (!rc) *o = xd__jv_str(b.p, b.n);
    return rc;
}

static const struct method str_methods[] = {
    {"strip", m_strip, NULL},
    {"lstrip", m_lstrip, NULL},
    {"rstrip", m_rstrip, NULL},
    {"split", m_split, NULL},
    {"rsplit", m_rsplit, NULL},
    {"splitlines", m_splitlines, NULL},
    {"startswith", m_startswith, NULL},
    {"endswith", m_endswith, NULL},
    {"replace", m_replace, NULL},
    {"upper", m_upper, NULL},
    {"lower", m_lower, NULL},
    {"casefold", NULL, "str.casefold() is not supported"},
    {"title", m_title, NULL},
    {"capitalize", m_capitalize, NULL},
    {"swapcase", m_swapcase, NULL},
    {"find", m_find, NULL},
    {"rfind", m_rfind, NULL},
    {"index", m_index, NULL},
    {"rindex", m_rindex, NULL},
    {"count", m_count, NULL},
    {"join", m_join, NULL},
    {"format", m_format, NULL},
    {"removeprefix", m_removeprefix, NULL},
    {"removesuffix", m_removesuffix, NULL},
    {"isalpha", m_isalpha, NULL},
    {"isdigit", m_isdigit, NULL},
    {"isnumeric", m_isnumeric, NULL},
    {"isdecimal", m_isdecimal, NULL},
    {"isalnum", m_isalnum, NULL},
    {"isspace", m_isspace, NULL},
    {"islower", m_islower, NULL},
    {"isupper", m_isupper, NULL},
    {"center", m_center, NULL},
    {"ljust", m_ljust, NULL},
    {"rjust", m_rjust, NULL},
    {"zfill", m_zfill, NULL},
    {"partition", m_partition, NULL},
    {"rpartition", m_rpartition, NULL},
    {"encode", NULL, "str.encode() is not supported"},
    {"expandtabs", NULL, "str.expandtabs() is not supported"},
    {"format_map", NULL, "str.format_map() is not supported"},
    {"istitle", NULL, "str.istitle() is not supported"},
    {"isidentifier", NULL, "str.isidentifier() is not supported"},
    {"isprintable", NULL, "str.isprintable() is not supported"},
    {"isascii", NULL, "str.isascii() is not supported"},
    {"maketrans", NULL, "str.maketrans() is not supported"},
    {"translate", NULL, "str.translate() is not supported"},
};

static int m_get(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                 struct xd__jval *o) {
    static const char *const names[] = {"key", "default"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, "get", a, names, 2, v, g)) return c->err;
    if (!g[0]) return xd__jerr(c, XD_E_TEMPLATE, "get expected at least 1 argument, got 0");
    if (a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "get() takes no keyword arguments");
    const struct xd__jval *hit = xd__jdict_get(s->u.m, &v[0]);
    *o = hit ? *hit : g[1] ? v[1] : xd__jv_none();
    return xd__jcharge(c, s->u.m->n);
}

static int dict_view(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                     struct xd__jval *o, int which, const char *fname) {
    if (no_args(c, a, fname)) return c->err;
    const struct xd__jdict *m = s->u.m;
    int rc = xd__jcharge(c, m->n * 4);
    if (!rc) rc = xd__jlist_new(c, m->n, false, o);
    for (size_t k = 0; !rc && k < m->n; k++) {
        if (which == 0)
            o->u.l->v[k] = m->k[k];
        else if (which == 1)
            o->u.l->v[k] = m->v[k];
        else {
            struct xd__jval pair = {0};
            rc = xd__jlist_new(c, 2, true, &pair);
            if (rc) break;
            pair.u.l->v[0] = m->k[k];
            pair.u.l->v[1] = m->v[k];
            o->u.l->v[k] = pair;
        }
    }
    return rc;
}
static int m_keys(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                  struct xd__jval *o) {
    return dict_view(c, s, a, o, 0, "keys");
}
static int m_values(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    return dict_view(c, s, a, o, 1, "values");
}
static int m_items(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    return dict_view(c, s, a, o, 2, "items");
}
static int m_copy(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                  struct xd__jval *o) {
    if (no_args(c, a, "copy")) return c->err;
    *o = *s; /* values never change, so a copy may share */
    return 0;
}

static const struct method dict_methods[] = {
    {"get", m_get, NULL},
    {"keys", m_keys, NULL},
    {"values", m_values, NULL},
    {"items", m_items, NULL},
    {"copy", m_copy, NULL},
    {"pop", NULL, "dict.pop() changes the dict, which the sandbox refuses"},
    {"popitem", NULL, "dict.popitem() changes the dict, which the sandbox refuses"},
    {"setdefault", NULL, "dict.setdefault() changes the dict, which the sandbox refuses"},
    {"update", NULL, "dict.update() changes the dict, which the sandbox refuses"},
    {"clear", NULL, "dict.clear() changes the dict, which the sandbox refuses"},
    {"fromkeys", NULL, "dict.fromkeys() is not supported"},
};

static int m_lcount(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    if (a->npos != 1 || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "count() takes one argument");
    int64_t k = 0;
    for (size_t i = 0; i < s->u.l->n; i++) {
        bool eq;
        int rc = xd__jeq(c, &s->u.l->v[i], &a->pos[0], &eq);
        if (rc) return rc;
        k += eq;
    }
    *o = xd__jv_int(k);
    return 0;
}

static int m_lindex(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                    struct xd__jval *o) {
    if (a->npos != 1 || a->nkw)
        return xd__jerr(c, XD_E_UNSUPPORTED, "index() takes exactly one argument here");
    for (size_t i = 0; i < s->u.l->n; i++) {
        bool eq;
        int rc = xd__jeq(c, &s->u.l->v[i], &a->pos[0], &eq);
        if (rc) return rc;
        if (eq) {
            *o = xd__jv_int((int64_t)i);
            return 0;
        }
    }
    return xd__jerr(c, XD_E_TEMPLATE, "value is not in list");
}

static const struct method list_methods[] = {
    {"count", m_lcount, NULL},
    {"index", m_lindex, NULL},
    {"copy", m_copy, NULL},
    {"append", NULL, "list.append() changes the list, which the sandbox refuses"},
    {"extend", NULL, "list.extend() changes the list, which the sandbox refuses"},
    {"insert", NULL, "list.insert() changes the list, which the sandbox refuses"},
    {"remove", NULL, "list.remove() changes the list, which the sandbox refuses"},
    {"reverse", NULL, "list.reverse() changes the list, which the sandbox refuses"},
    {"sort", NULL, "list.sort() changes the list, which the sandbox refuses"},
    {"pop", NULL, "list.pop() is not supported (lists are immutable here)"},
    {"clear", NULL, "list.clear() is not supported (lists are immutable here)"},
};

static int m_cycle(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                   struct xd__jval *o) {
    if (!a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "no items for cycling given");
    *o = a->pos[s->u.loop->i % a->npos];
    return 0;
}

/* loop.changed(*values): true on the first call and whenever the values differ from the
 * previous call's (Jinja keeps them in the loop object). */
static int m_changed(struct xd__jctx *c, const struct xd__jval *s, const struct xd__jargs *a,
                     struct xd__jval *o) {
    if (a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "changed() takes no keyword arguments");
    struct xd__jval now = {0};
    int rc = xd__jlist_new(c, a->npos, true, &now);
    if (rc) return rc;
    if (a->npos) memcpy(now.u.l->v, a->pos, a->npos * sizeof *a->pos);
    struct xd__jloop *l = s->u.loop;
    bool same = false;
    if (l->changed.t != XJ_UNDEF && (rc = xd__jeq(c, &l->changed, &now, &same))) return rc;
    if (!same) l->changed = now;
    *o = xd__jv_bool(!same);
    return 0;
}

static const struct method loop_methods[] = {
    {"cycle", m_cycle, NULL},
    {"changed", m_changed, NULL},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const struct method *find_method(uint8_t type, struct xd__jstr name) {
    const struct method *tab;
    size_t n;
    switch (type) {
    case XJ_STR: tab = str_methods, n = N_OF(str_methods); break;
    case XJ_DICT: tab = dict_methods, n = N_OF(dict_methods); break;
    case XJ_LIST: tab = list_methods, n = N_OF(list_methods); break;
    case XJ_LOOP: tab = loop_methods, n = N_OF(loop_methods); break;
    default: return NULL;
    }
    for (size_t k = 0; k < n; k++)
        if (xd__jstr_eq(name, tab[k].name)) return &tab[k];
    return NULL;
}

static int bound_method(struct xd__jctx *c, const struct xd__jval *self, struct xd__jstr name,
                        struct xd__jval *out) {
    struct xd__jmethod *m = xd__jalloc(c, sizeof *m);
    if (!m) return c->err;
    m->self = *self;
    m->name = name;
    *out = (struct xd__jval){.t = XJ_METHOD, .u.meth = m};
    return 0;
}

/* ---- attribute and item lookup ------------------------------------------------------------------
 */
static int loop_attr(struct xd__jctx *c, const struct xd__jval *obj, struct xd__jstr attr,
                     struct xd__jval *out) {
    const struct xd__jloop *l = obj->u.loop;
    int64_t i = (int64_t)l->i, n = (int64_t)l->n;
    if (xd__jstr_eq(attr, "index"))
        *out = xd__jv_int(i + 1);
    else if (xd__jstr_eq(attr, "index0"))
        *out = xd__jv_int(i);
    else if (xd__jstr_eq(attr, "revindex"))
        *out = xd__jv_int(n - i);
    else if (xd__jstr_eq(attr, "revindex0"))
        *out = xd__jv_int(n - i - 1);
    else if (xd__jstr_eq(attr, "first"))
        *out = xd__jv_bool(i == 0);
    else if (xd__jstr_eq(attr, "last"))
        *out = xd__jv_bool(i == n - 1);
    else if (xd__jstr_eq(attr, "length"))
        *out = xd__jv_int(n);
    else if (xd__jstr_eq(attr, "depth"))
        *out = xd__jv_int(1);
    else if (xd__jstr_eq(attr, "depth0"))
        *out = xd__jv_int(0);
    else if (xd__jstr_eq(attr, "previtem"))
        *out = i > 0 ? l->items[i - 1] : xd__jv_undef_msg("there is no previous item");
    else if (xd__jstr_eq(attr, "nextitem"))
        *out = i + 1 < n ? l->items[i + 1] : xd__jv_undef_msg("there is no next item");
    else if (find_method(XJ_LOOP, attr))
        return bound_method(c, obj, attr, out);
    else
        *out = xd__jv_undef_attr(obj, attr);
    return 0;
}

int xd__jgetattr(struct xd__jctx *c, const struct xd__jval *obj, struct xd__jstr attr,
                 struct xd__jval *out) {
    switch (obj->t) {
    case XJ_UNDEF: return xd__jerr_undef(c, obj);
    case XJ_DICT: {
        if (find_method(XJ_DICT, attr)) return bound_method(c, obj, attr, out);
        int rc = xd__jcharge(c, obj->u.m->n);
        const struct xd__jval *v = xd__jdict_get_str(obj->u.m, attr);
        *out = v ? *v : xd__jv_undef_attr(obj, attr);
        return rc;
    }
    case XJ_STR:
    case XJ_LIST:
        if (find_method(obj->t, attr)) return bound_method(c, obj, attr, out);
        *out = xd__jv_undef_attr(obj, attr);
        return 0;
    case XJ_NS:
        for (size_t k = 0; k < obj->u.ns->n; k++)
            if (xd__jstr_same(obj->u.ns->k[k], attr)) {
                *out = obj->u.ns->v[k];
                return 0;
            }
        *out = xd__jv_undef_attr(obj, attr);
        return 0;
    case XJ_LOOP: return loop_attr(c, obj, attr, out);
    default: *out = xd__jv_undef_attr(obj, attr); return 0;
    }
}

int xd__jgetitem(struct xd__jctx *c, const struct xd__jval *obj, const struct xd__jval *key,
                 struct xd__jval *out) {
    if (obj->t == XJ_UNDEF) return xd__jerr_undef(c, obj);
    if (obj->t == XJ_DICT) {
        int rc = xd__jcharge(c, obj->u.m->n);
        const struct xd__jval *v = xd__jdict_get(obj->u.m, key);
        if (v) {
            *out = *v;
            return rc;
        }
    } else if ((obj->t == XJ_LIST || obj->t == XJ_STR) && (key->t == XJ_INT || key->t == XJ_BOOL)) {
        int64_t i = key->t == XJ_BOOL ? key->u.b : key->u.i;
        if (obj->t == XJ_LIST) {
            int64_t n = (int64_t)obj->u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) {
                *out = obj->u.l->v[i];
                return 0;
            }
        } else {
            struct xd__jstr s = obj->u.s;
            int64_t n = (int64_t)xd__jutf8_len(s.p, s.n);
            int rc = xd__jcharge(c, s.n);
            if (rc) return rc;
            if (i < 0) i += n;
            if (i >= 0 && i < n) {
                size_t at = xd__jutf8_off(s.p, s.n, (size_t)i), e = at;
                xd__jutf8_next(s.p, s.n, &e);
                *out = xd__jv_str(s.p + at, e - at);
                return 0;
            }
        }
        *out = xd__jv_undef_index(obj, key->t == XJ_BOOL ? key->u.b : key->u.i);
        return 0;
    }
    if (key->t == XJ_STR) { /* obj['name'] falls back to obj.name */
        if (obj->t == XJ_DICT) {
            if (find_method(XJ_DICT, key->u.s)) return bound_method(c, obj, key->u.s, out);
            *out = xd__jv_undef_attr(obj, key->u.s);
            return 0;
        }
        return xd__jgetattr(c, obj, key->u.s, out);
    }
    *out = xd__jv_undef_msg("no such item");
    return 0;
}

/* ---- globals ----------------------------------------------------------------------------------
 */
typedef int (*global_fn)(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out);

static int g_range(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out) {
    if (a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "range() takes no keyword arguments");
    if (a->npos < 1 || a->npos > 3)
        return xd__jerr(c, XD_E_TEMPLATE, "range expected 1 to 3 arguments, got %zu", a->npos);
    int64_t v[3] = {0, 0, 1};
    for (size_t k = 0; k < a->npos; k++)
        if (need_int(c, &a->pos[k], "range() argument", &v[a->npos == 1 ? 1 : k])) return c->err;
    int64_t start = v[0], stop = v[1], step = v[2];
    if (step == 0) return xd__jerr(c, XD_E_TEMPLATE, "range() arg 3 must not be zero");
    /* count without overflow */
    uint64_t n = 0;
    if (step > 0 && start < stop) n = ((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step + 1;
    if (step < 0 && start > stop)
        n = ((uint64_t)start - (uint64_t)stop - 1) / (uint64_t)(-(step + 1) + 1) + 1;
    if (n > RANGE_MAX)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT,
                        "range too big: the sandbox allows at most %d items", RANGE_MAX);
    int rc = xd__jcharge(c, n * 16);
    if (!rc) rc = xd__jlist_new(c, (size_t)n, false, out);
    for (uint64_t k = 0; !rc && k < n; k++) out->u.l->v[k] = xd__jv_int(start + (int64_t)k * step);
    return rc;
}

/* namespace(mapping?, **kw) and dict(mapping?, **kw): the mapping's pairs, then the keywords. */
static int build_pairs(struct xd__jctx *c, const struct xd__jargs *a, const char *fname,
                       struct xd__jdict *d) {
    if (a->npos > 1)
        return xd__jerr(c, XD_E_TEMPLATE, "%s expected at most 1 argument, got %zu", fname,
                        a->npos);
    const struct xd__jdict *src = NULL;
    if (a->npos) {
        if (a->pos[0].t != XJ_DICT)
            return xd__jerr(c, XD_E_UNSUPPORTED, "%s() takes a dict or keyword arguments here",
                            fname);
        src = a->pos[0].u.m;
    }
    size_t cap = (src ? src->n : 0) + a->nkw;
    if (cap) {
        d->k = xd__jalloc(c, cap * sizeof *d->k);
        d->v = xd__jalloc(c, cap * sizeof *d->v);
        if (!d->k || !d->v) return c->err;
    }
    for (size_t k = 0; src && k < src->n; k++) {
        d->k[d->n] = src->k[k];
        d->v[d->n++] = src->v[k];
    }
    for (size_t k = 0; k < a->nkw; k++) {
        struct xd__jval key = xd__jv_str(a->kwn[k].p, a->kwn[k].n);
        struct xd__jval *have = (struct xd__jval *)xd__jdict_get(d, &key);
        if (have)
            *have = a->kw[k];
        else {
            d->k[d->n] = key;
            d->v[d->n++] = a->kw[k];
        }
    }
    return 0;
}

static int g_dict(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out) {
    struct xd__jdict *d = xd__jalloc(c, sizeof *d);
    if (!d) return c->err;
    int rc = build_pairs(c, a, "dict", d);
    if (!rc) *out = (struct xd__jval){.t = XJ_DICT, .u.m = d};
    return rc;
}

static int g_namespace(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out) {
    struct xd__jdict d = {0};
    int rc = build_pairs(c, a, "namespace", &d);
    if (rc) return rc;
    struct xd__jns *ns = xd__jalloc(c, sizeof *ns);
    if (!ns) return c->err;
    if (d.n) {
        ns->k = xd__jalloc(c, d.n * sizeof *ns->k);
        ns->v = xd__jalloc(c, d.n * sizeof *ns->v);
        if (!ns->k || !ns->v) return c->err;
    }
    for (size_t k = 0; k < d.n; k++) {
        if (d.k[k].t != XJ_STR)
            return xd__jerr(c, XD_E_TEMPLATE, "namespace() keys must be strings");
        ns->k[k] = d.k[k].u.s;
        ns->v[k] = d.v[k];
    }
    ns->n = ns->cap = d.n;
    *out = (struct xd__jval){.t = XJ_NS, .u.ns = ns};
    return 0;
}

static int g_raise(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out) {
    (void)out;
    struct xd__jval msg = a->npos ? a->pos[0] : xd__jv_str("", 0), s;
    int rc = xd__jstringify(c, &msg, &s);
    if (rc) return rc;
    return xd__jerr_raw(c, XD_E_TEMPLATE_RAISE, s.u.s.p, s.u.s.n);
}

static int g_strftime(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out) {
    if (a->npos != 1 || a->nkw || need_str(c, &a->pos[0], "strftime_now() format"))
        return c->err ? c->err : xd__jerr(c, XD_E_TEMPLATE, "strftime_now() takes one argument");
    struct xd__jstr f = a->pos[0].u.s;
    if (f.n > 200 || memchr(f.p, '\0', f.n))
        return xd__jerr(c, XD_E_UNSUPPORTED, "strftime_now() format too long");
    char fmt[208], buf[512];
    memcpy(fmt, f.p, f.n);
    fmt[f.n] = '\0';
    time_t t = (time_t)c->now;
    struct tm tm;
    if (!localtime_r(&t, &tm)) return xd__jerr(c, XD_E_TEMPLATE, "bad time");
    size_t n = f.n ? strftime(buf, sizeof buf, fmt, &tm) : 0;
    if (f.n && n == 0 && fmt[0])
        return xd__jerr(c, XD_E_UNSUPPORTED, "strftime_now() result too long");
    return xd__jstr_copy(c, buf, n, out);
}

static int g_unsupported(struct xd__jctx *c, const struct xd__jargs *a, struct xd__jval *out) {
    (void)a;
    (void)out;
    return xd__jerr(c, XD_E_UNSUPPORTED,
                    "the globals lipsum, cycler and joiner are not "
                    "supported");
}

static const struct {
    const char *name;
    global_fn fn;
} globals[] = {
    {"range", g_range},           {"namespace", g_namespace},   {"dict", g_dict},
    {"raise_exception", g_raise}, {"strftime_now", g_strftime}, {"lipsum", g_unsupported},
    {"cycler", g_unsupported},    {"joiner", g_unsupported},
};

bool xd__jglobal(struct xd__jstr name, struct xd__jval *out) {
    for (size_t k = 0; k < N_OF(globals); k++)
        if (xd__jstr_eq(name, globals[k].name)) {
            *out = (struct xd__jval){.t = XJ_FUNC, .u.fn = (int)k};
            return true;
        }
    return false;
}

int xd__jcall_builtin(struct xd__jctx *c, const struct xd__jval *fn, const struct xd__jargs *a,
                      struct xd__jval *out) {
    if (fn->t == XJ_FUNC) {
        if (fn->u.fn < 0 || (size_t)fn->u.fn >= N_OF(globals))
            return xd__jerr(c, XD_E_TEMPLATE, "bad function");
        return globals[fn->u.fn].fn(c, a, out);
    }
    const struct xd__jmethod *m = fn->u.meth;
    const struct method *mt = find_method(m->self.t, m->name);
    if (!mt) return xd__jerr(c, XD_E_TEMPLATE, "no such method");
    if (!mt->fn) return xd__jerr(c, XD_E_UNSUPPORTED, "%s", mt->why);
    return mt->fn(c, &m->self, a, out);
}

/* ---- attribute paths for map/sort/selectattr ("a.b.0")
 * ------------------------------------------- */
static int attr_path(struct xd__jctx *c, const struct xd__jval *item, struct xd__jstr path,
                     struct xd__jval *out) {
    struct xd__jval cur = *item;
    size_t i = 0;
    for (;;) {
        size_t e = i;
        while (e < path.n && path.p[e] != '.') e++;
        struct xd__jstr part = {path.p + i, e - i};
        struct xd__jval key = xd__jv_str(part.p, part.n);
        bool digits = part.n > 0 && part.n < 18;
        int64_t num = 0;
        for (size_t k = 0; digits && k < part.n; k++) {
            if (part.p[k] < '0' || part.p[k] > '9')
                digits = false;
            else
                num = num * 10 + (part.p[k] - '0');
        }
        if (digits) key = xd__jv_int(num);
        struct xd__jval next = {0};
        int rc = xd__jgetitem(c, &cur, &key, &next);
        if (rc) return rc;
        cur = next;
        if (e >= path.n) break;
        i = e + 1;
    }
    *out = cur;
    return 0;
}

static int lower_if_str(struct xd__jctx *c, const struct xd__jval *v, bool fold,
                        struct xd__jval *out) {
    if (!fold || v->t != XJ_STR) {
        *out = *v;
        return 0;
    }
    return change_case(c, v->u.s, XJ_CM_LOWER, out);
}

/* Key of an item for sort/unique/min/max: the attribute (if any), lower-cased strings unless
 * case-sensitive. */
static int sort_key(struct xd__jctx *c, const struct xd__jval *item, const struct xd__jval *attr,
                    bool fold, struct xd__jval *out) {
    struct xd__jval v = *item;
    if (attr && attr->t != XJ_NONE && attr->t != XJ_UNDEF) {
        if (attr->t == XJ_STR) {
            int rc = attr_path(c, item, attr->u.s, &v);
            if (rc) return rc;
        } else {
            int rc = xd__jgetitem(c, item, attr, &v);
            if (rc) return rc;
        }
    }
    return lower_if_str(c, &v, fold, out);
}

/* Stable merge sort of idx[0..n) by keys (reverse keeps stability, as Python's sorted does). */
static int merge_sort(struct xd__jctx *c, size_t *idx, size_t *tmp, size_t n,
                      const struct xd__jval *keys, bool reverse) {
    if (n < 2) return 0;
    size_t h = n / 2;
    int rc = merge_sort(c, idx, tmp, h, keys, reverse);
    if (!rc) rc = merge_sort(c, idx + h, tmp, n - h, keys, reverse);
    if (rc) return rc;
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int cmp; /* right against left: take the right one only when it sorts strictly first */
        rc = xd__jcmp(c, &keys[idx[j]], &keys[idx[i]], &cmp);
        if (rc) return rc;
        if (reverse ? cmp == 1 : cmp == -1)
            tmp[k++] = idx[j++];
        else
            tmp[k++] = idx[i++];
    }
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
    return xd__jcharge(c, n);
}

static int sorted_list(struct xd__jctx *c, const struct xd__jlist *items,
                       const struct xd__jval *keys, bool reverse, struct xd__jval *out) {
    size_t n = items->n;
    size_t *idx = n ? xd__jalloc(c, n * sizeof *idx) : NULL;
    size_t *tmp = n ? xd__jalloc(c, n * sizeof *tmp) : NULL;
    if (n && (!idx || !tmp)) return c->err;
    for (size_t k = 0; k < n; k++) idx[k] = k;
    int rc = merge_sort(c, idx, tmp, n, keys, reverse);
    if (!rc) rc = xd__jlist_new(c, n, false, out);
    for (size_t k = 0; !rc && k < n; k++) out->u.l->v[k] = items->v[idx[k]];
    return rc;
}

/* ---- printf-style formatting: str % args ------------------------------------------------ */
/* CPython's PyUnicode_Format: a tuple gives the positional arguments, any other value is one
 * argument; a dict (or list) right operand may also serve %(name)s and is never reported as
 * "not all arguments converted". Conversions s r a d i u o x X e E f F g G c and %%, with
 * flags "-+ #0", width and precision (both may be *). */
struct pct_args {
    const struct xd__jval *v;
    size_t n, next;
    const struct xd__jval *single; /* the one non-tuple argument, NULL for a tuple */
    bool used_single;
    const struct xd__jval *mapping; /* dict/list right operand, for %(name) */
};

static int pct_next(struct xd__jctx *c, struct pct_args *pa, const struct xd__jval **out) {
    if (pa->single) {
        if (pa->used_single)
            return xd__jerr(c, XD_E_TEMPLATE, "not enough arguments for format string");
        pa->used_single = true;
        *out = pa->single;
        return 0;
    }
    if (pa->next >= pa->n)
        return xd__jerr(c, XD_E_TEMPLATE, "not enough arguments for format string");
    *out = &pa->v[pa->next++];
    return 0;
}

/* Pad text (code points counted) to width: left-aligned with '-', else right. */
static int pct_pad(struct xd__jctx *c, struct xd__jbuf *b, const char *p, size_t n, int64_t width,
                   bool left) {
    int64_t len = (int64_t)xd__jutf8_len(p, n);
    int rc = 0;
    if (width > (int64_t)c->lim->max_output)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "output limit (%zu bytes) exceeded",
                        c->lim->max_output);
    for (int64_t k = len; !rc && !left && k < width; k++) rc = xd__jbuf_putc(c, b, ' ');
    if (!rc) rc = xd__jbuf_put(c, b, p, n);
    for (int64_t k = len; !rc && left && k < width; k++) rc = xd__jbuf_putc(c, b, ' ');
    return rc;
}

int xd__jpercent(struct xd__jctx *c, const struct xd__jval *fmt, const struct xd__jval *args,
                 struct xd__jval *out) {
    struct pct_args pa = {0};
    if (args->t == XJ_LIST && (args->f & XJ_F_TUPLE)) {
        pa.v = args->u.l->v;
        pa.n = args->u.l->n;
    } else {
        pa.single = args;
        /* PyMapping_Check: anything with __getitem__ but a str (Undefined has one) */
        if (args->t == XJ_DICT || args->t == XJ_LIST || args->t == XJ_UNDEF) pa.mapping = args;
    }
    struct xd__jstr f = fmt->u.s;
    struct xd__jbuf b = {0};
    int rc = xd__jcharge(c, f.n);
    for (size_t i = 0; !rc && i < f.n; i++) {
        if (f.p[i] != '%') {
            size_t j = i;
            while (j < f.n && f.p[j] != '%') j++;
            rc = xd__jbuf_put(c, &b, f.p + i, j - i);
            i = j - 1;
            continue;
        }
        if (++i >= f.n) return xd__jerr(c, XD_E_TEMPLATE, "incomplete format");
        const struct xd__jval *arg = NULL;
        struct xd__jval keyed = {0};
        if (f.p[i] == '(') { /* %(name)s */
            size_t j = i + 1;
            int depth = 1;
            while (j < f.n && depth) {
                depth += f.p[j] == '(' ? 1 : f.p[j] == ')' ? -1 : 0;
                j++;
            }
            if (depth) return xd__jerr(c, XD_E_TEMPLATE, "incomplete format key");
            if (!pa.mapping || pa.mapping->t != XJ_DICT)
                return xd__jerr(c, XD_E_TEMPLATE, "format requires a mapping");
            struct xd__jval key = xd__jv_str(f.p + i + 1, j - i - 2);
            const struct xd__jval *hit = xd__jdict_get(pa.mapping->u.m, &key);
            if (!hit)
                return xd__jerr(c, XD_E_TEMPLATE, "format key '%.*s' not found",
                                (int)(key.u.s.n > 40 ? 40 : key.u.s.n), key.u.s.p);
            keyed = *hit;
            arg = &keyed;
            pa.used_single = true; /* a mapping argument counts as used */
            i = j;
            if (i >= f.n) return xd__jerr(c, XD_E_TEMPLATE, "incomplete format");
        }
        bool left = false, plus = false, space = false, alt = false, zero = false;
        for (; i < f.n; i++) {
            char ch = f.p[i];
            if (ch == '-')
                left = true;
            else if (ch == '+')
                plus = true;
            else if (ch == ' ')
                space = true;
            else if (ch == '#')
                alt = true;
            else if (ch == '0')
                zero = true;
            else
                break;
        }
        int64_t width = -1, prec = -1;
        for (int part = 0; part < 2 && i < f.n; part++) {
            int64_t *dst = part ? &prec : &width;
            if (part) {
                if (f.p[i] != '.') break;
                i++;
                *dst = 0;
            }
            if (i < f.n && f.p[i] == '*') {
                const struct xd__jval *w;
                if ((rc = pct_next(c, &pa, &w)) || (rc = need_int(c, w, "* wants int", dst)))
                    return rc;
                if (!part && *dst < 0) {
                    left = true;
                    *dst = -*dst;
                }
                i++;
            } else {
                while (i < f.n && f.p[i] >= '0' && f.p[i] <= '9') {
                    if (*dst > 100000000) return xd__jerr(c, XD_E_TEMPLATE, "width too big");
                    *dst = (*dst < 0 ? 0 : *dst) * 10 + (f.p[i++] - '0');
                }
            }
        }
        while (i < f.n && (f.p[i] == 'h' || f.p[i] == 'l' || f.p[i] == 'L')) i++;
        if (i >= f.n) return xd__jerr(c, XD_E_TEMPLATE, "incomplete format");
        char conv = f.p[i];
        if (conv == '%') {
            rc = xd__jbuf_putc(c, &b, '%');
            continue;
        }
        if (!arg && (rc = pct_next(c, &pa, &arg))) return rc;
        if (arg->t == XJ_UNDEF && conv != 's' && conv != 'r' && conv != 'a')
            return xd__jerr_undef(c, arg);
        struct xd__jbuf tmp = {0};
        switch (conv) {
        case 's':
        case 'r':
        case 'a': {
            if (arg->t == XJ_UNDEF && conv == 's') return xd__jerr_undef(c, arg);
            rc = conv == 's' ? xd__jto_str(c, &tmp, arg) : xd__jrepr(c, &tmp, arg);
            if (rc) return rc;
            size_t n = tmp.n;
            if (prec >= 0) n = xd__jutf8_off(tmp.p ? tmp.p : "", tmp.n, (size_t)prec);
            rc = pct_pad(c, &b, tmp.p ? tmp.p : "", n, width, left);
            break;
        }
        case 'c': {
            char enc[4];
            size_t n;
            if (arg->t == XJ_STR && xd__jutf8_len(arg->u.s.p, arg->u.s.n) == 1) {
                rc = pct_pad(c, &b, arg->u.s.p, arg->u.s.n, width, left);
                break;
            }
            int64_t cp;
            if (need_int(c, arg, "%c requires int or char", &cp)) return c->err;
            if (cp < 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return xd__jerr(c, XD_E_TEMPLATE, "%%c arg not in range(0x110000)");
            n = xd_utf8_encode((uint32_t)cp, enc);
            rc = pct_pad(c, &b, enc, n, width, left);
            break;
        }
        case 'd':
        case 'i':
        case 'u':
        case 'o':
        case 'x':
        case 'X':
        case 'e':
        case 'E':
        case 'f':
        case 'F':
        case 'g':
        case 'G': {
            bool is_int_conv = strchr("diuoxX", conv) != NULL;
            if (arg->t != XJ_INT && arg->t != XJ_BOOL && arg->t != XJ_FLOAT)
                return xd__jerr(c, XD_E_TEMPLATE, "%%%c format: a %s is required, not %s", conv,
                                is_int_conv && conv != 'd' && conv != 'i' && conv != 'u'
                                    ? "integer"
                                    : "real number",
                                xd__jtype_name(arg));
            char spec[32], num[512];
            size_t k = 0;
            spec[k++] = '%';
            if (left) spec[k++] = '-';
            if (plus) spec[k++] = '+';
            if (space) spec[k++] = ' ';
            if (alt) spec[k++] = '#';
            if (zero && !left) spec[k++] = '0';
            spec[k++] = '*';
            int w = (int)(width < 0 ? 0 : width > 400 ? 400 : width);
            if (width > 400) return xd__jerr(c, XD_E_UNSUPPORTED, "format width over 400");
            if (is_int_conv) {
                int64_t iv;
                if (arg->t == XJ_FLOAT) {
                    if (conv != 'd' && conv != 'i' && conv != 'u')
                        return xd__jerr(c, XD_E_TEMPLATE,
                                        "%%%c format: an integer is required, not float", conv);
                    if (isnan(arg->u.d) || isinf(arg->u.d) || fabs(arg->u.d) >= 9.2e18)
                        return xd__jerr(c, XD_E_UNSUPPORTED, "cannot format this float as an int");
                    iv = (int64_t)arg->u.d;
                } else {
                    iv = arg->t == XJ_BOOL ? arg->u.b : arg->u.i;
                }
                if (prec > 400) return xd__jerr(c, XD_E_UNSUPPORTED, "format precision over 400");
                /* Python's %o/%x of a negative number: sign, then the magnitude */
                bool neg = iv < 0 && (conv == 'o' || conv == 'x' || conv == 'X');
                uint64_t mag = neg ? 0 - (uint64_t)iv : (uint64_t)iv;
                char c2 = conv == 'i' || conv == 'u' ? 'd' : conv;
                int p2 = prec < 0 ? 1 : (int)prec;
                if (neg || c2 != 'd') {
                    char digits[200];
                    const char *pre = alt ? (c2 == 'o'   ? "0o"
                                             : c2 == 'x' ? "0x"
                                             : c2 == 'X' ? "0X"
                                                         : "")
                                          : "";
                    snprintf(digits, sizeof digits,
                             c2 == 'o'   ? "%.*llo"
                             : c2 == 'x' ? "%.*llx"
                             : c2 == 'X' ? "%.*llX"
                                         : "%.*llu",
                             p2, (unsigned long long)mag);
                    const char *sign = neg ? "-" : plus ? "+" : space ? " " : "";
                    size_t body = strlen(sign) + strlen(pre) + strlen(digits);
                    size_t fill = (size_t)w > body ? (size_t)w - body : 0;
                    size_t o = 0;
                    if (!left && !zero)
                        while (fill && o < sizeof num - 1) num[o++] = ' ', fill--;
                    o += (size_t)snprintf(num + o, sizeof num - o, "%s%s", sign, pre);
                    if (!left && zero)
                        while (fill && o < sizeof num - 1) num[o++] = '0', fill--;
                    o += (size_t)snprintf(num + o, sizeof num - o, "%s", digits);
                    while (left && fill && o < sizeof num - 1) num[o++] = ' ', fill--;
                    num[o] = '\0';
                } else {
                    /* C ignores the 0 flag when a precision is given, as Python does */
                    if (prec >= 0) {
                        spec[k++] = '.';
                        spec[k++] = '*';
                    }
                    spec[k++] = 'l';
                    spec[k++] = 'l';
                    spec[k++] = 'd';
                    spec[k] = '\0';
                    if (prec >= 0)
                        snprintf(num, sizeof num, spec, w, p2, (long long)iv);
                    else
                        snprintf(num, sizeof num, spec, w, (long long)iv);
                }
            } else {
                double d = arg->t == XJ_FLOAT ? arg->u.d
                                              : (double)(arg->t == XJ_BOOL ? arg->u.b : arg->u.i);
                if (prec > 300) return xd__jerr(c, XD_E_UNSUPPORTED, "format precision over 300");
                if (fabs(d) >= 1e50 && (conv == 'f' || conv == 'F'))
                    return xd__jerr(c, XD_E_UNSUPPORTED, "%%f of a number this large");
                spec[k++] = '.';
                spec[k++] = '*';
                spec[k++] = conv;
                spec[k] = '\0';
                snprintf(num, sizeof num, spec, w, prec < 0 ? 6 : (int)prec, d);
            }
            rc = xd__jbuf_put(c, &b, num, strlen(num));
            break;
        }
        default:
            return xd__jerr(c, XD_E_TEMPLATE, "unsupported format character '%c' (0x%x)", conv,
                            (unsigned char)conv);
        }
    }
    if (rc) return rc;
    bool leftover = pa.single ? !pa.used_single : pa.next < pa.n;
    if (leftover && !pa.mapping)
        return xd__jerr(c, XD_E_TEMPLATE, "not all arguments converted during string formatting");
    *out = xd__jv_str(b.p ? b.p : "", b.n);
    return 0;
}

/* ---- filters ----------------------------------------------------------------------------------
 */
#define FILTER(name)                                                                               \
    static int f_##name(struct xd__jctx *c, const struct xd__jval *in, const struct xd__jargs *a,  \
                        struct xd__jval *out)

static int iterate_in(struct xd__jctx *c, const struct xd__jval *in, struct xd__jlist *out) {
    return xd__jiterate(c, in, out);
}

FILTER(tojson) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    struct xd__jval v[4];
    bool g[4];
    if (bind(c, "tojson", a, names, 4, v, g)) return c->err;
    struct xd__jjson_opts o = {.ensure_ascii = arg_true(&v[0], g[0], false),
                               .sort_keys = arg_true(&v[3], g[3], false)};
    char spaces[64];
    if (g[1] && v[1].t != XJ_NONE) {
        if (v[1].t == XJ_STR) {
            o.indent = v[1].u.s.p;
            o.indent_n = v[1].u.s.n;
        } else {
            int64_t k = 0;
            if (need_int(c, &v[1], "indent", &k)) return c->err;
            if (k > 60) return xd__jerr(c, XD_E_UNSUPPORTED, "tojson indent over 60");
            if (k < 0) k = 0;
            memset(spaces, ' ', (size_t)k);
            o.indent = spaces;
            o.indent_n = (size_t)k;
        }
    }
    o.item_sep = o.indent ? xd__js(",") : xd__js(", ");
    o.key_sep = xd__js(": ");
    if (g[2] && v[2].t != XJ_NONE) {
        if (v[2].t != XJ_LIST || v[2].u.l->n != 2 || v[2].u.l->v[0].t != XJ_STR ||
            v[2].u.l->v[1].t != XJ_STR)
            return xd__jerr(c, XD_E_TEMPLATE, "tojson separators must be a pair of strings");
        o.item_sep = v[2].u.l->v[0].u.s;
        o.key_sep = v[2].u.l->v[1].u.s;
    }
    struct xd__jbuf b = {0};
    int rc = xd__jto_json(c, &b, in, &o);
    if (!rc) *out = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

FILTER(length) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "length takes no arguments");
    int64_t n = 0;
    int rc = len_of(c, in, &n);
    if (!rc) *out = xd__jv_int(n);
    return rc;
}

FILTER(string) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "string takes no arguments");
    return soft_str(c, in, out);
}

FILTER(trim) {
    static const char *const names[] = {"chars"};
    struct xd__jval v[1], s;
    bool g[1];
    if (bind(c, "trim", a, names, 1, v, g) || soft_str(c, in, &s)) return c->err;
    return do_strip(c, s.u.s, &v[0], g[0], 3, out, s.f & XJ_F_SAFE);
}

static int case_filter(struct xd__jctx *c, const struct xd__jval *in, const struct xd__jargs *a,
                       struct xd__jval *out, enum xd__jcasemode m, const char *fname) {
    struct xd__jval s = {0};
    if (no_args(c, a, fname) || soft_str(c, in, &s)) return c->err;
    return change_case(c, s.u.s, m, out);
}
FILTER(upper) { return case_filter(c, in, a, out, XJ_CM_UPPER, "upper"); }
FILTER(lower) { return case_filter(c, in, a, out, XJ_CM_LOWER, "lower"); }
FILTER(capitalize) { return case_filter(c, in, a, out, XJ_CM_CAPITALIZE, "capitalize"); }

/* Jinja's title: split on runs of [-\s({[<] (keeping them), then piece[0].upper() +
 * piece[1:].lower() for every piece. */
FILTER(title) {
    struct xd__jval s = {0};
    if (no_args(c, a, "title") || soft_str(c, in, &s)) return c->err;
    struct xd__jstr t = s.u.s;
    int rc = xd__jcharge(c, t.n);
    struct xd__jbuf b = {0};
    for (size_t i = 0; !rc && i < t.n;) {
        /* one piece: a run of separators, or a run of anything else */
        size_t j = i, first_end = i;
        bool sep_run = false;
        for (bool first = true; j < t.n; first = false) {
            size_t k = j;
            uint32_t cp = xd__jutf8_next(t.p, t.n, &k);
            bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' ||
                       xd__jpy_isspace(cp);
            if (first)
                sep_run = sep;
            else if (sep != sep_run)
                break;
            if (first) first_end = k;
            j = k;
        }
        struct xd__jval head, tail;
        rc = change_case(c, (struct xd__jstr){t.p + i, first_end - i}, XJ_CM_UPPER, &head);
        if (!rc)
            rc = change_case(c, (struct xd__jstr){t.p + first_end, j - first_end}, XJ_CM_LOWER,
                             &tail);
        if (!rc) rc = xd__jbuf_put(c, &b, head.u.s.p, head.u.s.n);
        if (!rc) rc = xd__jbuf_put(c, &b, tail.u.s.p, tail.u.s.n);
        i = j;
    }
    if (!rc) *out = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

FILTER(default) {
    static const char *const names[] = {"default_value", "boolean"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, "default", a, names, 2, v, g)) return c->err;
    bool use = in->t == XJ_UNDEF || (arg_true(&v[1], g[1], false) && !xd__jtruthy(in));
    *out = use ? (g[0] ? v[0] : xd__jv_str("", 0)) : *in;
    return 0;
}

FILTER(items) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "items takes no arguments");
    if (in->t == XJ_UNDEF) return xd__jlist_new(c, 0, false, out);
    if (in->t != XJ_DICT)
        return xd__jerr(c, XD_E_TEMPLATE, "Can only get item pairs from a mapping.");
    struct xd__jargs none = {0};
    return m_items(c, in, &none, out);
}

FILTER(list) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "list takes no arguments");
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (!rc) rc = xd__jlist_new(c, l.n, false, out);
    if (!rc && l.n) memcpy(out->u.l->v, l.v, l.n * sizeof *l.v);
    return rc;
}

FILTER(join) {
    static const char *const names[] = {"d", "attribute"};
    struct xd__jval v[2], sep;
    bool g[2];
    if (bind(c, "join", a, names, 2, v, g)) return c->err;
    if (!g[0]) v[0] = xd__jv_str("", 0);
    struct xd__jlist l = {0};
    int rc = soft_str(c, &v[0], &sep);
    if (!rc) rc = iterate_in(c, in, &l);
    struct xd__jbuf b = {0};
    for (size_t k = 0; !rc && k < l.n; k++) {
        struct xd__jval item = l.v[k];
        if (g[1] && v[1].t != XJ_NONE) rc = sort_key(c, &l.v[k], &v[1], false, &item);
        if (!rc && k) rc = xd__jbuf_put(c, &b, sep.u.s.p, sep.u.s.n);
        if (!rc) rc = xd__jto_str(c, &b, &item);
    }
    if (!rc) *out = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

FILTER(first) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "first takes no arguments");
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (!rc) *out = l.n ? l.v[0] : xd__jv_undef_msg("No first item, sequence was empty.");
    return rc;
}

FILTER(last) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "last takes no arguments");
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (!rc) *out = l.n ? l.v[l.n - 1] : xd__jv_undef_msg("No last item, sequence was empty.");
    return rc;
}

FILTER(reverse) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "reverse takes no arguments");
    if (in->t == XJ_STR) {
        struct xd__jval none = xd__jv_none(), step = xd__jv_int(-1);
        return xd__jslice(c, in, &none, &none, &step, out);
    }
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (!rc) rc = xd__jlist_new(c, l.n, false, out);
    for (size_t k = 0; !rc && k < l.n; k++) out->u.l->v[k] = l.v[l.n - 1 - k];
    return rc;
}

FILTER(safe) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "safe takes no arguments");
    int rc = soft_str(c, in, out);
    out->f |= XJ_F_SAFE;
    return rc;
}

static int escape_to(struct xd__jctx *c, const struct xd__jval *in, bool force,
                     struct xd__jval *out) {
    if (in->t == XJ_STR && (in->f & XJ_F_SAFE) && !force) {
        *out = *in;
        return 0;
    }
    struct xd__jval s = {0};
    int rc = soft_str(c, in, &s);
    struct xd__jbuf b = {0};
    for (size_t i = 0; !rc && i < s.u.s.n; i++) {
        switch (s.u.s.p[i]) {
        case '&': rc = xd__jbuf_put(c, &b, "&amp;", 5); break;
        case '<': rc = xd__jbuf_put(c, &b, "&lt;", 4); break;
        case '>': rc = xd__jbuf_put(c, &b, "&gt;", 4); break;
        case '\'': rc = xd__jbuf_put(c, &b, "&#39;", 5); break;
        case '"': rc = xd__jbuf_put(c, &b, "&#34;", 5); break;
        default: rc = xd__jbuf_putc(c, &b, s.u.s.p[i]);
        }
    }
    if (!rc) {
        *out = xd__jv_str(b.p ? b.p : "", b.n);
        out->f = XJ_F_SAFE;
    }
    return rc;
}
FILTER(escape) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "escape takes no arguments");
    return escape_to(c, in, false, out);
}
FILTER(forceescape) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "forceescape takes no arguments");
    return escape_to(c, in, true, out);
}

FILTER(replace) {
    static const char *const names[] = {"old", "new", "count"};
    struct xd__jval v[3], s, o, n;
    bool g[3];
    if (bind(c, "replace", a, names, 3, v, g)) return c->err;
    if (!g[0] || !g[1]) return xd__jerr(c, XD_E_TEMPLATE, "replace needs old and new");
    int64_t count = -1;
    if (g[2] && v[2].t != XJ_NONE && need_int(c, &v[2], "count", &count)) return c->err;
    if (soft_str(c, in, &s) || soft_str(c, &v[0], &o) || soft_str(c, &v[1], &n)) return c->err;
    return do_replace(c, s.u.s, o.u.s, n.u.s, count, out);
}

/* Python int(str, base): whitespace, sign, digits with single underscores. */
static bool parse_int(struct xd__jstr s, int base, int64_t *out) {
    size_t i = 0, n = s.n;
    while (i < n && xd__jpy_isspace((unsigned char)s.p[i])) i++;
    while (n > i && xd__jpy_isspace((unsigned char)s.p[n - 1])) n--;
    bool neg = false;
    if (i < n && (s.p[i] == '+' || s.p[i] == '-')) neg = s.p[i++] == '-';
    if (i + 1 < n && s.p[i] == '0') {
        char x = s.p[i + 1] | 0x20;
        if ((x == 'x' && base == 16) || (x == 'o' && base == 8) || (x == 'b' && base == 2)) {
            i += 2;
            if (i < n && s.p[i] == '_') i++;
        }
    }
    if (i >= n) return false;
    uint64_t v = 0;
    bool prev_us = true;
    for (; i < n; i++) {
        char ch = s.p[i];
        if (ch == '_') {
            if (prev_us) return false;
            prev_us = true;
            continue;
        }
        int d = ch >= '0' && ch <= '9'                     ? ch - '0'
                : (ch | 0x20) >= 'a' && (ch | 0x20) <= 'z' ? (ch | 0x20) - 'a' + 10
                                                           : 99;
        if (d >= base) return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return false;
        v = v * (uint64_t)base + (uint64_t)d;
        prev_us = false;
    }
    if (prev_us) return false;
    if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0)) return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* Python float(str) for the forms templates meet. */
static bool parse_float(struct xd__jstr s, double *out) {
    char buf[128];
    size_t k = 0;
    size_t i = 0, n = s.n;
    while (i < n && xd__jpy_isspace((unsigned char)s.p[i])) i++;
    while (n > i && xd__jpy_isspace((unsigned char)s.p[n - 1])) n--;
    if (i >= n || n - i >= sizeof buf) return false;
    for (; i < n; i++) {
        char ch = s.p[i];
        if (ch == '_') continue;
        if (!((ch >= '0' && ch <= '9') || ch == '.' || ch == 'e' || ch == 'E' || ch == '+' ||
              ch == '-' || (ch | 0x20) == 'i' || (ch | 0x20) == 'n' || (ch | 0x20) == 'f' ||
              (ch | 0x20) == 'a' || (ch | 0x20) == 't' || (ch | 0x20) == 'y'))
            return false;
        buf[k++] = ch;
    }
    buf[k] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (*end || end == buf) return false;
    *out = d;
    return true;
}

FILTER(int) {
    static const char *const names[] = {"default", "base"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, "int", a, names, 2, v, g)) return c->err;
    int64_t base = 10, r;
    if (g[1] && need_int(c, &v[1], "base", &base)) return c->err;
    struct xd__jval def = g[0] ? v[0] : xd__jv_int(0);
    if (in->t == XJ_UNDEF) return xd__jerr_undef(c, in); /* float(Undefined) raises */
    switch (in->t) {
    case XJ_INT: *out = *in; return 0;
    case XJ_BOOL: *out = xd__jv_int(in->u.b); return 0;
    case XJ_FLOAT:
        if (isnan(in->u.d)) break;
        if (isinf(in->u.d) || fabs(in->u.d) >= 9.2e18)
            return xd__jerr(c, XD_E_UNSUPPORTED, "cannot convert float to a 64-bit integer");
        *out = xd__jv_int((int64_t)in->u.d);
        return 0;
    case XJ_STR:
        if (base >= 2 && base <= 36 && parse_int(in->u.s, (int)base, &r)) {
            *out = xd__jv_int(r);
            return 0;
        }
        double d;
        if (parse_float(in->u.s, &d) && !isnan(d)) {
            if (isinf(d) || fabs(d) >= 9.2e18)
                return xd__jerr(c, XD_E_UNSUPPORTED, "cannot convert %s to a 64-bit integer",
                                isinf(d) ? "infinity" : "a float this large");
            *out = xd__jv_int((int64_t)d);
            return 0;
        }
        break;
    default: break;
    }
    *out = def;
    return 0;
}

FILTER(float) {
    static const char *const names[] = {"default"};
    struct xd__jval v[1];
    bool g[1];
    if (bind(c, "float", a, names, 1, v, g)) return c->err;
    if (in->t == XJ_UNDEF) return xd__jerr_undef(c, in);
    double d;
    switch (in->t) {
    case XJ_FLOAT: *out = *in; return 0;
    case XJ_INT: *out = xd__jv_float((double)in->u.i); return 0;
    case XJ_BOOL: *out = xd__jv_float(in->u.b); return 0;
    case XJ_STR:
        if (parse_float(in->u.s, &d)) {
            *out = xd__jv_float(d);
            return 0;
        }
        break;
    default: break;
    }
    *out = g[0] ? v[0] : xd__jv_float(0.0);
    return 0;
}

FILTER(abs) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "abs takes no arguments");
    if (in->t == XJ_FLOAT)
        *out = xd__jv_float(fabs(in->u.d));
    else if (in->t == XJ_INT || in->t == XJ_BOOL) {
        int64_t v = in->t == XJ_BOOL ? in->u.b : in->u.i;
        if (v == INT64_MIN) return xd__jerr(c, XD_E_UNSUPPORTED, "integer overflow");
        *out = xd__jv_int(v < 0 ? -v : v);
    } else
        return xd__jerr(c, XD_E_TEMPLATE, "bad operand type for abs(): '%s'", xd__jtype_name(in));
    return 0;
}

FILTER(round) {
    static const char *const names[] = {"precision", "method"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, "round", a, names, 2, v, g)) return c->err;
    int64_t prec = 0;
    if (g[0] && need_int(c, &v[0], "precision", &prec)) return c->err;
    const char *method = "common";
    if (g[1]) {
        if (need_str(c, &v[1], "method")) return c->err;
        if (xd__jstr_eq(v[1].u.s, "ceil"))
            method = "ceil";
        else if (xd__jstr_eq(v[1].u.s, "floor"))
            method = "floor";
        else if (!xd__jstr_eq(v[1].u.s, "common"))
            return xd__jerr(c, XD_E_TEMPLATE, "method must be common, ceil or floor");
    }
    if (in->t != XJ_FLOAT && in->t != XJ_INT && in->t != XJ_BOOL)
        return xd__jerr(c, XD_E_TEMPLATE, "type %s doesn't define __round__ method",
                        xd__jtype_name(in));
    if (prec > 300 || prec < -300) return xd__jerr(c, XD_E_UNSUPPORTED, "round() precision");
    double x = in->t == XJ_FLOAT ? in->u.d : (double)(in->t == XJ_BOOL ? in->u.b : in->u.i);
    double p10 = pow(10.0, (double)prec);
    if (method[0] != 'c' || method[1] != 'o') { /* ceil / floor: math.f(x * 10**p) / 10**p */
        double r = method[0] == 'c' ? ceil(x * p10) : floor(x * p10);
        *out = xd__jv_float(r / p10);
        return 0;
    }
    if (in->t != XJ_FLOAT && prec >= 0) { /* round(int, n) is the int */
        *out = xd__jv_int(in->t == XJ_BOOL ? in->u.b : in->u.i);
        return 0;
    }
    if (isnan(x) || isinf(x)) {
        *out = xd__jv_float(x);
        return 0;
    }
    double r;
    if (prec >= 0) { /* correctly rounded, half to even on the exact value, as CPython does */
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
        r = strtod(buf, NULL);
    } else {
        r = nearbyint(x / pow(10.0, (double)-prec)) * pow(10.0, (double)-prec);
    }
    *out = in->t == XJ_FLOAT ? xd__jv_float(r) : xd__jv_int((int64_t)r);
    return 0;
}

FILTER(indent) {
    static const char *const names[] = {"width", "first", "blank"};
    struct xd__jval v[3], s;
    bool g[3];
    if (bind(c, "indent", a, names, 3, v, g)) return c->err;
    /* Jinja starts with s += "\n", so anything but a string fails there */
    if (in->t == XJ_UNDEF) return xd__jerr_undef(c, in);
    if (in->t != XJ_STR)
        return xd__jerr(c, XD_E_TEMPLATE, "unsupported operand type(s) for +=: '%s' and 'str'",
                        xd__jtype_name(in));
    s = *in;
    struct xd__jstr ind = {"    ", 4};
    char spaces[256];
    if (g[0]) {
        if (v[0].t == XJ_STR)
            ind = v[0].u.s;
        else {
            int64_t w = 0;
            if (need_int(c, &v[0], "width", &w)) return c->err;
            if (w > 255) return xd__jerr(c, XD_E_UNSUPPORTED, "indent width over 255");
            if (w < 0) w = 0;
            memset(spaces, ' ', (size_t)w);
            ind = (struct xd__jstr){spaces, (size_t)w};
        }
    }
    bool first = arg_true(&v[1], g[1], false), blank = arg_true(&v[2], g[2], false);
    /* s += "\n", then splitlines: every line, the last one always complete */
    struct xd__jbuf tmp = {0};
    int rc = xd__jbuf_put(c, &tmp, s.u.s.p, s.u.s.n);
    if (!rc) rc = xd__jbuf_putc(c, &tmp, '\n');
    struct xd__jlist lines = {0};
    if (!rc) rc = do_splitlines(c, xd__jbuf_str(&tmp), false, &lines);
    if (rc) return rc;
    struct xd__jbuf b = {0};
    if (first) rc = xd__jbuf_put(c, &b, ind.p, ind.n);
    for (size_t k = 0; !rc && k < lines.n; k++) {
        struct xd__jstr line = lines.v[k].u.s;
        if (k) {
            rc = xd__jbuf_putc(c, &b, '\n');
            if (!rc && (blank || line.n)) rc = xd__jbuf_put(c, &b, ind.p, ind.n);
        }
        if (!rc) rc = xd__jbuf_put(c, &b, line.p, line.n);
    }
    if (!rc) *out = xd__jv_str(b.p ? b.p : "", b.n);
    return rc;
}

FILTER(center) {
    static const char *const names[] = {"width"};
    struct xd__jval v[1], s;
    bool g[1];
    if (bind(c, "center", a, names, 1, v, g) || soft_str(c, in, &s)) return c->err;
    struct xd__jval w = g[0] ? v[0] : xd__jv_int(80);
    struct xd__jargs pa = {&w, 1, NULL, NULL, 0};
    return pad(c, &s, &pa, out, 0, "center");
}

FILTER(wordcount) {
    struct xd__jval s = {0};
    if (no_args(c, a, "wordcount") || soft_str(c, in, &s)) return c->err;
    int64_t n = 0;
    bool inword = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp = xd__jutf8_next(s.u.s.p, s.u.s.n, &i);
        bool w = cp == '_' ||
                 (xd__jpy_flags(cp) & (XJ_U_ALPHA | XJ_U_DECIMAL | XJ_U_DIGIT | XJ_U_NUMERIC));
        if (w && !inword) n++;
        inword = w;
    }
    *out = xd__jv_int(n);
    return xd__jcharge(c, s.u.s.n);
}

FILTER(sort) {
    static const char *const names[] = {"reverse", "case_sensitive", "attribute"};
    struct xd__jval v[3];
    bool g[3];
    if (bind(c, "sort", a, names, 3, v, g)) return c->err;
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (rc) return rc;
    struct xd__jval *keys = l.n ? xd__jalloc(c, l.n * sizeof *keys) : NULL;
    if (l.n && !keys) return c->err;
    bool fold = !arg_true(&v[1], g[1], false);
    for (size_t k = 0; !rc && k < l.n; k++)
        rc = sort_key(c, &l.v[k], g[2] ? &v[2] : NULL, fold, &keys[k]);
    if (!rc) rc = sorted_list(c, &l, keys, arg_true(&v[0], g[0], false), out);
    return rc;
}

FILTER(dictsort) {
    static const char *const names[] = {"case_sensitive", "by", "reverse"};
    struct xd__jval v[3];
    bool g[3];
    if (bind(c, "dictsort", a, names, 3, v, g)) return c->err;
    if (in->t != XJ_DICT) return xd__jerr(c, XD_E_TEMPLATE, "dictsort needs a mapping");
    int pos = 0;
    if (g[1]) {
        if (need_str(c, &v[1], "by")) return c->err;
        if (xd__jstr_eq(v[1].u.s, "value"))
            pos = 1;
        else if (!xd__jstr_eq(v[1].u.s, "key"))
            return xd__jerr(c, XD_E_TEMPLATE, "You can only sort by either \"key\" or \"value\"");
    }
    struct xd__jval pairs = {0};
    struct xd__jargs none = {0};
    int rc = m_items(c, in, &none, &pairs);
    if (rc) return rc;
    struct xd__jlist l = *pairs.u.l;
    struct xd__jval *keys = l.n ? xd__jalloc(c, l.n * sizeof *keys) : NULL;
    if (l.n && !keys) return c->err;
    bool fold = !arg_true(&v[0], g[0], false);
    for (size_t k = 0; !rc && k < l.n; k++)
        rc = lower_if_str(c, &l.v[k].u.l->v[pos], fold, &keys[k]);
    if (!rc) rc = sorted_list(c, &l, keys, arg_true(&v[2], g[2], false), out);
    return rc;
}

FILTER(unique) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, "unique", a, names, 2, v, g)) return c->err;
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (rc) return rc;
    struct xd__jval *keys = l.n ? xd__jalloc(c, l.n * sizeof *keys) : NULL;
    struct xd__jval *kept = l.n ? xd__jalloc(c, l.n * sizeof *kept) : NULL;
    if (l.n && (!keys || !kept)) return c->err;
    bool fold = !arg_true(&v[0], g[0], false);
    size_t nk = 0;
    rc = xd__jcharge(c, l.n * l.n);
    for (size_t k = 0; !rc && k < l.n; k++) {
        struct xd__jval key = {0};
        rc = sort_key(c, &l.v[k], g[1] ? &v[1] : NULL, fold, &key);
        bool seen = false;
        for (size_t j = 0; !rc && !seen && j < nk; j++) rc = xd__jeq(c, &keys[j], &key, &seen);
        if (!rc && !seen) {
            keys[nk] = key;
            kept[nk++] = l.v[k];
        }
    }
    if (!rc) rc = xd__jlist_new(c, nk, false, out);
    if (!rc && nk) memcpy(out->u.l->v, kept, nk * sizeof *kept);
    return rc;
}

static int min_max(struct xd__jctx *c, const struct xd__jval *in, const struct xd__jargs *a,
                   struct xd__jval *out, bool want_max) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, want_max ? "max" : "min", a, names, 2, v, g)) return c->err;
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (rc) return rc;
    if (!l.n) {
        *out = xd__jv_undef_msg("No aggregated item, sequence was empty.");
        return 0;
    }
    bool fold = !arg_true(&v[0], g[0], false);
    struct xd__jval best = {0};
    rc = sort_key(c, &l.v[0], g[1] ? &v[1] : NULL, fold, &best);
    size_t bi = 0;
    for (size_t k = 1; !rc && k < l.n; k++) {
        struct xd__jval key = {0};
        int cmp;
        rc = sort_key(c, &l.v[k], g[1] ? &v[1] : NULL, fold, &key);
        if (!rc) rc = xd__jcmp(c, &key, &best, &cmp);
        if (!rc && cmp != 2 && (want_max ? cmp > 0 : cmp < 0)) {
            best = key;
            bi = k;
        }
    }
    if (!rc) *out = l.v[bi];
    return rc;
}
FILTER(min) { return min_max(c, in, a, out, false); }
FILTER(max) { return min_max(c, in, a, out, true); }

FILTER(sum) {
    static const char *const names[] = {"attribute", "start"};
    struct xd__jval v[2];
    bool g[2];
    if (bind(c, "sum", a, names, 2, v, g)) return c->err;
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    struct xd__jval acc = g[1] ? v[1] : xd__jv_int(0);
    for (size_t k = 0; !rc && k < l.n; k++) {
        struct xd__jval item = {0};
        rc = sort_key(c, &l.v[k], g[0] ? &v[0] : NULL, false, &item);
        if (rc) break;
        bool ai = acc.t == XJ_INT || acc.t == XJ_BOOL, ii = item.t == XJ_INT || item.t == XJ_BOOL;
        if ((ai || acc.t == XJ_FLOAT) && (ii || item.t == XJ_FLOAT)) {
            if (ai && ii) {
                int64_t x = acc.t == XJ_BOOL ? acc.u.b : acc.u.i,
                        y = item.t == XJ_BOOL ? item.u.b : item.u.i, r;
                if (__builtin_add_overflow(x, y, &r))
                    return xd__jerr(c, XD_E_UNSUPPORTED, "integer overflow");
                acc = xd__jv_int(r);
            } else {
                double x =
                    acc.t == XJ_FLOAT ? acc.u.d : (double)(acc.t == XJ_BOOL ? acc.u.b : acc.u.i);
                double y = item.t == XJ_FLOAT ? item.u.d
                                              : (double)(item.t == XJ_BOOL ? item.u.b : item.u.i);
                acc = xd__jv_float(x + y);
            }
        } else {
            return xd__jerr(c, XD_E_TEMPLATE, "unsupported operand type(s) for +: '%s' and '%s'",
                            xd__jtype_name(&acc), xd__jtype_name(&item));
        }
    }
    if (!rc) *out = acc;
    return rc;
}

/* Jinja's format filter: soft_str(value) % (kwargs or args). */
FILTER(format) {
    if (a->npos && a->nkw)
        return xd__jerr(c, XD_E_TEMPLATE,
                        "can't handle positional and keyword arguments at the same time");
    struct xd__jval s, args;
    int rc = soft_str(c, in, &s);
    if (!rc && a->nkw) {
        struct xd__jdict *d = xd__jalloc(c, sizeof *d);
        if (!d) return c->err;
        d->k = xd__jalloc(c, a->nkw * sizeof *d->k);
        d->v = xd__jalloc(c, a->nkw * sizeof *d->v);
        if (!d->k || !d->v) return c->err;
        for (size_t k = 0; k < a->nkw; k++) {
            d->k[k] = xd__jv_str(a->kwn[k].p, a->kwn[k].n);
            d->v[k] = a->kw[k];
        }
        d->n = a->nkw;
        args = (struct xd__jval){.t = XJ_DICT, .u.m = d};
    } else if (!rc) {
        rc = xd__jlist_new(c, a->npos, true, &args);
        if (!rc && a->npos) memcpy(args.u.l->v, a->pos, a->npos * sizeof *a->pos);
    }
    return rc ? rc : xd__jpercent(c, &s, &args, out);
}

FILTER(attr) {
    if (a->npos != 1 || a->nkw || need_str(c, &a->pos[0], "attr name"))
        return c->err ? c->err : xd__jerr(c, XD_E_TEMPLATE, "attr takes one argument");
    if (in->t == XJ_UNDEF) return xd__jerr_undef(c, in);
    return xd__jgetattr(c, in, a->pos[0].u.s, out);
}

static int call_test_named(struct xd__jctx *c, struct xd__jstr name, const struct xd__jval *v,
                           const struct xd__jargs *args, bool *out);

/* select / reject / selectattr / rejectattr */
static int select_common(struct xd__jctx *c, const struct xd__jval *in, const struct xd__jargs *a,
                         struct xd__jval *out, bool by_attr, bool keep) {
    size_t off = 0;
    struct xd__jval attr = xd__jv_none();
    if (!xd__jtruthy(in)) /* Jinja: "if value:" before anything else */
        return xd__jlist_new(c, 0, false, out);
    if (by_attr) {
        if (a->npos < 1) return xd__jerr(c, XD_E_TEMPLATE, "Missing parameter for attribute name");
        attr = a->pos[0];
        off = 1;
    }
    bool have_test = a->npos > off;
    struct xd__jstr tname = {0};
    if (have_test) {
        if (need_str(c, &a->pos[off], "test name")) return c->err;
        tname = a->pos[off].u.s;
        if (!xd__jfind_test(tname))
            return xd__jerr(c, XD_E_TEMPLATE, "no test named '%.*s'", (int)tname.n, tname.p);
    }
    struct xd__jargs targs = {a->pos + off + 1, have_test ? a->npos - off - 1 : 0, a->kwn, a->kw,
                              have_test ? a->nkw : 0};
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (rc) return rc;
    struct xd__jval *kept = l.n ? xd__jalloc(c, l.n * sizeof *kept) : NULL;
    if (l.n && !kept) return c->err;
    size_t nk = 0;
    for (size_t k = 0; !rc && k < l.n; k++) {
        struct xd__jval v = l.v[k];
        if (by_attr) rc = sort_key(c, &l.v[k], &attr, false, &v);
        bool r = false;
        if (!rc) {
            if (have_test)
                rc = call_test_named(c, tname, &v, &targs, &r);
            else
                r = xd__jtruthy(&v);
        }
        if (!rc && r == keep) kept[nk++] = l.v[k];
    }
    if (!rc) rc = xd__jlist_new(c, nk, false, out);
    if (!rc && nk) memcpy(out->u.l->v, kept, nk * sizeof *kept);
    return rc;
}
FILTER(select) { return select_common(c, in, a, out, false, true); }
FILTER(reject) { return select_common(c, in, a, out, false, false); }
FILTER(selectattr) { return select_common(c, in, a, out, true, true); }
FILTER(rejectattr) { return select_common(c, in, a, out, true, false); }

FILTER(map) {
    if (!xd__jtruthy(in)) return xd__jlist_new(c, 0, false, out); /* Jinja: "if value:" */
    struct xd__jlist l = {0};
    int rc = iterate_in(c, in, &l);
    if (rc) return rc;
    const struct xd__jfilter *fl = NULL;
    struct xd__jval attr = xd__jv_none(), def = xd__jv_none();
    struct xd__jargs fargs = {0};
    if (a->npos == 0) {
        bool have_attr = false;
        for (size_t k = 0; k < a->nkw; k++) {
            if (xd__jstr_eq(a->kwn[k], "attribute")) {
                attr = a->kw[k];
                have_attr = true;
            } else if (xd__jstr_eq(a->kwn[k], "default"))
                def = a->kw[k];
            else
                return xd__jerr(c, XD_E_TEMPLATE, "Unexpected keyword argument for map");
        }
        if (!have_attr) return xd__jerr(c, XD_E_TEMPLATE, "map requires a filter argument");
    } else {
        if (need_str(c, &a->pos[0], "filter name")) return c->err;
        fl = xd__jfind_filter(a->pos[0].u.s);
        if (!fl)
            return xd__jerr(c, XD_E_TEMPLATE, "no filter named '%.*s'", (int)a->pos[0].u.s.n,
                            a->pos[0].u.s.p);
        fargs = (struct xd__jargs){a->pos + 1, a->npos - 1, a->kwn, a->kw, a->nkw};
    }
    rc = xd__jlist_new(c, l.n, false, out);
    for (size_t k = 0; !rc && k < l.n; k++) {
        struct xd__jval r = {0};
        if (fl)
            rc = fl->fn(c, &l.v[k], &fargs, &r);
        else {
            rc = sort_key(c, &l.v[k], &attr, false, &r);
            if (!rc && r.t == XJ_UNDEF && def.t != XJ_NONE) r = def;
        }
        if (!rc) out->u.l->v[k] = r;
    }
    return rc;
}

#undef FILTER

static const struct xd__jfilter filters[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"center", f_center},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", f_forceescape},
    {"format", f_format},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

static const char *const unsupported_filters[] = {
    "batch",     "filesizeformat", "groupby",   "pprint", "random",   "slice",
    "striptags", "truncate",       "urlencode", "urlize", "wordwrap", "xmlattr",
};

const struct xd__jfilter *xd__jfind_filter(struct xd__jstr name) {
    for (size_t k = 0; k < N_OF(filters); k++)
        if (xd__jstr_eq(name, filters[k].name)) return &filters[k];
    return NULL;
}

bool xd__jfilter_unsupported(struct xd__jstr name) {
    for (size_t k = 0; k < N_OF(unsupported_filters); k++)
        if (xd__jstr_eq(name, unsupported_filters[k])) return true;
    return false;
}

/* ---- tests ------------------------------------------------------------------------------------
 */
#define TEST(name)                                                                                 \
    static int t_##name(struct xd__jctx *c, const struct xd__jval *in, const struct xd__jargs *a,  \
                        bool *out)

static int one_arg(struct xd__jctx *c, const struct xd__jargs *a, const char *tname) {
    if (a->npos != 1 || a->nkw)
        return xd__jerr(c, XD_E_TEMPLATE, "test '%s' takes one argument", tname);
    return 0;
}
static int zero_args(struct xd__jctx *c, const struct xd__jargs *a, const char *tname) {
    if (a->npos || a->nkw) return xd__jerr(c, XD_E_TEMPLATE, "test '%s' takes no arguments", tname);
    return 0;
}

#define TYPE_TEST(name, expr)                                                                      \
    TEST(name) {                                                                                   \
        if (zero_args(c, a, #name)) return c->err;                                                 \
        *out = (expr);                                                                             \
        return 0;                                                                                  \
    }
TYPE_TEST(defined, in->t != XJ_UNDEF)
TYPE_TEST(undefined, in->t == XJ_UNDEF)
TYPE_TEST(none, in->t == XJ_NONE)
TYPE_TEST(boolean, in->t == XJ_BOOL)
TYPE_TEST(isfalse, in->t == XJ_BOOL && !in->u.b)
TYPE_TEST(istrue, in->t == XJ_BOOL && in->u.b)
TYPE_TEST(integer, in->t == XJ_INT)
TYPE_TEST(float, in->t == XJ_FLOAT)
TYPE_TEST(number, in->t == XJ_INT || in->t == XJ_BOOL || in->t == XJ_FLOAT)
TYPE_TEST(string, in->t == XJ_STR)
TYPE_TEST(mapping, in->t == XJ_DICT)
TYPE_TEST(iterable, in->t == XJ_STR || in->t == XJ_LIST || in->t == XJ_DICT || in->t == XJ_UNDEF ||
                        in->t == XJ_LOOP)
TYPE_TEST(sequence, in->t == XJ_STR || in->t == XJ_LIST || in->t == XJ_DICT || in->t == XJ_UNDEF)
TYPE_TEST(callable, in->t == XJ_MACRO || in->t == XJ_FUNC || in->t == XJ_METHOD ||
                        in->t == XJ_UNDEF || in->t == XJ_LOOP)
TYPE_TEST(escaped, in->t == XJ_STR && (in->f & XJ_F_SAFE))
#undef TYPE_TEST

TEST(lower) {
    if (zero_args(c, a, "lower")) return c->err;
    struct xd__jval s = {0};
    return soft_str(c, in, &s) ? c->err : str_pred(c, s.u.s, P_LOWER, out);
}
TEST(upper) {
    if (zero_args(c, a, "upper")) return c->err;
    struct xd__jval s = {0};
    return soft_str(c, in, &s) ? c->err : str_pred(c, s.u.s, P_UPPER, out);
}

static int num_mod(struct xd__jctx *c, const struct xd__jval *v, int64_t m, int64_t *r,
                   bool *is_zero_f) {
    if (v->t == XJ_INT || v->t == XJ_BOOL) {
        int64_t x = v->t == XJ_BOOL ? v->u.b : v->u.i;
        int64_t q = x % m;
        if (q != 0 && ((q < 0) != (m < 0))) q += m;
        *r = q;
        *is_zero_f = false;
        return 0;
    }
    if (v->t == XJ_FLOAT) {
        double q = fmod(v->u.d, (double)m);
        if (q != 0 && ((q < 0) != (m < 0))) q += (double)m;
        *r = (int64_t)q;
        *is_zero_f = q == 0.0;
        if (q != floor(q)) *r = -99; /* no integer remainder */
        return 0;
    }
    if (v->t == XJ_UNDEF) return xd__jerr_undef(c, v);
    return xd__jerr(c, XD_E_TEMPLATE, "unsupported operand type(s) for %%: '%s' and 'int'",
                    xd__jtype_name(v));
}

TEST(odd) {
    int64_t r = 0;
    bool z = false;
    if (zero_args(c, a, "odd") || num_mod(c, in, 2, &r, &z)) return c->err;
    *out = r == 1;
    return 0;
}
TEST(even) {
    int64_t r = 0;
    bool z = false;
    if (zero_args(c, a, "even") || num_mod(c, in, 2, &r, &z)) return c->err;
    *out = r == 0;
    return 0;
}
TEST(divisibleby) {
    int64_t m = 0, r = 0;
    bool z = false;
    if (one_arg(c, a, "divisibleby") || need_int(c, &a->pos[0], "divisor", &m)) return c->err;
    if (m == 0) return xd__jerr(c, XD_E_TEMPLATE, "integer division or modulo by zero");
    if (num_mod(c, in, m, &r, &z)) return c->err;
    *out = r == 0;
    return 0;
}

TEST(eq) {
    if (one_arg(c, a, "eq")) return c->err;
    return xd__jeq(c, in, &a->pos[0], out);
}
TEST(ne) {
    if (one_arg(c, a, "ne") || xd__jeq(c, in, &a->pos[0], out)) return c->err;
    *out = !*out;
    return 0;
}

static int order_test(struct xd__jctx *c, const struct xd__jval *in, const struct xd__jargs *a,
                      bool *out, int want) {
    if (one_arg(c, a, "comparison")) return c->err;
    if (in->t == XJ_UNDEF) return xd__jerr_undef(c, in);
    if (a->pos[0].t == XJ_UNDEF) return xd__jerr_undef(c, &a->pos[0]);
    int cmp;
    if (xd__jcmp(c, in, &a->pos[0], &cmp)) return c->err;
    switch (want) {
    case 0: *out = cmp < 0; break;
    case 1: *out = cmp <= 0; break;
    case 2: *out = cmp > 0 && cmp != 2; break;
    default: *out = cmp >= 0 && cmp != 2; break;
    }
    return 0;
}
TEST(lt) { return order_test(c, in, a, out, 0); }
TEST(le) { return order_test(c, in, a, out, 1); }
TEST(gt) { return order_test(c, in, a, out, 2); }
TEST(ge) { return order_test(c, in, a, out, 3); }

TEST(in) {
    if (one_arg(c, a, "in")) return c->err;
    const struct xd__jval *box = &a->pos[0];
    *out = false;
    switch (box->t) {
    case XJ_STR:
        if (in->t != XJ_STR)
            return xd__jerr(c, XD_E_TEMPLATE, "'in <string>' requires string as left operand");
        *out = in->u.s.n == 0 || memmem(box->u.s.p, box->u.s.n, in->u.s.p, in->u.s.n);
        return xd__jcharge(c, box->u.s.n);
    case XJ_LIST:
        for (size_t k = 0; k < box->u.l->n && !*out; k++)
            if (xd__jeq(c, in, &box->u.l->v[k], out)) return c->err;
        return 0;
    case XJ_DICT: *out = xd__jdict_get(box->u.m, in) != NULL; return 0;
    case XJ_UNDEF: return 0;
    default:
        return xd__jerr(c, XD_E_TEMPLATE, "argument of type '%s' is not iterable",
                        xd__jtype_name(box));
    }
}

TEST(sameas) {
    if (one_arg(c, a, "sameas")) return c->err;
    const struct xd__jval *b = &a->pos[0];
    bool r = in->t == b->t;
    if (r) switch (in->t) {
        case XJ_NONE: break;
        case XJ_UNDEF: r = false; break;
        case XJ_BOOL: r = in->u.b == b->u.b; break;
        case XJ_INT: r = in->u.i == b->u.i && in->u.i >= -5 && in->u.i <= 256; break;
        case XJ_FLOAT: r = false; break;
        case XJ_STR: r = in->u.s.p == b->u.s.p && in->u.s.n == b->u.s.n; break;
        case XJ_LIST: r = in->u.l == b->u.l; break;
        case XJ_DICT: r = in->u.m == b->u.m; break;
        case XJ_NS: r = in->u.ns == b->u.ns; break;
        default: r = false;
        }
    *out = r;
    return 0;
}

TEST(filter) {
    if (zero_args(c, a, "filter")) return c->err;
    *out = in->t == XJ_STR && xd__jfind_filter(in->u.s) != NULL;
    return 0;
}
TEST(test) {
    if (zero_args(c, a, "test")) return c->err;
    *out = in->t == XJ_STR && xd__jfind_test(in->u.s) != NULL;
    return 0;
}

#undef TEST

static const struct xd__jtest tests[] = {
    {"!=", t_ne},
    {"<", t_lt},
    {"<=", t_le},
    {"==", t_eq},
    {">", t_gt},
    {">=", t_ge},
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"escaped", t_escaped},
    {"even", t_even},
    {"false", t_isfalse},
    {"filter", t_filter},
    {"float", t_float},
    {"ge", t_ge},
    {"greaterthan", t_gt},
    {"gt", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"lessthan", t_lt},
    {"lower", t_lower},
    {"lt", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_sequence},
    {"string", t_string},
    {"test", t_test},
    {"true", t_istrue},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

const struct xd__jtest *xd__jfind_test(struct xd__jstr name) {
    for (size_t k = 0; k < N_OF(tests); k++)
        if (xd__jstr_eq(name, tests[k].name)) return &tests[k];
    return NULL;
}

bool xd__jtest_unsupported(struct xd__jstr name) {
    (void)name;
    return false; /* every Jinja 3.1 builtin test is here */
}

static int call_test_named(struct xd__jctx *c, struct xd__jstr name, const struct xd__jval *v,
                           const struct xd__jargs *args, bool *out) {
    const struct xd__jtest *t = xd__jfind_test(name);
    if (!t) return xd__jerr(c, XD_E_TEMPLATE, "no test named '%.*s'", (int)name.n, name.p);
    return t->fn(c, v, args, out);
}
