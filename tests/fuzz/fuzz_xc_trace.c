/* fuzz_xc_trace.c - libFuzzer target for the expert cache's byte parsers: the access-trace
 * parser (cache/trace.c) and the packed store's header decoder (cache/store_pack.c).
 *
 * A rejected trace must come back as XD_E_FORMAT (or XD_E_NOMEM) with a message; an accepted
 * one is checked for consistency (every step's layer and experts in range, step offsets
 * increasing) and replayed under every online policy and Belady's MIN at a few sizes, whose
 * hit counts can never exceed the accesses, and - for traces of single accesses, where MIN is
 * provably optimal - Belady's never fall below LRU's on the same global pool. The same bytes are then offered to the store header decoder, which must accept
 * or reject without reading past them. __builtin_trap() marks a broken contract.
 * Seeds: tests/fuzz/corpus/xc_trace.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "store_pack.h"
#include "trace.h"
#include "xd_error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct xd_xc_trace t;
    char err[128] = "";
    int rc = xd_xc_trace_parse((const char *)data, size, &t, err, sizeof err);
    if (rc) {
        if ((rc != XD_E_FORMAT && rc != XD_E_NOMEM) || !err[0]) __builtin_trap();
    } else if (t.n_layer * t.n_expert <= (1 << 16)) {
        for (int64_t i = 0; i < t.n_steps; i++) {
            if (t.step_layer[i] < 0 || t.step_layer[i] >= t.n_layer) __builtin_trap();
            if (t.step_start[i] > t.step_start[i + 1]) __builtin_trap();
            for (int64_t a = t.step_start[i]; a < t.step_start[i + 1]; a++)
                if (t.acc[a] < 0 || t.acc[a] >= t.n_expert) __builtin_trap();
        }
        if (t.step_start[t.n_steps] != t.n_acc) __builtin_trap();
        const int64_t sizes[] = {1, 3, t.n_layer, t.n_layer * 2 + 1};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            struct xd_xc_sim lru = {0}, nu = {0}, b = {0}, lay = {0};
            int r1 = xd_xc_sim_online(&t, sizes[i], XD_XC_POLICY_GLOBAL, XD_XC_EVICT_LRU, &lru);
            int r2 = xd_xc_sim_online(&t, sizes[i], XD_XC_POLICY_GLOBAL, XD_XC_EVICT_NEXT_USE, &nu);
            int r3 = xd_xc_sim_belady(&t, sizes[i], &b);
            xd_xc_sim_online(&t, sizes[i], XD_XC_POLICY_LAYER, XD_XC_EVICT_NEXT_USE, &lay);
            if (r1 || r2 || r3) continue; /* out of memory */
            if (lru.hits > lru.accesses || nu.hits > nu.accesses || b.hits > b.accesses ||
                lay.hits > lay.accesses || b.accesses != (uint64_t)t.n_acc)
                __builtin_trap();
            /* MIN is optimal for one access at a time; with steps that fit the pool the
             * step-wise replays keep that order */
            int64_t widest = 0;
            for (int64_t j = 0; j < t.n_steps; j++)
                if (t.step_start[j + 1] - t.step_start[j] > widest)
                    widest = t.step_start[j + 1] - t.step_start[j];
            if (widest == 1 && b.hits < lru.hits) __builtin_trap();
        }
    }
    if (!rc) xd_xc_trace_free(&t);
    struct xd__xs_header h;
    rc = xd__xs_header_decode(data, size, &h);
    if (rc && rc != XD_E_FORMAT && rc != XD_E_VERSION && rc != XD_E_TRUNCATED) __builtin_trap();
    return 0;
}
