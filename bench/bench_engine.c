/* bench_engine.c - `expertd bench engine`: how fast the CPU engine prefills and decodes one
 * model, measured the way llama.cpp's llama-bench does, so the two print comparable numbers.
 *
 * Prefill (pp): the KV cache is cleared, then -p random tokens go through one forward pass
 * (logits of the last only); decode (tg): cleared again, then -n tokens one at a time from
 * position 0, logits every step. Each is repeated -r times after one untimed warm-up (which
 * faults the weights in); tok/s is reported as mean +- sample sd and median over the repetitions.
 * Decode is memory-bound, so next to it goes the bandwidth it implies: the weight bytes one
 * decode step reads (every non-expert matrix, k experts per layer, one embedding row) times
 * tok/s, and with --membw the machine's read bandwidth measured by the same number of threads in
 * the same run, and the fraction reached. The backend's counters split the time into matmul
 * (with its own GB/s) and attention, and an FNV-1a hash of the last logits makes a perf run a
 * correctness check too (same hash = same bits, whatever the backend or thread count).
 * Not done: mixed prefill+decode batches and several sequences (that is `bench serve`).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_engine.h"
#include "expert_cache.h"
#include "forward.h"
#include "model.h"
#include "quant.h"
#include "xd_error.h"
#ifdef XD_HAVE_CUDA
#include "xd_cuda.h"
#endif

struct engine_opts {
    const char *model, *backend;
    int32_t n_prompt, n_gen, reps, threads;
    bool json, membw, no_repack;
    uint64_t gpu_memory;    /* --gpu-memory (backend cuda) */
    struct xd_xc_config xc; /* --expert-cache ... : an offloaded expert cache */
};

static void engine_usage(FILE *f) {
    fprintf(f, "usage: expertd bench engine -m MODEL [-p N] [-n N] [-t N] [-r N] [--json]\n"
               "  -m, --model FILE      GGUF model\n"
               "  -p, --n-prompt N      prompt tokens of the prefill test (default 512; 0 = skip)\n"
               "  -n, --n-gen N         tokens of the decode test (default 128; 0 = skip)\n"
               "  -t, --threads N       kernel threads (default: one per CPU)\n"
               "  -r, --repetitions N   timed runs of each test (default 5)\n"
               "  --backend NAME        " XD_BACKEND_NAMES ", cuda (default cpu)\n"
               "  --no-repack           keep the weights in the file's row layout (no panel copy)\n"
               "  --membw               also measure memory read bandwidth with the same threads\n"
               "                        (backend cuda: device-to-device and pinned host-to-device\n"
               "                        copy bandwidth, and the HBM and PCIe limits of decode)\n"
               "  --gpu-memory SIZE     backend cuda: VRAM to use at most (experts get the rest)\n"
               "  --expert-cache SIZE and the other --expert-* options of `expertd run`\n"
               "  --json                one JSON object: prefill_tok_s, decode_tok_s, "
               "bandwidth_gb_s, ...\n");
}

static bool int_arg(const char *prog, const char *flag, const char *s, long lo, long hi,
                    int32_t *out) {
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "expertd bench %s: %s expects an integer in [%ld, %ld], got '%s'\n", prog,
                flag, lo, hi, s);
        return false;
    }
    *out = (int32_t)v;
    return true;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct sample_stats {
    double mean, sd, median;
};

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static struct sample_stats stats_of(double *v, int n) {
    struct sample_stats s = {0};
    if (n <= 0) return s;
    for (int i = 0; i < n; i++) s.mean += v[i] / n;
    for (int i = 0; i < n; i++) s.sd += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return s;
}

static uint64_t tensor_bytes(const struct xd_tensor *t) {
    if (!t->data) return 0;
    return (uint64_t)xd_row_size(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

/* Weight bytes one decode step reads: everything but the embedding table (one row of it) and
 * the routed experts (k of each layer's). */
static uint64_t decode_bytes(const struct xd_model *m) {
    const struct xd_hparams *hp = &m->hp;
    uint64_t b = xd_row_size(m->tok_embd.type, m->tok_embd.ne[0]);
    b += tensor_bytes(&m->output_norm) + tensor_bytes(&m->output);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const struct xd_layer *L = &m->layers[l];
        const struct xd_tensor *dense[] = {&L->attn_norm, &L->wq,       &L->wk,     &L->wv,
                                           &L->wo,        &L->q_norm,   &L->k_norm, &L->ffn_norm,
                                           &L->gate_inp,  &L->ffn_gate, &L->ffn_up, &L->ffn_down};
        for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++) b += tensor_bytes(dense[i]);
        if (m->moe && hp->n_expert > 0)
            b += (tensor_bytes(&L->gate_exps) + tensor_bytes(&L->up_exps) +
                  tensor_bytes(&L->down_exps)) /
                 (uint64_t)hp->n_expert * (uint64_t)hp->n_expert_used;
    }
    return b;
}

static uint64_t fnv1a(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static int engine_parse(int argc, char **argv, struct engine_opts *o) {
    *o = (struct engine_opts){.n_prompt = 512, .n_gen = 128, .reps = 5};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            engine_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--membw")) {
            o->membw = true;
            continue;
        }
        if (!strcmp(a, "--no-repack")) {
            o->no_repack = true;
            continue;
        }
        const int used = xd_xc_config_argv(&o->xc, "bench engine", argc, argv, &i);
        if (used < 0) return -1;
        if (used) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "expertd bench engine: unknown option or missing value: %s\n", a);
            return -1;
        }
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--backend"))
            o->backend = v;
        else if (!strcmp(a, "--gpu-memory"))
            ok = xd_xc_parse_size(v, &o->gpu_memory) == 0;
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
            ok = int_arg("engine", a, v, 0, 1 << 20, &o->n_prompt);
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
            ok = int_arg("engine", a, v, 0, 1 << 20, &o->n_gen);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = int_arg("engine", a, v, 1, 1024, &o->threads);
        else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions"))
            ok = int_arg("engine", a, v, 1, 1000, &o->reps);
        else {
            fprintf(stderr, "expertd bench engine: unknown option %s\n", a);
            return -1;
        }
        if (!ok) return -1;
    }
    if (!o->model) {
        fprintf(stderr, "expertd bench engine: -m MODEL is required\n");
        engine_usage(stderr);
        return -1;
    }
    return 0;
}

/* One test: clear the sequence, then n tokens as one batch (prefill) or one at a time. Returns
 * the seconds it took, or a negative code. */
static double run_test(struct xd_ctx *ctx, int32_t n, bool one_by_one, uint64_t *rng,
                       int32_t n_vocab, int32_t *tok, int32_t *pos, int32_t *seq, float *logits,
                       int *rc) {
    xd_kv_seq_truncate(xd_ctx_kv(ctx), 0, 0);
    for (int32_t i = 0; i < n; i++) {
        *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
        tok[i] = (int32_t)(*rng % (uint64_t)n_vocab);
        pos[i] = i;
        seq[i] = 0;
    }
    const double t0 = now_s();
    if (one_by_one) {
        for (int32_t i = 0; i < n && !*rc; i++) {
            struct xd_batch b = {.n_tokens = 1, .token = tok + i, .pos = pos + i, .seq = seq};
            *rc = xd_forward(ctx, &b, logits);
        }
    } else {
        struct xd_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq};
        *rc = xd_forward(ctx, &b, logits);
    }
    return now_s() - t0;
}

int xd_bench_engine_main(int argc, char **argv) {
    struct engine_opts o;
    const int prc = engine_parse(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    char err[512] = "";
    struct xd_model *m = NULL;
    struct xd_ctx *ctx = NULL;
    struct xd_xc *xc = NULL;
#ifdef XD_HAVE_CUDA
    struct xd_cuda_xcb *xcb = NULL;
#endif
    int32_t *tok = NULL, *pos = NULL, *seq = NULL;
    float *logits = NULL;
    double *pp = NULL, *tg = NULL;
    int status = 1, rc;
    if ((rc = xd_model_load(o.model, &m, err, sizeof err))) {
        fprintf(stderr, "expertd bench engine: %s: %s\n", o.model, err);
        goto out;
    }
    const int32_t n_max = o.n_prompt > o.n_gen ? o.n_prompt : o.n_gen;
    struct xd_ctx_params cp = {.n_ctx = n_max + 16,
                               .n_batch = o.n_prompt > 512 ? 512 : o.n_prompt,
                               .backend = o.backend,
                               .n_threads = o.threads,
                               .no_repack = o.no_repack};
    const bool cuda = o.backend && !strcmp(o.backend, "cuda");
    o.xc.model_path = o.model;
    if (cuda) {
#ifdef XD_HAVE_CUDA
        if ((rc = xd_cuda_open_xc(m, &o.xc, o.gpu_memory, cp.n_ctx, 1,
                                  cp.n_batch > 0 ? cp.n_batch : 512, &xcb, &xc, err, sizeof err))) {
            fprintf(stderr, "expertd bench engine: %s\n", err);
            goto out;
        }
#endif
    } else if (m->moe && o.xc.budget && (rc = xd_xc_open(m, &o.xc, &xc, err, sizeof err))) {
        fprintf(stderr, "expertd bench engine: %s\n", err);
        goto out;
    }
    cp.xc = xc;
    if ((rc = xd_ctx_create(m, &cp, &ctx, err, sizeof err))) {
        fprintf(stderr, "expertd bench engine: %s\n", err);
        goto out;
    }
    struct xd_backend *be = xd_ctx_backend(ctx);
    const int32_t n_vocab = (int32_t)m->hp.n_vocab;
    tok = calloc((size_t)n_max + 1, sizeof *tok);
    pos = calloc((size_t)n_max + 1, sizeof *pos);
    seq = calloc((size_t)n_max + 1, sizeof *seq);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    pp = calloc((size_t)o.reps, sizeof *pp);
    tg = calloc((size_t)o.reps, sizeof *tg);
    if (!tok || !pos || !seq || !logits || !pp || !tg) {
        fprintf(stderr, "expertd bench engine: out of memory\n");
        goto out;
    }
    struct xd_membw_result bw = {0};
    double d2d = 0, h2d = 0; /* GB/s, backend cuda with --membw */
#ifdef XD_HAVE_CUDA
    if (cuda && o.membw && (rc = xd_cuda_bandwidth((size_t)1 << 30, 9, &d2d, &h2d))) {
        fprintf(stderr, "expertd bench engine: GPU bandwidth probe failed: %s\n", xd_strerror(rc));
        goto out;
    }
#endif
    if (o.membw && !cuda && (rc = xd_membw_measure((size_t)1 << 30, xd_backend_n_threads(be), 5, &bw))) {
        fprintf(stderr, "expertd bench engine: bandwidth probe failed: %s\n", xd_strerror(rc));
        goto out;
    }
    uint64_t rng = 0x5eed;
    rc = 0;
    /* warm-up: faults every weight in and lets the threads spin up */
    if (o.n_prompt) run_test(ctx, o.n_prompt, false, &rng, n_vocab, tok, pos, seq, logits, &rc);
    if (o.n_gen && !rc)
        run_test(ctx, o.n_gen < 4 ? o.n_gen : 4, true, &rng, n_vocab, tok, pos, seq, logits, &rc);
    struct xd_backend_stats st_pp = {0}, st_tg = {0};
    struct xd_xc_stats xs0 = {0}, xs1 = {0}; /* the expert cache around the last decode run */
    for (int r = 0; r < o.reps && !rc; r++) {
        if (o.n_prompt) {
            xd_backend_stats_reset(be);
            pp[r] = o.n_prompt /
                    run_test(ctx, o.n_prompt, false, &rng, n_vocab, tok, pos, seq, logits, &rc);
            st_pp = *xd_backend_stats(be);
        }
        if (o.n_gen && !rc) {
            xd_backend_stats_reset(be);
            if (xc) xd_xc_stats_get(xc, &xs0);
            tg[r] =
                o.n_gen / run_test(ctx, o.n_gen, true, &rng, n_vocab, tok, pos, seq, logits, &rc);
            st_tg = *xd_backend_stats(be);
            if (xc) xd_xc_stats_get(xc, &xs1);
        }
    }
    if (rc) {
        fprintf(stderr, "expertd bench engine: forward pass failed: %s\n", xd_strerror(rc));
        goto out;
    }
    const uint64_t hash = fnv1a(logits, (size_t)n_vocab * sizeof *logits);
    const struct sample_stats sp = stats_of(pp, o.n_prompt ? o.reps : 0);
    const struct sample_stats sg = stats_of(tg, o.n_gen ? o.reps : 0);
    const uint64_t dbytes = decode_bytes(m);
    const double bw_decode = (double)dbytes * sg.mean / 1e9;
    /* the last run's split: matmul (and its GB/s over its own time) and attention */
    /* expert bytes read from the store per decoded token (offloaded caches), and the limits */
    const double miss_bytes = o.n_gen ? (double)(xs1.bytes_read - xs0.bytes_read) / o.n_gen : 0;
    const double hbm_limit = d2d > 0 ? d2d * 1e9 / (double)dbytes : 0;
    const double h2d_limit = h2d > 0 && miss_bytes > 0 ? h2d * 1e9 / miss_bytes : 0;
    const double mm_s = (double)st_tg.matmul_ns * 1e-9, at_s = (double)st_tg.attn_ns * 1e-9;
    const double mm_gbs = mm_s > 0 ? (double)st_tg.matmul_weight_bytes / mm_s / 1e9 : 0;
    const double pp_mm_s = (double)st_pp.matmul_ns * 1e-9, pp_at_s = (double)st_pp.attn_ns * 1e-9;
    if (o.json) {
        json_t *j = json_object();
        json_object_set_new(j, "model", json_string(o.model));
        json_object_set_new(j, "backend", json_string(xd_ctx_backend_name(ctx)));
        json_object_set_new(j, "threads", json_integer(xd_backend_n_threads(be)));
        json_object_set_new(j, "n_prompt", json_integer(o.n_prompt));
        json_object_set_new(j, "n_gen", json_integer(o.n_gen));
        json_object_set_new(j, "repetitions", json_integer(o.reps));
        json_object_set_new(j, "prefill_tok_s", json_real(sp.mean));
        json_object_set_new(j, "prefill_tok_s_sd", json_real(sp.sd));
        json_object_set_new(j, "prefill_tok_s_median", json_real(sp.median));
        json_object_set_new(j, "decode_tok_s", json_real(sg.mean));
        json_object_set_new(j, "decode_tok_s_sd", json_real(sg.sd));
        json_object_set_new(j, "decode_tok_s_median", json_real(sg.median));
        json_object_set_new(j, "decode_weight_bytes_per_token", json_integer((json_int_t)dbytes));
        json_object_set_new(j, "bandwidth_gb_s", json_real(bw_decode));
        if (xc) {
            json_object_set_new(j, "expert_bytes_read_per_token", json_real(miss_bytes));
            json_object_set_new(j, "expert_hit_rate",
                                json_real(xs1.acquires > xs0.acquires
                                              ? (double)(xs1.hits - xs0.hits) /
                                                    (double)(xs1.acquires - xs0.acquires)
                                              : 0));
        }
        if (o.membw && cuda) {
            json_object_set_new(j, "gpu_d2d_gb_s", json_real(d2d));
            json_object_set_new(j, "gpu_h2d_pinned_gb_s", json_real(h2d));
            json_object_set_new(j, "hbm_limit_tok_s", json_real(hbm_limit));
            json_object_set_new(j, "hbm_fraction", json_real(sg.mean / hbm_limit));
            if (h2d_limit > 0) {
                json_object_set_new(j, "h2d_limit_tok_s", json_real(h2d_limit));
                json_object_set_new(j, "h2d_fraction", json_real(sg.mean / h2d_limit));
            }
        } else if (o.membw) {
            json_object_set_new(j, "membw_gb_s", json_real(bw.gb_s_median));
            json_object_set_new(j, "bandwidth_fraction", json_real(bw_decode / bw.gb_s_median));
        }
        json_object_set_new(j, "decode_matmul_s", json_real(mm_s));
        json_object_set_new(j, "decode_matmul_gb_s", json_real(mm_gbs));
        json_object_set_new(j, "decode_attention_s", json_real(at_s));
        json_object_set_new(j, "prefill_matmul_s", json_real(pp_mm_s));
        json_object_set_new(j, "prefill_attention_s", json_real(pp_at_s));
        char hs[17];
        snprintf(hs, sizeof hs, "%016llx", (unsigned long long)hash);
        json_object_set_new(j, "logits_hash", json_string(hs));
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!s) goto out;
        puts(s);
        free(s);
    } else {
        printf("model      %s\nbackend    %s, %d threads\n", o.model, xd_ctx_backend_name(ctx),
               xd_backend_n_threads(be));
        printf("| test   |        tok/s (mean +- sd) |  median | notes\n");
        if (o.n_prompt)
            printf("| pp%-4d | %12.2f +- %9.2f | %7.2f | matmul %.3f s, attention %.3f s of the "
                   "last run\n",
                   o.n_prompt, sp.mean, sp.sd, sp.median, pp_mm_s, pp_at_s);
        if (o.n_gen)
            printf(
                "| tg%-4d | %12.2f +- %9.2f | %7.2f | %.1f MB/token -> %.1f GB/s; matmul %.1f GB/s "
                "(%.3f s), attention %.3f s\n",
                o.n_gen, sg.mean, sg.sd, sg.median, (double)dbytes / 1e6, bw_decode, mm_gbs, mm_s,
                at_s);
        if (xc)
            printf("expert cache: %.1f MB read per decoded token, hit rate %.3f\n",
                   miss_bytes / 1e6,
                   xs1.acquires > xs0.acquires ? (double)(xs1.hits - xs0.hits) /
                                                     (double)(xs1.acquires - xs0.acquires)
                                               : 0.0);
        if (o.membw && cuda) {
            printf("GPU copy bandwidth: device-to-device %.1f GB/s (read + write), pinned "
                   "host-to-device %.1f GB/s\n", d2d, h2d);
            printf("decode vs HBM limit (%.1f MB/token / D2D): %.1f tok/s -> %.0f%%\n",
                   (double)dbytes / 1e6, hbm_limit, 100.0 * sg.mean / hbm_limit);
            if (h2d_limit > 0)
                printf("decode vs host-to-device limit (%.1f MB missed/token / H2D): %.2f tok/s "
                       "-> %.0f%%\n", miss_bytes / 1e6, h2d_limit, 100.0 * sg.mean / h2d_limit);
        } else if (o.membw)
            printf("memory read bandwidth %.1f GB/s (median of 5, best %.1f, %d threads): decode "
                   "at %.0f%%\n",
                   bw.gb_s_median, bw.gb_s_best, bw.threads, 100.0 * bw_decode / bw.gb_s_median);
        printf("logits hash %016llx\n", (unsigned long long)hash);
    }
    status = 0;
out:
    free(pp);
    free(tg);
    free(logits);
    free(tok);
    free(pos);
    free(seq);
    xd_ctx_destroy(ctx);
    xd_xc_destroy(xc);
#ifdef XD_HAVE_CUDA
    xd_cuda_xcb_destroy(xcb);
#endif
    xd_model_free(m);
    return status;
}

int xd_bench_membw_main(int argc, char **argv) {
    int32_t threads = 0, reps = 5, mib = 1024;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: expertd bench membw [-t N] [--size MiB] [-r N] [--json]\n"
                   "  -t, --threads N       reader threads (default: one per CPU)\n"
                   "  --size MiB            buffer size (default 1024)\n"
                   "  -r, --repetitions N   timed passes (default 5)\n"
                   "  --json                one JSON object\n");
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "expertd bench membw: unknown option or missing value: %s\n", a);
            return 2;
        }
        const char *v = argv[++i];
        bool ok;
        if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = int_arg("membw", a, v, 1, 256, &threads);
        else if (!strcmp(a, "--size"))
            ok = int_arg("membw", a, v, 1, 1 << 20, &mib);
        else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions"))
            ok = int_arg("membw", a, v, 1, 1000, &reps);
        else {
            fprintf(stderr, "expertd bench membw: unknown option %s\n", a);
            return 2;
        }
        if (!ok) return 2;
    }
    if (!threads) {
        const long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : n > 256 ? 256 : (int32_t)n;
    }
    struct xd_membw_result r;
    const int rc = xd_membw_measure((size_t)mib << 20, threads, reps, &r);
    if (rc) {
        fprintf(stderr, "expertd bench membw: %s\n", xd_strerror(rc));
        return 1;
    }
    if (json)
        printf("{\"membw_gb_s\":%.3f,\"membw_gb_s_best\":%.3f,\"bytes\":%zu,\"threads\":%d,"
               "\"repetitions\":%d}\n",
               r.gb_s_median, r.gb_s_best, r.bytes, r.threads, r.reps);
    else
        printf(
            "memory read bandwidth: %.1f GB/s median, %.1f best (%d threads, %zu MiB, %d passes)\n",
            r.gb_s_median, r.gb_s_best, r.threads, r.bytes >> 20, r.reps);
    return 0;
}
