/* cmd_tokenize.c - `expertd tokenize -m MODEL [--no-bos] [--parse-special] TEXT`: the token ids
 * of a text, as one JSON array on stdout ([1,415,2936]).
 *
 * TEXT is taken verbatim - no escape processing, newlines and all - and tokenized with the
 * model's own vocabulary (engine/tokenizer.c); only the tokenizer.* keys of the GGUF are read,
 * so any model or vocab-only file works. BOS/EOS are added as llama.cpp's llama-tokenize adds
 * them: when the vocabulary asks for BOS and --no-bos is not given. Control-token texts in
 * TEXT stay plain text unless --parse-special, as in llama.cpp's test-tokenizer-0, which wrote
 * the test vectors (llama-tokenize itself parses them by default). Errors go to stderr: exit 1
 * for a model that cannot be read or tokenized, 2 for bad usage. Any argument that is not an
 * option is TEXT, so a TEXT like "-1" needs no escaping; "--" ends the options for a TEXT that
 * is literally an option name.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "gguf.h"
#include "tokenizer.h"
#include "xd_error.h"

static void usage(FILE *f) {
    fputs("usage: expertd tokenize -m MODEL [--no-bos] [--parse-special] [--] TEXT\n"
          "  print the token ids of TEXT (taken verbatim) as a JSON array\n"
          "  -m, --model PATH   GGUF model or vocabulary file\n"
          "  --no-bos           add no BOS/EOS even where the vocabulary asks for them\n"
          "  --parse-special    text equal to a control token (\"<|im_end|>\") becomes that token\n"
          "                     (default off: --no-parse-special, llama.cpp's test vectors' way)\n",
          f);
}

int xd_cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *text = NULL;
    bool no_bos = false, parse_special = false, more_opts = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (more_opts && (!strcmp(a, "-m") || !strcmp(a, "--model"))) {
            if (++i >= argc) {
                fprintf(stderr, "expertd tokenize: %s needs a path\n", a);
                return 2;
            }
            path = argv[i];
        } else if (more_opts && !strcmp(a, "--no-bos")) {
            no_bos = true;
        } else if (more_opts && !strcmp(a, "--parse-special")) {
            parse_special = true;
        } else if (more_opts && !strcmp(a, "--no-parse-special")) { /* llama-tokenize's spelling */
            parse_special = false;
        } else if (more_opts && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            usage(stdout);
            return 0;
        } else if (more_opts && !strcmp(a, "--")) {
            more_opts = false;
        } else if (text) {
            fprintf(stderr, "expertd tokenize: more than one TEXT given (quote it as one "
                            "argument)\n");
            return 2;
        } else {
            text = a;
        }
    }
    if (!path || !text) {
        fprintf(stderr, "expertd tokenize: %s\n", !path ? "-m MODEL is required" : "no TEXT given");
        usage(stderr);
        return 2;
    }

    struct xd_gguf g;
    char err[512];
    int rc = xd_gguf_open(path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "expertd tokenize: %s: %s\n", path, err[0] ? err : xd_strerror(rc));
        return 1;
    }
    struct xd_tokenizer *tok = NULL;
    rc = xd_tokenizer_load(&g, &tok, err, sizeof err);
    xd_gguf_close(&g); /* the tokenizer keeps its own copy */
    if (rc) {
        fprintf(stderr, "expertd tokenize: %s: %s\n", path, err[0] ? err : xd_strerror(rc));
        return 1;
    }

    unsigned flags = parse_special ? XD_TOK_PARSE_SPECIAL : 0;
    if (!no_bos && xd_tokenizer_add_bos(tok)) flags |= XD_TOK_ADD_SPECIAL;
    struct xd_tokens ids = {0};
    rc = xd_tokenize(tok, text, strlen(text), flags, &ids);
    if (!rc) {
        putchar('[');
        for (size_t i = 0; i < ids.n; i++) printf(i ? ",%d" : "%d", (int)ids.ids[i]);
        puts("]");
        if (fflush(stdout)) rc = -errno;
    }
    xd_tokens_free(&ids);
    xd_tokenizer_free(tok);
    if (rc) {
        fprintf(stderr, "expertd tokenize: %s\n", xd_strerror(rc));
        return 1;
    }
    return 0;
}
