/* jinja_unicode.c - CPython's str case mapping and character predicates for the Jinja
 * interpreter: lower, upper, title, capitalize and swapcase with the full (multi-character)
 * mappings and lower()'s final-sigma rule, written after Objects/unicodeobject.c, over tables
 * generated from the reference Python itself (engine/gen_jinja_unicode.py), so "ÉCOLE"|lower,
 * "ß".upper() and "ΌΣΟΣ".lower() come out as Python's Jinja2 renders them.
 *
 * Trade-off: lookups bisect sorted tables (a dozen probes per non-ASCII character; ASCII takes
 * a fast path) instead of CPython's two-level direct index. Not here: casefold, normalization,
 * locale-dependent rules (Python has none either).
 */
#include <string.h>

#include "jinja_impl.h"
#include "unicode.h"
#include "xd_error.h"

unsigned xd__jpy_flags(uint32_t cp) {
    size_t lo = 0, hi = xd__jucd_n_ranges;
    while (hi - lo > 1) { /* the last range starting at or before cp */
        size_t mid = lo + (hi - lo) / 2;
        if ((xd__jucd_ranges[mid] >> 11) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return xd__jucd_ranges[lo] & 0x7FF;
}

/* Mapping which (0 lower, 1 upper, 2 title) of cp into out; returns the count (1-3). */
static size_t map_cp(uint32_t cp, int which, uint32_t out[3]) {
    size_t lo = 0, hi = xd__jucd_n_maps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (xd__jucd_maps[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < xd__jucd_n_maps && xd__jucd_maps[lo].cp == cp) {
        out[0] = (uint32_t)((int32_t)cp + xd__jucd_maps[lo].d[which]);
        return 1;
    }
    for (size_t k = 0; k < xd__jucd_n_full; k++) /* about a hundred entries */
        if (xd__jucd_full[k].cp == cp) {
            size_t n = xd__jucd_full[k].m[which].n;
            memcpy(out, xd__jucd_full[k].m[which].cp, n * sizeof *out);
            return n;
        }
    out[0] = cp;
    return 1;
}

static bool cased(uint32_t cp) {
    return (xd__jpy_flags(cp) & (XJ_U_LOWER | XJ_U_UPPER | XJ_U_TITLE)) != 0;
}

/* CPython's handle_capital_sigma: U+03A3 lowers to final sigma (U+03C2) when a cased letter
 * precedes it and none follows, case-ignorable characters skipped both ways. */
static uint32_t sigma(const uint32_t *cps, size_t n, size_t i) {
    size_t j = i;
    uint32_t ch = 0;
    bool found = false;
    while (j > 0) {
        ch = cps[--j];
        if (!(xd__jpy_flags(ch) & XJ_U_IGNORABLE)) {
            found = true;
            break;
        }
    }
    bool final = found && cased(ch);
    if (final && i + 1 < n) {
        size_t k = i + 1;
        while (k < n && (xd__jpy_flags(cps[k]) & XJ_U_IGNORABLE)) k++;
        final = k == n || !cased(cps[k]);
    }
    return final ? 0x3C2 : 0x3C3;
}

static size_t lower_at(const uint32_t *cps, size_t n, size_t i, uint32_t out[3]) {
    if (cps[i] == 0x3A3) {
        out[0] = sigma(cps, n, i);
        return 1;
    }
    return map_cp(cps[i], 0, out);
}

int xd__jpy_case(struct xd__jctx *c, struct xd__jstr s, enum xd__jcasemode m,
                 struct xd__jval *out) {
    int rc = xd__jcharge(c, s.n * 2);
    if (rc) return rc;
    size_t n = xd__jutf8_len(s.p, s.n);
    uint32_t *cps = n ? xd__jalloc(c, n * sizeof *cps) : NULL;
    if (n && !cps) return c->err;
    bool ascii = n == s.n;
    for (size_t i = 0, k = 0; k < n; k++) cps[k] = xd__jutf8_next(s.p, s.n, &i);
    /* a full mapping yields at most 3 code points of at most 4 bytes */
    if (n > SIZE_MAX / 12) return xd__jerr(c, XD_E_TEMPLATE_LIMIT, "string too long");
    char *o = xd__jalloc(c, (ascii ? s.n : n * 12) + 1);
    if (!o) return c->err;
    size_t len = 0;
    bool prev_cased = false;
    for (size_t i = 0; i < n; i++) {
        uint32_t ch = cps[i], mapped[3];
        size_t k;
        switch (m) {
        case XJ_CM_LOWER: k = lower_at(cps, n, i, mapped); break;
        case XJ_CM_UPPER: k = map_cp(ch, 1, mapped); break;
        case XJ_CM_CAPITALIZE:
            k = i == 0 ? map_cp(ch, 2, mapped) : lower_at(cps, n, i, mapped);
            break;
        case XJ_CM_TITLE:
            k = prev_cased ? lower_at(cps, n, i, mapped) : map_cp(ch, 2, mapped);
            prev_cased = cased(ch);
            break;
        default: { /* swapcase */
            unsigned f = xd__jpy_flags(ch);
            if (f & XJ_U_UPPER)
                k = lower_at(cps, n, i, mapped);
            else if (f & XJ_U_LOWER)
                k = map_cp(ch, 1, mapped);
            else {
                mapped[0] = ch;
                k = 1;
            }
        }
        }
        for (size_t j = 0; j < k; j++) len += xd_utf8_encode(mapped[j], o + len);
    }
    o[len] = '\0';
    *out = xd__jv_str(o, len);
    return 0;
}
