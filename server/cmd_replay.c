/* cmd_replay.c - `expertd replay TRACE`: what hit rate would a cache of n slots have had on a
 * recorded expert trace (`run --expert-trace`), under the cache's policies (LRU and
 * expected-next-use eviction, global and per-layer pools) and under Belady's offline optimum
 * (cache/trace.c). Rows for the top-k minimum and for 10/25/50/75/100%
 * of all experts unless --slots lists sizes; --json prints one object per row for scripts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "trace.h"
#include "xd_error.h"

static void usage(FILE *f) {
    fprintf(f, "usage: expertd replay TRACE [--slots N[,N...]] [--json]\n"
               "  Replay an expert trace (written by `run --expert-trace`) under LRU and Belady's\n"
               "  MIN at each cache size (in expert slots) and print the hit rates.\n");
}

static void row(const struct xd_xc_trace *t, int64_t slots, bool json) {
    static const struct {
        const char *name;
        enum xd_xc_policy policy;
        enum xd_xc_evict evict;
    } cols[] = {
        {"lru_global", XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU},
        {"lru_layer", XD_XC_POLICY_LAYER, XD_XC_EVICT_LRU},
        {"next_use_global", XD_XC_POLICY_GLOBAL, XD_XC_EVICT_NEXT_USE},
        {"next_use_layer", XD_XC_POLICY_LAYER, XD_XC_EVICT_NEXT_USE},
    };
    const double total = (double)(t->n_layer * t->n_expert);
    if (json) printf("{\"slots\":%lld,\"fraction\":%.4f", (long long)slots, (double)slots / total);
    else printf("%8lld  %5.1f%%", (long long)slots, 100.0 * (double)slots / total);
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        struct xd_xc_sim sim;
        bool ok = xd_xc_sim_online(t, slots, cols[c].policy, cols[c].evict, &sim) == 0 && sim.accesses;
        double rate = ok ? (double)sim.hits / (double)sim.accesses : 0;
        if (json && ok) printf(",\"%s\":%.6f", cols[c].name, rate);
        else if (json) printf(",\"%s\":null", cols[c].name);
        else if (ok) printf("  %10.4f", rate);
        else printf("  %10s", "-");
    }
    struct xd_xc_sim b;
    bool ok = xd_xc_sim_belady(t, slots, &b) == 0 && b.accesses;
    double rate = ok ? (double)b.hits / (double)b.accesses : 0;
    if (json) printf(",\"belady\":%.6f,\"accesses\":%llu}\n", rate, (unsigned long long)b.accesses);
    else printf("  %10.4f\n", rate);
}

int xd_cmd_replay(int argc, char **argv) {
    const char *path = NULL, *slots = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--slots") && i + 1 < argc) {
            slots = argv[++i];
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            fprintf(stderr, "expertd replay: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    struct xd_xc_trace t;
    char err[256];
    if (xd_xc_trace_load(path, &t, err, sizeof err)) {
        fprintf(stderr, "expertd replay: %s\n", err);
        return 1;
    }
    const int64_t total = t.n_layer * t.n_expert;
    if (!json)
        printf("# %s: %lld layers x %lld experts, %lld steps, %lld accesses\n"
               "#  slots  of all  LRU-global   LRU-layer  NextUse-glb  NextUse-lay      Belady\n",
               path, (long long)t.n_layer, (long long)t.n_expert, (long long)t.n_steps,
               (long long)t.n_acc);
    if (slots) {
        for (const char *p = slots; *p;) {
            char *end;
            long long v = strtoll(p, &end, 10);
            if (end == p || v < 1 || (*end && *end != ',')) {
                fprintf(stderr, "expertd replay: --slots expects N[,N...], got '%s'\n", slots);
                xd_xc_trace_free(&t);
                return 2;
            }
            row(&t, v, json);
            p = *end ? end + 1 : end;
        }
    } else {
        const double fr[] = {0.10, 0.25, 0.50, 0.75, 1.00};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) {
            int64_t s = (int64_t)(fr[i] * (double)total + 0.5);
            row(&t, s < 1 ? 1 : s, json);
        }
    }
    xd_xc_trace_free(&t);
    return 0;
}
