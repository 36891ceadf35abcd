/* jinja_eval.c - render a parsed template: scopes, statements, expressions, macros, limits;
 * and the public entry points of jinja.h.
 *
 * A tree-walking interpreter over the read-only syntax tree. Scoping follows what Jinja2's
 * compiled code does, checked case by case against it: a for-loop body gets a fresh frame
 * every iteration (a {% set %} inside never leaks out, and never survives to the next
 * iteration), {% if %} makes no frame, a macro's frame hangs off the frame it was defined in
 * and sees that frame's names as they are at call time, {% with %} and block-like tags get a
 * frame of their own, and only namespace() objects carry values out of a loop. Lookups walk
 * the frames, then the render's variables, then the globals; a miss is an Undefined that
 * remembers the name for the error its use raises.
 *
 * Bounded work, each limit with its own message (see jinja.h): every node costs a step and
 * string/list work costs by size; loop iterations are counted over the whole render; the
 * recursion depth counts statements, expressions and macro calls, so a template recursing
 * through macros stops cleanly long before the C stack would; output and arena bytes are
 * capped where they are written. Not here: the filters, tests and methods (jinja_builtins.c).
 *
 * Trade-off: a for loop's "if" filter is applied to all items before the body runs (Jinja
 * interleaves them lazily); the two differ only when the filter reads a namespace the body
 * writes, which no known chat template does.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_impl.h"
#include "xd_error.h"

enum { XJ_BREAK = 1, XJ_CONTINUE = 2 }; /* positive returns of exec: loop control */

void xd_jinja_limits_default(struct xd_jinja_limits *lim) {
    *lim = (struct xd_jinja_limits){
        .max_source = 1u << 20,
        .max_nodes = 1000000,
        .max_nesting = 100,
        .max_output = 8u << 20,
        .max_memory = 128u << 20,
        .max_steps = 50000000,
        .max_loop_iters = 1000000,
        .max_depth = 500,
    };
}

/* ---- frames -------------------------------------------------------------------------------- */
static struct xd__jframe *frame_new(struct xd__jctx *c, struct xd__jframe *parent) {
    struct xd__jframe *f = xd__jalloc(c, sizeof *f);
    if (f) f->parent = parent;
    return f;
}

static int frame_set(struct xd__jctx *c, struct xd__jframe *f, struct xd__jstr name,
                     const struct xd__jval *v) {
    for (size_t i = 0; i < f->n; i++)
        if (xd__jstr_same(f->k[i], name)) {
            f->v[i] = *v;
            return 0;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct xd__jstr *k = xd__jalloc(c, cap * sizeof *k);
        struct xd__jval *nv = xd__jalloc(c, cap * sizeof *nv);
        if (!k || !nv) return c->err;
        if (f->n) {
            memcpy(k, f->k, f->n * sizeof *k);
            memcpy(nv, f->v, f->n * sizeof *nv);
        }
        f->k = k;
        f->v = nv;
        f->cap = cap;
    }
    f->k[f->n] = name;
    f->v[f->n] = *v;
    f->n++;
    return 0;
}

static struct xd__jval lookup(struct xd__jctx *c, const struct xd__jframe *f,
                              struct xd__jstr name) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i > 0; i--)
            if (xd__jstr_same(f->k[i - 1], name)) return f->v[i - 1];
    const struct xd__jval *v = xd__jdict_get_str(c->vars, name);
    if (v) return *v;
    struct xd__jval g = {0};
    if (xd__jglobal(name, &g)) return g;
    return xd__jv_undef_name(name);
}

/* ---- helpers ------------------------------------------------------------------------------- */
static int node_err(struct xd__jctx *c, const struct xd__jnode *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int node_err(struct xd__jctx *c, const struct xd__jnode *n, int code, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->line = n->line;
    return xd__jerr(c, code, "%s", msg);
}

static int enter(struct xd__jctx *c, const struct xd__jnode *n) {
    if (c->err) return c->err;
    c->line = n->line;
    if (++c->depth > c->lim->max_depth)
        return node_err(c, n, XD_E_TEMPLATE_LIMIT, "recursion depth limit (%u) exceeded",
                        c->lim->max_depth);
    return xd__jcharge(c, 0);
}

static int eval(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                struct xd__jval *out);
static int exec_body(struct xd__jctx *c, struct xd__jframe *f, struct xd__jnode *const *body,
                     uint32_t n);

/* ---- arithmetic ---------------------------------------------------------------------------- */
static bool is_intish(const struct xd__jval *v) { return v->t == XJ_INT || v->t == XJ_BOOL; }
static bool is_num(const struct xd__jval *v) { return is_intish(v) || v->t == XJ_FLOAT; }
static int64_t ival(const struct xd__jval *v) { return v->t == XJ_BOOL ? v->u.b : v->u.i; }
static double fval(const struct xd__jval *v) { return v->t == XJ_FLOAT ? v->u.d : (double)ival(v); }

static const char *op_text(uint8_t op) {
    switch (op) {
    case JO_ADD: return "+";
    case JO_SUB: return "-";
    case JO_MUL: return "*";
    case JO_DIV: return "/";
    case JO_FLOORDIV: return "//";
    case JO_MOD: return "%";
    case JO_POW: return "**";
    default: return "?";
    }
}

/* HTML-escape s the way markupsafe does (& < > ' "). */
static int html_escape(struct xd__jctx *c, struct xd__jbuf *b, struct xd__jstr s) {
    int rc = 0;
    for (size_t i = 0; !rc && i < s.n; i++) {
        switch (s.p[i]) {
        case '&': rc = xd__jbuf_put(c, b, "&amp;", 5); break;
        case '<': rc = xd__jbuf_put(c, b, "&lt;", 4); break;
        case '>': rc = xd__jbuf_put(c, b, "&gt;", 4); break;
        case '\'': rc = xd__jbuf_put(c, b, "&#39;", 5); break;
        case '"': rc = xd__jbuf_put(c, b, "&#34;", 5); break;
        default: rc = xd__jbuf_putc(c, b, s.p[i]);
        }
    }
    return rc;
}

static int str_add(struct xd__jctx *c, const struct xd__jval *a, const struct xd__jval *b,
                   struct xd__jval *out) {
    /* Markup + str escapes the str (and str + Markup, through Markup.__radd__). */
    bool safe = (a->f | b->f) & XJ_F_SAFE;
    int rc = xd__jcharge(c, a->u.s.n + b->u.s.n);
    if (rc) return rc;
    struct xd__jbuf buf = {0};
    const struct xd__jval *parts[2] = {a, b};
    for (int k = 0; !rc && k < 2; k++) {
        if (safe && !(parts[k]->f & XJ_F_SAFE))
            rc = html_escape(c, &buf, parts[k]->u.s);
        else
            rc = xd__jbuf_put(c, &buf, parts[k]->u.s.p, parts[k]->u.s.n);
    }
    if (rc) return rc;
    *out = xd__jv_str(buf.p ? buf.p : "", buf.n);
    if (safe) out->f = XJ_F_SAFE;
    return 0;
}

static int repeat(struct xd__jctx *c, const struct xd__jval *seq, int64_t times,
                  struct xd__jval *out) {
    size_t unit = seq->t == XJ_STR ? seq->u.s.n : seq->u.l->n;
    if (times <= 0 || unit == 0) {
        if (seq->t == XJ_STR)
            *out = xd__jv_str("", 0);
        else
            return xd__jlist_new(c, 0, seq->f & XJ_F_TUPLE, out);
        return 0;
    }
    if ((uint64_t)times > c->lim->max_memory / unit)
        return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "memory limit (%zu bytes) exceeded",
                        c->lim->max_memory);
    size_t total = unit * (size_t)times;
    int rc = xd__jcharge(c, seq->t == XJ_STR ? total : total * 16);
    if (rc) return rc;
    if (seq->t == XJ_STR) {
        char *p = xd__jalloc(c, total + 1);
        if (!p) return c->err;
        for (int64_t k = 0; k < times; k++) memcpy(p + (size_t)k * unit, seq->u.s.p, unit);
        *out = xd__jv_str(p, total);
        out->f = seq->f & XJ_F_SAFE; /* Markup * n is Markup */
        return 0;
    }
    rc = xd__jlist_new(c, total, seq->f & XJ_F_TUPLE, out);
    for (size_t k = 0; !rc && k < total; k++) out->u.l->v[k] = seq->u.l->v[k % unit];
    return rc;
}

/* CPython's float floor division and modulo (Objects/floatobject.c _float_div_mod). */
static void float_divmod(double vx, double wx, double *floordiv, double *mod) {
    double m = fmod(vx, wx);
    double div = (vx - m) / wx;
    if (m != 0.0) {
        if ((wx < 0) != (m < 0)) {
            m += wx;
            div -= 1.0;
        }
    } else {
        m = copysign(0.0, wx);
    }
    double fd;
    if (div != 0.0) {
        fd = floor(div);
        if (div - fd > 0.5) fd += 1.0;
    } else {
        fd = copysign(0.0, vx / wx);
    }
    *floordiv = fd;
    *mod = m;
}

static int arith(struct xd__jctx *c, const struct xd__jnode *n, uint8_t op,
                 const struct xd__jval *a, const struct xd__jval *b, struct xd__jval *out) {
    if (op == JO_MOD && a->t == XJ_STR) return xd__jpercent(c, a, b, out); /* any right side */
    if (a->t == XJ_UNDEF) return xd__jerr_undef(c, a);
    if (b->t == XJ_UNDEF) return xd__jerr_undef(c, b);
    if (is_num(a) && is_num(b)) {
        bool ints = is_intish(a) && is_intish(b);
        int64_t x = ints ? ival(a) : 0, y = ints ? ival(b) : 0, r;
        double dx = fval(a), dy = fval(b);
        switch (op) {
        case JO_ADD:
            if (!ints) break;
            if (__builtin_add_overflow(x, y, &r)) goto overflow;
            *out = xd__jv_int(r);
            return 0;
        case JO_SUB:
            if (!ints) break;
            if (__builtin_sub_overflow(x, y, &r)) goto overflow;
            *out = xd__jv_int(r);
            return 0;
        case JO_MUL:
            if (!ints) break;
            if (__builtin_mul_overflow(x, y, &r)) goto overflow;
            *out = xd__jv_int(r);
            return 0;
        case JO_DIV:
            if (dy == 0.0) return node_err(c, n, XD_E_TEMPLATE, "division by zero");
            *out = xd__jv_float(dx / dy);
            return 0;
        case JO_FLOORDIV:
        case JO_MOD:
            if (ints) {
                if (y == 0)
                    return node_err(c, n, XD_E_TEMPLATE, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) goto overflow;
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q -= 1;
                    m += y;
                }
                *out = xd__jv_int(op == JO_MOD ? m : q);
                return 0;
            }
            if (dy == 0.0) return node_err(c, n, XD_E_TEMPLATE, "float division by zero");
            double fd, fm;
            float_divmod(dx, dy, &fd, &fm);
            *out = xd__jv_float(op == JO_MOD ? fm : fd);
            return 0;
        case JO_POW:
            if (ints && y >= 0) {
                int64_t acc = 1, base = x;
                for (int64_t e = y; e > 0; e >>= 1) {
                    if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) goto overflow;
                    if (e > 1 && __builtin_mul_overflow(base, base, &base)) {
                        /* base overflows: the result does too unless the rest is trivial */
                        if (x == 0 || x == 1 || x == -1) break;
                        goto overflow;
                    }
                }
                if (x == -1) acc = (y & 1) ? -1 : 1;
                *out = xd__jv_int(acc);
                return 0;
            }
            if (dx == 0.0 && dy < 0)
                return node_err(c, n, XD_E_TEMPLATE, "0.0 cannot be raised to a negative power");
            if (dx < 0 && dy != floor(dy))
                return node_err(c, n, XD_E_UNSUPPORTED, "complex numbers are not supported");
            double r = pow(dx, dy);
            if (isinf(r) && !isinf(dx) && !isinf(dy)) /* CPython raises, it does not give inf */
                return node_err(c, n, XD_E_TEMPLATE, "(34, 'Numerical result out of range')");
            *out = xd__jv_float(r);
            return 0;
        default: break;
        }
        double d = op == JO_ADD ? dx + dy : op == JO_SUB ? dx - dy : dx * dy;
        *out = xd__jv_float(d);
        return 0;
    }
    if (op == JO_ADD && a->t == XJ_STR && b->t == XJ_STR) return str_add(c, a, b, out);
    if (op == JO_ADD && a->t == XJ_LIST && b->t == XJ_LIST &&
        (a->f & XJ_F_TUPLE) == (b->f & XJ_F_TUPLE)) {
        size_t na = a->u.l->n, nb = b->u.l->n;
        int rc = xd__jcharge(c, (na + nb) * 16);
        if (!rc) rc = xd__jlist_new(c, na + nb, a->f & XJ_F_TUPLE, out);
        if (rc) return rc;
        if (na) memcpy(out->u.l->v, a->u.l->v, na * sizeof *a->u.l->v);
        if (nb) memcpy(out->u.l->v + na, b->u.l->v, nb * sizeof *b->u.l->v);
        return 0;
    }
    if (op == JO_MUL && (a->t == XJ_STR || a->t == XJ_LIST) && is_intish(b))
        return repeat(c, a, ival(b), out);
    if (op == JO_MUL && (b->t == XJ_STR || b->t == XJ_LIST) && is_intish(a))
        return repeat(c, b, ival(a), out);
    if (op == JO_ADD && a->t == XJ_STR)
        return node_err(c, n, XD_E_TEMPLATE, "can only concatenate str (not \"%s\") to str",
                        xd__jtype_name(b));
    return node_err(c, n, XD_E_TEMPLATE, "unsupported operand type(s) for %s: '%s' and '%s'",
                    op_text(op), xd__jtype_name(a), xd__jtype_name(b));
overflow:
    return node_err(c, n, XD_E_UNSUPPORTED, "integer overflow (ints are 64-bit here)");
}

static bool hashable(const struct xd__jval *v, unsigned depth);

/* Python's "item in container". */
static int contains(struct xd__jctx *c, const struct xd__jnode *n, const struct xd__jval *item,
                    const struct xd__jval *box, bool *out) {
    *out = false;
    switch (box->t) {
    case XJ_STR: {
        if (item->t != XJ_STR)
            return node_err(c, n, XD_E_TEMPLATE,
                            "'in <string>' requires string as left operand, not %s",
                            xd__jtype_name(item));
        int rc = xd__jcharge(c, box->u.s.n);
        if (rc) return rc;
        *out = item->u.s.n == 0 || memmem(box->u.s.p, box->u.s.n, item->u.s.p, item->u.s.n) != NULL;
        return 0;
    }
    case XJ_LIST:
        for (size_t i = 0; i < box->u.l->n; i++) {
            int rc = xd__jeq(c, item, &box->u.l->v[i], out);
            if (rc || *out) return rc;
        }
        return xd__jcharge(c, box->u.l->n);
    case XJ_DICT: {
        if (!hashable(item, 0))
            return node_err(c, n, XD_E_TEMPLATE, "unhashable type: '%s'", xd__jtype_name(item));
        int rc = xd__jcharge(c, box->u.m->n);
        *out = xd__jdict_get(box->u.m, item) != NULL;
        return rc;
    }
    case XJ_UNDEF: return 0;
    default:
        return node_err(c, n, XD_E_TEMPLATE, "argument of type '%s' is not iterable",
                        xd__jtype_name(box));
    }
}

static int compare(struct xd__jctx *c, const struct xd__jnode *n, uint8_t op,
                   const struct xd__jval *a, const struct xd__jval *b, bool *out) {
    switch (op) {
    case JO_EQ:
    case JO_NE: {
        int rc = xd__jeq(c, a, b, out);
        if (op == JO_NE) *out = !*out;
        return rc;
    }
    case JO_IN:
    case JO_NOTIN: {
        int rc = contains(c, n, a, b, out);
        if (op == JO_NOTIN) *out = !*out;
        return rc;
    }
    default: break;
    }
    if (a->t == XJ_UNDEF) return xd__jerr_undef(c, a);
    if (b->t == XJ_UNDEF) return xd__jerr_undef(c, b);
    int cmp;
    c->line = n->line;
    int rc = xd__jcmp(c, a, b, &cmp);
    if (rc) return rc;
    if (cmp == 2) { /* NaN: every ordering is false */
        *out = false;
        return 0;
    }
    switch (op) {
    case JO_LT: *out = cmp < 0; break;
    case JO_LTEQ: *out = cmp <= 0; break;
    case JO_GT: *out = cmp > 0; break;
    default: *out = cmp >= 0; break;
    }
    return 0;
}

/* ---- calls ------------------------------------------------------------------------------------
 */
#define XJ_MAX_ARGS 16

struct argv_buf {
    struct xd__jval pos[XJ_MAX_ARGS], kw[XJ_MAX_ARGS];
};

static int eval_args(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                     struct argv_buf *ab, struct xd__jargs *args) {
    if (n->n > XJ_MAX_ARGS || n->nw > XJ_MAX_ARGS)
        return node_err(c, n, XD_E_UNSUPPORTED, "more than %d arguments in one call", XJ_MAX_ARGS);
    for (uint32_t k = 0; k < n->n; k++) {
        int rc = eval(c, f, n->v[k], &ab->pos[k]);
        if (rc) return rc;
    }
    for (uint32_t k = 0; k < n->nw; k++) {
        int rc = eval(c, f, n->w[k], &ab->kw[k]);
        if (rc) return rc;
    }
    *args = (struct xd__jargs){ab->pos, n->n, n->names, ab->kw, n->nw};
    return 0;
}

static int call_macro(struct xd__jctx *c, const struct xd__jnode *call,
                      const struct xd__jmacro *mac, const struct xd__jargs *args,
                      struct xd__jval *out) {
    const struct xd__jnode *m = mac->node;
    struct xd__jframe *mf = frame_new(c, mac->frame);
    if (!mf) return c->err;
    uint32_t np = m->nnames;
    bool bound[XJ_MAX_ARGS * 4] = {0};
    if (np > sizeof bound / sizeof bound[0])
        return node_err(c, m, XD_E_UNSUPPORTED, "macro with more than %zu parameters",
                        sizeof bound / sizeof bound[0]);
    if (args->npos > np && !(m->flags & JN_F_VARARGS))
        return node_err(c, call, XD_E_TEMPLATE, "macro '%.*s' takes not more than %u argument(s)",
                        (int)m->s.n, m->s.p, np);
    int rc = 0;
    for (size_t k = 0; !rc && k < args->npos && k < np; k++) {
        rc = frame_set(c, mf, m->names[k], &args->pos[k]);
        bound[k] = true;
    }
    struct xd__jval kwargs = {0};
    if (m->flags & JN_F_KWARGS) {
        struct xd__jdict *d = xd__jalloc(c, sizeof *d);
        if (!d) return c->err;
        if (args->nkw) {
            d->k = xd__jalloc(c, args->nkw * sizeof *d->k);
            d->v = xd__jalloc(c, args->nkw * sizeof *d->v);
            if (!d->k || !d->v) return c->err;
        }
        kwargs = (struct xd__jval){.t = XJ_DICT, .u.m = d};
    }
    for (size_t k = 0; !rc && k < args->nkw; k++) {
        uint32_t p = 0;
        while (p < np && !xd__jstr_same(m->names[p], args->kwn[k])) p++;
        if (p < np) {
            if (bound[p])
                return node_err(c, call, XD_E_TEMPLATE,
                                "macro '%.*s' got multiple values for argument '%.*s'", (int)m->s.n,
                                m->s.p, (int)m->names[p].n, m->names[p].p);
            rc = frame_set(c, mf, m->names[p], &args->kw[k]);
            bound[p] = true;
        } else if (m->flags & JN_F_KWARGS) {
            struct xd__jdict *d = kwargs.u.m;
            d->k[d->n] = xd__jv_str(args->kwn[k].p, args->kwn[k].n);
            d->v[d->n++] = args->kw[k];
        } else {
            return node_err(c, call, XD_E_TEMPLATE, "macro '%.*s' takes no keyword argument '%.*s'",
                            (int)m->s.n, m->s.p, (int)args->kwn[k].n, args->kwn[k].p);
        }
    }
    for (uint32_t p = 0; !rc && p < np; p++) {
        if (bound[p]) continue;
        struct xd__jval v = {0};
        if (m->w[p]) {
            rc = eval(c, mf, m->w[p], &v);
        } else {
            v = xd__jv_undef_name(m->names[p]);
        }
        if (!rc) rc = frame_set(c, mf, m->names[p], &v);
    }
    if (!rc && (m->flags & JN_F_VARARGS)) {
        struct xd__jval va = {0};
        size_t extra = args->npos > np ? args->npos - np : 0;
        rc = xd__jlist_new(c, extra, true, &va);
        for (size_t k = 0; !rc && k < extra; k++) va.u.l->v[k] = args->pos[np + k];
        if (!rc) rc = frame_set(c, mf, xd__js("varargs"), &va);
    }
    if (!rc && (m->flags & JN_F_KWARGS)) rc = frame_set(c, mf, xd__js("kwargs"), &kwargs);
    if (rc) return rc;
    struct xd__jbuf buf = {0}, *saved = c->out;
    c->out = &buf;
    rc = exec_body(c, mf, m->v, m->n);
    c->out = saved;
    if (rc < 0) return rc;
    *out = xd__jv_str(buf.p ? buf.p : "", buf.n);
    return 0;
}

static __attribute__((noinline)) int eval_call(struct xd__jctx *c, struct xd__jframe *f,
                                               const struct xd__jnode *n, struct xd__jval *out) {
    struct xd__jval fn = {0};
    int rc = eval(c, f, n->a, &fn);
    if (rc) return rc;
    struct argv_buf ab;
    struct xd__jargs args;
    rc = eval_args(c, f, n, &ab, &args);
    if (rc) return rc;
    c->line = n->line;
    switch (fn.t) {
    case XJ_MACRO: return call_macro(c, n, fn.u.mac, &args, out);
    case XJ_FUNC:
    case XJ_METHOD: return xd__jcall_builtin(c, &fn, &args, out);
    case XJ_UNDEF: return xd__jerr_undef(c, &fn);
    case XJ_LOOP:
        return node_err(c, n, XD_E_UNSUPPORTED, "recursive loop() calls are not supported");
    default:
        return node_err(c, n, XD_E_TEMPLATE, "'%s' object is not callable", xd__jtype_name(&fn));
    }
}

/* Apply filter node fl to in (fl->a already evaluated by the caller, or NULL in a block). */
static __attribute__((noinline)) int apply_filter(struct xd__jctx *c, struct xd__jframe *f,
                                                  const struct xd__jnode *fl,
                                                  const struct xd__jval *in, struct xd__jval *out) {
    struct argv_buf ab;
    struct xd__jargs args;
    int rc = eval_args(c, f, fl, &ab, &args);
    if (rc) return rc;
    c->line = fl->line;
    return ((const struct xd__jfilter *)fl->fn)->fn(c, in, &args, out);
}

static __attribute__((noinline)) int apply_test(struct xd__jctx *c, struct xd__jframe *f,
                                                const struct xd__jnode *t,
                                                const struct xd__jval *in, bool *out) {
    struct argv_buf ab;
    struct xd__jargs args;
    int rc = eval_args(c, f, t, &ab, &args);
    if (rc) return rc;
    c->line = t->line;
    return ((const struct xd__jtest *)t->fn)->fn(c, in, &args, out);
}

/* ---- expressions --------------------------------------------------------------------------- */
static int eval_seq(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                    struct xd__jval *out) {
    int rc = xd__jlist_new(c, n->n, n->kind == JN_TUPLE, out);
    for (uint32_t k = 0; !rc && k < n->n; k++) rc = eval(c, f, n->v[k], &out->u.l->v[k]);
    return rc;
}

/* Whether v can be a dict key (tuples nested past 64 levels count as not hashable). */
static bool hashable(const struct xd__jval *v, unsigned depth) {
    if (v->t == XJ_DICT || v->t == XJ_NS || depth > 64) return false;
    if (v->t == XJ_LIST) {
        if (!(v->f & XJ_F_TUPLE)) return false;
        for (size_t i = 0; i < v->u.l->n; i++)
            if (!hashable(&v->u.l->v[i], depth + 1)) return false;
    }
    return true;
}

static int eval_dict(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                     struct xd__jval *out) {
    struct xd__jdict *d = xd__jalloc(c, sizeof *d);
    if (!d) return c->err;
    if (n->n) {
        d->k = xd__jalloc(c, n->n * sizeof *d->k);
        d->v = xd__jalloc(c, n->n * sizeof *d->v);
        if (!d->k || !d->v) return c->err;
    }
    for (uint32_t k = 0; k < n->n; k++) {
        struct xd__jval key, val;
        int rc = eval(c, f, n->v[k], &key);
        if (!rc) rc = eval(c, f, n->w[k], &val);
        if (rc) return rc;
        if (!hashable(&key, 0))
            return node_err(c, n, XD_E_TEMPLATE, "unhashable type: '%s'", xd__jtype_name(&key));
        struct xd__jval *have = (struct xd__jval *)xd__jdict_get(d, &key);
        if (have) {
            *have = val; /* a repeated key keeps its first place, takes the last value */
        } else {
            d->k[d->n] = key;
            d->v[d->n++] = val;
        }
    }
    *out = (struct xd__jval){.t = XJ_DICT, .u.m = d};
    return 0;
}

static int eval_concat(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                       struct xd__jval *out) {
    struct xd__jbuf b = {0};
    for (uint32_t k = 0; k < n->n; k++) {
        struct xd__jval v = {0};
        int rc = eval(c, f, n->v[k], &v);
        if (!rc) rc = xd__jto_str(c, &b, &v);
        if (rc) return rc;
    }
    *out = xd__jv_str(b.p ? b.p : "", b.n);
    return 0;
}

static int eval_getitem(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                        struct xd__jval *out) {
    struct xd__jval obj = {0};
    int rc = eval(c, f, n->a, &obj);
    if (rc) return rc;
    if (n->b->kind == JN_SLICE) {
        struct xd__jval part[3];
        const struct xd__jnode *src[3] = {n->b->a, n->b->b, n->b->c};
        for (int k = 0; k < 3; k++) {
            part[k] = xd__jv_none();
            if (src[k] && (rc = eval(c, f, src[k], &part[k]))) return rc;
        }
        c->line = n->line;
        return xd__jslice(c, &obj, &part[0], &part[1], &part[2], out);
    }
    struct xd__jval key = {0};
    rc = eval(c, f, n->b, &key);
    if (rc) return rc;
    c->line = n->line;
    return xd__jgetitem(c, &obj, &key, out);
}

static int eval(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                struct xd__jval *out) {
    int rc = enter(c, n);
    if (rc) return rc;
    struct xd__jval a, b;
    bool t;
    switch (n->kind) {
    case JN_CONST: *out = n->val; break;
    case JN_NAME: *out = lookup(c, f, n->s); break;
    case JN_GETATTR:
        rc = eval(c, f, n->a, &a);
        if (!rc) {
            c->line = n->line;
            rc = xd__jgetattr(c, &a, n->s, out);
        }
        break;
    case JN_GETITEM: rc = eval_getitem(c, f, n, out); break;
    case JN_CALL: rc = eval_call(c, f, n, out); break;
    case JN_FILTER:
        rc = eval(c, f, n->a, &a);
        if (!rc) rc = apply_filter(c, f, n, &a, out);
        break;
    case JN_TEST:
        rc = eval(c, f, n->a, &a);
        if (!rc) rc = apply_test(c, f, n, &a, &t);
        if (!rc) *out = xd__jv_bool(t);
        break;
    case JN_BINOP:
        rc = eval(c, f, n->a, &a);
        if (!rc) rc = eval(c, f, n->b, &b);
        if (!rc) rc = arith(c, n, n->op, &a, &b, out);
        break;
    case JN_UNARY:
        rc = eval(c, f, n->a, &a);
        if (rc) break;
        if (a.t == XJ_UNDEF)
            rc = xd__jerr_undef(c, &a);
        else if (a.t == XJ_FLOAT)
            *out = xd__jv_float(n->op == JO_NEG ? -a.u.d : a.u.d);
        else if (is_intish(&a)) {
            if (n->op == JO_NEG && ival(&a) == INT64_MIN)
                rc = node_err(c, n, XD_E_UNSUPPORTED, "integer overflow");
            else
                *out = xd__jv_int(n->op == JO_NEG ? -ival(&a) : ival(&a));
        } else
            rc = node_err(c, n, XD_E_TEMPLATE, "bad operand type for unary %s: '%s'",
                          n->op == JO_NEG ? "-" : "+", xd__jtype_name(&a));
        break;
    case JN_COMPARE:
        rc = eval(c, f, n->a, &a);
        t = true;
        for (uint32_t k = 0; !rc && t && k < n->n; k++) {
            rc = eval(c, f, n->v[k]->a, &b);
            if (!rc) rc = compare(c, n->v[k], n->v[k]->op, &a, &b, &t);
            a = b;
        }
        if (!rc) *out = xd__jv_bool(t);
        break;
    case JN_AND:
    case JN_OR:
        rc = eval(c, f, n->a, &a);
        if (rc) break;
        if (xd__jtruthy(&a) == (n->kind == JN_OR))
            *out = a;
        else
            rc = eval(c, f, n->b, out);
        break;
    case JN_NOT:
        rc = eval(c, f, n->a, &a);
        if (!rc) *out = xd__jv_bool(!xd__jtruthy(&a));
        break;
    case JN_COND:
        rc = eval(c, f, n->a, &a);
        if (rc) break;
        if (xd__jtruthy(&a))
            rc = eval(c, f, n->b, out);
        else if (n->c)
            rc = eval(c, f, n->c, out);
        else
            *out = xd__jv_undef_msg("the inline if-expression evaluated to false and no else "
                                    "section was defined");
        break;
    case JN_CONCAT: rc = eval_concat(c, f, n, out); break;
    case JN_LIST:
    case JN_TUPLE: rc = eval_seq(c, f, n, out); break;
    case JN_DICT: rc = eval_dict(c, f, n, out); break;
    default: rc = node_err(c, n, XD_E_TEMPLATE, "this expression cannot be evaluated here");
    }
    c->depth--;
    return rc;
}

/* ---- statements ----------------------------------------------------------------------------- */
static int assign(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *target,
                  const struct xd__jval *v) {
    if (target->kind == JN_NAME) return frame_set(c, f, target->s, v);
    if (target->kind == JN_NSREF) {
        struct xd__jval ns = lookup(c, f, target->s);
        if (ns.t != XJ_NS)
            return node_err(c, target, XD_E_TEMPLATE,
                            "cannot assign attribute on non-namespace object");
        struct xd__jns *s = ns.u.ns;
        for (size_t i = 0; i < s->n; i++)
            if (xd__jstr_same(s->k[i], target->s2)) {
                s->v[i] = *v;
                return 0;
            }
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 8;
            struct xd__jstr *k = xd__jalloc(c, cap * sizeof *k);
            struct xd__jval *nv = xd__jalloc(c, cap * sizeof *nv);
            if (!k || !nv) return c->err;
            if (s->n) {
                memcpy(k, s->k, s->n * sizeof *k);
                memcpy(nv, s->v, s->n * sizeof *nv);
            }
            s->k = k;
            s->v = nv;
            s->cap = cap;
        }
        s->k[s->n] = target->s2;
        s->v[s->n++] = *v;
        return 0;
    }
    /* a tuple of targets: unpack */
    struct xd__jlist items = {0};
    c->line = target->line;
    if (v->t == XJ_UNDEF) return xd__jerr_undef(c, v);
    int rc = xd__jiterate(c, v, &items);
    if (rc) return rc;
    if (items.n != target->n)
        return node_err(c, target, XD_E_TEMPLATE,
                        items.n > target->n ? "too many values to unpack (expected %u)"
                                            : "not enough values to unpack (expected %u)",
                        target->n);
    for (uint32_t k = 0; !rc && k < target->n; k++) rc = assign(c, f, target->v[k], &items.v[k]);
    return rc;
}

static int count_iter(struct xd__jctx *c, const struct xd__jnode *n) {
    if (++c->iters > c->lim->max_loop_iters)
        return node_err(c, n, XD_E_TEMPLATE_LIMIT, "loop iteration limit (%" PRIu64 ") exceeded",
                        c->lim->max_loop_iters);
    return 0;
}

static int exec_for(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n) {
    struct xd__jval seq = {0};
    int rc = eval(c, f, n->b, &seq);
    if (rc) return rc;
    c->line = n->line;
    struct xd__jlist items = {0};
    rc = xd__jiterate(c, &seq, &items);
    if (rc) return rc;
    struct xd__jframe *lf = frame_new(c, f);
    if (!lf) return c->err;
    if (n->c) { /* for x in xs if cond: keep the items the condition accepts */
        struct xd__jval *kept = items.n ? xd__jalloc(c, items.n * sizeof *kept) : NULL;
        if (items.n && !kept) return c->err;
        size_t nk = 0;
        for (size_t i = 0; i < items.n; i++) {
            struct xd__jval cond = {0};
            lf->n = 0;
            if ((rc = count_iter(c, n)) || (rc = assign(c, lf, n->a, &items.v[i])) ||
                (rc = eval(c, lf, n->c, &cond)))
                return rc;
            if (xd__jtruthy(&cond)) kept[nk++] = items.v[i];
        }
        items.v = kept;
        items.n = nk;
    }
    if (items.n == 0) {
        if (!n->nw) return 0;
        struct xd__jframe *ef = frame_new(c, f);
        return ef ? exec_body(c, ef, n->w, n->nw) : c->err;
    }
    struct xd__jloop *loop = xd__jalloc(c, sizeof *loop);
    if (!loop) return c->err;
    loop->items = items.v;
    loop->n = items.n;
    struct xd__jval lv = {.t = XJ_LOOP, .u.loop = loop};
    for (size_t i = 0; i < items.n; i++) {
        loop->i = i;
        lf->n = 0; /* a fresh scope every iteration */
        if ((rc = count_iter(c, n)) || (rc = assign(c, lf, n->a, &items.v[i])) ||
            (rc = frame_set(c, lf, xd__js("loop"), &lv)))
            return rc;
        rc = exec_body(c, lf, n->v, n->n);
        if (rc == XJ_BREAK) break;
        if (rc < 0) return rc;
    }
    return 0;
}

/* Run body into a fresh buffer and return the text. */
static int capture(struct xd__jctx *c, struct xd__jframe *f, struct xd__jnode *const *body,
                   uint32_t n, struct xd__jval *out) {
    struct xd__jbuf buf = {0}, *saved = c->out;
    c->out = &buf;
    int rc = exec_body(c, f, body, n);
    c->out = saved;
    if (rc < 0) return rc;
    *out = xd__jv_str(buf.p ? buf.p : "", buf.n);
    return 0;
}

static int apply_chain(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n,
                       struct xd__jval *v) {
    for (uint32_t k = 0; k < n->nw; k++) {
        struct xd__jval next = {0};
        int rc = apply_filter(c, f, n->w[k], v, &next);
        if (rc) return rc;
        *v = next;
    }
    return 0;
}

static int exec_stmt(struct xd__jctx *c, struct xd__jframe *f, const struct xd__jnode *n) {
    int rc = enter(c, n);
    if (rc) return rc;
    struct xd__jval v = {0};
    switch (n->kind) {
    case JN_DATA:
        rc = xd__jcharge(c, n->s.n);
        if (!rc) rc = xd__jbuf_put(c, c->out, n->s.p, n->s.n);
        break;
    case JN_OUTPUT:
        rc = eval(c, f, n->a, &v);
        if (!rc) rc = xd__jto_str(c, c->out, &v);
        break;
    case JN_IF:
        rc = eval(c, f, n->a, &v);
        if (!rc) rc = xd__jtruthy(&v) ? exec_body(c, f, n->v, n->n) : exec_body(c, f, n->w, n->nw);
        break;
    case JN_FOR: rc = exec_for(c, f, n); break;
    case JN_SET:
        rc = eval(c, f, n->b, &v);
        if (!rc) rc = assign(c, f, n->a, &v);
        break;
    case JN_SETBLOCK:
        rc = capture(c, f, n->v, n->n, &v);
        if (!rc) rc = apply_chain(c, f, n, &v);
        if (!rc) rc = assign(c, f, n->a, &v);
        break;
    case JN_MACRO: {
        struct xd__jmacro *m = xd__jalloc(c, sizeof *m);
        if (!m) {
            rc = c->err;
            break;
        }
        m->node = n;
        m->frame = f;
        v = (struct xd__jval){.t = XJ_MACRO, .u.mac = m};
        rc = frame_set(c, f, n->s, &v);
        break;
    }
    case JN_FILTERBLOCK:
        rc = capture(c, f, n->v, n->n, &v);
        if (!rc) rc = apply_chain(c, f, n, &v);
        if (!rc) rc = xd__jto_str(c, c->out, &v);
        break;
    case JN_WITH: {
        struct xd__jframe *wf = frame_new(c, f);
        if (!wf) {
            rc = c->err;
            break;
        }
        for (uint32_t k = 0; !rc && k < n->nw; k++) {
            rc = eval(c, f, n->w[k]->b, &v); /* values see the outer scope */
            if (!rc) rc = assign(c, wf, n->w[k]->a, &v);
        }
        if (!rc) rc = exec_body(c, wf, n->v, n->n);
        break;
    }
    case JN_SCOPE: {
        struct xd__jframe *sf = frame_new(c, f);
        rc = sf ? exec_body(c, sf, n->v, n->n) : c->err;
        break;
    }
    case JN_BREAK: rc = XJ_BREAK; break;
    case JN_CONTINUE: rc = XJ_CONTINUE; break;
    default: rc = node_err(c, n, XD_E_TEMPLATE, "this statement cannot be executed here");
    }
    c->depth--;
    return rc;
}

static int exec_body(struct xd__jctx *c, struct xd__jframe *f, struct xd__jnode *const *body,
                     uint32_t n) {
    for (uint32_t k = 0; k < n; k++) {
        int rc = exec_stmt(c, f, body[k]);
        if (rc) return rc;
    }
    return 0;
}

/* ---- public API ----------------------------------------------------------------------------- */
int xd_jinja_parse(const char *src, size_t len, const struct xd_jinja_limits *lim,
                   struct xd_jinja_tpl **out, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    struct xd_jinja_limits def;
    if (!lim) {
        xd_jinja_limits_default(&def);
        lim = &def;
    }
    if (!src && len) {
        if (err && errlen) snprintf(err, errlen, "no template source");
        return XD_E_INVALID;
    }
    if (len > lim->max_source) {
        if (err && errlen)
            snprintf(err, errlen, "template is %zu bytes, over the limit of %zu", len,
                     lim->max_source);
        return XD_E_TEMPLATE_LIMIT;
    }
    struct xd_jinja_tpl *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->lim = *lim;
    /* tokens and nodes are bounded by max_nodes; the arena bound only stops a runaway */
    size_t cap = lim->max_nodes > SIZE_MAX / 512 ? SIZE_MAX : lim->max_nodes * 512;
    xd__jarena_init(&t->arena, cap + 64 * len + (1u << 20));
    struct xd__jstr norm = {0};
    struct xd__jtoken *toks = NULL;
    size_t ntoks = 0;
    int rc = xd__jinja_normalize(src ? src : "", len, &t->arena, &norm);
    if (rc && err && errlen) snprintf(err, errlen, "out of memory");
    if (!rc)
        rc = xd__jinja_lex(norm.p, norm.n, &t->arena, lim->max_nodes + 2, &toks, &ntoks, err,
                           errlen);
    if (!rc) rc = xd__jinja_parse_tokens(t, toks, ntoks, err, errlen);
    if (rc) {
        xd_jinja_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void xd_jinja_free(struct xd_jinja_tpl *t) {
    if (!t) return;
    xd__jarena_free(&t->arena);
    free(t);
}

int xd_jinja_render(const struct xd_jinja_tpl *t, const json_t *vars,
                    const struct xd_jinja_render_opts *opts, char **out, size_t *len, char *err,
                    size_t errlen) {
    *out = NULL;
    if (len) *len = 0;
    if (err && errlen) err[0] = '\0';
    const struct xd_jinja_limits *lim = opts && opts->limits ? opts->limits : &t->lim;
    struct xd__jctx c = {.lim = lim, .errbuf = err, .errlen = errlen, .line = 1};
    c.now = opts && opts->now ? opts->now : (int64_t)time(NULL);
    xd__jarena_init(&c.arena, lim->max_memory);
    struct xd__jdict empty = {0};
    c.vars = &empty;
    int rc = 0;
    if (vars) {
        struct xd__jval v = {0};
        if (!json_is_object(vars)) {
            rc = xd__jerr(&c, XD_E_INVALID, "template variables must be a JSON object");
        } else if (!(rc = xd__jfrom_json(&c, vars, &v))) {
            c.vars = v.u.m;
        }
    }
    struct xd__jframe *top = rc ? NULL : frame_new(&c, NULL);
    struct xd__jbuf buf = {0};
    if (!rc && !top) rc = c.err;
    if (!rc) {
        c.out = &buf;
        rc = exec_body(&c, top, t->body, t->n);
        if (rc > 0) rc = xd__jerr(&c, XD_E_TEMPLATE, "break or continue outside a loop");
    }
    if (!rc) {
        char *s = malloc(buf.n + 1);
        if (!s) {
            rc = -ENOMEM;
            if (err && errlen) snprintf(err, errlen, "out of memory");
        } else {
            if (buf.n) memcpy(s, buf.p, buf.n);
            s[buf.n] = '\0';
            *out = s;
            if (len) *len = buf.n;
        }
    }
    xd__jarena_free(&c.arena);
    return rc;
}

static bool uses_name(const struct xd__jnode *n, const char *name) {
    if (!n) return false;
    if (n->kind == JN_NAME && xd__jstr_eq(n->s, name)) return true;
    if (uses_name(n->a, name) || uses_name(n->b, name) || uses_name(n->c, name)) return true;
    for (uint32_t k = 0; k < n->n; k++)
        if (uses_name(n->v[k], name)) return true;
    for (uint32_t k = 0; k < n->nw; k++)
        if (uses_name(n->w[k], name)) return true;
    return false;
}

int xd_jinja_uses_name(const struct xd_jinja_tpl *t, const char *name) {
    for (uint32_t k = 0; k < t->n; k++)
        if (uses_name(t->body[k], name)) return 1;
    return 0;
}
