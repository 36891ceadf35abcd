/* fuzz_tokenizer.c - libFuzzer target for the tokenizers on arbitrary bytes: the SentencePiece
 * (Llama) and byte-level BPE (GPT-2, Llama-3 and Qwen2 pre-tokenizers, DeepSeek) vocabularies of
 * tests/fixtures/tokenizer, loaded once.
 *
 * The first input byte picks the vocabulary and the flags; the rest is the text. Contract
 * checked: tokenize returns 0 (or XD_E_TOKENIZE for an SPM byte the vocabulary cannot spell)
 * with every id in range; the streaming detokenizer accepts every id and emits valid UTF-8;
 * for byte-level BPE without special-token parsing, the pieces of the ids concatenate back to
 * the exact input bytes when those are valid UTF-8 (byte-level BPE is lossless on text). __builtin_trap() marks a
 * broken contract.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"
#include "xd_error.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const vocabs[] = {
    "ggml-vocab-llama-spm.gguf",         "ggml-vocab-gpt-2.gguf",
    "ggml-vocab-gpt-2-8k-llama-bpe.gguf", "ggml-vocab-gpt-2-8k-qwen2.gguf",
    "ggml-vocab-deepseek-llm.gguf",
};
#define N_VOCABS (sizeof vocabs / sizeof vocabs[0])

/* libFuzzer's process-wide state: the tokenizers it fuzzes, loaded once in Initialize. */
static struct xd_gguf ggufs[N_VOCABS];
static struct xd_tokenizer *toks[N_VOCABS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < N_VOCABS; i++) {
        char path[1024], err[256];
        snprintf(path, sizeof path, "%s/tokenizer/%s", XD_FIXTURES, vocabs[i]);
        if (xd_gguf_open(path, &ggufs[i], err, sizeof err) ||
            xd_tokenizer_load(&ggufs[i], &toks[i], err, sizeof err)) {
            fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
            exit(1);
        }
    }
    return 0;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) k = 1, cp = c;
        else if (c >= 0xC2 && c <= 0xDF) k = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) k = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) k = 4, cp = c & 0x07;
        else return false;
        if (i + k > n) return false;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const size_t v = data[0] % N_VOCABS;
    const unsigned flags = (data[0] >> 4) & (XD_TOK_ADD_SPECIAL | XD_TOK_PARSE_SPECIAL);
    const struct xd_tokenizer *tok = toks[v];
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    struct xd_tokens ids = {0};
    int rc = xd_tokenize(tok, text, len, flags, &ids);
    if (rc) {
        if (rc != XD_E_TOKENIZE && rc != XD_E_NOMEM) __builtin_trap();
        xd_tokens_free(&ids);
        return 0;
    }
    const int32_t n_vocab = xd_tokenizer_n_vocab(tok);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.ids[i] < 0 || ids.ids[i] >= n_vocab) __builtin_trap();

    /* streaming detokenizer: valid UTF-8 out, whatever the ids */
    struct xd_detok d;
    xd_detok_init(&d, tok, XD_DETOK_TEXT_START);
    const size_t step = xd_detok_out_max(tok);
    char *out = malloc(step * (ids.n + 1));
    size_t n_out = 0;
    for (size_t i = 0; i < ids.n && out; i++) {
        int w = xd_detok_push(&d, ids.ids[i], out + n_out, step);
        if (w < 0) __builtin_trap();
        n_out += (size_t)w;
    }
    if (out) {
        int w = xd_detok_flush(&d, out + n_out, step);
        if (w < 0) __builtin_trap();
        n_out += (size_t)w;
        if (!utf8_valid((const unsigned char *)out, n_out)) __builtin_trap();
    }
    free(out);

    /* byte-level BPE is lossless on text: the pieces are the input (bytes that are not UTF-8
     * are dropped, as llama.cpp drops them, so only valid UTF-8 is held to this) */
    if (strcmp(xd_tokenizer_kind(tok), "bpe") == 0 && !(flags & XD_TOK_PARSE_SPECIAL) &&
        utf8_valid((const unsigned char *)text, len)) {
        size_t at = 0;
        for (size_t i = 0; i < ids.n; i++) {
            size_t pl = 0;
            const char *p = xd_tokenizer_piece(tok, ids.ids[i], 0, &pl);
            if (xd_tokenizer_is_control(tok, ids.ids[i])) continue; /* BOS/EOS added */
            if (!p || at + pl > len || memcmp(text + at, p, pl)) __builtin_trap();
            at += pl;
        }
        if (at != len) __builtin_trap();
    }
    xd_tokens_free(&ids);
    return 0;
}
