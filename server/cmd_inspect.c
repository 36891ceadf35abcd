/* cmd_inspect.c - `expertd inspect MODEL.gguf [--json]`: what a GGUF file holds.
 *
 * Opens the file with the validating reader (engine/gguf.c) and prints the report of
 * engine/gguf_dump.c: text for people (long arrays summarized), or one JSON object for scripts
 * (everything, in full). A file the reader rejects is reported with the reader's message, which
 * names the key or tensor at fault, and exit status 1; bad usage exits 2. The file is mmap'ed,
 * never read whole, so inspecting a 100 GB model costs only its tables.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "gguf.h"
#include "gguf_dump.h"
#include "xd_error.h"

static void usage(FILE *f) {
    fputs("usage: expertd inspect MODEL.gguf [--json]\n"
          "  print a GGUF file's header, hyper-parameters, tokenizer, metadata, tensors and\n"
          "  bytes per expert; --json prints one JSON object with every value in full\n",
          f);
}

int xd_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "expertd inspect: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "expertd inspect: more than one file given ('%s', '%s')\n", path,
                    argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }

    struct xd_gguf g;
    char err[512];
    int rc = xd_gguf_open(path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "expertd inspect: %s: %s (%s)\n", path, err[0] ? err : xd_strerror(rc),
                xd_err_name(rc));
        return 1;
    }
    if (json) {
        json_t *j = xd_gguf_dump_json(&g, path);
        if (!j) {
            rc = XD_E_NOMEM;
        } else {
            /* JSON_PRESERVE_ORDER: keys in file order also with a jansson older than 2.8 */
            if (json_dumpf(j, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER) ||
                fputc('\n', stdout) == EOF)
                rc = XD_E_IO;
            json_decref(j);
        }
    } else {
        rc = xd_gguf_dump_text(&g, path, stdout);
    }
    xd_gguf_close(&g);
    if (!rc && fflush(stdout)) rc = -errno;
    if (rc) {
        fprintf(stderr, "expertd inspect: %s: %s\n", path, xd_strerror(rc));
        return 1;
    }
    return 0;
}
