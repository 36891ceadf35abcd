/* test_xc.c - the expert cache's pieces and its contracts, on the tiny fixtures.
 *
 * Budget parsing and the minimum-budget message; CRC-32C against its definition; the LRU lists;
 * packing a store and reading every expert back through both stores and both I/O engines
 * (bytes equal to the model's); stores from another model, truncated or damaged refused at open;
 * sets hand out resident experts first; many threads acquiring and releasing on a cache of three
 * slots never see a pinned expert change under them; the trace replay predicts the real cache's
 * LRU hit count exactly and Belady's optimum is never below LRU.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "crc32c.h"
#include "lru.h"
#include "trace.h"
#include "xc_test_util.h"
#include "xd_error.h"

/* ---- configuration text ------------------------------------------------------------------ */

Test(xc_config, parse_size) {
    const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"4096", 4096},           {"3MiB", 3u << 20},     {"1.5GiB", 1610612736ull},
        {"800M", 800000000ull},   {"1k", 1000},           {"2 KiB", 2048},
        {"2kib", 2048},           {"10GB", 10000000000ull}, {"0.5m", 500000},
        {"7B", 7},                {"1TiB", 1ull << 40},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        cr_assert_eq(xd_xc_parse_size(ok[i].s, &v), 0, "%s", ok[i].s);
        cr_assert_eq(v, ok[i].v, "%s: %llu", ok[i].s, (unsigned long long)v);
    }
    const char *bad[] = {"", "abc", "-1", "3XB", "1e400", "MiB", "1.5 GiBs", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 77;
        cr_assert_eq(xd_xc_parse_size(bad[i], &v), XD_E_INVALID, "'%s' accepted", bad[i]);
        cr_assert_eq(v, 77);
    }
    char b[32];
    cr_assert_str_eq(xd_xc_format_size(3u << 20, b, sizeof b), "3.00 MiB");
    cr_assert_str_eq(xd_xc_format_size(100, b, sizeof b), "100 B");
    enum xd_xc_policy p;
    enum xd_xc_io io;
    cr_assert_eq(xd_xc_policy_parse("layer", &p), 0);
    cr_assert_eq(p, XD_XC_POLICY_LAYER);
    cr_assert_eq(xd_xc_policy_parse("lru", &p), XD_E_INVALID);
    cr_assert_eq(xd_xc_io_parse("pread", &io), 0);
    cr_assert_eq(io, XD_XC_IO_PREAD);
}

Test(xc_config, command_line_options) {
    struct xd_xc_config c = {0};
    char err[256];
    cr_assert_eq(xd_xc_config_option(&c, "--expert-cache", "1.5GiB", err, sizeof err), 2);
    cr_assert_eq(c.budget, 1610612736ull);
    cr_assert_eq(xd_xc_config_option(&c, "--no-prefetch", "x", err, sizeof err), 1);
    cr_assert(c.no_prefetch);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-evict", "lru", err, sizeof err), 2);
    cr_assert_eq(c.evict, XD_XC_EVICT_LRU);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-policy", "layer", err, sizeof err), 2);
    cr_assert_eq(c.policy, XD_XC_POLICY_LAYER);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-io", "pread", err, sizeof err), 2);
    cr_assert_eq(c.io, XD_XC_IO_PREAD);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-chunk", "256KiB", err, sizeof err), 2);
    cr_assert_eq(c.read_chunk, 262144);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-qd", "16", err, sizeof err), 2);
    cr_assert_eq(c.queue_depth, 16);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-prefetch-layers", "2", err, sizeof err), 2);
    cr_assert_eq(c.prefetch_layers, 2);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-store", "/x.xdpack", err, sizeof err), 2);
    cr_assert_str_eq(c.store, "/x.xdpack");
    cr_assert_eq(xd_xc_config_option(&c, "--expert-trace", "/t", err, sizeof err), 2);
    cr_assert_str_eq(c.trace_path, "/t");
    cr_assert_eq(xd_xc_config_option(&c, "--temp", "0", err, sizeof err), 0);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-cache", NULL, err, sizeof err), XD_E_INVALID);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-cache", "lots", err, sizeof err), XD_E_INVALID);
    cr_assert(strstr(err, "--expert-cache") && strstr(err, "lots"), "%s", err);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-chunk", "1000", err, sizeof err), XD_E_INVALID);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-qd", "0", err, sizeof err), XD_E_INVALID);
    cr_assert_eq(xd_xc_config_option(&c, "--expert-evict", "fifo", err, sizeof err), XD_E_INVALID);
    cr_assert(strstr(xd_xc_config_usage(), "--expert-cache SIZE"));
}

/* ---- CRC-32C ----------------------------------------------------------------------------- */

static uint32_t crc_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = ~0u;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

Test(xc_crc, matches_definition) {
    cr_assert_eq(xd_crc32c(0, "123456789", 9), 0xE3069283u); /* the standard check value */
    unsigned char buf[4099];
    uint64_t s = 1;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)((s = s * 6364136223846793005ull + 1) >> 56);
    for (size_t n = 0; n < sizeof buf; n += 37) {
        cr_assert_eq(xd_crc32c(0, buf, n), crc_bitwise(buf, n), "n=%zu", n);
        /* continuing from a prefix equals the whole */
        cr_assert_eq(xd_crc32c(xd_crc32c(0, buf, n / 3), buf + n / 3, n - n / 3), crc_bitwise(buf, n));
    }
}

/* ---- LRU lists --------------------------------------------------------------------------- */

Test(xc_lru, push_remove_oldest) {
    struct xd__lru l;
    cr_assert_eq(xd__lru_init(&l, 5, 2), 0);
    for (int s = 0; s < 5; s++) xd__lru_push(&l, s % 2, s);
    cr_assert_eq(xd__lru_check(&l), 0);
    cr_assert_eq(xd__lru_oldest(&l, 0), 0);
    cr_assert_eq(xd__lru_oldest(&l, 1), 1);
    xd__lru_remove(&l, 0);
    xd__lru_push(&l, 0, 0); /* touched: now newest */
    cr_assert_eq(xd__lru_oldest(&l, 0), 2);
    xd__lru_remove(&l, 2);
    xd__lru_remove(&l, 2); /* not listed: no-op */
    cr_assert_eq(xd__lru_oldest(&l, 0), 4);
    cr_assert_eq(xd__lru_part_of(&l, 2), -1);
    cr_assert_eq(xd__lru_check(&l), 0);
    xd__lru_free(&l);
}

/* ---- stores ------------------------------------------------------------------------------ */

static const struct xd_tensor *part_of(const struct xd_layer *L, int p) {
    return p == 0 ? &L->gate_exps : p == 1 ? &L->up_exps : &L->down_exps;
}

/* Read every expert through the store's regions with plain preads and compare with the mmap. */
static void check_store_regions(const struct xd_model *m, struct xd_xs *s) {
    int fd = open(xd_xs_path(s), O_RDONLY);
    cr_assert(fd >= 0);
    unsigned char *slot = malloc(xd_xs_slot_bytes(s));
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int64_t e = 0; e < m->hp.n_expert; e++) {
            struct xd_xs_expert x;
            xd_xs_expert(s, l, e, &x);
            for (int r = 0; r < x.n_regions; r++) {
                cr_assert_eq(x.r[r].off % XD_XS_ALIGN, 0);
                cr_assert_eq(x.r[r].len % XD_XS_ALIGN, 0);
                cr_assert_leq(x.r[r].slot_off + x.r[r].len, xd_xs_slot_bytes(s));
                cr_assert_eq(pread(fd, slot + x.r[r].slot_off, x.r[r].need, (off_t)x.r[r].off),
                             (ssize_t)x.r[r].need);
            }
            if (x.has_crc) cr_assert_eq(xd_crc32c(0, slot, x.r[0].len), x.crc);
            for (int p = 0; p < XD_XS_PARTS; p++) {
                struct xd_tensor v = xd_tensor_expert(part_of(&m->layers[l], p), e);
                cr_assert_eq(memcmp(slot + x.part_off[p], v.data, v.nb[2]), 0,
                             "layer %lld expert %lld part %d", (long long)l, (long long)e, p);
            }
        }
    free(slot);
    close(fd);
}

Test(xc_store, gguf_and_packed_regions_hold_the_model_bytes) {
    for (size_t f = 0; f < XC_N_FIXTURES; f++) {
        char *path;
        struct xd_model *m = xc_load(xc_fixtures[f], &path);
        char err[256];
        struct xd_xs *s;
        cr_assert_eq(xd_xs_open_gguf(m, path, &s, err, sizeof err), 0, "%s", err);
        cr_assert_str_eq(xd_xs_kind(s), "gguf");
        cr_assert(xd_xs_direct(s), "O_DIRECT refused on the fixtures' filesystem");
        check_store_regions(m, s);
        xd_xs_close(s);
        cr_assert_eq(xd_xs_open_gguf(m, NULL, &s, err, sizeof err), 0, "%s", err); /* own fd */
        xd_xs_close(s);
        char *store = xc_pack_temp(m);
        cr_assert_eq(xd_xs_open_packed(m, store, &s, err, sizeof err), 0, "%s", err);
        cr_assert_str_eq(xd_xs_kind(s), "packed");
        check_store_regions(m, s);
        xd_xs_close(s);
        unlink(store);
        free(store);
        free(path);
        xd_model_free(m);
    }
}

Test(xc_store, refuses_foreign_truncated_and_damaged_stores) {
    struct xd_model *mix = xc_load("mixtral-tiny-q8_0.gguf", NULL);
    struct xd_model *mix4 = xc_load("mixtral-tiny-q4_k_m.gguf", NULL);
    struct xd_model *qw = xc_load("qwen3moe-tiny-q8_0.gguf", NULL);
    char *store = xc_pack_temp(mix);
    struct xd_xs *s;
    char err[512];
    cr_assert_eq(xd_xs_open_packed(qw, store, &s, err, sizeof err), XD_E_INVALID);
    cr_assert(strstr(err, "another model"), "%s", err);
    cr_assert_eq(xd_xs_open_packed(mix4, store, &s, err, sizeof err), XD_E_INVALID); /* same shape class */
    struct stat st;
    cr_assert_eq(stat(store, &st), 0);
    cr_assert_eq(truncate(store, st.st_size - 4096), 0);
    cr_assert_eq(xd_xs_open_packed(mix, store, &s, err, sizeof err), XD_E_TRUNCATED);
    cr_assert(strstr(err, "truncated"), "%s", err);
    free(store);
    store = xc_pack_temp(mix);
    int fd = open(store, O_WRONLY);
    cr_assert_eq(pwrite(fd, "X", 1, 4096 + 10), 1); /* inside the index: its checksum fails */
    close(fd);
    cr_assert_eq(xd_xs_open_packed(mix, store, &s, err, sizeof err), XD_E_FORMAT);
    fd = open(store, O_WRONLY);
    cr_assert_eq(pwrite(fd, "Y", 1, 0), 1); /* the magic */
    close(fd);
    cr_assert_eq(xd_xs_open_packed(mix, store, &s, err, sizeof err), XD_E_FORMAT);
    unlink(store);
    free(store);
    char path[64];
    cr_assert_eq(xd_xs_default_path("/a/b/model.gguf", path, sizeof path), 17);
    cr_assert_str_eq(path, "/a/b/model.xdpack");
    xd_xs_default_path("weights.bin", path, sizeof path);
    cr_assert_str_eq(path, "weights.bin.xdpack");
    xd_model_free(mix);
    xd_model_free(mix4);
    xd_model_free(qw);
}

/* ---- opening a cache --------------------------------------------------------------------- */

Test(xc_open, budget_below_top_k_names_the_minimum) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    struct xd_xc_config cfg = {.budget = 2 * slot - 1, .model_path = path, .store = "gguf"};
    struct xd_xc *xc = NULL;
    char err[512], want[32];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), XD_E_INVALID);
    cr_assert_null(xc);
    xd_xc_format_size(2 * slot, want, sizeof want);
    cr_assert(strstr(err, want) && strstr(err, "top-k (2)"), "%s", err);
    cfg.budget = 2 * slot;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_xc_info in;
    xd_xc_info(xc, &in);
    cr_assert_eq(in.n_slots, 2);
    cr_assert(in.offloaded);
    xd_xc_destroy(xc);
    /* per-layer needs top-k per layer */
    cfg.policy = XD_XC_POLICY_LAYER;
    cfg.budget = 7 * slot;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), XD_E_INVALID);
    cr_assert(strstr(err, "per-layer"), "%s", err);
    cfg.budget = 8 * slot;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_destroy(xc);
    /* more than every expert: capped */
    cfg.policy = XD_XC_POLICY_GLOBAL;
    cfg.budget = 1000 * slot;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_info(xc, &in);
    cr_assert_eq(in.n_slots, 32);
    xd_xc_destroy(xc);
    free(path);
    xd_model_free(m);
}

/* A budget sized in expert bytes buys fewer GGUF-direct slots (each slice rounded out to 4 KiB):
 * the cache says so and points at `expertd pack`; a packed store's slots are the experts. */
Test(xc_open, budget_in_expert_bytes_says_when_rounding_costs_a_slot) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    char *pack = xc_pack_temp(m);
    const uint64_t slot = xc_slot_bytes(m, path, "gguf"), pslot = xc_slot_bytes(m, path, pack);
    cr_assert_gt(slot, m->expert_bytes, "the fixture's slices are not 4 KiB-aligned");
    const uint64_t want = 4, budget = want * m->expert_bytes;
    cr_assert_lt(budget / slot, want);
    struct xc_log log = {0};
    struct xd_xc_config cfg = {.budget = budget, .model_path = path, .store = "gguf",
                               .log = xc_log_sink, .log_user = &log};
    struct xd_xc *xc;
    struct xd_xc_info in;
    char err[256], line[1024];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_info(xc, &in);
    cr_assert_eq(in.n_slots, (int32_t)(budget / slot));
    cr_assert(strstr(log.text, "fewer than the 4 experts") && strstr(log.text, "expertd pack"),
              "%s", log.text);
    char n[16];
    snprintf(n, sizeof n, "= %d slots", in.n_slots);
    cr_assert(strstr(xd_xc_describe(xc, line, sizeof line), n), "%s", line);
    xd_xc_destroy(xc);
    /* packed: one 4 KiB-aligned extent per expert, so the same budget buys what it holds the
     * bytes of unless the extent's own rounding still costs one (then no `pack` advice) */
    log = (struct xc_log){0};
    cfg.store = pack;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_info(xc, &in);
    cr_assert_eq(in.n_slots, (int32_t)(budget / pslot));
    if (budget / pslot == want) cr_assert_eq(log.lines, 0, "%s", log.text);
    else cr_assert(!strstr(log.text, "expertd pack"), "%s", log.text);
    xd_xc_destroy(xc);
    /* whole slots: silent */
    log = (struct xc_log){0};
    cfg.store = "gguf";
    cfg.budget = want * slot;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    cr_assert_eq(log.lines, 0, "%s", log.text);
    xd_xc_destroy(xc);
    /* the resident cache describes itself as nothing */
    cr_assert_eq(xd_xc_create_resident(m, &xc), 0);
    cr_assert_str_eq(xd_xc_describe(xc, line, sizeof line), "");
    xd_xc_destroy(xc);
    unlink(pack);
    free(pack);
    free(path);
    xd_model_free(m);
}

Test(xc_open, auto_store_prefers_a_matching_pack_beside_the_model) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    /* a private copy of the model, so the pack can sit beside it */
    char dir[] = "/tmp/xdtest-dir-XXXXXX";
    cr_assert(mkdtemp(dir));
    char model[128], pack[128];
    snprintf(model, sizeof model, "%s/m.gguf", dir);
    snprintf(pack, sizeof pack, "%s/m.xdpack", dir);
    size_t n;
    char *bytes = xd_test_read_file(path, &n);
    FILE *f = fopen(model, "wb");
    cr_assert(fwrite(bytes, 1, n, f) == n);
    fclose(f);
    free(bytes);
    struct xd_model *mc;
    char err[256];
    cr_assert_eq(xd_model_load(model, &mc, err, sizeof err), 0);
    struct xd_xc_config cfg = {.budget = 1u << 30, .model_path = model};
    struct xd_xc *xc;
    struct xd_xc_info in;
    cr_assert_eq(xd_xc_open(mc, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_info(xc, &in);
    cr_assert_str_eq(in.store_kind, "gguf");
    xd_xc_destroy(xc);
    cr_assert_eq(xd_xs_pack(mc, pack, NULL, NULL, err, sizeof err), 0);
    cr_assert_eq(xd_xc_open(mc, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_info(xc, &in);
    cr_assert_str_eq(in.store_kind, "packed");
    cr_assert_str_eq(in.store_path, pack);
    xd_xc_destroy(xc);
    cfg.store = "gguf";
    cr_assert_eq(xd_xc_open(mc, &cfg, &xc, err, sizeof err), 0, "%s", err);
    xd_xc_info(xc, &in);
    cr_assert_str_eq(in.store_kind, "gguf");
    xd_xc_destroy(xc);
    unlink(pack);
    unlink(model);
    rmdir(dir);
    xd_model_free(mc);
    free(path);
    xd_model_free(m);
}

/* ---- acquiring ---------------------------------------------------------------------------- */

static void check_view(const struct xd_model *m, int64_t l, int64_t e, const struct xd_expert_view *v) {
    const struct xd_tensor *got[3] = {&v->gate, &v->up, &v->down};
    for (int p = 0; p < 3; p++) {
        struct xd_tensor want = xd_tensor_expert(part_of(&m->layers[l], p), e);
        cr_assert_eq(got[p]->type, want.type);
        cr_assert_eq(got[p]->ne[0], want.ne[0]);
        cr_assert_eq(got[p]->ne[1], want.ne[1]);
        cr_assert_eq(got[p]->nb[1], want.nb[1]);
        cr_assert_eq((uintptr_t)got[p]->data % 32, (uintptr_t)want.data % 32);
        cr_assert_eq(memcmp(got[p]->data, want.data, want.nb[2]), 0, "layer %lld expert %lld part %d",
                     (long long)l, (long long)e, p);
    }
}

static void acquire_all(const char *fixture, const char *store_kind, enum xd_xc_io io) {
    char *path;
    struct xd_model *m = xc_load(fixture, &path);
    char *pack = strcmp(store_kind, "packed") ? NULL : xc_pack_temp(m);
    const char *store = pack ? pack : "gguf";
    uint64_t slot = xc_slot_bytes(m, path, store);
    struct xd_xc_config cfg = {.budget = (uint64_t)m->hp.n_expert_used * slot, .model_path = path,
                               .store = store, .io = io};
    struct xd_xc *xc;
    char err[256];
    int rc = xd_xc_open(m, &cfg, &xc, err, sizeof err);
    if (rc && io == XD_XC_IO_URING) {
        xd_model_free(m);
        cr_skip_test("io_uring unavailable here: %s", err);
    }
    cr_assert_eq(rc, 0, "%s", err);
    for (int round = 0; round < 2; round++)
        for (int64_t l = 0; l < m->hp.n_layer; l++)
            for (int64_t e = 0; e < m->hp.n_expert; e++) {
                struct xd_expert_view v;
                cr_assert_eq(xd_xc_acquire(xc, l, e, &v), 0);
                check_view(m, l, e, &v);
                cr_assert_eq(xd_xc_pinned(xc), 1);
                xd_xc_release(xc, l, e);
                cr_assert_eq(xd_xc_check_invariants(xc), 0);
            }
    struct xd_xc_stats st;
    xd_xc_stats_get(xc, &st);
    const uint64_t n = (uint64_t)(m->hp.n_layer * m->hp.n_expert);
    cr_assert_eq(st.acquires, 2 * n);
    cr_assert_eq(st.misses, 2 * n, "a cache of top-k slots cycling through every expert never hits");
    cr_assert_eq(st.reads, 2 * n);
    cr_assert_eq(st.read_errors, 0);
    cr_assert_gt(st.io_busy_ns, 0);
    cr_assert_eq(xd_xc_pinned(xc), 0);
    xd_xc_destroy(xc);
    if (pack) unlink(pack);
    free(pack);
    free(path);
    xd_model_free(m);
}

Test(xc_acquire, every_expert_gguf_uring) {
    for (size_t f = 0; f < XC_N_FIXTURES; f++) acquire_all(xc_fixtures[f], "gguf", XD_XC_IO_URING);
}
Test(xc_acquire, every_expert_packed_uring) {
    for (size_t f = 0; f < XC_N_FIXTURES; f++) acquire_all(xc_fixtures[f], "packed", XD_XC_IO_URING);
}
Test(xc_acquire, every_expert_gguf_pread) {
    for (size_t f = 0; f < XC_N_FIXTURES; f++) acquire_all(xc_fixtures[f], "gguf", XD_XC_IO_PREAD);
}
Test(xc_acquire, every_expert_packed_pread) {
    for (size_t f = 0; f < XC_N_FIXTURES; f++) acquire_all(xc_fixtures[f], "packed", XD_XC_IO_PREAD);
}

Test(xc_set, hands_out_resident_experts_first_and_counts_hits) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    struct xd_xc_config cfg = {.budget = 8 * slot, .model_path = path, .store = "gguf"};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_expert_view v;
    for (int e = 5; e <= 6; e++) { /* make 5 and 6 of layer 1 resident */
        cr_assert_eq(xd_xc_acquire(xc, 1, e, &v), 0);
        xd_xc_release(xc, 1, e);
    }
    struct xd_xc_set *set;
    cr_assert_eq(xd_xc_set_create(xc, &set), 0);
    const int32_t want[] = {0, 5, 3, 6};
    cr_assert_eq(xd_xc_set_begin(set, 1, want, 4), 0);
    const struct xd_xc_stats *st = xd_xc_stats(xc);
    cr_assert_eq(st->hits, 2);
    cr_assert_eq(st->misses, 4);
    int32_t e, order[4], n = 0;
    while (xd_xc_set_next(set, &e, &v) == 1) {
        check_view(m, 1, e, &v);
        order[n++] = e;
        xd_xc_release(xc, 1, e);
        cr_assert_eq(xd_xc_check_invariants(xc), 0);
    }
    cr_assert_eq(n, 4);
    cr_assert_eq(order[0], 5);
    cr_assert_eq(order[1], 6);
    cr_assert((order[2] == 0 && order[3] == 3) || (order[2] == 3 && order[3] == 0));
    cr_assert_eq(xd_xc_pinned(xc), 0);
    /* invalid sets are refused and leave nothing pinned */
    const int32_t dup[] = {1, 1}, out_of_range[] = {8};
    cr_assert_eq(xd_xc_set_begin(set, 0, dup, 2), XD_E_INVALID);
    cr_assert_eq(xd_xc_set_begin(set, 0, out_of_range, 1), XD_E_INVALID);
    cr_assert_eq(xd_xc_set_begin(set, 4, want, 1), XD_E_INVALID);
    cr_assert_eq(xd_xc_set_next(set, &e, &v), 0);
    /* ending a set early drops its reservations */
    cr_assert_eq(xd_xc_set_begin(set, 2, want, 4), 0);
    cr_assert_gt(xd_xc_pinned(xc), 0);
    xd_xc_set_end(set);
    cr_assert_eq(xd_xc_pinned(xc), 0);
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    xd_xc_set_destroy(set);
    xd_xc_destroy(xc);
    free(path);
    xd_model_free(m);
}

Test(xc_set, a_set_larger_than_the_cache_still_completes) {
    char *path;
    struct xd_model *m = xc_load("qwen3moe-tiny-q8_0.gguf", &path); /* 16 experts, top-4 */
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    struct xd_xc_config cfg = {.budget = 4 * slot, .model_path = path, .store = "gguf"};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_xc_set *set;
    cr_assert_eq(xd_xc_set_create(xc, &set), 0);
    int32_t all[16];
    for (int i = 0; i < 16; i++) all[i] = 15 - i;
    for (int l = 0; l < 3; l++) {
        cr_assert_eq(xd_xc_set_begin(set, l, all, 16), 0);
        uint32_t seen = 0;
        int32_t e;
        struct xd_expert_view v;
        while (xd_xc_set_next(set, &e, &v) == 1) {
            check_view(m, l, e, &v);
            cr_assert_eq(seen & (1u << e), 0);
            seen |= 1u << e;
            xd_xc_release(xc, l, e);
        }
        cr_assert_eq(seen, 0xffff);
        cr_assert_eq(xd_xc_check_invariants(xc), 0);
    }
    xd_xc_set_destroy(set);
    xd_xc_destroy(xc);
    free(path);
    xd_model_free(m);
}

/* The replay of the trace at path, with n_slots under policy and evict, predicts the hits the
 * cache counted (st) to the access. Removes the trace. */
static void check_replay(const char *path, int64_t n_slots, enum xd_xc_policy policy,
                         enum xd_xc_evict evict, const struct xd_xc_stats *st) {
    char err[256];
    struct xd_xc_trace t;
    cr_assert_eq(xd_xc_trace_load(path, &t, err, sizeof err), 0, "%s", err);
    struct xd_xc_sim sim;
    cr_assert_eq(xd_xc_sim_online(&t, n_slots, policy, evict, &sim), 0);
    cr_assert_eq(sim.accesses, st->acquires);
    cr_assert_eq(sim.hits, st->hits, "replay %llu hits, cache %llu", (unsigned long long)sim.hits,
                 (unsigned long long)st->hits);
    xd_xc_trace_free(&t);
    unlink(path);
}

/* A batch that routes to every expert of every layer, with room for a quarter of them: each
 * layer's misses must wait for the slots of the layer's own experts (computed and released
 * within the layer) instead of evicting the next layers' experts, so those are hits at their
 * turn. Greedy reservation (every miss takes a slot at once) evicted them and hit nothing.
 * The replay of the recorded trace predicts the same hits. */
Test(xc_set, full_sets_keep_the_other_layers_experts) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path); /* 4 layers, 8 experts */
    const int64_t nl = m->hp.n_layer, ne = m->hp.n_expert;
    cr_assert_eq(ne, 8);
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    char trace[] = "/tmp/xdtest-trace-XXXXXX";
    int fd = mkstemp(trace);
    close(fd);
    struct xd_xc_config cfg = {.budget = 8 * slot, .model_path = path, .store = "gguf",
                               .trace_path = trace, .no_prefetch = true};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_xc_set *set;
    cr_assert_eq(xd_xc_set_create(xc, &set), 0);
    const int32_t all[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    uint64_t warm_hits = 0;
    const int cycles = 12;
    for (int c = 0; c < cycles; c++) {
        if (c == 2) warm_hits = xd_xc_stats(xc)->hits;
        for (int64_t l = 0; l < nl; l++) {
            cr_assert_eq(xd_xc_set_begin(set, l, all, 8), 0);
            int32_t e, n = 0;
            struct xd_expert_view v;
            while (xd_xc_set_next(set, &e, &v) == 1) {
                check_view(m, l, e, &v);
                xd_xc_release(xc, l, e);
                n++;
            }
            cr_assert_eq(n, 8);
            cr_assert_eq(xd_xc_check_invariants(xc), 0);
        }
    }
    struct xd_xc_stats st;
    xd_xc_stats_get(xc, &st);
    /* Belady keeps 8 of the 32 and hits 8 a cycle; at least 7 of them here (one slot cycles
     * each layer's misses) */
    const uint64_t hits = st.hits - warm_hits;
    cr_assert_geq(hits, 7 * (uint64_t)(cycles - 2), "%llu hits in %d cycles", (unsigned long long)hits,
                  cycles - 2);
    xd_xc_set_destroy(set);
    xd_xc_destroy(xc); /* flushes the trace */
    check_replay(trace, 8, XD_XC_POLICY_GLOBAL, XD_XC_EVICT_NEXT_USE, &st);
    free(path);
    xd_model_free(m);
}

Test(xc_set, resident_cache_behaves_the_same) {
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", NULL);
    struct xd_xc *xc;
    cr_assert_eq(xd_xc_create_resident(m, &xc), 0);
    struct xd_xc_set *set;
    cr_assert_eq(xd_xc_set_create(xc, &set), 0);
    const int32_t want[] = {7, 2};
    cr_assert_eq(xd_xc_set_begin(set, 3, want, 2), 0);
    cr_assert_eq(xd_xc_pinned(xc), 2);
    int32_t e;
    struct xd_expert_view v;
    cr_assert_eq(xd_xc_set_next(set, &e, &v), 1);
    cr_assert_eq(e, 7);
    cr_assert_eq(v.gate.data, xd_tensor_expert(&m->layers[3].gate_exps, 7).data);
    xd_xc_release(xc, 3, 7);
    xd_xc_set_end(set); /* 2 never handed out */
    cr_assert_eq(xd_xc_pinned(xc), 0);
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    cr_assert_not(xd_xc_wants_prefetch(xc));
    xd_xc_set_destroy(set);
    xd_xc_destroy(xc);
    xd_model_free(m);
}

Test(xc_prefetch, hints_read_ahead_and_are_counted) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    struct xd_xc_config cfg = {.budget = 6 * slot, .model_path = path, .store = "gguf",
                               .evict = XD_XC_EVICT_LRU};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    cr_assert(xd_xc_wants_prefetch(xc));
    cr_assert_eq(xd_xc_prefetch_layers(xc), 1);
    const int32_t hint[] = {1, 4};
    xd_xc_prefetch(xc, 2, hint, 2);
    struct xd_expert_view v;
    cr_assert_eq(xd_xc_acquire(xc, 2, 4, &v), 0); /* correct guess */
    check_view(m, 2, 4, &v);
    xd_xc_release(xc, 2, 4);
    cr_assert_eq(xd_xc_acquire(xc, 2, 0, &v), 0); /* not hinted */
    xd_xc_release(xc, 2, 0);
    /* fill the cache so the unused prefetch of expert 1 is evicted */
    for (int e = 0; e < 8; e++) {
        cr_assert_eq(xd_xc_acquire(xc, 0, e, &v), 0);
        xd_xc_release(xc, 0, e);
    }
    struct xd_xc_stats st;
    xd_xc_stats_get(xc, &st);
    cr_assert_eq(st.prefetches, 2);
    cr_assert_eq(st.prefetch_issued, 2);
    cr_assert_eq(st.prefetch_hits, 1);
    cr_assert_eq(st.prefetch_correct, 1);
    cr_assert_eq(st.prefetch_wasted, 1);
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    xd_xc_destroy(xc);
    cfg.no_prefetch = true;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    cr_assert_not(xd_xc_wants_prefetch(xc));
    xd_xc_prefetch(xc, 2, hint, 2);
    cr_assert_eq(xd_xc_stats(xc)->prefetch_issued, 0);
    xd_xc_destroy(xc);
    free(path);
    xd_model_free(m);
}

Test(xc_evict, next_use_keeps_hot_experts_and_the_layers_coming_next) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path); /* 4 layers x 8 experts */
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    struct xd_xc_config cfg = {.budget = 3 * slot, .model_path = path, .store = "gguf",
                               .no_prefetch = true};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_expert_view v;
#define GET(l, e)                                                                             \
    do {                                                                                       \
        cr_assert_eq(xd_xc_acquire(xc, l, e, &v), 0);                                         \
        xd_xc_release(xc, l, e);                                                               \
    } while (0)
    /* expert 0 of layer 1 is hot: asked for on every visit of layer 1 */
    for (int i = 0; i < 4; i++) GET(1, 0);
    GET(2, 5); /* layer 2, once */
    GET(3, 6); /* layer 3, once: the cache is full (1:0, 2:5, 3:6) */
    /* in layer 3, room for 3:7 is made: layer 1 comes round in 2 steps and picks expert 0
     * every time (expected next use 2.7 steps), layer 2 in 3 steps with 2:5 picked 1 time in
     * 2 (5.4), layer 3 - the one just used - only after a full cycle, 3:6 picked 1 time in 3
     * (9.6): 3:6 goes, and the hot 1:0 stays although it is the least recently used */
    GET(3, 7);
    const struct xd_xc_stats *st = xd_xc_stats(xc);
    uint64_t misses = st->misses;
    GET(1, 0);
    cr_assert_eq(st->misses, misses, "the hot expert was evicted");
    GET(2, 5);
    cr_assert_eq(st->misses, misses, "2:5 was evicted instead of 3:6");
    GET(3, 6);
    cr_assert_eq(st->misses, misses + 1, "3:6 should have been the victim");
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    xd_xc_destroy(xc);
    /* LRU, same sequence: the hot expert is the oldest and goes first */
    cfg.evict = XD_XC_EVICT_LRU;
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 4; i++) GET(1, 0);
    GET(2, 5);
    GET(3, 6);
    GET(3, 7);
    st = xd_xc_stats(xc);
    misses = st->misses;
    GET(1, 0);
    cr_assert_eq(st->misses, misses + 1);
#undef GET
    xd_xc_destroy(xc);
    free(path);
    xd_model_free(m);
}

/* ---- a device backend: slots in "device" memory, reads through host staging ---------------- */

/* Every expert reaches the "device" slots only through the backend's commit: whole (after the
 * read) or streamed (parts while the read goes on, copied later by the fake's queue), from
 * the GGUF file (three regions per expert) and from a packed store (one, checksummed). The
 * run's logits must equal the resident run's bit for bit either way. */
static void device_backend(size_t part_bytes, uint32_t read_chunk) {
    char *path;
    struct xd_model *m = xc_load("qwen3moe-tiny-q8_0.gguf", &path);
    char *pack = xc_pack_temp(m);
    struct xc_fake_device dev;
    struct xd_xc_backend be;
    xc_fake_init(&dev, &be, part_bytes, 2);
    const int64_t n_logits = 4 * m->hp.n_vocab;
    float *want = malloc((size_t)n_logits * sizeof *want), *got = malloc((size_t)n_logits * sizeof *got);
    cr_assert_eq(xc_greedy(m, NULL, "Hello there", 3, want), 0);
    const char *stores[] = {"gguf", pack};
    for (int i = 0; i < 2; i++) {
        xc_fake_reset(&dev);
        uint64_t slot = xc_slot_bytes(m, path, stores[i]);
        struct xd_xc_config cfg = {.budget = 6 * slot, .model_path = path, .store = stores[i],
                                   .backend = &be, .read_chunk = read_chunk,
                                   /* one read in flight: each completion lands one chunk, so
                                    * a streamed commit's parts show as they are cut */
                                   .queue_depth = part_bytes ? 1 : 0};
        struct xd_xc *xc;
        char err[256];
        cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
        cr_assert_eq(xc_greedy(m, xc, "Hello there", 3, got), 0);
        cr_assert_eq(memcmp(want, got, (size_t)n_logits * sizeof *got), 0, "store %s", stores[i]);
        struct xd_expert_view v;
        cr_assert_eq(xd_xc_acquire(xc, 1, 3, &v), 0);
        const char *base = dev.slots;
        cr_assert((const char *)v.gate.data >= base && (const char *)v.gate.data < base + dev.slot_bytes,
                  "views must point into the backend's slot memory");
        check_view(m, 1, 3, &v);
        xd_xc_release(xc, 1, 3);
        xd_xc_drain(xc); /* a wrong guess's prefetch may still be reading */
        struct xd_xc_stats st;
        xd_xc_stats_get(xc, &st);
        cr_assert_gt(st.reads, 0);
        pthread_mutex_lock(&dev.mu);
        if (part_bytes) {
            cr_assert_eq(dev.commits, 0);
            cr_assert_eq(dev.waits, st.reads, "one wait per read");
            /* every byte read, once; a read that ends at the end of the file gets up to a block
             * less than its region, which the part still covers */
            cr_assert(dev.part_bytes >= st.bytes_read &&
                      dev.part_bytes < st.bytes_read + st.reads * XD_XS_PARTS * XD_XS_ALIGN,
                      "%llu bytes in parts, %llu read", (unsigned long long)dev.part_bytes,
                      (unsigned long long)st.bytes_read);
            /* a region's bytes beyond part_bytes go in several parts: streamed, not at the end */
            cr_assert_gt(dev.parts, 3 * st.reads, "store %s: %llu parts for %llu reads", stores[i],
                         (unsigned long long)dev.parts, (unsigned long long)st.reads);
            cr_assert_eq(dev.races, 0, "a staging buffer changed under a queued copy");
        } else {
            cr_assert_eq(dev.commits, st.reads);
            cr_assert_eq(dev.parts, 0);
        }
        pthread_mutex_unlock(&dev.mu);
        cr_assert_eq(xd_xc_check_invariants(xc), 0);
        xd_xc_destroy(xc);
    }
    pthread_mutex_destroy(&dev.mu);
    unlink(pack);
    free(pack);
    free(want);
    free(got);
    free(path);
    xd_model_free(m);
}

Test(xc_backend, device_slots_filled_through_staging_are_bit_identical, .timeout = 300) {
    device_backend(0, 0);
}

Test(xc_backend, streamed_commit_copies_parts_during_the_read, .timeout = 300) {
    device_backend(8192, 8192);
}

Test(xc_backend, streamed_commit_parts_span_chunks, .timeout = 300) {
    device_backend(12288, 4096); /* parts of three chunks, regions ending mid-part */
}

Test(xc_backend, half_a_streamed_commit_is_refused) {
    char *path;
    struct xd_model *m = xc_load("qwen3moe-tiny-q8_0.gguf", &path);
    struct xc_fake_device dev;
    struct xd_xc_backend be;
    xc_fake_init(&dev, &be, 8192, 2);
    be.commit_wait = NULL;
    struct xd_xc_config cfg = {.budget = 6 * xc_slot_bytes(m, path, "gguf"), .model_path = path,
                               .store = "gguf", .backend = &be};
    struct xd_xc *xc = NULL;
    char err[256] = "";
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), XD_E_INVALID);
    cr_assert(strstr(err, "fake-device") && strstr(err, "commit_wait"), "%s", err);
    cr_assert_null(xc);
    pthread_mutex_destroy(&dev.mu);
    free(path);
    xd_model_free(m);
}

/* ---- many threads, three slots ----------------------------------------------------------- */

struct stress {
    const struct xd_model *m;
    struct xd_xc *xc;
    uint64_t seed;
    atomic_int failures;
};

static void *stress_thread(void *arg) {
    struct stress *s = arg;
    const struct xd_model *m = s->m;
    uint64_t r = s->seed;
    struct xd_xc_set *set = NULL;
    if (xd_xc_set_create(s->xc, &set)) {
        atomic_fetch_add(&s->failures, 1);
        return NULL;
    }
    for (int it = 0; it < 300; it++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        const int64_t l = (int64_t)((r >> 33) % (uint64_t)m->hp.n_layer);
        const int64_t e = (int64_t)((r >> 40) % (uint64_t)m->hp.n_expert);
        if (it % 3 == 2) { /* a set of two experts of one layer, one at a time */
            const int32_t two[] = {(int32_t)e, (int32_t)((e + 1) % m->hp.n_expert)};
            if (xd_xc_set_begin(set, l, two, 2)) atomic_fetch_add(&s->failures, 1);
            int32_t got;
            struct xd_expert_view v;
            while (xd_xc_set_next(set, &got, &v) == 1) {
                struct xd_tensor want = xd_tensor_expert(&m->layers[l].down_exps, got);
                if (memcmp(v.down.data, want.data, want.nb[2])) atomic_fetch_add(&s->failures, 1);
                xd_xc_release(s->xc, l, got);
            }
            continue;
        }
        struct xd_expert_view v;
        if (xd_xc_acquire(s->xc, l, e, &v)) {
            atomic_fetch_add(&s->failures, 1);
            continue;
        }
        struct xd_tensor want = xd_tensor_expert(&m->layers[l].gate_exps, e);
        /* while pinned the bytes must stay put: others are evicting around us meanwhile */
        for (int k = 0; k < 3; k++) {
            if (memcmp(v.gate.data, want.data, want.nb[2])) atomic_fetch_add(&s->failures, 1);
            sched_yield();
        }
        xd_xc_release(s->xc, l, e);
    }
    xd_xc_set_destroy(set);
    return NULL;
}

/* part_bytes: 0 for host slots, else a streamed device backend (xc_fake_init) */
static void stress_on(enum xd_xc_io io, const char *store_kind, size_t part_bytes) {
    char *path;
    struct xc_fake_device dev;
    struct xd_xc_backend be;
    if (part_bytes) xc_fake_init(&dev, &be, part_bytes, 2);
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    char *pack = strcmp(store_kind, "packed") ? NULL : xc_pack_temp(m);
    const char *store = pack ? pack : "gguf";
    uint64_t slot = xc_slot_bytes(m, path, store);
    /* three slots for four threads: one of them always waits for another's release */
    struct xd_xc_config cfg = {.budget = 3 * slot, .model_path = path, .store = store, .io = io,
                               .queue_depth = 4, .read_chunk = 16384,
                               .backend = part_bytes ? &be : NULL};
    struct xd_xc *xc;
    char err[256];
    int rc = xd_xc_open(m, &cfg, &xc, err, sizeof err);
    if (rc && io == XD_XC_IO_URING) cr_skip_test("io_uring unavailable here: %s", err);
    cr_assert_eq(rc, 0, "%s", err);
    struct stress s[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct stress){.m = m, .xc = xc, .seed = 1234567u + (uint64_t)i * 7919u};
        atomic_init(&s[i].failures, 0);
        cr_assert_eq(pthread_create(&th[i], NULL, stress_thread, &s[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(atomic_load(&s[i].failures), 0, "thread %d saw %d failures", i,
                     atomic_load(&s[i].failures));
    }
    cr_assert_eq(xd_xc_check_invariants(xc), 0);
    cr_assert_eq(xd_xc_pinned(xc), 0);
    struct xd_xc_stats st;
    xd_xc_stats_get(xc, &st);
    cr_assert_gt(st.evictions, 100);
    cr_assert_eq(st.read_errors, 0);
    xd_xc_destroy(xc);
    if (part_bytes) {
        cr_assert_eq(dev.races, 0, "a staging buffer changed under a queued copy");
        cr_assert_gt(dev.parts, st.reads);
        pthread_mutex_destroy(&dev.mu);
    }
    if (pack) unlink(pack);
    free(pack);
    free(path);
    xd_model_free(m);
}

static void stress(enum xd_xc_io io, const char *store_kind) { stress_on(io, store_kind, 0); }

Test(xc_stress, pinned_slots_never_change_uring_gguf, .timeout = 300) { stress(XD_XC_IO_URING, "gguf"); }
Test(xc_stress, pinned_slots_never_change_pread_packed, .timeout = 300) { stress(XD_XC_IO_PREAD, "packed"); }
Test(xc_stress, pinned_slots_never_change_streamed_commit, .timeout = 300) {
    stress_on(XD_XC_IO_PREAD, "gguf", 16384);
}

/* ---- trace replay ------------------------------------------------------------------------ */

static char *trace_text(int64_t nl, int64_t ne, int n, uint64_t seed, int per_line) {
    size_t cap = (size_t)n * 64 + 128, len = 0;
    char *t = malloc(cap);
    len += (size_t)snprintf(t, cap, "# expertd expert trace v1 layers %lld experts %lld\n",
                            (long long)nl, (long long)ne);
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int64_t l = (int64_t)((seed >> 33) % (uint64_t)nl);
        len += (size_t)snprintf(t + len, cap - len, "%lld", (long long)l);
        int64_t e0 = (int64_t)((seed >> 40) % (uint64_t)ne);
        /* skewed: low ids more often */
        if ((seed >> 20) % 3 == 0) e0 = e0 % 2;
        for (int j = 0; j < per_line; j++)
            len += (size_t)snprintf(t + len, cap - len, " %lld", (long long)((e0 + j) % ne));
        t[len++] = '\n';
    }
    t[len] = 0;
    return t;
}

Test(xc_trace, parse_and_reject) {
    struct xd_xc_trace t;
    char err[128];
    const char *good = "# expertd expert trace v1 layers 2 experts 4 topk 2\n0 1 2\n1 3\n\n0 0\n";
    cr_assert_eq(xd_xc_trace_parse(good, strlen(good), &t, err, sizeof err), 0, "%s", err);
    cr_assert_eq(t.n_steps, 3);
    cr_assert_eq(t.n_acc, 4);
    cr_assert_eq(t.step_layer[1], 1);
    cr_assert_eq(t.top_k, 2);
    cr_assert_eq(t.acc[2], 3);
    xd_xc_trace_free(&t);
    const char *bad[] = {"", "0 1\n", "# expertd expert trace v1 layers 2 experts 4\n2 1\n",
                         "# expertd expert trace v1 layers 2 experts 4\n0 4\n",
                         "# expertd expert trace v1 layers 2 experts 4\n0 1 x\n",
                         /* a repeated expert in one step (fuzz_xc_trace found the replay
                          * looping on it): a layer acquires each expert once */
                         "# expertd expert trace v1 layers 4 experts 8\n0 2 1 2\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(xd_xc_trace_parse(bad[i], strlen(bad[i]), &t, err, sizeof err), XD_E_FORMAT,
                     "case %zu", i);
}

Test(xc_trace, belady_known_answer_and_never_below_lru) {
    /* the textbook string 7 0 1 2 0 3 0 4 2 3 0 3 2 with 3 frames: MIN has 6 hits, LRU 4 */
    const char *s = "# expertd expert trace v1 layers 1 experts 8\n"
                    "0 7\n0 0\n0 1\n0 2\n0 0\n0 3\n0 0\n0 4\n0 2\n0 3\n0 0\n0 3\n0 2\n";
    struct xd_xc_trace t;
    char err[128];
    cr_assert_eq(xd_xc_trace_parse(s, strlen(s), &t, err, sizeof err), 0);
    struct xd_xc_sim b, l;
    cr_assert_eq(xd_xc_sim_belady(&t, 3, &b), 0);
    cr_assert_eq(xd_xc_sim_online(&t, 3, XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU, &l), 0);
    cr_assert_eq(b.accesses, 13);
    cr_assert_eq(b.hits, 6);
    cr_assert_eq(l.hits, 4);
    xd_xc_trace_free(&t);
    for (uint64_t seed = 1; seed < 6; seed++) {
        char *txt = trace_text(4, 8, 400, seed, 2);
        cr_assert_eq(xd_xc_trace_parse(txt, strlen(txt), &t, err, sizeof err), 0, "%s", err);
        for (int64_t slots = 1; slots <= 32; slots++) {
            cr_assert_eq(xd_xc_sim_belady(&t, slots, &b), 0);
            cr_assert_eq(xd_xc_sim_online(&t, slots, XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU, &l), 0);
            cr_assert_geq(b.hits, l.hits, "slots %lld", (long long)slots);
        }
        /* with room for every expert only the first touches miss */
        int64_t distinct = 0;
        uint8_t seen[32] = {0};
        for (int64_t i = 0; i < t.n_steps; i++)
            for (int64_t a = t.step_start[i]; a < t.step_start[i + 1]; a++)
                if (!seen[t.step_layer[i] * 8 + t.acc[a]]++) distinct++;
        cr_assert_eq(xd_xc_sim_belady(&t, 32, &b), 0);
        cr_assert_eq(xd_xc_sim_online(&t, 32, XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU, &l), 0);
        cr_assert_eq(b.hits, b.accesses - (uint64_t)distinct);
        cr_assert_eq(l.hits, b.hits);
        xd_xc_trace_free(&t);
        free(txt);
    }
}

/* The replay of a recorded trace predicts the real cache's hits exactly (single acquires,
 * no prefetch), under every pool policy and eviction rule. */
static void replay_matches(enum xd_xc_policy policy, enum xd_xc_evict evict, int64_t n_slots) {
    char *path;
    struct xd_model *m = xc_load("mixtral-tiny-q8_0.gguf", &path);
    uint64_t slot = xc_slot_bytes(m, path, "gguf");
    char trace[] = "/tmp/xdtest-trace-XXXXXX";
    int fd = mkstemp(trace);
    close(fd);
    struct xd_xc_config cfg = {.budget = (uint64_t)n_slots * slot, .model_path = path,
                               .store = "gguf", .policy = policy, .evict = evict,
                               .trace_path = trace, .no_prefetch = true};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
    uint64_t r = 99;
    for (int i = 0; i < 600; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int64_t l = (int64_t)((r >> 33) % 4), e = (int64_t)((r >> 40) % 8);
        if ((r >> 20) % 2) e %= 3; /* some hot experts */
        struct xd_expert_view v;
        cr_assert_eq(xd_xc_acquire(xc, l, e, &v), 0);
        xd_xc_release(xc, l, e);
    }
    struct xd_xc_stats st;
    xd_xc_stats_get(xc, &st);
    xd_xc_destroy(xc); /* flushes the trace */
    check_replay(trace, n_slots, policy, evict, &st);
    free(path);
    xd_model_free(m);
}

Test(xc_trace, replay_predicts_the_cache_global) {
    replay_matches(XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU, 5);
    replay_matches(XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU, 12);
}
Test(xc_trace, replay_predicts_the_cache_per_layer) {
    replay_matches(XD_XC_POLICY_LAYER, XD_XC_EVICT_LRU, 8);
    replay_matches(XD_XC_POLICY_LAYER, XD_XC_EVICT_LRU, 13);
}
Test(xc_trace, replay_predicts_the_cache_next_use) {
    replay_matches(XD_XC_POLICY_GLOBAL, XD_XC_EVICT_NEXT_USE, 5);
    replay_matches(XD_XC_POLICY_GLOBAL, XD_XC_EVICT_NEXT_USE, 12);
    replay_matches(XD_XC_POLICY_LAYER, XD_XC_EVICT_NEXT_USE, 13);
}
