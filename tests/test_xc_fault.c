/* test_xc_fault.c - read faults fail only the request that needed the expert, and recover.
 *
 * A shim I/O engine sits between the cache and a real one and rewrites the Nth read's result
 * (SQLite's test_vfs idea): -EIO, -EAGAIN, a short read, or a flipped byte that the packed
 * store's checksum must catch; transient (the Nth read only) or persistent (every read from
 * the Nth on). Transient faults are swept over N = 1, 2, ... until a run injects none: every
 * run must still produce the resident logits bit for bit (retry, requeue and short-read
 * continuation are invisible), with the invariants checked after each forward. Persistent
 * faults must make the forward return the error with nothing pinned, a log line naming the
 * layer, expert and offset, and the same cache must serve the next request once the fault is
 * gone. Damaged and truncated stores on disk fail the request cleanly, in-process and through
 * `expertd run` (exit status 1, no crash).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "xc_test_util.h"
#include "xd_error.h"
#include "xio.h"

/* Criterion 2.4.1's runner (the parent process, inside criterion_run_all_tests) loses one
 * 48-byte allocation in some runs of this long suite under --jobs 2. Report hooks run in the
 * runner, so leak tracking is switched off for the runner's thread only; the tests run in
 * freshly exec'd worker processes, where LeakSanitizer still checks everything. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    __lsan_disable();
}
#endif

enum fault { F_NONE, F_EIO, F_EAGAIN, F_SHORT, F_CRC };
static const char *const fault_name[] = {"none", "EIO", "EAGAIN", "short", "checksum"};

struct shim_cfg {
    const struct xd_xio_ops *inner;
    atomic_int kind;       /* enum fault */
    int nth;               /* 1-based index of the first read to fault */
    bool persistent;
    atomic_int seen;       /* completions seen */
    atomic_int injected;
};

struct xd_xio { /* the shim's engine object */
    struct xd_xio *inner;
    struct shim_cfg *cfg;
    xd_xio_done_cb done;
    void *done_user;
};

static void shim_done(void *user, struct xd_xio_req *const *reqs, const int32_t *res, int n) {
    struct xd_xio *io = user;
    struct shim_cfg *c = io->cfg;
    for (int i = 0; i < n; i++) {
        int32_t r = res[i];
        int idx = atomic_fetch_add(&c->seen, 1) + 1;
        int kind = atomic_load(&c->kind);
        bool hit = kind != F_NONE && (c->persistent ? idx >= c->nth : idx == c->nth);
        if (hit) {
            switch (kind) {
            case F_EIO: r = -EIO; break;
            case F_EAGAIN: r = -EAGAIN; break;
            case F_SHORT: /* O_DIRECT short reads come in whole blocks */
                if (r == (int32_t)reqs[i]->len && reqs[i]->len >= 8192)
                    r = (int32_t)((reqs[i]->len / 2) & ~4095u);
                else
                    hit = false;
                break;
            case F_CRC:
                if (r > 0) ((unsigned char *)reqs[i]->buf)[r / 2] ^= 0x5a;
                else hit = false;
                break;
            default: break;
            }
            if (hit) atomic_fetch_add(&c->injected, 1);
        }
        io->done(io->done_user, &reqs[i], &r, 1);
    }
}

static int shim_open(const struct xd_xio_params *p, void *user, struct xd_xio **out) {
    struct shim_cfg *c = user;
    struct xd_xio *io = calloc(1, sizeof *io);
    io->cfg = c;
    io->done = p->done;
    io->done_user = p->done_user;
    struct xd_xio_params q = *p;
    q.done = shim_done;
    q.done_user = io;
    int rc = c->inner->open(&q, NULL, &io->inner);
    if (rc) {
        free(io);
        return rc;
    }
    *out = io;
    return 0;
}

static int shim_submit(struct xd_xio *io, struct xd_xio_req *const *reqs, int n) {
    return io->cfg->inner->submit(io->inner, reqs, n);
}

static void shim_close(struct xd_xio *io) {
    io->cfg->inner->close(io->inner);
    free(io);
}

static const struct xd_xio_ops shim_ops = {
    .name = "fault-shim", .open = shim_open, .submit = shim_submit, .close = shim_close,
};

static const char *const prompt = "Hello there, how are you";
#define STEPS 3

struct fixture {
    char *path, *pack;
    struct xd_model *m;
    float *want;
    size_t n_logits;
    uint64_t slot;
};

static void fx_open(struct fixture *f, const char *name) {
    f->m = xc_load(name, &f->path);
    f->pack = xc_pack_temp(f->m);
    f->slot = xc_slot_bytes(f->m, f->path, f->pack);
    f->n_logits = (size_t)(STEPS + 1) * (size_t)f->m->hp.n_vocab;
    f->want = malloc(f->n_logits * sizeof *f->want);
    cr_assert_eq(xc_greedy(f->m, NULL, prompt, STEPS, f->want), 0);
}

static void fx_close(struct fixture *f) {
    unlink(f->pack);
    free(f->pack);
    free(f->path);
    free(f->want);
    xd_model_free(f->m);
}

/* be: NULL for host slots, else a device backend (xc_fake_init) */
static struct xd_xc *open_shimmed(struct fixture *f, struct shim_cfg *c, struct xc_log *log,
                                  const char *store, const struct xd_xc_backend *be) {
    const uint64_t slots = (uint64_t)f->m->hp.n_expert_used + 1;
    struct xd_xc_config cfg = {.budget = slots * xc_slot_bytes(f->m, f->path, store),
                               .model_path = f->path, .store = store,
                               .io_ops = &shim_ops, .io_ops_user = c, .read_chunk = 64 * 1024,
                               .queue_depth = 8, .log = xc_log_sink, .log_user = log,
                               .backend = be};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(f->m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    return xc;
}

/* Sweep a transient fault over every read position of a run. */
static void sweep_transient_on(enum fault kind, const struct xd_xio_ops *inner,
                              const char *store_kind, size_t part_bytes) {
    struct fixture f;
    struct xc_fake_device dev;
    struct xd_xc_backend be;
    if (part_bytes) xc_fake_init(&dev, &be, part_bytes, 2);
    fx_open(&f, "mixtral-tiny-q8_0.gguf");
    const char *store = strcmp(store_kind, "packed") ? "gguf" : f.pack;
    float *got = malloc(f.n_logits * sizeof *got);
    int n = 1, recovered = 0;
    for (;; n++) {
        struct shim_cfg c = {.inner = inner, .nth = n};
        atomic_init(&c.kind, kind);
        atomic_init(&c.seen, 0);
        atomic_init(&c.injected, 0);
        struct xc_log log = {0};
        struct xd_xc *xc = open_shimmed(&f, &c, &log, store, part_bytes ? &be : NULL);
        int rc = xc_greedy(f.m, xc, prompt, STEPS, got);
        cr_assert_eq(rc, 0, "%s fault at read %d failed the run (%s)", fault_name[kind], n,
                     xd_strerror(rc));
        if (part_bytes) {
            xd_xc_drain(xc); /* a wrong guess's prefetch may still be reading */
            pthread_mutex_lock(&dev.mu);
            cr_assert_eq(dev.races, 0, "%s at %d: staging reused under a queued copy",
                         fault_name[kind], n);
            cr_assert_gt(dev.parts, 0);
            pthread_mutex_unlock(&dev.mu);
            xc_fake_reset(&dev);
        }
        cr_assert_eq(memcmp(got, f.want, f.n_logits * sizeof *got), 0,
                     "%s fault at read %d changed the logits", fault_name[kind], n);
        cr_assert_eq(xd_xc_check_invariants(xc), 0);
        struct xd_xc_stats st;
        xd_xc_stats_get(xc, &st);
        cr_assert_eq(st.read_errors, 0);
        xd_xc_destroy(xc);
        if (atomic_load(&c.injected) == 0) break; /* past the last read of the run */
        recovered++;
        if (kind == F_EIO || kind == F_CRC) {
            cr_assert_eq(st.read_retries, 1, "%s at %d", fault_name[kind], n);
            cr_assert(strstr(log.text, "layer ") && strstr(log.text, "expert ") &&
                      strstr(log.text, "offset ") && strstr(log.text, "retrying"), "%s", log.text);
        }
        if (kind == F_EAGAIN) cr_assert_eq(st.eagain, 1);
        if (kind == F_SHORT) cr_assert_eq(st.short_reads, 1);
    }
    cr_assert_gt(recovered, 20, "only %d faults injected", recovered);
    if (part_bytes) pthread_mutex_destroy(&dev.mu);
    free(got);
    fx_close(&f);
}

static void sweep_transient(enum fault kind, const struct xd_xio_ops *inner, const char *store_kind) {
    sweep_transient_on(kind, inner, store_kind, 0);
}

Test(xc_fault, transient_eio_is_retried, .timeout = 600) {
    sweep_transient(F_EIO, xd_xio_pread_ops(), "packed");
}
Test(xc_fault, transient_eagain_is_requeued, .timeout = 600) {
    sweep_transient(F_EAGAIN, xd_xio_pread_ops(), "gguf");
}
Test(xc_fault, transient_short_read_is_continued, .timeout = 600) {
    sweep_transient(F_SHORT, xd_xio_pread_ops(), "gguf");
}
Test(xc_fault, transient_bad_checksum_is_retried, .timeout = 600) {
    sweep_transient(F_CRC, xd_xio_pread_ops(), "packed");
}
/* The same through a device backend whose copies stream behind the reads: a retry must wait
 * for the failed attempt's queued copies before its staging buffer is read into again. */
Test(xc_fault, transient_bad_checksum_streamed_commit, .timeout = 600) {
    sweep_transient_on(F_CRC, xd_xio_pread_ops(), "packed", 64 * 1024);
}
Test(xc_fault, transient_eio_streamed_commit, .timeout = 600) {
    sweep_transient_on(F_EIO, xd_xio_pread_ops(), "gguf", 64 * 1024);
}

Test(xc_fault, transient_eio_uring, .timeout = 600) {
    struct xd_xio *probe;
    int fd = open("/dev/null", O_RDONLY);
    struct xd_xio_params p = {.fds = &fd, .n_fds = 1, .depth = 2, .done = shim_done};
    int rc = xd_xio_uring_ops()->open(&p, NULL, &probe);
    close(fd);
    if (rc) cr_skip_test("io_uring unavailable here: %s", xd_strerror(rc));
    xd_xio_uring_ops()->close(probe);
    sweep_transient(F_EIO, xd_xio_uring_ops(), "packed");
}

/* A persistent fault fails the request; the cache stays usable. */
static void persistent(enum fault kind, int want_rc, const char *store_kind) {
    struct fixture f;
    fx_open(&f, "qwen3moe-tiny-q8_0.gguf");
    const char *store = strcmp(store_kind, "packed") ? "gguf" : f.pack;
    float *got = malloc(f.n_logits * sizeof *got);
    for (int n = 1; n <= 40; n += 13) {
        struct shim_cfg c = {.inner = xd_xio_pread_ops(), .nth = n, .persistent = true};
        atomic_init(&c.kind, kind);
        atomic_init(&c.seen, 0);
        atomic_init(&c.injected, 0);
        struct xc_log log = {0};
        struct xd_xc *xc = open_shimmed(&f, &c, &log, store, NULL);
        int rc = xc_greedy(f.m, xc, prompt, STEPS, got); /* asserts nothing stays pinned */
        cr_assert_eq(rc, want_rc, "%s from read %d: got %d (%s)", fault_name[kind], n, rc,
                     xd_strerror(rc));
        cr_assert_eq(xd_xc_check_invariants(xc), 0);
        struct xd_xc_stats st;
        xd_xc_stats_get(xc, &st);
        cr_assert_geq(st.read_errors, 1);
        cr_assert(strstr(log.text, "failed again") && strstr(log.text, "offset "), "%s", log.text);
        /* the fault goes away: the same cache serves the next request, bit for bit (reads
         * still retrying under the fault would otherwise fail the next request that joins
         * them - correctly, but not what this test is about) */
        xd_xc_drain(xc);
        atomic_store(&c.kind, F_NONE);
        rc = xc_greedy(f.m, xc, prompt, STEPS, got);
        cr_assert_eq(rc, 0, "after the %s fault from read %d: %s\n%s", fault_name[kind], n,
                     xd_strerror(rc), log.text);
        cr_assert_eq(memcmp(got, f.want, f.n_logits * sizeof *got), 0);
        cr_assert_eq(xd_xc_check_invariants(xc), 0);
        xd_xc_destroy(xc);
    }
    free(got);
    fx_close(&f);
}

Test(xc_fault, persistent_eio_fails_the_request, .timeout = 600) { persistent(F_EIO, -EIO, "gguf"); }
Test(xc_fault, persistent_bad_checksum_fails_the_request, .timeout = 600) {
    persistent(F_CRC, -EBADMSG, "packed");
}
Test(xc_fault, persistent_eagain_gives_up, .timeout = 600) { persistent(F_EAGAIN, -EAGAIN, "packed"); }

Test(xc_fault, persistent_short_reads_still_complete, .timeout = 600) {
    struct fixture f;
    fx_open(&f, "mixtral-tiny-q8_0.gguf");
    float *got = malloc(f.n_logits * sizeof *got);
    struct shim_cfg c = {.inner = xd_xio_pread_ops(), .nth = 1, .persistent = true};
    atomic_init(&c.kind, F_SHORT);
    atomic_init(&c.seen, 0);
    atomic_init(&c.injected, 0);
    struct xc_log log = {0};
    struct xd_xc *xc = open_shimmed(&f, &c, &log, f.pack, NULL);
    cr_assert_eq(xc_greedy(f.m, xc, prompt, STEPS, got), 0);
    cr_assert_eq(memcmp(got, f.want, f.n_logits * sizeof *got), 0);
    cr_assert_gt(xd_xc_stats(xc)->short_reads, 10);
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    xd_xc_destroy(xc);
    free(got);
    fx_close(&f);
}

/* ---- damaged stores on disk -------------------------------------------------------------- */

Test(xc_fault, corrupted_store_fails_only_that_expert, .timeout = 300) {
    struct fixture f;
    fx_open(&f, "mixtral-tiny-q8_0.gguf");
    /* corrupt one byte of expert (0, 0)'s extent, right after the index */
    struct xd_xs *s;
    char err[256];
    cr_assert_eq(xd_xs_open_packed(f.m, f.pack, &s, err, sizeof err), 0);
    struct xd_xs_expert x;
    xd_xs_expert(s, 1, 3, &x);
    xd_xs_close(s);
    int fd = open(f.pack, O_RDWR);
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, (off_t)(x.r[0].off + 100)), 1);
    b ^= 0xff;
    cr_assert_eq(pwrite(fd, &b, 1, (off_t)(x.r[0].off + 100)), 1);
    close(fd);
    struct xc_log log = {0};
    struct xd_xc_config cfg = {.budget = 32 * f.slot, .model_path = f.path, .store = f.pack,
                               .log = xc_log_sink, .log_user = &log};
    struct xd_xc *xc;
    cr_assert_eq(xd_xc_open(f.m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_expert_view v;
    cr_assert_eq(xd_xc_acquire(xc, 1, 3, &v), -EBADMSG);
    char off[64];
    snprintf(off, sizeof off, "offset %llu", (unsigned long long)x.r[0].off);
    cr_assert(strstr(log.text, "layer 1 expert 3") && strstr(log.text, off), "%s", log.text);
    cr_assert_eq(xd_xc_pinned(xc), 0);
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    /* every other expert is fine */
    for (int64_t l = 0; l < f.m->hp.n_layer; l++)
        for (int64_t e = 0; e < f.m->hp.n_expert; e++) {
            if (l == 1 && e == 3) continue;
            cr_assert_eq(xd_xc_acquire(xc, l, e, &v), 0);
            xd_xc_release(xc, l, e);
        }
    /* a run routed through it fails; asking again reads it again (and fails again) */
    float *got = malloc(f.n_logits * sizeof *got);
    int rc = xc_greedy(f.m, xc, "The quick brown fox jumps over the lazy dog", STEPS, got);
    cr_assert(rc == 0 || rc == -EBADMSG);
    cr_assert_eq(xd_xc_acquire(xc, 1, 3, &v), -EBADMSG);
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    xd_xc_destroy(xc);
    free(got);
    fx_close(&f);
}

Test(xc_fault, store_truncated_while_open_fails_requests, .timeout = 300) {
    struct fixture f;
    fx_open(&f, "qwen3moe-tiny-q8_0.gguf");
    struct xd_xc_config cfg = {.budget = 6 * f.slot, .model_path = f.path, .store = f.pack,
                               .log = xc_log_sink};
    struct xc_log log = {0};
    cfg.log_user = &log;
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(f.m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(f.pack, &st), 0);
    cr_assert_eq(truncate(f.pack, st.st_size / 2 + 1000), 0); /* mid-extent, unaligned */
    float *got = malloc(f.n_logits * sizeof *got);
    int rc = xc_greedy(f.m, xc, prompt, STEPS, got);
    cr_assert(rc == XD_E_TRUNCATED || rc == -EBADMSG, "%d %s", rc, xd_strerror(rc));
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    cr_assert_eq(xd_xc_pinned(xc), 0);
    xd_xc_destroy(xc);
    /* reopening refuses it up front */
    cr_assert_eq(xd_xc_open(f.m, &cfg, &xc, err, sizeof err), XD_E_TRUNCATED);
    free(got);
    fx_close(&f);
}

Test(xc_fault, run_with_a_corrupted_store_exits_cleanly, .timeout = 300) {
    struct fixture f;
    fx_open(&f, "mixtral-tiny-q8_0.gguf");
    /* corrupt every extent: whichever expert the prompt needs first fails */
    struct xd_xs *s;
    char err[256];
    cr_assert_eq(xd_xs_open_packed(f.m, f.pack, &s, err, sizeof err), 0);
    int fd = open(f.pack, O_RDWR);
    for (int64_t l = 0; l < f.m->hp.n_layer; l++)
        for (int64_t e = 0; e < f.m->hp.n_expert; e++) {
            struct xd_xs_expert x;
            xd_xs_expert(s, l, e, &x);
            cr_assert_eq(pwrite(fd, "\x7f", 1, (off_t)(x.r[0].off + 4097)), 1);
        }
    close(fd);
    xd_xs_close(s);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s run -m '%s' -p hello -n 4 --temp 0 --expert-cache %llu "
             "--expert-store '%s' 2>&1", XD_EXPERTD_BIN, f.path, (unsigned long long)(4 * f.slot),
             f.pack);
    FILE *p = popen(cmd, "r");
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "killed by a signal: %s", buf);
    cr_assert_eq(WEXITSTATUS(st), 1, "%s", buf);
    cr_assert(strstr(buf, "forward pass failed") && strstr(buf, "layer 0 expert") &&
              strstr(buf, "failed again"), "%s", buf);
    fx_close(&f);
}
