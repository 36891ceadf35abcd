/* xc_config.c - the expert cache's knobs as text, and the host slot-memory backend.
 *
 * Budgets are parsed here so `run` and `serve` accept exactly the same spellings: plain bytes
 * or a decimal number with an SI (K, M, G, T = 1000^n) or IEC (KiB, MiB, GiB, TiB = 1024^n)
 * suffix, case-insensitive, an optional trailing B. The trade-off: "1.5G" means 1.5e9 bytes,
 * as disk vendors and `df -H` mean it, not 1.5 GiB - both are accepted, so nobody has to guess.
 * The host backend hands out anonymous mmap memory (page-aligned, so it satisfies O_DIRECT's
 * 4 KiB alignment, and lazily populated until io_uring registers it).
 * Not here: choosing how many slots a budget buys (xc_open.c).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "expert_cache.h"
#include "xd_error.h"

int xd_xc_parse_size(const char *s, uint64_t *out) {
    if (!s) return XD_E_INVALID;
    while (isspace((unsigned char)*s)) s++;
    if (!isdigit((unsigned char)*s) && *s != '.') return XD_E_INVALID;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return XD_E_INVALID;
    while (isspace((unsigned char)*end)) end++;
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {
        {"", 1},           {"b", 1},
        {"k", 1e3},        {"kb", 1e3},         {"m", 1e6},          {"mb", 1e6},
        {"g", 1e9},        {"gb", 1e9},         {"t", 1e12},         {"tb", 1e12},
        {"kib", 1024.0},   {"mib", 1048576.0},  {"gib", 1073741824.0},
        {"tib", 1099511627776.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix)) continue;
        double bytes = v * units[i].mult;
        if (bytes >= 18446744073709549568.0) return XD_E_INVALID;
        *out = (uint64_t)llround(bytes);
        return 0;
    }
    return XD_E_INVALID;
}

const char *xd_xc_format_size(uint64_t bytes, char *buf, size_t n) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) v /= 1024.0, u++;
    if (u == 0) snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else snprintf(buf, n, "%.2f %s", v, unit[u]);
    return buf;
}

int xd_xc_policy_parse(const char *s, enum xd_xc_policy *out) {
    if (!strcmp(s, "global")) *out = XD_XC_POLICY_GLOBAL;
    else if (!strcmp(s, "layer")) *out = XD_XC_POLICY_LAYER;
    else return XD_E_INVALID;
    return 0;
}

int xd_xc_evict_parse(const char *s, enum xd_xc_evict *out) {
    if (!strcmp(s, "lru")) *out = XD_XC_EVICT_LRU;
    else if (!strcmp(s, "next-use")) *out = XD_XC_EVICT_NEXT_USE;
    else return XD_E_INVALID;
    return 0;
}

int xd_xc_io_parse(const char *s, enum xd_xc_io *out) {
    if (!strcmp(s, "auto")) *out = XD_XC_IO_AUTO;
    else if (!strcmp(s, "uring") || !strcmp(s, "io_uring")) *out = XD_XC_IO_URING;
    else if (!strcmp(s, "pread")) *out = XD_XC_IO_PREAD;
    else return XD_E_INVALID;
    return 0;
}

const char *xd_xc_config_usage(void) {
    return "  --expert-cache SIZE     keep at most SIZE of expert weights in memory (e.g. 1.5GiB,\n"
           "                          800M), reading the rest from disk; default: all resident\n"
           "  --expert-store S        auto (MODEL.xdpack if present, else the GGUF), gguf, or the\n"
           "                          path of a store written by `expertd pack` (default auto)\n"
           "  --expert-policy P       global (one pool) or layer (an even share per layer)\n"
           "  --expert-evict E        next-use (expected time to next use, default) or lru\n"
           "  --expert-io IO          auto, uring or pread (default auto)\n"
           "  --expert-chunk SIZE     bytes per read request (default 1MiB)\n"
           "  --expert-qd N           read requests in flight (default 32)\n"
           "  --expert-prefetch-layers N  layers ahead to guess and prefetch (default 1)\n"
           "  --no-prefetch           no speculative prefetch\n"
           "  --expert-trace FILE     record every expert acquisition (for `expertd replay`)\n";
}

static int bad_value(char *err, size_t errlen, const char *flag, const char *want, const char *val) {
    if (err && errlen) snprintf(err, errlen, "%s expects %s, got '%s'", flag, want, val ? val : "");
    return XD_E_INVALID;
}

int xd_xc_config_argv(struct xd_xc_config *cfg, const char *cmd, int argc, char **argv, int *i) {
    char err[256];
    const int used = xd_xc_config_option(cfg, argv[*i], *i + 1 < argc ? argv[*i + 1] : NULL, err,
                                         sizeof err);
    if (used < 0) {
        fprintf(stderr, "expertd %s: %s\n", cmd, err);
        return -1;
    }
    *i += used > 0 ? used - 1 : 0;
    return used > 0;
}

int xd_xc_config_option(struct xd_xc_config *cfg, const char *flag, const char *val, char *err,
                        size_t errlen) {
    if (!strcmp(flag, "--no-prefetch")) {
        cfg->no_prefetch = true;
        return 1;
    }
    static const char *const with_value[] = {
        "--expert-cache", "--expert-store", "--expert-policy", "--expert-evict", "--expert-io",
        "--expert-chunk", "--expert-qd", "--expert-prefetch-layers", "--expert-trace",
    };
    size_t i = 0;
    while (i < sizeof with_value / sizeof with_value[0] && strcmp(flag, with_value[i])) i++;
    if (i == sizeof with_value / sizeof with_value[0]) return 0;
    if (!val) return bad_value(err, errlen, flag, "a value", NULL);
    uint64_t n;
    char *end;
    switch (i) {
    case 0: /* --expert-cache */
        if (xd_xc_parse_size(val, &n) || n == 0)
            return bad_value(err, errlen, flag, "a size like 4096, 800M or 1.5GiB", val);
        cfg->budget = n;
        break;
    case 1: cfg->store = val; break;
    case 2:
        if (xd_xc_policy_parse(val, &cfg->policy)) return bad_value(err, errlen, flag, "global or layer", val);
        break;
    case 3:
        if (xd_xc_evict_parse(val, &cfg->evict)) return bad_value(err, errlen, flag, "next-use or lru", val);
        break;
    case 4:
        if (xd_xc_io_parse(val, &cfg->io)) return bad_value(err, errlen, flag, "auto, uring or pread", val);
        break;
    case 5: /* --expert-chunk */
        if (xd_xc_parse_size(val, &n) || n == 0 || n % 4096 || n > (64u << 20))
            return bad_value(err, errlen, flag, "a multiple of 4096 up to 64MiB", val);
        cfg->read_chunk = (uint32_t)n;
        break;
    case 6:
    case 7: {
        errno = 0;
        long v = strtol(val, &end, 10);
        long hi = i == 6 ? 4096 : 64;
        if (errno || end == val || *end || v < 1 || v > hi)
            return bad_value(err, errlen, flag, i == 6 ? "1..4096" : "1..64", val);
        if (i == 6) cfg->queue_depth = (int32_t)v;
        else cfg->prefetch_layers = (int32_t)v;
        break;
    }
    default: cfg->trace_path = val; break;
    }
    return 2;
}

double xd_xc_lat_bucket_le(int i) {
    if (i < 0) return 0;
    if (i >= XD_XC_LAT_BUCKETS - 1) return INFINITY;
    return 100e-6 * (double)(1u << i); /* 100 us, 200 us, ... 1.64 s */
}

static void *host_alloc(void *user, size_t bytes) {
    (void)user;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void host_free(void *user, void *p, size_t bytes) {
    (void)user;
    if (p) munmap(p, bytes);
}

static const struct xd_xc_backend host_backend = {
    .name = "host",
    .slots_alloc = host_alloc,
    .slots_free = host_free,
};

const struct xd_xc_backend *xd_xc_backend_host(void) { return &host_backend; }
