/* cmd_pack.c - `expertd pack MODEL.gguf [-o STORE]`: write the model's experts as a packed
 * store (cache/store_pack.c), the layout the expert cache reads fastest: one aligned extent and
 * one checksum per expert. By default the store goes beside the model as MODEL.xdpack, where
 * `run`/`serve --expert-cache` find it without being told. Prints one summary line (and
 * progress on a terminal); exit status 0, 1 on failure, 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "expert_cache.h"
#include "expert_store.h"
#include "model.h"
#include "xd_error.h"

static void usage(FILE *f) {
    fprintf(f, "usage: expertd pack MODEL.gguf [-o STORE] [--quiet]\n"
               "  Write MODEL's experts as a packed store: each expert one 4 KiB-aligned extent\n"
               "  with a CRC-32C, plus an index. Default STORE: MODEL.xdpack beside the model,\n"
               "  which `run --expert-cache` uses automatically.\n");
}

struct progress {
    int last_pct;
    bool show;
};

static int on_progress(uint64_t done, uint64_t total, void *user) {
    struct progress *p = user;
    int pct = (int)(done * 100 / total);
    if (p->show && pct != p->last_pct) {
        fprintf(stderr, "\rexpertd pack: %3d%%", pct);
        p->last_pct = pct;
    }
    return 0;
}

int xd_cmd_pack(int argc, char **argv) {
    const char *model = NULL, *out = NULL;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else if (argv[i][0] != '-' && !model) {
            model = argv[i];
        } else {
            fprintf(stderr, "expertd pack: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    char path[4096];
    if (!out) {
        if (xd_xs_default_path(model, path, sizeof path) >= (int)sizeof path) {
            fprintf(stderr, "expertd pack: path too long\n");
            return 2;
        }
        out = path;
    }
    char err[512] = "";
    struct xd_model *m = NULL;
    int rc = xd_model_load(model, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "expertd pack: %s: %s\n", model, err);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct progress pr = {.last_pct = -1, .show = !quiet && isatty(2)};
    rc = xd_xs_pack(m, out, on_progress, &pr, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (pr.show) fputc('\n', stderr);
    if (rc) {
        fprintf(stderr, "expertd pack: %s\n", err);
        xd_model_free(m);
        return 1;
    }
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    uint64_t bytes = (uint64_t)(m->hp.n_layer * m->hp.n_expert) * m->expert_bytes;
    char b[32];
    if (!quiet)
        printf("expertd pack: %s: %lld experts (%s) in %.1f s\n", out,
               (long long)(m->hp.n_layer * m->hp.n_expert), xd_xc_format_size(bytes, b, sizeof b), s);
    xd_model_free(m);
    return 0;
}
