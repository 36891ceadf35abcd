/* test_cuda.c - the CUDA backend against the CPU reference and against itself. Every test skips
 * with a message where the build has no CUDA or the machine no GPU. CI runs it twice: skipped in
 * the nvcc build (no GPU), and for real in the EXPERTD_CUDA=EMU build, where the same kernels
 * run on the CPU emulator (engine/cuda/emu) under ASan+UBSan; on a GPU machine it runs on the
 * device (bench/cuda.sh test, and memcheck):
 *   - dequantization on the device equals quant.c bit for bit, per type;
 *   - the golden conformance rule (golden_rule.h) holds on every fixture with backend "cuda";
 *   - CUDA logits stay close to the CPU backend's over a greedy run;
 *   - a prompt as one batch gives the same bits as token by token (batch invariance);
 *   - offloading never changes a bit: greedy logits with the expert cache in VRAM (slots from
 *     one expert per layer up to all experts, GGUF or packed store, io_uring or pread, with and
 *     without prefetch, copies streamed behind the reads in default or 8 KiB parts or made
 *     whole after each read) and with host slots equal the everything-resident CUDA run.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "golden_rule.h"
#include "quant.h"
#include "xc_test_util.h"
#ifdef XD_HAVE_CUDA
#include "xd_cuda.h"
#endif

static void skip_without_gpu(void) {
#ifndef XD_HAVE_CUDA
    cr_skip("built without CUDA (-DEXPERTD_CUDA=OFF or no nvcc)");
#else
    if (xd_cuda_device_count() == 0) cr_skip("no CUDA device on this machine");
#endif
}

/* Quantize deterministic values with the CPU code, dequantize on CPU and GPU, compare bits. */
static void check_type(uint32_t type) {
    skip_without_gpu();
#ifdef XD_HAVE_CUDA
    const int64_t n = 32 * 1024;
    const struct xd_type_traits *tt = xd_type_traits(type);
    float *src = malloc(n * sizeof(float)), *cpu = malloc(n * sizeof(float)),
          *gpu = malloc(n * sizeof(float));
    void *q = malloc(xd_row_size(type, n));
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        src[i] = ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * 4.0f;
    }
    tt->from_float(src, q, n);
    tt->to_float(q, cpu, n);
    cr_assert_eq(xd_cuda_dequantize(type, q, gpu, n), 0);
    cr_assert_eq(memcmp(cpu, gpu, n * sizeof(float)), 0, "%s: GPU differs from CPU", tt->name);
    free(src);
    free(cpu);
    free(gpu);
    free(q);
#else
    (void)type;
#endif
}

Test(cuda, device_describe) {
    skip_without_gpu();
#ifdef XD_HAVE_CUDA
    char buf[256] = "";
    cr_assert_eq(xd_cuda_device_describe(0, buf, sizeof buf), 0);
    cr_assert(strlen(buf) > 0);
    cr_log_info("GPU 0: %s", buf);
#endif
}
Test(cuda, dequant_f32) { check_type(XD_TYPE_F32); }
Test(cuda, dequant_f16) { check_type(XD_TYPE_F16); }
Test(cuda, dequant_bf16) { check_type(XD_TYPE_BF16); }
Test(cuda, dequant_q8_0) { check_type(XD_TYPE_Q8_0); }
Test(cuda, dequant_q4_0) { check_type(XD_TYPE_Q4_0); }

/* ---- the golden rule on the CUDA backend ----------------------------------------------------- */

static void golden(const char *stem) {
    skip_without_gpu();
    (void)check_model_on(stem, "cuda");
}

Test(cuda_golden, mixtral_f32, .timeout = 300) { golden("mixtral-tiny-f32"); }
Test(cuda_golden, mixtral_f16, .timeout = 300) { golden("mixtral-tiny-f16"); }
Test(cuda_golden, mixtral_q8_0, .timeout = 300) { golden("mixtral-tiny-q8_0"); }
Test(cuda_golden, mixtral_q4_k_m, .timeout = 300) { golden("mixtral-tiny-q4_k_m"); }
Test(cuda_golden, qwen3moe_f32, .timeout = 300) { golden("qwen3moe-tiny-f32"); }
Test(cuda_golden, qwen3moe_f16, .timeout = 300) { golden("qwen3moe-tiny-f16"); }
Test(cuda_golden, qwen3moe_q8_0, .timeout = 300) { golden("qwen3moe-tiny-q8_0"); }

/* ---- CUDA against the CPU, and against itself -------------------------------------------------- */

/* whether any matrix of m has type t */
static bool xd_test_has_type(const struct xd_model *m, uint32_t t) {
    if (m->output.type == t) return true;
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        const struct xd_layer *L = &m->layers[l];
        const struct xd_tensor *ts[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_gate, &L->ffn_up,
                                        &L->ffn_down, &L->gate_exps, &L->up_exps, &L->down_exps};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            if (ts[i]->data && ts[i]->type == t) return true;
    }
    return false;
}

#define STEPS 6
static const char *const prompt = "Once upon a time, in a land far away, there lived a";

Test(cuda, logits_close_to_cpu, .timeout = 300) {
    skip_without_gpu();
    for (size_t f = 0; f < XC_N_FIXTURES; f++) {
        struct xd_model *m = xc_load(xc_fixtures[f], NULL);
        const size_t n = (size_t)(STEPS + 1) * (size_t)m->hp.n_vocab;
        float *cpu = malloc(n * sizeof *cpu), *gpu = malloc(n * sizeof *gpu);
        float *fast = malloc(n * sizeof *fast);
        cr_assert_eq(xc_greedy_on(m, NULL, "cpu-ref", prompt, STEPS, cpu), 0);
        cr_assert_eq(xc_greedy_on(m, NULL, "cuda", prompt, STEPS, gpu), 0);
        /* the CPU's own 8-bit-activation backend (it passes the goldens) against its float
         * reference: the CUDA backend's Q4_K kernels use the same 8-bit activations, so on
         * files with Q4_K they may stray from the float reference as far as it does (x2) */
        cr_assert_eq(xc_greedy_on(m, NULL, "cpu", prompt, STEPS, fast), 0);
        double worst = 0, scale = 0, fast_worst = 0;
        for (size_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs((double)cpu[i] - gpu[i]));
            fast_worst = fmax(fast_worst, fabs((double)cpu[i] - fast[i]));
            scale = fmax(scale, fabs((double)cpu[i]));
        }
        /* fmax() drops NaN: without this a NaN logit would pass as "no difference" */
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += !isfinite(gpu[i]);
        cr_assert_eq(bad, 0, "%s: %zu CUDA logits are not finite", xc_fixtures[f], bad);
        double tol = 1e-3 * (1.0 + scale);
        if (xd_test_has_type(m, XD_TYPE_Q4_K)) tol = fmax(tol, 2.0 * fast_worst);
        cr_log_info("%s: max |logit cuda - cpu-ref| = %.2e (largest logit %.2f)", xc_fixtures[f],
                    worst, scale);
        fprintf(stderr, "cuda vs cpu-ref %s: max |logit diff| %.2e, cpu (8-bit) vs cpu-ref %.2e, "
                "tolerance %.2e (largest logit %.2f)\n", xc_fixtures[f], worst, fast_worst, tol,
                scale);
        cr_expect_lt(worst, tol, "%s: CUDA logits differ from the CPU by %g", xc_fixtures[f],
                     worst);
        free(cpu);
        free(gpu);
        free(fast);
        xd_model_free(m);
    }
}

/* The last prompt token's logits: the prompt as one batch == token by token, bit for bit. */
Test(cuda, batch_invariant, .timeout = 300) {
    skip_without_gpu();
    for (size_t f = 0; f < XC_N_FIXTURES; f++) {
        struct xd_model *m = xc_load(xc_fixtures[f], NULL);
        struct xd_tokens tk = {0};
        cr_assert_eq(xd_tokenize(m->tok, prompt, strlen(prompt), XD_TOK_ADD_SPECIAL, &tk), 0);
        const int64_t nv = m->hp.n_vocab;
        float *a = malloc((size_t)nv * sizeof *a), *b = malloc((size_t)nv * sizeof *b);
        int32_t *pos = calloc(tk.n, sizeof *pos), *seq = calloc(tk.n, sizeof *seq);
        for (size_t i = 0; i < tk.n; i++) pos[i] = (int32_t)i;
        struct xd_ctx_params cp = {.n_ctx = 128, .backend = "cuda"};
        struct xd_ctx *ctx;
        char err[256];
        cr_assert_eq(xd_ctx_create(m, &cp, &ctx, err, sizeof err), 0, "%s", err);
        struct xd_batch all = {.n_tokens = (int32_t)tk.n, .token = tk.ids, .pos = pos, .seq = seq};
        cr_assert_eq(xd_forward(ctx, &all, a), 0);
        xd_kv_seq_truncate(xd_ctx_kv(ctx), 0, 0);
        for (size_t i = 0; i < tk.n; i++) {
            struct xd_batch one = {.n_tokens = 1, .token = tk.ids + i, .pos = pos + i, .seq = seq};
            cr_assert_eq(xd_forward(ctx, &one, b), 0);
        }
        cr_assert_eq(memcmp(a, b, (size_t)nv * sizeof *a), 0, "%s: batch != one by one",
                     xc_fixtures[f]);
        xd_ctx_destroy(ctx);
        free(pos);
        free(seq);
        free(a);
        free(b);
        xd_tokens_free(&tk);
        xd_model_free(m);
    }
}

/* ---- offloaded == resident, bit for bit, on the CUDA backend ----------------------------------- */

struct variant {
    const char *store; /* "gguf" or "packed" */
    enum xd_xc_io io;
    bool no_prefetch;
    bool host_slots; /* the CPU's host-memory slots instead of VRAM ones */
    int commit;      /* VRAM slots: 0 streamed (default parts), 1 streamed in 8 KiB parts of
                        8 KiB reads (many parts an expert), 2 whole (XD_CUDA_WHOLE_COMMIT=1) */
};

static void offload_sweep(const char *fixture) {
    skip_without_gpu();
#ifdef XD_HAVE_CUDA
    char *path;
    struct xd_model *m = xc_load(fixture, &path);
    const int64_t nv = m->hp.n_vocab, nl = m->hp.n_layer, ne = m->hp.n_expert,
                  k = m->hp.n_expert_used;
    const size_t n_logits = (size_t)(STEPS + 1) * (size_t)nv;
    float *want = malloc(n_logits * sizeof *want), *got = malloc(n_logits * sizeof *got);
    cr_assert_eq(xc_greedy_on(m, NULL, "cuda", prompt, STEPS, want), 0);
    for (size_t i = 0; i < n_logits; i++) /* the reference itself must be numbers */
        cr_assert(isfinite(want[i]), "%s: resident CUDA logit %zu is not finite", fixture, i);
    char *pack = xc_pack_temp(m);
    struct xd_cuda_xcb *xcb, *xcb_whole;
    char err[256];
    cr_assert_eq(xd_cuda_xcb_create(&xcb, err, sizeof err), 0, "%s", err);
    cr_assert_eq(setenv("XD_CUDA_WHOLE_COMMIT", "1", 1), 0);
    cr_assert_eq(xd_cuda_xcb_create(&xcb_whole, err, sizeof err), 0, "%s", err);
    unsetenv("XD_CUDA_WHOLE_COMMIT");
    cr_assert_not_null(xd_cuda_xcb_backend(xcb)->commit_part, "streamed commit by default");
    cr_assert_null(xd_cuda_xcb_backend(xcb_whole)->commit_part);
    struct xd_xc_backend small_parts = *xd_cuda_xcb_backend(xcb);
    small_parts.part_bytes = 8192;
    const int64_t budgets[] = {k, nl, nl * k, nl * ne / 2, nl * ne};
    const struct variant variants[] = {
        {"gguf", XD_XC_IO_AUTO, false, false, 0},
        {"packed", XD_XC_IO_PREAD, true, false, 0},
        {"packed", XD_XC_IO_AUTO, false, true, 0},
        {"gguf", XD_XC_IO_PREAD, false, false, 1},
        {"packed", XD_XC_IO_AUTO, false, false, 2},
    };
    int runs = 0;
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const struct variant *va = &variants[v];
        const char *store = strcmp(va->store, "packed") ? "gguf" : pack;
        const uint64_t slot = xc_slot_bytes(m, path, store);
        for (size_t b = 0; b < sizeof budgets / sizeof budgets[0]; b++) {
            if (va->host_slots && b != 0 && b != 4) continue; /* the fallback path: two sizes */
            const int64_t slots = budgets[b] < k ? k : budgets[b];
            const struct xd_xc_backend *be = va->commit == 1   ? &small_parts
                                             : va->commit == 2 ? xd_cuda_xcb_backend(xcb_whole)
                                                               : xd_cuda_xcb_backend(xcb);
            struct xd_xc_config cfg = {.budget = (uint64_t)slots * slot, .model_path = path,
                                       .store = store, .io = va->io,
                                       .no_prefetch = va->no_prefetch,
                                       .read_chunk = va->commit == 1 ? 8192 : 0,
                                       .backend = va->host_slots ? NULL : be};
            struct xd_xc *xc;
            cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
            memset(got, 0, n_logits * sizeof *got);
            cr_assert_eq(xc_greedy_on(m, xc, "cuda", prompt, STEPS, got), 0);
            cr_assert_eq(memcmp(want, got, n_logits * sizeof *got), 0,
                         "%s: %lld slots, store %s, io %d, prefetch %d, host slots %d, commit %d: "
                         "logits differ", fixture, (long long)slots, va->store, va->io,
                         !va->no_prefetch, va->host_slots, va->commit);
            cr_assert_eq(xd_xc_check_invariants(xc), 0);
            struct xd_xc_stats st;
            xd_xc_stats_get(xc, &st);
            cr_assert_eq(st.read_errors, 0);
            cr_assert_gt(st.misses, 0);
            if (slots == nl * ne) cr_assert_eq(st.evictions, 0, "everything fits: nothing evicted");
            xd_xc_destroy(xc);
            runs++;
        }
    }
    cr_assert_geq(runs, 22);
    xd_cuda_xcb_destroy(xcb);
    xd_cuda_xcb_destroy(xcb_whole);
    unlink(pack);
    free(pack);
    free(want);
    free(got);
    free(path);
    xd_model_free(m);
#else
    (void)fixture;
#endif
}

Test(cuda_offload, bit_identical_mixtral_q4_k_m, .timeout = 600) {
    offload_sweep("mixtral-tiny-q4_k_m.gguf");
}
Test(cuda_offload, bit_identical_mixtral_q8_0, .timeout = 600) {
    offload_sweep("mixtral-tiny-q8_0.gguf");
}
Test(cuda_offload, bit_identical_qwen3moe_f16, .timeout = 600) {
    offload_sweep("qwen3moe-tiny-f16.gguf");
}
Test(cuda_offload, bit_identical_qwen3moe_f32, .timeout = 600) {
    offload_sweep("qwen3moe-tiny-f32.gguf");
}
Test(cuda_offload, bit_identical_qwen3moe_q8_0, .timeout = 600) {
    offload_sweep("qwen3moe-tiny-q8_0.gguf");
}

/* The automatic budget: with a cap below the experts' size the cache is offloaded in VRAM. */
Test(cuda_offload, gpu_memory_cap_offloads, .timeout = 300) {
    skip_without_gpu();
#ifdef XD_HAVE_CUDA
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    const uint64_t base = xd_cuda_base_bytes(m, 256, 1, 512) + (512ull << 20);
    const uint64_t slot = xc_slot_bytes(m, path, "gguf");
    struct xd_xc_config cfg = {.model_path = path};
    struct xd_cuda_xcb *xcb;
    struct xd_xc *xc;
    char err[256];
    /* everything fits */
    cr_assert_eq(xd_cuda_open_xc(m, &cfg, 0, 256, 1, 512, &xcb, &xc, err, sizeof err), 0, "%s", err);
    cr_assert_null(xc);
    cr_assert_null(xcb);
    /* room for 5 slots only */
    cr_assert_eq(xd_cuda_open_xc(m, &cfg, base + 5 * slot, 256, 1, 512, &xcb, &xc, err,
                                 sizeof err), 0, "%s", err);
    cr_assert_not_null(xc);
    struct xd_xc_info in;
    xd_xc_info(xc, &in);
    cr_assert(in.offloaded);
    cr_assert_eq(in.n_slots, 5);
    const size_t n = (size_t)(STEPS + 1) * (size_t)m->hp.n_vocab;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    cr_assert_eq(xc_greedy_on(m, NULL, "cuda", prompt, STEPS, a), 0);
    cr_assert_eq(xc_greedy_on(m, xc, "cuda", prompt, STEPS, b), 0);
    cr_assert_eq(memcmp(a, b, n * sizeof *a), 0);
    xd_xc_destroy(xc);
    xd_cuda_xcb_destroy(xcb);
    free(a);
    free(b);
    free(path);
    xd_model_free(m);
#endif
}
