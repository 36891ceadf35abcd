/* jinja_parse.c - tokens to a syntax tree: Jinja2 3.1's parser (jinja2/parser.py), function
 * for function, so precedence and the odd corners match ("-2**2" is 4, "2**3**2" is 64,
 * "not x is defined" is "not (x is defined)", a filter binds tighter than "+", a test takes
 * one bare argument as in "x is divisibleby 3").
 *
 * The parser is pure: it reads the token array and writes nodes into the template's arena,
 * nothing else. It is bounded three ways, each with its own message: nodes (max_nodes),
 * statement plus bracket nesting while parsing (max_nesting), and the height of any expression
 * tree (so a 100000-term "1+1+...+1", which parses in a loop, cannot make the evaluator recurse
 * 100000 deep). Filter and test names are resolved here, as Jinja does at compile time: an
 * unknown one fails the load, and a real Jinja filter this interpreter lacks says so.
 *
 * Not supported (each an error naming it): {% call %}, {% include/import/from/extends %},
 * {% autoescape %}, recursive for loops, star-args and double-star-kwargs in calls.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "jinja_impl.h"
#include "xd_error.h"

/* No expression tree is taller than this; the evaluator's recursion follows it. */
#define XJ_MAX_EXPR_HEIGHT 200

struct parser {
    const struct xd__jtoken *t;
    size_t n, i;
    struct xd__jarena *a;
    size_t nodes, max_nodes;
    unsigned depth, max_depth;
    unsigned loop_depth; /* for break/continue */
    bool refs_varargs, refs_kwargs;
    const char *tag_stack[64]; /* open block tags, for "the innermost block" messages */
    unsigned ntags;
    char *err;
    size_t errlen;
    int rc;
};

struct vec {
    struct xd__jnode **v;
    uint32_t n, cap;
};

static int fail(struct parser *P, int code, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct parser *P, int code, uint32_t line, const char *fmt, ...) {
    if (P->rc) return P->rc;
    P->rc = code;
    if (P->err && P->errlen) {
        int k = snprintf(P->err, P->errlen, "line %u: ", (unsigned)line);
        if (k >= 0 && (size_t)k < P->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(P->err + k, P->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static int oom(struct parser *P) {
    return fail(P, XD_E_TEMPLATE_LIMIT, P->t[P->i].line, "template too large to parse");
}

static const struct xd__jtoken *cur(const struct parser *P) { return &P->t[P->i]; }
static const struct xd__jtoken *look(const struct parser *P) {
    return P->i + 1 < P->n ? &P->t[P->i + 1] : &P->t[P->n - 1];
}
static const struct xd__jtoken *advance(struct parser *P) {
    const struct xd__jtoken *t = &P->t[P->i];
    if (P->i + 1 < P->n) P->i++;
    return t;
}

static bool tok_name(const struct xd__jtoken *t, const char *name) {
    return t->type == JT_NAME && xd__jstr_eq(t->s, name);
}
static bool tok_op(const struct xd__jtoken *t, uint8_t op) {
    return t->type == JT_OP && t->op == op;
}

/* How Jinja describes a token in "expected X, got Y". */
static void describe(const struct xd__jtoken *t, char *buf, size_t n) {
    switch (t->type) {
    case JT_EOF: snprintf(buf, n, "end of template"); break;
    case JT_DATA: snprintf(buf, n, "template data"); break;
    case JT_VAR_BEGIN: snprintf(buf, n, "begin of print statement"); break;
    case JT_VAR_END: snprintf(buf, n, "end of print statement"); break;
    case JT_BLOCK_BEGIN: snprintf(buf, n, "begin of statement block"); break;
    case JT_BLOCK_END: snprintf(buf, n, "end of statement block"); break;
    case JT_STRING: snprintf(buf, n, "string"); break;
    case JT_INT: snprintf(buf, n, "integer"); break;
    case JT_FLOAT: snprintf(buf, n, "float"); break;
    default: snprintf(buf, n, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p); break;
    }
}

static int unexpected(struct parser *P, const char *expected) {
    char got[64];
    describe(cur(P), got, sizeof got);
    if (cur(P)->type == JT_EOF && P->ntags)
        return fail(P, XD_E_TEMPLATE, cur(P)->line,
                    "unexpected end of template, expected %s; the innermost open block is "
                    "'%s'",
                    expected, P->tag_stack[P->ntags - 1]);
    return fail(P, XD_E_TEMPLATE, cur(P)->line, "expected %s, got %s", expected, got);
}

static int expect_op(struct parser *P, uint8_t op, const char *what) {
    if (!tok_op(cur(P), op)) return unexpected(P, what);
    advance(P);
    return 0;
}

static int expect_type(struct parser *P, uint8_t type, const char *what) {
    if (cur(P)->type != type) return unexpected(P, what);
    advance(P);
    return 0;
}

static struct xd__jnode *node(struct parser *P, uint8_t kind, uint32_t line) {
    if (P->rc) return NULL;
    if (++P->nodes > P->max_nodes) {
        fail(P, XD_E_TEMPLATE_LIMIT, line, "template has too many nodes (limit %zu)", P->max_nodes);
        return NULL;
    }
    struct xd__jnode *nd = xd__jarena_alloc(P->a, sizeof *nd);
    if (!nd) {
        oom(P);
        return NULL;
    }
    nd->kind = kind;
    nd->line = line;
    return nd;
}

static int vec_push(struct parser *P, struct vec *v, struct xd__jnode *nd) {
    if (v->n == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 4;
        struct xd__jnode **nv = xd__jarena_alloc(P->a, cap * sizeof *nv);
        if (!nv) return oom(P);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = nd;
    return 0;
}

/* Height of an expression node from its children's; fails past XJ_MAX_EXPR_HEIGHT. */
static int seal(struct parser *P, struct xd__jnode *nd) {
    if (!nd) return P->rc ? P->rc : oom(P);
    unsigned h = 0;
    const struct xd__jnode *kids[3] = {nd->a, nd->b, nd->c};
    for (int k = 0; k < 3; k++)
        if (kids[k] && kids[k]->height > h) h = kids[k]->height;
    for (uint32_t k = 0; k < nd->n; k++)
        if (nd->v[k] && nd->v[k]->height > h) h = nd->v[k]->height;
    for (uint32_t k = 0; k < nd->nw; k++)
        if (nd->w[k] && nd->w[k]->height > h) h = nd->w[k]->height;
    h++;
    if (h > XJ_MAX_EXPR_HEIGHT)
        return fail(P, XD_E_TEMPLATE_LIMIT, nd->line,
                    "expression nested too deeply (limit %d levels)", XJ_MAX_EXPR_HEIGHT);
    nd->height = (uint16_t)h;
    return 0;
}

static int enter(struct parser *P) {
    if (++P->depth > P->max_depth)
        return fail(P, XD_E_TEMPLATE_LIMIT, cur(P)->line, "template nested too deeply (limit %u)",
                    P->max_depth);
    return 0;
}

/* ---- expressions --------------------------------------------------------------------------- */
static struct xd__jnode *parse_expression(struct parser *P, bool with_condexpr);
static struct xd__jnode *parse_tuple(struct parser *P, bool simplified, bool with_condexpr,
                                     const char *extra_end, bool explicit_parens);
static struct xd__jnode *parse_unary(struct parser *P, bool with_filter);
static struct xd__jnode *parse_primary(struct parser *P);
static struct xd__jnode *parse_postfix(struct parser *P, struct xd__jnode *nd);
static struct xd__jnode *parse_filter(struct parser *P, struct xd__jnode *nd, bool start_inline);

struct callargs {
    struct vec pos, kwv;
    struct xd__jstr *kwn;
    uint32_t nkw, kwcap;
};

static int parse_call_args(struct parser *P, struct callargs *ca) {
    memset(ca, 0, sizeof *ca);
    if (expect_op(P, JO_LPAREN, "'('")) return P->rc;
    bool need_comma = false;
    while (!tok_op(cur(P), JO_RPAREN)) {
        if (need_comma) {
            if (expect_op(P, JO_COMMA, "','")) return P->rc;
            if (tok_op(cur(P), JO_RPAREN)) break;
        }
        if (tok_op(cur(P), JO_MUL) || tok_op(cur(P), JO_POW))
            return fail(P, XD_E_UNSUPPORTED, cur(P)->line,
                        "*args and **kwargs in calls are not supported");
        if (cur(P)->type == JT_NAME && tok_op(look(P), JO_ASSIGN)) {
            struct xd__jstr key = advance(P)->s;
            advance(P);
            struct xd__jnode *val = parse_expression(P, true);
            if (!val) return P->rc;
            for (uint32_t k = 0; k < ca->nkw; k++)
                if (xd__jstr_same(ca->kwn[k], key))
                    return fail(P, XD_E_TEMPLATE, val->line, "keyword argument repeated");
            if (ca->nkw == ca->kwcap) {
                uint32_t cap = ca->kwcap ? ca->kwcap * 2 : 4;
                struct xd__jstr *nk = xd__jarena_alloc(P->a, cap * sizeof *nk);
                if (!nk) return oom(P);
                if (ca->nkw) memcpy(nk, ca->kwn, ca->nkw * sizeof *nk);
                ca->kwn = nk;
                ca->kwcap = cap;
            }
            ca->kwn[ca->nkw++] = key;
            if (vec_push(P, &ca->kwv, val)) return P->rc;
        } else {
            if (ca->nkw)
                return fail(P, XD_E_TEMPLATE, cur(P)->line,
                            "positional argument follows keyword argument");
            struct xd__jnode *val = parse_expression(P, true);
            if (!val || vec_push(P, &ca->pos, val)) return P->rc;
        }
        need_comma = true;
    }
    return expect_op(P, JO_RPAREN, "')'");
}

static void set_args(struct xd__jnode *nd, const struct callargs *ca) {
    nd->v = ca->pos.v;
    nd->n = ca->pos.n;
    nd->w = ca->kwv.v;
    nd->nw = ca->kwv.n;
    nd->names = ca->kwn;
    nd->nnames = ca->nkw;
}

/* a dotted name after '|' or 'is' */
static int parse_dotted(struct parser *P, struct xd__jstr *out) {
    if (cur(P)->type != JT_NAME) return unexpected(P, "name");
    struct xd__jstr s = advance(P)->s;
    while (tok_op(cur(P), JO_DOT)) {
        advance(P);
        if (cur(P)->type != JT_NAME) return unexpected(P, "name");
        struct xd__jstr part = advance(P)->s;
        char *buf = xd__jarena_alloc(P->a, s.n + 1 + part.n);
        if (!buf) return oom(P);
        memcpy(buf, s.p, s.n);
        buf[s.n] = '.';
        memcpy(buf + s.n + 1, part.p, part.n);
        s = (struct xd__jstr){buf, s.n + 1 + part.n};
    }
    *out = s;
    return 0;
}

static struct xd__jnode *parse_filter(struct parser *P, struct xd__jnode *nd, bool start_inline) {
    while (!P->rc && (tok_op(cur(P), JO_PIPE) || start_inline)) {
        if (!start_inline) advance(P);
        start_inline = false;
        uint32_t line = cur(P)->line;
        struct xd__jstr name = {0};
        if (parse_dotted(P, &name)) return NULL;
        const struct xd__jfilter *f = xd__jfind_filter(name);
        if (!f) {
            if (xd__jfilter_unsupported(name))
                fail(P, XD_E_UNSUPPORTED, line, "the filter '%.*s' is not supported", (int)name.n,
                     name.p);
            else
                fail(P, XD_E_TEMPLATE, line, "no filter named '%.*s'", (int)name.n, name.p);
            return NULL;
        }
        struct xd__jnode *fn = node(P, JN_FILTER, line);
        if (!fn) return NULL;
        fn->a = nd;
        fn->s = name;
        fn->fn = f;
        if (tok_op(cur(P), JO_LPAREN)) {
            struct callargs ca;
            if (parse_call_args(P, &ca)) return NULL;
            set_args(fn, &ca);
        }
        if (seal(P, fn)) return NULL;
        nd = fn;
    }
    return P->rc ? NULL : nd;
}

static struct xd__jnode *parse_test(struct parser *P, struct xd__jnode *nd) {
    uint32_t line = advance(P)->line; /* 'is' */
    bool negated = false;
    if (tok_name(cur(P), "not")) {
        advance(P);
        negated = true;
    }
    struct xd__jstr name = {0};
    if (parse_dotted(P, &name)) return NULL;
    const struct xd__jtest *t = xd__jfind_test(name);
    if (!t) {
        if (xd__jtest_unsupported(name))
            fail(P, XD_E_UNSUPPORTED, line, "the test '%.*s' is not supported", (int)name.n,
                 name.p);
        else
            fail(P, XD_E_TEMPLATE, line, "no test named '%.*s'", (int)name.n, name.p);
        return NULL;
    }
    struct xd__jnode *tn = node(P, JN_TEST, line);
    if (!tn) return NULL;
    tn->a = nd;
    tn->s = name;
    tn->fn = t;
    const struct xd__jtoken *c = cur(P);
    if (tok_op(c, JO_LPAREN)) {
        struct callargs ca;
        if (parse_call_args(P, &ca)) return NULL;
        set_args(tn, &ca);
    } else if ((c->type == JT_NAME || c->type == JT_STRING || c->type == JT_INT ||
                c->type == JT_FLOAT || tok_op(c, JO_LBRACKET) || tok_op(c, JO_LBRACE)) &&
               !tok_name(c, "else") && !tok_name(c, "or") && !tok_name(c, "and")) {
        if (tok_name(c, "is")) {
            fail(P, XD_E_TEMPLATE, c->line, "you cannot chain multiple tests with is");
            return NULL;
        }
        struct xd__jnode *arg = parse_primary(P);
        if (arg) arg = parse_postfix(P, arg);
        if (!arg) return NULL;
        tn->v = xd__jarena_alloc(P->a, sizeof *tn->v);
        if (!tn->v) {
            oom(P);
            return NULL;
        }
        tn->v[0] = arg;
        tn->n = 1;
    }
    if (seal(P, tn)) return NULL;
    if (negated) {
        struct xd__jnode *nn = node(P, JN_NOT, line);
        if (!nn) return NULL;
        nn->a = tn;
        if (seal(P, nn)) return NULL;
        return nn;
    }
    return tn;
}

static struct xd__jnode *parse_subscribed(struct parser *P) {
    uint32_t line = cur(P)->line;
    struct xd__jnode *args[3] = {NULL, NULL, NULL};
    if (tok_op(cur(P), JO_COLON)) {
        advance(P);
    } else {
        struct xd__jnode *e = parse_expression(P, true);
        if (!e) return NULL;
        if (!tok_op(cur(P), JO_COLON)) return e;
        advance(P);
        args[0] = e;
    }
    if (tok_op(cur(P), JO_COLON)) {
        /* args[1] stays NULL */
    } else if (!tok_op(cur(P), JO_RBRACKET) && !tok_op(cur(P), JO_COMMA)) {
        args[1] = parse_expression(P, true);
        if (!args[1]) return NULL;
    }
    if (tok_op(cur(P), JO_COLON)) {
        advance(P);
        if (!tok_op(cur(P), JO_RBRACKET) && !tok_op(cur(P), JO_COMMA)) {
            args[2] = parse_expression(P, true);
            if (!args[2]) return NULL;
        }
    }
    struct xd__jnode *sl = node(P, JN_SLICE, line);
    if (!sl) return NULL;
    sl->a = args[0];
    sl->b = args[1];
    sl->c = args[2];
    return seal(P, sl) ? NULL : sl;
}

static struct xd__jnode *parse_subscript(struct parser *P, struct xd__jnode *nd) {
    const struct xd__jtoken *tok = advance(P);
    if (tok->type == JT_OP && tok->op == JO_DOT) {
        const struct xd__jtoken *at = advance(P);
        if (at->type == JT_NAME) {
            struct xd__jnode *g = node(P, JN_GETATTR, tok->line);
            if (!g) return NULL;
            g->a = nd;
            g->s = at->s;
            return seal(P, g) ? NULL : g;
        }
        if (at->type != JT_INT) {
            fail(P, XD_E_TEMPLATE, at->line, "expected name or number after '.'");
            return NULL;
        }
        struct xd__jnode *k = node(P, JN_CONST, at->line);
        struct xd__jnode *g = node(P, JN_GETITEM, tok->line);
        if (!k || !g) return NULL;
        k->val = xd__jv_int(at->i);
        if (seal(P, k)) return NULL;
        g->a = nd;
        g->b = k;
        return seal(P, g) ? NULL : g;
    }
    /* '[' */
    struct vec args = {0};
    while (!tok_op(cur(P), JO_RBRACKET)) {
        if (args.n && expect_op(P, JO_COMMA, "','")) return NULL;
        struct xd__jnode *e = parse_subscribed(P);
        if (!e || vec_push(P, &args, e)) return NULL;
        if (cur(P)->type == JT_EOF) {
            unexpected(P, "']'");
            return NULL;
        }
    }
    advance(P);
    struct xd__jnode *key = args.n == 1 ? args.v[0] : NULL;
    if (args.n != 1) { /* x[a, b] is x[(a, b)], and x[] is x[()] */
        key = node(P, JN_TUPLE, tok->line);
        if (!key) return NULL;
        key->v = args.v;
        key->n = args.n;
        if (seal(P, key)) return NULL;
    }
    struct xd__jnode *g = node(P, JN_GETITEM, tok->line);
    if (!g) return NULL;
    g->a = nd;
    g->b = key;
    return seal(P, g) ? NULL : g;
}

static struct xd__jnode *parse_call(struct parser *P, struct xd__jnode *nd) {
    struct xd__jnode *cn = node(P, JN_CALL, cur(P)->line);
    if (!cn) return NULL;
    struct callargs ca;
    if (parse_call_args(P, &ca)) return NULL;
    cn->a = nd;
    set_args(cn, &ca);
    return seal(P, cn) ? NULL : cn;
}

static struct xd__jnode *parse_postfix(struct parser *P, struct xd__jnode *nd) {
    while (nd) {
        const struct xd__jtoken *t = cur(P);
        if (tok_op(t, JO_DOT) || tok_op(t, JO_LBRACKET))
            nd = parse_subscript(P, nd);
        else if (tok_op(t, JO_LPAREN))
            nd = parse_call(P, nd);
        else
            break;
    }
    return nd;
}

static struct xd__jnode *parse_filter_expr(struct parser *P, struct xd__jnode *nd) {
    while (nd) {
        const struct xd__jtoken *t = cur(P);
        if (tok_op(t, JO_PIPE))
            nd = parse_filter(P, nd, false);
        else if (tok_name(t, "is"))
            nd = parse_test(P, nd);
        else if (tok_op(t, JO_LPAREN))
            nd = parse_call(P, nd);
        else
            break;
    }
    return nd;
}

static struct xd__jnode *parse_list_or_dict(struct parser *P, bool dict) {
    uint32_t line = advance(P)->line;
    uint8_t close = dict ? JO_RBRACE : JO_RBRACKET;
    struct vec keys = {0}, vals = {0};
    while (!tok_op(cur(P), close)) {
        if (keys.n && expect_op(P, JO_COMMA, "','")) return NULL;
        if (tok_op(cur(P), close)) break;
        struct xd__jnode *k = parse_expression(P, true);
        if (!k || vec_push(P, &keys, k)) return NULL;
        if (dict) {
            if (expect_op(P, JO_COLON, "':'")) return NULL;
            struct xd__jnode *v = parse_expression(P, true);
            if (!v || vec_push(P, &vals, v)) return NULL;
        }
    }
    if (expect_op(P, close, dict ? "'}'" : "']'")) return NULL;
    struct xd__jnode *nd = node(P, dict ? JN_DICT : JN_LIST, line);
    if (!nd) return NULL;
    nd->v = keys.v;
    nd->n = keys.n;
    nd->w = vals.v;
    nd->nw = vals.n;
    return seal(P, nd) ? NULL : nd;
}

static struct xd__jnode *parse_primary(struct parser *P) {
    const struct xd__jtoken *t = cur(P);
    struct xd__jnode *nd;
    switch (t->type) {
    case JT_NAME:
        advance(P);
        nd = node(P, JN_CONST, t->line);
        if (!nd) return NULL;
        if (xd__jstr_eq(t->s, "true") || xd__jstr_eq(t->s, "True"))
            nd->val = xd__jv_bool(true);
        else if (xd__jstr_eq(t->s, "false") || xd__jstr_eq(t->s, "False"))
            nd->val = xd__jv_bool(false);
        else if (xd__jstr_eq(t->s, "none") || xd__jstr_eq(t->s, "None"))
            nd->val = xd__jv_none();
        else {
            nd->kind = JN_NAME;
            nd->s = t->s;
            if (xd__jstr_eq(t->s, "varargs")) P->refs_varargs = true;
            if (xd__jstr_eq(t->s, "kwargs")) P->refs_kwargs = true;
        }
        return seal(P, nd) ? NULL : nd;
    case JT_STRING: {
        advance(P);
        struct xd__jstr s = t->s;
        while (cur(P)->type == JT_STRING) { /* "a" "b" is "ab" */
            struct xd__jstr more = advance(P)->s;
            char *buf = xd__jarena_alloc(P->a, s.n + more.n + 1);
            if (!buf) {
                oom(P);
                return NULL;
            }
            memcpy(buf, s.p, s.n);
            memcpy(buf + s.n, more.p, more.n);
            s = (struct xd__jstr){buf, s.n + more.n};
        }
        nd = node(P, JN_CONST, t->line);
        if (!nd) return NULL;
        nd->val = xd__jv_str(s.p, s.n);
        return seal(P, nd) ? NULL : nd;
    }
    case JT_INT:
    case JT_FLOAT:
        advance(P);
        nd = node(P, JN_CONST, t->line);
        if (!nd) return NULL;
        nd->val = t->type == JT_INT ? xd__jv_int(t->i) : xd__jv_float(t->d);
        return seal(P, nd) ? NULL : nd;
    case JT_OP:
        if (t->op == JO_LPAREN) {
            advance(P);
            nd = parse_tuple(P, false, true, NULL, true);
            if (!nd || expect_op(P, JO_RPAREN, "')'")) return NULL;
            return nd;
        }
        if (t->op == JO_LBRACKET) return parse_list_or_dict(P, false);
        if (t->op == JO_LBRACE) return parse_list_or_dict(P, true);
        break;
    default: break;
    }
    char got[64];
    describe(t, got, sizeof got);
    if (t->type == JT_EOF)
        unexpected(P, "an expression");
    else
        fail(P, XD_E_TEMPLATE, t->line, "unexpected %s", got);
    return NULL;
}

static struct xd__jnode *parse_unary(struct parser *P, bool with_filter) {
    if (enter(P)) return NULL;
    const struct xd__jtoken *t = cur(P);
    struct xd__jnode *nd;
    if (tok_op(t, JO_SUB) || tok_op(t, JO_ADD)) {
        advance(P);
        struct xd__jnode *operand = parse_unary(P, false);
        nd = node(P, JN_UNARY, t->line);
        if (!operand || !nd) return NULL;
        nd->op = t->op == JO_SUB ? JO_NEG : JO_POS;
        nd->a = operand;
        if (seal(P, nd)) return NULL;
    } else {
        nd = parse_primary(P);
    }
    nd = parse_postfix(P, nd);
    if (with_filter) nd = parse_filter_expr(P, nd);
    P->depth--;
    return nd;
}

static struct xd__jnode *binop(struct parser *P, uint8_t kind, uint8_t op, uint32_t line,
                               struct xd__jnode *l, struct xd__jnode *r) {
    if (!l || !r) return NULL;
    struct xd__jnode *nd = node(P, kind, line);
    if (!nd) return NULL;
    nd->op = op;
    nd->a = l;
    nd->b = r;
    return seal(P, nd) ? NULL : nd;
}

static struct xd__jnode *parse_pow(struct parser *P) {
    struct xd__jnode *l = parse_unary(P, true);
    while (l && tok_op(cur(P), JO_POW)) {
        uint32_t line = advance(P)->line;
        l = binop(P, JN_BINOP, JO_POW, line, l, parse_unary(P, true));
    }
    return l;
}

static struct xd__jnode *parse_math2(struct parser *P) {
    struct xd__jnode *l = parse_pow(P);
    while (l) {
        const struct xd__jtoken *t = cur(P);
        if (!(tok_op(t, JO_MUL) || tok_op(t, JO_DIV) || tok_op(t, JO_FLOORDIV) ||
              tok_op(t, JO_MOD)))
            break;
        advance(P);
        l = binop(P, JN_BINOP, t->op, t->line, l, parse_pow(P));
    }
    return l;
}

static struct xd__jnode *parse_concat(struct parser *P) {
    struct xd__jnode *first = parse_math2(P);
    if (!first || !tok_op(cur(P), JO_TILDE)) return first;
    struct vec parts = {0};
    if (vec_push(P, &parts, first)) return NULL;
    uint32_t line = cur(P)->line;
    while (tok_op(cur(P), JO_TILDE)) {
        advance(P);
        struct xd__jnode *e = parse_math2(P);
        if (!e || vec_push(P, &parts, e)) return NULL;
    }
    struct xd__jnode *nd = node(P, JN_CONCAT, line);
    if (!nd) return NULL;
    nd->v = parts.v;
    nd->n = parts.n;
    return seal(P, nd) ? NULL : nd;
}

static struct xd__jnode *parse_math1(struct parser *P) {
    struct xd__jnode *l = parse_concat(P);
    while (l && (tok_op(cur(P), JO_ADD) || tok_op(cur(P), JO_SUB))) {
        const struct xd__jtoken *t = advance(P);
        l = binop(P, JN_BINOP, t->op, t->line, l, parse_concat(P));
    }
    return l;
}

static struct xd__jnode *parse_compare(struct parser *P) {
    struct xd__jnode *first = parse_math1(P);
    if (!first) return NULL;
    struct vec ops = {0};
    uint32_t line = cur(P)->line;
    for (;;) {
        const struct xd__jtoken *t = cur(P);
        uint8_t op;
        if (t->type == JT_OP && (t->op == JO_EQ || t->op == JO_NE || t->op == JO_LT ||
                                 t->op == JO_LTEQ || t->op == JO_GT || t->op == JO_GTEQ)) {
            op = t->op;
            advance(P);
        } else if (tok_name(t, "in")) {
            op = JO_IN;
            advance(P);
        } else if (tok_name(t, "not") && tok_name(look(P), "in")) {
            op = JO_NOTIN;
            advance(P);
            advance(P);
        } else {
            break;
        }
        struct xd__jnode *rhs = parse_math1(P);
        struct xd__jnode *od = node(P, JN_OPERAND, t->line);
        if (!rhs || !od) return NULL;
        od->op = op;
        od->a = rhs;
        if (seal(P, od) || vec_push(P, &ops, od)) return NULL;
    }
    if (!ops.n) return first;
    struct xd__jnode *nd = node(P, JN_COMPARE, line);
    if (!nd) return NULL;
    nd->a = first;
    nd->v = ops.v;
    nd->n = ops.n;
    return seal(P, nd) ? NULL : nd;
}

static struct xd__jnode *parse_not(struct parser *P) {
    if (tok_name(cur(P), "not")) {
        uint32_t line = advance(P)->line;
        if (enter(P)) return NULL;
        struct xd__jnode *e = parse_not(P);
        P->depth--;
        struct xd__jnode *nd = node(P, JN_NOT, line);
        if (!e || !nd) return NULL;
        nd->a = e;
        return seal(P, nd) ? NULL : nd;
    }
    return parse_compare(P);
}

static struct xd__jnode *parse_and(struct parser *P) {
    struct xd__jnode *l = parse_not(P);
    while (l && tok_name(cur(P), "and")) {
        uint32_t line = advance(P)->line;
        l = binop(P, JN_AND, 0, line, l, parse_not(P));
    }
    return l;
}

static struct xd__jnode *parse_or(struct parser *P) {
    struct xd__jnode *l = parse_and(P);
    while (l && tok_name(cur(P), "or")) {
        uint32_t line = advance(P)->line;
        l = binop(P, JN_OR, 0, line, l, parse_and(P));
    }
    return l;
}

static struct xd__jnode *parse_condexpr(struct parser *P) {
    struct xd__jnode *e1 = parse_or(P);
    while (e1 && tok_name(cur(P), "if")) {
        uint32_t line = advance(P)->line;
        struct xd__jnode *e2 = parse_or(P), *e3 = NULL;
        if (!e2) return NULL;
        if (tok_name(cur(P), "else")) {
            advance(P);
            if (enter(P)) return NULL;
            e3 = parse_condexpr(P);
            P->depth--;
            if (!e3) return NULL;
        }
        struct xd__jnode *nd = node(P, JN_COND, line);
        if (!nd) return NULL;
        nd->a = e2;
        nd->b = e1;
        nd->c = e3;
        if (seal(P, nd)) return NULL;
        e1 = nd;
    }
    return e1;
}

static struct xd__jnode *parse_expression(struct parser *P, bool with_condexpr) {
    return with_condexpr ? parse_condexpr(P) : parse_or(P);
}

static bool is_tuple_end(const struct parser *P, const char *extra_end) {
    const struct xd__jtoken *t = cur(P);
    if (t->type == JT_VAR_END || t->type == JT_BLOCK_END || t->type == JT_EOF ||
        tok_op(t, JO_RPAREN))
        return true;
    return extra_end && tok_name(t, extra_end);
}

static struct xd__jnode *parse_tuple(struct parser *P, bool simplified, bool with_condexpr,
                                     const char *extra_end, bool explicit_parens) {
    uint32_t line = cur(P)->line;
    struct vec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n && expect_op(P, JO_COMMA, "','")) return NULL;
        if (is_tuple_end(P, extra_end)) break;
        struct xd__jnode *e = simplified ? parse_primary(P) : parse_expression(P, with_condexpr);
        if (!e || vec_push(P, &items, e)) return NULL;
        if (tok_op(cur(P), JO_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) {
            unexpected(P, "an expression");
            return NULL;
        }
    }
    struct xd__jnode *nd = node(P, JN_TUPLE, line);
    if (!nd) return NULL;
    nd->v = items.v;
    nd->n = items.n;
    return seal(P, nd) ? NULL : nd;
}

/* ---- statements ---------------------------------------------------------------------------- */
static int check_target(struct parser *P, const struct xd__jnode *t) {
    if (t->kind == JN_NAME) return 0;
    if (t->kind == JN_TUPLE) {
        for (uint32_t k = 0; k < t->n; k++)
            if (check_target(P, t->v[k])) return P->rc;
        return 0;
    }
    return fail(P, XD_E_TEMPLATE, t->line, "can't assign to this expression");
}

static struct xd__jnode *parse_assign_target(struct parser *P, bool with_namespace, bool name_only,
                                             const char *extra_end) {
    const struct xd__jtoken *t = cur(P);
    if (with_namespace && t->type == JT_NAME && tok_op(look(P), JO_DOT)) {
        advance(P);
        advance(P);
        if (cur(P)->type != JT_NAME) {
            unexpected(P, "name");
            return NULL;
        }
        struct xd__jnode *nd = node(P, JN_NSREF, t->line);
        if (!nd) return NULL;
        nd->s = t->s;
        nd->s2 = advance(P)->s;
        return nd;
    }
    if (name_only) {
        if (t->type != JT_NAME) {
            unexpected(P, "name");
            return NULL;
        }
        advance(P);
        struct xd__jnode *nd = node(P, JN_NAME, t->line);
        if (!nd) return NULL;
        nd->s = t->s;
        return nd;
    }
    struct xd__jnode *nd = parse_tuple(P, true, true, extra_end, false);
    if (!nd || check_target(P, nd)) return NULL;
    return nd;
}

static int subparse(struct parser *P, const char *const *ends, struct vec *body);

/* Header done: expect "%}", then statements up to one of ends (left as the current token
 * unless drop_needle). */
static int parse_statements(struct parser *P, const char *const *ends, bool drop_needle,
                            struct vec *body) {
    if (tok_op(cur(P), JO_COLON)) advance(P);
    if (expect_type(P, JT_BLOCK_END, "end of statement block")) return P->rc;
    if (subparse(P, ends, body)) return P->rc;
    if (cur(P)->type == JT_EOF) {
        char want[128];
        size_t k = 0;
        for (int i = 0; ends[i] && k < sizeof want; i++)
            k += (size_t)snprintf(want + k, sizeof want - k, "%s'%s'", i ? " or " : "", ends[i]);
        return unexpected(P, want);
    }
    if (drop_needle) advance(P);
    return 0;
}

static struct xd__jnode *parse_for(struct parser *P, uint32_t line) {
    struct xd__jnode *nd = node(P, JN_FOR, line);
    if (!nd) return NULL;
    nd->a = parse_assign_target(P, false, false, "in");
    if (!nd->a) return NULL;
    if (!tok_name(cur(P), "in")) {
        unexpected(P, "'in'");
        return NULL;
    }
    advance(P);
    nd->b = parse_tuple(P, false, false, "recursive", false);
    if (!nd->b) return NULL;
    if (tok_name(cur(P), "if")) {
        advance(P);
        nd->c = parse_expression(P, true);
        if (!nd->c) return NULL;
    }
    if (tok_name(cur(P), "recursive")) {
        fail(P, XD_E_UNSUPPORTED, cur(P)->line, "recursive for loops are not supported");
        return NULL;
    }
    static const char *const body_ends[] = {"endfor", "else", NULL};
    static const char *const else_ends[] = {"endfor", NULL};
    struct vec body = {0}, els = {0};
    P->loop_depth++;
    int rc = parse_statements(P, body_ends, false, &body);
    P->loop_depth--;
    if (rc) return NULL;
    if (tok_name(advance(P), "else") && parse_statements(P, else_ends, true, &els)) return NULL;
    nd->v = body.v;
    nd->n = body.n;
    nd->w = els.v;
    nd->nw = els.n;
    return nd;
}

static struct xd__jnode *parse_if(struct parser *P, uint32_t line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const else_ends[] = {"endif", NULL};
    struct xd__jnode *top = node(P, JN_IF, line), *nd = top;
    unsigned elifs = 0;
    while (nd) {
        nd->a = parse_tuple(P, false, false, NULL, false);
        if (!nd->a) return NULL;
        struct vec body = {0};
        if (parse_statements(P, ends, false, &body)) return NULL;
        nd->v = body.v;
        nd->n = body.n;
        const struct xd__jtoken *t = advance(P);
        if (tok_name(t, "elif")) {
            /* an elif is an if nested in the else branch: it counts as nesting, so a chain
             * of them cannot make the tree (and every walk over it) arbitrarily deep */
            if (enter(P)) return NULL;
            elifs++;
            struct xd__jnode *el = node(P, JN_IF, t->line);
            if (!el) return NULL;
            nd->w = xd__jarena_alloc(P->a, sizeof *nd->w);
            if (!nd->w) {
                oom(P);
                return NULL;
            }
            nd->w[0] = el;
            nd->nw = 1;
            nd = el;
            continue;
        }
        if (tok_name(t, "else")) {
            struct vec els = {0};
            if (parse_statements(P, else_ends, true, &els)) return NULL;
            nd->w = els.v;
            nd->nw = els.n;
        }
        break;
    }
    P->depth -= elifs;
    return top;
}

static struct xd__jnode *parse_set(struct parser *P, uint32_t line) {
    struct xd__jnode *target = parse_assign_target(P, true, false, NULL);
    if (!target) return NULL;
    if (tok_op(cur(P), JO_ASSIGN)) {
        advance(P);
        struct xd__jnode *nd = node(P, JN_SET, line);
        if (!nd) return NULL;
        nd->a = target;
        nd->b = parse_tuple(P, false, true, NULL, false);
        return nd->b ? nd : NULL;
    }
    struct xd__jnode *nd = node(P, JN_SETBLOCK, line);
    if (!nd) return NULL;
    nd->a = target;
    if (target->kind == JN_TUPLE) {
        fail(P, XD_E_TEMPLATE, line, "a block set assigns one name");
        return NULL;
    }
    struct vec filters = {0};
    while (tok_op(cur(P), JO_PIPE)) {
        advance(P);
        struct xd__jnode *f = parse_filter(P, NULL, true);
        if (!f) return NULL;
        /* parse_filter chains; unwind the chain into a list applied in order */
        struct vec chain = {0};
        for (struct xd__jnode *x = f; x; x = x->a)
            if (vec_push(P, &chain, x)) return NULL;
        for (uint32_t k = chain.n; k > 0; k--) {
            chain.v[k - 1]->a = NULL;
            if (vec_push(P, &filters, chain.v[k - 1])) return NULL;
        }
    }
    static const char *const ends[] = {"endset", NULL};
    struct vec body = {0};
    if (parse_statements(P, ends, true, &body)) return NULL;
    nd->v = body.v;
    nd->n = body.n;
    nd->w = filters.v;
    nd->nw = filters.n;
    return nd;
}

static struct xd__jnode *parse_macro(struct parser *P, uint32_t line) {
    struct xd__jnode *name = parse_assign_target(P, false, true, NULL);
    if (!name) return NULL;
    struct xd__jnode *nd = node(P, JN_MACRO, line);
    if (!nd) return NULL;
    nd->s = name->s;
    if (expect_op(P, JO_LPAREN, "'('")) return NULL;
    struct vec defaults = {0};
    struct xd__jstr *names = NULL;
    uint32_t nnames = 0, cap = 0;
    bool have_default = false;
    while (!tok_op(cur(P), JO_RPAREN)) {
        if (nnames && expect_op(P, JO_COMMA, "','")) return NULL;
        struct xd__jnode *arg = parse_assign_target(P, false, true, NULL);
        if (!arg) return NULL;
        struct xd__jnode *def = NULL;
        if (tok_op(cur(P), JO_ASSIGN)) {
            advance(P);
            def = parse_expression(P, true);
            if (!def) return NULL;
            have_default = true;
        } else if (have_default) {
            fail(P, XD_E_TEMPLATE, arg->line, "non-default argument follows default argument");
            return NULL;
        }
        if (nnames == cap) {
            cap = cap ? cap * 2 : 4;
            struct xd__jstr *nn = xd__jarena_alloc(P->a, cap * sizeof *nn);
            if (!nn) {
                oom(P);
                return NULL;
            }
            if (nnames) memcpy(nn, names, nnames * sizeof *nn);
            names = nn;
        }
        names[nnames++] = arg->s;
        if (vec_push(P, &defaults, def)) return NULL;
    }
    advance(P);
    bool save_va = P->refs_varargs, save_kw = P->refs_kwargs;
    unsigned save_loops = P->loop_depth;
    P->refs_varargs = P->refs_kwargs = false;
    P->loop_depth = 0;
    static const char *const ends[] = {"endmacro", NULL};
    struct vec body = {0};
    int rc = parse_statements(P, ends, true, &body);
    if (P->refs_varargs) nd->flags |= JN_F_VARARGS;
    if (P->refs_kwargs) nd->flags |= JN_F_KWARGS;
    P->refs_varargs = save_va;
    P->refs_kwargs = save_kw;
    P->loop_depth = save_loops;
    if (rc) return NULL;
    nd->names = names;
    nd->nnames = nnames;
    nd->w = defaults.v;
    nd->nw = defaults.n;
    nd->v = body.v;
    nd->n = body.n;
    return nd;
}

static struct xd__jnode *parse_filter_block(struct parser *P, uint32_t line) {
    struct xd__jnode *nd = node(P, JN_FILTERBLOCK, line);
    if (!nd) return NULL;
    struct xd__jnode *f = parse_filter(P, NULL, true);
    if (!f) return NULL;
    struct vec chain = {0}, filters = {0};
    for (struct xd__jnode *x = f; x; x = x->a)
        if (vec_push(P, &chain, x)) return NULL;
    for (uint32_t k = chain.n; k > 0; k--) {
        chain.v[k - 1]->a = NULL;
        if (vec_push(P, &filters, chain.v[k - 1])) return NULL;
    }
    static const char *const ends[] = {"endfilter", NULL};
    struct vec body = {0};
    if (parse_statements(P, ends, true, &body)) return NULL;
    nd->v = body.v;
    nd->n = body.n;
    nd->w = filters.v;
    nd->nw = filters.n;
    return nd;
}

static struct xd__jnode *parse_with(struct parser *P, uint32_t line) {
    struct xd__jnode *nd = node(P, JN_WITH, line);
    if (!nd) return NULL;
    struct vec sets = {0};
    while (cur(P)->type != JT_BLOCK_END) {
        if (sets.n && expect_op(P, JO_COMMA, "','")) return NULL;
        struct xd__jnode *target = parse_assign_target(P, false, false, NULL);
        if (!target || expect_op(P, JO_ASSIGN, "'='")) return NULL;
        struct xd__jnode *s = node(P, JN_SET, target->line);
        if (!s) return NULL;
        s->a = target;
        s->b = parse_expression(P, true);
        if (!s->b || vec_push(P, &sets, s)) return NULL;
    }
    static const char *const ends[] = {"endwith", NULL};
    struct vec body = {0};
    if (parse_statements(P, ends, true, &body)) return NULL;
    nd->v = body.v;
    nd->n = body.n;
    nd->w = sets.v;
    nd->nw = sets.n;
    return nd;
}

/* {% block name [scoped] [required] %} and {% generation %}: the body, in a scope of its own. */
static struct xd__jnode *parse_scope(struct parser *P, uint32_t line, bool is_block) {
    struct xd__jnode *nd = node(P, JN_SCOPE, line);
    if (!nd) return NULL;
    struct xd__jstr name = {0};
    if (is_block) {
        if (cur(P)->type != JT_NAME) {
            unexpected(P, "block name");
            return NULL;
        }
        name = advance(P)->s;
        if (tok_name(cur(P), "scoped")) advance(P);
        if (tok_name(cur(P), "required")) advance(P);
    }
    static const char *const block_ends[] = {"endblock", NULL};
    static const char *const gen_ends[] = {"endgeneration", NULL};
    struct vec body = {0};
    if (parse_statements(P, is_block ? block_ends : gen_ends, true, &body)) return NULL;
    if (is_block && cur(P)->type == JT_NAME && xd__jstr_same(cur(P)->s, name)) advance(P);
    nd->v = body.v;
    nd->n = body.n;
    return nd;
}

static struct xd__jnode *parse_statement(struct parser *P) {
    const struct xd__jtoken *t = cur(P);
    if (t->type != JT_NAME) {
        unexpected(P, "tag name");
        return NULL;
    }
    if (enter(P)) return NULL;
    static const char *const unsupported[] = {"call",    "include",    "import", "from",
                                              "extends", "autoescape", "do",     NULL};
    for (int k = 0; unsupported[k]; k++)
        if (xd__jstr_eq(t->s, unsupported[k])) {
            fail(P, XD_E_UNSUPPORTED, t->line, "the '%s' tag is not supported", unsupported[k]);
            return NULL;
        }
    static const char *const known[] = {"for",      "if",         "set",   "macro",
                                        "filter",   "with",       "block", "break",
                                        "continue", "generation", NULL};
    int which = -1;
    for (int k = 0; known[k]; k++)
        if (xd__jstr_eq(t->s, known[k])) which = k;
    if (which < 0) {
        if (P->ntags)
            fail(P, XD_E_TEMPLATE, t->line,
                 "encountered unknown tag '%.*s'; the innermost open block is '%s'",
                 (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p, P->tag_stack[P->ntags - 1]);
        else
            fail(P, XD_E_TEMPLATE, t->line, "encountered unknown tag '%.*s'",
                 (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p);
        return NULL;
    }
    if (P->ntags == sizeof P->tag_stack / sizeof P->tag_stack[0]) {
        fail(P, XD_E_TEMPLATE_LIMIT, t->line, "blocks nested too deeply");
        return NULL;
    }
    P->tag_stack[P->ntags++] = known[which];
    uint32_t line = advance(P)->line;
    struct xd__jnode *nd = NULL;
    switch (which) {
    case 0: nd = parse_for(P, line); break;
    case 1: nd = parse_if(P, line); break;
    case 2: nd = parse_set(P, line); break;
    case 3: nd = parse_macro(P, line); break;
    case 4: nd = parse_filter_block(P, line); break;
    case 5: nd = parse_with(P, line); break;
    case 6: nd = parse_scope(P, line, true); break;
    case 7:
    case 8:
        if (!P->loop_depth) {
            fail(P, XD_E_TEMPLATE, line, "'%s' outside of a loop", known[which]);
            return NULL;
        }
        nd = node(P, which == 7 ? JN_BREAK : JN_CONTINUE, line);
        break;
    case 9: nd = parse_scope(P, line, false); break;
    }
    P->ntags--;
    P->depth--;
    if (!nd) return NULL;
    if (expect_type(P, JT_BLOCK_END, "end of statement block")) return NULL;
    return nd;
}

static int subparse(struct parser *P, const char *const *ends, struct vec *body) {
    while (!P->rc) {
        const struct xd__jtoken *t = cur(P);
        switch (t->type) {
        case JT_EOF: return 0;
        case JT_DATA: {
            advance(P);
            struct xd__jnode *nd = node(P, JN_DATA, t->line);
            if (!nd) return P->rc;
            nd->s = t->s;
            if (vec_push(P, body, nd)) return P->rc;
            break;
        }
        case JT_VAR_BEGIN: {
            advance(P);
            struct xd__jnode *e = parse_tuple(P, false, true, NULL, false);
            if (!e) return P->rc;
            if (expect_type(P, JT_VAR_END, "end of print statement")) return P->rc;
            struct xd__jnode *nd = node(P, JN_OUTPUT, t->line);
            if (!nd) return P->rc;
            nd->a = e;
            if (vec_push(P, body, nd)) return P->rc;
            break;
        }
        case JT_BLOCK_BEGIN: {
            advance(P);
            if (ends)
                for (int k = 0; ends[k]; k++)
                    if (tok_name(cur(P), ends[k])) return 0;
            struct xd__jnode *nd = parse_statement(P);
            if (!nd || vec_push(P, body, nd)) return P->rc;
            break;
        }
        default: return unexpected(P, "template data or a tag");
        }
    }
    return P->rc;
}

int xd__jinja_parse_tokens(struct xd_jinja_tpl *t, const struct xd__jtoken *toks, size_t n,
                           char *err, size_t errlen) {
    struct parser P = {.t = toks,
                       .n = n,
                       .a = &t->arena,
                       .max_nodes = t->lim.max_nodes,
                       .max_depth = t->lim.max_nesting,
                       .err = err,
                       .errlen = errlen};
    struct vec body = {0};
    int rc = subparse(&P, NULL, &body);
    if (!rc && cur(&P)->type != JT_EOF) rc = unexpected(&P, "end of template");
    if (rc) return rc;
    t->body = body.v;
    t->n = body.n;
    return 0;
}
