/* expert_io_pread.c - the fallback I/O engine: a pool of threads doing pread(2).
 *
 * Used where io_uring is missing or forbidden (seccomp profiles of some container runtimes
 * refuse io_uring_setup). Each worker pops one read from a FIFO, preads it and reports it
 * alone; with one thread per read in flight (up to 16) the device still sees a queue depth
 * close to io_uring's, at the price of a context switch per read and a thread stack per slot
 * of depth. The queue is a ring of `depth` pointers: the caller never has more than depth reads
 * in flight, so it cannot overflow.
 *
 * Not here: retries, short-read handling, checksums (the cache's job, see xio.h); cancellation
 * (close waits for the caller to have no reads in flight, as the contract says).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "xio.h"

#define PREAD_MAX_THREADS 16

struct xd_xio {
    struct xd_xio_params p;
    int *fds;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct xd_xio_req **ring; /* [depth] */
    int head, n;
    int stop;
    int n_threads;
    pthread_t threads[PREAD_MAX_THREADS];
    char desc[64];
};

static void *worker(void *arg) {
    struct xd_xio *io = arg;
    for (;;) {
        pthread_mutex_lock(&io->mu);
        while (!io->stop && io->n == 0) pthread_cond_wait(&io->cv, &io->mu);
        if (io->n == 0) { /* stopping and drained */
            pthread_mutex_unlock(&io->mu);
            return NULL;
        }
        struct xd_xio_req *r = io->ring[io->head];
        io->head = (io->head + 1) % io->p.depth;
        io->n--;
        pthread_mutex_unlock(&io->mu);

        ssize_t got = pread(io->fds[r->file], r->buf, r->len, (off_t)r->off);
        int32_t res = got < 0 ? -errno : (int32_t)got;
        io->p.done(io->p.done_user, &r, &res, 1);
    }
}

static void pread_close(struct xd_xio *io) {
    if (!io) return;
    pthread_mutex_lock(&io->mu);
    io->stop = 1;
    pthread_cond_broadcast(&io->cv);
    pthread_mutex_unlock(&io->mu);
    for (int i = 0; i < io->n_threads; i++) pthread_join(io->threads[i], NULL);
    pthread_cond_destroy(&io->cv);
    pthread_mutex_destroy(&io->mu);
    free(io->ring);
    free(io->fds);
    free(io);
}

static int pread_open(const struct xd_xio_params *p, void *user, struct xd_xio **out) {
    (void)user;
    if (p->depth <= 0 || p->n_fds <= 0 || !p->done) return -EINVAL;
    struct xd_xio *io = calloc(1, sizeof *io);
    if (!io) return -ENOMEM;
    io->p = *p;
    io->p.bufs = NULL; /* not kept: pread needs no registration */
    io->p.n_bufs = 0;
    io->fds = malloc((size_t)p->n_fds * sizeof *io->fds);
    io->ring = calloc((size_t)p->depth, sizeof *io->ring);
    if (!io->fds || !io->ring) {
        free(io->fds);
        free(io->ring);
        free(io);
        return -ENOMEM;
    }
    for (int i = 0; i < p->n_fds; i++) io->fds[i] = p->fds[i];
    io->p.fds = io->fds;
    pthread_mutex_init(&io->mu, NULL);
    pthread_cond_init(&io->cv, NULL);
    int want = p->depth < PREAD_MAX_THREADS ? p->depth : PREAD_MAX_THREADS;
    for (; io->n_threads < want; io->n_threads++)
        if (pthread_create(&io->threads[io->n_threads], NULL, worker, io)) break;
    if (io->n_threads == 0) {
        pread_close(io);
        return -EAGAIN;
    }
    snprintf(io->desc, sizeof io->desc, "pread, %d threads", io->n_threads);
    *out = io;
    return 0;
}

static int pread_submit(struct xd_xio *io, struct xd_xio_req *const *reqs, int n) {
    pthread_mutex_lock(&io->mu);
    if (io->n + n > io->p.depth) {
        pthread_mutex_unlock(&io->mu);
        return -EOVERFLOW;
    }
    for (int i = 0; i < n; i++) io->ring[(io->head + io->n++) % io->p.depth] = reqs[i];
    if (n == 1) pthread_cond_signal(&io->cv);
    else pthread_cond_broadcast(&io->cv);
    pthread_mutex_unlock(&io->mu);
    return 0;
}

static const char *pread_describe(const struct xd_xio *io) { return io->desc; }

static const struct xd_xio_ops pread_ops = {
    .name = "pread",
    .open = pread_open,
    .submit = pread_submit,
    .close = pread_close,
    .describe = pread_describe,
};

const struct xd_xio_ops *xd_xio_pread_ops(void) { return &pread_ops; }
