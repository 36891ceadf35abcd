/* api_logprobs.c - token strings and logprob lists for the completions endpoint. Token strings
 * are what OpenAI shows: the piece's text, or "bytes:\xe2\x80" when a piece is only part of a
 * UTF-8 character (byte-fallback and byte-level vocabularies have such tokens). Storage is
 * offsets into one buffer plus two record arrays, so a 4096-token answer costs three
 * allocations that grow geometrically. Not here: the encoding into JSON (proto_completion.c).
 */
#include "api_logprobs.h"

#include <stdio.h>
#include <stdlib.h>

#include "xd_error.h"

void srv_lp_free(struct srv_lp_list *l) {
    proto_buf_free(&l->str);
    free(l->rec);
    free(l->tops);
    *l = (struct srv_lp_list){.exact_top = l->exact_top};
}

/* True when s[0..n) is valid UTF-8 (no overlongs, surrogates or cut characters). */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) return false;
        if (k == 2 && c < 0xc2) return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return false;
        if (k == 3) {
            unsigned v = (c & 0x0f) << 12 | (s[i + 1] & 0x3fu) << 6 | (s[i + 2] & 0x3fu);
            if (v < 0x800 || (v >= 0xd800 && v <= 0xdfff)) return false;
        }
        if (k == 4) {
            unsigned v = (c & 0x07) << 18 | (s[i + 1] & 0x3fu) << 12;
            if (v < 0x10000 || v > 0x10ffff) return false;
        }
        i += k;
    }
    return true;
}

int srv_token_string(const struct xd_tokenizer *tok, int32_t id, struct proto_buf *out) {
    size_t len = 0;
    const char *p = xd_tokenizer_piece(tok, id, 0, &len);
    if (!p || !len) return out->oom ? XD_E_NOMEM : 0;
    if (valid_utf8((const unsigned char *)p, len)) return proto_buf_append(out, p, len);
    proto_buf_puts(out, "bytes:");
    for (size_t i = 0; i < len; i++) proto_buf_printf(out, "\\x%02x", (unsigned char)p[i]);
    return out->oom ? XD_E_NOMEM : 0;
}

size_t srv_token_text_len(const struct xd_tokenizer *tok, int32_t id) {
    size_t len = 0;
    return xd_tokenizer_piece(tok, id, 0, &len) ? len : 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need) c *= 2;
    void *n = realloc(*p, c * size);
    if (!n) return XD_E_NOMEM;
    *p = n;
    *cap = c;
    return 0;
}

static int add_top(struct srv_lp_list *l, const struct xd_tokenizer *tok, int32_t id, float lp) {
    if (grow((void **)&l->tops, &l->cap_tops, l->n_tops + 1, sizeof *l->tops)) return XD_E_NOMEM;
    struct srv_lp_top *t = &l->tops[l->n_tops];
    t->off = l->str.len;
    if (srv_token_string(tok, id, &l->str)) return XD_E_NOMEM;
    t->len = l->str.len - t->off;
    t->logprob = lp;
    l->n_tops++;
    return 0;
}

int srv_lp_add(struct srv_lp_list *l, const struct xd_tokenizer *tok, int32_t id,
               const struct xd_logprobs *lp, uint32_t text_offset) {
    if (grow((void **)&l->rec, &l->cap, l->n + 1, sizeof *l->rec)) return XD_E_NOMEM;
    struct srv_lp_rec r = {.off = l->str.len, .has = lp != NULL, .text_offset = text_offset,
                           .top0 = l->n_tops};
    if (srv_token_string(tok, id, &l->str)) return XD_E_NOMEM;
    r.len = l->str.len - r.off;
    if (lp) {
        r.logprob = lp->chosen.logprob;
        bool chosen_in_top = false;
        for (int32_t k = 0; k < lp->n_top; k++) {
            if (add_top(l, tok, lp->top[k].token, lp->top[k].logprob)) return XD_E_NOMEM;
            chosen_in_top |= lp->top[k].token == id;
        }
        if (!chosen_in_top && !l->exact_top && add_top(l, tok, id, lp->chosen.logprob))
            return XD_E_NOMEM;
        r.n_top = (uint32_t)(l->n_tops - r.top0);
    }
    l->rec[l->n++] = r;
    return 0;
}

int srv_lp_set(struct srv_lp_list *l, size_t i, const struct xd_tokenizer *tok, int32_t id,
               const struct xd_logprobs *lp) {
    if (i >= l->n) return 0;
    uint32_t text_offset = l->rec[i].text_offset;
    if (srv_lp_add(l, tok, id, lp, text_offset)) return XD_E_NOMEM;
    l->rec[i] = l->rec[--l->n]; /* the record just added moves into place i */
    return 0;
}

void srv_lp_resolve(const struct srv_lp_list *l, size_t from, size_t n,
                    struct proto_token_logprob *out, struct proto_top_logprob *tops) {
    const char *base = l->str.data ? l->str.data : "";
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        const struct srv_lp_rec *r = &l->rec[from + i];
        out[i] = (struct proto_token_logprob){.token = base + r->off, .len = r->len,
                                              .has_logprob = r->has, .logprob = r->logprob,
                                              .text_offset = r->text_offset, .top = tops + t,
                                              .n_top = r->n_top};
        for (uint32_t k = 0; k < r->n_top; k++, t++) {
            const struct srv_lp_top *x = &l->tops[r->top0 + k];
            tops[t] = (struct proto_top_logprob){base + x->off, x->len, x->logprob};
        }
    }
}
