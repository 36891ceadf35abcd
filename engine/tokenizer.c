/* tokenizer.c - the vocabulary: loading it from GGUF, special tokens, pieces, detokenizing.
 *
 * Loading copies every token text into one arena and indexes it with an open-addressing hash
 * (text -> id), decides each token's attributes (token_type, plus llama.cpp's by-text rules:
 * end-of-generation and fill-in-the-middle tokens are forced to CONTROL), and precomputes the
 * decoded piece of every token, so piece lookup and detokenizing never decode at run time.
 * The tokenizer is immutable afterwards; each xd_tokenize() call brings its own scratch.
 *
 * Tokenizing first cuts special tokens out of the text, exactly as llama.cpp's
 * tokenizer_st_partition: special texts are tried longest first, each one splitting every
 * remaining text fragment at all its occurrences. The text fragments then go to the SPM or the
 * BPE algorithm (tokenizer_spm.c, tokenizer_bpe.c). llama.cpp runs a substring search per
 * special token over the whole text - with DeepSeek's 2,400 user-defined tokens that is 2,400
 * passes; here one scan with a trie over the special texts first finds which ones occur at all,
 * and only those take part, which gives the same fragments in one pass for the usual text.
 *
 * Streaming detokenization (struct xd_detok) holds back a UTF-8 character split across tokens
 * and replaces what can never become a character by U+FFFD, so a server can put every chunk
 * straight into JSON. Not done: llama.cpp's lstrip/rstrip token attributes (set by model name
 * for phi-3 and a few BERTs) and its clean_up_tokenization_spaces pass, which only its
 * whole-sequence llama_detokenize applies and which does not round-trip.
 */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer_impl.h"
#include "unicode.h"
#include "xd_error.h"

#define MAX_TEXT_LEN (1u << 30) /* longest text xd_tokenize() accepts */

/* ---- small shared helpers ---------------------------------------------------------------- */

int xd__grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem) return XD_E_NOMEM;
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (!q) return XD_E_NOMEM;
    *p = q;
    *cap = n;
    return 0;
}

int xd__tokens_push(struct xd_tokens *out, int32_t id) {
    if (out->n == out->cap && xd__grow((void **)&out->ids, &out->cap, out->n + 1, sizeof(int32_t)))
        return XD_E_NOMEM;
    out->ids[out->n++] = id;
    return 0;
}

void xd_tokens_free(struct xd_tokens *out) {
    if (!out) return;
    free(out->ids);
    *out = (struct xd_tokens){0};
}

void xd__scratch_free(struct xd__scratch *s) {
    free(s->sym);
    free(s->heap);
    free(s->cpts);
    free(s->flags);
    free(s->lens);
    free(s->lens2);
    free(s->buf);
    *s = (struct xd__scratch){0};
}

uint64_t xd__fnv(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- bigram heap: highest prio first, then lowest left ------------------------------------ */

static bool before(const struct xd__bigram *a, const struct xd__bigram *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

int xd__heap_push(struct xd__scratch *s, struct xd__bigram b) {
    if (xd__grow(&s->heap, &s->heap_cap, s->heap_n + 1, sizeof b)) return XD_E_NOMEM;
    struct xd__bigram *h = s->heap;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&b, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = b;
    return 0;
}

struct xd__bigram xd__heap_pop(struct xd__scratch *s) {
    struct xd__bigram *h = s->heap;
    struct xd__bigram top = h[0], last = h[--s->heap_n];
    size_t n = s->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&h[c + 1], &h[c])) c++;
        if (!before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0) h[i] = last;
    return top;
}

/* ---- id maps -------------------------------------------------------------------------------- */

static int idmap_init(struct xd__idmap *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    if (cap > UINT32_MAX) return XD_E_OVERFLOW;
    m->slots = calloc(cap, sizeof(uint32_t));
    if (!m->slots) return XD_E_NOMEM;
    m->mask = (uint32_t)(cap - 1);
    return 0;
}

static const char *tok_text(const struct xd_tokenizer *tok, int32_t id) {
    return tok->text + tok->tokens[id].off;
}

int32_t xd__vocab_find(const struct xd_tokenizer *tok, const char *p, size_t n) {
    uint32_t i = (uint32_t)xd__fnv(XD__FNV_INIT, p, n) & tok->vocab.mask;
    for (;; i = (i + 1) & tok->vocab.mask) {
        uint32_t v = tok->vocab.slots[i];
        if (!v) return -1;
        int32_t id = (int32_t)(v - 1);
        if (tok->tokens[id].len == n && !memcmp(tok_text(tok, id), p, n)) return id;
    }
}

/* insert id under its text; a later duplicate replaces the earlier (llama.cpp's token_to_id) */
static void vocab_insert(struct xd_tokenizer *tok, int32_t id) {
    const char *p = tok_text(tok, id);
    size_t n = tok->tokens[id].len;
    uint32_t i = (uint32_t)xd__fnv(XD__FNV_INIT, p, n) & tok->vocab.mask;
    for (;; i = (i + 1) & tok->vocab.mask) {
        uint32_t v = tok->vocab.slots[i];
        if (!v || (tok->tokens[v - 1].len == n && !memcmp(tok_text(tok, (int32_t)v - 1), p, n))) {
            tok->vocab.slots[i] = (uint32_t)id + 1;
            return;
        }
    }
}

static uint64_t pair_hash(const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = xd__fnv(XD__FNV_INIT, l, ln);
    h ^= (uint64_t)ln * 0x9E3779B97F4A7C15ull;
    return xd__fnv(h, r, rn);
}

static bool merge_is(const struct xd_tokenizer *tok, uint32_t rank, const char *l, size_t ln,
                     const char *r, size_t rn) {
    const struct xd__merge *m = &tok->merges[rank];
    return m->left_len == ln && m->right_len == rn &&
           !memcmp(tok->merge_text + m->left_off, l, ln) &&
           !memcmp(tok->merge_text + m->right_off, r, rn);
}

int32_t xd__merge_rank(const struct xd_tokenizer *tok, const char *l, size_t ln, const char *r,
                       size_t rn) {
    if (!tok->n_merges) return -1;
    uint32_t i = (uint32_t)pair_hash(l, ln, r, rn) & tok->merge_map.mask;
    for (;; i = (i + 1) & tok->merge_map.mask) {
        uint32_t v = tok->merge_map.slots[i];
        if (!v) return -1;
        if (merge_is(tok, v - 1, l, ln, r, rn)) return (int32_t)(v - 1);
    }
}

/* insert merge rank; the first of duplicates wins (llama.cpp's bpe_ranks.emplace) */
static void merge_insert(struct xd_tokenizer *tok, uint32_t rank) {
    const struct xd__merge *m = &tok->merges[rank];
    const char *l = tok->merge_text + m->left_off, *r = tok->merge_text + m->right_off;
    uint32_t i = (uint32_t)pair_hash(l, m->left_len, r, m->right_len) & tok->merge_map.mask;
    for (;; i = (i + 1) & tok->merge_map.mask) {
        uint32_t v = tok->merge_map.slots[i];
        if (!v) {
            tok->merge_map.slots[i] = rank + 1;
            return;
        }
        if (merge_is(tok, v - 1, l, m->left_len, r, m->right_len)) return;
    }
}

/* ---- GPT-2 byte map ------------------------------------------------------------------------- */

/* bytes_to_unicode(): the printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ stand for themselves, the
 * other 68 take U+0100.. in byte order */
static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t xd__byte_to_cpt(uint8_t b) {
    if (byte_is_printable(b)) return b;
    /* the 68 others, in order: 0x00-0x20 (33), 0x7F-0xA0 (34), 0xAD */
    return 0x100 + (b <= 0x20 ? b : b <= 0xA0 ? 33u + (b - 0x7Fu) : 67u);
}

int xd__cpt_to_byte(uint32_t cpt) {
    if (cpt < 0x100) return byte_is_printable(cpt) ? (int)cpt : -1;
    if (cpt >= 0x100 + 68) return -1;
    unsigned n = cpt - 0x100;
    return n < 33 ? (int)n : n < 67 ? (int)(0x7F + n - 33) : 0xAD;
}

/* ---- loading -------------------------------------------------------------------------------- */

enum special_role {
    R_BOS, R_EOS, R_EOT, R_EOM, R_UNK, R_SEP, R_PAD,
    R_FIM_PRE, R_FIM_SUF, R_FIM_MID, R_FIM_PAD, R_FIM_REP, R_FIM_SEP,
    R_COUNT
};

/* tokenizer.ggml.<key> for each role (llama.cpp spells "seperator"); later rows override */
static const struct {
    const char *key;
    enum special_role role;
} role_keys[] = {
    {"tokenizer.ggml.bos_token_id", R_BOS},       {"tokenizer.ggml.eos_token_id", R_EOS},
    {"tokenizer.ggml.eot_token_id", R_EOT},       {"tokenizer.ggml.eom_token_id", R_EOM},
    {"tokenizer.ggml.unknown_token_id", R_UNK},   {"tokenizer.ggml.seperator_token_id", R_SEP},
    {"tokenizer.ggml.padding_token_id", R_PAD},   {"tokenizer.ggml.fim_pre_token_id", R_FIM_PRE},
    {"tokenizer.ggml.fim_suf_token_id", R_FIM_SUF}, {"tokenizer.ggml.fim_mid_token_id", R_FIM_MID},
    {"tokenizer.ggml.fim_pad_token_id", R_FIM_PAD}, {"tokenizer.ggml.fim_rep_token_id", R_FIM_REP},
    {"tokenizer.ggml.fim_sep_token_id", R_FIM_SEP}, {"tokenizer.ggml.prefix_token_id", R_FIM_PRE},
    {"tokenizer.ggml.suffix_token_id", R_FIM_SUF}, {"tokenizer.ggml.middle_token_id", R_FIM_MID},
};

/* DeepSeek's texts use U+FF5C (fullwidth bar) and U+2581 */
#define DS_BAR "\xef\xbd\x9c"
#define DS_SP "\xe2\x96\x81"

/* Roles llama.cpp finds by token text when no key names them; the token is forced to CONTROL. */
static const struct {
    enum special_role role;
    const char *texts[9];
} role_texts[] = {
    {R_EOT, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
             "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]"}},
    {R_EOT, {"<" DS_BAR "end" DS_SP "of" DS_SP "sentence" DS_BAR ">", "<end_of_utterance>"}},
    {R_EOM, {"<|eom_id|>"}},
    {R_FIM_PRE, {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                 "<" DS_BAR "fim" DS_SP "begin" DS_BAR ">",
                 "<PRE>", DS_SP "<PRE>", "<|code_prefix|>", "<|prefix|>"}},
    {R_FIM_SUF, {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                 "<" DS_BAR "fim" DS_SP "hole" DS_BAR ">",
                 "<SUF>", DS_SP "<SUF>", "<|code_suffix|>", "<|suffix|>"}},
    {R_FIM_MID, {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                 "<" DS_BAR "fim" DS_SP "end" DS_BAR ">",
                 "<MID>", DS_SP "<MID>", "<|code_middle|>", "<|middle|>"}},
    {R_FIM_PAD, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
    {R_FIM_REP, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
    {R_FIM_SEP, {"<|file_sep|>"}},
};

/* Tokens that end generation by their text (llama.cpp's special_eog_ids rule). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<" DS_BAR "end" DS_SP "of" DS_SP "sentence" DS_BAR ">", "[e~[",
};

/* gpt-oss tokens llama.cpp always renders and matches (attribute forced to USER_DEFINED) */
static const char *const always_user_defined[] = {"<|channel|>", "<|message|>", "<|start|>",
                                                  "<|constrain|>"};

/* tokenizer.ggml.token_type -> attribute (llama_token_type order) */
static const uint8_t type_attr[7] = {
    [0] = 0, /* undefined */
    [1] = XD__ATTR_NORMAL,      [2] = XD__ATTR_UNKNOWN, [3] = XD__ATTR_CONTROL,
    [4] = XD__ATTR_USER_DEFINED, [5] = XD__ATTR_UNUSED, [6] = XD__ATTR_BYTE,
};

static int errf(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static bool vtype_is_int(enum xd_gguf_vtype t) {
    return t == XD_GGUF_UINT8 || t == XD_GGUF_INT8 || t == XD_GGUF_UINT16 ||
           t == XD_GGUF_INT16 || t == XD_GGUF_UINT32 || t == XD_GGUF_INT32 ||
           t == XD_GGUF_UINT64 || t == XD_GGUF_INT64;
}

static bool vtype_is_num(enum xd_gguf_vtype t) {
    return vtype_is_int(t) || t == XD_GGUF_FLOAT32 || t == XD_GGUF_FLOAT64;
}

/* optional array key: 0 with *out NULL when absent; XD_E_BAD_TYPE when not an array of at least
 * n elements accepted by elem_ok */
static int get_array(const struct xd_gguf *g, const char *key, uint64_t n,
                     bool (*elem_ok)(enum xd_gguf_vtype), const char *what,
                     const struct xd_gguf_value **out, char *err, size_t errlen) {
    *out = NULL;
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    if (!v) return 0;
    if (v->type != XD_GGUF_ARRAY || (v->v.arr.n > 0 && !elem_ok(v->v.arr.elem)))
        return errf(err, errlen, XD_E_BAD_TYPE, "%s: not an array of %s", key, what);
    if (v->v.arr.n < n)
        return errf(err, errlen, XD_E_BAD_TYPE, "%s: %llu entries for %llu tokens", key,
                    (unsigned long long)v->v.arr.n, (unsigned long long)n);
    *out = v;
    return 0;
}

static bool elem_is_str(enum xd_gguf_vtype t) { return t == XD_GGUF_STRING; }

/* optional bool key: *b untouched when absent */
static int get_bool(const struct xd_gguf *g, const char *key, bool *b, char *err, size_t errlen) {
    int rc = xd_gguf_get_bool(g, key, b);
    if (rc == XD_E_MISSING) return 0;
    if (rc) return errf(err, errlen, rc, "%s: not a bool", key);
    return 0;
}

/* Copy token texts into one arena (empty ones become "[EMPTY_i]" as in llama.cpp). */
static int load_texts(struct xd_tokenizer *tok, const struct xd_gguf_value *arr, char *err,
                      size_t errlen) {
    const char *key = "tokenizer.ggml.tokens";
    uint64_t total = 0;
    for (int32_t i = 0; i < tok->n_vocab; i++) {
        uint64_t n = arr->v.arr.strs[i].len;
        total += (n ? n : 24) + 1;
    }
    if (total > UINT32_MAX) return errf(err, errlen, XD_E_OVERFLOW, "%s: texts too long", key);
    tok->text = malloc(total);
    if (!tok->text) return errf(err, errlen, XD_E_NOMEM, "%s: out of memory", key);
    uint32_t off = 0;
    for (int32_t i = 0; i < tok->n_vocab; i++) {
        const struct xd_gguf_str *s = &arr->v.arr.strs[i];
        struct xd__tok_entry *t = &tok->tokens[i];
        t->off = off;
        if (s->len) {
            memcpy(tok->text + off, s->ptr, s->len);
            t->len = (uint32_t)s->len;
        } else {
            t->len = (uint32_t)snprintf(tok->text + off, 25, "[EMPTY_%d]", (int)i);
        }
        tok->text[off + t->len] = 0;
        off += t->len + 1;
    }
    return 0;
}

static int load_merges(struct xd_tokenizer *tok, const struct xd_gguf *g, char *err,
                       size_t errlen) {
    const char *key = "tokenizer.ggml.merges";
    const struct xd_gguf_value *arr;
    int rc = get_array(g, key, 0, elem_is_str, "strings", &arr, err, errlen);
    if (rc) return rc;
    if (!arr)
        return errf(err, errlen, XD_E_MISSING, "%s: missing (a gpt2 tokenizer needs it)", key);
    uint64_t n = arr->v.arr.n, total = 0;
    if (n >= INT32_MAX) return errf(err, errlen, XD_E_OVERFLOW, "%s: too many merges", key);
    for (uint64_t i = 0; i < n; i++) total += arr->v.arr.strs[i].len;
    if (total > UINT32_MAX) return errf(err, errlen, XD_E_OVERFLOW, "%s: texts too long", key);
    tok->merges = calloc(n ? n : 1, sizeof *tok->merges);
    tok->merge_text = malloc(total ? total : 1);
    if (!tok->merges || !tok->merge_text || idmap_init(&tok->merge_map, n))
        return errf(err, errlen, XD_E_NOMEM, "%s: out of memory", key);
    tok->n_merges = (uint32_t)n;
    uint32_t off = 0;
    for (uint32_t i = 0; i < tok->n_merges; i++) {
        const struct xd_gguf_str *s = &arr->v.arr.strs[i];
        memcpy(tok->merge_text + off, s->ptr, s->len);
        /* "left right", split at the first space after the first byte; without one the merge
         * pairs two empty strings and can never apply (llama.cpp does the same) */
        const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', s->len - 1) : NULL;
        struct xd__merge *m = &tok->merges[i];
        if (sp) {
            uint32_t l = (uint32_t)(sp - s->ptr);
            *m = (struct xd__merge){off, l, off + l + 1, (uint32_t)s->len - l - 1};
        } else {
            *m = (struct xd__merge){off, 0, off, 0};
        }
        off += (uint32_t)s->len;
        merge_insert(tok, i);
    }
    return 0;
}

static int32_t find_str(const struct xd_tokenizer *tok, const char *text) {
    return xd__vocab_find(tok, text, strlen(text));
}

/* id of the token with this text if it ends generation, else -1 */
static int32_t eog_find(const struct xd_tokenizer *tok, const char *text) {
    int32_t id = find_str(tok, text);
    return id >= 0 && (tok->tokens[id].attr & XD__ATTR_EOG) ? id : -1;
}

/* the special ids: defaults per model, then keys (out of range ones are ignored, as llama.cpp
 * ignores them), then roles found by text */
static int load_roles(struct xd_tokenizer *tok, const struct xd_gguf *g, int32_t *ids, char *err,
                      size_t errlen) {
    for (int r = 0; r < R_COUNT; r++) ids[r] = -1;
    if (tok->kind == XD__SPM) {
        ids[R_BOS] = 1;
        ids[R_EOS] = 2;
        ids[R_UNK] = 0;
    } else {
        ids[R_BOS] = ids[R_EOS] = 11;
    }
    for (int r = 0; r < R_COUNT; r++)
        if (ids[r] >= tok->n_vocab) ids[r] = -1;
    for (size_t k = 0; k < sizeof role_keys / sizeof role_keys[0]; k++) {
        int64_t v;
        int rc = xd_gguf_get_i64(g, role_keys[k].key, &v);
        if (rc == XD_E_MISSING) continue;
        if (rc) return errf(err, errlen, rc, "%s: not an integer", role_keys[k].key);
        if (v >= 0 && v < tok->n_vocab) ids[role_keys[k].role] = (int32_t)v;
    }
    /* the first listed text the vocabulary has wins (llama.cpp takes whichever its hash map
     * yields first) */
    for (size_t k = 0; k < sizeof role_texts / sizeof role_texts[0]; k++) {
        enum special_role r = role_texts[k].role;
        for (size_t j = 0; j < 9 && role_texts[k].texts[j] && ids[r] < 0; j++) {
            int32_t id = find_str(tok, role_texts[k].texts[j]);
            if (id < 0) continue;
            ids[r] = id;
            tok->tokens[id].attr |= XD__ATTR_CONTROL;
        }
    }
    return 0;
}

static void mark_eog(struct xd_tokenizer *tok, const int32_t *ids) {
    static const enum special_role eog_roles[] = {R_FIM_PAD, R_FIM_REP, R_FIM_SEP, R_EOS, R_EOT,
                                                  R_EOM};
    for (size_t k = 0; k < sizeof eog_roles / sizeof eog_roles[0]; k++)
        if (ids[eog_roles[k]] >= 0) tok->tokens[ids[eog_roles[k]]].attr |= XD__ATTR_EOG;
    for (size_t k = 0; k < sizeof eog_texts / sizeof eog_texts[0]; k++) {
        int32_t id = find_str(tok, eog_texts[k]);
        if (id >= 0) tok->tokens[id].attr |= XD__ATTR_EOG | XD__ATTR_CONTROL;
    }
    for (size_t k = 0; k < sizeof always_user_defined / sizeof always_user_defined[0]; k++) {
        int32_t id = find_str(tok, always_user_defined[k]);
        if (id >= 0) tok->tokens[id].attr = XD__ATTR_USER_DEFINED;
    }
    /* llama.cpp's workarounds, decided on the EOG set: gpt-oss/solar-open's "<|end|>" is not an
     * end when "<|return|>"+"<|call|>" (or "<|calls|>"+"<|flush|>") are, and gemma4's "</s>" is
     * not one when "<|tool_response>" is */
    int32_t end = eog_find(tok, "<|end|>"), s_close = eog_find(tok, "</s>");
    bool has_call = eog_find(tok, "<|call|>") >= 0 || eog_find(tok, "<|calls|>") >= 0;
    bool has_return = eog_find(tok, "<|return|>") >= 0, has_flush = eog_find(tok, "<|flush|>") >= 0;
    if (end >= 0 && has_call && (has_return || has_flush))
        tok->tokens[end].attr = XD__ATTR_USER_DEFINED;
    if (s_close >= 0 && eog_find(tok, "<|tool_response>") >= 0)
        tok->tokens[s_close].attr = XD__ATTR_NORMAL;
}

/* stable: longest text first, ties by id */
static int cmp_special(const void *a, const void *b, void *ctx) {
    const struct xd_tokenizer *tok = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = tok->tokens[x].len, ly = tok->tokens[y].len;
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int trie_child(struct xd_tokenizer *tok, int32_t node, uint8_t byte, bool create,
                      size_t *cap) {
    int32_t prev = -1, c = tok->trie[node].child;
    while (c >= 0 && tok->trie[c].byte < byte) {
        prev = c;
        c = tok->trie[c].sibling;
    }
    if (c >= 0 && tok->trie[c].byte == byte) return c;
    if (!create) return -1;
    if (xd__grow((void **)&tok->trie, cap, tok->n_trie + 1, sizeof *tok->trie)) return XD_E_NOMEM;
    int32_t n = (int32_t)tok->n_trie++;
    tok->trie[n] = (struct xd__trie_node){.child = -1, .sibling = c, .special = -1, .byte = byte};
    if (prev >= 0)
        tok->trie[prev].sibling = n;
    else
        tok->trie[node].child = n;
    return n;
}

static int build_specials(struct xd_tokenizer *tok) {
    const unsigned special = XD__ATTR_CONTROL | XD__ATTR_USER_DEFINED | XD__ATTR_UNKNOWN;
    size_t n = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) n += !!(tok->tokens[id].attr & special);
    tok->special = malloc((n ? n : 1) * sizeof(int32_t));
    tok->special_rep = malloc((n ? n : 1) * sizeof(uint32_t));
    if (!tok->special || !tok->special_rep) return XD_E_NOMEM;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->tokens[id].attr & special) tok->special[tok->n_special++] = id;
    qsort_r(tok->special, tok->n_special, sizeof(int32_t), cmp_special, tok);

    size_t cap = 0;
    tok->n_trie = 0;
    if (xd__grow((void **)&tok->trie, &cap, 1, sizeof *tok->trie)) return XD_E_NOMEM;
    tok->trie[tok->n_trie++] = (struct xd__trie_node){.child = -1, .sibling = -1, .special = -1};
    for (size_t k = 0; k < tok->n_special; k++) {
        const char *t = tok_text(tok, tok->special[k]);
        int32_t node = 0;
        for (uint32_t j = 0; j < tok->tokens[tok->special[k]].len; j++) {
            node = trie_child(tok, node, (uint8_t)t[j], true, &cap);
            if (node < 0) return node;
        }
        if (tok->trie[node].special < 0) tok->trie[node].special = (int32_t)k;
        tok->special_rep[k] = (uint32_t)tok->trie[node].special;
    }
    return 0;
}

/* decoded bytes of every token (special tokens as their text) */
static int build_pieces(struct xd_tokenizer *tok) {
    uint64_t total = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) total += tok->tokens[id].len;
    if (total > UINT32_MAX) return XD_E_OVERFLOW;
    /* a piece is never longer than its text: U+2581 (3 bytes) -> 1, a mapped char -> 1 byte */
    tok->pieces = malloc(total ? total : 1);
    if (!tok->pieces) return XD_E_NOMEM;
    uint32_t off = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        struct xd__tok_entry *e = &tok->tokens[id];
        const char *t = tok_text(tok, id);
        char *p = tok->pieces + off;
        size_t n = 0;
        if (e->attr & (XD__ATTR_UNKNOWN | XD__ATTR_CONTROL | XD__ATTR_USER_DEFINED)) {
            memcpy(p, t, e->len);
            n = e->len;
        } else if (e->attr & XD__ATTR_NORMAL) {
            if (tok->kind == XD__SPM) { /* U+2581 -> ' ' */
                for (uint32_t i = 0; i < e->len; i++) {
                    if (i + 2 < e->len && !memcmp(t + i, "\xe2\x96\x81", 3)) {
                        p[n++] = ' ';
                        i += 2;
                    } else {
                        p[n++] = t[i];
                    }
                }
            } else { /* inverse byte map; a codepoint outside it passes through as UTF-8
                        (llama.cpp writes "[UNK_BYTE_0x..]" there) */
                size_t i = 0;
                while (i < e->len) {
                    size_t at = i;
                    int b = xd__cpt_to_byte(xd_utf8_decode(t, e->len, &i));
                    if (b >= 0) {
                        p[n++] = (char)b;
                    } else {
                        memcpy(p + n, t + at, i - at);
                        n += i - at;
                    }
                }
            }
        } else if (e->attr & XD__ATTR_BYTE) { /* "<0xHH>" */
            unsigned v;
            char tail;
            if (e->len == 6 && sscanf(t, "<0x%2x%c", &v, &tail) == 2 && tail == '>')
                p[n++] = (char)v;
        }
        e->piece_off = off;
        e->piece_len = (uint32_t)n;
        off += (uint32_t)n;
        if (n > tok->max_piece) tok->max_piece = n;
    }
    return 0;
}

/* SPM byte fallback: <0xNN>, else the one-byte token (as llama.cpp's byte_to_token) */
static void build_byte_tokens(struct xd_tokenizer *tok) {
    for (unsigned b = 0; b < 256; b++) {
        char hex[8], one = (char)b;
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        int32_t id = xd__vocab_find(tok, hex, 6);
        tok->byte_token[b] = id >= 0 ? id : xd__vocab_find(tok, &one, 1);
    }
}

int xd_tokenizer_load(const struct xd_gguf *g, struct xd_tokenizer **out, char *err,
                      size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    struct xd_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return errf(err, errlen, XD_E_NOMEM, "tokenizer: out of memory");
    int rc;
    struct xd_gguf_str model, pre = {"default", 7};

    if ((rc = xd_gguf_get_str(g, "tokenizer.ggml.model", &model))) {
        rc = errf(err, errlen, rc, "tokenizer.ggml.model: %s",
                  rc == XD_E_MISSING ? "missing" : "not a string");
        goto fail;
    }
    if (xd_gguf_str_eq(model, "llama")) {
        tok->kind = XD__SPM;
    } else if (xd_gguf_str_eq(model, "gpt2")) {
        tok->kind = XD__BPE;
    } else {
        rc = errf(err, errlen, XD_E_UNSUPPORTED,
                  "tokenizer.ggml.model: unsupported tokenizer '%.*s'",
                  (int)(model.len > 64 ? 64 : model.len), model.ptr);
        goto fail;
    }
    rc = xd_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (rc && rc != XD_E_MISSING) {
        rc = errf(err, errlen, rc, "tokenizer.ggml.pre: not a string");
        goto fail;
    }
    if (tok->kind == XD__BPE) {
        if (rc == XD_E_MISSING) pre = (struct xd_gguf_str){"default", 7};
        tok->pre = xd__pretok_find(pre.ptr, pre.len);
        if (!tok->pre) {
            rc = errf(err, errlen, XD_E_UNSUPPORTED,
                      "tokenizer.ggml.pre: unsupported pre-tokenizer '%.*s'",
                      (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
            goto fail;
        }
    }

    const struct xd_gguf_value *tokens, *scores, *types;
    if ((rc = get_array(g, "tokenizer.ggml.tokens", 0, elem_is_str, "strings", &tokens, err,
                        errlen)))
        goto fail;
    if (!tokens || tokens->v.arr.n == 0) {
        rc = errf(err, errlen, tokens ? XD_E_BAD_TYPE : XD_E_MISSING, "tokenizer.ggml.tokens: %s",
                  tokens ? "empty" : "missing");
        goto fail;
    }
    if (tokens->v.arr.n >= INT32_MAX) {
        rc = errf(err, errlen, XD_E_OVERFLOW, "tokenizer.ggml.tokens: too many tokens");
        goto fail;
    }
    tok->n_vocab = (int32_t)tokens->v.arr.n;
    if ((rc = get_array(g, "tokenizer.ggml.scores", (uint64_t)tok->n_vocab, vtype_is_num,
                        "numbers", &scores, err, errlen)) ||
        (rc = get_array(g, "tokenizer.ggml.token_type", (uint64_t)tok->n_vocab, vtype_is_int,
                        "integers", &types, err, errlen)))
        goto fail;

    tok->tokens = calloc((size_t)tok->n_vocab, sizeof *tok->tokens);
    if (!tok->tokens || idmap_init(&tok->vocab, (size_t)tok->n_vocab)) {
        rc = errf(err, errlen, XD_E_NOMEM, "tokenizer.ggml.tokens: out of memory");
        goto fail;
    }
    if ((rc = load_texts(tok, tokens, err, errlen))) goto fail;
    for (int32_t i = 0; i < tok->n_vocab; i++) {
        struct xd__tok_entry *e = &tok->tokens[i];
        e->score = scores ? (float)xd_gguf_arr_f64(scores, (uint64_t)i) : 0.0f;
        if (types) {
            int64_t t = xd_gguf_arr_i64(types, (uint64_t)i);
            e->attr = t >= 0 && t < 7 ? type_attr[t] : 0;
        } else {
            e->attr = XD__ATTR_NORMAL;
        }
        vocab_insert(tok, i);
    }
    if (tok->kind == XD__BPE && (rc = load_merges(tok, g, err, errlen))) goto fail;

    int32_t ids[R_COUNT];
    if ((rc = load_roles(tok, g, ids, err, errlen))) goto fail;
    tok->bos = ids[R_BOS];
    tok->eos = ids[R_EOS];
    tok->eot = ids[R_EOT];
    tok->eom = ids[R_EOM];
    tok->unk = ids[R_UNK];
    tok->pad = ids[R_PAD];

    tok->add_bos = tok->kind == XD__SPM ? true : tok->pre->add_bos;
    tok->add_eos = false;
    tok->add_space_prefix = tok->kind == XD__SPM;
    if ((rc = get_bool(g, "tokenizer.ggml.add_bos_token", &tok->add_bos, err, errlen)) ||
        (rc = get_bool(g, "tokenizer.ggml.add_eos_token", &tok->add_eos, err, errlen)) ||
        (rc = get_bool(g, "tokenizer.ggml.add_space_prefix", &tok->add_space_prefix, err, errlen)))
        goto fail;
    /* llama.cpp asserts here; a vocabulary without the token simply gets none added */
    if (tok->bos < 0) tok->add_bos = false;
    if (tok->eos < 0) tok->add_eos = false;

    mark_eog(tok, ids);
    if ((rc = build_specials(tok)) || (rc = build_pieces(tok))) {
        rc = errf(err, errlen, rc, "tokenizer: %s", xd_strerror(rc));
        goto fail;
    }
    if (tok->kind == XD__SPM) build_byte_tokens(tok);
    *out = tok;
    return 0;
fail:
    xd_tokenizer_free(tok);
    return rc;
}

void xd_tokenizer_free(struct xd_tokenizer *tok) {
    if (!tok) return;
    free(tok->tokens);
    free(tok->text);
    free(tok->pieces);
    free(tok->vocab.slots);
    free(tok->merges);
    free(tok->merge_text);
    free(tok->merge_map.slots);
    free(tok->special);
    free(tok->special_rep);
    free(tok->trie);
    free(tok);
}

/* ---- facts ---------------------------------------------------------------------------------- */

int32_t xd_tokenizer_n_vocab(const struct xd_tokenizer *tok) { return tok->n_vocab; }
int32_t xd_tokenizer_bos(const struct xd_tokenizer *tok) { return tok->bos; }
int32_t xd_tokenizer_eos(const struct xd_tokenizer *tok) { return tok->eos; }
bool xd_tokenizer_add_bos(const struct xd_tokenizer *tok) { return tok->add_bos; }
bool xd_tokenizer_add_eos(const struct xd_tokenizer *tok) { return tok->add_eos; }

bool xd_tokenizer_is_eog(const struct xd_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab && (tok->tokens[id].attr & XD__ATTR_EOG);
}

bool xd_tokenizer_is_control(const struct xd_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab &&
           (tok->tokens[id].attr & (XD__ATTR_CONTROL | XD__ATTR_UNKNOWN));
}

int32_t xd_tokenizer_find(const struct xd_tokenizer *tok, const char *text, size_t len) {
    return xd__vocab_find(tok, text, len);
}

const char *xd_tokenizer_kind(const struct xd_tokenizer *tok) {
    return tok->kind == XD__SPM ? "spm" : "bpe";
}

const char *xd_tokenizer_pre(const struct xd_tokenizer *tok) {
    return tok->kind == XD__SPM ? "default" : tok->pre->name;
}

/* ---- tokenize ------------------------------------------------------------------------------- */

struct frag {
    int32_t id; /* -1: text */
    size_t off, len;
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static int frag_push(struct frags *f, int32_t id, size_t off, size_t len) {
    if (xd__grow((void **)&f->v, &f->cap, f->n + 1, sizeof *f->v)) return XD_E_NOMEM;
    f->v[f->n++] = (struct frag){id, off, len};
    return 0;
}

/* Which special tokens occur in text (cand[k] for tok->special[k], by the first special index
 * of each text). One trie walk per position, bounded by the longest special text. */
static void find_candidates(const struct xd_tokenizer *tok, const char *text, size_t len,
                            bool *cand) {
    for (size_t i = 0; i < len; i++) {
        int32_t node = 0;
        for (size_t j = i; j < len; j++) {
            int32_t c = tok->trie[node].child;
            uint8_t b = (uint8_t)text[j];
            while (c >= 0 && tok->trie[c].byte < b) c = tok->trie[c].sibling;
            if (c < 0 || tok->trie[c].byte != b) break;
            node = c;
            if (tok->trie[node].special >= 0) cand[tok->trie[node].special] = true;
        }
    }
}

/* llama.cpp's tokenizer_st_partition: split text into text fragments and special tokens */
static int partition(const struct xd_tokenizer *tok, const char *text, size_t len,
                     bool parse_special, struct frags *a, struct frags *b) {
    if (len == 0) return 0;
    if (frag_push(a, -1, 0, len)) return XD_E_NOMEM;
    if (tok->n_special == 0) return 0;
    bool *cand = calloc(tok->n_special, sizeof *cand);
    if (!cand) return XD_E_NOMEM;
    find_candidates(tok, text, len, cand);
    int rc = 0;
    for (size_t k = 0; k < tok->n_special && !rc; k++) {
        int32_t id = tok->special[k];
        const struct xd__tok_entry *e = &tok->tokens[id];
        if (!parse_special && (e->attr & (XD__ATTR_CONTROL | XD__ATTR_UNKNOWN))) continue;
        if (!cand[tok->special_rep[k]]) continue;
        const char *t = tok_text(tok, id);
        b->n = 0;
        for (size_t i = 0; i < a->n && !rc; i++) {
            struct frag f = a->v[i];
            if (f.id >= 0) {
                rc = frag_push(b, f.id, 0, 0);
                continue;
            }
            size_t off = f.off, end = f.off + f.len;
            const char *m;
            while (!rc && (m = memmem(text + off, end - off, t, e->len))) {
                size_t at = (size_t)(m - text);
                if (at > off) rc = frag_push(b, -1, off, at - off);
                if (!rc) rc = frag_push(b, id, 0, 0);
                off = at + e->len;
            }
            if (!rc && off < end) rc = frag_push(b, -1, off, end - off);
        }
        struct frags t2 = *a;
        *a = *b;
        *b = t2;
    }
    free(cand);
    return rc;
}

int xd_tokenize(const struct xd_tokenizer *tok, const char *text, size_t len, unsigned flags,
                struct xd_tokens *out) {
    if (!tok || !out || (!text && len) || len > MAX_TEXT_LEN) return XD_E_INVALID;
    size_t n0 = out->n;
    struct frags a = {0}, b = {0};
    struct xd__scratch s = {0};
    bool add_special = flags & XD_TOK_ADD_SPECIAL;
    int rc = partition(tok, text, len, flags & XD_TOK_PARSE_SPECIAL, &a, &b);
    if (!rc && add_special && tok->add_bos) rc = xd__tokens_push(out, tok->bos);
    bool prev_special = true; /* SPM: the first text fragment gets the space prefix */
    for (size_t i = 0; i < a.n && !rc; i++) {
        const struct frag *f = &a.v[i];
        if (f->id >= 0) {
            rc = xd__tokens_push(out, f->id);
            prev_special = true;
        } else if (tok->kind == XD__SPM) {
            rc = xd__spm_tokenize(tok, text + f->off, f->len, tok->add_space_prefix && prev_special,
                                  &s, out);
            prev_special = false;
        } else {
            rc = xd__bpe_tokenize(tok, text + f->off, f->len, &s, out);
        }
    }
    if (!rc && add_special && tok->add_eos) rc = xd__tokens_push(out, tok->eos);
    free(a.v);
    free(b.v);
    xd__scratch_free(&s);
    if (rc) out->n = n0;
    return rc;
}

/* ---- ids -> text ---------------------------------------------------------------------------- */

const char *xd_tokenizer_piece(const struct xd_tokenizer *tok, int32_t id, unsigned flags,
                               size_t *len) {
    *len = 0;
    if (id < 0 || id >= tok->n_vocab) return NULL;
    const struct xd__tok_entry *e = &tok->tokens[id];
    if (!(flags & XD_DETOK_SPECIAL) && (e->attr & (XD__ATTR_CONTROL | XD__ATTR_UNKNOWN)))
        return tok->pieces + e->piece_off; /* "" */
    *len = e->piece_len;
    return tok->pieces + e->piece_off;
}

void xd_detok_init(struct xd_detok *d, const struct xd_tokenizer *tok, unsigned flags) {
    *d = (struct xd_detok){.tok = tok, .flags = flags};
    d->strip_space = (flags & XD_DETOK_TEXT_START) && tok->add_space_prefix;
}

size_t xd_detok_out_max(const struct xd_tokenizer *tok) {
    /* held bytes + the piece, every byte possibly ill-formed and replaced by 3 */
    return 3 * (tok->max_piece + 3);
}

int xd_detok_push(struct xd_detok *d, int32_t id, char *out, size_t cap) {
    const struct xd_tokenizer *tok = d->tok;
    if (id < 0 || id >= tok->n_vocab) return XD_E_INVALID;
    size_t plen;
    const char *piece = xd_tokenizer_piece(tok, id, d->flags, &plen);
    bool strip = d->strip_space;
    if (strip && !(!d->started && id == tok->bos)) {
        if (plen > 0 && piece[0] == ' ') {
            piece++;
            plen--;
        }
        strip = false;
    }
    /* walk held bytes + piece as one sequence */
    size_t total = d->n_held + plen, i = 0, w = 0;
    char held[4];
    size_t n_held = 0;
    while (i < total) {
        char c4[4];
        size_t m = total - i < 4 ? total - i : 4;
        for (size_t k = 0; k < m; k++)
            c4[k] = i + k < d->n_held ? d->held[i + k] : piece[i + k - d->n_held];
        int r = xd_utf8_check(c4, m);
        if (r == 0) { /* an incomplete character at the very end: hold it back */
            memcpy(held, c4, m);
            n_held = m;
            break;
        }
        size_t n = r > 0 ? (size_t)r : 3;
        if (w + n > cap) return XD_E_OVERFLOW;
        memcpy(out + w, r > 0 ? c4 : "\xef\xbf\xbd", n);
        w += n;
        i += r > 0 ? (size_t)r : (size_t)-r;
    }
    memcpy(d->held, held, n_held);
    d->n_held = (uint8_t)n_held;
    d->strip_space = strip;
    d->started = true;
    return (int)w;
}

int xd_detok_flush(struct xd_detok *d, char *out, size_t cap) {
    if (!d->n_held) return 0;
    if (cap < 3) return XD_E_OVERFLOW;
    memcpy(out, "\xef\xbf\xbd", 3);
    d->n_held = 0;
    return 3;
}

int xd_detokenize(const struct xd_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                  char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    struct xd_detok d;
    xd_detok_init(&d, tok, flags);
    size_t step = xd_detok_out_max(tok) + 1, cap = 0, w = 0;
    char *buf = NULL;
    for (size_t i = 0; i <= n; i++) {
        if (xd__grow((void **)&buf, &cap, w + step, 1)) {
            free(buf);
            return XD_E_NOMEM;
        }
        int r = i < n ? xd_detok_push(&d, ids[i], buf + w, cap - w)
                      : xd_detok_flush(&d, buf + w, cap - w);
        if (r < 0) {
            free(buf);
            return r;
        }
        w += (size_t)r;
    }
    buf[w] = 0;
    *text = buf;
    if (len) *len = w;
    return 0;
}
