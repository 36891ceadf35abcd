/* xc_test_util.h - helpers for the expert cache tests (test_xc*.c): fixtures, packed stores in
 * /tmp, budgets counted in slots, greedy runs that keep every step's logits. Header-only
 * (static functions) so CMake's one-file-per-test rule still holds. */
#ifndef XC_TEST_UTIL_H
#define XC_TEST_UTIL_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "expert_cache.h"
#include "expert_store.h"
#include "forward.h"
#include "model.h"
#include "tokenizer.h"
#include "xd_test_util.h"

static const char *const xc_fixtures[] = {
    "mixtral-tiny-q4_k_m.gguf", "mixtral-tiny-q8_0.gguf", "qwen3moe-tiny-f16.gguf",
    "qwen3moe-tiny-f32.gguf",   "qwen3moe-tiny-q8_0.gguf",
};
#define XC_N_FIXTURES (sizeof xc_fixtures / sizeof xc_fixtures[0])

/* The fixture's path: tests/fixtures, else ../shared/fixtures/models beside the repository
 * (the models over 10 MB live only there); NULL when neither has it. */
static inline char *xc_fixture_path(const char *name) {
    char *p = xd_test_fixture(name);
    if (access(p, R_OK) == 0) return p;
    free(p);
    const char *rel = "/../../../shared/fixtures/models/";
    size_t n = strlen(XD_FIXTURES) + strlen(rel) + strlen(name) + 1;
    p = malloc(n);
    snprintf(p, n, "%s%s%s", XD_FIXTURES, rel, name);
    if (access(p, R_OK) == 0) return p;
    free(p);
    return NULL;
}

static inline struct xd_model *xc_load(const char *name, char **path_out) {
    char *path = xc_fixture_path(name);
    if (!path) cr_skip("%s is neither in tests/fixtures nor in ../shared/fixtures/models", name);
    struct xd_model *m = NULL;
    char err[256];
    cr_assert_eq(xd_model_load(path, &m, err, sizeof err), 0, "%s: %s", name, err);
    if (path_out) *path_out = path;
    else free(path);
    return m;
}

/* Pack m into a fresh temporary store; returns its path (caller unlinks and frees). */
static inline char *xc_pack_temp(const struct xd_model *m) {
    char tmpl[] = "/tmp/xdtest-store-XXXXXX";
    int fd = mkstemp(tmpl);
    cr_assert(fd >= 0);
    close(fd);
    char err[256];
    cr_assert_eq(xd_xs_pack(m, tmpl, NULL, NULL, err, sizeof err), 0, "pack: %s", err);
    return strdup(tmpl);
}

/* Slot size the cache will use with this store choice (NULL/"gguf" or a packed path). */
static inline uint64_t xc_slot_bytes(const struct xd_model *m, const char *model_path,
                                     const char *store) {
    struct xd_xs *s;
    char err[256];
    int rc = store && strcmp(store, "gguf") ? xd_xs_open_packed(m, store, &s, err, sizeof err)
                                            : xd_xs_open_gguf(m, model_path, &s, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    uint64_t b = xd_xs_slot_bytes(s);
    xd_xs_close(s);
    return b;
}

/* Log sink that keeps the last lines (the cache calls it under its lock). */
struct xc_log {
    char text[8192];
    size_t len;
    int lines;
};

static inline void xc_log_sink(void *user, const char *line) {
    struct xc_log *l = user;
    l->lines++;
    int w = snprintf(l->text + l->len, sizeof l->text - l->len, "%s\n", line);
    if (w > 0 && l->len + (size_t)w < sizeof l->text) l->len += (size_t)w;
}

/* Greedy decode of n steps after prompt on cache xc (NULL: resident) and backend (NULL: cpu),
 * keeping the logits of
 * the prompt and every step in out [(n + 1) x n_vocab]. Returns 0 or the first forward error. */
static inline int xc_greedy_on(const struct xd_model *m, struct xd_xc *xc, const char *backend,
                               const char *prompt, int n, float *out) {
    struct xd_tokens tk = {0};
    cr_assert_eq(xd_tokenize(m->tok, prompt, strlen(prompt), XD_TOK_ADD_SPECIAL, &tk), 0);
    struct xd_ctx_params cp = {.n_ctx = 256, .xc = xc, .n_threads = 1, .backend = backend};
    struct xd_ctx *ctx;
    char err[256];
    cr_assert_eq(xd_ctx_create(m, &cp, &ctx, err, sizeof err), 0, "%s", err);
    const int64_t nv = m->hp.n_vocab;
    int32_t *pos = calloc(tk.n, sizeof *pos), *seq = calloc(tk.n, sizeof *seq);
    for (size_t i = 0; i < tk.n; i++) pos[i] = (int32_t)i;
    struct xd_batch b = {.n_tokens = (int32_t)tk.n, .token = tk.ids, .pos = pos, .seq = seq};
    int rc = xd_forward(ctx, &b, out);
    for (int s = 0; s < n && !rc; s++) {
        const float *lg = out + (size_t)s * (size_t)nv;
        int32_t best = 0;
        for (int32_t i = 1; i < nv; i++)
            if (lg[i] > lg[best]) best = i;
        int32_t p = (int32_t)tk.n + s, q = 0;
        struct xd_batch one = {.n_tokens = 1, .token = &best, .pos = &p, .seq = &q};
        rc = xd_forward(ctx, &one, out + (size_t)(s + 1) * (size_t)nv);
    }
    if (xc) cr_assert_eq(xd_xc_pinned(xc), 0, "pins leaked (rc %d)", rc);
    free(pos);
    free(seq);
    xd_tokens_free(&tk);
    xd_ctx_destroy(ctx);
    return rc;
}

/* The same on the default CPU backend. */
static inline int xc_greedy(const struct xd_model *m, struct xd_xc *xc, const char *prompt,
                            int n, float *out) {
    return xc_greedy_on(m, xc, NULL, prompt, n, out);
}

/* ---- a device backend: slots in "device" memory, reads through host staging ---------------
 * The host cannot read into its slots; bytes get there only through the backend's commit.
 * Streamed (commit_part/commit_wait): parts are queued and copied later, at the next
 * commit_wait or when the queue is full, like a copy engine working through its stream; each
 * part's staging bytes are checksummed when it is queued and again when it is copied, so a
 * cache that reuses a staging buffer before waiting for the copies reading it is caught
 * (races). Whole commits (commit) copy at once. */
#define XC_FAKE_QUEUE 64

struct xc_fake_part {
    void *slot;
    const void *staging;
    size_t off, len;
    uint32_t crc;
};

struct xc_fake_device {
    pthread_mutex_t mu;
    void *slots;          /* the first allocation: the slot pool */
    size_t slot_bytes;
    struct xc_fake_part q[XC_FAKE_QUEUE];
    int n_q;
    uint64_t commits, parts, part_bytes, waits, races, max_q;
};

static inline void *xc_fake_alloc(void *user, size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes)) return NULL;
    memset(p, 0xa5, bytes); /* "device" memory the host never reads into directly */
    struct xc_fake_device *d = user;
    pthread_mutex_lock(&d->mu);
    if (!d->slots) d->slots = p, d->slot_bytes = bytes;
    pthread_mutex_unlock(&d->mu);
    return p;
}

static inline void xc_fake_free(void *user, void *p, size_t bytes) {
    (void)user;
    (void)bytes;
    free(p);
}

static inline int xc_fake_commit(void *user, void *slot, const void *staging, size_t bytes) {
    struct xc_fake_device *d = user;
    pthread_mutex_lock(&d->mu);
    d->commits++;
    pthread_mutex_unlock(&d->mu);
    memcpy(slot, staging, bytes); /* cudaMemcpyAsync + sync in the real thing */
    return 0;
}

static inline void xc_fake_drain_locked(struct xc_fake_device *d) {
    for (int i = 0; i < d->n_q; i++) {
        const struct xc_fake_part *q = &d->q[i];
        if (xd_crc32c(0, (const char *)q->staging + q->off, q->len) != q->crc) d->races++;
        memcpy((char *)q->slot + q->off, (const char *)q->staging + q->off, q->len);
    }
    d->n_q = 0;
}

static inline int xc_fake_commit_part(void *user, void *slot, const void *staging, size_t off,
                                      size_t len) {
    struct xc_fake_device *d = user;
    pthread_mutex_lock(&d->mu);
    if (d->n_q == XC_FAKE_QUEUE) xc_fake_drain_locked(d);
    d->q[d->n_q++] = (struct xc_fake_part){slot, staging, off, len,
                                           xd_crc32c(0, (const char *)staging + off, len)};
    if ((uint64_t)d->n_q > d->max_q) d->max_q = (uint64_t)d->n_q;
    d->parts++;
    d->part_bytes += len;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

static inline int xc_fake_commit_wait(void *user) {
    struct xc_fake_device *d = user;
    pthread_mutex_lock(&d->mu);
    xc_fake_drain_locked(d);
    d->waits++;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* A fake device and its backend: streamed with parts of part_bytes, or whole commits (0). */
static inline void xc_fake_init(struct xc_fake_device *d, struct xd_xc_backend *be,
                                size_t part_bytes, int32_t n_staging) {
    memset(d, 0, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    *be = (struct xd_xc_backend){.name = "fake-device", .slots_alloc = xc_fake_alloc,
                                 .slots_free = xc_fake_free, .staging_alloc = xc_fake_alloc,
                                 .staging_free = xc_fake_free, .n_staging = n_staging, .user = d};
    if (part_bytes) {
        be->commit_part = xc_fake_commit_part;
        be->commit_wait = xc_fake_commit_wait;
        be->part_bytes = part_bytes;
    } else {
        be->commit = xc_fake_commit;
    }
}

static inline void xc_fake_reset(struct xc_fake_device *d) {
    pthread_mutex_lock(&d->mu);
    d->slots = NULL;
    d->commits = d->parts = d->part_bytes = d->waits = d->races = d->max_q = 0;
    pthread_mutex_unlock(&d->mu);
}

#endif
