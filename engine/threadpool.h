/* threadpool.h - a persistent pool of threads for the CPU kernels.
 *
 * n threads in all: the caller of xd_pool_run is thread 0 and n-1 workers are created once,
 * at xd_pool_create, never per operation. A run calls fn(arg, ith, n) on the caller and on each
 * worker that joins before the caller's own call returns, and returns when those have
 * returned. So fn must take its work only through xd_pool_claim (chunks of a shared counter):
 * the caller alone may end up doing all of it, and which thread computes an output never
 * changes how it is computed. ith (0..n-1) selects per-thread scratch.
 */
#ifndef XD_THREADPOOL_H
#define XD_THREADPOOL_H

#include <stdatomic.h>
#include <stdint.h>

struct xd_pool;

typedef void (*xd_pool_task_cb)(void *arg, int ith, int nth);

/* A pool of n_threads (>= 1; 1 creates no thread). 0, XD_E_INVALID, XD_E_NOMEM or a negative
 * errno from pthread_create; *out untouched on failure (threads already started are joined). */
int xd_pool_create(int n_threads, struct xd_pool **out);
/* Join the workers and free the pool. NULL is a no-op. Not while a run is in progress. */
void xd_pool_destroy(struct xd_pool *p);
int xd_pool_n_threads(const struct xd_pool *p);

/* Call fn(arg, 0, n) on the calling thread and fn(arg, ith, n) on every worker that joins in
 * time (see above); return when every call made has returned. Runs must not overlap (one caller
 * at a time) and fn must not call xd_pool_run. Never fails. */
void xd_pool_run(struct xd_pool *p, xd_pool_task_cb fn, void *arg);

/* Claim the next chunk of [0, total) from a counter shared by the threads of one run (reset it
 * to 0 before the run): returns the chunk start, *len its length, or -1 when all is taken. */
static inline int64_t xd_pool_claim(_Atomic int64_t *next, int64_t total, int64_t chunk,
                                    int64_t *len) {
    const int64_t s = atomic_fetch_add_explicit(next, chunk, memory_order_relaxed);
    if (s >= total) return -1;
    *len = total - s < chunk ? total - s : chunk;
    return s;
}

/* Guided claiming (OpenMP's "guided"): chunks of about (what is left) / nth, rounded up to a
 * multiple of unit: long runs first (the kernels stream rows and prefetch within a run, so
 * every chunk start costs a cold stream), unit-sized ones at the end (the threads finish
 * together). (what is left) / (2 * nth) made twice the chunks and decoded 9% slower with 2
 * threads (docs/benchmarks.md). Same contract as xd_pool_claim; chunk starts stay multiples
 * of unit. */
static inline int64_t xd_pool_claim_guided(_Atomic int64_t *next, int64_t total, int64_t unit,
                                           int nth, int64_t *len) {
    int64_t s = atomic_load_explicit(next, memory_order_relaxed);
    for (;;) {
        if (s >= total) return -1;
        int64_t c = (total - s) / (int64_t)nth;
        c = (c + unit - 1) / unit * unit;
        c = c < unit ? unit : c;
        c = c > total - s ? total - s : c;
        if (atomic_compare_exchange_weak_explicit(next, &s, s + c, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *len = c;
            return s;
        }
    }
}

#endif
