/* bench_stats.h - the numbers of the load generator: a seeded RNG, the arrival schedule
 * (Poisson or gamma-bursty), and summaries of latency samples (mean, median, p90, p99).
 * Pure functions over caller memory; no I/O, no clock.
 */
#ifndef XD_BENCH_STATS_H
#define XD_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>

/* xoshiro256** seeded through splitmix64: the same seed gives the same stream on every
 * platform, which is what makes a schedule reproducible from --seed. */
struct xd_bench_rng {
    uint64_t s[4];
};

/* Seeds r. Cannot fail. */
void xd_bench_rng_seed(struct xd_bench_rng *r, uint64_t seed);
uint64_t xd_bench_rng_u64(struct xd_bench_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double xd_bench_rng_uniform(struct xd_bench_rng *r);
/* Uniform integer in [lo, hi] (lo <= hi). */
int64_t xd_bench_rng_range(struct xd_bench_rng *r, int64_t lo, int64_t hi);
/* Standard normal (Marsaglia's polar method). */
double xd_bench_rng_normal(struct xd_bench_rng *r);
/* Gamma(shape, scale) with shape > 0, scale > 0 (Marsaglia-Tsang; shape < 1 boosted). */
double xd_bench_rng_gamma(struct xd_bench_rng *r, double shape, double scale);

/* Arrival times in seconds of n requests at `rate` requests/s with gamma burstiness b (b = 1:
 * Poisson; b < 1 burstier, b > 1 more regular): t[0] = 0 and gaps ~ Gamma(b, 1/(rate*b)), so
 * the mean gap is 1/rate whatever b (vLLM's definition, so figures compare). rate = INFINITY
 * puts every arrival at 0. Returns 0, or XD_E_INVALID when rate <= 0, b <= 0 or n == 0 (t
 * untouched). */
int xd_bench_schedule(double rate, double burstiness, uint64_t seed, size_t n, double *t);

/* Percentile p in [0, 100] of sorted[0..n) by linear interpolation between closest ranks
 * (numpy's default): position p/100 * (n - 1). NAN when n == 0. */
double xd_bench_percentile(const double *sorted, size_t n, double p);

struct xd_bench_summary {
    size_t n;
    double mean, std, min, max, median, p90, p99;
};

/* Summarizes v[0..n): sorts v in place (callers pass a copy they own). With n == 0 every field
 * but n is NAN. Population standard deviation. Cannot fail. */
void xd_bench_summarize(double *v, size_t n, struct xd_bench_summary *out);

#endif
