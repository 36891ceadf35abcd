/* tokenizer_pre.c - BPE pre-tokenizers: split a text into the words that BPE merges within.
 *
 * A pre-tokenizer is a row of a table: the tokenizer.ggml.pre names it answers to and an
 * ordered list of passes. Each pass refines the current list of segments - as llama.cpp's
 * unicode_regex_split() applies its regexes one after the other - and keeps both the matches
 * and the text between them as segments, so the passes only ever split, never join.
 *
 * Every pass is a hand-written matcher over codepoints and their class flags, never a regex
 * engine, and is written to be equivalent to what llama.cpp runs for the same regex:
 *   - GPT2, LLAMA3 and QWEN2 port llama.cpp's custom matchers (unicode_regex_split_custom_*),
 *     including their quirks (a lone trailing space is its own word, the (?!\S) look-ahead
 *     gives back one whitespace, "'S" matches case-insensitively for LLAMA3/QWEN2 only);
 *   - the other passes mirror the std::regex / std::wregex fallbacks: leftmost match, greedy
 *     runs, and llama.cpp's input rewriting - a non-ASCII whitespace codepoint is seen as
 *     U+000B, so it matches \s and no bracket class (that is why U+3000 in deepseek-llm's
 *     "　-。" range never matches), and a \p{..} class is seen through the collapsed text
 *     (ASCII by the bytes listed in k_ucat_map, other codepoints by category).
 * Trade-off: each new pre-tokenizer costs a pass or a row here instead of a regex string, and
 * in exchange the split is linear time, allocation-free per pass, and cannot hit the
 * catastrophic backtracking std::regex shows on long inputs. The classes come from
 * unicode_tables.c, generated to equal llama.cpp's own table codepoint for codepoint.
 */
#include <string.h>

#include "tokenizer_impl.h"
#include "unicode.h"
#include "xd_error.h"

#define OOR 0xFFFFFFFFu /* the codepoint "read" outside the segment */

static const struct xd__pretok pretoks[] = {
    /* llama.cpp LLAMA_VOCAB_PRE_TYPE_DEFAULT */
    {"default", 4,
     {XD__PASS_PUNCT_RUN, XD__PASS_GPT2, XD__PASS_NUMBER_RUN, XD__PASS_DIGIT3},
     false, false},
    {"gpt-2", 1, {XD__PASS_GPT2}, false, false},
    {"phi-2", 1, {XD__PASS_GPT2}, false, false},
    {"mpt", 1, {XD__PASS_GPT2}, false, false},
    {"olmo", 1, {XD__PASS_GPT2}, false, false},
    {"llama3", 1, {XD__PASS_LLAMA3}, true, true},
    {"llama-v3", 1, {XD__PASS_LLAMA3}, true, true},
    {"llama-bpe", 1, {XD__PASS_LLAMA3}, true, true},
    {"falcon3", 1, {XD__PASS_LLAMA3}, true, true},
    {"dbrx", 1, {XD__PASS_LLAMA3}, false, false},
    {"smaug-bpe", 1, {XD__PASS_LLAMA3}, false, false},
    {"qwen2", 1, {XD__PASS_QWEN2}, false, false},
    {"deepseek-r1-qwen", 1, {XD__PASS_QWEN2}, false, false},
    {"stablelm2", 1, {XD__PASS_QWEN2}, false, false},
    {"deepseek-llm", 6,
     {XD__PASS_CRLF, XD__PASS_DS_LETTERS, XD__PASS_DS_PUNCT, XD__PASS_TRAIL_SPACE, XD__PASS_DS_CJK,
      XD__PASS_NUMBER_RUN},
     false, false},
};

const struct xd__pretok *xd__pretok_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof pretoks / sizeof pretoks[0]; i++)
        if (strlen(pretoks[i].name) == len && !memcmp(pretoks[i].name, name, len))
            return &pretoks[i];
    return NULL;
}

/* ---- bracket classes of deepseek-llm's regexes, as codepoint ranges ------------------------ */

struct cp_range {
    uint32_t lo, hi;
};

/* [A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕ...𞤀-𞥃] */
static const struct cp_range ds_letters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
    {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D},
    {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5},
    {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5},
    {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D},
    {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D},
    {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC},
    {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D},
    {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134},
    {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184},
    {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D},
    {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF},
    {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

/* [!-/:-~！-／：-～‘-‟　-。] (U+3000 never matches: it is whitespace, seen as U+000B) */
static const struct cp_range ds_punct[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F},
    {0xFF1A, 0xFF5E},
};

/* [一-龥ࠀ-一가-퟿] */
static const struct cp_range ds_cjk[] = {{0x800, 0x9FA5}, {0xAC00, 0xD7FF}};

static bool in_ranges(const struct cp_range *r, size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < r[mid].lo)
            hi = mid;
        else if (c > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the segment being split ---------------------------------------------------------------- */

struct seg {
    const uint32_t *cpt;
    const uint16_t *fl;
    size_t ini, end;  /* current segment [ini, end) */
    size_t prev_end;  /* end of the last word emitted */
    size_t *out;      /* word lengths; capacity >= number of codepoints, so never full */
    size_t n_out;
};

static uint32_t cpt_at(const struct seg *s, size_t pos) {
    return pos < s->end ? s->cpt[pos] : OOR;
}

static unsigned fl_at(const struct seg *s, size_t pos) {
    return pos < s->end ? s->fl[pos] : 0;
}

/* emit the word [prev_end, end); returns its length */
static size_t emit(struct seg *s, size_t end) {
    size_t len = end - s->prev_end;
    if (len > 0) s->out[s->n_out++] = len;
    s->prev_end = end;
    return len;
}

static uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 's|'t|'re|'ve|'m|'ll|'d at pos: returns the match length (0: none). lower: case-insensitive
 * (llama.cpp lowercases with the full Unicode map; only ASCII letters lowercase into these) */
static size_t contraction(const struct seg *s, size_t pos, bool lower) {
    if (cpt_at(s, pos) != '\'' || pos + 1 >= s->end) return 0;
    uint32_t a = cpt_at(s, pos + 1);
    if (lower) a = ascii_lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= s->end) return 0;
    uint32_t b = cpt_at(s, pos + 2);
    if (lower) b = ascii_lower(b);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

#define LNS (XD_U_LETTER | XD_U_NUMBER | XD_U_SPACE)

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (llama.cpp unicode_regex_split_custom_gpt2) */
static void pass_gpt2(struct seg *s) {
    for (size_t pos = s->ini; pos < s->end;) {
        uint32_t c = cpt_at(s, pos);
        size_t k = contraction(s, pos, false);
        if (k) {
            pos += emit(s, pos + k);
            continue;
        }
        unsigned f2 = c == ' ' ? fl_at(s, pos + 1) : fl_at(s, pos);
        if (f2 & XD_U_LETTER) { /*  ?\p{L}+ */
            pos += c == ' ';
            while (f2 & XD_U_LETTER) f2 = fl_at(s, ++pos);
            emit(s, pos);
            continue;
        }
        if (f2 & XD_U_NUMBER) { /*  ?\p{N}+ */
            pos += c == ' ';
            while (f2 & XD_U_NUMBER) f2 = fl_at(s, ++pos);
            emit(s, pos);
            continue;
        }
        if (!(f2 & LNS) && f2) { /*  ?[^\s\p{L}\p{N}]+ */
            pos += c == ' ';
            while (!(f2 & LNS) && f2) f2 = fl_at(s, ++pos);
            emit(s, pos);
            continue;
        }
        size_t nws = 0;
        while (fl_at(s, pos + nws) & XD_U_SPACE) nws++;
        if (nws > 1 && cpt_at(s, pos + nws) != OOR) { /* \s+(?!\S): leave the last one */
            pos += nws - 1;
            emit(s, pos);
            continue;
        }
        if (nws > 0) { /* \s+ */
            pos += nws;
            emit(s, pos);
            continue;
        }
        emit(s, ++pos); /* no match: the codepoint alone */
    }
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (llama.cpp unicode_regex_split_custom_llama3, and _qwen2 with max_digits 1) */
static void pass_llama3(struct seg *s, size_t max_digits) {
    for (size_t pos = s->ini; pos < s->end;) {
        uint32_t c = cpt_at(s, pos);
        unsigned f = fl_at(s, pos);
        size_t k = contraction(s, pos, true);
        if (k) {
            pos += emit(s, pos + k);
            continue;
        }
        if (!(c == '\r' || c == '\n' || (f & XD_U_NUMBER))) { /* [^\r\n\p{L}\p{N}]?\p{L}+ */
            if ((f & XD_U_LETTER) || (fl_at(s, pos + 1) & XD_U_LETTER)) {
                pos++;
                while (fl_at(s, pos) & XD_U_LETTER) pos++;
                emit(s, pos);
                continue;
            }
        }
        if (f & XD_U_NUMBER) { /* \p{N}{1,max_digits} */
            size_t ini = pos;
            while (fl_at(s, pos) & XD_U_NUMBER) {
                if (++pos - ini >= max_digits) {
                    emit(s, pos);
                    ini = pos;
                }
            }
            emit(s, pos);
            continue;
        }
        unsigned f2 = c == ' ' ? fl_at(s, pos + 1) : f;
        if (!(f2 & LNS) && f) { /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
            pos += c == ' ';
            while (!(f2 & LNS) && f2) f2 = fl_at(s, ++pos);
            uint32_t c2 = cpt_at(s, pos);
            while (c2 == '\r' || c2 == '\n') c2 = cpt_at(s, ++pos);
            emit(s, pos);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (fl_at(s, pos + nws) & XD_U_SPACE) {
            uint32_t c2 = cpt_at(s, pos + nws);
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0) { /* \s*[\r\n]+ */
            pos = last_rn;
            emit(s, pos);
            continue;
        }
        if (nws > 1 && cpt_at(s, pos + nws) != OOR) { /* \s+(?!\S) */
            pos += nws - 1;
            emit(s, pos);
            continue;
        }
        if (nws > 0) { /* \s+ */
            pos += nws;
            emit(s, pos);
            continue;
        }
        emit(s, ++pos);
    }
}

/* ---- the std::regex-equivalent passes ------------------------------------------------------- */

/* Is the codepoint at pos in the pass's bracket class? c and f are the codepoint and flags. */
static bool in_class(enum xd__pass pass, uint32_t c, unsigned f) {
    /* std::wregex sees non-ASCII whitespace as U+000B: only \s matches it */
    bool nonascii_space = c > 0x7F && (f & XD_U_SPACE);
    switch (pass) {
    case XD__PASS_CRLF:
        return c == '\r' || c == '\n';
    case XD__PASS_DS_LETTERS:
        return !nonascii_space && in_ranges(ds_letters, N_OF(ds_letters), c);
    case XD__PASS_DS_PUNCT:
        return !nonascii_space && in_ranges(ds_punct, N_OF(ds_punct), c);
    case XD__PASS_DS_CJK:
        return !nonascii_space && in_ranges(ds_cjk, N_OF(ds_cjk), c);
    case XD__PASS_DIGIT3:
        return c >= '0' && c <= '9';
    case XD__PASS_NUMBER_RUN: /* collapsed \p{N}: ASCII 0-9, else the category */
        return c < 0x80 ? (c >= '0' && c <= '9') : (!nonascii_space && (f & XD_U_NUMBER));
    case XD__PASS_PUNCT_RUN: /* collapsed \p{P} plus $+<=>^~| : every ASCII punctuation or
                                symbol but '`', else the category */
        if (c < 0x80)
            return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) ||
                   (c >= 0x5B && c <= 0x5F) || (c >= 0x7B && c <= 0x7E);
        return !nonascii_space && (f & XD_U_PUNCT);
    default:
        return false;
    }
}

/* Leftmost-greedy matches of "\s?[class]+" (opt_space), "[class]+" (run), "[class]" or
 * "[class]{3}" (exact 1 or 3); text between matches stays a segment of its own. */
static void pass_class(struct seg *s, enum xd__pass pass, bool opt_space, bool run, size_t exact) {
    size_t pos = s->ini;
    while (pos < s->end) {
        size_t start = pos, p = pos;
        if (opt_space && (s->fl[p] & XD_U_SPACE) && p + 1 < s->end &&
            in_class(pass, s->cpt[p + 1], s->fl[p + 1]))
            p++;
        if (!in_class(pass, s->cpt[p], s->fl[p])) {
            pos++;
            continue;
        }
        if (run) {
            while (p < s->end && in_class(pass, s->cpt[p], s->fl[p])) p++;
        } else {
            size_t k = 0;
            while (k < exact && p + k < s->end && in_class(pass, s->cpt[p + k], s->fl[p + k])) k++;
            if (k < exact) {
                pos++;
                continue;
            }
            p += k;
        }
        emit(s, start); /* the unmatched text before the match */
        emit(s, p);
        pos = p;
    }
}

/* \s+$ : the trailing whitespace of the segment */
static void pass_trailing_space(struct seg *s) {
    size_t p = s->end;
    while (p > s->ini && (s->fl[p - 1] & XD_U_SPACE)) p--;
    emit(s, p);
}

static void run_pass(struct seg *s, enum xd__pass pass) {
    switch (pass) {
    case XD__PASS_GPT2: pass_gpt2(s); break;
    case XD__PASS_LLAMA3: pass_llama3(s, 3); break;
    case XD__PASS_QWEN2: pass_llama3(s, 1); break;
    case XD__PASS_CRLF: pass_class(s, pass, false, false, 1); break;
    case XD__PASS_DIGIT3: pass_class(s, pass, false, false, 3); break;
    case XD__PASS_DS_LETTERS:
    case XD__PASS_DS_PUNCT: pass_class(s, pass, true, true, 0); break;
    case XD__PASS_DS_CJK:
    case XD__PASS_NUMBER_RUN:
    case XD__PASS_PUNCT_RUN: pass_class(s, pass, false, true, 0); break;
    case XD__PASS_TRAIL_SPACE: pass_trailing_space(s); break;
    }
    emit(s, s->end); /* the rest of the segment */
}

int xd__pretok_split(const struct xd__pretok *pre, const uint32_t *cpts, const uint16_t *flags,
                     size_t n, struct xd__scratch *sc, size_t *n_words) {
    *n_words = 0;
    if (n == 0) return 0;
    if (xd__grow((void **)&sc->lens, &sc->lens_cap, n, sizeof(size_t)) ||
        xd__grow((void **)&sc->lens2, &sc->lens2_cap, n, sizeof(size_t)))
        return XD_E_NOMEM;
    size_t n_in = 1;
    sc->lens[0] = n;
    for (unsigned i = 0; i < pre->n_passes; i++) {
        struct seg s = {.cpt = cpts, .fl = flags, .out = sc->lens2};
        size_t start = 0;
        for (size_t j = 0; j < n_in; j++) {
            s.ini = s.prev_end = start;
            s.end = start + sc->lens[j];
            run_pass(&s, (enum xd__pass)pre->passes[i]);
            start = s.end;
        }
        size_t *t = sc->lens;
        sc->lens = sc->lens2;
        sc->lens2 = t;
        size_t tc = sc->lens_cap;
        sc->lens_cap = sc->lens2_cap;
        sc->lens2_cap = tc;
        n_in = s.n_out;
    }
    *n_words = n_in;
    return 0;
}
