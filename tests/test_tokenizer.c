/* test_tokenizer.c - the tokenizers against llama.cpp's ids, and the detokenizer.
 *
 * Expected ids all come from llama.cpp: its own vectors for the SPM and GPT-2 vocabularies,
 * vectors made with its llama-tokenize for deepseek-llm and for the GPT-2 vocabulary (first 8k
 * merges) relabelled with the qwen2, llama-bpe and default pre-tokenizers, the prompt_tokens of
 * the golden files, and the inline cases below (carriage returns, which the .inp files avoid
 * because check-goldens reads them with newline translation; special tokens).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "tokenizer.h"
#include "unicode.h"
#include "xd_error.h"
#include "xd_test_util.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static struct xd_tokenizer *load_path(const char *path) {
    struct xd_gguf g;
    char err[512] = "";
    int rc = xd_gguf_open(path, &g, err, sizeof err);
    cr_assert_eq(rc, 0, "open %s: %s", path, err);
    struct xd_tokenizer *tok = NULL;
    rc = xd_tokenizer_load(&g, &tok, err, sizeof err);
    xd_gguf_close(&g); /* the tokenizer must not need the file any more */
    cr_assert_eq(rc, 0, "load %s: %s", path, err);
    return tok;
}

static struct xd_tokenizer *load_fixture(const char *rel) {
    char *p = xd_test_fixture(rel);
    struct xd_tokenizer *tok = load_path(p);
    free(p);
    return tok;
}

static void tokenize_ok(const struct xd_tokenizer *tok, const char *text, size_t len,
                        unsigned flags, struct xd_tokens *out) {
    out->n = 0;
    int rc = xd_tokenize(tok, text, len, flags, out);
    cr_assert_eq(rc, 0, "xd_tokenize: %s", xd_strerror(rc));
}

static void expect_ids(const struct xd_tokens *got, const int32_t *want, size_t n,
                       const char *what) {
    cr_expect_eq(got->n, n, "%s: %zu ids, want %zu", what, got->n, n);
    for (size_t i = 0; i < n && i < got->n; i++)
        cr_expect_eq(got->ids[i], want[i], "%s: id %zu is %d, want %d", what, i, got->ids[i],
                     want[i]);
}

/* Python's universal newlines, as check-goldens reads the files: \r\n and \r become \n */
static size_t universal_newlines(char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            s[w++] = '\n';
            if (i + 1 < n && s[i + 1] == '\n') i++;
        } else {
            s[w++] = s[i];
        }
    }
    s[w] = 0;
    return w;
}

struct vectors {
    char *inp, *out;    /* file contents */
    size_t n;
    const char **text;  /* into inp */
    size_t *len;
    const char **ids;   /* lines of out */
};

/* split .inp on "\n__ggml_vocab_test__\n" dropping what follows the last one, and .out on
 * '\n' - exactly as check-goldens does */
static void read_vectors(const char *vocab_path, struct vectors *v) {
    char path[1024];
    size_t n_inp, n_out;
    snprintf(path, sizeof path, "%s.inp", vocab_path);
    v->inp = xd_test_read_file(path, &n_inp);
    cr_assert(v->inp, "cannot read %s", path);
    snprintf(path, sizeof path, "%s.out", vocab_path);
    v->out = xd_test_read_file(path, &n_out);
    cr_assert(v->out, "cannot read %s", path);
    n_inp = universal_newlines(v->inp, n_inp);
    universal_newlines(v->out, n_out);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    v->n = 0;
    for (const char *p = v->inp; (p = strstr(p, sep)); p += sizeof sep - 1) v->n++;
    v->text = calloc(v->n + 1, sizeof *v->text);
    v->len = calloc(v->n + 1, sizeof *v->len);
    v->ids = calloc(v->n + 1, sizeof *v->ids);
    cr_assert(v->text && v->len && v->ids);
    char *p = v->inp;
    for (size_t i = 0; i < v->n; i++) {
        char *e = strstr(p, sep);
        *e = 0;
        v->text[i] = p;
        v->len[i] = (size_t)(e - p);
        p = e + sizeof sep - 1;
    }
    char *q = v->out;
    for (size_t i = 0; i < v->n && q; i++) {
        v->ids[i] = q;
        char *nl = strchr(q, '\n');
        if (nl) *nl = 0;
        q = nl ? nl + 1 : NULL;
    }
}

static void free_vectors(struct vectors *v) {
    free(v->inp);
    free(v->out);
    free(v->text);
    free(v->len);
    free(v->ids);
}

static size_t parse_ids(const char *line, int32_t *ids, size_t cap) {
    size_t n = 0;
    char *end;
    for (const char *p = line; p && *p;) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        cr_assert(n < cap);
        ids[n++] = (int32_t)v;
        p = end;
    }
    return n;
}

/* ---- unicode.c ----------------------------------------------------------------------------- */

Test(unicode, classes) {
    cr_expect_eq(xd_unicode_flags('a'), XD_U_LETTER);
    cr_expect_eq(xd_unicode_flags('7'), XD_U_NUMBER);
    cr_expect_eq(xd_unicode_flags(' '), XD_U_SEPARATOR | XD_U_SPACE);
    cr_expect_eq(xd_unicode_flags('\n'), XD_U_CONTROL | XD_U_SPACE);
    cr_expect_eq(xd_unicode_flags(0x1C), XD_U_CONTROL); /* not White_Space, unlike isspace() */
    cr_expect_eq(xd_unicode_flags('$'), XD_U_SYMBOL);
    cr_expect_eq(xd_unicode_flags('!'), XD_U_PUNCT);
    cr_expect_eq(xd_unicode_flags(0x0301), XD_U_MARK);
    cr_expect_eq(xd_unicode_flags(0x3000), XD_U_SEPARATOR | XD_U_SPACE);
    cr_expect_eq(xd_unicode_flags(0x0085), XD_U_CONTROL | XD_U_SPACE);
    cr_expect_eq(xd_unicode_flags(0x4E00), XD_U_LETTER);
    cr_expect_eq(xd_unicode_flags(0x31350), XD_U_LETTER); /* CJK ext H (15.0) */
    cr_expect_eq(xd_unicode_flags(0x2EBF0), XD_U_LETTER); /* CJK ext I (15.1) */
    cr_expect_eq(xd_unicode_flags(0x0378), 0);            /* unassigned */
    cr_expect_eq(xd_unicode_flags(0x1F680), XD_U_SYMBOL);
    cr_expect_eq(xd_unicode_flags(0xD800), XD_U_CONTROL);
    cr_expect_eq(xd_unicode_flags(0x10FFFF), 0);
    cr_expect_eq(xd_unicode_flags(0x110000), 0);
}

Test(unicode, utf8) {
    /* the lenient decoder: llama.cpp's replacement rules */
    static const struct {
        const char *s;
        size_t len;
        uint32_t cpt;
        size_t adv;
    } dec[] = {
        {"A", 1, 'A', 1},           {"\xc3\xa9", 2, 0xE9, 2},     {"\xc3", 1, 0xFFFD, 1},
        {"\xa9", 1, 0xFFFD, 1},     {"\xe2\x82\xac", 3, 0x20AC, 3}, {"\xe2\x82x", 3, 0xFFFD, 1},
        {"\xf0\x9f\x9a\x80", 4, 0x1F680, 4}, {"\xf8\x80\x80\x80", 4, 0xFFFD, 1},
        {"\xc0\xaf", 2, 0x2F, 2}, /* overlong: llama.cpp lets it through */
    };
    for (size_t i = 0; i < sizeof dec / sizeof dec[0]; i++) {
        size_t pos = 0;
        cr_expect_eq(xd_utf8_decode(dec[i].s, dec[i].len, &pos), dec[i].cpt, "decode %zu", i);
        cr_expect_eq(pos, dec[i].adv, "advance %zu", i);
    }
    /* the strict checker */
    cr_expect_eq(xd_utf8_check("a", 1), 1);
    cr_expect_eq(xd_utf8_check("\xe2\x82\xac", 3), 3);
    cr_expect_eq(xd_utf8_check("\xe2\x82", 2), 0);
    cr_expect_eq(xd_utf8_check("\xe2\x82x", 3), -2);
    cr_expect_eq(xd_utf8_check("\xc0\xaf", 2), -1);       /* overlong */
    cr_expect_eq(xd_utf8_check("\xed\xa0\x80", 3), -1);   /* surrogate */
    cr_expect_eq(xd_utf8_check("\xf4\x90\x80\x80", 4), -1); /* > U+10FFFF */
    cr_expect_eq(xd_utf8_check("\xf0\x9f\x9a", 3), 0);
    cr_expect_eq(xd_utf8_check("\x80", 1), -1);
    char out[4];
    cr_expect_eq(xd_utf8_encode(0x1F680, out), 4);
    cr_expect(!memcmp(out, "\xf0\x9f\x9a\x80", 4));
    cr_expect_eq(xd_utf8_encode(0x110000, out), 0);
}

/* ---- llama.cpp's vectors -------------------------------------------------------------------- */

static size_t run_vectors(const char *vocab_name) {
    char rel[512];
    snprintf(rel, sizeof rel, "tokenizer/%s", vocab_name);
    char *path = xd_test_fixture(rel);
    struct xd_tokenizer *tok = load_path(path);
    struct vectors v;
    read_vectors(path, &v);
    struct xd_tokens got = {0};
    int32_t *want = malloc(65536 * sizeof *want);
    cr_assert(want);
    for (size_t i = 0; i < v.n; i++) {
        cr_assert(v.ids[i], "%s: no expected ids for vector %zu", vocab_name, i);
        size_t n = parse_ids(v.ids[i], want, 65536);
        tokenize_ok(tok, v.text[i], v.len[i], 0, &got);
        char what[600];
        snprintf(what, sizeof what, "%s vector %zu '%.40s'", vocab_name, i, v.text[i]);
        expect_ids(&got, want, n, what);
    }
    size_t n = v.n;
    free(want);
    xd_tokens_free(&got);
    free_vectors(&v);
    xd_tokenizer_free(tok);
    free(path);
    return n;
}

Test(tokenizer, vectors_llama_spm) { cr_expect_eq(run_vectors("ggml-vocab-llama-spm.gguf"), 46); }
Test(tokenizer, vectors_gpt2) { cr_expect_eq(run_vectors("ggml-vocab-gpt-2.gguf"), 46); }
Test(tokenizer, vectors_deepseek_llm) {
    cr_expect_geq(run_vectors("ggml-vocab-deepseek-llm.gguf"), 60);
}
Test(tokenizer, vectors_pre_qwen2) {
    cr_expect_geq(run_vectors("ggml-vocab-gpt-2-8k-qwen2.gguf"), 60);
}
Test(tokenizer, vectors_pre_llama_bpe) {
    cr_expect_geq(run_vectors("ggml-vocab-gpt-2-8k-llama-bpe.gguf"), 60);
}
Test(tokenizer, vectors_pre_default) {
    cr_expect_geq(run_vectors("ggml-vocab-gpt-2-8k-default.gguf"), 60);
}

/* every vector file in the directory is one of the above (a new one needs a test) */
Test(tokenizer, vectors_all_files_covered) {
    static const char *const known[] = {
        "ggml-vocab-llama-spm.gguf.inp", "ggml-vocab-gpt-2.gguf.inp",
        "ggml-vocab-deepseek-llm.gguf.inp", "ggml-vocab-gpt-2-8k-qwen2.gguf.inp",
        "ggml-vocab-gpt-2-8k-llama-bpe.gguf.inp", "ggml-vocab-gpt-2-8k-default.gguf.inp"};
    char *dir = xd_test_fixture("tokenizer");
    DIR *d = opendir(dir);
    cr_assert(d, "cannot list %s", dir);
    struct dirent *e;
    size_t n = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".inp")) continue;
        bool found = false;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            found |= !strcmp(known[k], e->d_name);
        cr_expect(found, "vector file %s has no test", e->d_name);
        n++;
    }
    closedir(d);
    free(dir);
    cr_expect_eq(n, sizeof known / sizeof known[0]);
}

/* ---- the goldens' prompt_tokens ------------------------------------------------------------- */

static size_t check_goldens_of(const char *family, const char *vocab) {
    struct xd_tokenizer *tok = load_fixture(vocab);
    char *dir = xd_test_fixture("golden");
    DIR *d = opendir(dir);
    cr_assert(d);
    struct dirent *e;
    size_t n_cases = 0;
    struct xd_tokens got = {0};
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, family, strlen(family)) || l < 12 ||
            strcmp(e->d_name + l - 12, ".golden.json"))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        json_error_t jerr;
        json_t *root = json_load_file(path, 0, &jerr);
        cr_assert(root, "%s: %s", path, jerr.text);
        json_t *cases = json_object_get(root, "cases");
        for (size_t c = 0; c < json_array_size(cases); c++) {
            json_t *cs = json_array_get(cases, c);
            const char *prompt = json_string_value(json_object_get(cs, "prompt"));
            json_t *want = json_object_get(cs, "prompt_tokens");
            cr_assert(prompt && json_is_array(want));
            tokenize_ok(tok, prompt, strlen(prompt), XD_TOK_ADD_SPECIAL, &got);
            cr_expect_eq(got.n, json_array_size(want), "%s case %zu: %zu tokens, want %zu",
                         e->d_name, c, got.n, json_array_size(want));
            for (size_t i = 0; i < got.n && i < json_array_size(want); i++)
                cr_expect_eq(got.ids[i], json_integer_value(json_array_get(want, i)),
                             "%s case %zu: token %zu", e->d_name, c, i);
            n_cases++;
        }
        json_decref(root);
    }
    closedir(d);
    free(dir);
    xd_tokens_free(&got);
    xd_tokenizer_free(tok);
    return n_cases;
}

Test(tokenizer, golden_prompts_mixtral) {
    cr_expect_geq(check_goldens_of("mixtral-tiny-", "mixtral-tiny-q8_0.gguf"), 7);
}
Test(tokenizer, golden_prompts_qwen3moe) {
    cr_expect_geq(check_goldens_of("qwen3moe-tiny-", "qwen3moe-tiny-q8_0.gguf"), 7);
}

/* ---- carriage returns and special tokens (ids from llama-tokenize) -------------------------- */

static void check_case(const char *vocab, const char *text, unsigned flags, const int32_t *want,
                       size_t n) {
    struct xd_tokenizer *tok = load_fixture(vocab);
    struct xd_tokens got = {0};
    tokenize_ok(tok, text, strlen(text), flags, &got);
    char what[256];
    snprintf(what, sizeof what, "%s flags %u", vocab, flags);
    expect_ids(&got, want, n, what);
    xd_tokens_free(&got);
    xd_tokenizer_free(tok);
}

#define CHECK(vocab, text, flags, ...)                                                             \
    do {                                                                                       \
        static const int32_t want_[] = {__VA_ARGS__};                                          \
        check_case(vocab, text, flags, want_, sizeof want_ / sizeof want_[0]);                 \
    } while (0)

static const char crlf_text[] = "tab\tsep\r\nwindows\rline\r\n\r\n x \r";

Test(tokenizer, carriage_returns) {
    CHECK("tokenizer/ggml-vocab-deepseek-llm.gguf", crlf_text, 0, 3607, 184, 23383, 188, 185,
          23376, 188, 1031, 188, 185, 188, 185, 1376, 207, 188);
    CHECK("tokenizer/ggml-vocab-gpt-2.gguf", crlf_text, 0, 8658, 197, 325, 79, 201, 198, 28457,
          201, 1370, 201, 198, 201, 198, 2124, 220, 201);
    CHECK("tokenizer/ggml-vocab-llama-spm.gguf", crlf_text, 0, 4434, 12, 19570, 30004, 13, 10499,
          30004, 1220, 30004, 13, 30004, 13, 921, 6756);
    CHECK("tokenizer/ggml-vocab-gpt-2-8k-qwen2.gguf", crlf_text, 0, 83, 397, 197, 325, 79, 201,
          198, 7972, 1666, 201, 1370, 201, 198, 201, 198, 2124, 220, 201);
    CHECK("tokenizer/ggml-vocab-gpt-2-8k-llama-bpe.gguf", crlf_text, 0, 83, 397, 197, 325, 79,
          201, 198, 7972, 1666, 201, 1370, 201, 198, 201, 198, 2124, 220, 201);
    CHECK("tokenizer/ggml-vocab-gpt-2-8k-default.gguf", crlf_text, 0, 83, 397, 197, 325, 79, 201,
          198, 7972, 1666, 201, 1370, 201, 198, 201, 198, 2124, 220, 201);
}

Test(tokenizer, special_tokens_spm) {
    const char *v = "tokenizer/ggml-vocab-llama-spm.gguf", *t = "<s>Hello</s> world<unk>";
    CHECK(v, t, XD_TOK_PARSE_SPECIAL, 1, 15043, 2, 29871, 3186, 0);
    CHECK(v, t, 0, 529, 29879, 29958, 10994, 829, 29879, 29958, 3186, 29966, 2960, 29958);
    CHECK(v, t, XD_TOK_PARSE_SPECIAL | XD_TOK_ADD_SPECIAL, 1, 1, 15043, 2, 29871, 3186, 0);
}

Test(tokenizer, special_tokens_deepseek) {
    /* control tokens only with PARSE_SPECIAL; user-defined ones ([PAD..], "ø") always */
    const char *v = "tokenizer/ggml-vocab-deepseek-llm.gguf";
    const char *t = "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
                    "Hi<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
                    "[PAD100015]\xc3\xb8";
    CHECK(v, t, XD_TOK_PARSE_SPECIAL, 100000, 11007, 100001, 100015, 100002);
    CHECK(v, t, 0, 27, 68940, 237, 951, 11009, 210, 994, 11009, 210, 53582, 68940, 237, 29, 11007,
          27, 68940, 237, 409, 11009, 210, 994, 11009, 210, 53582, 68940, 237, 29, 100015, 100002);
    CHECK(v, t, XD_TOK_PARSE_SPECIAL | XD_TOK_ADD_SPECIAL, 100000, 100000, 11007, 100001, 100015,
          100002);
}

Test(tokenizer, special_tokens_bpe_no_bos) {
    const char *v = "qwen3moe-tiny-q8_0.gguf", *t = "Hi<|endoftext|> there<|endoftext|>";
    CHECK(v, t, XD_TOK_PARSE_SPECIAL, 39, 72, 2047, 612, 2047);
    CHECK(v, t, 0, 39, 72, 27, 91, 437, 1659, 660, 742, 91, 29, 612, 27, 91, 437, 1659, 660, 742,
          91, 29);
    CHECK(v, t, XD_TOK_PARSE_SPECIAL | XD_TOK_ADD_SPECIAL, 39, 72, 2047, 612, 2047);
}

Test(tokenizer, empty_text) {
    struct xd_tokenizer *t = load_fixture("tokenizer/ggml-vocab-llama-spm.gguf");
    struct xd_tokens ids = {0};
    tokenize_ok(t, "", 0, 0, &ids);
    cr_expect_eq(ids.n, 0);
    tokenize_ok(t, NULL, 0, XD_TOK_ADD_SPECIAL, &ids);
    cr_expect(ids.n == 1 && ids.ids[0] == 1, "BOS alone");
    xd_tokenizer_free(t);
    t = load_fixture("qwen3moe-tiny-q8_0.gguf");
    tokenize_ok(t, "", 0, XD_TOK_ADD_SPECIAL, &ids);
    cr_expect_eq(ids.n, 0);
    xd_tokens_free(&ids);
    xd_tokenizer_free(t);
}

/* ---- vocabulary facts ----------------------------------------------------------------------- */

Test(tokenizer, facts) {
    struct xd_tokenizer *t = load_fixture("mixtral-tiny-q8_0.gguf");
    cr_expect_eq(xd_tokenizer_n_vocab(t), 2000);
    cr_expect_eq(xd_tokenizer_bos(t), 1);
    cr_expect_eq(xd_tokenizer_eos(t), 2);
    cr_expect(xd_tokenizer_add_bos(t));
    cr_expect(!xd_tokenizer_add_eos(t));
    cr_expect(xd_tokenizer_is_eog(t, 2));
    cr_expect(!xd_tokenizer_is_eog(t, 1) && !xd_tokenizer_is_eog(t, 450));
    cr_expect(!xd_tokenizer_is_eog(t, -1) && !xd_tokenizer_is_eog(t, 2000));
    cr_expect(xd_tokenizer_is_control(t, 0) && xd_tokenizer_is_control(t, 1));
    cr_expect(!xd_tokenizer_is_control(t, 450));
    cr_expect_eq(xd_tokenizer_find(t, "<0x0A>", 6), 13);
    cr_expect_eq(xd_tokenizer_find(t, "nope-not-a-token", 16), -1);
    cr_expect_str_eq(xd_tokenizer_kind(t), "spm");
    xd_tokenizer_free(t);

    t = load_fixture("qwen3moe-tiny-q8_0.gguf");
    cr_expect_eq(xd_tokenizer_n_vocab(t), 2048);
    cr_expect_eq(xd_tokenizer_eos(t), 2047);
    cr_expect(!xd_tokenizer_add_bos(t));
    cr_expect(xd_tokenizer_is_eog(t, 2047));
    cr_expect_str_eq(xd_tokenizer_kind(t), "bpe");
    cr_expect_str_eq(xd_tokenizer_pre(t), "gpt-2");
    cr_expect_eq(xd_tokenizer_find(t, "<|endoftext|>", 13), 2047);
    xd_tokenizer_free(t);

    t = load_fixture("tokenizer/ggml-vocab-deepseek-llm.gguf");
    cr_expect_eq(xd_tokenizer_bos(t), 100000);
    cr_expect(xd_tokenizer_add_bos(t));
    cr_expect(xd_tokenizer_is_eog(t, 100001));
    cr_expect(!xd_tokenizer_is_control(t, 100002)); /* user-defined "ø" */
    cr_expect_str_eq(xd_tokenizer_pre(t), "deepseek-llm");
    xd_tokenizer_free(t);
}

/* ---- pieces and detokenizing ---------------------------------------------------------------- */

static void expect_piece(const struct xd_tokenizer *t, int32_t id, unsigned flags, const char *want,
                         size_t want_len) {
    size_t len;
    const char *p = xd_tokenizer_piece(t, id, flags, &len);
    cr_assert(p, "piece %d", id);
    cr_expect(len == want_len && !memcmp(p, want, len), "piece %d: '%.*s' (%zu bytes)", id,
              (int)len, p, len);
}

Test(tokenizer, pieces) {
    struct xd_tokenizer *t = load_fixture("tokenizer/ggml-vocab-llama-spm.gguf");
    expect_piece(t, 15043, 0, " Hello", 6);       /* "▁Hello" */
    expect_piece(t, 13, 0, "\n", 1);              /* <0x0A> */
    expect_piece(t, 0xF0 + 3, 0, "\xf0", 1);      /* <0xF0> */
    expect_piece(t, 1, 0, "", 0);                 /* <s>: control */
    expect_piece(t, 1, XD_DETOK_SPECIAL, "<s>", 3);
    size_t len = 99;
    cr_expect_null(xd_tokenizer_piece(t, 32000, 0, &len));
    cr_expect_eq(len, 0);
    cr_expect_null(xd_tokenizer_piece(t, -1, 0, &len));
    xd_tokenizer_free(t);

    t = load_fixture("tokenizer/ggml-vocab-gpt-2.gguf");
    expect_piece(t, 220, 0, " ", 1);  /* "Ġ" */
    expect_piece(t, 198, 0, "\n", 1); /* "Ċ" */
    expect_piece(t, 50256, 0, "", 0);
    expect_piece(t, 50256, XD_DETOK_SPECIAL, "<|endoftext|>", 13);
    xd_tokenizer_free(t);
}

/* push ids one at a time, collecting the output and the byte count of each push */
static char *stream(const struct xd_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                    int *per_push) {
    struct xd_detok d;
    xd_detok_init(&d, t, flags);
    size_t cap = xd_detok_out_max(t), total = 0;
    char *all = malloc((n + 1) * cap + 1);
    cr_assert(all);
    for (size_t i = 0; i < n; i++) {
        int r = xd_detok_push(&d, ids[i], all + total, cap);
        cr_assert_geq(r, 0, "push %d: %s", ids[i], xd_strerror(r));
        if (per_push) per_push[i] = r;
        total += (size_t)r;
    }
    int r = xd_detok_flush(&d, all + total, cap);
    cr_assert_geq(r, 0);
    total += (size_t)r;
    all[total] = 0;
    return all;
}

Test(tokenizer, detok_holds_split_character) {
    /* SPM byte fallback: the Llama vocabulary has no piece for the rocket: <0xF0>..<0x80> */
    struct xd_tokenizer *t = load_fixture("tokenizer/ggml-vocab-llama-spm.gguf");
    struct xd_tokens ids = {0};
    tokenize_ok(t, "\xf0\x9f\x9a\x80!", 5, 0, &ids);
    static const int32_t want[] = {29871, 243, 162, 157, 131, 29991}; /* llama-tokenize */
    expect_ids(&ids, want, 6, "rocket");
    int per[6];
    char *s = stream(t, ids.ids, ids.n, XD_DETOK_TEXT_START, per);
    cr_expect_str_eq(s, "\xf0\x9f\x9a\x80!");
    /* the prefix space is dropped, the first three bytes are held, the fourth releases all */
    static const int expect_per[6] = {0, 0, 0, 0, 4, 1};
    for (int i = 0; i < 6; i++) cr_expect_eq(per[i], expect_per[i], "push %d", i);
    free(s);

    /* an incomplete character at the end of the stream becomes U+FFFD; so does a stray byte */
    struct xd_detok d;
    char out[64];
    xd_detok_init(&d, t, 0);
    cr_expect_eq(xd_detok_push(&d, 0xF0 + 3, out, sizeof out), 0);   /* <0xF0> */
    cr_expect_eq(xd_detok_push(&d, 0x9F + 3, out, sizeof out), 0);   /* <0x9F> */
    cr_expect_eq(xd_detok_push(&d, 'A' + 3, out, sizeof out), 4);    /* <0x41> breaks it */
    cr_expect(!memcmp(out, "\xef\xbf\xbd" "A", 4));
    cr_expect_eq(xd_detok_push(&d, 0x80 + 3, out, sizeof out), 3);   /* a lone continuation */
    cr_expect(!memcmp(out, "\xef\xbf\xbd", 3));
    cr_expect_eq(xd_detok_push(&d, 0xE2 + 3, out, sizeof out), 0);
    cr_expect_eq(xd_detok_flush(&d, out, sizeof out), 3);
    cr_expect(!memcmp(out, "\xef\xbf\xbd", 3));
    cr_expect_eq(xd_detok_flush(&d, out, sizeof out), 0);
    /* errors leave the state alone */
    cr_expect_eq(xd_detok_push(&d, 32000, out, sizeof out), XD_E_INVALID);
    cr_expect_eq(xd_detok_push(&d, 0xE2 + 3, out, sizeof out), 0);
    cr_expect_eq(xd_detok_push(&d, 0x82 + 3, out, sizeof out), 0);
    cr_expect_eq(xd_detok_push(&d, 0xAC + 3, out, 2), XD_E_OVERFLOW); /* would complete "€" */
    cr_expect_eq(xd_detok_push(&d, 0xAC + 3, out, 3), 3);
    cr_expect(!memcmp(out, "\xe2\x82\xac", 3));
    cr_expect_eq(xd_detok_push(&d, 0xE2 + 3, out, sizeof out), 0);
    cr_expect_eq(xd_detok_flush(&d, out, 2), XD_E_OVERFLOW);
    cr_expect_eq(xd_detok_flush(&d, out, 3), 3);
    xd_tokens_free(&ids);
    xd_tokenizer_free(t);

    /* byte-level BPE: qwen3moe-tiny has only single-byte pieces for CJK and emoji */
    t = load_fixture("qwen3moe-tiny-q8_0.gguf");
    const char *text = "\xe4\xbd\xa0\xe5\xa5\xbd\xf0\x9f\x9a\x80";
    tokenize_ok(t, text, strlen(text), 0, &ids);
    cr_assert_eq(ids.n, 10);
    int per10[10];
    s = stream(t, ids.ids, ids.n, 0, per10);
    cr_expect_str_eq(s, text);
    static const int expect_per10[10] = {0, 0, 3, 0, 0, 3, 0, 0, 0, 4};
    for (int i = 0; i < 10; i++) cr_expect_eq(per10[i], expect_per10[i], "push %d", i);
    free(s);
    xd_tokens_free(&ids);
    xd_tokenizer_free(t);
}

Test(tokenizer, detok_leading_space_after_bos) {
    struct xd_tokenizer *t = load_fixture("tokenizer/ggml-vocab-llama-spm.gguf");
    struct xd_tokens ids = {0};
    tokenize_ok(t, "Hello world", 11, XD_TOK_ADD_SPECIAL, &ids); /* <s> ▁Hello ▁world */
    char *s = stream(t, ids.ids, ids.n, XD_DETOK_TEXT_START, NULL);
    cr_expect_str_eq(s, "Hello world");
    free(s);
    s = stream(t, ids.ids, ids.n, 0, NULL); /* a continuation keeps its space */
    cr_expect_str_eq(s, " Hello world");
    free(s);
    s = stream(t, ids.ids, ids.n, XD_DETOK_TEXT_START | XD_DETOK_SPECIAL, NULL);
    cr_expect_str_eq(s, "<s>Hello world");
    free(s);
    char *text;
    size_t len;
    cr_assert_eq(xd_detokenize(t, ids.ids + 1, ids.n - 1, XD_DETOK_TEXT_START, &text, &len), 0);
    cr_expect_str_eq(text, "Hello world");
    cr_expect_eq(len, 11);
    free(text);
    int32_t bad = 99999;
    cr_expect_eq(xd_detokenize(t, &bad, 1, 0, &text, &len), XD_E_INVALID);
    cr_expect_null(text);
    xd_tokens_free(&ids);
    xd_tokenizer_free(t);

    /* BPE vocabularies have no space prefix: nothing is stripped */
    t = load_fixture("tokenizer/ggml-vocab-gpt-2.gguf");
    tokenize_ok(t, " Hello", 6, 0, &ids);
    s = stream(t, ids.ids, ids.n, XD_DETOK_TEXT_START, NULL);
    cr_expect_str_eq(s, " Hello");
    free(s);
    xd_tokens_free(&ids);
    xd_tokenizer_free(t);
}

/* detok(tokenize(x)) == x for every vector of every vocabulary (all are valid UTF-8, and every
 * vocabulary here can spell every byte), with and without BOS */
Test(tokenizer, round_trip) {
    static const char *const vocabs[] = {
        "ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-deepseek-llm.gguf",
        "ggml-vocab-gpt-2-8k-qwen2.gguf", "ggml-vocab-gpt-2-8k-llama-bpe.gguf",
        "ggml-vocab-gpt-2-8k-default.gguf"};
    struct xd_tokens ids = {0};
    for (size_t k = 0; k < sizeof vocabs / sizeof vocabs[0]; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizer/%s", vocabs[k]);
        char *path = xd_test_fixture(rel);
        struct xd_tokenizer *t = load_path(path);
        struct vectors v;
        read_vectors(path, &v);
        for (size_t i = 0; i < v.n; i++) {
            for (unsigned flags = 0; flags <= XD_TOK_ADD_SPECIAL; flags += XD_TOK_ADD_SPECIAL) {
                tokenize_ok(t, v.text[i], v.len[i], flags, &ids);
                char *s;
                size_t len;
                cr_assert_eq(xd_detokenize(t, ids.ids, ids.n, XD_DETOK_TEXT_START, &s, &len), 0);
                cr_expect(len == v.len[i] && !memcmp(s, v.text[i], len),
                          "%s vector %zu flags %u: '%s' != '%s'", vocabs[k], i, flags, s,
                          v.text[i]);
                free(s);
            }
        }
        free_vectors(&v);
        xd_tokenizer_free(t);
        free(path);
    }
    xd_tokens_free(&ids);
}

/* ---- appending, errors ---------------------------------------------------------------------- */

Test(tokenizer, appends_and_restores_on_error) {
    struct xd_tokenizer *t = load_fixture("tokenizer/ggml-vocab-gpt-2.gguf");
    struct xd_tokens ids = {0};
    cr_assert_eq(xd_tokenize(t, "Hello", 5, 0, &ids), 0);
    cr_assert_eq(xd_tokenize(t, " world", 6, 0, &ids), 0);
    static const int32_t want[] = {15496, 995};
    expect_ids(&ids, want, 2, "appended");
    cr_expect_eq(xd_tokenize(t, NULL, 3, 0, &ids), XD_E_INVALID);
    cr_expect_eq(xd_tokenize(t, "x", (size_t)2 << 30, 0, &ids), XD_E_INVALID);
    cr_expect_eq(ids.n, 2);
    xd_tokens_free(&ids);
    cr_expect_null(ids.ids);
    cr_expect_eq(ids.n, 0);
    xd_tokenizer_free(t);
    xd_tokenizer_free(NULL);
}

/* a GGUF with just the given tokenizer keys; kind selects which keys are left out or broken */
enum broken { OK_BPE, NO_MODEL, BAD_MODEL, NO_TOKENS, TOKENS_NOT_STRINGS, SHORT_SCORES,
              BAD_PRE, NO_MERGES, BOOL_NOT_BOOL, ID_OUT_OF_RANGE };

static char *write_vocab(enum broken b) {
    char tmpl[] = "/tmp/xdtok-XXXXXX";
    int fd = mkstemp(tmpl);
    cr_assert_geq(fd, 0);
    close(fd);
    struct xd_gguf_writer *w;
    cr_assert_eq(xd_gguf_writer_create(tmpl, &w), 0);
    static const char *const toks[] = {"a", "b", "ab", "<|end|>"};
    static const int32_t types[] = {1, 1, 1, 3};
    static const float scores[] = {0, 0};
    static const char *const merges[] = {"a b"};
    xd_gguf_writer_add_str(w, "general.architecture", "test");
    if (b != NO_MODEL)
        xd_gguf_writer_add_str(w, "tokenizer.ggml.model", b == BAD_MODEL ? "t5" : "gpt2");
    xd_gguf_writer_add_str(w, "tokenizer.ggml.pre", b == BAD_PRE ? "no-such-pre" : "gpt-2");
    if (b == TOKENS_NOT_STRINGS)
        xd_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", XD_GGUF_INT32, types, 4);
    else if (b != NO_TOKENS)
        xd_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    xd_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", XD_GGUF_INT32, types, 4);
    if (b == SHORT_SCORES)
        xd_gguf_writer_add_arr(w, "tokenizer.ggml.scores", XD_GGUF_FLOAT32, scores, 2);
    if (b != NO_MERGES) xd_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    if (b == BOOL_NOT_BOOL)
        xd_gguf_writer_add_str(w, "tokenizer.ggml.add_bos_token", "yes");
    xd_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", b == ID_OUT_OF_RANGE ? 4 : 3);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    cr_assert_eq(xd_gguf_writer_close(w), 0);
    return strdup(tmpl);
}

static int try_load(enum broken b, char *err, size_t errlen, struct xd_tokenizer **tok) {
    char *path = write_vocab(b);
    struct xd_gguf g;
    char gerr[256];
    cr_assert_eq(xd_gguf_open(path, &g, gerr, sizeof gerr), 0, "%s", gerr);
    err[0] = 0;
    int rc = xd_tokenizer_load(&g, tok, err, errlen);
    xd_gguf_close(&g);
    unlink(path);
    free(path);
    return rc;
}

Test(tokenizer, load_errors_name_the_key) {
    static const struct {
        enum broken b;
        int rc;
        const char *in_msg;
    } cases[] = {
        {NO_MODEL, XD_E_MISSING, "tokenizer.ggml.model"},
        {BAD_MODEL, XD_E_UNSUPPORTED, "'t5'"},
        {NO_TOKENS, XD_E_MISSING, "tokenizer.ggml.tokens"},
        {TOKENS_NOT_STRINGS, XD_E_BAD_TYPE, "tokenizer.ggml.tokens"},
        {SHORT_SCORES, XD_E_BAD_TYPE, "tokenizer.ggml.scores"},
        {BAD_PRE, XD_E_UNSUPPORTED, "'no-such-pre'"},
        {NO_MERGES, XD_E_MISSING, "tokenizer.ggml.merges"},
        {BOOL_NOT_BOOL, XD_E_BAD_TYPE, "tokenizer.ggml.add_bos_token"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256];
        struct xd_tokenizer *tok = (struct xd_tokenizer *)1;
        int rc = try_load(cases[i].b, err, sizeof err, &tok);
        cr_expect_eq(rc, cases[i].rc, "case %zu: %s (%s)", i, xd_err_name(rc), err);
        cr_expect_null(tok, "case %zu", i);
        cr_expect(strstr(err, cases[i].in_msg), "case %zu: message '%s' lacks '%s'", i, err,
                  cases[i].in_msg);
    }
}

Test(tokenizer, tiny_vocab_merges_and_eog) {
    char err[256];
    struct xd_tokenizer *tok;
    cr_assert_eq(try_load(OK_BPE, err, sizeof err, &tok), 0, "%s", err);
    struct xd_tokens ids = {0};
    tokenize_ok(tok, "abab<|end|>", 11, XD_TOK_PARSE_SPECIAL, &ids);
    static const int32_t want[] = {2, 2, 3}; /* "ab" merged; the control token by text */
    expect_ids(&ids, want, 3, "tiny");
    cr_expect(xd_tokenizer_is_eog(tok, 3));
    xd_tokens_free(&ids);
    xd_tokenizer_free(tok);
    /* an out-of-range id is ignored as llama.cpp ignores it: the default (none here) stays */
    cr_assert_eq(try_load(ID_OUT_OF_RANGE, err, sizeof err, &tok), 0, "%s", err);
    cr_expect_eq(xd_tokenizer_eos(tok), -1);
    cr_expect(xd_tokenizer_is_eog(tok, 3)); /* "<|end|>" still ends generation by its text */
    xd_tokenizer_free(tok);
}

/* ---- the CLI ------------------------------------------------------------------------------- */

extern char **environ;

/* run expertd with args (argv[1..]); its stdout in out (NUL-terminated); returns the exit code */
static int run_cli(const char *const *args, char *out, size_t cap) {
    char *argv[16];
    size_t n = 0;
    argv[n++] = (char *)XD_EXPERTD_BIN;
    for (; args[n - 1] && n < 15; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, XD_EXPERTD_BIN, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(fds[0], out + len, cap - 1 - len)) > 0) len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(tokenizer, cli) {
    char *spm = xd_test_fixture("tokenizer/ggml-vocab-llama-spm.gguf");
    char *qwen = xd_test_fixture("qwen3moe-tiny-q8_0.gguf");
    char out[4096];
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", spm, "--no-bos", "Hello world", NULL},
                         out, sizeof out), 0);
    cr_expect_str_eq(out, "[15043,3186]\n");
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", spm, "Hello\n  world", NULL}, out,
                         sizeof out), 0);
    cr_expect_str_eq(out, "[1,15043,13,29871,3186]\n"); /* BOS per the vocab; text verbatim */
    cr_expect_eq(run_cli((const char *[]){"tokenize", "--model", spm, "--no-bos", "", NULL}, out,
                         sizeof out), 0);
    cr_expect_str_eq(out, "[]\n");
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", spm, "--no-bos", "--parse-special",
                                          "<s>", NULL}, out, sizeof out), 0);
    cr_expect_str_eq(out, "[1]\n");
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", qwen, "-1", NULL}, out, sizeof out), 0);
    cr_expect_str_eq(out, "[12,16]\n"); /* no BOS for this vocab; "-1" is the TEXT */
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", spm, "--", "--no-bos", NULL}, out,
                         sizeof out), 0);
    cr_expect_str_eq(out, "[1,1192,1217,29899,27737]\n");
    /* errors: exit 1 for a model that does not load, 2 for usage */
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", "/nonexistent.gguf", "x", NULL}, out,
                         sizeof out), 1);
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", spm, NULL}, out, sizeof out), 2);
    cr_expect_eq(run_cli((const char *[]){"tokenize", "x", NULL}, out, sizeof out), 2);
    cr_expect_eq(run_cli((const char *[]){"tokenize", "-m", spm, "a", "b", NULL}, out, sizeof out),
                 2);
    free(spm);
    free(qwen);
}

/* ---- speed: a 10k+ token text takes milliseconds -------------------------------------------- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void time_long_text(const char *vocab) {
    struct xd_tokenizer *t = load_fixture(vocab);
    /* the vectors repeated, plus long unbroken runs (one 20k-digit number, 20k letters) */
    char rel[256];
    snprintf(rel, sizeof rel, "%s.inp", vocab);
    char *p = xd_test_fixture(rel);
    size_t n;
    char *inp = xd_test_read_file(p, &n);
    cr_assert(inp);
    size_t cap = 8 * n + 40002, len = 0;
    char *text = malloc(cap);
    cr_assert(text);
    for (int r = 0; r < 8; r++, len += n) memcpy(text + len, inp, n);
    memset(text + len, '7', 20000);
    len += 20000;
    text[len++] = ' ';
    memset(text + len, 'q', 20000);
    len += 20000;
    struct xd_tokens ids = {0};
    double t0 = now_ms();
    tokenize_ok(t, text, len, 0, &ids);
    double ms = now_ms() - t0;
    cr_log_info("%s: %zu bytes -> %zu tokens in %.1f ms", vocab, len, ids.n, ms);
    fprintf(stderr, "%s: %zu bytes -> %zu tokens in %.1f ms\n", vocab, len, ids.n, ms);
    cr_expect_gt(ids.n, 10000);
    cr_expect_lt(ms, 1000.0, "%s: %.0f ms for %zu tokens", vocab, ms, ids.n);
    xd_tokens_free(&ids);
    free(text);
    free(inp);
    free(p);
    xd_tokenizer_free(t);
}

Test(tokenizer, speed_spm) { time_long_text("tokenizer/ggml-vocab-llama-spm.gguf"); }
Test(tokenizer, speed_deepseek) { time_long_text("tokenizer/ggml-vocab-deepseek-llm.gguf"); }
Test(tokenizer, speed_gpt2) { time_long_text("tokenizer/ggml-vocab-gpt-2.gguf"); }
