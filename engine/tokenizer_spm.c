/* tokenizer_spm.c - SentencePiece-style tokenization (tokenizer.ggml.model "llama").
 *
 * llama.cpp's SPM algorithm, which is what its ids are: spaces become U+2581 (and one is put in
 * front when add_space_prefix asks), the text is cut into UTF-8 characters, and the adjacent
 * pair whose concatenation is a token with the highest score is merged, again and again, ties
 * going to the leftmost pair. A final symbol that is not a token falls back to one <0xNN> token
 * per byte (the unknown token if even that is missing).
 *
 * Symbols are a linked list over the text and candidate pairs sit in a binary heap keyed by
 * (score, position); a merge invalidates at most two queued pairs, which are recognised when
 * popped by their recorded size no longer matching. That is O(n log n) in the text length
 * rather than the O(n^2) of rescanning for the best pair, and it matters: SPM has no
 * pre-tokenizer, so the whole text is one word. llama.cpp's rev_merge map (re-splitting a
 * symbol that is not a token) is left out: every merged symbol is a token by construction,
 * so only unmerged single characters can miss, and those go to bytes either way.
 */
#include <string.h>

#include "tokenizer_impl.h"
#include "unicode.h"
#include "xd_error.h"

static int try_pair(const struct xd_tokenizer *tok, const char *text, struct xd__scratch *s,
                    int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const struct xd__sym *sym = s->sym;
    uint32_t size = sym[left].n + sym[right].n;
    int32_t id = xd__vocab_find(tok, text + sym[left].off, size);
    if (id < 0) return 0;
    return xd__heap_push(s, (struct xd__bigram){left, right, tok->tokens[id].score, size});
}

int xd__spm_tokenize(const struct xd_tokenizer *tok, const char *text, size_t len,
                     bool space_prefix, struct xd__scratch *s, struct xd_tokens *out) {
    /* escape: ' ' -> U+2581, with the prefix */
    size_t need = (len + 1) * 3;
    if (xd__grow((void **)&s->buf, &s->buf_cap, need, 1)) return XD_E_NOMEM;
    size_t n = 0;
    if (space_prefix) {
        memcpy(s->buf, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            s->buf[n++] = text[i];
        }
    }
    if (n == 0) return 0;
    const char *t = s->buf;

    /* one symbol per UTF-8 character (a truncated sequence at the end is clamped) */
    if (xd__grow(&s->sym, &s->sym_cap, n, sizeof(struct xd__sym))) return XD_E_NOMEM;
    struct xd__sym *sym = s->sym;
    int32_t n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t l = xd_utf8_seq_len((uint8_t)t[off]);
        if (l > n - off) l = n - off;
        sym[n_sym] = (struct xd__sym){n_sym - 1, -1, (uint32_t)off, (uint32_t)l};
        if (n_sym > 0) sym[n_sym - 1].next = n_sym;
        n_sym++;
        off += l;
    }

    s->heap_n = 0;
    int rc = 0;
    for (int32_t i = 1; i < n_sym && !rc; i++) rc = try_pair(tok, t, s, i - 1, i);
    while (!rc && s->heap_n > 0) {
        struct xd__bigram b = xd__heap_pop(s);
        struct xd__sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        rc = try_pair(tok, t, s, l->prev, b.left);
        if (!rc) rc = try_pair(tok, t, s, b.left, l->next);
    }

    for (int32_t i = 0; i != -1 && !rc; i = sym[i].next) {
        int32_t id = xd__vocab_find(tok, t + sym[i].off, sym[i].n);
        if (id >= 0) {
            rc = xd__tokens_push(out, id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].n && !rc; j++) {
            id = tok->byte_token[(uint8_t)t[sym[i].off + j]];
            if (id < 0) id = tok->unk;
            rc = id < 0 ? XD_E_TOKENIZE : xd__tokens_push(out, id);
        }
    }
    return rc;
}
