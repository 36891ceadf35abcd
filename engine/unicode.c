/* unicode.c - UTF-8 coding and codepoint classes for the tokenizers.
 *
 * Two decoders live here on purpose. xd_utf8_decode() reproduces llama.cpp's lenient decoder
 * byte for byte (overlong forms and surrogates pass, anything else ill-formed becomes U+FFFD one
 * byte at a time), because the BPE pre-tokenizers must split exactly where llama.cpp splits and
 * re-encode what it re-encodes. xd_utf8_check() is strict (RFC 3629) and serves the streaming
 * detokenizer, whose output must be valid UTF-8 for JSON.
 *
 * Class lookup bisects the generated range table (unicode_tables.c); ASCII, the common case,
 * takes the same path - a 12-probe search over a 9 KiB table stays in L1 and costs less than
 * building llama.cpp's 1.1 M-entry direct table at startup.
 */
#include "unicode.h"

unsigned xd_unicode_flags(uint32_t cpt) {
    if (cpt > 0x10FFFF) return 0;
    /* last entry whose first codepoint <= cpt; entry 0 starts at U+0000 */
    size_t lo = 0, hi = xd__unicode_n_ranges;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((xd__unicode_ranges[mid] >> 8) <= cpt)
            lo = mid;
        else
            hi = mid;
    }
    return xd__unicode_ranges[lo] & 0xFFu;
}

const char *xd_unicode_version(void) { return xd__unicode_version; }

static int is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }

uint32_t xd_utf8_decode(const char *s, size_t len, size_t *pos) {
    const uint8_t *u = (const uint8_t *)s + *pos;
    size_t left = len - *pos;
    uint8_t b = u[0];
    if (!(b & 0x80)) {
        *pos += 1;
        return b;
    }
    /* llama.cpp tests the lead's bits in this order and needs every continuation byte present */
    if ((b & 0x40) && !(b & 0x20)) {
        if (left >= 2 && is_cont(u[1])) {
            *pos += 2;
            return ((uint32_t)(b & 0x1F) << 6) | (u[1] & 0x3F);
        }
    } else if ((b & 0x40) && !(b & 0x10)) {
        if (left >= 3 && is_cont(u[1]) && is_cont(u[2])) {
            *pos += 3;
            return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        }
    } else if ((b & 0x40) && !(b & 0x08)) {
        if (left >= 4 && is_cont(u[1]) && is_cont(u[2]) && is_cont(u[3])) {
            *pos += 4;
            return ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
                   ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        }
    }
    *pos += 1;
    return XD_UNICODE_REPLACEMENT;
}

size_t xd_utf8_encode(uint32_t cpt, char out[4]) {
    if (cpt <= 0x7F) {
        out[0] = (char)cpt;
        return 1;
    }
    if (cpt <= 0x7FF) {
        out[0] = (char)(0xC0 | (cpt >> 6));
        out[1] = (char)(0x80 | (cpt & 0x3F));
        return 2;
    }
    if (cpt <= 0xFFFF) {
        out[0] = (char)(0xE0 | (cpt >> 12));
        out[1] = (char)(0x80 | ((cpt >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cpt & 0x3F));
        return 3;
    }
    if (cpt <= 0x10FFFF) {
        out[0] = (char)(0xF0 | (cpt >> 18));
        out[1] = (char)(0x80 | ((cpt >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cpt >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cpt & 0x3F));
        return 4;
    }
    return 0;
}

int xd_utf8_check(const char *s, size_t len) {
    const uint8_t *u = (const uint8_t *)s;
    uint8_t b = u[0];
    if (b < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte (Table 3-7 of Unicode) */
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0; /* no overlongs */
        if (b == 0xED) hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90; /* no overlongs */
        if (b == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return -1; /* continuation byte, C0, C1, F5-FF */
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= len) return 0;
        uint8_t c = u[i];
        uint8_t clo = i == 1 ? lo : 0x80, chi = i == 1 ? hi : 0xBF;
        if (c < clo || c > chi) return -(int)i;
    }
    return (int)need;
}
