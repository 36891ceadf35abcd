/* cmd_run.c - `expertd run`: generate text from a prompt on the CPU engine, for people and
 * for scripts. Text mode streams the completion to stdout (timings to stderr); --json prints one
 * object {prompt_tokens, tokens, text, top_logprobs, stats} whose logprobs are log-softmax over
 * the full vocabulary before any sampling transform, the shape the golden checks read.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "expert_cache.h"
#include "forward.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"
#include "xd_error.h"
#ifdef XD_HAVE_CUDA
#include "xd_cuda.h"
#endif

struct run_opts {
    const char *model, *prompt;
    int32_t n_predict, n_ctx, n_logprobs;
    int32_t n_threads;   /* --threads; 0 = one per CPU */
    const char *backend; /* --backend; NULL = "cpu" */
    uint64_t gpu_memory; /* --gpu-memory: cap on VRAM use (backend cuda); 0 = free VRAM */
    uint64_t kv_bytes;   /* --kv-cache: paged KV pool; 0 = the context's positions */
    bool json, ignore_eos, no_repack;
    struct xd_sampler_params sp;
    struct xd_xc_config xc; /* --expert-* options; budget 0 = everything resident */
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: expertd run -m MODEL -p PROMPT [-n N] [options]\n"
            "  -m, --model FILE        GGUF model\n"
            "  -p, --prompt TEXT       prompt (BOS added as the vocabulary asks)\n"
            "  -n, --n-predict N       tokens to generate (default 64)\n"
            "  --temp T                temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K               (default 40, 0 = off)\n"
            "  --top-p P               (default 0.95, 1 = off)\n"
            "  --min-p P               (default 0.05, 0 = off)\n"
            "  --seed S                RNG seed (default 0)\n"
            "  --repeat-penalty R      (default 1 = off)\n"
            "  --presence-penalty P, --frequency-penalty F   OpenAI-style (default 0)\n"
            "  --logprobs K            report the K most likely tokens per step (0..20)\n"
            "  --ctx N                 context positions (default prompt + n)\n"
            "  --kv-cache SIZE         KV cache pool (bytes, K/M/G, KiB/MiB/GiB; default: --ctx\n"
            "                          positions)\n"
            "  --ignore-eos            keep generating after end-of-generation tokens\n"
            "  --json                  print one JSON object instead of the text\n"
            "  -t, --threads N         CPU kernel threads (default: one per CPU)\n"
            "  --no-repack             keep the weights in the file's row layout (no copy in\n"
            "                          the CPU kernels' panel layout: less load time, slower)\n"
            "  --backend NAME          " XD_BACKEND_NAMES ", cuda (default cpu: the\n"
            "                          fastest kernels this CPU runs)\n"
            "  --gpu-memory SIZE       cuda: VRAM to use at most (default: what is free); without\n"
            "                          --expert-cache the experts get what the rest leaves\n"
            "%s", xd_xc_config_usage());
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Parse a number argument; false (with a message) if malformed or out of [lo, hi]. */
static bool num_arg(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "expertd run: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi,
                s);
        return false;
    }
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, struct run_opts *o) {
    o->sp = xd_sampler_params_default();
    o->n_predict = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        double v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            continue;
        }
        if (!strcmp(a, "--no-repack")) {
            o->no_repack = true;
            continue;
        }
        const int used = xd_xc_config_argv(&o->xc, "run", argc, argv, &i);
        if (used < 0) return -1;
        if (used) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "expertd run: unknown option or missing value: %s\n", a);
            return -1;
        }
        const char *val = argv[++i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = val;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = val;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!num_arg(a, val, 0, 1 << 24, &v)) return -1;
            o->n_predict = (int32_t)v;
        } else if (!strcmp(a, "--ctx")) {
            if (!num_arg(a, val, 1, 1 << 24, &v)) return -1;
            o->n_ctx = (int32_t)v;
        } else if (!strcmp(a, "--temp")) {
            if (!num_arg(a, val, 0, 100, &v)) return -1;
            o->sp.temperature = (float)v;
        } else if (!strcmp(a, "--top-k")) {
            if (!num_arg(a, val, 0, 1 << 30, &v)) return -1;
            o->sp.top_k = (int32_t)v;
        } else if (!strcmp(a, "--top-p")) {
            if (!num_arg(a, val, 0, 1, &v)) return -1;
            o->sp.top_p = (float)v;
        } else if (!strcmp(a, "--min-p")) {
            if (!num_arg(a, val, 0, 1, &v)) return -1;
            o->sp.min_p = (float)v;
        } else if (!strcmp(a, "--seed")) {
            if (!num_arg(a, val, 0, 18446744073709551615.0, &v)) return -1;
            o->sp.seed = (uint64_t)v;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (!num_arg(a, val, 0.01, 100, &v)) return -1;
            o->sp.repetition_penalty = (float)v;
        } else if (!strcmp(a, "--presence-penalty")) {
            if (!num_arg(a, val, -2, 2, &v)) return -1;
            o->sp.presence_penalty = (float)v;
        } else if (!strcmp(a, "--frequency-penalty")) {
            if (!num_arg(a, val, -2, 2, &v)) return -1;
            o->sp.frequency_penalty = (float)v;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!num_arg(a, val, 1, 1024, &v)) return -1;
            o->n_threads = (int32_t)v;
        } else if (!strcmp(a, "--backend")) {
            o->backend = val;
        } else if (!strcmp(a, "--kv-cache")) {
            if (xd_xc_parse_size(val, &o->kv_bytes)) {
                fprintf(stderr, "expertd run: --kv-cache: bad size '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--gpu-memory")) {
            if (xd_xc_parse_size(val, &o->gpu_memory)) {
                fprintf(stderr, "expertd run: --gpu-memory: bad size '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--logprobs")) {
            if (!num_arg(a, val, 0, XD_LOGPROBS_MAX, &v)) return -1;
            o->n_logprobs = (int32_t)v;
        } else {
            fprintf(stderr, "expertd run: unknown option %s\n", a);
            return -1;
        }
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "expertd run: -m MODEL and -p PROMPT are required\n");
        usage(stderr);
        return -1;
    }
    o->sp.n_logprobs = o->n_logprobs;
    return 0;
}

static void print_xc_info(const struct xd_xc *xc) {
    char line[1024];
    if (*xd_xc_describe(xc, line, sizeof line)) fprintf(stderr, "expertd run: %s\n", line);
}

/* The expert cache's configuration and counters, for --json's stats.expert_cache. */
static json_t *xc_json(const struct xd_xc *xc, int64_t n_layer) {
    struct xd_xc_info in;
    struct xd_xc_stats st;
    xd_xc_info(xc, &in);
    xd_xc_stats_get(xc, &st);
    json_t *j = json_object();
    json_object_set_new(j, "offloaded", json_boolean(in.offloaded));
    json_object_set_new(j, "budget_bytes", json_integer((json_int_t)in.budget));
    json_object_set_new(j, "slot_bytes", json_integer((json_int_t)in.slot_bytes));
    json_object_set_new(j, "slots", json_integer(in.n_slots));
    json_object_set_new(j, "store", json_string(in.store_kind));
    json_object_set_new(j, "store_path", json_string(in.store_path));
    json_object_set_new(j, "direct_io", json_boolean(in.direct));
    json_object_set_new(j, "io", json_string(in.io));
    json_object_set_new(j, "policy", json_string(in.policy));
    json_object_set_new(j, "evict", json_string(in.evict));
    static const struct {
        const char *name;
        size_t off;
    } counters[] = {
#define XC_COUNTER(f) {#f, offsetof(struct xd_xc_stats, f)}
        XC_COUNTER(acquires),        XC_COUNTER(hits),           XC_COUNTER(misses),
        XC_COUNTER(bytes_read),      XC_COUNTER(reads),          XC_COUNTER(evictions),
        XC_COUNTER(prefetches),      XC_COUNTER(prefetch_issued), XC_COUNTER(prefetch_hits),
        XC_COUNTER(prefetch_wasted), XC_COUNTER(prefetch_correct), XC_COUNTER(read_retries),
        XC_COUNTER(read_errors),     XC_COUNTER(short_reads),    XC_COUNTER(eagain),
        XC_COUNTER(distinct),
#undef XC_COUNTER
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        json_object_set_new(j, counters[i].name,
                            json_integer((json_int_t) * (const uint64_t *)((const char *)&st +
                                                                          counters[i].off)));
    double busy = (double)st.io_busy_ns * 1e-9;
    json_object_set_new(j, "hit_rate", json_real(st.acquires ? (double)st.hits / (double)st.acquires : 0));
    json_object_set_new(j, "prefetch_accuracy",
                        json_real(st.prefetches ? (double)st.prefetch_correct / (double)st.prefetches : 0));
    json_object_set_new(j, "stall_s", json_real((double)st.stall_ns * 1e-9));
    json_object_set_new(j, "io_busy_s", json_real(busy));
    json_object_set_new(j, "read_mb_s", json_real(busy > 0 ? (double)st.bytes_read / busy / 1e6 : 0));
    json_object_set_new(j, "read_latency_sum_s", json_real((double)st.read_ns_sum * 1e-9));
    json_t *h = json_array();
    for (int i = 0; i < XD_XC_LAT_BUCKETS; i++) {
        json_t *b = json_array();
        double le = xd_xc_lat_bucket_le(i);
        json_array_append_new(b, i == XD_XC_LAT_BUCKETS - 1 ? json_string("+Inf") : json_real(le));
        json_array_append_new(b, json_integer((json_int_t)st.read_lat[i]));
        json_array_append_new(h, b);
    }
    json_object_set_new(j, "read_latency_hist", h);
    uint32_t *per = calloc((size_t)n_layer, sizeof *per);
    if (per) {
        xd_xc_resident_per_layer(xc, per);
        json_t *a = json_array();
        for (int64_t l = 0; l < n_layer; l++) json_array_append_new(a, json_integer(per[l]));
        json_object_set_new(j, "resident_per_layer", a);
        free(per);
    }
    return j;
}

static json_t *ids_json(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

int xd_cmd_run(int argc, char **argv) {
    struct run_opts o = {0};
    int prc = parse_args(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;

    char err[512] = "";
    struct xd_model *m = NULL;
    struct xd_ctx *ctx = NULL;
    struct xd_xc *xc = NULL;
#ifdef XD_HAVE_CUDA
    struct xd_cuda_xcb *xcb = NULL; /* the VRAM slots of an offloaded cache (backend cuda) */
#endif
    struct xd_sampler *smp = NULL;
    struct xd_tokens prompt = {0};
    int32_t *gen = NULL, *pos = NULL, *seq = NULL;
    float *logits = NULL;
    char *text = NULL, *piece = NULL;
    json_t *tops = NULL;
    int status = 1, rc;

    if ((rc = xd_model_load(o.model, &m, err, sizeof err))) {
        fprintf(stderr, "expertd run: %s: %s\n", o.model, err);
        goto out;
    }
    if ((rc = xd_tokenize(m->tok, o.prompt, strlen(o.prompt),
                          XD_TOK_ADD_SPECIAL | XD_TOK_PARSE_SPECIAL, &prompt))) {
        fprintf(stderr, "expertd run: cannot tokenize the prompt: %s\n", xd_strerror(rc));
        goto out;
    }
    if (prompt.n == 0) {
        fprintf(stderr, "expertd run: the prompt is empty and the vocabulary adds no BOS\n");
        goto out;
    }
    const bool cuda = o.backend && !strcmp(o.backend, "cuda");
    if (cuda && m->moe) { /* experts in VRAM: all of them if they fit, else a VRAM cache */
#ifdef XD_HAVE_CUDA
        const int64_t want = (int64_t)prompt.n + o.n_predict;
        o.xc.model_path = o.model;
        if ((rc = xd_cuda_open_xc(m, &o.xc, o.gpu_memory,
                                  o.n_ctx ? o.n_ctx : (int32_t)(want < 16 ? 16 : want), 1, 512,
                                  &xcb, &xc, err, sizeof err))) {
            fprintf(stderr, "expertd run: %s\n", err);
            goto out;
        }
        if (xc && !o.json) print_xc_info(xc);
#else
        fprintf(stderr, "expertd run: backend cuda: this build has no CUDA\n");
        goto out;
#endif
    } else if (m->moe && (o.xc.budget || o.xc.trace_path)) {
        o.xc.model_path = o.model;
        if ((rc = xd_xc_open(m, &o.xc, &xc, err, sizeof err))) {
            fprintf(stderr, "expertd run: %s\n", err);
            goto out;
        }
        if (!o.json) print_xc_info(xc);
    } else if (o.xc.budget) {
        fprintf(stderr, "expertd run: --expert-cache ignored: the model has no experts\n");
    }
    const int32_t n_vocab = (int32_t)m->hp.n_vocab;
    int64_t need = (int64_t)prompt.n + o.n_predict;
    struct xd_ctx_params cp = {.n_ctx = o.n_ctx ? o.n_ctx : (int32_t)(need < 16 ? 16 : need),
                               .xc = xc, .backend = o.backend, .n_threads = o.n_threads,
                               .no_repack = o.no_repack,
                               .kv_bytes = o.kv_bytes};
    if ((rc = xd_ctx_create(m, &cp, &ctx, err, sizeof err))) {
        fprintf(stderr, "expertd run: %s\n", err);
        goto out;
    }
    if (need > cp.n_ctx) {
        fprintf(stderr, "expertd run: prompt (%zu tokens) + n (%d) exceeds the context (%d)\n",
                prompt.n, o.n_predict, cp.n_ctx);
        goto out;
    }
    if ((rc = xd_sampler_create(&o.sp, n_vocab, &smp))) {
        fprintf(stderr, "expertd run: invalid sampling parameters\n");
        goto out;
    }
    gen = calloc((size_t)o.n_predict + 1, sizeof *gen);
    pos = calloc(prompt.n, sizeof *pos);
    seq = calloc(prompt.n, sizeof *seq);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    size_t piece_cap = xd_detok_out_max(m->tok), text_cap = 4096, text_len = 0;
    piece = malloc(piece_cap);
    text = malloc(text_cap);
    tops = json_array();
    if (!gen || !pos || !seq || !logits || !piece || !text || !tops) {
        fprintf(stderr, "expertd run: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < prompt.n; i++) {
        pos[i] = (int32_t)i;
        xd_sampler_accept(smp, prompt.ids[i], false);
    }

    double t0 = now_s();
    struct xd_batch b = {.n_tokens = (int32_t)prompt.n, .token = prompt.ids, .pos = pos, .seq = seq};
    if ((rc = xd_forward(ctx, &b, logits))) {
        fprintf(stderr, "expertd run: forward pass failed: %s\n", xd_strerror(rc));
        goto out;
    }
    double t1 = now_s();

    struct xd_detok dt;
    xd_detok_init(&dt, m->tok, 0);
    int32_t n_gen = 0;
    for (; n_gen < o.n_predict; n_gen++) {
        struct xd_logprobs lp;
        int tok = xd_sampler_sample(smp, logits, o.n_logprobs ? &lp : NULL);
        if (tok < 0) {
            fprintf(stderr, "expertd run: no token can be sampled (all logits banned)\n");
            goto out;
        }
        if (o.n_logprobs) {
            json_t *step = json_array();
            for (int32_t j = 0; j < lp.n_top; j++) {
                json_t *pair = json_array();
                json_array_append_new(pair, json_integer(lp.top[j].token));
                json_array_append_new(pair, json_real(lp.top[j].logprob));
                json_array_append_new(step, pair);
            }
            json_array_append_new(tops, step);
        }
        if (!o.ignore_eos && xd_tokenizer_is_eog(m->tok, tok)) break;
        gen[n_gen] = tok;
        xd_sampler_accept(smp, tok, true);
        int w = xd_detok_push(&dt, tok, piece, piece_cap);
        if (w > 0) {
            if (!o.json) {
                fwrite(piece, 1, (size_t)w, stdout);
                fflush(stdout);
            }
            if (text_len + (size_t)w + 4 > text_cap) {
                char *nt = realloc(text, text_cap * 2 + (size_t)w);
                if (!nt) goto out;
                text = nt;
                text_cap = text_cap * 2 + (size_t)w;
            }
            memcpy(text + text_len, piece, (size_t)w);
            text_len += (size_t)w;
        }
        if (n_gen + 1 == o.n_predict) {
            n_gen++;
            break;
        }
        int32_t p1 = (int32_t)prompt.n + n_gen, s0 = 0;
        struct xd_batch one = {.n_tokens = 1, .token = &gen[n_gen], .pos = &p1, .seq = &s0};
        if ((rc = xd_forward(ctx, &one, logits))) {
            fprintf(stderr, "expertd run: forward pass failed: %s\n", xd_strerror(rc));
            goto out;
        }
    }
    int w = xd_detok_flush(&dt, piece, piece_cap);
    if (w > 0) {
        if (!o.json) fwrite(piece, 1, (size_t)w, stdout);
        memcpy(text + text_len, piece, (size_t)w);
        text_len += (size_t)w;
    }
    double t2 = now_s();
    const struct xd_stats *st = xd_ctx_stats(ctx);
    double prefill_s = t1 - t0, decode_s = t2 - t1;
    if (o.json) {
        json_t *j = json_object();
        json_object_set_new(j, "prompt_tokens", ids_json(prompt.ids, prompt.n));
        json_object_set_new(j, "tokens", ids_json(gen, (size_t)n_gen));
        json_object_set_new(j, "text", json_stringn(text, text_len));
        json_object_set_new(j, "top_logprobs", tops);
        tops = NULL;
        json_t *js = json_object();
        json_object_set_new(js, "prefill_s", json_real(prefill_s));
        json_object_set_new(js, "decode_s", json_real(decode_s));
        json_object_set_new(js, "tokens", json_integer((json_int_t)st->tokens));
        json_object_set_new(js, "expert_tokens", json_integer((json_int_t)st->expert_tokens));
        json_object_set_new(js, "experts_touched", json_integer((json_int_t)st->experts_touched));
        if (m->moe) {
            /* what the run had to read: every non-expert weight (an upper bound: only the
             * prompt's rows of the embedding table are touched) and each distinct expert */
            const struct xd_xc_stats *xs = xd_xc_stats(xd_ctx_xc(ctx));
            json_object_set_new(js, "experts_distinct", json_integer((json_int_t)xs->distinct));
            json_object_set_new(js, "weight_bytes_touched",
                                json_integer((json_int_t)(xd_model_nonexpert_bytes(m) +
                                                          xs->distinct * m->expert_bytes)));
            json_object_set_new(js, "expert_cache", xc_json(xd_ctx_xc(ctx), m->hp.n_layer));
        }
        json_object_set_new(j, "stats", js);
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(j);
        if (!s) goto out;
        puts(s);
        free(s);
    } else {
        putchar('\n');
        fprintf(stderr, "expertd run: prompt %zu tokens in %.3f s (%.1f tok/s), generated %d in "
                "%.3f s (%.1f tok/s)\n", prompt.n, prefill_s, (double)prompt.n / prefill_s, n_gen,
                decode_s, n_gen > 0 ? (double)(n_gen - 1) / decode_s : 0.0);
        if (xc) {
            struct xd_xc_stats xs;
            xd_xc_stats_get(xc, &xs);
            fprintf(stderr, "expertd run: expert cache: %llu acquires, hit rate %.3f, %.1f MB read "
                    "(%.0f MB/s while reading), stalled %.3f s, %llu read errors\n",
                    (unsigned long long)xs.acquires,
                    xs.acquires ? (double)xs.hits / (double)xs.acquires : 0.0,
                    (double)xs.bytes_read / 1e6,
                    xs.io_busy_ns ? (double)xs.bytes_read / ((double)xs.io_busy_ns * 1e-9) / 1e6 : 0.0,
                    (double)xs.stall_ns * 1e-9, (unsigned long long)xs.read_errors);
        }
    }
    status = 0;
out:
    json_decref(tops);
    free(text);
    free(piece);
    free(logits);
    free(seq);
    free(pos);
    free(gen);
    xd_tokens_free(&prompt);
    xd_sampler_destroy(smp);
    xd_ctx_destroy(ctx);
    xd_xc_destroy(xc);
#ifdef XD_HAVE_CUDA
    xd_cuda_xcb_destroy(xcb);
#endif
    xd_model_free(m);
    return status;
}
