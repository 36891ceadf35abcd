/* test_engine.c - the CPU reference ops against naive double-precision formulas, and the
 * forward pass's invariants: batched == one token at a time == interleaved with another
 * sequence == chunked, bit for bit; every expert pin released; bad batches rejected before
 * anything is computed; model files that do not fit an architecture fail with the tensor's name.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "xd_error.h"
#include "xd_test_util.h"

static uint64_t rng_state(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float frand(uint64_t *s) { return (float)((rng_state(s) >> 11) * 0x1.0p-53) * 2.0f - 1.0f; }

/* ---- ops against naive references ---------------------------------------------------------- */

/* A backend by name, or NULL (with a note) where this CPU cannot run it. */
static struct xd_backend *backend(const char *name) {
    struct xd_backend *be;
    char err[256];
    struct xd_backend_params bp = {.name = name, .n_threads = 2, .max_tokens = 16, .max_pos = 64};
    int rc = xd_backend_create(&bp, &be, err, sizeof err);
    if (rc == XD_E_UNSUPPORTED) {
        cr_log_info("skipping %s: %s", name, err);
        return NULL;
    }
    cr_assert_eq(rc, 0, "%s", err);
    return be;
}

/* Every backend of ops.h, the reference first. */
static const char *const backends[] = {"cpu-ref", "cpu-scalar", "cpu-avx2", "cpu-avx512"};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

Test(ops, matmul_every_type_matches_double_dot) {
    struct xd_backend *be = backend("cpu-ref");
    const struct xd_ops *ops = xd_backend_ops(be);
    const uint32_t types[] = {XD_TYPE_F32, XD_TYPE_F16, XD_TYPE_BF16, XD_TYPE_Q8_0, XD_TYPE_Q4_0,
                              XD_TYPE_Q4_K};
    const int64_t n_in = 512, n_out = 7, n_tok = 3;
    uint64_t s = 42;
    float *wf = malloc(n_in * n_out * sizeof(float)), *x = malloc(n_in * n_tok * sizeof(float));
    float *wd = malloc(n_in * sizeof(float)), y[3 * 7];
    for (int64_t i = 0; i < n_in * n_out; i++) wf[i] = frand(&s);
    for (int64_t i = 0; i < n_in * n_tok; i++) x[i] = frand(&s);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const struct xd_type_traits *tt = xd_type_traits(types[ti]);
        size_t row = xd_row_size(types[ti], n_in);
        char *q = malloc(row * n_out);
        for (int64_t r = 0; r < n_out; r++) tt->from_float(wf + r * n_in, q + r * row, n_in);
        struct xd_tensor w = {.name = "w", .type = types[ti], .ne = {n_in, n_out, 1, 1},
                              .nb = {tt->type_size, row, row * n_out, row * n_out}, .data = q};
        ops->matmul(be, &w, x, n_in, y, n_out, n_tok);
        for (int64_t r = 0; r < n_out; r++) {
            tt->to_float(q + r * row, wd, n_in);
            for (int64_t t = 0; t < n_tok; t++) {
                double ref = 0, mag = 0;
                for (int64_t i = 0; i < n_in; i++) {
                    ref += (double)wd[i] * x[t * n_in + i];
                    mag += fabs((double)wd[i] * x[t * n_in + i]);
                }
                cr_assert(fabs(y[t * n_out + r] - ref) <= 1e-5 * mag + 1e-6,
                          "%s row %lld tok %lld: %g vs %g", tt->name, (long long)r, (long long)t,
                          y[t * n_out + r], ref);
            }
        }
        free(q);
    }
    free(wf);
    free(x);
    free(wd);
    xd_backend_destroy(be);
}

Test(ops, rmsnorm_matches_formula) {
    uint64_t s = 7;
    float x[96], w[96], y[96];
    for (int i = 0; i < 96; i++) x[i] = frand(&s) * 3, w[i] = frand(&s);
    double ss = 0;
    for (int i = 0; i < 96; i++) ss += (double)x[i] * x[i];
    double sc = 1.0 / sqrt(ss / 96 + 1e-6);
    for (size_t b = 0; b < N_BACKENDS; b++) {
        struct xd_backend *be = backend(backends[b]);
        if (!be) continue;
        xd_backend_ops(be)->rmsnorm(be, y, x, w, 96, 1e-6f);
        for (int i = 0; i < 96; i++) cr_assert_float_eq(y[i], x[i] * sc * w[i], 1e-5, "%s", backends[b]);
        xd_backend_destroy(be);
    }
}

/* RoPE in double from its definition: pair i rotates by pos * base^(-2i/n_rot) */
static void rope_ref(double *v, int64_t hd, int64_t n_rot, int pos, double base, bool neox) {
    for (int64_t i = 0; i < n_rot / 2; i++) {
        double th = pos * pow(base, -2.0 * i / n_rot);
        int64_t a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * cos(th) - x1 * sin(th);
        v[b] = x0 * sin(th) + x1 * cos(th);
    }
    (void)hd;
}

Test(ops, rope_both_styles_and_partial_rotation) {
    const int64_t n_head = 3, hd = 48;
    for (size_t bi = 0; bi < N_BACKENDS; bi++) {
    struct xd_backend *be = backend(backends[bi]);
    if (!be) continue;
    for (int style = 0; style < 2; style++)
        for (int64_t n_rot = 16; n_rot <= hd; n_rot += 32)
            for (int pos = 0; pos < 300; pos += 37) {
                uint64_t s = 99 + pos;
                float x[3 * 48];
                double r[3 * 48];
                for (int i = 0; i < n_head * hd; i++) r[i] = x[i] = frand(&s);
                xd_backend_ops(be)->rope(be, x, n_head, hd, n_rot, pos, 10000.0f,
                                         style ? XD_ROPE_NEOX : XD_ROPE_NORM);
                for (int h = 0; h < n_head; h++) rope_ref(r + h * hd, hd, n_rot, pos, 10000.0, style);
                for (int i = 0; i < n_head * hd; i++)
                    cr_assert(fabs(x[i] - r[i]) < 2e-4, "%s style %d n_rot %lld pos %d i %d: %g vs %g",
                              backends[bi], style, (long long)n_rot, pos, i, x[i], r[i]);
            }
    xd_backend_destroy(be);
    }
}

Test(ops, attention_grouped_query_matches_naive) {
    const int64_t n_head = 4, n_kv = 2, hd = 16;
    const int32_t n_pos = 9;
    struct xd_kv *kv;
    cr_assert_eq(xd_kv_create(1, 1, 16, n_kv * hd, &kv), 0);
    uint64_t s = 5;
    float k[32], v[32], q[64], out[64];
    double K[9][32], V[9][32];
    for (int32_t p = 0; p < n_pos; p++) {
        for (int i = 0; i < n_kv * hd; i++) k[i] = frand(&s), v[i] = frand(&s);
        cr_assert_eq(xd_kv_store(kv, 0, 0, p, k, v), 0);
        for (int i = 0; i < n_kv * hd; i++) /* the cache stores F16 */
            K[p][i] = xd_fp16_to_fp32(xd_fp32_to_fp16(k[i])), V[p][i] = xd_fp16_to_fp32(xd_fp32_to_fp16(v[i]));
    }
    for (int i = 0; i < n_head * hd; i++) q[i] = frand(&s);
    const int32_t seq0 = 0, last = n_pos - 1;
    for (size_t bi = 0; bi < N_BACKENDS; bi++) {
    struct xd_backend *be = backend(backends[bi]);
    if (!be) continue;
    xd_backend_ops(be)->attention(be, out, q, n_head * hd, kv, 0, &seq0, &last, 1, n_head, n_kv,
                                  hd, 0.25f);
    /* the fast backends round q and the softmax weights to fp16 first, as llama.cpp does */
    const bool f16 = bi > 0;
    for (int64_t h = 0; h < n_head; h++) {
        int64_t g = h / (n_head / n_kv);
        double sc[9], mx = -1e30, sum = 0;
        for (int p = 0; p < n_pos; p++) {
            sc[p] = 0;
            for (int i = 0; i < hd; i++) {
                const float qi = f16 ? xd_fp16_to_fp32(xd_fp32_to_fp16(q[h * hd + i])) : q[h * hd + i];
                sc[p] += qi * K[p][g * hd + i];
            }
            sc[p] *= 0.25;
            mx = fmax(mx, sc[p]);
        }
        for (int p = 0; p < n_pos; p++) sum += (sc[p] = exp(sc[p] - mx));
        for (int i = 0; i < hd; i++) {
            double o = 0;
            for (int p = 0; p < n_pos; p++) {
                const double w = f16 ? xd_fp16_to_fp32(xd_fp32_to_fp16((float)(sc[p] / sum))) : sc[p] / sum;
                o += w * V[p][g * hd + i];
            }
            cr_assert(fabs(out[h * hd + i] - o) < 1e-5, "%s head %lld dim %d", backends[bi],
                      (long long)h, i);
        }
    }
    xd_backend_destroy(be);
    }
    cr_assert_eq(xd_kv_store(kv, 0, 0, 16, k, v), XD_E_CONTEXT);
    cr_assert_eq(xd_kv_store(kv, 0, 1, 0, k, v), XD_E_INVALID);
    xd_kv_destroy(kv);
}

Test(ops, swiglu_matches_formula) {
    float g[5] = {-3, -0.5f, 0, 0.5f, 4}, u[5] = {1, 2, 3, -1, 0.25f}, y[5];
    for (size_t b = 0; b < N_BACKENDS; b++) {
        struct xd_backend *be = backend(backends[b]);
        if (!be) continue;
        xd_backend_ops(be)->swiglu(be, y, g, u, 5);
        for (int i = 0; i < 5; i++)
            cr_assert_float_eq(y[i], g[i] / (1 + exp(-g[i])) * u[i], 1e-6, "%s", backends[b]);
        xd_backend_destroy(be);
    }
}

/* ---- forward-pass invariants --------------------------------------------------------------- */

static struct xd_model *load(const char *name) {
    char *p = xd_test_fixture(name), err[512];
    struct xd_model *m;
    cr_assert_eq(xd_model_load(p, &m, err, sizeof err), 0, "%s", err);
    free(p);
    return m;
}

/* Logits of the last token of ids, run as one batch or one token at a time. */
static float *logits_of(struct xd_model *m, const int32_t *ids, int32_t n, bool stepwise,
                        int32_t n_batch) {
    char err[256];
    struct xd_ctx *c;
    struct xd_ctx_params cp = {.n_ctx = 64, .n_batch = n_batch};
    cr_assert_eq(xd_ctx_create(m, &cp, &c, err, sizeof err), 0, "%s", err);
    float *lg = malloc((size_t)m->hp.n_vocab * sizeof *lg);
    int32_t pos[64], seq[64] = {0};
    for (int32_t i = 0; i < n; i++) pos[i] = i;
    if (stepwise) {
        for (int32_t i = 0; i < n; i++) {
            struct xd_batch b = {.n_tokens = 1, .token = ids + i, .pos = pos + i, .seq = seq};
            cr_assert_eq(xd_forward(c, &b, lg), 0);
        }
    } else {
        struct xd_batch b = {.n_tokens = n, .token = ids, .pos = pos, .seq = seq};
        cr_assert_eq(xd_forward(c, &b, lg), 0);
    }
    cr_assert_eq(xd_xc_pinned(xd_ctx_xc(c)), 0, "expert pins leaked");
    xd_ctx_destroy(c);
    return lg;
}

static void batch_invariance(const char *name) {
    struct xd_model *m = load(name);
    const int32_t ids[12] = {1, 450, 439, 860, 289, 798, 113, 17, 123, 5, 77, 1000};
    size_t nb = (size_t)m->hp.n_vocab * sizeof(float);
    float *a = logits_of(m, ids, 12, false, 512);
    float *b = logits_of(m, ids, 12, true, 512);
    float *c = logits_of(m, ids, 12, false, 5); /* chunked into 5+5+2 */
    cr_assert_eq(memcmp(a, b, nb), 0, "%s: batched != stepwise", name);
    cr_assert_eq(memcmp(a, c, nb), 0, "%s: batched != chunked", name);
    free(a);
    free(b);
    free(c);
    xd_model_free(m);
}

Test(forward, batched_equals_stepwise_equals_chunked_mixtral) { batch_invariance("mixtral-tiny-q4_k_m.gguf"); }
Test(forward, batched_equals_stepwise_equals_chunked_qwen3moe) { batch_invariance("qwen3moe-tiny-q8_0.gguf"); }

Test(forward, two_sequences_interleaved_equal_each_alone) {
    struct xd_model *m = load("qwen3moe-tiny-f16.gguf");
    const int32_t A[6] = {10, 20, 30, 40, 50, 60}, B[4] = {7, 8, 9, 11};
    size_t nv = (size_t)m->hp.n_vocab;
    float *la = logits_of(m, A, 6, false, 512), *lb = logits_of(m, B, 4, false, 512);
    char err[256];
    struct xd_ctx *c;
    struct xd_ctx_params cp = {.n_ctx = 64, .n_seq = 2};
    cr_assert_eq(xd_ctx_create(m, &cp, &c, err, sizeof err), 0);
    /* interleave: A0 B0 A1 B1 ... with logits for the last of each */
    int32_t tok[10], pos[10], seq[10];
    bool want[10] = {0};
    int n = 0;
    for (int i = 0; i < 6; i++) {
        tok[n] = A[i], pos[n] = i, seq[n] = 0, want[n] = i == 5, n++;
        if (i < 4) tok[n] = B[i], pos[n] = i, seq[n] = 1, want[n] = i == 3, n++;
    }
    float *out = malloc(2 * nv * sizeof *out);
    struct xd_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .logits = want};
    cr_assert_eq(xd_forward(c, &b, out), 0);
    /* B's last token comes first in batch order */
    cr_assert_eq(memcmp(out, lb, nv * sizeof(float)), 0, "sequence B differs in a batch");
    cr_assert_eq(memcmp(out + nv, la, nv * sizeof(float)), 0, "sequence A differs in a batch");
    xd_ctx_destroy(c);
    free(out);
    free(la);
    free(lb);
    xd_model_free(m);
}

Test(forward, bad_batches_are_rejected) {
    struct xd_model *m = load("mixtral-tiny-q8_0.gguf");
    char err[256];
    struct xd_ctx *c;
    struct xd_ctx_params cp = {.n_ctx = 8};
    cr_assert_eq(xd_ctx_create(m, &cp, &c, err, sizeof err), 0);
    float *lg = malloc((size_t)m->hp.n_vocab * sizeof *lg);
    int32_t t = (int32_t)m->hp.n_vocab, p = 0, s = 0;
    struct xd_batch b = {.n_tokens = 1, .token = &t, .pos = &p, .seq = &s};
    cr_assert_eq(xd_forward(c, &b, lg), XD_E_INVALID, "token out of range");
    t = 1, s = 1;
    cr_assert_eq(xd_forward(c, &b, lg), XD_E_INVALID, "sequence out of range");
    s = 0, p = 8;
    cr_assert_eq(xd_forward(c, &b, lg), XD_E_CONTEXT, "position beyond n_ctx");
    p = 3;
    cr_assert_eq(xd_forward(c, &b, lg), XD_E_INVALID, "gap in positions");
    p = 0;
    cr_assert_eq(xd_forward(c, &b, lg), 0);
    cr_assert_eq(xd_kv_seq_len(xd_ctx_kv(c), 0), 1);
    free(lg);
    xd_ctx_destroy(c);
    xd_model_free(m);
}

Test(model, hyperparameters_of_the_fixtures) {
    struct xd_model *m = load("qwen3moe-tiny-q8_0.gguf");
    cr_assert_str_eq(m->arch_name, "qwen3moe");
    cr_assert_eq(m->rope, XD_ROPE_NEOX);
    cr_assert(m->qk_norm && m->moe);
    cr_assert_eq(m->hp.d_model, 128);
    cr_assert_eq(m->hp.n_layer, 3);
    cr_assert_eq(m->hp.n_head, 4);
    cr_assert_eq(m->hp.n_head_kv, 2);
    cr_assert_eq(m->hp.head_dim, 48);
    cr_assert_eq(m->hp.n_expert, 16);
    cr_assert_eq(m->hp.n_expert_used, 4);
    cr_assert_eq(m->hp.n_ff_exp, 96);
    cr_assert_eq(m->hp.n_vocab, 2048);
    xd_model_free(m);
    m = load("mixtral-tiny-q8_0.gguf");
    cr_assert_str_eq(m->arch_name, "llama");
    cr_assert_eq(m->rope, XD_ROPE_NORM);
    cr_assert(!m->qk_norm && m->moe);
    cr_assert_eq(m->hp.n_expert, 8);
    cr_assert_eq(m->hp.n_expert_used, 2);
    cr_assert_eq(m->hp.head_dim, 32);
    cr_assert_float_eq(m->hp.rope_base, 1e6f, 1);
    xd_model_free(m);
}

/* A copy of a fixture with one tensor renamed (same length): loading must name it. */
Test(model, missing_tensor_is_named) {
    char *p = xd_test_fixture("qwen3moe-tiny-q8_0.gguf");
    size_t n;
    char *buf = xd_test_read_file(p, &n);
    free(p);
    cr_assert(buf);
    const char *needle = "blk.1.attn_k_norm.weight";
    char *hit = memmem(buf, n, needle, strlen(needle));
    cr_assert(hit);
    memcpy(hit, "blk.1.attn_k_xorm.weight", strlen(needle));
    char *tmp = xd_test_write_temp(buf, n), err[512];
    struct xd_model *m;
    int rc = xd_model_load(tmp, &m, err, sizeof err);
    cr_assert_eq(rc, XD_E_MISSING, "rc %d: %s", rc, err);
    cr_assert(strstr(err, "blk.1.attn_k_norm.weight"), "message: %s", err);
    unlink(tmp);
    free(tmp);
    free(buf);
}

Test(model, truncated_file_is_an_error_not_a_crash) {
    char *p = xd_test_fixture("mixtral-tiny-q8_0.gguf");
    size_t n;
    char *buf = xd_test_read_file(p, &n);
    free(p);
    const size_t cuts[] = {0, 3, 8, 24, 100, 1000, 5000, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char *tmp = xd_test_write_temp(buf, cuts[i]), err[512] = "";
        struct xd_model *m = NULL;
        cr_assert_neq(xd_model_load(tmp, &m, err, sizeof err), 0, "cut at %zu loaded", cuts[i]);
        cr_assert_null(m);
        cr_assert(strlen(err) > 0, "cut at %zu: no message", cuts[i]);
        unlink(tmp);
        free(tmp);
    }
    free(buf);
}
