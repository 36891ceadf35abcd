/* threadpool.c - persistent workers that join runs while they are open; the caller never
 * waits for a worker that has not started.
 *
 * A run publishes (fn, arg) under a new generation of one atomic ticket word; workers that
 * notice it join by incrementing the ticket's active count, call fn, and leave. The caller calls
 * fn itself, then closes the run (a flag in the same word, so joining and closing cannot
 * interleave) and waits only for the workers that joined. Since the work inside fn is handed
 * out by a shared claim counter (xd_pool_claim), the caller alone can finish everything; a
 * worker that wakes after the close does nothing and never touches (fn, arg), which may be gone
 * by then. This matters on a shared or oversubscribed machine: a plain fork-join barrier makes
 * every one of the ~100 matmuls of a decoded token wait for a time slice of every worker
 * (measured here: 60-130 us per empty run with the machine's two cores busy), while this costs
 * the caller nothing when workers are late and gives full parallelism when they are spinning.
 *
 * Workers spin on the ticket for about XD_POOL_SPIN pause instructions (a wake-up through the
 * kernel costs more than a small run), then sleep on a condition variable, so an idle server
 * costs no CPU. Lost wake-ups are ruled out Dekker-style with sequentially consistent atomics: a
 * worker announces itself in n_sleeping before its last look at the ticket, and the caller
 * publishes the ticket before it looks at n_sleeping.
 *
 * Ticket word: generation << 32 | CLOSED (bit 31) | active workers (bits 0..30).
 * Worker states:
 *   WAITING --new open generation, CAS active+1--> RUNNING --fn returned, active-1--> WAITING
 *   WAITING --generation already closed--> WAITING (skips the run)
 *   WAITING --spin budget spent--> SLEEPING --broadcast--> WAITING
 *   any --stop (xd_pool_destroy)--> EXITED
 *
 * Not done: pinning threads to cores, NUMA placement, nested runs.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>

#include "xd_error.h"

#define XD_POOL_SPIN 4096  /* pause iterations (~50-100 us) before a worker sleeps */
#define XD_POOL_WAIT 16384 /* pause iterations before the caller starts yielding its core */

#define T_CLOSED ((uint64_t)1 << 31)
#define T_ACTIVE (T_CLOSED - 1)
#define T_GEN(t) ((uint32_t)((t) >> 32))

struct xd_pool_worker {
    struct xd_pool *pool;
    int ith;
    pthread_t thread;
};

struct xd_pool {
    int n;
    struct xd_pool_worker *w; /* n - 1 workers */
    int n_started;
    uint32_t gen;       /* the caller's copy of the current generation */
    xd_pool_task_cb fn; /* published before the ticket */
    void *arg;
    _Atomic uint64_t ticket;
    _Atomic int n_sleeping;
    _Atomic bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait until the ticket's generation differs from seen (or stop); returns the ticket. */
static uint64_t wait_for_work(struct xd_pool *p, uint32_t seen) {
    uint64_t t;
    for (int i = 0; i < XD_POOL_SPIN; i++) {
        t = atomic_load_explicit(&p->ticket, memory_order_acquire);
        if (T_GEN(t) != seen || atomic_load_explicit(&p->stop, memory_order_relaxed)) return t;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_sleeping, 1);
    while (T_GEN(t = atomic_load(&p->ticket)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return t;
}

static void *worker_main(void *arg) {
    struct xd_pool_worker *w = arg;
    struct xd_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        uint64_t t = wait_for_work(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        seen = T_GEN(t);
        /* join while the run is open and still this generation */
        bool joined = false;
        while (!joined && T_GEN(t) == seen && !(t & T_CLOSED))
            joined = atomic_compare_exchange_weak_explicit(
                &p->ticket, &t, t + 1, memory_order_acq_rel, memory_order_acquire);
        if (!joined) continue;
        p->fn(p->arg, w->ith, p->n);
        atomic_fetch_sub_explicit(&p->ticket, 1, memory_order_release);
    }
    return NULL;
}

int xd_pool_create(int n_threads, struct xd_pool **out) {
    if (n_threads < 1 || n_threads > 1024) return XD_E_INVALID;
    struct xd_pool *p = calloc(1, sizeof *p);
    if (!p) return XD_E_NOMEM;
    p->n = n_threads;
    atomic_init(&p->ticket, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->stop, false);
    if (pthread_mutex_init(&p->mu, NULL)) {
        free(p);
        return XD_E_NOMEM;
    }
    if (pthread_cond_init(&p->cv, NULL)) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return XD_E_NOMEM;
    }
    if (n_threads > 1 && !(p->w = calloc((size_t)n_threads - 1, sizeof *p->w))) {
        xd_pool_destroy(p);
        return XD_E_NOMEM;
    }
    for (int i = 0; i < n_threads - 1; i++) {
        p->w[i] = (struct xd_pool_worker){.pool = p, .ith = i + 1};
        int rc = pthread_create(&p->w[i].thread, NULL, worker_main, &p->w[i]);
        if (rc) {
            xd_pool_destroy(p);
            return -rc;
        }
        p->n_started++;
    }
    *out = p;
    return 0;
}

void xd_pool_destroy(struct xd_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->w[i].thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

int xd_pool_n_threads(const struct xd_pool *p) { return p->n; }

void xd_pool_run(struct xd_pool *p, xd_pool_task_cb fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->gen++;
    /* seq_cst: publishes fn/arg with the new open generation, ordered before n_sleeping */
    atomic_store(&p->ticket, (uint64_t)p->gen << 32);
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    uint64_t t = atomic_fetch_or_explicit(&p->ticket, T_CLOSED, memory_order_acq_rel);
    for (unsigned spins = 0; (t & T_ACTIVE) != 0; spins++) {
        if (spins < XD_POOL_WAIT)
            cpu_relax();
        else
            sched_yield(); /* a joined worker was descheduled mid-chunk: let it run */
        t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    }
}
