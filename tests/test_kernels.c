/* test_kernels.c - every SIMD kernel against its scalar reference (kernels_ref.c), bit for bit.
 *
 * The quantized kernels sum each block in integers and then take one fma per block in block
 * order, and the float kernels use the same 16 lanes and lane tree as the reference, so AVX2 and
 * AVX-512 must give exactly the reference's bits: no tolerance anywhere, for random weights of
 * every type, row counts that are not whole panels, 1..33 tokens (every micro-kernel width, the
 * wide Q8_0 path to 32 tokens and the packed path past it), rows long enough to be packed in
 * several slices, and row ranges cut at arbitrary panel boundaries (as the threads claim them).
 * One documented exception: vdpbf16ps flushes denormals, so the BF16 data here are normal
 * numbers. The backends above the kernels (threads, forward pass) are checked for bit-identical
 * logits across instruction sets and thread counts.
 * Tables the CPU cannot run are skipped with a message.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "forward.h"
#include "kernels.h"
#include "quant.h"
#include "quant_blocks.h"
#include "xd_error.h"
#include "xd_test_util.h"

static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float frand(uint64_t *s) { return (float)((rng(s) >> 11) * 0x1.0p-53) * 2.0f - 1.0f; }

/* The SIMD tables this CPU runs, by name; n set to their count. */
static int simd_tables(const struct xd_kernels *out[3]) {
    struct xd_cpu_features f;
    xd_cpu_features_probe(&f);
    int n = 0;
    if (xd_cpu_has_avx2(&f))
        out[n++] = xd__kernels_avx2();
    else
        cr_log_info("no AVX2+FMA+F16C: AVX2 kernels not tested");
    if (xd_cpu_has_avx512(&f))
        out[n++] = xd__kernels_avx512(f.avx512bf16);
    else
        cr_log_info("no AVX-512 F/BW/VL/VNNI: AVX-512 kernels not tested");
    return n;
}

static void put_f16(uint8_t *p, float v) {
    const uint16_t h = xd_fp32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* n_rows rows of n random weights of type; fp16 scale fields set to sane values. */
static uint8_t *random_rows(uint32_t type, int64_t n, int64_t n_rows, uint64_t *s, size_t *row) {
    *row = xd_row_size(type, n);
    uint8_t *w = malloc(*row * (size_t)n_rows);
    cr_assert(w);
    for (size_t i = 0; i < *row * (size_t)n_rows; i++) w[i] = (uint8_t)rng(s);
    for (int64_t r = 0; r < n_rows; r++) {
        uint8_t *p = w + (size_t)r * *row;
        switch (type) {
        case XD_TYPE_F32:
            for (int64_t j = 0; j < n; j++) ((float *)p)[j] = frand(s);
            break;
        case XD_TYPE_F16:
            for (int64_t j = 0; j < n; j++) put_f16(p + 2 * j, frand(s));
            break;
        case XD_TYPE_BF16:
            for (int64_t j = 0; j < n; j++) {
                const uint16_t h = xd_fp32_to_bf16(frand(s) + (frand(s) > 0 ? 0.01f : -0.01f));
                memcpy(p + 2 * j, &h, 2);
            }
            break;
        case XD_TYPE_Q8_0:
            for (int64_t b = 0; b < n / 32; b++) put_f16(p + 34 * b, 0.01f + 0.01f * frand(s));
            break;
        case XD_TYPE_Q4_K:
        case XD_TYPE_Q5_K: {
            const size_t bs =
                type == XD_TYPE_Q4_K ? sizeof(struct xd_block_q4_K) : sizeof(struct xd_block_q5_K);
            for (int64_t b = 0; b < n / 256; b++) {
                put_f16(p + bs * b, 0.002f + 0.001f * frand(s));
                put_f16(p + bs * b + 2, 0.001f + 0.0005f * frand(s));
            }
            break;
        }
        case XD_TYPE_Q6_K:
            for (int64_t b = 0; b < n / 256; b++)
                put_f16(p + 210 * b + 208, 0.001f + 0.0005f * frand(s));
            break;
        default: cr_assert_fail("no generator for type %u", type);
        }
    }
    return w;
}

/* n_tok activation rows of n floats; varied scales, one block of zeros. */
static float *random_acts(int64_t n, int64_t n_tok, uint64_t *s) {
    float *x = malloc((size_t)(n * n_tok) * sizeof *x);
    for (int64_t t = 0; t < n_tok; t++) {
        const float scale = powf(4.0f, (float)(t % 5) - 2.0f);
        for (int64_t j = 0; j < n; j++)
            x[t * n + j] = frand(s) * scale * (j % 7 == 3 ? 8.0f : 1.0f);
    }
    if (n >= 64) memset(x + 32, 0, 32 * sizeof *x);
    return x;
}

static const char *act_name(enum xd_act a) {
    static const char *const names[] = {"none", "f32", "bf16", "q8_32", "q8_256"};
    return names[a];
}

Test(kernels, activation_conversion_equals_reference) {
    const struct xd_kernels *tabs[3], *ref = xd__kernels_ref();
    const int nt = simd_tables(tabs);
    uint64_t s = 11;
    const int64_t n = 2816;
    float *x = random_acts(n, 4, &s);
    x[7] = 1e-40f; /* a denormal */
    x[300] = 0.0f;
    for (enum xd_act a = XD_ACT_BF16; a < XD_ACT_COUNT; a++) {
        const int64_t m = a == XD_ACT_Q8_256 ? 2816 - 2816 % 256 : n;
        const size_t sz = xd__act_row_size(a, m);
        uint8_t *want = malloc(sz), *got = malloc(sz);
        for (int64_t t = 0; t < 4; t++) {
            memset(want, 0xaa, sz);
            ref->convert[a](x + t * n, want, m);
            for (int k = 0; k < nt; k++) {
                memset(got, 0x55, sz);
                tabs[k]->convert[a](x + t * n, got, m);
                cr_assert_eq(memcmp(want, got, sz), 0, "%s %s row %lld", tabs[k]->name, act_name(a),
                             (long long)t);
            }
        }
        free(want);
        free(got);
    }
    free(x);
}

/* y of the reference and of each SIMD table over rows [0, n_rows) for n_tok tokens, the range
 * cut into the pieces [0, c1), [c1, c2), [c2, n_rows) at panel boundaries. */
static int n_panel_checks; /* gemm_panel runs compared, so a test can tell it ran some */

static void check_gemm(uint32_t type, int64_t n, int64_t n_rows, int64_t n_tok, uint64_t seed) {
    const struct xd_kernels *tabs[3], *ref = xd__kernels_ref();
    const int nt = simd_tables(tabs);
    uint64_t s = seed;
    size_t row;
    uint8_t *w = random_rows(type, n, n_rows, &s, &row);
    float *x = random_acts(n, n_tok, &s);
    struct xd_tensor wt = {.name = "w",
                           .type = type,
                           .ne = {n, n_rows, 1, 1},
                           .nb = {xd_type_traits(type)->type_size, row, row * n_rows, row * n_rows},
                           .data = w};
    const float *want = NULL;
    float *yref = malloc((size_t)(n_rows * n_tok) * sizeof(float));
    void *scratch = aligned_alloc(64, (XD_KERN_SCRATCH(n_tok) + 63) / 64 * 64);
    for (int k = -1; k < nt; k++) {
        const struct xd_kernels *kt = k < 0 ? ref : tabs[k];
        const struct xd_kern_type *e = &kt->type[type];
        if (!e->gemm) {
            cr_log_info("%s has no %s kernel", kt->name, xd_type_name(type));
            continue;
        }
        const enum xd_act a = e->act;
        const size_t xs = a == XD_ACT_F32 ? (size_t)n * sizeof(float) : xd__act_row_size(a, n);
        uint8_t *xa = malloc(xs * (size_t)n_tok);
        for (int64_t t = 0; t < n_tok; t++) {
            if (a == XD_ACT_F32)
                memcpy(xa + t * xs, x + t * n, xs);
            else
                kt->convert[a](x + t * n, xa + t * xs, n);
        }
        float *y = k < 0 ? yref : malloc((size_t)(n_rows * n_tok) * sizeof(float));
        const int64_t p = e->panel;
        const int64_t c1 = (n_rows / 3) / p * p, c2 = (2 * n_rows / 3) / p * p;
        const int64_t cut[4] = {0, c1, c2 > c1 ? c2 : c1, n_rows};
        for (int i = 0; i < 3; i++)
            if (cut[i + 1] > cut[i])
                e->gemm(&wt, cut[i], cut[i + 1], xa, xs, n_tok, y, n_rows, scratch);
        if (k < 0) {
            want = yref;
        } else {
            for (int64_t i = 0; i < n_rows * n_tok; i++)
                cr_assert(memcmp(&y[i], &want[i], sizeof(float)) == 0,
                          "%s %s n %lld rows %lld tokens %lld: y[%lld] = %.9g, reference %.9g",
                          kt->name, xd_type_name(type), (long long)n, (long long)n_rows,
                          (long long)n_tok, (long long)i, y[i], want[i]);
            if (e->gemm_panel && n_rows % p == 0) { /* the same from the panel layout */
                const size_t bytes = row * (size_t)n_rows;
                uint8_t *wp = aligned_alloc(64, (bytes + 63) / 64 * 64);
                xd__panel_repack(wp, w, n_rows, row, xd_type_traits(type)->type_size,
                                 (size_t)e->panel_head, p);
                struct xd_tensor pt = wt;
                pt.data = wp;
                memset(y, 0xff, (size_t)(n_rows * n_tok) * sizeof(float));
                for (int i = 0; i < 3; i++)
                    if (cut[i + 1] > cut[i])
                        e->gemm_panel(&pt, cut[i], cut[i + 1], xa, xs, n_tok, y, n_rows, scratch);
                for (int64_t i = 0; i < n_rows * n_tok; i++)
                    cr_assert(memcmp(&y[i], &want[i], sizeof(float)) == 0,
                              "%s %s panels, n %lld rows %lld tokens %lld: y[%lld] = %.9g, "
                              "reference %.9g",
                              kt->name, xd_type_name(type), (long long)n, (long long)n_rows,
                              (long long)n_tok, (long long)i, y[i], want[i]);
                free(wp);
                n_panel_checks++;
            }
            free(y);
        }
        free(xa);
    }
    /* sanity: the reference is close to the float dot product (8-bit activations: ~1%) */
    float *wd = malloc((size_t)n * sizeof *wd);
    for (int64_t r = 0; r < n_rows; r += 7) {
        xd_dequantize_row(type, w + (size_t)r * row, wd, n);
        double dot = 0, mag = 0;
        for (int64_t j = 0; j < n; j++) {
            dot += (double)wd[j] * x[j];
            mag += fabs((double)wd[j] * x[j]);
        }
        cr_assert(fabs(yref[r] - dot) <= 0.02 * mag + 1e-6, "%s row %lld: %g vs %g (mag %g)",
                  xd_type_name(type), (long long)r, yref[r], dot, mag);
    }
    free(wd);
    free(scratch);
    free(yref);
    free(x);
    free(w);
}

static const uint32_t gemm_types[] = {XD_TYPE_F32,  XD_TYPE_F16,  XD_TYPE_BF16, XD_TYPE_Q8_0,
                                      XD_TYPE_Q4_K, XD_TYPE_Q5_K, XD_TYPE_Q6_K};

Test(kernels, gemm_every_type_every_width_equals_reference) {
    const int64_t toks[] = {1, 2, 3, 4, 5, 7, 8, 9, 17, 31, 33};
    for (size_t i = 0; i < sizeof gemm_types / sizeof gemm_types[0]; i++)
        for (size_t t = 0; t < sizeof toks / sizeof toks[0]; t++)
            check_gemm(gemm_types[i], 512, 37, toks[t], 100 + i * 31 + t);
}

Test(kernels, gemm_long_rows_in_several_slices_equal_reference) {
    /* 2816 = 11 k-quant blocks; 6144 Q8_0 values are more than one 96 KiB panel slice */
    for (size_t i = 0; i < sizeof gemm_types / sizeof gemm_types[0]; i++) {
        check_gemm(gemm_types[i], 2816, 40, 1, 7 + i);
        check_gemm(gemm_types[i], 2816, 33, 12, 8 + i);
    }
    check_gemm(XD_TYPE_Q8_0, 6144, 20, 9, 5);
    check_gemm(XD_TYPE_Q4_K, 6144, 20, 9, 6);
}

/* Q8_0 and the k-quants from the panel layout (xd__panel_repack) give the row layout's bits: every
 * token count of the direct, wide and packed paths, ranges that start mid-matrix. */
Test(kernels, gemm_panel_layout_equals_reference) {
    static const uint32_t types[] = {XD_TYPE_Q8_0, XD_TYPE_Q4_K, XD_TYPE_Q5_K, XD_TYPE_Q6_K};
    static const int64_t toks[] = {1, 2, 3, 4, 5, 9, 17, 32, 33};
    n_panel_checks = 0;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        for (size_t t = 0; t < sizeof toks / sizeof toks[0]; t++)
            check_gemm(types[i], t % 2 ? 512 : 2816, 48, toks[t], 300 + i * 17 + t);
    struct xd_cpu_features f;
    xd_cpu_features_probe(&f);
    if (xd_cpu_has_avx2(&f))
        cr_assert_gt(n_panel_checks, 0, "no table ran its panel kernels");
    else
        cr_log_info("no AVX2: the panel kernels were not run");
}

Test(kernels, gemm_odd_row_lengths_equal_reference) {
    check_gemm(XD_TYPE_Q8_0, 96, 19, 3, 1); /* three blocks */
    check_gemm(XD_TYPE_F32, 100, 9, 5, 2);  /* lane tails */
    check_gemm(XD_TYPE_F16, 37, 9, 5, 3);
    check_gemm(XD_TYPE_BF16, 100, 9, 5, 4);
    check_gemm(XD_TYPE_F32, 8, 3, 2, 5);
}

Test(kernels, attention_primitives_equal_reference) {
    const struct xd_kernels *tabs[3], *ref = xd__kernels_ref();
    const int nt = simd_tables(tabs);
    uint64_t s = 3;
    const int64_t lens[] = {128, 48, 37, 7};
    enum { NP = XD_ATTN_BLK };
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t n = lens[li];
        static float q[4 * 128], y0[4 * 128], y1[4 * 128], a[4 * NP];
        static uint16_t kv[NP][128];
        const uint16_t *rows[NP];
        for (int p = 0; p < NP; p++) {
            rows[p] = kv[p];
            for (int64_t i = 0; i < n; i++) kv[p][i] = xd_fp32_to_fp16(frand(&s));
        }
        for (int64_t i = 0; i < 4 * n; i++) q[i] = frand(&s), y1[i] = frand(&s);
        for (int i = 0; i < 4 * NP; i++) a[i] = frand(&s);
        const float *qs[4] = {q, q + n, q + 2 * n, q + 3 * n};
        static const int nps[] = {1, 2, 3, 4, 5, 8, 9, 15, 16};
        for (int nq = 1; nq <= XD_ATTN_MAXQ; nq++)
            for (size_t pi = 0; pi < sizeof nps / sizeof nps[0]; pi++) {
                const int np = nps[pi];
                float want[4 * NP], got[4 * NP], y[4 * 128];
                float *ys0[4] = {y0, y0 + n, y0 + 2 * n, y0 + 3 * n};
                float *ys[4] = {y, y + n, y + 2 * n, y + 3 * n};
                ref->dot_f16(want, NP, qs, nq, rows, np, n);
                memcpy(y0, y1, sizeof y0);
                ref->axpy_f16(ys0, a, NP, nq, rows, np, n);
                for (int t = 0; t < nt; t++) {
                    tabs[t]->dot_f16(got, NP, qs, nq, rows, np, n);
                    for (int h = 0; h < nq; h++)
                        cr_assert(memcmp(got + h * NP, want + h * NP, (size_t)np * 4) == 0,
                                  "%s dot_f16 n %lld nq %d np %d", tabs[t]->name, (long long)n, nq,
                                  np);
                    memcpy(y, y1, sizeof y);
                    tabs[t]->axpy_f16(ys, a, NP, nq, rows, np, n);
                    cr_assert_eq(memcmp(y, y0, (size_t)(nq * n) * sizeof(float)), 0,
                                 "%s axpy_f16 n %lld nq %d np %d", tabs[t]->name, (long long)n, nq,
                                 np);
                }
            }
    }
}

Test(kernels, elementwise_equal_reference_and_exp_is_accurate) {
    const struct xd_kernels *tabs[3], *ref = xd__kernels_ref();
    const int nt = simd_tables(tabs);
    uint64_t s = 17;
    enum { N = 1000 };
    static float x[N], g[N], u[N], want[N], got[N];
    for (int i = 0; i < N; i++) {
        x[i] = frand(&s) * 100.0f; /* exp's whole range and beyond: clamped at both ends */
        g[i] = frand(&s) * 12.0f;
        u[i] = frand(&s);
    }
    x[0] = 0.0f, x[1] = -0.0f, x[2] = 88.5f, x[3] = -100.0f, x[4] = 1e-30f, x[5] = 65519.0f;
    for (int i = 0; i < N; i++) { /* exp within 2 ulp of libm where the result is normal */
        const float e = xd__expf_ref(x[i]), l = expf(x[i] < 88.0f ? x[i] : 88.0f);
        if (x[i] > -87.0f)
            cr_assert(fabsf(e - l) <= 2.5e-7f * l, "exp(%g) = %.9g, libm %.9g", x[i], e, l);
    }
    const int64_t lens[] = {N, 17, 5};
    for (size_t li = 0; li < 3; li++) {
        const int64_t n = lens[li];
        for (int k = 0; k < nt; k++) {
            ref->round_f16(want, x, n);
            tabs[k]->round_f16(got, x, n);
            cr_assert_eq(memcmp(want, got, (size_t)n * 4), 0, "%s round_f16 n %lld", tabs[k]->name,
                         (long long)n);
            memcpy(want, x, sizeof x);
            memcpy(got, x, sizeof x);
            ref->exp_sub(want, 3.5f, n);
            tabs[k]->exp_sub(got, 3.5f, n);
            cr_assert_eq(memcmp(want, got, (size_t)n * 4), 0, "%s exp_sub n %lld", tabs[k]->name,
                         (long long)n);
            ref->swiglu(want, g, u, n);
            tabs[k]->swiglu(got, g, u, n);
            cr_assert_eq(memcmp(want, got, (size_t)n * 4), 0, "%s swiglu n %lld", tabs[k]->name,
                         (long long)n);
        }
    }
}

/* ---- the backends end to end ------------------------------------------------------------- */

/* rows: no repacked copy (xd_ctx_params.no_repack); *repacked (if not NULL): the bytes the
 * backend repacked. */
static float *logits(struct xd_model *m, const char *backend, int32_t n_threads, int32_t n_batch,
                     bool stepwise, bool rows, uint64_t *repacked) {
    char err[256];
    struct xd_ctx *c;
    struct xd_ctx_params cp = {.n_ctx = 64, .n_batch = n_batch, .backend = backend,
                               .n_threads = n_threads, .no_repack = rows};
    int rc = xd_ctx_create(m, &cp, &c, err, sizeof err);
    if (rc == XD_E_UNSUPPORTED) return NULL;
    cr_assert_eq(rc, 0, "%s", err);
    if (repacked) *repacked = xd_backend_repacked_bytes(xd_ctx_backend(c));
    const int32_t ids[20] = {1,  450,  439, 860, 289, 798, 113, 17, 123, 5,
                             77, 1000, 42,  9,   311, 12,  900, 3,  64,  250};
    int32_t pos[20], seq[20] = {0};
    bool want[20];
    for (int i = 0; i < 20; i++) pos[i] = i, want[i] = true;
    const size_t nv = (size_t)m->hp.n_vocab;
    float *lg = malloc(20 * nv * sizeof *lg);
    if (stepwise) {
        for (int i = 0; i < 20; i++) {
            struct xd_batch b = {.n_tokens = 1, .token = ids + i, .pos = pos + i, .seq = seq};
            cr_assert_eq(xd_forward(c, &b, lg + i * nv), 0);
        }
    } else {
        struct xd_batch b = {.n_tokens = 20, .token = ids, .pos = pos, .seq = seq, .logits = want};
        cr_assert_eq(xd_forward(c, &b, lg), 0);
    }
    xd_ctx_destroy(c);
    return lg;
}

/* cpu-scalar, cpu-avx2 and cpu-avx512 give the same logits for every position, with 1..4
 * threads, batched, stepwise and chunked. */
static uint64_t backends_agree(const char *fixture) {
    char *p = xd_test_fixture(fixture), err[512];
    struct xd_model *m;
    cr_assert_eq(xd_model_load(p, &m, err, sizeof err), 0, "%s", err);
    free(p);
    const size_t nb = 20 * (size_t)m->hp.n_vocab * sizeof(float);
    float *want = logits(m, "cpu-scalar", 1, 512, false, false, NULL);
    const struct {
        const char *be;
        int32_t threads, n_batch;
        bool step, rows;
    } runs[] = {{"cpu-scalar", 3, 7, false, false}, {"cpu-avx2", 1, 512, false, false},
                {"cpu-avx2", 2, 512, true, false},  {"cpu-avx2", 2, 512, true, true},
                {"cpu-avx512", 1, 512, false, false}, {"cpu-avx512", 2, 5, false, false},
                {"cpu-avx512", 3, 512, true, false}, {"cpu-avx512", 3, 512, true, true},
                {"cpu-avx512", 4, 9, false, false}};
    uint64_t repacked = 0;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        uint64_t rb = 0;
        float *got = logits(m, runs[i].be, runs[i].threads, runs[i].n_batch, runs[i].step,
                            runs[i].rows, &rb);
        if (!got) {
            cr_log_info("%s: not on this CPU", runs[i].be);
            continue;
        }
        cr_assert(!runs[i].rows || rb == 0, "--no-repack repacked %llu bytes",
                  (unsigned long long)rb);
        repacked += rb;
        cr_assert_eq(memcmp(got, want, nb), 0, "%s: %s, %d threads, n_batch %d%s%s differs",
                     fixture, runs[i].be, runs[i].threads, runs[i].n_batch,
                     runs[i].step ? ", stepwise" : "", runs[i].rows ? ", row layout" : "");
        free(got);
    }
    free(want);
    xd_model_free(m);
    return repacked;
}

/* the k-quants of this one are repacked into the panel layout wherever AVX2 runs */
Test(backends, identical_logits_mixtral_q4_k_m) {
    struct xd_cpu_features f;
    xd_cpu_features_probe(&f);
    const uint64_t repacked = backends_agree("mixtral-tiny-q4_k_m.gguf");
    cr_assert(!xd_cpu_has_avx2(&f) || repacked > 0, "nothing was repacked");
}
Test(backends, identical_logits_mixtral_q8_0) { (void)backends_agree("mixtral-tiny-q8_0.gguf"); }
Test(backends, identical_logits_qwen3moe_f16) { (void)backends_agree("qwen3moe-tiny-f16.gguf"); }
Test(backends, identical_logits_qwen3moe_f32) { (void)backends_agree("qwen3moe-tiny-f32.gguf"); }

Test(backends, names_threads_and_errors) {
    struct xd_backend *be;
    char err[256];
    struct xd_backend_params bp = {.name = "cpu", .n_threads = 3};
    cr_assert_eq(xd_backend_create(&bp, &be, err, sizeof err), 0, "%s", err);
    cr_assert_eq(xd_backend_n_threads(be), 3);
    cr_assert(!strncmp(xd_backend_name(be), "cpu-", 4), "%s", xd_backend_name(be));
    xd_backend_destroy(be);
    bp = (struct xd_backend_params){.name = "cpu-ref", .n_threads = 4};
    cr_assert_eq(xd_backend_create(&bp, &be, err, sizeof err), 0, "%s", err);
    cr_assert_eq(xd_backend_n_threads(be), 1, "the reference is single-threaded");
    cr_assert_eq(xd_backend_ops(be), xd_ops_cpu_ref());
    xd_backend_destroy(be);
    bp = (struct xd_backend_params){.name = "cpu-neon"};
    be = NULL;
    cr_assert_eq(xd_backend_create(&bp, &be, err, sizeof err), XD_E_UNSUPPORTED);
    cr_assert_null(be);
    cr_assert(strstr(err, "cpu-neon"), "%s", err);
    bp = (struct xd_backend_params){.n_threads = -1};
    cr_assert_eq(xd_backend_create(&bp, &be, err, sizeof err), XD_E_INVALID);
}

/* `expertd bench engine --json` on a fixture: one object with the documented keys, plausible
 * values, and the same logits hash for the scalar and the fastest backend. */
static json_t *bench_json(const char *backend) {
    char *model = xd_test_fixture("mixtral-tiny-q8_0.gguf"), cmd[1024];
    snprintf(cmd, sizeof cmd, "%s bench engine -m %s -p 16 -n 4 -r 2 -t 2 --backend %s --json",
             XD_EXPERTD_BIN, model, backend);
    free(model);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    json_error_t e;
    json_t *j = json_loadf(f, 0, &e);
    pclose(f);
    cr_assert(j, "no JSON from %s: %s", cmd, e.text);
    return j;
}

Test(backends, bench_engine_json) {
    json_t *a = bench_json("cpu-scalar"), *b = bench_json("cpu");
    const char *keys[] = {"prefill_tok_s",       "decode_tok_s",
                          "bandwidth_gb_s",      "prefill_tok_s_sd",
                          "decode_tok_s_median", "decode_weight_bytes_per_token"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert(json_number_value(json_object_get(b, keys[i])) > 0, "%s", keys[i]);
    const double bw = json_number_value(json_object_get(b, "bandwidth_gb_s"));
    const double want = json_number_value(json_object_get(b, "decode_tok_s")) *
                        json_number_value(json_object_get(b, "decode_weight_bytes_per_token")) /
                        1e9;
    cr_assert(fabs(bw - want) <= 1e-9 * want + 1e-12, "bandwidth %g vs %g", bw, want);
    cr_assert_str_eq(json_string_value(json_object_get(a, "logits_hash")),
                     json_string_value(json_object_get(b, "logits_hash")));
    cr_assert_eq(json_integer_value(json_object_get(b, "threads")), 2);
    json_decref(a);
    json_decref(b);
}
