/* tokenizer_impl.h - internals shared by tokenizer.c (vocabulary, special tokens, pieces,
 * detokenizer), tokenizer_spm.c, tokenizer_bpe.c and tokenizer_pre.c. Not for other modules:
 * they use tokenizer.h.
 */
#ifndef XD_TOKENIZER_IMPL_H
#define XD_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Token attributes: llama.cpp's llama_token_attr subset, from tokenizer.ggml.token_type. */
enum xd__tok_attr {
    XD__ATTR_NORMAL = 1u << 0,
    XD__ATTR_UNKNOWN = 1u << 1,
    XD__ATTR_CONTROL = 1u << 2,
    XD__ATTR_USER_DEFINED = 1u << 3,
    XD__ATTR_BYTE = 1u << 4,
    XD__ATTR_UNUSED = 1u << 5,
    XD__ATTR_EOG = 1u << 6, /* ends generation (not a GGUF type: derived at load) */
};

struct xd__tok_entry {
    uint32_t off, len; /* text in tok->text */
    uint32_t piece_off, piece_len; /* decoded bytes in tok->pieces (as with XD_DETOK_SPECIAL) */
    float score;
    uint8_t attr; /* enum xd__tok_attr */
};

/* A BPE merge "left right" of rank = its index. */
struct xd__merge {
    uint32_t left_off, left_len, right_off, right_len; /* in tok->merge_text */
};

/* Open-addressing hash set of ids (slot = index + 1, 0 = empty); the key of an index is looked
 * up by the owner (token text, or merge pair). Power-of-two size, load <= 1/2. */
struct xd__idmap {
    uint32_t *slots;
    uint32_t mask;
};

/* One BPE pre-tokenizer: an ordered list of splitting passes, as llama.cpp's regex list. */
enum xd__pass {
    XD__PASS_GPT2,          /* 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    XD__PASS_LLAMA3,        /* (?i:'s|..)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+. */
    XD__PASS_QWEN2,         /* as LLAMA3 with \p{N} one digit at a time */
    XD__PASS_PUNCT_RUN,     /* [\p{P}\$\+<=>\^~\|]+ */
    XD__PASS_NUMBER_RUN,    /* \p{N}+ */
    XD__PASS_DIGIT3,        /* [0-9][0-9][0-9] */
    XD__PASS_CRLF,          /* [\r\n] */
    XD__PASS_DS_LETTERS,    /* \s?[A-Za-zµÀ-ÖØ-öø-ƺ...]+ (deepseek-llm) */
    XD__PASS_DS_PUNCT,      /* \s?[!-/:-~！-／：-～‘-‟　-。]+ (deepseek-llm) */
    XD__PASS_TRAIL_SPACE,   /* \s+$ */
    XD__PASS_DS_CJK,        /* [一-龥ࠀ-一가-퟿]+ (deepseek-llm) */
};

#define XD__MAX_PASSES 6

struct xd__pretok {
    const char *name;
    uint8_t n_passes;
    uint8_t passes[XD__MAX_PASSES]; /* enum xd__pass */
    bool ignore_merges; /* a word that is a whole token is emitted as is (llama3) */
    bool add_bos;       /* default of add_bos_token */
};

enum xd__kind { XD__SPM, XD__BPE };

struct xd_tokenizer {
    enum xd__kind kind;
    const struct xd__pretok *pre; /* BPE only */
    int32_t n_vocab;
    struct xd__tok_entry *tokens;
    char *text;   /* token texts, each NUL-terminated */
    char *pieces; /* decoded pieces */
    size_t max_piece;
    struct xd__idmap vocab; /* text -> id */

    struct xd__merge *merges; /* BPE: n_merges */
    uint32_t n_merges;
    char *merge_text;
    struct xd__idmap merge_map; /* (left, right) -> rank */

    int32_t *special; /* control/user-defined/unknown ids, longest text first */
    uint32_t *special_rep; /* per special: index of the first special with the same text */
    size_t n_special;
    /* trie over the special texts, to find which of them occur in a text in one scan */
    struct xd__trie_node *trie;
    size_t n_trie;

    int32_t byte_token[256]; /* SPM: <0xNN> (or the 1-byte token), -1 if neither; BPE: unused */
    int32_t bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos, add_space_prefix;
};

/* Trie node: children are a sibling list sorted by byte. */
struct xd__trie_node {
    int32_t child;   /* first child, -1 */
    int32_t sibling; /* next sibling, -1 */
    int32_t special; /* index into tok->special ending here, -1 */
    uint8_t byte;
};

/* Scratch memory of one xd_tokenize() call: grown as needed, freed at the end. */
struct xd__scratch {
    void *sym;
    size_t sym_cap; /* in struct xd__sym */
    void *heap;
    size_t heap_cap, heap_n; /* in struct xd__bigram */
    uint32_t *cpts;
    uint16_t *flags;
    size_t cpt_cap, flags_cap;
    size_t *lens, *lens2;
    size_t lens_cap, lens2_cap;
    char *buf;
    size_t buf_cap;
};

struct xd__sym {
    int32_t prev, next;
    uint32_t off, n; /* bytes of the working text; n == 0: merged away */
};

struct xd__bigram {
    int32_t left, right;
    double prio; /* SPM: score; BPE: -rank. Highest first, then lowest left. */
    uint32_t size;
};

/* growth helpers: 0 or XD_E_NOMEM; *cap in elements */
int xd__grow(void **p, size_t *cap, size_t need, size_t elem);
int xd__tokens_push(struct xd_tokens *out, int32_t id);
void xd__scratch_free(struct xd__scratch *s);

/* bigram max-heap in s->heap */
int xd__heap_push(struct xd__scratch *s, struct xd__bigram b);
struct xd__bigram xd__heap_pop(struct xd__scratch *s);

/* 64-bit FNV-1a over bytes, continuing from h (start with XD__FNV_INIT) */
#define XD__FNV_INIT 0xcbf29ce484222325ull
uint64_t xd__fnv(uint64_t h, const char *p, size_t n);

/* id of the token with text p[0..n), or -1 */
int32_t xd__vocab_find(const struct xd_tokenizer *tok, const char *p, size_t n);
/* rank of merge (left, right), or -1 */
int32_t xd__merge_rank(const struct xd_tokenizer *tok, const char *l, size_t ln, const char *r,
                       size_t rn);

/* Or'ed into every flags[] entry given to xd__pretok_split(): a position outside the segment
 * reads 0, as llama.cpp's _get_flags() does there, and an in-range one never does (an
 * unassigned codepoint has no enum xd_uflag bit but is still in range). */
#define XD__F_IN 0x100u

/* pre-tokenizer by tokenizer.ggml.pre name, or NULL */
const struct xd__pretok *xd__pretok_find(const char *name, size_t len);
/* Split n codepoints (with their xd_unicode_flags | XD__F_IN in flags) into words: word lengths in
 * codepoints are left in s->lens[0..*n_words). 0 or XD_E_NOMEM. */
int xd__pretok_split(const struct xd__pretok *pre, const uint32_t *cpts, const uint16_t *flags,
                     size_t n, struct xd__scratch *s, size_t *n_words);

/* The two algorithms; append ids for text[0..len) (one fragment free of special tokens). */
int xd__spm_tokenize(const struct xd_tokenizer *tok, const char *text, size_t len,
                     bool space_prefix, struct xd__scratch *s, struct xd_tokens *out);
int xd__bpe_tokenize(const struct xd_tokenizer *tok, const char *text, size_t len,
                     struct xd__scratch *s, struct xd_tokens *out);

/* GPT-2 byte <-> codepoint map (bytes_to_unicode) */
uint32_t xd__byte_to_cpt(uint8_t b);
/* byte for cpt, or -1 when cpt is not in the map */
int xd__cpt_to_byte(uint32_t cpt);

#endif
