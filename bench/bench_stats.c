/* bench_stats.c - the load generator's arithmetic: seeded random numbers, the arrival schedule
 * and latency summaries.
 *
 * Trade-off: the schedule is computed up front (n doubles) rather than drawn as requests go
 * out, so a run's arrivals depend on --seed alone and not on how fast the server answered, and
 * the test can check the schedule's statistics without a network. Percentiles sort a copy of
 * the samples (O(n log n) per metric) instead of keeping a streaming sketch (t-digest, HDR
 * histogram): a benchmark has at most millions of samples and exact figures are worth more
 * than the memory. Not here: confidence intervals, outlier rejection - a report shows what
 * happened.
 */
#include "bench_stats.h"

#include <math.h>
#include <stdlib.h>

#include "xd_error.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void xd_bench_rng_seed(struct xd_bench_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t xd_bench_rng_u64(struct xd_bench_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double xd_bench_rng_uniform(struct xd_bench_rng *r) {
    return (double)(xd_bench_rng_u64(r) >> 11) * 0x1.0p-53;
}

int64_t xd_bench_rng_range(struct xd_bench_rng *r, int64_t lo, int64_t hi) {
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1;
    if (span == 0) return (int64_t)xd_bench_rng_u64(r); /* the whole int64 range */
    /* Lemire-style rejection keeps the draw unbiased for any span */
    uint64_t limit = UINT64_MAX - UINT64_MAX % span, x;
    do x = xd_bench_rng_u64(r);
    while (x >= limit);
    return (int64_t)((uint64_t)lo + x % span);
}

double xd_bench_rng_normal(struct xd_bench_rng *r) {
    /* The polar method accepts with probability pi/4; a bound on the tries keeps the loop
     * finite even for a broken generator (the chance of 64 rejections is 1e-43). */
    for (int i = 0; i < 64; i++) {
        double u = 2 * xd_bench_rng_uniform(r) - 1, v = 2 * xd_bench_rng_uniform(r) - 1;
        double s = u * u + v * v;
        if (s > 0 && s < 1) return u * sqrt(-2 * log(s) / s);
    }
    return 0;
}

double xd_bench_rng_gamma(struct xd_bench_rng *r, double shape, double scale) {
    /* Marsaglia & Tsang (2000), "A simple method for generating gamma variables": for shape
     * >= 1 it accepts with probability > 0.95. Shape < 1 uses Gamma(a) = Gamma(a+1) U^(1/a). */
    double boost = 1;
    if (shape < 1) {
        double u = xd_bench_rng_uniform(r);
        boost = pow(u > 0 ? u : 0x1.0p-53, 1 / shape);
        shape += 1;
    }
    double d = shape - 1.0 / 3, c = 1 / sqrt(9 * d);
    for (int i = 0; i < 256; i++) {
        double x = xd_bench_rng_normal(r), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = xd_bench_rng_uniform(r);
        if (u < 1 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v)))
            return d * v * boost * scale;
    }
    return d * boost * scale; /* unreachable in practice: the mode */
}

int xd_bench_schedule(double rate, double burstiness, uint64_t seed, size_t n, double *t) {
    if (!(rate > 0) || !(burstiness > 0) || isinf(burstiness) || n == 0) return XD_E_INVALID;
    if (isinf(rate)) {
        for (size_t i = 0; i < n; i++) t[i] = 0;
        return 0;
    }
    struct xd_bench_rng r;
    xd_bench_rng_seed(&r, seed);
    double theta = 1 / (rate * burstiness), at = 0;
    for (size_t i = 0; i < n; i++) {
        t[i] = at;
        at += xd_bench_rng_gamma(&r, burstiness, theta);
    }
    return 0;
}

double xd_bench_percentile(const double *sorted, size_t n, double p) {
    if (n == 0) return NAN;
    if (p <= 0) return sorted[0];
    if (p >= 100) return sorted[n - 1];
    double pos = p / 100 * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n) return sorted[n - 1];
    double frac = pos - (double)lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void xd_bench_summarize(double *v, size_t n, struct xd_bench_summary *out) {
    out->n = n;
    if (n == 0) {
        out->mean = out->std = out->min = out->max = out->median = out->p90 = out->p99 = NAN;
        return;
    }
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    double mean = sum / (double)n, ss = 0;
    for (size_t i = 0; i < n; i++) ss += (v[i] - mean) * (v[i] - mean);
    out->mean = mean;
    out->std = sqrt(ss / (double)n);
    out->min = v[0];
    out->max = v[n - 1];
    out->median = xd_bench_percentile(v, n, 50);
    out->p90 = xd_bench_percentile(v, n, 90);
    out->p99 = xd_bench_percentile(v, n, 99);
}
