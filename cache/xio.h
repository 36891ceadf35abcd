/* xio.h - the expert cache's I/O engines: one small ops table, two implementations and a seam.
 *
 * An engine takes positioned reads (file index, offset, buffer, length) and reports each one's
 * result exactly once through the done callback given at open: the bytes read (possibly fewer
 * than asked), 0 at end of file, or a negative errno (-EAGAIN included). It does not retry,
 * requeue or check anything: short reads, -EAGAIN and retries are the cache's job
 * (expert_cache.c), so a test can put a fault-injecting table between the cache and a real
 * engine (tests/test_xc_fault.c) and every recovery path runs for real.
 *
 *   xd_xio_uring_ops()  io_uring: registered files and buffers, one submit per batch, a reaper
 *                       thread that hands completions over in batches (expert_io_uring.c)
 *   xd_xio_pread_ops()  a pool of threads doing pread(2): the fallback where io_uring is
 *                       missing or forbidden (expert_io_pread.c)
 *
 * Threading: submit is called by one thread at a time (the cache holds its lock), possibly
 * from inside the done callback; done is called from the engine's own thread(s), never from
 * inside submit, with no engine lock held, so it may take the caller's locks and submit again.
 */
#ifndef XD_XIO_H
#define XD_XIO_H

#include <stdint.h>
#include <sys/uio.h>

struct xd_xio;

/* One positioned read. The engine reads only file, off, buf, len and buf_index; the rest of
 * the struct is the submitter's. */
struct xd_xio_req {
    int32_t file;      /* index into xd_xio_params.fds */
    int32_t buf_index; /* index of the registered buffer holding [buf, buf+len), or -1 */
    uint64_t off;
    void *buf;
    uint32_t len;
    /* the submitter's bookkeeping */
    uint32_t need;   /* bytes of [buf, buf+len) that must be read (less only at end of file) */
    int32_t slot;    /* cache slot the bytes are for */
    int32_t id;      /* index in the submitter's pool */
    int32_t chunk;   /* chunk index within a checksummed extent, -1 when not checksummed */
    uint32_t n_again; /* times requeued after -EAGAIN */
};

/* Results of n reads: res[i] belongs to reqs[i]. */
typedef void (*xd_xio_done_cb)(void *user, struct xd_xio_req *const *reqs, const int32_t *res,
                               int n);

struct xd_xio_params {
    const int *fds;           /* files reads may name (opened by the caller, O_DIRECT) */
    int n_fds;
    const struct iovec *bufs; /* memory reads land in, for buffer registration; may be ignored */
    int n_bufs;
    int depth;                /* most reads the caller keeps in flight */
    xd_xio_done_cb done;
    void *done_user;
};

struct xd_xio_ops {
    const char *name;
    /* Start an engine. 0, or a negative errno (io_uring: -ENOSYS/-EPERM where it is not
     * available, which makes the cache fall back to pread); *out untouched on failure. user is
     * the ops table's own argument (the fault shim's configuration), NULL for the real ones. */
    int (*open)(const struct xd_xio_params *p, void *user, struct xd_xio **out);
    /* Queue n reads (n <= depth minus those in flight) and start them. 0, or a negative errno
     * when none of them was queued (the caller then fails them itself). */
    int (*submit)(struct xd_xio *io, struct xd_xio_req *const *reqs, int n);
    /* Stop and free. The caller has no reads in flight. */
    void (*close)(struct xd_xio *io);
    /* One-line description of what open set up ("io_uring, 2 fixed files, 12 fixed buffers"),
     * for logs; may be NULL. */
    const char *(*describe)(const struct xd_xio *io);
};

const struct xd_xio_ops *xd_xio_uring_ops(void);
const struct xd_xio_ops *xd_xio_pread_ops(void);

#endif
