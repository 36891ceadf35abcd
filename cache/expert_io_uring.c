/* expert_io_uring.c - the io_uring I/O engine: batched O_DIRECT reads, reaped on a thread.
 *
 * Shaped like liburing's io_uring-cp example: the submitter prepares one SQE per read and
 * submits the whole batch with one io_uring_enter; a reaper thread sleeps in
 * io_uring_wait_cqe, takes every ready completion with io_uring_for_each_cqe, advances the CQ
 * once and hands the batch to the done callback, so the compute thread never blocks on the
 * ring. The files are registered (IOSQE_FIXED_FILE saves an fget/fput per read) and so is the
 * memory reads land in (READ_FIXED saves pinning pages per read), each when the kernel agrees:
 * registration needs RLIMIT_MEMLOCK headroom or CAP_IPC_LOCK, and a failure only costs those
 * savings, so it is reported by describe() rather than treated as an error. The ring has twice
 * the caller's depth in entries so a batch never finds the SQ full.
 *
 * Why a reaper thread rather than reaping on the compute thread between expert matmuls: the
 * cache is shared by any thread that acquires experts, and a thread waiting for an expert
 * would have to reap completions for everybody (leader/follower) - a thread of our own that
 * only sleeps on the CQ is simpler and costs one wakeup per batch.
 *
 * SQ and CQ are used by different threads, which liburing allows as long as each side has a
 * single user at a time: submit runs under the cache's lock, the CQ is the reaper's alone.
 * Not here: SQPOLL (a polling kernel thread would take a core from compute on small machines),
 * retries and short reads (xio.h: the cache's job).
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xio.h"

#define REAP_BATCH 64
#define REGBUF_MAX ((size_t)1 << 30) /* the kernel's limit on one registered buffer */

struct xd_xio {
    struct io_uring ring;
    struct xd_xio_params p;
    int *fds;
    bool fixed_files, fixed_bufs;
    atomic_bool stop; /* set by close(); the reaper also wakes every 100 ms to look at it */
    pthread_t reaper;
    char desc[96];
};

static void *reap(void *arg) {
    struct xd_xio *io = arg;
    struct xd_xio_req *reqs[REAP_BATCH];
    int32_t res[REAP_BATCH];
    for (bool stop = false; !stop;) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
        int rc = io_uring_wait_cqe_timeout(&io->ring, &cqe, &ts);
        if (rc == -ETIME || rc == -EINTR || rc == -EAGAIN) {
            stop = atomic_load(&io->stop);
            continue;
        }
        if (rc < 0) break; /* the ring is unusable */
        unsigned head, seen = 0;
        int n = 0;
        io_uring_for_each_cqe(&io->ring, head, cqe) {
            struct xd_xio_req *r = io_uring_cqe_get_data(cqe);
            seen++;
            if (!r) {
                stop = true; /* the NOP close() posts */
            } else {
                reqs[n] = r;
                res[n++] = cqe->res;
            }
            if (n == REAP_BATCH) break;
        }
        io_uring_cq_advance(&io->ring, seen);
        if (n) io->p.done(io->p.done_user, reqs, res, n);
    }
    return NULL;
}

/* Submit what is queued in the SQ; transient refusals are retried, so this only fails when the
 * ring itself is broken. */
static int submit_all(struct xd_xio *io) {
    for (int tries = 0;; tries++) {
        int rc = io_uring_submit(&io->ring);
        if (rc >= 0) return 0;
        if ((rc != -EAGAIN && rc != -EBUSY && rc != -EINTR) || tries > 10000) return rc;
        sched_yield();
    }
}

static int uring_submit(struct xd_xio *io, struct xd_xio_req *const *reqs, int n) {
    /* cannot happen with ring entries >= 2 * depth, but a full SQ must not half-queue a batch */
    if (io_uring_sq_space_left(&io->ring) < (unsigned)n) return -EOVERFLOW;
    for (int i = 0; i < n; i++) {
        const struct xd_xio_req *r = reqs[i];
        struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
        int fd = io->fixed_files ? r->file : io->fds[r->file];
        if (io->fixed_bufs && r->buf_index >= 0)
            io_uring_prep_read_fixed(sqe, fd, r->buf, r->len, r->off, r->buf_index);
        else
            io_uring_prep_read(sqe, fd, r->buf, r->len, r->off);
        if (io->fixed_files) sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data(sqe, reqs[i]);
    }
    return submit_all(io);
}

static void uring_close(struct xd_xio *io) {
    if (!io) return;
    atomic_store(&io->stop, true);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring); /* wake the reaper now */
    if (sqe) {
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data(sqe, NULL);
        submit_all(io);
    }
    pthread_join(io->reaper, NULL);
    io_uring_queue_exit(&io->ring); /* also drops the registrations */
    free(io->fds);
    free(io);
}

static int uring_open(const struct xd_xio_params *p, void *user, struct xd_xio **out) {
    (void)user;
    if (p->depth <= 0 || p->n_fds <= 0 || !p->done) return -EINVAL;
    struct xd_xio *io = calloc(1, sizeof *io);
    if (!io) return -ENOMEM;
    io->p = *p;
    io->fds = malloc((size_t)p->n_fds * sizeof *io->fds);
    if (!io->fds) {
        free(io);
        return -ENOMEM;
    }
    memcpy(io->fds, p->fds, (size_t)p->n_fds * sizeof *io->fds);
    io->p.fds = io->fds;
    io->p.bufs = NULL; /* registered below; not needed afterwards */

    unsigned entries = 8;
    while (entries < 2u * (unsigned)p->depth + 1) entries *= 2;
    int rc = io_uring_queue_init(entries, &io->ring, 0);
    if (rc < 0) {
        free(io->fds);
        free(io);
        return rc;
    }
    /* probe: plain reads are needed, fixed reads are a bonus */
    struct io_uring_probe *probe = io_uring_get_probe_ring(&io->ring);
    bool has_read = probe && io_uring_opcode_supported(probe, IORING_OP_READ);
    bool has_read_fixed = probe && io_uring_opcode_supported(probe, IORING_OP_READ_FIXED);
    if (probe) io_uring_free_probe(probe);
    if (!has_read) {
        io_uring_queue_exit(&io->ring);
        free(io->fds);
        free(io);
        return -ENOSYS;
    }
    io->fixed_files = io_uring_register_files(&io->ring, io->fds, (unsigned)p->n_fds) == 0;
    bool bufs_ok = has_read_fixed && p->n_bufs > 0 && p->n_bufs <= 1024;
    for (int i = 0; bufs_ok && i < p->n_bufs; i++) bufs_ok = p->bufs[i].iov_len <= REGBUF_MAX;
    io->fixed_bufs = bufs_ok && io_uring_register_buffers(&io->ring, p->bufs, (unsigned)p->n_bufs) == 0;
    if ((rc = pthread_create(&io->reaper, NULL, reap, io))) {
        io_uring_queue_exit(&io->ring);
        free(io->fds);
        free(io);
        return -rc;
    }
    snprintf(io->desc, sizeof io->desc, "io_uring, %u entries, %s files, %s buffers", entries,
             io->fixed_files ? "registered" : "unregistered",
             io->fixed_bufs ? "registered" : "unregistered");
    *out = io;
    return 0;
}

static const char *uring_describe(const struct xd_xio *io) { return io->desc; }

static const struct xd_xio_ops uring_ops = {
    .name = "io_uring",
    .open = uring_open,
    .submit = uring_submit,
    .close = uring_close,
    .describe = uring_describe,
};

const struct xd_xio_ops *xd_xio_uring_ops(void) { return &uring_ops; }
