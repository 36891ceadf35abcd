/* jinja_lex.c - template source to tokens, reproducing Jinja2 3.1's lexer rule by rule.
 *
 * Whitespace is where chat templates differ from each other and where a renderer most often
 * gets a byte wrong, so this follows jinja2/lexer.py exactly as Hugging Face configures it
 * (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
 *   - line endings \r\n and \r become \n, and one trailing newline of the source is dropped;
 *   - "{%-", "{{-", "{#-" strip all whitespace (Python's str.isspace, Unicode included) before
 *     the tag; "-%}", "-}}", "-#}" strip all whitespace after it;
 *   - lstrip_blocks: spaces and tabs alone between a line start and "{%" or "{#" (not "{{")
 *     are dropped, unless the tag opens with "+";
 *   - trim_blocks: the first newline after "%}" or "#}" is dropped unless it closes with "+";
 *   - {% raw %}...{% endraw %} is text; a tag's end only counts with its brackets balanced.
 * String literals are unescaped as Python's "unicode-escape" codec does after Jinja's
 * ascii/backslashreplace round trip (so "\\é" becomes the four characters \xe9, as there).
 *
 * Trade-off: tokens are made for the whole template up front (an arena array), which keeps the
 * parser a simple cursor over an array. Not here: identifiers beyond ASCII (an error, where
 * Python allows Unicode names), line statements, custom delimiters, \N{name} escapes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_impl.h"
#include "unicode.h"
#include "xd_error.h"

struct lexer {
    const char *s;
    size_t n, pos;
    uint32_t line;
    bool line_starting; /* the last match ended with a newline (Jinja's line_starting) */
    struct xd__jarena *a;
    struct xd__jtoken *toks;
    size_t ntoks, cap, max;
    char bal[128]; /* closing brackets expected, innermost last */
    size_t nbal;
    char *err;
    size_t errlen;
};

static int lex_fail(struct lexer *L, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lex_fail(struct lexer *L, int code, const char *fmt, ...) {
    if (L->err && L->errlen) {
        int k = snprintf(L->err, L->errlen, "line %u: ", (unsigned)L->line);
        if (k >= 0 && (size_t)k < L->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(L->err + k, L->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static int emit(struct lexer *L, uint8_t type, uint8_t op, struct xd__jstr s) {
    if (L->ntoks + 1 >= L->max)
        return lex_fail(L, XD_E_TEMPLATE_LIMIT, "template has too many tokens (limit %zu)", L->max);
    if (L->ntoks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        struct xd__jtoken *t = xd__jarena_alloc(L->a, cap * sizeof *t);
        if (!t) return lex_fail(L, XD_E_TEMPLATE_LIMIT, "template too large to tokenize");
        if (L->ntoks) memcpy(t, L->toks, L->ntoks * sizeof *t);
        L->toks = t;
        L->cap = cap;
    }
    struct xd__jtoken *t = &L->toks[L->ntoks++];
    *t = (struct xd__jtoken){.type = type, .op = op, .line = L->line, .s = s};
    return 0;
}

static uint32_t count_nl(const char *p, size_t n) {
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) k += p[i] == '\n';
    return k;
}

/* Length of the whitespace character at s[i], 0 if there is none (Python's \s). */
static size_t space_at(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x80) return xd__jpy_isspace(ch) ? 1 : 0;
    size_t j = i;
    uint32_t cp = xd__jutf8_next(s, n, &j);
    return xd__jpy_isspace(cp) ? j - i : 0;
}

static size_t skip_space(const char *s, size_t n, size_t i) {
    size_t k;
    while ((k = space_at(s, n, i)) > 0) i += k;
    return i;
}

/* Length of text[0..n) without trailing whitespace (str.rstrip()). */
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t st = n - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80 && n - st < 4) st--;
        if (space_at(s, n, st) != n - st) break;
        n = st;
    }
    return n;
}

/* Apply the strip rules for a tag opening right after text[0..n) with sign '-', '+' or 0.
 * Returns the length of text to keep. */
static size_t strip_before_tag(const struct lexer *L, const char *text, size_t n, char sign,
                               bool is_var) {
    if (sign == '-') return rstrip_len(text, n);
    if (sign == '+' || is_var) return n;
    size_t l_pos = n;
    while (l_pos > 0 && text[l_pos - 1] != '\n') l_pos--;
    if (l_pos == 0 && !L->line_starting) return n;
    if (l_pos == n) return n; /* \s+ needs one character */
    if (skip_space(text, n, l_pos) == n) return l_pos;
    return n;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alpha_(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* (\d+_)*\d+ at s[i]: returns the end, or i when there is none. */
static size_t digits_us(const char *s, size_t n, size_t i) {
    if (i >= n || !is_digit(s[i])) return i;
    size_t j = i;
    for (;;) {
        while (j < n && is_digit(s[j])) j++;
        if (j + 1 < n && s[j] == '_' && is_digit(s[j + 1])) {
            j++;
            continue;
        }
        return j;
    }
}

/* Jinja's float_re at pos; returns the end or pos. */
static size_t match_float(const char *s, size_t n, size_t pos) {
    if (pos > 0 && s[pos - 1] == '.') return pos;
    size_t j = digits_us(s, n, pos);
    if (j == pos) return pos;
    /* fraction then exponent, or exponent alone, or fraction alone */
    size_t frac = j;
    if (j < n && s[j] == '.') {
        size_t k = digits_us(s, n, j + 1);
        if (k > j + 1) frac = k;
    }
    size_t e = frac;
    if (e < n && (s[e] == 'e' || s[e] == 'E')) {
        size_t k = e + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) k++;
        size_t m = digits_us(s, n, k);
        if (m > k) return m;
    }
    return frac > j ? frac : pos;
}

/* Jinja's integer_re at pos; returns the end or pos; *base gets 2, 8, 10 or 16. */
static size_t match_int(const char *s, size_t n, size_t pos, int *base) {
    if (pos >= n || !is_digit(s[pos])) return pos;
    if (s[pos] == '0' && pos + 1 < n) {
        char x = s[pos + 1] | 0x20;
        int b = x == 'b' ? 2 : x == 'o' ? 8 : x == 'x' ? 16 : 0;
        if (b) {
            size_t j = pos + 2, end = pos;
            for (;;) {
                size_t k = j;
                if (k < n && s[k] == '_') k++;
                int v = k < n ? hexval(s[k]) : -1;
                if (v < 0 || v >= b) break;
                j = end = k + 1;
            }
            if (end > pos) {
                *base = b;
                return end;
            }
        }
    }
    *base = 10;
    size_t j = pos + 1;
    bool zero = s[pos] == '0';
    for (;;) {
        size_t k = j;
        if (k < n && s[k] == '_') k++;
        if (k < n && (zero ? s[k] == '0' : is_digit(s[k])))
            j = k + 1;
        else
            break;
    }
    return j;
}

static int lex_number(struct lexer *L, size_t end, bool is_float, int base) {
    char buf[128];
    size_t k = 0;
    size_t start = L->pos + (base != 10 ? 2 : 0);
    for (size_t i = start; i < end; i++) {
        if (L->s[i] == '_') continue;
        if (k + 1 >= sizeof buf) return lex_fail(L, XD_E_UNSUPPORTED, "number literal too long");
        buf[k++] = L->s[i];
    }
    buf[k] = '\0';
    struct xd__jstr raw = {L->s + L->pos, end - L->pos};
    if (is_float) {
        int rc = emit(L, JT_FLOAT, 0, raw);
        if (rc) return rc;
        L->toks[L->ntoks - 1].d = strtod(buf, NULL);
    } else {
        errno = 0;
        unsigned long long v = strtoull(buf, NULL, base);
        if (errno || v > (unsigned long long)INT64_MAX)
            return lex_fail(L, XD_E_UNSUPPORTED,
                            "integer literal %.*s is too large (ints are 64-bit here)",
                            (int)(raw.n > 40 ? 40 : raw.n), raw.p);
        int rc = emit(L, JT_INT, 0, raw);
        if (rc) return rc;
        L->toks[L->ntoks - 1].i = (int64_t)v;
    }
    L->pos = end;
    return 0;
}

/* Unescape the literal body s[0..n) into the arena. */
static int unescape(struct lexer *L, const char *s, size_t n, struct xd__jstr *out) {
    char *o = xd__jarena_alloc(L->a, 3 * n + 12); /* see the non-ASCII case */
    if (!o) return lex_fail(L, XD_E_TEMPLATE_LIMIT, "template too large to tokenize");
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            o[k++] = s[i++];
            continue;
        }
        char e = s[i + 1]; /* the lexer's string rule guarantees a character after '\' */
        i += 2;
        uint32_t cp;
        int want = 0;
        switch (e) {
        case '\n': continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = '\a'; continue;
        case 'b': o[k++] = '\b'; continue;
        case 'f': o[k++] = '\f'; continue;
        case 'n': o[k++] = '\n'; continue;
        case 'r': o[k++] = '\r'; continue;
        case 't': o[k++] = '\t'; continue;
        case 'v': o[k++] = '\v'; continue;
        case 'x': want = 2; break;
        case 'u': want = 4; break;
        case 'U': want = 8; break;
        case 'N': return lex_fail(L, XD_E_UNSUPPORTED, "\\N{...} escapes are not supported");
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                goto encode;
            }
            if ((unsigned char)e >= 0x80) {
                /* Jinja first turns the string into ASCII with backslashreplace, so this
                 * backslash pairs with the one that starts the replacement: the result is a
                 * literal backslash and the escape's text. */
                size_t j = i - 1;
                uint32_t c2 = xd__jutf8_next(s, n, &j);
                i = j;
                int w = c2 <= 0xFF     ? snprintf(o + k, 12, "\\x%02x", c2)
                        : c2 <= 0xFFFF ? snprintf(o + k, 12, "\\u%04x", c2)
                                       : snprintf(o + k, 12, "\\U%08x", c2);
                k += (size_t)w;
                continue;
            }
            o[k++] = '\\';
            o[k++] = e;
            continue;
        }
        cp = 0;
        for (int d = 0; d < want; d++) {
            int v = i < n ? hexval(s[i]) : -1;
            if (v < 0)
                return lex_fail(L, XD_E_TEMPLATE, "truncated \\%c escape in a string literal", e);
            cp = cp * 16 + (uint32_t)v;
            i++;
        }
    encode:
        if (cp > 0x10FFFF)
            return lex_fail(L, XD_E_TEMPLATE, "illegal Unicode character in a string literal");
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return lex_fail(L, XD_E_UNSUPPORTED,
                            "surrogate escapes in string literals are not "
                            "supported");
        k += xd_utf8_encode(cp, o + k);
    }
    o[k] = '\0';
    *out = (struct xd__jstr){o, k};
    return 0;
}

static const struct {
    const char *text;
    uint8_t op;
} ops[] = {
    /* longest first, as Jinja sorts them */
    {"//", JO_FLOORDIV}, {"**", JO_POW},     {"==", JO_EQ},    {"!=", JO_NE},
    {">=", JO_GTEQ},     {"<=", JO_LTEQ},    {"+", JO_ADD},    {"-", JO_SUB},
    {"/", JO_DIV},       {"*", JO_MUL},      {"%", JO_MOD},    {"~", JO_TILDE},
    {"[", JO_LBRACKET},  {"]", JO_RBRACKET}, {"(", JO_LPAREN}, {")", JO_RPAREN},
    {"{", JO_LBRACE},    {"}", JO_RBRACE},   {"=", JO_ASSIGN}, {".", JO_DOT},
    {":", JO_COLON},     {"|", JO_PIPE},     {",", JO_COMMA},  {";", JO_SEMICOLON},
    {">", JO_GT},        {"<", JO_LT},
};

static int lex_operator(struct lexer *L) {
    const char *p = L->s + L->pos;
    size_t left = L->n - L->pos;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t k = strlen(ops[i].text);
        if (k > left || memcmp(p, ops[i].text, k) != 0) continue;
        char ch = p[0];
        if (k == 1 && (ch == '{' || ch == '(' || ch == '[')) {
            if (L->nbal == sizeof L->bal)
                return lex_fail(L, XD_E_TEMPLATE_LIMIT, "brackets nested too deeply");
            L->bal[L->nbal++] = ch == '{' ? '}' : ch == '(' ? ')' : ']';
        } else if (k == 1 && (ch == '}' || ch == ')' || ch == ']')) {
            if (L->nbal == 0) return lex_fail(L, XD_E_TEMPLATE, "unexpected '%c'", ch);
            char want = L->bal[--L->nbal];
            if (want != ch)
                return lex_fail(L, XD_E_TEMPLATE, "unexpected '%c', expected '%c'", ch, want);
        }
        int rc = emit(L, JT_OP, ops[i].op, (struct xd__jstr){p, k});
        L->pos += k;
        return rc;
    }
    if ((unsigned char)*p >= 0x80)
        return lex_fail(L, XD_E_UNSUPPORTED,
                        "non-ASCII character in a tag (names must be "
                        "ASCII here)");
    return lex_fail(L, XD_E_TEMPLATE, "unexpected char '%c' at %zu", *p, L->pos);
}

/* Tokens inside {{ }} or {% %} up to and including the end tag. */
static int lex_tag(struct lexer *L, bool is_block) {
    const char *s = L->s;
    size_t n = L->n;
    L->nbal = 0;
    while (L->pos < n) {
        size_t p = L->pos;
        if (L->nbal == 0) {
            /* the end rule is tried first, and only with brackets balanced */
            const char *close = is_block ? "%}" : "}}";
            if (is_block && p + 3 <= n && s[p] == '+' && !memcmp(s + p + 1, close, 2)) {
                L->pos = p + 3;
                L->line_starting = false;
                return emit(L, JT_BLOCK_END, 0, (struct xd__jstr){s + p, 3});
            }
            if (p + 3 <= n && s[p] == '-' && !memcmp(s + p + 1, close, 2)) {
                size_t e = skip_space(s, n, p + 3);
                int rc =
                    emit(L, is_block ? JT_BLOCK_END : JT_VAR_END, 0, (struct xd__jstr){s + p, 3});
                L->line += count_nl(s + p, e - p);
                L->line_starting = e > p + 3 ? s[e - 1] == '\n' : false;
                L->pos = e;
                return rc;
            }
            if (p + 2 <= n && !memcmp(s + p, close, 2)) {
                size_t e = p + 2;
                if (is_block && e < n && s[e] == '\n') e++; /* trim_blocks */
                int rc =
                    emit(L, is_block ? JT_BLOCK_END : JT_VAR_END, 0, (struct xd__jstr){s + p, 2});
                L->line += count_nl(s + p, e - p);
                L->line_starting = s[e - 1] == '\n';
                L->pos = e;
                return rc;
            }
        }
        size_t k = space_at(s, n, p);
        if (k) {
            size_t e = skip_space(s, n, p);
            L->line += count_nl(s + p, e - p);
            L->pos = e;
            continue;
        }
        int rc;
        int base;
        size_t e = match_float(s, n, p);
        if (e > p) {
            rc = lex_number(L, e, true, 10);
        } else if ((e = match_int(s, n, p, &base)) > p) {
            rc = lex_number(L, e, false, base);
        } else if (is_alpha_(s[p])) {
            e = p + 1;
            while (e < n && (is_alpha_(s[e]) || is_digit(s[e]))) e++;
            rc = emit(L, JT_NAME, 0, (struct xd__jstr){s + p, e - p});
            L->pos = e;
        } else if (s[p] == '\'' || s[p] == '"') {
            char q = s[p];
            e = p + 1;
            while (e < n && s[e] != q) e += (s[e] == '\\' && e + 1 < n) ? 2 : 1;
            if (e >= n) return lex_fail(L, XD_E_TEMPLATE, "unterminated string literal");
            struct xd__jstr val = {0};
            rc = unescape(L, s + p + 1, e - p - 1, &val);
            if (!rc) rc = emit(L, JT_STRING, 0, val);
            L->line += count_nl(s + p, e + 1 - p);
            L->pos = e + 1;
        } else {
            rc = lex_operator(L);
        }
        if (rc) return rc;
    }
    return 0; /* end of source inside a tag: the parser reports what it expected */
}

/* {%(-|+|)\s*raw\s*(-%}\s*|%}) at q; returns the end or 0. */
static size_t match_raw_begin(const struct lexer *L, size_t q) {
    const char *s = L->s;
    size_t n = L->n, i = q + 2;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    i = skip_space(s, n, i);
    if (i + 3 > n || memcmp(s + i, "raw", 3) != 0) return 0;
    i = skip_space(s, n, i + 3);
    if (i + 3 <= n && !memcmp(s + i, "-%}", 3)) return skip_space(s, n, i + 3);
    if (i + 2 <= n && !memcmp(s + i, "%}", 2)) return i + 2;
    return 0;
}

/* The raw block's body from pos: finds {%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?). */
static int lex_raw_body(struct lexer *L) {
    const char *s = L->s;
    size_t n = L->n;
    for (size_t q = L->pos; q + 1 < n; q++) {
        if (s[q] != '{' || s[q + 1] != '%') continue;
        size_t i = q + 2;
        char sign = 0;
        if (i < n && (s[i] == '-' || s[i] == '+')) sign = s[i++];
        i = skip_space(s, n, i);
        if (i + 6 > n || memcmp(s + i, "endraw", 6) != 0) continue;
        i = skip_space(s, n, i + 6);
        size_t e;
        if (i + 3 <= n && !memcmp(s + i, "+%}", 3))
            e = i + 3;
        else if (i + 3 <= n && !memcmp(s + i, "-%}", 3))
            e = skip_space(s, n, i + 3);
        else if (i + 2 <= n && !memcmp(s + i, "%}", 2)) {
            e = i + 2;
            if (e < n && s[e] == '\n') e++;
        } else
            continue;
        size_t keep = strip_before_tag(L, s + L->pos, q - L->pos, sign, false);
        int rc = 0;
        if (keep) rc = emit(L, JT_DATA, 0, (struct xd__jstr){s + L->pos, keep});
        L->line += count_nl(s + L->pos, e - L->pos);
        L->line_starting = s[e - 1] == '\n';
        L->pos = e;
        return rc;
    }
    return lex_fail(L, XD_E_TEMPLATE, "missing end of raw directive");
}

int xd__jinja_normalize(const char *src, size_t len, struct xd__jarena *a, struct xd__jstr *out) {
    char *o = xd__jarena_alloc(a, len + 1);
    if (!o) return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            o[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            o[k++] = src[i];
        }
    }
    if (k > 0 && o[k - 1] == '\n') k--;
    o[k] = '\0';
    *out = (struct xd__jstr){o, k};
    return 0;
}

int xd__jinja_lex(const char *src, size_t len, struct xd__jarena *a, size_t max_tokens,
                  struct xd__jtoken **out, size_t *n_out, char *err, size_t errlen) {
    struct lexer L = {.s = src,
                      .n = len,
                      .line = 1,
                      .line_starting = true,
                      .a = a,
                      .max = max_tokens,
                      .err = err,
                      .errlen = errlen};
    for (size_t i = 0; i < len;) {
        int k = xd_utf8_check(src + i, len - i);
        if (k <= 0) {
            L.line = 1 + count_nl(src, i);
            return lex_fail(&L, XD_E_TEMPLATE, "template is not valid UTF-8 (byte %zu)", i);
        }
        i += (size_t)k;
    }
    int rc = 0;
    while (!rc && L.pos < len) {
        /* the next tag opener: "{{", "{%" or "{#" */
        size_t q = L.pos;
        while (q + 1 < len &&
               !(src[q] == '{' && (src[q + 1] == '{' || src[q + 1] == '%' || src[q + 1] == '#')))
            q++;
        if (q + 1 >= len) {
            rc = emit(&L, JT_DATA, 0, (struct xd__jstr){src + L.pos, len - L.pos});
            L.pos = len;
            break;
        }
        char kind = src[q + 1];
        char sign = q + 2 < len && (src[q + 2] == '-' || src[q + 2] == '+') ? src[q + 2] : 0;
        size_t raw_end = kind == '%' ? match_raw_begin(&L, q) : 0;
        size_t keep = strip_before_tag(&L, src + L.pos, q - L.pos, sign, kind == '{');
        if (keep) rc = emit(&L, JT_DATA, 0, (struct xd__jstr){src + L.pos, keep});
        if (rc) break;
        L.line += count_nl(src + L.pos, q - L.pos);
        size_t body = q + 2 + (sign ? 1 : 0);
        if (raw_end) {
            L.line += count_nl(src + q, raw_end - q);
            L.line_starting = src[raw_end - 1] == '\n';
            L.pos = raw_end;
            rc = lex_raw_body(&L);
        } else if (kind == '#') {
            size_t e = body;
            while (e + 1 < len && !(src[e] == '#' && src[e + 1] == '}')) e++;
            if (e + 1 >= len) return lex_fail(&L, XD_E_TEMPLATE, "missing end of comment tag");
            size_t end = e + 2;
            if (e > body && src[e - 1] == '-')
                end = skip_space(src, len, end);
            else if (!(e > body && src[e - 1] == '+') && end < len && src[end] == '\n')
                end++;
            L.line += count_nl(src + q, end - q);
            L.line_starting = src[end - 1] == '\n';
            L.pos = end;
        } else {
            rc = emit(&L, kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, 0,
                      (struct xd__jstr){src + q, body - q});
            L.pos = body;
            L.line_starting = false;
            if (!rc) rc = lex_tag(&L, kind == '%');
        }
    }
    if (!rc) rc = emit(&L, JT_EOF, 0, (struct xd__jstr){src + len, 0});
    if (rc) return rc;
    *out = L.toks;
    *n_out = L.ntoks;
    return 0;
}
