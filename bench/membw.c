/* membw.c - a memory read-bandwidth probe: the roofline a memory-bound decode is measured
 * against (`expertd bench membw`, and `bench engine --membw` in the same run).
 *
 * The threads of a persistent pool (the engine's own, engine/threadpool.c) claim 1 MiB chunks of
 * a buffer much larger than the last-level cache and sum them with 64-byte (AVX-512) or 32-byte
 * (AVX2) loads into several independent accumulators, so the loads, not the adds, are the limit;
 * the sum is kept so the reads cannot be optimized away. The buffer is written first by the same
 * threads, and transparent huge pages are requested so TLB misses do not count against the
 * memory. Reported: the median and the best of the timed
 * passes, bytes / wall time of a pass, 1 GB = 1e9 bytes. Read-only on purpose: decode reads
 * weights and writes almost nothing. Not done: write or copy bandwidth, NUMA placement.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench_engine.h"
#include "cpu_features.h"
#include "threadpool.h"
#include "xd_error.h"

#define MEMBW_CHUNK ((size_t)1 << 20) /* bytes a thread claims at a time */

struct membw_job {
    uint8_t *buf;
    size_t bytes;
    bool fill;
    int isa; /* 2: AVX-512, 1: AVX2, 0: plain C */
    _Atomic int64_t next;
    uint64_t sums[256];
};

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi64(
        _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v,
                        _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    return v[0] + v[1] + v[2] + v[3];
}
#endif

static uint64_t read_c(const uint8_t *p, size_t n) {
    uint64_t a[4] = {0};
    for (size_t i = 0; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t v;
            memcpy(&v, p + i + 8 * k, 8);
            a[k] += v;
        }
    return a[0] + a[1] + a[2] + a[3];
}

/* Chunks of 1 MiB claimed from a shared counter (the pool's contract), read or first written. */
static void membw_task(void *arg, int ith, int nth) {
    (void)nth;
    struct membw_job *j = arg;
    const int64_t n_chunks = (int64_t)(j->bytes / MEMBW_CHUNK);
    int64_t c, len;
    while ((c = xd_pool_claim(&j->next, n_chunks, 1, &len)) >= 0) {
        uint8_t *p = j->buf + (size_t)c * MEMBW_CHUNK;
        if (j->fill) {
            for (size_t i = 0; i < MEMBW_CHUNK; i += 8) {
                const uint64_t v = i * 0x9e3779b97f4a7c15ull;
                memcpy(p + i, &v, 8);
            }
            continue;
        }
        uint64_t s;
#if defined(__x86_64__)
        if (j->isa == 2)
            s = read_avx512(p, MEMBW_CHUNK);
        else if (j->isa == 1)
            s = read_avx2(p, MEMBW_CHUNK);
        else
#endif
            s = read_c(p, MEMBW_CHUNK);
        j->sums[ith % 256] += s;
    }
}

static void membw_pass(struct xd_pool *pool, struct membw_job *j) {
    atomic_store_explicit(&j->next, 0, memory_order_relaxed);
    xd_pool_run(pool, membw_task, j);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int xd_membw_measure(size_t bytes, int n_threads, int reps, struct xd_membw_result *out) {
    if (bytes < ((size_t)1 << 20) || n_threads < 1 || n_threads > 256 || reps < 1 || reps > 1000)
        return XD_E_INVALID;
    bytes = (bytes + MEMBW_CHUNK - 1) / MEMBW_CHUNK * MEMBW_CHUNK;
    struct membw_job *j = calloc(1, sizeof *j);
    double *gbs = calloc((size_t)reps, sizeof *gbs);
    uint8_t *buf = aligned_alloc((size_t)2 << 20, (bytes + ((size_t)2 << 20) - 1) /
                                                      ((size_t)2 << 20) * ((size_t)2 << 20));
    struct xd_pool *pool = NULL;
    int rc = 0;
    if (!j || !gbs || !buf || (rc = xd_pool_create(n_threads, &pool))) {
        rc = rc ? rc : XD_E_NOMEM;
        goto out;
    }
    madvise(buf, bytes, MADV_HUGEPAGE); /* a hint; failure is fine */
    struct xd_cpu_features f;
    xd_cpu_features_probe(&f);
    j->buf = buf;
    j->bytes = bytes;
    j->isa = f.avx512f ? 2 : f.avx2 ? 1 : 0;
    j->fill = true;
    membw_pass(pool, j);
    j->fill = false;
    membw_pass(pool, j); /* untimed: faults in the page tables, warms the TLB */
    const size_t read = bytes;
    for (int r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        membw_pass(pool, j);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        gbs[r] = (double)read / s / 1e9;
    }
    qsort(gbs, (size_t)reps, sizeof *gbs, cmp_double);
    *out = (struct xd_membw_result){
        .gb_s_median = reps % 2 ? gbs[reps / 2] : (gbs[reps / 2 - 1] + gbs[reps / 2]) / 2,
        .gb_s_best = gbs[reps - 1],
        .bytes = read,
        .threads = n_threads,
        .reps = reps,
    };
    uint64_t sink = 0;
    for (int i = 0; i < 256; i++) sink += j->sums[i];
    if (sink == 42) fputc('\0', stderr); /* keeps the sums observable */
out:
    xd_pool_destroy(pool);
    free(buf);
    free(gbs);
    free(j);
    return rc;
}
