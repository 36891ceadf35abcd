/* expert_cache.c - the expert cache at run time: slots, their states, pins, LRU and the reads
 * that fill them.
 *
 * A fixed pool of slots, each big enough for any expert, holds the experts that are resident;
 * everything else is on disk. Acquiring an expert pins its slot (reading it first on a miss,
 * evicting the least recently used unpinned slot if none is free); releasing unpins it. A
 * layer's whole set is acquired at once (xd_xc_set_*) so its misses are all in flight while
 * its resident experts compute, and prefetch hints start reads for a later layer's likely
 * experts. Reads are split into chunks (1 MiB by default) so one expert keeps many requests in
 * flight; completions arrive on the I/O engine's thread(s) (xd__xc_io_done), which requeue
 * -EAGAIN and short reads, verify the checksum and move the slot on. The main trade-off is one
 * lock for everything: acquire/release are a few hundred nanoseconds of bookkeeping next to
 * milliseconds of matmul per expert, so a finer scheme would buy nothing measurable; the lock
 * is never held across I/O or a backend copy. The checksum is extended chunk by chunk as the
 * chunks land in order, under the lock (one 1 MiB chunk is ~0.1 ms of CRC; a burst after an
 * out-of-order completion is bounded by the requests in flight): verifying the whole expert
 * after its last byte put ~5 ms per 37 MB miss on the critical path and cost 8-10% of decode
 * speed on the benchmark; this way it overlaps the rest of the read.
 *
 * Design invariants (checked by check_locked, inside assert() after every public call and by
 * the fault tests after every step):
 *   1. where[key] == s  <=>  slots[s].key == key, for every slot not FREE.
 *   2. A slot is on the LRU list iff it is RESIDENT, and on the free list iff it is FREE; only
 *      LRU slots are ever evicted, so a pinned (or reading) slot is never evicted.
 *   3. RESIDENT => pins == 0;  PINNED => pins > 0;  ERROR => pins > 0 (a waiter has yet to see
 *      the error);  FREE => pins == 0, key == -1, no reads in flight.
 *   4. The sum of all pins is total_pins; the requests in flight are the sum of the slots'
 *      chunks, and free requests + in flight = all requests.
 *   5. A slot is on the read queue iff it is READING with chunks still to issue; a slot on the
 *      finish list is READING with nothing in flight and nothing left to issue.
 *
 * Slot states and transitions (function doing each):
 *
 *        take_slot+start_read               finish_read (ok, pins == 0)
 *   FREE ---------------------> READING ----------------------------> RESIDENT
 *    ^                          |  |  ^                                 |   ^
 *    |  finish_read (failed,    |  |  | finish_read (error, 1st time):  |   | unpin
 *    |  nobody waiting)         |  |  +-- retry: begin_reads            pin |  (last)
 *    +--------------------------+  |                                     v   |
 *    |          finish_read (ok, pins > 0)                              PINNED
 *    |                             +------------------------------------^
 *    |   unpin (last waiter)       | finish_read (error after retry, pins > 0)
 *    +------------------------ ERROR <-+
 *   RESIDENT --evict (take_slot)--> READING of another expert (through FREE, same call).
 *
 * Not here: construction and budget sizing (xc_open.c), the stores (expert_store.c), the I/O
 * engines (expert_io_*.c), the everything-resident fast path's setup (xc_open.c).
 */
#include "xc_impl.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "xd_error.h"

enum { SET_WANT = 0, SET_HELD = 1, SET_DONE = 2 };

#define MAX_EAGAIN 16   /* requeues of one request after -EAGAIN before it counts as an error */
#define PUMP_BATCH 64   /* requests submitted per engine call */

uint64_t xd__xc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void xd__xc_logf(const struct xd_xc *xc, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (xc->log) xc->log(xc->log_user, line);
    else fprintf(stderr, "expertd: expert cache: %s\n", line);
}

static void lock(const struct xd_xc *xc) { pthread_mutex_lock((pthread_mutex_t *)&xc->mu); }
static void unlock(const struct xd_xc *xc) { pthread_mutex_unlock((pthread_mutex_t *)&xc->mu); }

static void wake(struct xd_xc *xc) {
    if (xc->n_waiting > 0) pthread_cond_broadcast(&xc->cv);
}

/* Wait for a state change; the time counts as compute stall. */
static void wait_change(struct xd_xc *xc) {
    uint64_t t0 = xd__xc_now_ns();
    xc->n_waiting++;
    pthread_cond_wait(&xc->cv, &xc->mu);
    xc->n_waiting--;
    xc->st.stall_ns += xd__xc_now_ns() - t0;
}

/* ---- invariants ------------------------------------------------------------------------- */

static int bad(const struct xd_xc *xc, char *why, size_t n, const char *what, int32_t s) {
    if (why) snprintf(why, n, "%s (slot %d)", what, s);
    (void)xc;
    return XD_E_INVALID;
}

static int check_locked(const struct xd_xc *xc, char *why, size_t n) {
    if (xc->resident) {
        int64_t sum = 0;
        for (int64_t k = 0; k < xc->n_keys; k++) {
            if (xc->res_pins[k] < 0) return bad(xc, why, n, "negative pin count", -1);
            sum += xc->res_pins[k];
        }
        return sum == xc->total_pins ? 0 : bad(xc, why, n, "pin total mismatch", -1);
    }
    if (xd__lru_check(&xc->lru) || xd__lru_check(&xc->free))
        return bad(xc, why, n, "broken list", -1);
    int64_t pins = 0;
    int32_t chunks = 0, queued = 0, busy = 0;
    for (int32_t s = 0; s < xc->n_slots; s++) {
        const struct xd__xc_slot *sl = &xc->slots[s];
        bool on_lru = xd__lru_part_of(&xc->lru, s) >= 0, on_free = xd__lru_part_of(&xc->free, s) >= 0;
        if (sl->pins < 0 || sl->chunks < 0) return bad(xc, why, n, "negative count", s);
        pins += sl->pins;
        chunks += sl->chunks;
        queued += sl->queued;
        if (on_lru != (sl->state == XC_RESIDENT)) return bad(xc, why, n, "LRU membership", s);
        if (on_free != (sl->state == XC_FREE)) return bad(xc, why, n, "free-list membership", s);
        if ((on_lru && xd__lru_part_of(&xc->lru, s) != sl->part) ||
            (on_free && xd__lru_part_of(&xc->free, s) != sl->part))
            return bad(xc, why, n, "listed in another partition", s);
        if (sl->queued && sl->state != XC_READING) return bad(xc, why, n, "queued, not reading", s);
        if (sl->cm_started && sl->state != XC_READING) return bad(xc, why, n, "copy parts, not reading", s);
        if (sl->chunks && sl->state != XC_READING) return bad(xc, why, n, "I/O, not reading", s);
        busy += sl->state == XC_READING;
        switch (sl->state) {
        case XC_FREE:
            if (sl->key != -1 || sl->pins) return bad(xc, why, n, "FREE slot holds something", s);
            break;
        case XC_RESIDENT:
            if (sl->pins) return bad(xc, why, n, "RESIDENT slot is pinned", s);
            break;
        case XC_PINNED:
        case XC_ERROR:
            if (sl->pins <= 0) return bad(xc, why, n, "PINNED/ERROR slot without pins", s);
            break;
        case XC_READING: break;
        default: return bad(xc, why, n, "unknown state", s);
        }
        if (sl->state != XC_FREE &&
            (sl->key < 0 || sl->key >= xc->n_keys || xc->where[sl->key] != s))
            return bad(xc, why, n, "slot and expert map disagree", s);
    }
    for (int64_t k = 0; k < xc->n_keys; k++) {
        int32_t s = xc->where[k];
        if (s >= 0 && (s >= xc->n_slots || xc->slots[s].key != k))
            return bad(xc, why, n, "expert map points at a slot holding another expert", s);
    }
    if (pins != xc->total_pins) return bad(xc, why, n, "pin total mismatch", -1);
    if (chunks != xc->n_inflight || xc->n_inflight + xc->n_req_free != xc->n_reqs)
        return bad(xc, why, n, "request accounting", -1);
    if (queued != xc->rq_n) return bad(xc, why, n, "read queue accounting", -1);
    for (int32_t i = 0; i < xc->n_fin; i++) {
        const struct xd__xc_slot *sl = &xc->slots[xc->fin[i]];
        if (sl->state != XC_READING || sl->chunks || sl->queued)
            return bad(xc, why, n, "slot to finish still has reads", xc->fin[i]);
    }
    if (busy != xc->n_busy) return bad(xc, why, n, "busy slot count", -1);
    return 0;
}

int xd_xc_check_invariants(const struct xd_xc *xc) {
    char why[128] = "";
    lock(xc);
    int rc = check_locked(xc, why, sizeof why);
    unlock(xc);
    if (rc) xd__xc_logf(xc, "invariant violated: %s", why);
    return rc;
}

#define ASSERT_INVARIANTS(xc) assert(check_locked((xc), NULL, 0) == 0)

/* ---- slots ------------------------------------------------------------------------------ */

static int32_t part_of_layer(const struct xd_xc *xc, int64_t layer) {
    return xc->policy == XD_XC_POLICY_LAYER ? (int32_t)layer : 0;
}

static void free_slot(struct xd_xc *xc, int32_t s) {
    struct xd__xc_slot *sl = &xc->slots[s];
    if (sl->key >= 0) xc->where[sl->key] = -1;
    if (sl->prefetched) xc->st.prefetch_wasted++;
    sl->key = -1;
    sl->prefetched = false;
    sl->state = XC_FREE;
    xd__lru_push(&xc->free, sl->part, s);
    wake(xc);
}

/* Expected layer steps until (layer, expert) is asked for again, if routing were independent
 * from token to token: first the layer's turn must come round (1..n_layer steps from the
 * current layer; a full cycle for the current one), then each of its turns picks the expert
 * with probability p, estimated from counts with a prior of k/n_expert worth one visit; the
 * turns until it does are geometric, n_layer * (1 - p) / p steps on average. This is
 * Belady's rule ("evict what is needed furthest in the future") with the future replaced by
 * its expectation. Why not LRU alone: layers are visited in a fixed cycle, so the least
 * recently used expert is the one whose layer comes next - exactly the wrong victim, and
 * what a prefetch for the next layer would otherwise evict. */
static int64_t turns_until(const struct xd_xc *xc, int64_t layer) {
    const int64_t nl = xc->n_layer;
    return ((layer - xc->cur_layer - 1) % nl + nl) % nl + 1;
}

static double next_use(const struct xd_xc *xc, int64_t key) {
    const int64_t l = key / xc->n_expert, nl = xc->n_layer, d = turns_until(xc, l);
    const double k = (double)xc->m->hp.n_expert_used / (double)xc->n_expert;
    double p = ((double)xc->freq[key] + k) / ((double)xc->visits[l] + 1.0);
    p = p < 1e-6 ? 1e-6 : p > 1.0 ? 1.0 : p;
    return (double)d + (double)nl * (1.0 - p) / p;
}

/* The evictable slot of partition p with the largest expected time to next use (in *t); a
 * prefetched expert not yet asked for is taken only when nothing else is evictable; ties go to
 * the least recently used. -1 when none. */
static int32_t victim_next_use(const struct xd_xc *xc, int32_t p, double *t_out) {
    int32_t best = -1;
    double best_t = 0;
    bool best_pf = true;
    for (int32_t s = xd__lru_oldest(&xc->lru, p); s >= 0; s = xc->lru.next[s]) {
        const bool pf = xc->slots[s].prefetched;
        const double t = next_use(xc, xc->slots[s].key);
        if (best < 0 || (best_pf && !pf) || (pf == best_pf && t > best_t)) {
            best = s;
            best_t = t;
            best_pf = pf;
        }
    }
    *t_out = best_t;
    return best;
}

/* A layer asks for experts: the cycle advances, and the frequency counts age by halving
 * every 1024 rounds of the layer cycle, so a shift in what the prompts route to is followed. */
static void visit(struct xd_xc *xc, int64_t layer) {
    xc->cur_layer = layer;
    xc->visits[layer]++;
    if (++xc->n_visits < 1024u * (uint64_t)xc->n_layer) return;
    xc->n_visits = 0;
    for (int64_t k = 0; k < xc->n_keys; k++) xc->freq[k] /= 2, xc->hinted[k] = 0;
    for (int64_t l = 0; l < xc->n_layer; l++) xc->visits[l] /= 2;
}

/* A slot for an expert of layer without waiting: a free one, else an unpinned resident one
 * (evicted) chosen by the eviction policy. With next-use eviction the victim's expected next
 * use must be at least floor (-INFINITY: any victim). -1 when every slot of the partition is
 * pinned or being read, or the best victim is needed sooner than floor. */
static int32_t take_slot(struct xd_xc *xc, int64_t layer, double floor) {
    int32_t p = part_of_layer(xc, layer);
    int32_t s = xd__lru_oldest(&xc->free, p);
    if (s >= 0) {
        xd__lru_remove(&xc->free, s);
        return s;
    }
    if (xc->evict == XD_XC_EVICT_NEXT_USE) {
        double t;
        s = victim_next_use(xc, p, &t);
        if (s >= 0 && t < floor) return -1;
    } else {
        s = xd__lru_oldest(&xc->lru, p);
    }
    if (s < 0) return -1;
    struct xd__xc_slot *sl = &xc->slots[s];
    xd__lru_remove(&xc->lru, s);
    xc->where[sl->key] = -1;
    if (sl->prefetched) xc->st.prefetch_wasted++;
    sl->prefetched = false;
    sl->key = -1;
    sl->state = XC_FREE;
    xc->st.evictions++;
    return s;
}

static void pin(struct xd_xc *xc, int32_t s) {
    struct xd__xc_slot *sl = &xc->slots[s];
    sl->pins++;
    xc->total_pins++;
    if (sl->state == XC_RESIDENT) {
        xd__lru_remove(&xc->lru, s);
        sl->state = XC_PINNED;
    }
}

static void unpin(struct xd_xc *xc, int32_t s) {
    struct xd__xc_slot *sl = &xc->slots[s];
    sl->pins--;
    xc->total_pins--;
    if (sl->pins > 0) return;
    if (sl->state == XC_PINNED) {
        sl->state = XC_RESIDENT;
        xd__lru_push(&xc->lru, sl->part, s);
        wake(xc);
    } else if (sl->state == XC_ERROR) {
        free_slot(xc, s);
    }
}

/* Count an expert being asked for: hit or miss by the state of its slot (-1: none). */
static void count_access(struct xd_xc *xc, int64_t key, int32_t s) {
    xc->st.acquires++;
    xc->freq[key]++;
    if (!xc->touched[key]) {
        xc->touched[key] = 1;
        xc->st.distinct++;
    }
    if (xc->hinted[key] && xc->hinted[key] == xc->visits[key / xc->n_expert]) {
        xc->hinted[key] = 0; /* a hint made for this visit of the layer came true */
        xc->st.prefetch_correct++;
    }
    if (xc->resident ||
        (s >= 0 && (xc->slots[s].state == XC_RESIDENT || xc->slots[s].state == XC_PINNED)))
        xc->st.hits++;
    else
        xc->st.misses++;
    if (s >= 0 && xc->slots[s].prefetched) {
        xc->slots[s].prefetched = false;
        xc->st.prefetch_hits++;
    }
}

/* ---- reads ------------------------------------------------------------------------------ */

static void rq_push(struct xd_xc *xc, int32_t s) {
    xc->rq[(xc->rq_head + xc->rq_n++) % xc->n_slots] = s;
    xc->slots[s].queued = true;
}

static void rq_pop(struct xd_xc *xc) {
    xc->slots[xc->rq[xc->rq_head]].queued = false;
    xc->rq_head = (xc->rq_head + 1) % xc->n_slots;
    xc->rq_n--;
}

/* (Re)start reading the slot's expert from its first region. */
static void begin_reads(struct xd_xc *xc, int32_t s) {
    struct xd__xc_slot *sl = &xc->slots[s];
    sl->region = 0;
    sl->region_off = 0;
    sl->err = 0;
    sl->err_off = 0;
    sl->crc_pos = 0;
    sl->crc = 0;
    sl->n_issued = 0;
    sl->cm_started = false;
    sl->cm_chunk = 0;
    sl->cm_region = 0;
    sl->cm_landed = 0;
    sl->cm_sent = 0;
    memset(sl->chunk_ok, 0, (size_t)xc->max_chunks);
    rq_push(xc, s);
}

static void start_read(struct xd_xc *xc, int32_t s, int64_t key, bool prefetch) {
    struct xd__xc_slot *sl = &xc->slots[s];
    sl->key = (int32_t)key;
    xc->where[key] = s;
    sl->state = XC_READING;
    sl->prefetched = prefetch;
    sl->retries = 0;
    sl->t_start_ns = xd__xc_now_ns();
    xd_xs_expert(xc->store, key / xc->n_expert, key % xc->n_expert, &sl->x);
    xc->n_busy++;
    begin_reads(xc, s);
}

static void inflight_add(struct xd_xc *xc, int32_t d) {
    uint64_t now = 0;
    if (xc->n_inflight == 0 && d > 0) xc->busy_since_ns = xd__xc_now_ns();
    xc->n_inflight += d;
    if (xc->n_inflight == 0 && d < 0) {
        now = xd__xc_now_ns();
        xc->st.io_busy_ns += now - xc->busy_since_ns;
    }
}

static void complete_req(struct xd_xc *xc, struct xd_xio_req *r, int32_t res);

/* Issue chunks of queued slots while requests are free. */
static void pump(struct xd_xc *xc) {
    for (;;) {
        struct xd_xio_req *batch[PUMP_BATCH];
        int nb = 0;
        while (nb < PUMP_BATCH && xc->rq_n > 0 && xc->n_req_free > 0) {
            int32_t s = xc->rq[xc->rq_head];
            struct xd__xc_slot *sl = &xc->slots[s];
            if (sl->err) { /* an earlier chunk failed: issue no more, finish when all are back */
                rq_pop(xc);
                if (sl->chunks == 0) xc->fin[xc->n_fin++] = s;
                continue;
            }
            if (sl->staging < 0 && xc->staging) {
                if (xc->n_staging_free == 0) break; /* FIFO: wait for a staging buffer */
                sl->staging = xc->staging_free[--xc->n_staging_free];
                sl->io = (unsigned char *)xc->staging + (size_t)sl->staging * xc->slot_bytes;
                sl->buf_index = xc->n_iov ? sl->staging / xc->bufs_per_iov : -1;
            }
            const struct xd_xs_region *rg = &sl->x.r[sl->region];
            uint64_t left = rg->len - sl->region_off;
            uint32_t len = left < xc->chunk ? (uint32_t)left : xc->chunk;
            struct xd_xio_req *r = &xc->reqs[xc->req_free[--xc->n_req_free]];
            r->file = 0;
            r->buf_index = sl->buf_index;
            r->off = rg->off + sl->region_off;
            r->buf = sl->io + rg->slot_off + sl->region_off;
            r->len = len;
            r->need = rg->need > sl->region_off
                          ? (uint32_t)(rg->need - sl->region_off < len ? rg->need - sl->region_off : len)
                          : 0;
            r->slot = s;
            r->n_again = 0;
            assert(sl->n_issued < xc->max_chunks);
            r->chunk = sl->n_issued++; /* region 0's chunks first: chunk i starts at i * chunk */
            sl->region_off += len;
            if (sl->region_off == rg->len) {
                sl->region++;
                sl->region_off = 0;
                if (sl->region == sl->x.n_regions) rq_pop(xc);
            }
            sl->chunks++;
            inflight_add(xc, 1);
            batch[nb++] = r;
        }
        if (nb == 0) break;
        int rc = xc->io_ops->submit(xc->io, batch, nb);
        if (rc < 0)
            for (int i = 0; i < nb; i++) complete_req(xc, batch[i], rc);
    }
}

static void finish_read(struct xd_xc *xc, int32_t s);

/* Extend the slot's checksum over the chunks that have landed in order. */
static void advance_crc(struct xd_xc *xc, struct xd__xc_slot *sl) {
    const struct xd_xs_region *r0 = &sl->x.r[0];
    while (sl->crc_pos < r0->len && sl->chunk_ok[sl->crc_pos / xc->chunk]) {
        uint64_t n = r0->len - sl->crc_pos < xc->chunk ? r0->len - sl->crc_pos : xc->chunk;
        sl->crc = xd_crc32c(sl->crc, sl->io + r0->slot_off + sl->crc_pos, n);
        sl->crc_pos += n;
    }
}

/* Streamed commit: walk the chunks that have landed in issue order and pass each region's
 * landed bytes to the backend's commit_part once there are part_bytes of them, or the region
 * is complete; with all, pass whatever of the expert is left (every chunk is back). Called
 * with the lock held from the completions, and without it from finish_read, when the slot is
 * finishing and no one else touches it. 0, or commit_part's error. */
static int advance_commit(struct xd_xc *xc, struct xd__xc_slot *sl, bool all) {
    while (sl->cm_region < sl->x.n_regions) {
        const struct xd_xs_region *rg = &sl->x.r[sl->cm_region];
        while (sl->cm_landed < rg->len &&
               (all || (sl->cm_chunk < sl->n_issued && sl->chunk_ok[sl->cm_chunk]))) {
            uint64_t left = rg->len - sl->cm_landed;
            sl->cm_landed += left < xc->chunk ? left : xc->chunk;
            sl->cm_chunk++;
        }
        const bool whole = sl->cm_landed == rg->len;
        if (sl->cm_landed > sl->cm_sent && (whole || sl->cm_landed - sl->cm_sent >= xc->part_bytes)) {
            sl->cm_started = true;
            int rc = xc->be.commit_part(xc->be.user, sl->mem, sl->io, rg->slot_off + sl->cm_sent,
                                        sl->cm_landed - sl->cm_sent);
            if (rc < 0) return rc;
            sl->cm_sent = sl->cm_landed;
        }
        if (!whole) return 0;
        sl->cm_region++;
        sl->cm_landed = 0;
        sl->cm_sent = 0;
    }
    return 0;
}

/* Give a request back and let its slot finish if it was the last. */
static void chunk_done(struct xd_xc *xc, struct xd_xio_req *r, int err) {
    struct xd__xc_slot *sl = &xc->slots[r->slot];
    if (err && !sl->err) {
        sl->err = err;
        sl->err_off = r->off;
    }
    if (!err && !sl->err) sl->chunk_ok[r->chunk] = 1; /* checksummed and committed later */
    xc->req_free[xc->n_req_free++] = r->id;
    inflight_add(xc, -1);
    sl->chunks--;
    if (sl->chunks == 0 && !sl->queued) xc->fin[xc->n_fin++] = r->slot;
    else if (sl->chunks == 0 && sl->err) {
        /* still queued with chunks unissued: drop it from the queue now */
        for (int32_t i = 0; i < xc->rq_n; i++) {
            int32_t at = (xc->rq_head + i) % xc->n_slots;
            if (xc->rq[at] != r->slot) continue;
            for (int32_t j = i; j + 1 < xc->rq_n; j++)
                xc->rq[(xc->rq_head + j) % xc->n_slots] = xc->rq[(xc->rq_head + j + 1) % xc->n_slots];
            xc->rq_n--;
            sl->queued = false;
            break;
        }
        xc->fin[xc->n_fin++] = r->slot;
    }
}

static void resubmit(struct xd_xc *xc, struct xd_xio_req *r) {
    struct xd_xio_req *one = r;
    int rc = xc->io_ops->submit(xc->io, &one, 1);
    if (rc < 0) chunk_done(xc, r, rc);
}

/* One request's result: requeue -EAGAIN and short reads, else the chunk is done. */
static void complete_req(struct xd_xc *xc, struct xd_xio_req *r, int32_t res) {
    bool direct = xd_xs_direct(xc->store);
    if (res == -EAGAIN || res == -EINTR) {
        xc->st.eagain++;
        if (++r->n_again <= MAX_EAGAIN) {
            resubmit(xc, r);
            return;
        }
        chunk_done(xc, r, -EAGAIN);
        return;
    }
    if (res < 0) {
        chunk_done(xc, r, res);
        return;
    }
    uint32_t got = (uint32_t)res;
    if (got > r->len) {
        chunk_done(xc, r, -EIO);
        return;
    }
    xc->st.bytes_read += got;
    if (got == r->len || got >= r->need) {
        chunk_done(xc, r, 0); /* done, or the file ended after the bytes that matter */
        return;
    }
    if (got == 0 || (direct && got % XD_XS_ALIGN)) {
        /* end of file before the expert's end (an unaligned O_DIRECT count only happens at
         * the end of the file): the store is truncated */
        chunk_done(xc, r, XD_E_TRUNCATED);
        return;
    }
    xc->st.short_reads++;
    r->off += got;
    r->buf = (char *)r->buf + got;
    r->len -= got;
    r->need -= got;
    r->n_again = 0;
    resubmit(xc, r);
}

static void latency(struct xd_xc *xc, uint64_t ns) {
    xc->st.read_ns_sum += ns;
    int b = 0;
    while (b < XD_XC_LAT_BUCKETS - 1 && (double)ns * 1e-9 >= xd_xc_lat_bucket_le(b)) b++;
    xc->st.read_lat[b]++;
}

static uint64_t read_bytes(const struct xd_xs_expert *x) {
    uint64_t n = 0;
    for (int i = 0; i < x->n_regions; i++) n += x->r[i].len;
    return n;
}

/* Every chunk of the slot's read is back: verify, commit, and move the slot on. The checksum
 * is normally complete by now (advance_crc); what is left of it (chunks that landed out of
 * order) and the backend's commit run with the lock dropped; the slot stays READING
 * meanwhile, which nobody else touches. */
static void finish_read(struct xd_xc *xc, int32_t s) {
    struct xd__xc_slot *sl = &xc->slots[s];
    const struct xd_xs_region *r0 = &sl->x.r[0];
    const bool crc_left = sl->x.has_crc && sl->crc_pos < r0->len;
    /* started parts read the staging buffer: wait for them even when the read failed */
    if ((!sl->err && (crc_left || xc->staging)) || sl->cm_started) {
        sl->finishing = true;
        const int read_err = sl->err;
        unlock(xc);
        int err = 0;
        if (!read_err) {
            uint32_t crc = sl->crc;
            if (crc_left) crc = xd_crc32c(crc, sl->io + r0->slot_off + sl->crc_pos, r0->len - sl->crc_pos);
            if (sl->x.has_crc && crc != sl->x.crc) err = -EBADMSG;
        }
        if (!read_err && !err && xc->streamed) {
            err = advance_commit(xc, sl, true);
        } else if (!read_err && !err && xc->staging) {
            int rc = xc->be.commit(xc->be.user, sl->mem, sl->io, read_bytes(&sl->x));
            if (rc < 0) err = rc;
        }
        if (sl->cm_started) {
            int rc = xc->be.commit_wait(xc->be.user);
            if (rc < 0 && !err) err = rc;
            sl->cm_started = false;
        }
        lock(xc);
        sl->finishing = false;
        if (err && !read_err) {
            sl->err = err;
            sl->err_off = err == -EBADMSG ? r0->off : 0;
        }
    } else if (!sl->err && sl->x.has_crc && sl->crc != sl->x.crc) {
        sl->err = -EBADMSG;
        sl->err_off = r0->off;
    }
    if (sl->staging >= 0) {
        xc->staging_free[xc->n_staging_free++] = sl->staging;
        sl->staging = -1;
        sl->io = NULL;
    }
    const int64_t layer = sl->key / xc->n_expert, expert = sl->key % xc->n_expert;
    if (sl->err) {
        if (sl->retries == 0 && !xc->closing) {
            sl->retries = 1;
            xc->st.read_retries++;
            xd__xc_logf(xc, "layer %lld expert %lld: read at offset %llu of %s failed (%s); "
                        "retrying once", (long long)layer, (long long)expert,
                        (unsigned long long)sl->err_off, xd_xs_path(xc->store),
                        xd_strerror(sl->err));
            begin_reads(xc, s);
            if (xc->staging) sl->io = NULL;
            else sl->io = sl->mem;
            return; /* the caller pumps */
        }
        xc->st.read_errors++;
        xd__xc_logf(xc, "layer %lld expert %lld: read at offset %llu of %s failed again (%s); "
                    "failing the request that needs it", (long long)layer, (long long)expert,
                    (unsigned long long)sl->err_off, xd_xs_path(xc->store), xd_strerror(sl->err));
        xc->n_busy--;
        if (sl->pins > 0) {
            sl->state = XC_ERROR;
            wake(xc);
        } else {
            free_slot(xc, s);
        }
        return;
    }
    xc->n_busy--;
    xc->st.reads++;
    latency(xc, xd__xc_now_ns() - sl->t_start_ns);
    if (sl->pins > 0) {
        sl->state = XC_PINNED;
    } else {
        sl->state = XC_RESIDENT;
        xd__lru_push(&xc->lru, sl->part, s);
    }
    wake(xc);
}

/* Issue what can be issued, then finish the slots whose reads are all back (a finish may
 * queue a retry, hence the loop). Every path that may have queued reads or completed the last
 * chunk of a slot ends here. */
static void settle(struct xd_xc *xc) {
    for (;;) {
        pump(xc);
        if (xc->n_fin == 0) return;
        finish_read(xc, xc->fin[--xc->n_fin]);
    }
}

/* Completions: account them, refill the device's queue first, then extend the checksums of
 * the chunks that landed (so the CRC work overlaps reads already in flight), then finish. */
void xd__xc_io_done(void *user, struct xd_xio_req *const *reqs, const int32_t *res, int n) {
    struct xd_xc *xc = user;
    int32_t touched[64];
    int n_touched = 0;
    lock(xc);
    for (int i = 0; i < n; i++) {
        int32_t s = reqs[i]->slot;
        if (n_touched < 64 && (n_touched == 0 || touched[n_touched - 1] != s)) touched[n_touched++] = s;
        complete_req(xc, reqs[i], res[i]);
    }
    pump(xc);
    for (int i = 0; i < n_touched; i++) {
        struct xd__xc_slot *sl = &xc->slots[touched[i]];
        if (sl->state != XC_READING || sl->err || sl->finishing) continue;
        if (sl->x.has_crc) advance_crc(xc, sl);
        if (xc->streamed && sl->io) {
            int rc = advance_commit(xc, sl, false);
            if (rc < 0) { /* issue no more; it finishes (and retries) once its reads are back */
                sl->err = rc;
                sl->err_off = 0;
            }
        }
    }
    settle(xc);
    ASSERT_INVARIANTS(xc);
    unlock(xc);
}

/* ---- acquire / release ------------------------------------------------------------------ */

static void fill_view(const struct xd_xc *xc, int64_t layer, int64_t expert, const unsigned char *mem,
                      const struct xd_xs_expert *x, struct xd_expert_view *out) {
    const struct xd_layer *L = &xc->m->layers[layer];
    out->gate = xd_tensor_expert(&L->gate_exps, expert);
    out->up = xd_tensor_expert(&L->up_exps, expert);
    out->down = xd_tensor_expert(&L->down_exps, expert);
    if (!mem) return; /* resident: the mmap views */
    out->gate.data = mem + x->part_off[0];
    out->up.data = mem + x->part_off[1];
    out->down.data = mem + x->part_off[2];
}

static void trace_line(struct xd_xc *xc, int64_t layer, const int32_t *experts, int n) {
    if (!xc->trace) return;
    fprintf(xc->trace, "%lld", (long long)layer);
    for (int i = 0; i < n; i++) fprintf(xc->trace, " %d", experts[i]);
    fputc('\n', xc->trace);
}

static bool valid(const struct xd_xc *xc, int64_t layer, int64_t expert) {
    return layer >= 0 && layer < xc->n_layer && expert >= 0 && expert < xc->n_expert;
}

int xd_xc_acquire(struct xd_xc *xc, int64_t layer, int64_t expert, struct xd_expert_view *out) {
    if (!valid(xc, layer, expert)) return XD_E_INVALID;
    const int64_t key = layer * xc->n_expert + expert;
    int32_t e32 = (int32_t)expert;
    lock(xc);
    trace_line(xc, layer, &e32, 1);
    visit(xc, layer);
    if (xc->resident) {
        count_access(xc, key, -1);
        xc->res_pins[key]++;
        xc->total_pins++;
        unlock(xc);
        fill_view(xc, layer, expert, NULL, NULL, out);
        return 0;
    }
    int32_t s = xc->where[key];
    count_access(xc, key, s);
    for (;;) {
        s = xc->where[key]; /* another thread may have started it while we waited */
        if (s >= 0 && xc->slots[s].state != XC_ERROR) break;
        if (s < 0 && (s = take_slot(xc, layer, -INFINITY)) >= 0) {
            start_read(xc, s, key, false);
            settle(xc);
            break;
        }
        /* every slot pinned or being read, or an earlier failure of this expert that its
         * waiters have yet to see (then the slot is freed and we read it afresh) */
        wait_change(xc);
    }
    pin(xc, s);
    struct xd__xc_slot *sl = &xc->slots[s];
    while (sl->state == XC_READING) wait_change(xc);
    int rc = 0;
    if (sl->state == XC_ERROR) {
        rc = sl->err;
        unpin(xc, s);
    } else {
        fill_view(xc, layer, expert, sl->mem, &sl->x, out);
    }
    ASSERT_INVARIANTS(xc);
    unlock(xc);
    return rc;
}

void xd_xc_release(struct xd_xc *xc, int64_t layer, int64_t expert) {
    if (!valid(xc, layer, expert)) return;
    const int64_t key = layer * xc->n_expert + expert;
    lock(xc);
    if (xc->resident) {
        if (xc->res_pins[key] > 0) {
            xc->res_pins[key]--;
            xc->total_pins--;
        }
    } else {
        int32_t s = xc->where[key];
        if (s >= 0 && xc->slots[s].state == XC_PINNED) unpin(xc, s);
    }
    ASSERT_INVARIANTS(xc);
    unlock(xc);
}

bool xd_xc_wants_prefetch(const struct xd_xc *xc) { return !xc->resident && xc->prefetch; }

bool xd_xc_is_resident(const struct xd_xc *xc) { return xc->resident; }

int32_t xd_xc_prefetch_layers(const struct xd_xc *xc) {
    return xd_xc_wants_prefetch(xc) ? xc->prefetch_layers : 0;
}

void xd_xc_prefetch(struct xd_xc *xc, int64_t layer, const int32_t *experts, int n) {
    if (layer < 0 || layer >= xc->n_layer || n <= 0) return;
    lock(xc);
    if (!xd_xc_wants_prefetch(xc)) {
        xc->st.prefetches += (uint64_t)n;
        unlock(xc);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (experts[i] < 0 || experts[i] >= xc->n_expert) continue;
        const int64_t key = layer * xc->n_expert + experts[i];
        /* counted once per visit it is hinted for, however many layers ahead hint it */
        if (xc->hinted[key] != xc->visits[layer] + 1) xc->st.prefetches++;
        xc->hinted[key] = xc->visits[layer] + 1;
        if (xc->where[key] >= 0) continue;
        /* only in place of an expert expected later than this one, which the hint says is
         * wanted at its layer's next turn: never one certain to be wanted as soon */
        int32_t s = take_slot(xc, layer, nextafter((double)turns_until(xc, layer), INFINITY));
        if (s < 0) continue; /* hinted (for accuracy) but no room to read */
        start_read(xc, s, key, true);
        xc->st.prefetch_issued++;
    }
    settle(xc);
    ASSERT_INVARIANTS(xc);
    unlock(xc);
}

/* ---- sets ------------------------------------------------------------------------------- */

int xd_xc_set_create(struct xd_xc *xc, struct xd_xc_set **out) {
    struct xd_xc_set *s = calloc(1, sizeof *s);
    if (!s) return XD_E_NOMEM;
    s->xc = xc;
    s->experts = calloc((size_t)xc->n_expert, sizeof *s->experts);
    s->st = calloc((size_t)xc->n_expert, sizeof *s->st);
    s->seq = calloc((size_t)xc->n_expert, sizeof *s->seq);
    if (!s->experts || !s->st || !s->seq) {
        xd_xc_set_destroy(s);
        return XD_E_NOMEM;
    }
    *out = s;
    return 0;
}

void xd_xc_set_destroy(struct xd_xc_set *s) {
    if (!s) return;
    if (s->experts && s->st) xd_xc_set_end(s);
    free(s->experts);
    free(s->st);
    free(s->seq);
    free(s);
}

static void set_end_locked(struct xd_xc_set *s) {
    struct xd_xc *xc = s->xc;
    for (int32_t i = 0; i < s->n; i++) {
        if (s->st[i] == SET_HELD) {
            if (xc->resident) {
                xc->res_pins[s->layer * xc->n_expert + s->experts[i]]--;
                xc->total_pins--;
            } else {
                unpin(xc, xc->where[s->layer * xc->n_expert + s->experts[i]]);
            }
        }
        s->st[i] = SET_DONE;
    }
    s->n_done = s->n;
}

void xd_xc_set_end(struct xd_xc_set *s) {
    lock(s->xc);
    set_end_locked(s);
    ASSERT_INVARIANTS(s->xc);
    unlock(s->xc);
}

/* Reserve (pin) wanted experts: those with a slot already, then new reads while slots can be
 * had without waiting. Returns how many were reserved.
 *
 * With next-use eviction, a new read evicts nothing expected sooner than what the set holds
 * while the set holds a resident expert not yet handed out, or XD_XC_SET_FORCED_READS reads. The
 * experts it holds are computed and released within this layer, and then they are the best
 * victims there are (the layer's turn has just passed); until then the remaining misses wait
 * for them rather than evict another layer's expert that the very next layers will ask for.
 * Without this a batch that needs every expert of a layer claims every slot at once: with a
 * cache of half the experts and every expert used each step (16+ decode rows on 8 experts
 * top-2), each layer's reads evicted the other layer's experts and not one acquisition hit.
 * The exception: a set holding no resident expert may start up to XD_XC_SET_FORCED_READS reads
 * with any victim, so that its misses are read side by side (a lone-token step's two misses)
 * instead of one after another while nothing computes; a layer that starts a step with no
 * hits takes its slots that way and keeps them from then on. */
/* What a set holds, for the rule above: the smallest expected next use among its experts and
 * how many are ready to hand out or still being read. */
struct held {
    double floor;
    int32_t ready, reading;
};

static void hold(const struct xd_xc *xc, struct held *h, int64_t key) {
    const int st = xc->slots[xc->where[key]].state;
    h->floor = fmin(h->floor, next_use(xc, key));
    if (st == XC_RESIDENT || st == XC_PINNED) h->ready++;
    else h->reading++;
}

static int reserve(struct xd_xc_set *s, bool take_new) {
    struct xd_xc *xc = s->xc;
    struct held h = {INFINITY, 0, 0};
    bool known = false; /* h counts what the set holds (next-use eviction only) */
    int got = 0;
    for (int32_t i = 0; i < s->n; i++) {
        if (s->st[i] != SET_WANT) continue;
        const int64_t key = s->layer * xc->n_expert + s->experts[i];
        int32_t sl = xc->where[key];
        if (sl >= 0 && xc->slots[sl].state == XC_ERROR) continue; /* wait until it is freed */
        if (sl < 0) {
            if (!take_new) continue;
            if (xc->evict == XD_XC_EVICT_NEXT_USE && !known) {
                known = true;
                for (int32_t j = 0; j < s->n; j++)
                    if (s->st[j] == SET_HELD) hold(xc, &h, s->layer * xc->n_expert + s->experts[j]);
            }
            const bool forced_ok = h.ready == 0 && h.reading < XD_XC_SET_FORCED_READS;
            if ((sl = take_slot(xc, s->layer, forced_ok ? -INFINITY : h.floor)) < 0) {
                take_new = false; /* the same answer for the rest: one victim scan per call */
                continue;
            }
            count_access(xc, key, -1);
            start_read(xc, sl, key, false);
        } else {
            count_access(xc, key, sl);
        }
        if (known) hold(xc, &h, key);
        pin(xc, sl);
        s->st[i] = SET_HELD;
        s->seq[i] = s->n_seq++;
        got++;
    }
    return got;
}

int xd_xc_set_begin(struct xd_xc_set *s, int64_t layer, const int32_t *experts, int n) {
    struct xd_xc *xc = s->xc;
    lock(xc);
    set_end_locked(s);
    s->n = s->n_done = s->n_seq = 0;
    if (layer < 0 || layer >= xc->n_layer || n < 0 || n > xc->n_expert) {
        unlock(xc);
        return XD_E_INVALID;
    }
    for (int i = 0; i < n; i++) {
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) dup = experts[j] == experts[i];
        if (experts[i] < 0 || experts[i] >= xc->n_expert || dup) {
            unlock(xc);
            return XD_E_INVALID;
        }
    }
    s->layer = layer;
    s->n = n;
    for (int i = 0; i < n; i++) {
        s->experts[i] = experts[i];
        s->st[i] = SET_WANT;
    }
    trace_line(xc, layer, experts, n);
    visit(xc, layer);
    if (xc->resident) {
        for (int i = 0; i < n; i++) {
            const int64_t key = layer * xc->n_expert + experts[i];
            count_access(xc, key, -1);
            xc->res_pins[key]++;
            xc->total_pins++;
            s->st[i] = SET_HELD;
        }
        unlock(xc);
        return 0;
    }
    reserve(s, false); /* the resident ones first, so the misses cannot evict them */
    reserve(s, true);
    settle(xc);
    ASSERT_INVARIANTS(xc);
    unlock(xc);
    return 0;
}

/* The slot of a held (not resident-cache) expert of the set. */
static const struct xd__xc_slot *set_slot(const struct xd_xc_set *s, int32_t i) {
    const struct xd_xc *xc = s->xc;
    return &xc->slots[xc->where[s->layer * xc->n_expert + s->experts[i]]];
}

int xd_xc_set_next(struct xd_xc_set *s, int32_t *expert, struct xd_expert_view *view) {
    struct xd_xc *xc = s->xc;
    lock(xc);
    for (;;) {
        if (s->n_done == s->n) {
            unlock(xc);
            return 0;
        }
        /* before handing one out: the expert released since the last call may be the victim
         * a waiting miss needs, and its read should overlap the next expert's compute */
        if (!xc->resident && reserve(s, true) > 0) settle(xc);
        /* the ready expert reserved first: the resident ones, then reads in the order they
         * started (the replay in trace.c assumes this order) */
        int32_t best = -1;
        for (int32_t i = 0; i < s->n; i++) {
            if (s->st[i] != SET_HELD) continue;
            if (xc->resident) {
                s->st[i] = SET_DONE;
                s->n_done++;
                unlock(xc);
                *expert = s->experts[i];
                fill_view(xc, s->layer, s->experts[i], NULL, NULL, view);
                return 1;
            }
            const struct xd__xc_slot *sl = set_slot(s, i);
            if (sl->state == XC_ERROR) {
                int rc = sl->err;
                set_end_locked(s);
                ASSERT_INVARIANTS(xc);
                unlock(xc);
                return rc;
            }
            if (sl->state == XC_PINNED && (best < 0 || s->seq[i] < s->seq[best])) best = i;
        }
        if (best >= 0) {
            const struct xd__xc_slot *sl = set_slot(s, best);
            s->st[best] = SET_DONE;
            s->n_done++;
            *expert = s->experts[best];
            fill_view(xc, s->layer, s->experts[best], sl->mem, &sl->x, view);
            ASSERT_INVARIANTS(xc);
            unlock(xc);
            return 1;
        }
        wait_change(xc);
    }
}

void xd_xc_drain(struct xd_xc *xc) {
    lock(xc);
    while (xc->n_busy > 0) {
        xc->n_waiting++;
        pthread_cond_wait(&xc->cv, &xc->mu);
        xc->n_waiting--;
    }
    unlock(xc);
}

/* ---- stats ------------------------------------------------------------------------------ */

const struct xd_xc_stats *xd_xc_stats(const struct xd_xc *xc) { return &xc->st; }

void xd_xc_stats_get(const struct xd_xc *xc, struct xd_xc_stats *out) {
    lock(xc);
    *out = xc->st;
    if (xc->n_inflight > 0) out->io_busy_ns += xd__xc_now_ns() - xc->busy_since_ns;
    unlock(xc);
}

void xd_xc_resident_per_layer(const struct xd_xc *xc, uint32_t *out) {
    lock(xc);
    for (int64_t l = 0; l < xc->n_layer; l++) out[l] = xc->resident ? (uint32_t)xc->n_expert : 0;
    for (int32_t s = 0; !xc->resident && s < xc->n_slots; s++) {
        const struct xd__xc_slot *sl = &xc->slots[s];
        if (sl->state == XC_RESIDENT || sl->state == XC_PINNED) out[sl->key / xc->n_expert]++;
    }
    unlock(xc);
}

int64_t xd_xc_pinned(const struct xd_xc *xc) {
    lock(xc);
    int64_t n = xc->total_pins;
    unlock(xc);
    return n;
}

void xd_xc_info(const struct xd_xc *xc, struct xd_xc_info *out) { *out = xc->info; }

const char *xd_xc_describe(const struct xd_xc *xc, char *buf, size_t n) {
    const struct xd_xc_info *in = &xc->info;
    char b1[32], b2[32], b3[32];
    if (!in->offloaded) {
        if (n) buf[0] = '\0';
        return buf;
    }
    snprintf(buf, n, "expert cache %s = %d slots of %s (experts are %s each), store %s %s%s, "
             "%s, policy %s, evict %s", xd_xc_format_size(in->budget, b1, sizeof b1),
             in->n_slots, xd_xc_format_size(in->slot_bytes, b2, sizeof b2),
             xd_xc_format_size(in->expert_bytes, b3, sizeof b3), in->store_kind,
             in->store_path, in->direct ? " (O_DIRECT)" : " (buffered)", in->io, in->policy,
             in->evict);
    return buf;
}
