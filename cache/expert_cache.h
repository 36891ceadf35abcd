/* expert_cache.h - the only way the MoE layer reaches expert weights.
 *
 * The layer asks for the experts its tokens were routed to and gets 2-D views of each one's
 * gate/up/down matrices plus a pin; it releases each when done. While pinned, a slot is never
 * evicted. Two implementations behind the same calls:
 *   - everything resident (xd_xc_create_resident): views into the model's mmap;
 *   - offloaded (xd_xc_open with a budget): a fixed pool of slots in fast memory, filled from
 *     an expert store on disk (expert_store.h) with O_DIRECT reads through io_uring (or a
 *     pread pool), LRU over (layer, expert) with pin counts, and prefetch.
 *
 * Two ways to acquire: one expert at a time (xd_xc_acquire, blocks until it is resident), or a
 * layer's whole set at once (xd_xc_set_*): the set issues the reads of every missing expert at
 * once and then hands experts back ready-first, so the layer computes resident experts while
 * the misses stream in. Either way results do not depend on the order experts are handed out
 * (the layer sums per (token, slot) in slot order).
 *
 * Slot states (expert_cache.c has the transitions table):
 *   FREE --read--> READING --ok--> RESIDENT <--pin/unpin--> PINNED
 *                          \--error (after one retry)--> ERROR --last waiter gone--> FREE
 *
 * Threads: every call may be made from any thread; the cache has one lock, held only for
 * bookkeeping, never across I/O or checksums. A set belongs to one thread at a time.
 */
#ifndef XD_EXPERT_CACHE_H
#define XD_EXPERT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

struct xd_xio_ops;

struct xd_expert_view {
    struct xd_tensor gate; /* [d_model, n_ff_exp] */
    struct xd_tensor up;   /* [d_model, n_ff_exp] */
    struct xd_tensor down; /* [n_ff_exp, d_model] */
};

/* Expert read latency histogram: bucket i counts reads that took less than
 * xd_xc_lat_bucket_le(i) seconds (and at least bucket i-1's bound); the last is +Inf. */
#define XD_XC_LAT_BUCKETS 16

struct xd_xc_stats {
    uint64_t acquires;        /* experts asked for (single acquires + set entries) */
    uint64_t hits;            /* ... resident (or pinned) when asked for: no wait */
    uint64_t misses;          /* ... not resident: a read was started or still in flight */
    uint64_t bytes_read;      /* bytes read from the store (aligned supersets included) */
    uint64_t evictions;       /* resident experts dropped to make room */
    uint64_t prefetches;      /* experts named in prefetch hints (once per layer visit) */
    uint64_t distinct;        /* distinct (layer, expert) pairs ever acquired */
    uint64_t prefetch_issued; /* reads started by a prefetch hint */
    uint64_t prefetch_hits;   /* acquires served by a prefetched read (done or in flight) */
    uint64_t prefetch_wasted; /* prefetched experts evicted or failed before any acquire */
    uint64_t prefetch_correct; /* hinted experts the layer then asked for (hint accuracy =
                                  prefetch_correct / prefetches) */
    uint64_t reads;           /* expert reads completed successfully */
    uint64_t read_retries;    /* expert reads retried after an error or bad checksum */
    uint64_t read_errors;     /* expert reads failed after the retry (requests failed) */
    uint64_t short_reads;     /* partial reads continued */
    uint64_t eagain;          /* reads requeued after -EAGAIN */
    uint64_t stall_ns;        /* time acquiring threads waited for experts */
    uint64_t io_busy_ns;      /* wall time with at least one read in flight */
    uint64_t read_ns_sum;     /* sum of expert read latencies (submit to verified) */
    uint64_t read_lat[XD_XC_LAT_BUCKETS];
};

/* How the budget is shared: one pool for all layers, or an even share per layer. */
enum xd_xc_policy {
    XD_XC_POLICY_GLOBAL = 0, /* one pool over every (layer, expert) */
    XD_XC_POLICY_LAYER = 1,  /* the pool split evenly between layers */
};

/* Which unpinned expert makes room (within the pool, or the layer's share). */
enum xd_xc_evict {
    XD_XC_EVICT_NEXT_USE = 0, /* the default: largest expected time to next use - the layer's
                                 distance ahead in the layer cycle plus n_layer * (1 - p) / p,
                                 p the expert's routing frequency in its layer (expert_cache.c);
                                 docs/expert-offload.md has the measurements */
    XD_XC_EVICT_LRU = 1,      /* least recently used */
};

enum xd_xc_io {
    XD_XC_IO_AUTO = 0,  /* io_uring, else the pread pool (logged once) */
    XD_XC_IO_URING = 1, /* io_uring or fail */
    XD_XC_IO_PREAD = 2,
};

/* Where slot memory lives and how read bytes get there: supplied by the compute backend.
 * Host backends (CPU) read straight into slots and leave the staging calls NULL. A device
 * backend (CUDA) gives device memory for slots and a commit that copies a verified expert from
 * host staging (pinned memory it allocates, which io_uring registers) into its slot; commit
 * must have finished (or be ordered before any kernel that reads the slot) when it returns.
 *
 * Streamed commit (optional, instead of commit): commit_part starts copying bytes
 * [off, off + len) of a staging buffer to the same offsets of a slot and may return before the
 * copy is done; the cache calls it while the expert is still being read, as its chunks land in
 * file order (at least part_bytes at a time but the last of a region), so the copy trails the
 * read by one part instead of starting after the read's end. commit_wait returns once every
 * part started so far, by any thread, is done; the cache calls it before it publishes the slot
 * or lets the staging buffer go. Parts are started before the checksum is verified: a slot
 * whose read fails is not published, and its retry copies every byte again. Both functions may
 * be called from several threads at once; commit_part is called with the cache's lock held
 * (from the read completions) or without it (a finishing read's last parts), so it must not
 * block on the copy. */
struct xd_xc_backend {
    const char *name;
    void *(*slots_alloc)(void *user, size_t bytes); /* XD_XS_ALIGN-aligned, or NULL */
    void (*slots_free)(void *user, void *p, size_t bytes);
    void *(*staging_alloc)(void *user, size_t bytes); /* NULL: no staging */
    void (*staging_free)(void *user, void *p, size_t bytes);
    int (*commit)(void *user, void *slot, const void *staging, size_t bytes); /* 0 or < 0 */
    int32_t n_staging; /* staging buffers (experts read at once); 0: 4 */
    void *user;
    int (*commit_part)(void *user, void *slot, const void *staging, size_t off, size_t len);
    int (*commit_wait)(void *user); /* 0 or < 0 (the parts' first error) */
    size_t part_bytes; /* least bytes per commit_part but a region's last; 0: 4 MiB */
};

/* Host memory (anonymous mmap). Never NULL. */
const struct xd_xc_backend *xd_xc_backend_host(void);

struct xd_xc_config {
    uint64_t budget;          /* bytes of slot memory; 0: everything resident */
    const char *model_path;   /* the GGUF path (for the default store's name and for
                                 GGUF-direct reads); NULL: the model's own descriptor */
    const char *store;        /* NULL or "auto": MODEL.xdpack if it exists and matches, else
                                 the GGUF; "gguf": the GGUF; else the path of a packed store */
    enum xd_xc_policy policy;
    enum xd_xc_evict evict;
    enum xd_xc_io io;
    bool no_prefetch;         /* ignore prefetch hints */
    int32_t prefetch_layers;  /* how many layers ahead the MoE layer guesses and prefetches;
                                 0: 1 */
    uint32_t read_chunk;      /* bytes per read request, a multiple of 4096; 0: 1 MiB */
    int32_t queue_depth;      /* read requests in flight; 0: 32 */
    const struct xd_xc_backend *backend;  /* NULL: xd_xc_backend_host() */
    const struct xd_xio_ops *io_ops;      /* NULL: by io; tests pass a fault-injecting shim */
    void *io_ops_user;
    const char *trace_path;   /* write every acquire to this file (trace.h format) */
    void (*log)(void *user, const char *line); /* NULL: stderr, "expertd: expert cache: " */
    void *log_user;
};

struct xd_xc;
struct xd_xc_set;

/* An everything-resident cache over m's mapped expert tensors. m must outlive the cache.
 * Returns 0, XD_E_INVALID for a dense model, or XD_E_NOMEM; *out untouched on failure. */
int xd_xc_create_resident(const struct xd_model *m, struct xd_xc **out);
/* The cache a config asks for: resident when budget is 0, else offloaded. Fails (with a
 * message in err, *out untouched) on a budget below the top-k experts of one layer (the
 * message names the minimum), a store that does not match the model, an unusable I/O engine
 * (io = URING only) or no memory. m must outlive the cache. */
int xd_xc_open(const struct xd_model *m, const struct xd_xc_config *cfg, struct xd_xc **out,
               char *err, size_t errlen);
/* Waits for reads in flight, then frees everything. Pins still held are a caller bug (logged). */
void xd_xc_destroy(struct xd_xc *xc);
/* Wait until no read is in flight (prefetches included). Never fails. */
void xd_xc_drain(struct xd_xc *xc);

/* Pin expert of layer and fill *out with its views, reading it first if needed (blocks).
 * Returns 0, XD_E_INVALID, or the read's error after one retry (-EIO, -EBADMSG for a checksum
 * mismatch, XD_E_TRUNCATED, ...); on failure nothing is pinned. */
int xd_xc_acquire(struct xd_xc *xc, int64_t layer, int64_t expert, struct xd_expert_view *out);
/* Unpin; every successful acquire (and every expert a set hands out) is matched by exactly one
 * release. Can't fail; a release without a pin is ignored. */
void xd_xc_release(struct xd_xc *xc, int64_t layer, int64_t expert);
/* Hint that these experts of layer will be acquired soon: reads start for those not resident,
 * as far as unpinned slots allow, without blocking. Never fails. */
void xd_xc_prefetch(struct xd_xc *xc, int64_t layer, const int32_t *experts, int n);
/* True for the everything-resident cache (its views point into the model's mapping). */
bool xd_xc_is_resident(const struct xd_xc *xc);
/* Whether prefetch hints do anything (false for the resident cache), so callers can skip
 * computing them. */
bool xd_xc_wants_prefetch(const struct xd_xc *xc);
/* How many layers ahead the caller should guess and hint (0 when hints are ignored). */
int32_t xd_xc_prefetch_layers(const struct xd_xc *xc);

/* A set: one thread's acquisition of one layer's experts. Created once, reused per layer. */
int xd_xc_set_create(struct xd_xc *xc, struct xd_xc_set **out); /* 0 or XD_E_NOMEM */
void xd_xc_set_destroy(struct xd_xc_set *s);                    /* ends it first */
/* Start acquiring experts[0..n) of layer (distinct ids): pins those resident and issues reads
 * for the missing ones as far as slots allow; with next-use eviction a miss may instead wait
 * for the slot of an expert the set holds (it is released within the layer) rather than evict
 * one needed sooner, except for up to XD_XC_SET_FORCED_READS reads while the set holds no
 * resident expert (expert_cache.c: reserve). Never blocks. 0 or XD_E_INVALID (then the set is
 * empty). A set still in progress is ended first. */
#define XD_XC_SET_FORCED_READS 2
int xd_xc_set_begin(struct xd_xc_set *s, int64_t layer, const int32_t *experts, int n);
/* Hand out the next ready expert (resident ones first, then as reads complete, waiting if
 * none is ready): returns 1 with *expert and *view filled and a pin to release with
 * xd_xc_release; 0 when all have been handed out; or a read's error (the set is then ended). */
int xd_xc_set_next(struct xd_xc_set *s, int32_t *expert, struct xd_expert_view *view);
/* Drop the pins of experts not yet handed out. Idempotent; never fails. */
void xd_xc_set_end(struct xd_xc_set *s);

/* Live counters (racy when other threads use the cache: use xd_xc_stats_get there). */
const struct xd_xc_stats *xd_xc_stats(const struct xd_xc *xc);
/* A consistent copy of the counters, taken under the lock. */
void xd_xc_stats_get(const struct xd_xc *xc, struct xd_xc_stats *out);
/* Upper bound in seconds of latency bucket i (INFINITY for the last). */
double xd_xc_lat_bucket_le(int i);
/* Resident (or pinned) experts of each layer into out[0..n_layer); the resident cache reports
 * every expert. */
void xd_xc_resident_per_layer(const struct xd_xc *xc, uint32_t *out);
/* Total pins outstanding (0 between forward passes); for invariant checks and tests. */
int64_t xd_xc_pinned(const struct xd_xc *xc);

/* Configuration the cache ended up with, for logs and `run --json`. */
struct xd_xc_info {
    bool offloaded;
    uint64_t budget, slot_bytes, expert_bytes;
    int32_t n_slots;
    const char *store_kind, *store_path, *io, *policy, *evict;
    bool direct;
};
void xd_xc_info(const struct xd_xc *xc, struct xd_xc_info *out);
/* One line for logs: "expert cache 89.25 MiB = 7 slots of 11.17 MiB (experts are 11.16 MiB
 * each), store gguf PATH (O_DIRECT), io ..., policy global, evict next-use"; "" for the
 * resident cache. Returns buf. */
const char *xd_xc_describe(const struct xd_xc *xc, char *buf, size_t n);

/* Check every state invariant (expert_cache.c lists them). 0, or XD_E_INVALID with the first
 * violation logged. Takes the lock; used inside assert() and by the fault tests after every
 * step. */
int xd_xc_check_invariants(const struct xd_xc *xc);

/* Parse a budget: plain bytes, or a number (decimals allowed) with K/M/G/T (powers of 1000)
 * or KiB/MiB/GiB/TiB (powers of 1024), case-insensitive, optional "B" ("1.5GiB", "800M",
 * "3MiB", "4096"). 0 or XD_E_INVALID; *out untouched on failure. */
int xd_xc_parse_size(const char *s, uint64_t *out);
/* Format bytes as "1.50 GiB" / "208.0 KiB" into buf; returns buf. */
const char *xd_xc_format_size(uint64_t bytes, char *buf, size_t n);
/* Apply one command-line option of the expert cache to cfg, so `run` and `serve` accept the
 * same ones: --expert-cache SIZE, --expert-store S, --expert-policy P, --expert-evict E,
 * --expert-io IO, --expert-chunk SIZE, --expert-qd N, --expert-prefetch-layers N,
 * --expert-trace FILE, --no-prefetch. val is the next argument (NULL if there is none).
 * Returns 0 when flag is not one of them, 1 when it used flag alone, 2 when it used flag and
 * val, or XD_E_INVALID with a message in err (missing or bad value). cfg keeps pointers to
 * val (argv strings). */
int xd_xc_config_option(struct xd_xc_config *cfg, const char *flag, const char *val, char *err,
                        size_t errlen);
/* The argv loop's form of xd_xc_config_option: looks at argv[*i] (and argv[*i + 1]); when it is
 * one of those options, applies it and leaves *i on the last argument it used. Returns 1 (used),
 * 0 (not an expert-cache option: nothing changed) or -1 after printing "expertd CMD: why" to
 * stderr. */
int xd_xc_config_argv(struct xd_xc_config *cfg, const char *cmd, int argc, char **argv, int *i);
/* Help text for those options, one per line, indented by two spaces, for --help. */
const char *xd_xc_config_usage(void);

/* Names for the enums ("global"/"layer", "auto"/"uring"/"pread"), and parsers: 0 or
 * XD_E_INVALID. */
int xd_xc_policy_parse(const char *s, enum xd_xc_policy *out);
int xd_xc_evict_parse(const char *s, enum xd_xc_evict *out); /* "lru", "next-use" */
int xd_xc_io_parse(const char *s, enum xd_xc_io *out);

#endif
