/* tokenizer_bpe.c - GPT-2 style byte-level BPE (tokenizer.ggml.model "gpt2").
 *
 * The text is decoded to codepoints the way llama.cpp decodes it (an ill-formed byte becomes
 * U+FFFD), split into words by the vocabulary's pre-tokenizer (tokenizer_pre.c), and each word
 * is re-encoded as UTF-8 and then byte-mapped: every byte becomes the printable codepoint GPT-2's
 * bytes_to_unicode() assigns it, which is the alphabet the vocabulary and merges are written in.
 * Within a word, adjacent symbols merge by lowest merge rank (ties: leftmost) until no ranked
 * pair is left; a final symbol that is not a token falls back to its single bytes, and bytes
 * with no token are dropped - all as llama.cpp does.
 *
 * Same linked-symbol + heap scheme as tokenizer_spm.c, so a long word (a run of 10,000 digits
 * under deepseek-llm's \p{N}+) costs O(n log n), not O(n^2). The scratch buffers are reused
 * from word to word, so a text costs a handful of allocations, not one per word.
 */
#include <string.h>

#include "tokenizer_impl.h"
#include "unicode.h"
#include "xd_error.h"

static int try_pair(const struct xd_tokenizer *tok, const char *w, struct xd__scratch *s,
                    int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const struct xd__sym *sym = s->sym;
    int32_t rank = xd__merge_rank(tok, w + sym[left].off, sym[left].n, w + sym[right].off,
                                  sym[right].n);
    if (rank < 0) return 0;
    return xd__heap_push(s, (struct xd__bigram){left, right, -(double)rank,
                                                sym[left].n + sym[right].n});
}

/* merge one byte-mapped word w[0..n) and append its ids */
static int bpe_word(const struct xd_tokenizer *tok, const char *w, size_t n, struct xd__scratch *s,
                    struct xd_tokens *out) {
    if (tok->pre->ignore_merges) {
        int32_t id = xd__vocab_find(tok, w, n);
        if (id >= 0) return xd__tokens_push(out, id);
    }
    if (xd__grow(&s->sym, &s->sym_cap, n, sizeof(struct xd__sym))) return XD_E_NOMEM;
    struct xd__sym *sym = s->sym;
    int32_t n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t l = xd_utf8_seq_len((uint8_t)w[off]);
        if (l > n - off) l = n - off;
        sym[n_sym] = (struct xd__sym){n_sym - 1, -1, (uint32_t)off, (uint32_t)l};
        if (n_sym > 0) sym[n_sym - 1].next = n_sym;
        n_sym++;
        off += l;
    }
    s->heap_n = 0;
    int rc = 0;
    for (int32_t i = 1; i < n_sym && !rc; i++) rc = try_pair(tok, w, s, i - 1, i);
    while (!rc && s->heap_n > 0) {
        struct xd__bigram b = xd__heap_pop(s);
        struct xd__sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        rc = try_pair(tok, w, s, l->prev, b.left);
        if (!rc) rc = try_pair(tok, w, s, b.left, l->next);
    }
    for (int32_t i = 0; i < n_sym && !rc; i++) {
        if (sym[i].n == 0) continue;
        int32_t id = xd__vocab_find(tok, w + sym[i].off, sym[i].n);
        if (id >= 0) {
            rc = xd__tokens_push(out, id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].n && !rc; j++) {
            id = xd__vocab_find(tok, w + sym[i].off + j, 1);
            if (id >= 0) rc = xd__tokens_push(out, id);
        }
    }
    return rc;
}

int xd__bpe_tokenize(const struct xd_tokenizer *tok, const char *text, size_t len,
                     struct xd__scratch *s, struct xd_tokens *out) {
    /* codepoints and their classes */
    if (xd__grow((void **)&s->cpts, &s->cpt_cap, len, sizeof(uint32_t)) ||
        xd__grow((void **)&s->flags, &s->flags_cap, len, sizeof(uint16_t)))
        return XD_E_NOMEM;
    size_t n = 0;
    for (size_t pos = 0; pos < len;) {
        uint32_t c = xd_utf8_decode(text, len, &pos);
        if (c > 0x10FFFF) c = XD_UNICODE_REPLACEMENT; /* F4 90.. and up: llama.cpp throws */
        s->cpts[n] = c;
        s->flags[n] = (uint16_t)(xd_unicode_flags(c) | XD__F_IN);
        n++;
    }
    size_t n_words;
    int rc = xd__pretok_split(tok->pre, s->cpts, s->flags, n, s, &n_words);
    /* byte-mapped bytes: a codepoint is at most 4 UTF-8 bytes, each mapped to at most 2 */
    size_t start = 0;
    for (size_t k = 0; k < n_words && !rc; k++) {
        size_t wl = s->lens[k];
        if (xd__grow((void **)&s->buf, &s->buf_cap, wl * 8, 1)) return XD_E_NOMEM;
        size_t m = 0;
        for (size_t i = start; i < start + wl; i++) {
            char u[4];
            size_t ul = xd_utf8_encode(s->cpts[i], u);
            for (size_t j = 0; j < ul; j++)
                m += xd_utf8_encode(xd__byte_to_cpt((uint8_t)u[j]), s->buf + m);
        }
        rc = bpe_word(tok, s->buf, m, s, out);
        start += wl;
    }
    return rc;
}
