/* xc_impl.h - the expert cache's insides, shared by its runtime (expert_cache.c) and its
 * construction (xc_open.c). Private to cache/. */
#ifndef XD_XC_IMPL_H
#define XD_XC_IMPL_H

#include <pthread.h>
#include <stdio.h>
#include <sys/uio.h>

#include "expert_cache.h"
#include "expert_store.h"
#include "lru.h"
#include "xio.h"

enum xd__xc_state {
    XC_FREE = 0,
    XC_READING = 1,
    XC_RESIDENT = 2,
    XC_PINNED = 3,
    XC_ERROR = 4,
};

struct xd__xc_slot {
    uint8_t state;       /* enum xd__xc_state */
    bool prefetched;     /* filled by a prefetch hint, not acquired since */
    bool queued;         /* on the read queue: chunks still to issue */
    bool finishing;      /* all chunks back; checksum/commit running with the lock dropped */
    uint8_t retries;     /* 0 or 1 */
    int32_t key;         /* layer * n_expert + expert; -1 when FREE */
    int32_t part;        /* LRU/free-list partition this slot belongs to */
    int32_t pins;        /* holders and waiters (acquirers, set reservations) */
    int32_t chunks;      /* read requests in flight */
    int32_t region;      /* read cursor: region index and offset in it */
    uint64_t region_off;
    int err;             /* first error of the current attempt */
    uint64_t err_off;    /* file offset it happened at */
    uint64_t t_start_ns; /* when the read began (latency) */
    uint64_t crc_pos;    /* bytes of the checksummed extent verified so far, in order */
    uint32_t crc;        /* CRC-32C of those bytes */
    uint8_t *chunk_ok;   /* [max_chunks]: chunks that have landed, by issue order */
    int32_t n_issued;    /* chunks issued in this attempt (region by region, in order) */
    bool cm_started;     /* streamed commit: a part was started in this attempt */
    int32_t cm_chunk;    /* streamed commit: the next chunk whose landing it has not seen, */
    int32_t cm_region;   /* that chunk's region, */
    uint64_t cm_landed;  /* bytes of that region landed in order, */
    uint64_t cm_sent;    /* and bytes of it passed to commit_part */
    int32_t staging;     /* staging buffer in use, -1 */
    int32_t buf_index;   /* registered buffer holding io, -1 */
    unsigned char *mem;  /* slot memory: the views point here */
    unsigned char *io;   /* where reads land: mem, or a staging buffer */
    struct xd_xs_expert x; /* the reads of the expert (valid from READING on) */
};

struct xd_xc {
    const struct xd_model *m;
    int64_t n_layer, n_expert, n_keys;
    bool resident;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t n_waiting;   /* threads in pthread_cond_wait on cv */
    struct xd_xc_stats st;
    uint8_t *touched;    /* [n_keys] ever acquired */
    uint32_t *hinted;    /* [n_keys] visits[layer] + 1 when hinted for the layer's next visit */
    int32_t *res_pins;   /* resident cache: pins per key */
    int64_t total_pins;
    FILE *trace;
    void (*log)(void *user, const char *line);
    void *log_user;
    struct xd_xc_info info;

    /* offloaded cache */
    struct xd_xs *store;
    enum xd_xc_policy policy;
    enum xd_xc_evict evict;
    bool prefetch;
    int32_t prefetch_layers;
    uint32_t *freq;      /* [n_keys] times each expert was asked for (halved now and then) */
    uint32_t *visits;    /* [n_layer] times each layer asked for experts (halved alike) */
    uint64_t n_visits;   /* since the last halving */
    int64_t cur_layer;   /* layer of the latest acquisition: where the layer cycle stands */
    uint64_t slot_bytes;
    int32_t n_slots;
    struct xd__xc_slot *slots;
    int32_t *where;      /* [n_keys]: slot holding the expert, -1 */
    struct xd__lru lru;  /* RESIDENT slots per partition, oldest first */
    struct xd__lru free; /* FREE slots per partition */
    struct xd_xc_backend be;
    void *pool;
    size_t pool_bytes;
    void *staging;       /* n_staging buffers of slot_bytes, or NULL */
    int32_t n_staging;
    int32_t *staging_free; /* stack of free staging indices */
    int32_t n_staging_free;
    struct iovec *iov;   /* memory registered with the I/O engine */
    int n_iov;
    int32_t bufs_per_iov;
    const struct xd_xio_ops *io_ops;
    struct xd_xio *io;
    struct xd_xio_req *reqs; /* [n_reqs] */
    int32_t *req_free;       /* stack of free request ids */
    int32_t n_reqs, n_req_free;
    int32_t *rq;             /* ring [n_slots]: slots with chunks to issue, FIFO */
    int32_t rq_head, rq_n;
    int32_t *fin;            /* stack [n_slots]: slots whose reads are all back, to finish */
    int32_t n_fin;
    uint32_t chunk;
    int32_t max_chunks;      /* chunks of the largest expert */
    bool streamed;           /* the backend commits by parts (commit_part) */
    uint64_t part_bytes;     /* least bytes per part */
    uint8_t *chunk_flags;    /* [n_slots * max_chunks], the slots' chunk_ok */
    int32_t n_inflight;      /* requests in flight */
    uint64_t busy_since_ns;
    int32_t n_busy;          /* slots READING (finishing included) */
    bool closing;
};

struct xd_xc_set {
    struct xd_xc *xc;
    int64_t layer;
    int32_t n, n_done;
    int32_t *experts; /* [n_expert] */
    uint8_t *st;      /* [n_expert]: SET_WANT, SET_HELD, SET_DONE */
    int32_t *seq;     /* [n_expert]: order in which the held ones were reserved */
    int32_t n_seq;
};

uint64_t xd__xc_now_ns(void);
void xd__xc_logf(const struct xd_xc *xc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The I/O engine's done callback (user = the cache). */
void xd__xc_io_done(void *user, struct xd_xio_req *const *reqs, const int32_t *res, int n);

#endif
