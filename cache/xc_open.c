/* xc_open.c - building and tearing down an expert cache from a budget and a model.
 *
 * Turns `--expert-cache SIZE` into a cache: picks the store (the packed store beside the
 * model when there is one that matches it, else the GGUF file itself; expert_store.h), divides
 * the budget into slots of the store's slot size (a budget that cannot hold the top-k experts
 * of one layer is refused with the minimum in the message), asks the backend for slot memory,
 * registers that memory and the store's file with the I/O engine, and falls back from io_uring
 * to the pread pool (logged once) where io_uring is unavailable. The budget counts slot memory
 * only; the per-slot and per-request bookkeeping (a few hundred bytes each) and the engine's
 * threads are the "stated overhead" of docs/expert-offload.md.
 *
 * Destruction waits for reads in flight to land (every request gets its completion; none is
 * cancelled under the kernel's feet), then frees. Not here: the run-time state machine
 * (expert_cache.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xc_impl.h"
#include "xd_error.h"

#define DEFAULT_CHUNK (1u << 20)
#define DEFAULT_DEPTH 32
#define DEFAULT_PART (4u << 20) /* streamed commit: ~75 µs of PCIe 4/5 x16 */
#define REGBUF_MAX ((uint64_t)1 << 30)

__attribute__((format(printf, 4, 5))) static int errf(char *err, size_t errlen, int code,
                                                      const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int common_init(struct xd_xc *xc, const struct xd_model *m) {
    xc->m = m;
    xc->n_layer = m->hp.n_layer;
    xc->n_expert = m->hp.n_expert;
    xc->n_keys = xc->n_layer * xc->n_expert;
    xc->touched = calloc((size_t)xc->n_keys, 1);
    xc->hinted = calloc((size_t)xc->n_keys, sizeof *xc->hinted);
    xc->freq = calloc((size_t)xc->n_keys, sizeof *xc->freq);
    xc->visits = calloc((size_t)xc->n_layer, sizeof *xc->visits);
    if (!xc->touched || !xc->hinted || !xc->freq || !xc->visits) return XD_E_NOMEM;
    pthread_mutex_init(&xc->mu, NULL);
    pthread_cond_init(&xc->cv, NULL);
    xc->info.expert_bytes = m->expert_bytes;
    xc->info.policy = "global";
    xc->info.evict = "lru";
    xc->info.io = "none";
    xc->info.store_kind = "resident";
    xc->info.store_path = "";
    return 0;
}

static void free_all(struct xd_xc *xc) {
    if (xc->pool) xc->be.slots_free(xc->be.user, xc->pool, xc->pool_bytes);
    if (xc->staging)
        xc->be.staging_free(xc->be.user, xc->staging, (size_t)xc->n_staging * xc->slot_bytes);
    xd_xs_close(xc->store);
    xd__lru_free(&xc->lru);
    xd__lru_free(&xc->free);
    if (xc->trace) fclose(xc->trace);
    free(xc->staging_free);
    free(xc->chunk_flags);
    free(xc->iov);
    free(xc->reqs);
    free(xc->req_free);
    free(xc->rq);
    free(xc->fin);
    free(xc->slots);
    free(xc->where);
    free(xc->res_pins);
    free(xc->touched);
    free(xc->hinted);
    free(xc->freq);
    free(xc->visits);
    free(xc);
}

int xd_xc_create_resident(const struct xd_model *m, struct xd_xc **out) {
    if (!m->moe) return XD_E_INVALID;
    struct xd_xc *xc = calloc(1, sizeof *xc);
    if (!xc) return XD_E_NOMEM;
    xc->resident = true;
    int rc = common_init(xc, m);
    if (!rc && !(xc->res_pins = calloc((size_t)xc->n_keys, sizeof *xc->res_pins))) rc = XD_E_NOMEM;
    if (rc) {
        free_all(xc);
        return rc;
    }
    xc->info.budget = (uint64_t)xc->n_keys * m->expert_bytes;
    *out = xc;
    return 0;
}

/* Open the store cfg asks for. */
static int open_store(struct xd_xc *xc, const struct xd_xc_config *cfg, char *err, size_t errlen) {
    const char *want = cfg->store;
    if (want && strcmp(want, "auto") && strcmp(want, "gguf"))
        return xd_xs_open_packed(xc->m, want, &xc->store, err, errlen);
    if ((!want || !strcmp(want, "auto")) && cfg->model_path) {
        char path[4096];
        if (xd_xs_default_path(cfg->model_path, path, sizeof path) < (int)sizeof path &&
            access(path, R_OK) == 0) {
            char why[512];
            if (xd_xs_open_packed(xc->m, path, &xc->store, why, sizeof why) == 0) return 0;
            xd__xc_logf(xc, "not using %s: %s; reading experts from the GGUF file", path, why);
        }
    }
    return xd_xs_open_gguf(xc->m, cfg->model_path, &xc->store, err, errlen);
}

static int open_io(struct xd_xc *xc, const struct xd_xc_config *cfg, char *err, size_t errlen) {
    int fd = xd_xs_fd(xc->store);
    struct xd_xio_params p = {
        .fds = &fd, .n_fds = 1, .bufs = xc->iov, .n_bufs = xc->n_iov, .depth = xc->n_reqs,
        .done = xd__xc_io_done, .done_user = xc,
    };
    const struct xd_xio_ops *ops = cfg->io_ops;
    if (!ops) ops = cfg->io == XD_XC_IO_PREAD ? xd_xio_pread_ops() : xd_xio_uring_ops();
    int rc = ops->open(&p, cfg->io_ops ? cfg->io_ops_user : NULL, &xc->io);
    if (rc && !cfg->io_ops && cfg->io == XD_XC_IO_AUTO) {
        xd__xc_logf(xc, "io_uring is not available (%s); falling back to a pread thread pool",
                    xd_strerror(rc));
        ops = xd_xio_pread_ops();
        rc = ops->open(&p, NULL, &xc->io);
    }
    if (rc) return errf(err, errlen, rc, "cannot start the %s I/O engine: %s", ops->name, xd_strerror(rc));
    xc->io_ops = ops;
    xc->info.io = ops->name;
    return 0;
}

/* Describe the memory reads land in as iovecs (at most 1 GiB each, whole buffers only). */
static int build_iov(struct xd_xc *xc) {
    int32_t n_bufs = xc->staging ? xc->n_staging : xc->n_slots;
    unsigned char *base = xc->staging ? xc->staging : xc->pool;
    if (xc->slot_bytes > REGBUF_MAX) return 0;
    xc->bufs_per_iov = (int32_t)(REGBUF_MAX / xc->slot_bytes);
    int32_t n = (n_bufs + xc->bufs_per_iov - 1) / xc->bufs_per_iov;
    if (n > 1024) return 0; /* the kernel's limit on registered buffers */
    xc->iov = calloc((size_t)n, sizeof *xc->iov);
    if (!xc->iov) return XD_E_NOMEM;
    for (int32_t i = 0; i < n; i++) {
        int32_t first = i * xc->bufs_per_iov;
        int32_t cnt = n_bufs - first < xc->bufs_per_iov ? n_bufs - first : xc->bufs_per_iov;
        xc->iov[i].iov_base = base + (size_t)first * xc->slot_bytes;
        xc->iov[i].iov_len = (size_t)cnt * xc->slot_bytes;
    }
    xc->n_iov = n;
    return 0;
}

int xd_xc_open(const struct xd_model *m, const struct xd_xc_config *cfg, struct xd_xc **out,
               char *err, size_t errlen) {
    const struct xd_xc_config dflt = {0};
    if (!cfg) cfg = &dflt;
    if (!m->moe) return errf(err, errlen, XD_E_INVALID, "the model has no experts to cache");
    if (cfg->read_chunk % XD_XS_ALIGN)
        return errf(err, errlen, XD_E_INVALID, "the read size must be a multiple of 4096");
    struct xd_xc *xc = calloc(1, sizeof *xc);
    if (!xc) return errf(err, errlen, XD_E_NOMEM, "out of memory");
    xc->log = cfg->log;
    xc->log_user = cfg->log_user;
    int rc = common_init(xc, m);
    if (rc) goto fail_nomem;
    if (cfg->trace_path) {
        if (!(xc->trace = fopen(cfg->trace_path, "w"))) {
            rc = errf(err, errlen, -errno, "%s: %s", cfg->trace_path, strerror(errno));
            goto fail;
        }
        fprintf(xc->trace, "# expertd expert trace v1 layers %lld experts %lld topk %lld\n",
                (long long)xc->n_layer, (long long)xc->n_expert, (long long)m->hp.n_expert_used);
    }
    if (cfg->budget == 0) {
        xc->resident = true;
        if (!(xc->res_pins = calloc((size_t)xc->n_keys, sizeof *xc->res_pins))) goto fail_nomem;
        xc->info.budget = (uint64_t)xc->n_keys * m->expert_bytes;
        *out = xc;
        return 0;
    }

    if ((rc = open_store(xc, cfg, err, errlen))) goto fail;
    xc->slot_bytes = xd_xs_slot_bytes(xc->store);
    xc->policy = cfg->policy;
    xc->evict = cfg->evict;
    xc->prefetch = !cfg->no_prefetch;
    xc->prefetch_layers = cfg->prefetch_layers > 0 ? cfg->prefetch_layers : 1;
    const int64_t k = m->hp.n_expert_used;
    uint64_t n_slots = cfg->budget / xc->slot_bytes;
    if (n_slots > (uint64_t)xc->n_keys) n_slots = (uint64_t)xc->n_keys;
    char b1[32], b2[32];
    if (n_slots < (uint64_t)k) {
        rc = errf(err, errlen, XD_E_INVALID, "expert cache of %s is too small: it must hold the "
                  "top-k (%lld) experts of one layer, %s at least (%s per expert slot)",
                  xd_xc_format_size(cfg->budget, b1, sizeof b1), (long long)k,
                  xd_xc_format_size((uint64_t)k * xc->slot_bytes, b2, sizeof b2),
                  xd_xc_format_size(xc->slot_bytes, (char[32]){0}, 32));
        goto fail;
    }
    if (xc->policy == XD_XC_POLICY_LAYER && n_slots / (uint64_t)xc->n_layer < (uint64_t)k) {
        rc = errf(err, errlen, XD_E_INVALID, "the per-layer policy needs the top-k (%lld) experts "
                  "of every layer: an expert cache of %s at least", (long long)k,
                  xd_xc_format_size((uint64_t)k * (uint64_t)xc->n_layer * xc->slot_bytes, b2,
                                    sizeof b2));
        goto fail;
    }
    xc->n_slots = (int32_t)n_slots;
    xc->be = cfg->backend ? *cfg->backend : *xd_xc_backend_host();
    if (!xc->be.commit_part != !xc->be.commit_wait ||
        ((xc->be.commit || xc->be.commit_part) && !xc->be.staging_alloc)) {
        rc = errf(err, errlen, XD_E_INVALID, "expert-cache backend %s: a commit needs staging, "
                  "and commit_part and commit_wait come together", xc->be.name);
        goto fail;
    }
    xc->streamed = xc->be.commit_part != NULL;
    xc->part_bytes = xc->be.part_bytes ? xc->be.part_bytes : DEFAULT_PART;
    xc->pool_bytes = (size_t)n_slots * xc->slot_bytes;
    if (!(xc->pool = xc->be.slots_alloc(xc->be.user, xc->pool_bytes))) {
        rc = errf(err, errlen, XD_E_NOMEM, "cannot allocate %s of expert slots (%s backend)",
                  xd_xc_format_size(xc->pool_bytes, b1, sizeof b1), xc->be.name);
        goto fail;
    }
    if (xc->be.commit || xc->streamed) {
        xc->n_staging = xc->be.n_staging > 0 ? xc->be.n_staging : 4;
        if (xc->n_staging > xc->n_slots) xc->n_staging = xc->n_slots;
        xc->staging = xc->be.staging_alloc(xc->be.user, (size_t)xc->n_staging * xc->slot_bytes);
        xc->staging_free = malloc((size_t)xc->n_staging * sizeof *xc->staging_free);
        if (!xc->staging || !xc->staging_free) goto fail_nomem;
        for (int32_t i = 0; i < xc->n_staging; i++) xc->staging_free[i] = xc->n_staging - 1 - i;
        xc->n_staging_free = xc->n_staging;
    }
    const int32_t n_parts = xc->policy == XD_XC_POLICY_LAYER ? (int32_t)xc->n_layer : 1;
    xc->slots = calloc((size_t)n_slots, sizeof *xc->slots);
    xc->where = malloc((size_t)xc->n_keys * sizeof *xc->where);
    xc->rq = malloc((size_t)n_slots * sizeof *xc->rq);
    xc->fin = malloc((size_t)n_slots * sizeof *xc->fin);
    xc->n_reqs = cfg->queue_depth > 0 ? cfg->queue_depth : DEFAULT_DEPTH;
    xc->reqs = calloc((size_t)xc->n_reqs, sizeof *xc->reqs);
    xc->req_free = malloc((size_t)xc->n_reqs * sizeof *xc->req_free);
    if (!xc->slots || !xc->where || !xc->rq || !xc->fin || !xc->reqs || !xc->req_free ||
        xd__lru_init(&xc->lru, xc->n_slots, n_parts) || xd__lru_init(&xc->free, xc->n_slots, n_parts) ||
        build_iov(xc))
        goto fail_nomem;
    for (int64_t i = 0; i < xc->n_keys; i++) xc->where[i] = -1;
    for (int32_t i = 0; i < xc->n_reqs; i++) {
        xc->reqs[i].id = i;
        xc->req_free[i] = xc->n_reqs - 1 - i;
    }
    xc->n_req_free = xc->n_reqs;
    for (int32_t i = 0; i < xc->n_slots; i++) {
        struct xd__xc_slot *sl = &xc->slots[i];
        sl->key = -1;
        sl->part = i % n_parts;
        sl->staging = -1;
        sl->mem = (unsigned char *)xc->pool + (size_t)i * xc->slot_bytes;
        sl->io = xc->staging ? NULL : sl->mem;
        sl->buf_index = !xc->staging && xc->n_iov ? i / xc->bufs_per_iov : -1;
        xd__lru_push(&xc->free, sl->part, i);
    }
    xc->chunk = cfg->read_chunk ? cfg->read_chunk : DEFAULT_CHUNK;
    /* an expert's regions lie apart in its slot: each can end in a partial chunk */
    xc->max_chunks = (int32_t)((xc->slot_bytes + xc->chunk - 1) / xc->chunk) + XD_XS_PARTS;
    if (!(xc->chunk_flags = calloc((size_t)xc->n_slots, (size_t)xc->max_chunks))) goto fail_nomem;
    for (int32_t i = 0; i < xc->n_slots; i++)
        xc->slots[i].chunk_ok = xc->chunk_flags + (size_t)i * (size_t)xc->max_chunks;
    if ((rc = open_io(xc, cfg, err, errlen))) goto fail;
    /* A slot is the expert rounded out for O_DIRECT (GGUF-direct: each of its three slices,
     * up to 24 KiB more per expert). Say so when that costs a slot the expert bytes would
     * fit: half the expert bytes buying one expert fewer than half the experts surprises
     * everyone who sizes a cache in expert bytes. */
    uint64_t fit = m->expert_bytes ? cfg->budget / m->expert_bytes : 0;
    if (fit > (uint64_t)xc->n_keys) fit = (uint64_t)xc->n_keys;
    if (fit > n_slots) {
        bool gguf = !strcmp(xd_xs_kind(xc->store), "gguf");
        xd__xc_logf(xc, "%s buys %d slots of %s, fewer than the %llu experts of %s it holds "
                    "the bytes of: slots are rounded out to 4 KiB for O_DIRECT%s",
                    xd_xc_format_size(cfg->budget, b1, sizeof b1), xc->n_slots,
                    xd_xc_format_size(xc->slot_bytes, b2, sizeof b2), (unsigned long long)fit,
                    xd_xc_format_size(m->expert_bytes, (char[32]){0}, 32),
                    gguf ? " (each slice of the GGUF file); `expertd pack` writes a store "
                           "with one extent per expert" : "");
    }
    if (!xd_xs_direct(xc->store))
        xd__xc_logf(xc, "%s does not support O_DIRECT: expert reads go through the page cache, "
                    "which the budget does not bound", xd_xs_path(xc->store));

    xc->info = (struct xd_xc_info){
        .offloaded = true, .budget = cfg->budget, .slot_bytes = xc->slot_bytes,
        .expert_bytes = m->expert_bytes, .n_slots = xc->n_slots,
        .store_kind = xd_xs_kind(xc->store), .store_path = xd_xs_path(xc->store),
        .io = xc->io_ops->describe ? xc->io_ops->describe(xc->io) : xc->io_ops->name,
        .policy = xc->policy == XD_XC_POLICY_LAYER ? "layer" : "global",
        .evict = xc->evict == XD_XC_EVICT_NEXT_USE ? "next-use" : "lru",
        .direct = xd_xs_direct(xc->store),
    };
    *out = xc;
    return 0;
fail_nomem:
    rc = errf(err, errlen, XD_E_NOMEM, "out of memory");
fail:
    free_all(xc);
    return rc;
}

void xd_xc_destroy(struct xd_xc *xc) {
    if (!xc) return;
    if (!xc->resident) {
        pthread_mutex_lock(&xc->mu);
        xc->closing = true; /* no more retries */
        pthread_mutex_unlock(&xc->mu);
        xd_xc_drain(xc);
        if (xc->io) xc->io_ops->close(xc->io);
    }
    if (xc->total_pins > 0)
        xd__xc_logf(xc, "destroyed with %lld pins outstanding", (long long)xc->total_pins);
    pthread_cond_destroy(&xc->cv);
    pthread_mutex_destroy(&xc->mu);
    free_all(xc);
}
