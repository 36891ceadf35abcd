/* test_sampler.c - the sampler (engine/sampler.c) and the stop-string matcher (engine/stop.c).
 *
 * Sampling tests use fixed seeds everywhere, so the statistical checks are deterministic: a
 * frequency bound of 5 standard deviations either passes for good or fails for good. Expected
 * distributions are computed by hand (comments) or by a naive reference in double precision.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "stop.h"
#include "xd_error.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* Test-local PRNG (xorshift64*), state passed explicitly. */
static uint64_t trand(uint64_t *st) {
    uint64_t x = *st;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *st = x;
    return x * 0x2545F4914F6CDD1Du;
}

static double trand_unit(uint64_t *st) { return (double)(trand(st) >> 11) * 0x1.0p-53; }

/* Roughly normal (Irwin-Hall of 4) times scale. */
static void fill_logits(float *l, int n, uint64_t seed, float scale) {
    uint64_t st = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        double s = trand_unit(&st) + trand_unit(&st) + trand_unit(&st) + trand_unit(&st) - 2.0;
        l[i] = (float)(s * scale);
    }
}

static struct xd_sampler *mk(const struct xd_sampler_params *p, int32_t nv) {
    struct xd_sampler *s = NULL;
    int rc = xd_sampler_create(p, nv, &s);
    cr_assert_eq(rc, 0, "xd_sampler_create: %d", rc);
    cr_assert_not_null(s);
    return s;
}

/* Pure sampling: no truncation, temperature 1. */
static struct xd_sampler_params plain(uint64_t seed) {
    struct xd_sampler_params p = xd_sampler_params_default();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static int naive_argmax(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

/* Samples n_draws times from the same logits into hist[n_vocab]. */
static void histogram(struct xd_sampler *s, const float *logits, int n_vocab, int n_draws,
                      long *hist) {
    memset(hist, 0, (size_t)n_vocab * sizeof *hist);
    for (int i = 0; i < n_draws; i++) {
        int t = xd_sampler_sample(s, logits, NULL);
        cr_assert(t >= 0 && t < n_vocab, "token %d", t);
        hist[t]++;
    }
}

/* Every token's frequency is within 5 sigma of p[t]; p[t] == 0 must never appear. */
static void assert_freqs(const long *hist, const double *p, int n_vocab, int n_draws) {
    for (int t = 0; t < n_vocab; t++) {
        double f = (double)hist[t] / n_draws;
        if (p[t] == 0.0) {
            cr_assert_eq(hist[t], 0, "token %d is excluded but was drawn %ld times", t, hist[t]);
            continue;
        }
        double sigma = sqrt(p[t] * (1.0 - p[t]) / n_draws);
        cr_assert(fabs(f - p[t]) < 5.0 * sigma + 1e-9, "token %d: freq %.4f expected %.4f", t, f,
                  p[t]);
    }
}

/* A known distribution, scattered over ids so that id order != probability order:
 * probabilities 0.40 0.25 0.15 0.10 0.05 0.03 0.02 at ids 5 2 7 0 3 6 1; id 4 has p = 0. */
#define KV 8
static const int known_ids[7] = {5, 2, 7, 0, 3, 6, 1};
static const double known_p[7] = {0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.02};

static void known_logits(float *l) {
    for (int i = 0; i < KV; i++) l[i] = -INFINITY;
    for (int r = 0; r < 7; r++) l[known_ids[r]] = (float)log(known_p[r]) + 3.0f; /* any shift */
}

/* Expected distribution over ids when only the first `keep` ranks survive. */
static void known_expect(int keep, double *p) {
    double z = 0.0;
    for (int r = 0; r < keep; r++) z += known_p[r];
    for (int i = 0; i < KV; i++) p[i] = 0.0;
    for (int r = 0; r < keep; r++) p[known_ids[r]] = known_p[r] / z;
}

static void check_known(struct xd_sampler_params p, int keep) {
    float l[KV];
    long hist[KV];
    double expect[KV];
    known_logits(l);
    known_expect(keep, expect);
    struct xd_sampler *s = mk(&p, KV);
    histogram(s, l, KV, 40000, hist);
    assert_freqs(hist, expect, KV, 40000);
    xd_sampler_destroy(s);
}

/* ---- greedy ------------------------------------------------------------------------------ */

Test(sampler, greedy_picks_argmax) {
    struct xd_sampler_params p = xd_sampler_params_default();
    p.temperature = 0.0f;
    float l[10] = {0.1f, 2.5f, -1.0f, 7.25f, 7.0f, 3.0f, -9.0f, 0.0f, 1.0f, 6.9f};
    struct xd_sampler *s = mk(&p, 10);
    cr_assert_eq(xd_sampler_sample(s, l, NULL), 3);
    /* ties go to the lowest id */
    l[8] = 7.25f;
    l[1] = 7.25f;
    cr_assert_eq(xd_sampler_sample(s, l, NULL), 1);
    xd_sampler_destroy(s);

    /* a real-sized vocabulary; negative temperature is greedy too */
    enum { NV = 151936 };
    float *big = malloc(NV * sizeof *big);
    p.temperature = -1.0f;
    s = mk(&p, NV);
    for (int k = 0; k < 5; k++) {
        fill_logits(big, NV, 100 + k, 4.0f);
        cr_assert_eq(xd_sampler_sample(s, big, NULL), naive_argmax(big, NV));
    }
    xd_sampler_destroy(s);
    free(big);
}

Test(sampler, top_k_1_is_greedy) {
    enum { NV = 5000 };
    float *l = malloc(NV * sizeof *l);
    struct xd_sampler_params pg = xd_sampler_params_default(), pk = plain(7);
    pg.temperature = 0.0f;
    pk.top_k = 1;
    struct xd_sampler *g = mk(&pg, NV), *k = mk(&pk, NV);
    for (int i = 0; i < 50; i++) {
        fill_logits(l, NV, 500 + i, 3.0f);
        if (i % 5 == 0) l[NV - 1] = l[10] = l[naive_argmax(l, NV)] + 1.0f; /* a tie at the top */
        int want = naive_argmax(l, NV);
        cr_assert_eq(xd_sampler_sample(g, l, NULL), want);
        cr_assert_eq(xd_sampler_sample(k, l, NULL), want);
    }
    xd_sampler_destroy(g);
    xd_sampler_destroy(k);
    free(l);
}

/* ---- seeds ------------------------------------------------------------------------------- */

/* 100 tokens of a seeded run; the logits change every step with the last token. */
static void run_100(struct xd_sampler *s, int32_t nv, int *out) {
    float *l = malloc((size_t)nv * sizeof *l);
    int last = 0;
    for (int i = 0; i < 100; i++) {
        fill_logits(l, nv, 1000 + (uint64_t)i * 31 + (uint64_t)last, 2.0f);
        last = out[i] = xd_sampler_sample(s, l, NULL);
        cr_assert(last >= 0);
        cr_assert_eq(xd_sampler_accept(s, last, true), 0);
    }
    free(l);
}

Test(sampler, seed_reproducible) {
    enum { NV = 32000 };
    int a[100], b[100], c[100], d[100];
    /* the default chain (top_k 40, top_p 0.95, min_p 0.05, T 0.8) with penalties on */
    struct xd_sampler_params p = xd_sampler_params_default();
    p.seed = 42;
    p.repetition_penalty = 1.1f;
    p.presence_penalty = 0.2f;
    p.frequency_penalty = 0.1f;
    struct xd_sampler *s1 = mk(&p, NV), *s2 = mk(&p, NV);
    p.seed = 43;
    struct xd_sampler *s3 = mk(&p, NV);
    run_100(s1, NV, a);
    run_100(s2, NV, b);
    run_100(s3, NV, c);
    cr_assert_arr_eq(a, b, sizeof a, "same seed, different tokens");
    cr_assert(memcmp(a, c, sizeof a) != 0, "seeds 42 and 43 gave the same 100 tokens");
    cr_assert(xd_sampler_check_invariants(s1));
    /* reset = fresh sampler with the same seed */
    xd_sampler_reset(s1);
    cr_assert(xd_sampler_check_invariants(s1));
    run_100(s1, NV, d);
    cr_assert_arr_eq(a, d, sizeof a, "reset did not restore the seeded sequence");
    xd_sampler_destroy(s1);
    xd_sampler_destroy(s2);
    xd_sampler_destroy(s3);

    /* plain sampling over the full vocabulary, seed 0 vs 1 */
    struct xd_sampler_params q = plain(0);
    s1 = mk(&q, NV);
    s2 = mk(&q, NV);
    q.seed = 1;
    s3 = mk(&q, NV);
    run_100(s1, NV, a);
    run_100(s2, NV, b);
    run_100(s3, NV, c);
    cr_assert_arr_eq(a, b, sizeof a);
    cr_assert(memcmp(a, c, sizeof a) != 0);
    xd_sampler_destroy(s1);
    xd_sampler_destroy(s2);
    xd_sampler_destroy(s3);
}

/* ---- truncation and temperature on a known distribution ---------------------------------- */

Test(sampler, full_distribution) { check_known(plain(1), 7); }

Test(sampler, top_k) {
    struct xd_sampler_params p = plain(2);
    p.top_k = 3; /* 0.40 0.25 0.15 -> 0.5 0.3125 0.1875 */
    check_known(p, 3);
    p.top_k = 100; /* larger than the vocabulary: off */
    check_known(p, 7);
}

Test(sampler, top_p) {
    struct xd_sampler_params p = plain(3);
    p.top_p = 0.6f; /* cum 0.40, 0.65 >= 0.6: the token that crosses is kept -> 2 */
    check_known(p, 2);
    p.top_p = 0.7f; /* 0.40 0.65 0.80 -> 3 */
    check_known(p, 3);
    p.top_p = 0.0f; /* keeps at least one */
    check_known(p, 1);
    p.top_k = 5; /* top 5 = 0.95 of the mass, renormalized: .421 .684 .842 .947 -> 4 at 0.9 */
    p.top_p = 0.9f;
    check_known(p, 4);
}

Test(sampler, min_p) {
    struct xd_sampler_params p = plain(4);
    p.min_p = 0.3f; /* p >= 0.12 -> 0.40 0.25 0.15 */
    check_known(p, 3);
    p.min_p = 0.2f; /* p >= 0.08 -> 4 */
    check_known(p, 4);
    p.min_p = 1.0f; /* only the max */
    check_known(p, 1);
    p.min_p = 0.2f; /* after top_k 2 the max is unchanged: p >= 0.08 of those two -> 2 */
    p.top_k = 2;
    check_known(p, 2);
}

Test(sampler, temperature) {
    /* p = 0.6 0.3 0.1. T = 0.5 squares: .36 .09 .01 -> .7826 .1957 .0217;
     * T = 2 takes square roots: .7746 .5477 .3162 -> .4727 .3343 .1930 */
    float l[3] = {logf(0.6f), logf(0.3f), logf(0.1f)};
    long hist[3];
    const double cold[3] = {0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46};
    const double r[3] = {sqrt(0.6), sqrt(0.3), sqrt(0.1)};
    const double hot[3] = {r[0] / (r[0] + r[1] + r[2]), r[1] / (r[0] + r[1] + r[2]),
                           r[2] / (r[0] + r[1] + r[2])};
    struct xd_sampler_params p = plain(5);
    p.temperature = 0.5f;
    struct xd_sampler *s = mk(&p, 3);
    histogram(s, l, 3, 40000, hist);
    assert_freqs(hist, cold, 3, 40000);
    xd_sampler_destroy(s);
    p.temperature = 2.0f;
    s = mk(&p, 3);
    histogram(s, l, 3, 40000, hist);
    assert_freqs(hist, hot, 3, 40000);
    xd_sampler_destroy(s);
}

/* top_p on a 150k vocabulary against a naive sort: only the nucleus may appear. The nucleus is
 * hundreds of tokens, so the growing sorted prefix (64, 128, ...) is exercised. */
static int cmp_desc(const void *a, const void *b) {
    const float x = **(const float *const *)a, y = **(const float *const *)b;
    if (x != y) return x > y ? -1 : 1;
    return *(const float *const *)a < *(const float *const *)b ? -1 : 1; /* lower id first */
}

Test(sampler, top_p_and_top_k_large_vocab) {
    enum { NV = 150000 };
    float *l = malloc(NV * sizeof *l);
    const float **ord = malloc(NV * sizeof *ord);
    char *allowed = malloc(NV), *seen = calloc(NV, 1);
    int *rank = malloc(NV * sizeof *rank);
    struct xd_sampler_params p;
    struct xd_sampler *s;

    /* scale 7: a nucleus of ~500 tokens over many buckets; scale 2: ~20000, one wide bucket */
    const float scales[2] = {7.0f, 2.0f};
    const int draws[2] = {1500, 400};
    for (int r = 0; r < 2; r++) {
        fill_logits(l, NV, 77, scales[r]);
        for (int i = 0; i < NV; i++) ord[i] = &l[i];
        qsort(ord, NV, sizeof *ord, cmp_desc);
        for (int i = 0; i < NV; i++) rank[ord[i] - l] = i;

        /* the nucleus at top_p = 0.5, in double; and the share of its lower half */
        double z = 0.0, m = *ord[0], cum = 0.0, lower = 0.0;
        for (int i = 0; i < NV; i++) z += exp(l[i] - m);
        int n_keep = 0;
        while (cum < 0.5 * z) cum += exp(*ord[n_keep++] - m);
        for (int i = n_keep / 2; i < n_keep; i++) lower += exp(*ord[i] - m);
        const double p_lower = lower / cum;
        memset(allowed, 0, NV);
        for (int i = 0; i < n_keep + 1; i++) allowed[ord[i] - l] = 1; /* +1: edge rounding */

        p = plain(8 + r);
        p.top_p = 0.5f;
        s = mk(&p, NV);
        long n_lower = 0;
        for (int i = 0; i < draws[r]; i++) {
            int t = xd_sampler_sample(s, l, NULL);
            cr_assert(t >= 0 && allowed[t], "token %d (rank %d) outside the top_p nucleus of %d",
                      t, t >= 0 ? rank[t] : -1, n_keep);
            n_lower += rank[t] >= n_keep / 2;
        }
        const double f = (double)n_lower / draws[r];
        const double sigma = sqrt(p_lower * (1.0 - p_lower) / draws[r]);
        cr_assert(fabs(f - p_lower) < 5.0 * sigma, "nucleus %d: lower half drawn %.4f, want %.4f",
                  n_keep, f, p_lower);
        xd_sampler_destroy(s);
    }
    fill_logits(l, NV, 77, 2.0f);
    for (int i = 0; i < NV; i++) ord[i] = &l[i];
    qsort(ord, NV, sizeof *ord, cmp_desc);
    int distinct;

    /* top_k = 1000 (quickselect path) at a high temperature: only the 1000 best appear */
    memset(allowed, 0, NV);
    for (int i = 0; i < 1000; i++) allowed[ord[i] - l] = 1;
    p = plain(9);
    p.top_k = 1000;
    p.temperature = 50.0f;
    s = mk(&p, NV);
    distinct = 0;
    for (int i = 0; i < 1500; i++) {
        int t = xd_sampler_sample(s, l, NULL);
        cr_assert(t >= 0 && allowed[t], "token %d outside the top 1000", t);
        distinct += !seen[t];
        seen[t] = 1;
    }
    cr_assert(distinct > 700, "only %d of 1000 drawn", distinct); /* expect 1000(1-e^-1.5) */
    xd_sampler_destroy(s);
    free(rank);
    free(seen);
    free(allowed);
    free(ord);
    free(l);
}

/* 200 tokens tied at the top (and a sea of -1000): ties break by the lower id, so top_p 0.5
 * keeps exactly the 100 lowest ids of the 200. */
Test(sampler, top_p_ties_lowest_ids) {
    enum { NV = 150000 };
    float *l = malloc(NV * sizeof *l);
    int ids[200];
    for (int i = 0; i < NV; i++) l[i] = -1000.0f;
    for (int i = 0; i < 200; i++) {
        ids[i] = 17 + i * 743; /* ascending, scattered */
        l[ids[i]] = 0.0f;
    }
    struct xd_sampler_params p = plain(10);
    p.top_p = 0.5f;
    struct xd_sampler *s = mk(&p, NV);
    int distinct = 0;
    char seen[100] = {0};
    for (int i = 0; i < 800; i++) {
        int t = xd_sampler_sample(s, l, NULL);
        cr_assert(t >= 0 && t <= ids[99] && l[t] == 0.0f, "token %d", t);
        distinct += !seen[(t - 17) / 743];
        seen[(t - 17) / 743] = 1;
    }
    cr_assert(distinct >= 95, "%d of the 100 kept tokens drawn", distinct);
    xd_sampler_destroy(s);
    free(l);
}

/* ---- penalties and bias on hand-computed logits ------------------------------------------ */

static void assert_adjusted(struct xd_sampler *s, const float *in, const float *want, int n) {
    float out[16];
    xd_sampler_adjusted_logits(s, in, out);
    for (int i = 0; i < n; i++)
        cr_assert_float_eq(out[i], want[i], 1e-6, "logit %d: %f, want %f", i, out[i], want[i]);
}

Test(sampler, repetition_penalty) {
    const float in[5] = {2.0f, -2.0f, 1.0f, 0.5f, 0.0f};
    struct xd_sampler_params p = plain(0);
    p.repetition_penalty = 2.0f;
    struct xd_sampler *s = mk(&p, 5);
    assert_adjusted(s, in, in, 5); /* nothing accepted yet */
    /* prompt 0 1, generated 0 4: positive divided, negative and zero multiplied, each once */
    cr_assert_eq(xd_sampler_accept(s, 0, false), 0);
    cr_assert_eq(xd_sampler_accept(s, 1, false), 0);
    cr_assert_eq(xd_sampler_accept(s, 0, true), 0);
    cr_assert_eq(xd_sampler_accept(s, 4, true), 0);
    const float want[5] = {1.0f, -4.0f, 1.0f, 0.5f, 0.0f};
    assert_adjusted(s, in, want, 5);
    cr_assert(xd_sampler_check_invariants(s));
    /* greedy follows the penalised logits: token 2 (1.0) ties token 0 (1.0) -> lowest id 0 */
    xd_sampler_destroy(s);

    /* window of 2: after 0 1 2 only 1 and 2 are penalised */
    p.repetition_window = 2;
    s = mk(&p, 5);
    for (int t = 0; t < 3; t++) cr_assert_eq(xd_sampler_accept(s, t, t == 2), 0);
    const float want2[5] = {2.0f, -4.0f, 0.5f, 0.5f, 0.0f};
    assert_adjusted(s, in, want2, 5);
    cr_assert(xd_sampler_check_invariants(s));
    /* adjusting twice gives the same (the scratch marks are restored) */
    assert_adjusted(s, in, want2, 5);
    xd_sampler_reset(s);
    assert_adjusted(s, in, in, 5);
    xd_sampler_destroy(s);
}

Test(sampler, presence_frequency_penalties) {
    const float in[5] = {2.0f, -2.0f, 1.0f, 0.5f, 0.0f};
    struct xd_sampler_params p = plain(0);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    struct xd_sampler *s = mk(&p, 5);
    /* prompt tokens do not count (OpenAI semantics); generated 0 0 2 1 1 1 */
    cr_assert_eq(xd_sampler_accept(s, 3, false), 0);
    cr_assert_eq(xd_sampler_accept(s, 3, false), 0);
    const int gen[6] = {0, 0, 2, 1, 1, 1};
    for (int i = 0; i < 6; i++) cr_assert_eq(xd_sampler_accept(s, gen[i], true), 0);
    /* 0: 2 - (0.5 + 2*0.25) = 1;  1: -2 - (0.5 + 3*0.25) = -3.25;  2: 1 - 0.75 = 0.25 */
    const float want[5] = {1.0f, -3.25f, 0.25f, 0.5f, 0.0f};
    assert_adjusted(s, in, want, 5);
    cr_assert(xd_sampler_check_invariants(s));
    xd_sampler_reset(s);
    cr_assert(xd_sampler_check_invariants(s));
    assert_adjusted(s, in, in, 5);
    xd_sampler_destroy(s);

    /* all together, in chain order: bias, repetition, presence/frequency */
    const struct xd_logit_bias bias[2] = {{0, 2.0f}, {1, -1.0f}};
    p.repetition_penalty = 2.0f;
    p.logit_bias = bias;
    p.n_logit_bias = 2;
    s = mk(&p, 5);
    cr_assert_eq(xd_sampler_accept(s, 0, true), 0);
    cr_assert_eq(xd_sampler_accept(s, 1, false), 0);
    /* 0: (2 + 2) / 2 - (0.5 + 0.25) = 1.25   (bias first: 2/2 + 2 would be 3 - 0.75)
     * 1: (-2 - 1) * 2 = -6 (a prompt token: no presence/frequency) */
    const float want2[5] = {1.25f, -6.0f, 1.0f, 0.5f, 0.0f};
    assert_adjusted(s, in, want2, 5);
    xd_sampler_destroy(s);
}

Test(sampler, logit_bias_bans) {
    float l[10];
    for (int i = 0; i < 10; i++) l[i] = 0.0f;
    l[3] = 10.0f; /* would win ~99.9% of draws */
    long hist[10];
    const struct xd_logit_bias ban[2] = {{3, -100.0f}, {7, -INFINITY}};
    struct xd_sampler_params p = plain(11);
    p.logit_bias = ban;
    p.n_logit_bias = 2;
    struct xd_sampler *s = mk(&p, 10);
    histogram(s, l, 10, 5000, hist);
    cr_assert_eq(hist[3], 0);
    cr_assert_eq(hist[7], 0);
    xd_sampler_destroy(s);

    p.temperature = 0.0f;
    s = mk(&p, 10);
    cr_assert_eq(xd_sampler_sample(s, l, NULL), 0); /* 3 banned, the rest tie at 0 */
    xd_sampler_destroy(s);

    /* a positive bias forces a token; every token banned is an error, not a crash */
    struct xd_logit_bias all[10];
    for (int i = 0; i < 10; i++) all[i] = (struct xd_logit_bias){i, -INFINITY};
    p = plain(12);
    p.logit_bias = all;
    p.n_logit_bias = 10;
    s = mk(&p, 10);
    cr_assert_eq(xd_sampler_sample(s, l, NULL), XD_E_INVALID);
    xd_sampler_destroy(s);
    p.temperature = 0.0f;
    s = mk(&p, 10);
    struct xd_logprobs lp;
    cr_assert_eq(xd_sampler_sample(s, l, &lp), XD_E_INVALID);
    cr_assert_eq(lp.chosen.token, -1);
    xd_sampler_destroy(s);

    all[0] = (struct xd_logit_bias){8, 100.0f};
    p = plain(13);
    p.logit_bias = all;
    p.n_logit_bias = 1;
    s = mk(&p, 10);
    histogram(s, l, 10, 1000, hist);
    cr_assert_eq(hist[8], 1000);
    xd_sampler_destroy(s);
}

/* ---- logprobs ---------------------------------------------------------------------------- */

static void naive_logsoftmax(const float *l, int n, double *out) {
    double m = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++)
        if (l[i] > m) m = l[i];
    for (int i = 0; i < n; i++) sum += exp((double)l[i] - m);
    for (int i = 0; i < n; i++) out[i] = (double)l[i] - m - log(sum);
}

static void check_logprobs(const float *l, int n, const struct xd_logprobs *lp, int n_top,
                           int chosen) {
    double *ref = malloc((size_t)n * sizeof *ref);
    naive_logsoftmax(l, n, ref);
    cr_assert_eq(lp->n_top, n_top);
    cr_assert_eq(lp->chosen.token, chosen);
    cr_assert(fabs(lp->chosen.logprob - ref[chosen]) < 1e-5, "chosen %f vs %f",
              lp->chosen.logprob, ref[chosen]);
    for (int j = 0; j < n_top; j++) {
        const struct xd_token_logprob *e = &lp->top[j];
        cr_assert(e->token >= 0 && e->token < n);
        cr_assert(fabs(e->logprob - ref[e->token]) < 1e-5, "top %d: %f vs %f", j, e->logprob,
                  ref[e->token]);
        if (j > 0) { /* sorted: logit desc, ties by lower id */
            const struct xd_token_logprob *d = &lp->top[j - 1];
            cr_assert(l[d->token] > l[e->token] || (l[d->token] == l[e->token] &&
                                                    d->token < e->token));
        }
    }
    /* nothing left out beats the last one listed */
    if (n_top > 0) {
        const struct xd_token_logprob *last = &lp->top[n_top - 1];
        for (int i = 0; i < n; i++) {
            bool listed = false;
            for (int j = 0; j < n_top; j++) listed |= lp->top[j].token == i;
            if (!listed)
                cr_assert(l[i] < l[last->token] || (l[i] == l[last->token] && i > last->token),
                          "token %d should be in the top %d", i, n_top);
        }
    }
    free(ref);
}

Test(sampler, logprobs_match_naive) {
    enum { NV = 151936 };
    float *l = malloc(NV * sizeof *l);
    struct xd_logprobs lp;
    for (int k = 0; k < 4; k++) {
        fill_logits(l, NV, 900 + k, 5.0f);
        if (k == 1)
            for (int i = 0; i < NV; i++) l[i] += 1000.0f; /* exp() would overflow unshifted */
        if (k == 2) { /* ties straddling the cut */
            float top = l[naive_argmax(l, NV)];
            for (int i = 0; i < 30; i++) l[i * 1000 + 3] = top - 0.5f;
        }
        if (k == 3) l[5] = NAN; /* counts as -inf */
        struct xd_sampler_params p = plain(20 + k);
        p.n_logprobs = 20;
        p.top_k = 40; /* logprobs ignore the transforms */
        p.temperature = 0.3f;
        struct xd_sampler *s = mk(&p, NV);
        int t = xd_sampler_sample(s, l, &lp);
        cr_assert(t >= 0);
        if (k == 3) {
            l[5] = -INFINITY;
            cr_assert(lp.chosen.token != 5);
        }
        check_logprobs(l, NV, &lp, 20, t);
        xd_sampler_destroy(s);
    }
    free(l);

    /* n_top 0 and n_top > vocab */
    float small[3] = {1.0f, 2.0f, 3.0f};
    xd_logprobs_compute(small, 3, 1, 0, &lp);
    check_logprobs(small, 3, &lp, 0, 1);
    xd_logprobs_compute(small, 3, 0, 20, &lp);
    check_logprobs(small, 3, &lp, 3, 0);
    cr_assert_eq(lp.top[0].token, 2);
    /* sums to one */
    double sum = 0.0;
    for (int j = 0; j < 3; j++) sum += exp(lp.top[j].logprob);
    cr_assert(fabs(sum - 1.0) < 1e-6);
}

/* ---- argument checks --------------------------------------------------------------------- */

Test(sampler, invalid_params) {
    struct xd_sampler *s = (struct xd_sampler *)0x1;
    struct xd_sampler_params p;
#define BAD(field, value)                                                                    \
    do {                                                                                       \
        p = xd_sampler_params_default();                                                       \
        p.field = value;                                                                       \
        cr_assert_eq(xd_sampler_create(&p, 100, &s), XD_E_INVALID, #field " = " #value);       \
    } while (0)
    BAD(temperature, NAN);
    BAD(top_k, -1);
    BAD(top_p, 1.5f);
    BAD(top_p, NAN);
    BAD(min_p, -0.1f);
    BAD(repetition_penalty, 0.0f);
    BAD(repetition_window, -1);
    BAD(presence_penalty, INFINITY);
    BAD(n_logprobs, 21);
    BAD(n_logit_bias, 1); /* with a NULL list */
#undef BAD
    const struct xd_logit_bias oob = {100, 1.0f}, inf = {1, INFINITY};
    p = xd_sampler_params_default();
    p.logit_bias = &oob;
    p.n_logit_bias = 1;
    cr_assert_eq(xd_sampler_create(&p, 100, &s), XD_E_INVALID);
    p.logit_bias = &inf;
    cr_assert_eq(xd_sampler_create(&p, 100, &s), XD_E_INVALID);
    p = xd_sampler_params_default();
    cr_assert_eq(xd_sampler_create(&p, 0, &s), XD_E_INVALID);
    cr_assert_eq(s, (struct xd_sampler *)0x1, "*out touched on failure");

    /* the bias list is copied */
    struct xd_logit_bias b = {4, -INFINITY};
    p.logit_bias = &b;
    p.n_logit_bias = 1;
    p.temperature = 0.0f;
    s = mk(&p, 100);
    b.token = 5;
    float l[100] = {0};
    l[4] = 1.0f;
    l[5] = 0.5f;
    cr_assert_eq(xd_sampler_sample(s, l, NULL), 5);
    cr_assert_eq(xd_sampler_params(s)->logit_bias[0].token, 4);
    cr_assert_eq(xd_sampler_accept(s, 100, true), XD_E_INVALID);
    cr_assert_eq(xd_sampler_accept(s, -1, false), XD_E_INVALID);
    cr_assert(xd_sampler_check_invariants(s));
    xd_sampler_destroy(s);
    xd_sampler_destroy(NULL);
}

/* ---- stop strings ------------------------------------------------------------------------ */

/* Collects everything a matcher emits. */
struct sink {
    char text[20000];
    size_t len;
    int stop_index;
};

static void sink_take(struct sink *k, const struct xd_stop_out *o) {
    cr_assert(k->len + o->len <= sizeof k->text);
    memcpy(k->text + k->len, o->text, o->len);
    k->len += o->len;
    if (o->stop_index >= 0) k->stop_index = o->stop_index;
}

static struct xd_stop *mk_stop(const char *const *stops, size_t n) {
    struct xd_stop *m = NULL;
    cr_assert_eq(xd_stop_create(stops, NULL, n, &m), 0);
    return m;
}

/* Feeds s and checks what comes out now. */
static void feed_expect(struct xd_stop *m, const char *s, const char *want, int want_stop) {
    struct xd_stop_out o;
    cr_assert_eq(xd_stop_feed(m, s, strlen(s), &o), 0);
    cr_assert_eq(o.len, strlen(want), "feed \"%s\": emitted \"%.*s\", want \"%s\"", s,
                 (int)o.len, o.text, want);
    cr_assert(memcmp(o.text, want, o.len) == 0);
    cr_assert_eq(o.stop_index, want_stop);
    cr_assert(xd_stop_check_invariants(m));
}

Test(stop, across_token_boundaries) {
    const char *stops[] = {"lo Wo"};
    struct xd_stop *m = mk_stop(stops, 1);
    feed_expect(m, "Hel", "He", -1);     /* "l" may start "lo Wo" */
    cr_assert_eq(xd_stop_held(m), 1);
    feed_expect(m, "lo W", "l", -1);     /* "lo W" held */
    cr_assert_eq(xd_stop_held(m), 4);
    feed_expect(m, "orld", "", 0);       /* text ends right before the stop */
    cr_assert_eq(xd_stop_state(m), XD_STOP_MATCHED);
    feed_expect(m, "more", "", 0);       /* after a match: nothing, the match repeated */
    struct xd_stop_out o;
    xd_stop_finish(m, &o);
    cr_assert_eq(o.len, 0);
    cr_assert_eq(o.stop_index, 0);
    xd_stop_destroy(m);
}

Test(stop, overlapping_prefix) {
    const char *stops[] = {"ab"};
    struct xd_stop *m = mk_stop(stops, 1);
    feed_expect(m, "a", "", -1);
    feed_expect(m, "a", "a", -1); /* the first "a" can no longer start "ab" */
    feed_expect(m, "b", "", 0);
    xd_stop_destroy(m);
    m = mk_stop(stops, 1);
    feed_expect(m, "aab", "a", 0);
    xd_stop_destroy(m);
    /* a stop with a self-overlapping border: "aab" in "aaab" */
    const char *s2[] = {"aab"};
    m = mk_stop(s2, 1);
    feed_expect(m, "xa", "x", -1);
    feed_expect(m, "a", "", -1);
    feed_expect(m, "a", "a", -1);
    feed_expect(m, "b!", "", 0);
    xd_stop_destroy(m);
}

Test(stop, multiple_stops_first_completed_wins) {
    const char *stops[] = {"world", "lo"};
    struct xd_stop *m = mk_stop(stops, 2);
    feed_expect(m, "hello world", "hel", 1);
    xd_stop_destroy(m);

    const char *s2[] = {"xyz", "ld", "o w"};
    m = mk_stop(s2, 3);
    feed_expect(m, "hel", "he", -1);      /* "l" may start "ld" */
    feed_expect(m, "lo world", "ll", 2);
    xd_stop_destroy(m);

    /* two completing at the same byte: the longer (earlier start) wins */
    const char *s3[] = {"b", "ab"};
    m = mk_stop(s3, 2);
    feed_expect(m, "cab", "c", 1);
    xd_stop_destroy(m);

    /* one stop inside another: whichever completes first, however the text is cut */
    const char *s4[] = {"abcd", "bc"};
    m = mk_stop(s4, 2);
    feed_expect(m, "xabcd", "xa", 1);
    xd_stop_destroy(m);

    /* empty strings are ignored but keep their index; explicit lengths allow NUL bytes */
    const char *s5[] = {"", "q\0r"};
    const size_t lens[] = {0, 3};
    m = NULL;
    cr_assert_eq(xd_stop_create(s5, lens, 2, &m), 0);
    struct xd_stop_out o;
    cr_assert_eq(xd_stop_feed(m, "pq\0rs", 5, &o), 0);
    cr_assert_eq(o.len, 1);
    cr_assert_eq(o.stop_index, 1);
    xd_stop_destroy(m);
}

Test(stop, flush_at_end) {
    const char *stops[] = {"STOP"};
    struct xd_stop *m = mk_stop(stops, 1);
    feed_expect(m, "abc ST", "abc ", -1);
    cr_assert_eq(xd_stop_held(m), 2);
    struct xd_stop_out o;
    xd_stop_finish(m, &o);
    cr_assert_eq(o.len, 2);
    cr_assert(memcmp(o.text, "ST", 2) == 0);
    cr_assert_eq(o.stop_index, -1);
    cr_assert_eq(xd_stop_state(m), XD_STOP_FINISHED);
    cr_assert(xd_stop_check_invariants(m));
    cr_assert_eq(xd_stop_feed(m, "x", 1, &o), XD_E_INVALID);
    xd_stop_finish(m, &o);
    cr_assert_eq(o.len, 0);
    xd_stop_destroy(m);

    /* no stops at all: everything passes straight through */
    m = mk_stop(NULL, 0);
    feed_expect(m, "plain text", "plain text", -1);
    xd_stop_finish(m, &o);
    cr_assert_eq(o.len, 0);
    xd_stop_destroy(m);
}

Test(stop, utf8_never_split) {
    struct xd_stop *m = mk_stop(NULL, 0);
    feed_expect(m, "caf\xC3", "caf", -1); /* é = C3 A9 */
    feed_expect(m, "\xA9!", "\xC3\xA9!", -1);
    /* a 4-byte emoji one byte per token */
    feed_expect(m, "\xF0", "", -1);
    feed_expect(m, "\x9F", "", -1);
    feed_expect(m, "\x98", "", -1);
    feed_expect(m, "\x80", "\xF0\x9F\x98\x80", -1);
    /* invalid bytes are not held forever */
    feed_expect(m, "\x80\x80\x80\x80", "\x80\x80\x80\x80", -1);
    feed_expect(m, "\xE2\x82", "", -1);
    struct xd_stop_out o;
    xd_stop_finish(m, &o); /* the incomplete tail is flushed as is */
    cr_assert_eq(o.len, 2);
    xd_stop_destroy(m);

    /* a stop beginning with a multi-byte character: hold-back and UTF-8 together */
    const char *stops[] = {"\xC3\xA9t"}; /* "ét" */
    m = mk_stop(stops, 1);
    feed_expect(m, "caf\xC3", "caf", -1);
    feed_expect(m, "\xA9", "", -1);
    feed_expect(m, "s \xE2\x82", "\xC3\xA9s ", -1); /* € = E2 82 AC split */
    feed_expect(m, "\xAC \xC3\xA9", "\xE2\x82\xAC ", -1);
    feed_expect(m, "t", "", 0);
    xd_stop_destroy(m);
}

/* Naive reference: the earliest-ending stop (ties: longest, then lowest index). */
static void naive_stop(const char *text, size_t n, const char *const *stops, size_t n_stops,
                       size_t *out_len, int *out_index) {
    for (size_t end = 1; end <= n; end++) {
        int best = -1;
        size_t best_len = 0;
        for (size_t j = 0; j < n_stops; j++) {
            size_t l = strlen(stops[j]);
            if (l == 0 || l > end || memcmp(text + end - l, stops[j], l) != 0) continue;
            if (best < 0 || l > best_len) best = (int)j, best_len = l;
        }
        if (best >= 0) {
            *out_len = end - best_len;
            *out_index = best;
            return;
        }
    }
    *out_len = n;
    *out_index = -1;
}

/* Random texts over a tiny alphabet, random cuts: the output never depends on the cuts and
 * always equals the naive reference. */
Test(stop, chunking_invariance) {
    const char *stops[] = {"aba", "bb", "abab", "baaab", "c"};
    uint64_t st = 12345;
    char text[300];
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + trand(&st) % 200, n_stops = 1 + trand(&st) % 5;
        for (size_t i = 0; i < n; i++) text[i] = "ab"[trand(&st) % 2];
        if (trand(&st) % 4 == 0) text[trand(&st) % n] = 'c';
        size_t want_len;
        int want_index;
        naive_stop(text, n, stops, n_stops, &want_len, &want_index);

        struct xd_stop *m = mk_stop(stops, n_stops);
        struct sink k = {.len = 0, .stop_index = -1};
        struct xd_stop_out o;
        for (size_t i = 0; i < n && xd_stop_state(m) == XD_STOP_OPEN;) {
            size_t cut = round % 3 == 0 ? 1 : round % 3 == 1 ? n : 1 + trand(&st) % 7;
            if (cut > n - i) cut = n - i;
            cr_assert_eq(xd_stop_feed(m, text + i, cut, &o), 0);
            sink_take(&k, &o);
            cr_assert(xd_stop_check_invariants(m));
            i += cut;
        }
        xd_stop_finish(m, &o);
        sink_take(&k, &o);
        cr_assert(xd_stop_check_invariants(m));
        cr_assert_eq(k.len, want_len, "round %d: %zu bytes out, want %zu (%.*s)", round, k.len,
                     want_len, (int)n, text);
        cr_assert(memcmp(k.text, text, k.len) == 0);
        cr_assert_eq(k.stop_index, want_index, "round %d", round);
        xd_stop_destroy(m);
    }
}

Test(stop, large_piece_grows_buffer) {
    const char *stops[] = {"<END>"};
    struct xd_stop *m = mk_stop(stops, 1);
    char *big = malloc(12000);
    memset(big, 'x', 12000);
    memcpy(big + 10000, "<END>", 5);
    struct xd_stop_out o;
    cr_assert_eq(xd_stop_feed(m, big, 9998, &o), 0);
    cr_assert_eq(o.len, 9998);
    cr_assert_eq(xd_stop_feed(m, big + 9998, 2000, &o), 0);
    cr_assert_eq(o.len, 2);
    cr_assert_eq(o.stop_index, 0);
    cr_assert(xd_stop_check_invariants(m));
    free(big);
    xd_stop_destroy(m);

    cr_assert_eq(xd_stop_create(NULL, NULL, 1, &m), XD_E_INVALID);
    const char *nul[] = {NULL};
    cr_assert_eq(xd_stop_create(nul, NULL, 1, &m), XD_E_INVALID);
    xd_stop_destroy(NULL);
}
