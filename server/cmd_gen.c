/* cmd_gen.c - `expertd gen`: write a synthetic MoE model (engine/synth.c) as a GGUF file.
 *
 * Parses the options into an xd_synth_config (the --arch defaults first, then every option
 * over them), optionally sizes the layer count to --size, and streams the model into a
 * gguf_write writer on the output path. On any failure the partial file is removed (only if
 * it is still the regular file this command created) and the exit status is 1; bad usage
 * exits 2. Options are a table, parsed by hand rather than with getopt_long, whose state is
 * process-global. Not handled: SIGINT mid-write leaves the partial file (removing it would
 * need a signal handler and a global).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "gguf_write.h"
#include "quant.h"
#include "synth.h"
#include "xd_error.h"

enum opt_kind { O_I64, O_F32, O_F64, O_U64, O_STR, O_TYPE, O_SIZE, O_ARCH, O_FLAG };

struct gen_opts {
    struct xd_synth_config c;
    const char *out;
    uint64_t size; /* 0: use --layers */
    int layers_given;
    int quiet;
};

struct opt {
    const char *name;
    enum opt_kind kind;
    size_t off; /* into struct gen_opts */
    const char *help;
};

#define OFF(f) offsetof(struct gen_opts, f)
static const struct opt opts[] = {
    {"-o", O_STR, OFF(out), "output file (required)"},
    {"--output", O_STR, OFF(out), "same as -o"},
    {"--arch", O_ARCH, OFF(c.arch), "mixtral (GGUF arch llama) or qwen3moe [mixtral]"},
    {"--vocab", O_STR, OFF(c.vocab_path), "copy the tokenizer.* keys of this GGUF [built-in "
                                          "258-token byte vocab]"},
    {"--type", O_TYPE, OFF(c.type), "f32, f16, bf16, q4_0, q8_0 or q4_k for large matrices "
                                    "[q8_0]"},
    {"--layers", O_I64, OFF(c.n_layers), "transformer blocks [4]"},
    {"--d-model", O_I64, OFF(c.d_model), "embedding length [256]"},
    {"--heads", O_I64, OFF(c.n_heads), "attention heads [8]"},
    {"--kv-heads", O_I64, OFF(c.n_kv_heads), "key/value heads [mixtral 4, qwen3moe 2]"},
    {"--head-dim", O_I64, OFF(c.head_dim), "head size [d-model/heads; qwen3moe 64]"},
    {"--experts", O_I64, OFF(c.n_experts), "experts per layer [mixtral 8, qwen3moe 16]"},
    {"--top-k", O_I64, OFF(c.top_k), "experts used per token [mixtral 2, qwen3moe 4]"},
    {"--ff", O_I64, OFF(c.d_ff), "hidden size of one expert [mixtral 512, qwen3moe 256]"},
    {"--ctx", O_I64, OFF(c.n_ctx), "context length [4096]"},
    {"--rope-base", O_F32, OFF(c.rope_base), "RoPE frequency base [1e6]"},
    {"--seed", O_U64, OFF(c.seed), "weights seed; same seed and options, same bytes [1]"},
    {"--skew", O_F64, OFF(c.skew), "router skew >= 0: hot and cold experts; 1 gives the "
                                   "hottest of 8 experts (top-2) ~22% of routing [0]"},
    {"--size", O_SIZE, OFF(size), "choose --layers for a file of about this size (4G, 500M)"},
    {"--name", O_STR, OFF(c.name), "general.name [expertd-synth-<arch>]"},
    {"--threads", O_I64, OFF(c.n_threads), "generator threads [one per CPU]"},
    {"--quiet", O_FLAG, OFF(quiet), "no progress or summary"},
};
#undef OFF

static void usage(FILE *f) {
    fprintf(f, "usage: expertd gen -o OUT.gguf [options]\n\n"
               "Writes a random Mixture-of-Experts model that llama.cpp and expertd load; its\n"
               "output is gibberish by design. Norms and routers are F32; a large matrix whose\n"
               "rows are not whole blocks of --type is written as F16.\n\noptions:\n");
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        fprintf(f, "  %-12s %s\n", opts[i].name, opts[i].help);
}

/* "4G", "512M", "1.5G", "123456": bytes (K/M/G/T are powers of 1024); 0 on a bad string. */
static uint64_t parse_size(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0)) return 0;
    static const char units[] = "KMGT";
    const char *u = *end ? strchr(units, *end == 'k' ? 'K' : *end) : NULL;
    if (*end && (!u || !*u || (end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB"))))
        return 0;
    for (const char *p = units; u && p <= u; p++) v *= 1024.0;
    return v < 1.8e19 ? (uint64_t)v : 0;
}

static int parse_value(const struct opt *o, const char *arg, struct gen_opts *g) {
    void *dst = (char *)g + o->off;
    char *end;
    errno = 0;
    switch (o->kind) {
    case O_I64: {
        long long v = strtoll(arg, &end, 10);
        if (errno || *end || end == arg) return -1;
        if (dst == &g->c.n_threads) {
            g->c.n_threads = v > 0 && v < 4096 ? (int)v : 0;
        } else {
            *(int64_t *)dst = v;
            if (dst == &g->c.n_layers) g->layers_given = 1;
        }
        return 0;
    }
    case O_U64: {
        if (*arg == '-') return -1;
        unsigned long long v = strtoull(arg, &end, 0);
        if (errno || *end || end == arg) return -1;
        *(uint64_t *)dst = v;
        return 0;
    }
    case O_F32:
    case O_F64: {
        double v = strtod(arg, &end);
        if (errno || *end || end == arg) return -1;
        if (o->kind == O_F32) *(float *)dst = (float)v;
        else *(double *)dst = v;
        return 0;
    }
    case O_STR: *(const char **)dst = arg; return 0;
    case O_TYPE: {
        int t = xd_type_from_name(arg);
        if (t < 0) return -1;
        *(uint32_t *)dst = (uint32_t)t;
        return 0;
    }
    case O_SIZE: return (*(uint64_t *)dst = parse_size(arg)) ? 0 : -1;
    case O_ARCH: return xd_synth_arch_from_name(arg) < 0 ? -1 : 0; /* applied first */
    case O_FLAG: return 0;
    }
    return -1;
}

static const struct opt *find_opt(const char *name) {
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!strcmp(opts[i].name, name)) return &opts[i];
    return NULL;
}

/* 0 on success, 1 for --help, 2 for bad usage (message printed). */
static int parse_args(int argc, char **argv, struct gen_opts *g) {
    /* the architecture picks the defaults, so it is read before anything else */
    enum xd_synth_arch arch = XD_SYNTH_MIXTRAL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--arch") && xd_synth_arch_from_name(argv[i + 1]) >= 0)
            arch = (enum xd_synth_arch)xd_synth_arch_from_name(argv[i + 1]);
    memset(g, 0, sizeof *g);
    xd_synth_config_default(&g->c, arch);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
        const struct opt *o = find_opt(argv[i]);
        if (!o) {
            fprintf(stderr, "expertd gen: unknown option '%s'\n", argv[i]);
            return 2;
        }
        if (o->kind == O_FLAG) {
            *(int *)((char *)g + o->off) = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "expertd gen: %s needs a value\n", o->name);
            return 2;
        }
        if (parse_value(o, argv[++i], g)) {
            fprintf(stderr, "expertd gen: bad value '%s' for %s\n", argv[i], o->name);
            return 2;
        }
    }
    if (!g->out) {
        fprintf(stderr, "expertd gen: -o OUT.gguf is required\n");
        return 2;
    }
    if (g->size && g->layers_given) {
        fprintf(stderr, "expertd gen: --size and --layers exclude each other\n");
        return 2;
    }
    return 0;
}

struct progress {
    int tty;
    int last_pct;
};

static int on_progress(uint64_t done, uint64_t total, void *user) {
    struct progress *p = user;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (p->tty && pct != p->last_pct) {
        fprintf(stderr, "\rexpertd gen: %3d%%", pct);
        p->last_pct = pct;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tell which large matrices could not take --type (rows not whole blocks). */
static void report_fallbacks(const struct xd_synth *s, uint32_t type) {
    int64_t n = 0;
    const struct xd_synth_tensor *first = NULL;
    for (int64_t i = 0; i < xd_synth_n_tensors(s); i++) {
        const struct xd_synth_tensor *t = xd_synth_tensor_at(s, i);
        if (t->fallback && !n++) first = t;
    }
    if (n)
        fprintf(stderr, "expertd gen: note: %lld tensors (e.g. %s, rows of %lld) are not whole "
                "%s blocks of %lld and are written as F16\n", (long long)n, first->name,
                (long long)first->ne[0], xd_type_name(type),
                (long long)xd_type_traits(type)->blck_size);
}

int xd_cmd_gen(int argc, char **argv) {
    struct gen_opts g;
    int prc = parse_args(argc, argv, &g);
    if (prc == 1) {
        usage(stdout);
        return 0;
    }
    if (prc) {
        usage(stderr);
        return 2;
    }
    char err[512];
    int rc;
    if (g.size && (rc = xd_synth_fit_layers(&g.c, g.size, err, sizeof err))) {
        fprintf(stderr, "expertd gen: %s\n", err);
        return rc == XD_E_INVALID ? 2 : 1;
    }
    struct xd_synth *s;
    if ((rc = xd_synth_create(&g.c, &s, err, sizeof err))) {
        fprintf(stderr, "expertd gen: %s\n", err);
        return rc == XD_E_INVALID ? 2 : 1;
    }
    if (!g.quiet) {
        report_fallbacks(s, g.c.type);
        if (g.c.n_layers > 512)
            fprintf(stderr, "expertd gen: warning: %lld layers; llama.cpp loads at most 512\n",
                    (long long)g.c.n_layers);
    }
    struct xd_gguf_writer *w;
    if ((rc = xd_gguf_writer_create(g.out, &w))) {
        fprintf(stderr, "expertd gen: %s: %s\n", g.out, xd_strerror(rc));
        xd_synth_destroy(s);
        return 1;
    }
    struct progress p = {.tty = !g.quiet && isatty(2), .last_pct = -1};
    double t0 = now_s();
    rc = xd_synth_write(s, w, on_progress, &p);
    if (p.tty) fprintf(stderr, "\r%20s\r", ""); /* clear the percentage */
    if (rc) xd_gguf_writer_discard(w); /* removes the partial file */
    else rc = xd_gguf_writer_close(w); /* removes it too when the last flush fails */
    double dt = now_s() - t0;
    uint64_t bytes = xd_synth_file_size(s);
    int64_t n_t = xd_synth_n_tensors(s);
    xd_synth_destroy(s);
    if (rc) {
        fprintf(stderr, "expertd gen: %s: %s\n", g.out, xd_strerror(rc));
        return 1;
    }
    if (!g.quiet)
        printf("expertd gen: wrote %s: %s, %s, %lld layers, %lld tensors, %" PRIu64
               " bytes in %.2f s (%.2f GB/s)\n",
               g.out, xd_synth_arch_name(g.c.arch), xd_type_name(g.c.type),
               (long long)g.c.n_layers, (long long)n_t, bytes, dt, dt > 0 ? bytes / dt / 1e9 : 0.0);
    return 0;
}
