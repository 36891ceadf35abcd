/* tokenizer.h - text <-> token ids, from the vocabulary stored in a GGUF file.
 *
 * Two families, chosen by tokenizer.ggml.model, both reproducing llama.cpp's ids exactly:
 *   "llama" - SentencePiece-style (SPM): spaces become U+2581, pieces merge pairwise by score,
 *             bytes with no piece fall back to <0xNN> tokens; a space is prefixed to the text
 *             (add_space_prefix) and BOS is added per add_bos_token.
 *   "gpt2"  - byte-level BPE: a pre-tokenizer chosen by tokenizer.ggml.pre splits the text into
 *             words ("gpt-2", "default", "qwen2", "llama-bpe"/"llama3", "deepseek-llm", ...),
 *             each word's bytes are mapped to printable codepoints and merged by merge rank.
 * Special tokens (control, user-defined) are matched in the text before either runs.
 *
 * A tokenizer is immutable once loaded: every function below may be called from any number of
 * threads at once. It copies what it needs from the GGUF, so the file may be closed after
 * xd_tokenizer_load(). Token ids are int32_t as in llama.cpp; -1 means "none".
 */
#ifndef XD_TOKENIZER_H
#define XD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct xd_gguf;
struct xd_tokenizer;

/* ---- loading -------------------------------------------------------------------------------- */

/* Build a tokenizer from g's tokenizer.ggml.* keys. 0 and *out set on success; on failure a
 * negative XD_E_* code, *out = NULL and a message naming the key at fault in err (errlen > 0):
 * XD_E_MISSING (no tokenizer.ggml.model/.tokens, or .merges for BPE), XD_E_BAD_TYPE (a key of
 * the wrong type or an array shorter than the vocabulary), XD_E_UNSUPPORTED (unknown model or
 * pre-tokenizer name; the message quotes it), XD_E_NOMEM. */
int xd_tokenizer_load(const struct xd_gguf *g, struct xd_tokenizer **out, char *err,
                      size_t errlen);
/* Free everything; tok may be NULL. */
void xd_tokenizer_free(struct xd_tokenizer *tok);

/* ---- vocabulary facts ----------------------------------------------------------------------- */

/* Number of tokens (ids are 0 .. n_vocab-1). */
int32_t xd_tokenizer_n_vocab(const struct xd_tokenizer *tok);
/* Beginning/end-of-sequence ids, -1 when the vocabulary has none. */
int32_t xd_tokenizer_bos(const struct xd_tokenizer *tok);
int32_t xd_tokenizer_eos(const struct xd_tokenizer *tok);
/* Whether tokenizing with XD_TOK_ADD_SPECIAL puts BOS in front / EOS at the end. */
bool xd_tokenizer_add_bos(const struct xd_tokenizer *tok);
bool xd_tokenizer_add_eos(const struct xd_tokenizer *tok);
/* True when id ends generation: EOS, EOT, EOM, and the end-of-turn tokens llama.cpp recognises
 * by their text (<|im_end|>, <|eot_id|>, <|endoftext|>, ...). False for ids out of range. */
bool xd_tokenizer_is_eog(const struct xd_tokenizer *tok, int32_t id);
/* True for control and unknown tokens (the ones whose piece is empty unless rendered as
 * special). False for ids out of range. */
bool xd_tokenizer_is_control(const struct xd_tokenizer *tok, int32_t id);
/* Id of the token whose stored text is exactly text[0..len), or -1. Stored text is the
 * vocabulary's form (SPM: U+2581 for spaces; BPE: byte-mapped), e.g. "<|im_end|>". */
int32_t xd_tokenizer_find(const struct xd_tokenizer *tok, const char *text, size_t len);
/* "spm" or "bpe", and the pre-tokenizer name ("default" for SPM). */
const char *xd_tokenizer_kind(const struct xd_tokenizer *tok);
const char *xd_tokenizer_pre(const struct xd_tokenizer *tok);

/* ---- text -> ids ---------------------------------------------------------------------------- */

/* A growable array of ids the caller owns: zero-initialise it, let xd_tokenize() append, and
 * release ids with xd_tokens_free() (or free()). */
struct xd_tokens {
    int32_t *ids;
    size_t n;
    size_t cap;
};

enum xd_tokenize_flags {
    /* BOS in front (per add_bos_token) and EOS at the end (per add_eos_token), as a model
     * input. Without it: the bare ids of the text, as llama.cpp's test vectors are written. */
    XD_TOK_ADD_SPECIAL = 1u << 0,
    /* Text equal to a control token's text (e.g. "<|im_end|>", "<s>") becomes that token.
     * User-defined tokens are always matched, as in llama.cpp. Leave it off for untrusted text
     * that must not be able to inject control tokens. */
    XD_TOK_PARSE_SPECIAL = 1u << 1,
};

/* Tokenize text[0..len) (any bytes; NUL is an ordinary byte) and append the ids to out.
 * 0 on success; XD_E_NOMEM, XD_E_INVALID (len over 1 GiB or NULL arguments), XD_E_TOKENIZE
 * (an SPM byte with neither a <0xNN> token nor an unknown token). On failure out->n is as it
 * was (ids may have been reallocated). Time O(n log n) in the text length. */
int xd_tokenize(const struct xd_tokenizer *tok, const char *text, size_t len, unsigned flags,
                struct xd_tokens *out);
/* Release out->ids and zero *out. */
void xd_tokens_free(struct xd_tokens *out);

/* ---- ids -> text ---------------------------------------------------------------------------- */

enum xd_detok_flags {
    /* Render control/unknown tokens as their text ("<s>", "<|im_end|>"); otherwise they
     * produce nothing. */
    XD_DETOK_SPECIAL = 1u << 0,
    /* The ids begin a text (a prompt, or tokenize() output): for vocabularies with
     * add_space_prefix (SPM), drop the leading space of the first token after an optional
     * leading BOS - the space tokenization added. Leave it off when the ids continue earlier
     * text (generated tokens after a prompt), where that space is real. */
    XD_DETOK_TEXT_START = 1u << 1,
};

/* The bytes token id stands for: SPM U+2581 -> ' ', <0xNN> -> that byte; BPE the inverse byte
 * map; control/unknown tokens their text when flags has XD_DETOK_SPECIAL, else "". *len gets the
 * length; the bytes are not NUL-terminated, may be an incomplete UTF-8 character, and live as
 * long as tok. NULL (and *len = 0) for ids out of range. */
const char *xd_tokenizer_piece(const struct xd_tokenizer *tok, int32_t id, unsigned flags,
                               size_t *len);

/* Streaming detokenizer: feed ids one at a time, get text that is always valid UTF-8. A
 * character split across tokens (byte-fallback or byte-level pieces) is held back until it is
 * complete; bytes that can never form a character come out as U+FFFD. Plain state: embed it,
 * no allocation, nothing to free. */
struct xd_detok {
    const struct xd_tokenizer *tok;
    unsigned flags;   /* enum xd_detok_flags */
    bool strip_space; /* the next text piece loses one leading ' ' (XD_DETOK_TEXT_START) */
    bool started;     /* a token has been pushed (a first BOS keeps strip_space) */
    uint8_t n_held;   /* bytes of an incomplete character held back, 0-3 */
    char held[4];
};

/* Start a stream over tok's ids. Can't fail. */
void xd_detok_init(struct xd_detok *d, const struct xd_tokenizer *tok, unsigned flags);
/* An output capacity that is always enough for one xd_detok_push() or xd_detok_flush(). */
size_t xd_detok_out_max(const struct xd_tokenizer *tok);
/* Feed id; writes the text completed by it to out and returns its length (>= 0, possibly 0
 * when bytes are held back). XD_E_INVALID for an id out of range, XD_E_OVERFLOW when cap is
 * smaller than the output; the state is unchanged on error. */
int xd_detok_push(struct xd_detok *d, int32_t id, char *out, size_t cap);
/* End of stream: a held-back incomplete character comes out as U+FFFD. Returns the length
 * written (0 or 3), XD_E_OVERFLOW when cap < 3 and something is held (state unchanged). */
int xd_detok_flush(struct xd_detok *d, char *out, size_t cap);

/* Whole sequence at once: a malloc'd NUL-terminated string in *text (length in *len, may be
 * NULL), the concatenation a stream with these flags would produce, flushed. 0, XD_E_INVALID
 * (id out of range) or XD_E_NOMEM; *text = NULL on failure. Caller frees *text. */
int xd_detokenize(const struct xd_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                  char **text, size_t *len);

#endif
