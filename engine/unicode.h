/* unicode.h - the little Unicode the tokenizers need: UTF-8 decoding the way llama.cpp does it,
 * and a codepoint's general-category class (\p{L}, \p{N}, ...) and White_Space bit from the
 * generated table in unicode_tables.c (engine/gen_unicode_tables.py), which equals llama.cpp's
 * unicode_cpt_flags table (Unicode 15.1) in every class and whitespace bit, so the pre-tokenizers
 * split where llama.cpp splits also in newer scripts.
 *
 * Nothing here allocates or fails; every function is pure.
 */
#ifndef XD_UNICODE_H
#define XD_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Per-codepoint flags: at most one category bit (none for unassigned codepoints), plus
 * XD_U_SPACE. Same classes as llama.cpp's unicode_cpt_flags. */
enum xd_uflag {
    XD_U_NUMBER = 0x01,    /* \p{N}: Nd Nl No */
    XD_U_LETTER = 0x02,    /* \p{L}: Lu Ll Lt Lm Lo */
    XD_U_SEPARATOR = 0x04, /* \p{Z}: Zs Zl Zp */
    XD_U_MARK = 0x08,      /* \p{M}: Mn Mc Me */
    XD_U_PUNCT = 0x10,     /* \p{P}: Pc Pd Ps Pe Pi Pf Po */
    XD_U_SYMBOL = 0x20,    /* \p{S}: Sm Sc Sk So */
    XD_U_CONTROL = 0x40,   /* \p{C} less Cn: Cc Cf Cs Co */
    XD_U_SPACE = 0x80,     /* White_Space (PropList.txt); what the pre-tokenizers call \s */
};

#define XD_UNICODE_REPLACEMENT 0xFFFDu

/* Flags of codepoint cpt (0 for unassigned codepoints and cpt > U+10FFFF). Can't fail. */
unsigned xd_unicode_flags(uint32_t cpt);

/* Unicode version the table was made from, e.g. "15.0.0 + the 15.1 additions". */
const char *xd_unicode_version(void);

/* Length of the UTF-8 sequence that byte b starts, from its high nibble as llama.cpp does it:
 * 1 for ASCII and stray continuation bytes, 2 for 0xC0-0xDF, 3 for 0xE0-0xEF, 4 for 0xF0-0xFF. */
static inline size_t xd_utf8_seq_len(uint8_t b) {
    static const uint8_t len_by_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len_by_nibble[b >> 4];
}

/* Decode the codepoint at s[*pos] (pos < len) and advance *pos. An ill-formed sequence (stray
 * continuation byte, missing continuation bytes, lead byte 0xF8-0xFF) yields U+FFFD and advances
 * one byte - exactly llama.cpp's unicode_cpts_from_utf8, which also lets overlong forms and
 * surrogates through. Can't fail. */
uint32_t xd_utf8_decode(const char *s, size_t len, size_t *pos);

/* Encode cpt (<= U+10FFFF) as UTF-8 into out; returns the byte count (1-4), 0 if cpt is too
 * large (nothing written). */
size_t xd_utf8_encode(uint32_t cpt, char out[4]);

/* Check the character at s[0..len) (len >= 1) strictly (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). Returns n (1-4) when s[0..n) is one well-formed
 * character; 0 when all of s is a well-formed but incomplete prefix of one (more bytes needed);
 * -k when the first k bytes are ill-formed (the maximal subpart that one U+FFFD replaces). */
int xd_utf8_check(const char *s, size_t len);

/* ---- internal: the generated table (unicode_tables.c) ------------------------------------- */
extern const uint32_t xd__unicode_ranges[];
extern const size_t xd__unicode_n_ranges;
extern const char xd__unicode_version[];

#endif
