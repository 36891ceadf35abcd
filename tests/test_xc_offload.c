/* test_xc_offload.c - offloading never changes results.
 *
 * For every fixture, a greedy run's logits (prompt and every decode step, all of the
 * vocabulary) with the expert cache at budgets from the minimum (top-k experts) through one
 * expert per layer, top-k per layer and half of all experts to all of them, from the GGUF file
 * and from a packed store, through io_uring and the pread pool, global and per-layer LRU, with
 * and without prefetch, must equal the everything-resident run's bit for bit; and so must
 * `expertd run --temp 0 --json` (tokens, text and top logprobs) at the minimum, half and all.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sys/wait.h>

#include "xc_test_util.h"
#include "xd_error.h"

#define STEPS 6
static const char *const prompt = "Once upon a time, in a land far away, there lived a";

struct variant {
    const char *store; /* "gguf" or "packed" */
    enum xd_xc_io io;
    enum xd_xc_policy policy;
    bool no_prefetch;
};

static void sweep(const char *fixture) {
    char *path;
    struct xd_model *m = xc_load(fixture, &path);
    const int64_t nv = m->hp.n_vocab, nl = m->hp.n_layer, ne = m->hp.n_expert,
                  k = m->hp.n_expert_used;
    const size_t n_logits = (size_t)(STEPS + 1) * (size_t)nv;
    float *want = malloc(n_logits * sizeof *want), *got = malloc(n_logits * sizeof *got);
    cr_assert_eq(xc_greedy(m, NULL, prompt, STEPS, want), 0);
    char *pack = xc_pack_temp(m);
    const int64_t budgets[] = {k, nl, nl * k, nl * ne / 2, nl * ne};
    const struct variant variants[] = {
        {"gguf", XD_XC_IO_AUTO, XD_XC_POLICY_GLOBAL, false},
        {"packed", XD_XC_IO_AUTO, XD_XC_POLICY_GLOBAL, false},
        {"packed", XD_XC_IO_PREAD, XD_XC_POLICY_GLOBAL, true},
        {"gguf", XD_XC_IO_PREAD, XD_XC_POLICY_LAYER, false},
    };
    int runs = 0;
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const struct variant *va = &variants[v];
        const char *store = strcmp(va->store, "packed") ? "gguf" : pack;
        const uint64_t slot = xc_slot_bytes(m, path, store);
        for (size_t b = 0; b < sizeof budgets / sizeof budgets[0]; b++) {
            const int64_t slots = budgets[b] < k ? k : budgets[b];
            if (va->policy == XD_XC_POLICY_LAYER && slots / nl < k) continue;
            struct xd_xc_config cfg = {.budget = (uint64_t)slots * slot, .model_path = path,
                                       .store = store, .io = va->io, .policy = va->policy,
                                       .no_prefetch = va->no_prefetch};
            struct xd_xc *xc;
            char err[256];
            cr_assert_eq(xd_xc_open(m, &cfg, &xc, err, sizeof err), 0, "%s", err);
            memset(got, 0, n_logits * sizeof *got);
            cr_assert_eq(xc_greedy(m, xc, prompt, STEPS, got), 0);
            cr_assert_eq(memcmp(want, got, n_logits * sizeof *got), 0,
                         "%s: %lld slots, store %s, io %d, policy %d, prefetch %d: logits differ",
                         fixture, (long long)slots, va->store, va->io, va->policy, !va->no_prefetch);
            cr_assert_eq(xd_xc_check_invariants(xc), 0);
            struct xd_xc_stats st;
            xd_xc_stats_get(xc, &st);
            cr_assert_eq(st.read_errors, 0);
            cr_assert_gt(st.misses, 0);
            if (slots == nl * ne) cr_assert_eq(st.evictions, 0, "everything fits: nothing evicted");
            if (slots == k && !va->no_prefetch && va->policy == XD_XC_POLICY_GLOBAL)
                cr_assert_gt(st.evictions, 0);
            xd_xc_destroy(xc);
            runs++;
        }
    }
    cr_assert_geq(runs, 16);
    unlink(pack);
    free(pack);
    free(want);
    free(got);
    free(path);
    xd_model_free(m);
}

/* only in ../shared (over 10 MB): skipped where it is absent */
Test(xc_offload, bit_identical_mixtral_f32, .timeout = 600) { sweep("mixtral-tiny-f32.gguf"); }
Test(xc_offload, bit_identical_mixtral_f16, .timeout = 600) { sweep("mixtral-tiny-f16.gguf"); }
Test(xc_offload, bit_identical_mixtral_q4_k_m, .timeout = 600) { sweep("mixtral-tiny-q4_k_m.gguf"); }
Test(xc_offload, bit_identical_mixtral_q8_0, .timeout = 600) { sweep("mixtral-tiny-q8_0.gguf"); }
Test(xc_offload, bit_identical_qwen3moe_f16, .timeout = 600) { sweep("qwen3moe-tiny-f16.gguf"); }
Test(xc_offload, bit_identical_qwen3moe_f32, .timeout = 600) { sweep("qwen3moe-tiny-f32.gguf"); }
Test(xc_offload, bit_identical_qwen3moe_q8_0, .timeout = 600) { sweep("qwen3moe-tiny-q8_0.gguf"); }

/* ---- the CLI ------------------------------------------------------------------------------ */

/* Run `expertd run ... --json [extra]`; returns the exit status, stdout in *out (malloc'd). */
static int run_cli(const char *model, const char *extra, char **out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s run -m '%s' -p 'The quick brown fox' -n 10 --temp 0 "
             "--logprobs 5 --json %s 2>/dev/null", XD_EXPERTD_BIN, model, extra);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (len + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The JSON output without its stats, canonically printed. */
static char *results_of(const char *json) {
    json_error_t e;
    json_t *j = json_loads(json, 0, &e);
    cr_assert(j, "not JSON: %s", json);
    cr_assert(json_object_get(json_object_get(j, "stats"), "prefill_s"));
    json_object_del(j, "stats");
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    return s;
}

Test(xc_offload, run_json_is_bit_identical, .timeout = 600) {
    for (size_t f = 0; f < XC_N_FIXTURES; f++) {
        char *path;
        struct xd_model *m = xc_load(xc_fixtures[f], &path);
        const uint64_t slot = xc_slot_bytes(m, path, "gguf");
        const int64_t n = m->hp.n_layer * m->hp.n_expert, k = m->hp.n_expert_used;
        char *out;
        cr_assert_eq(run_cli(path, "", &out), 0);
        char *want = results_of(out);
        free(out);
        const int64_t slots[] = {k, n / 2, n};
        for (size_t i = 0; i < 3; i++) {
            char extra[128];
            snprintf(extra, sizeof extra, "--expert-cache %llu",
                     (unsigned long long)((uint64_t)slots[i] * slot));
            cr_assert_eq(run_cli(path, extra, &out), 0, "%s %s", xc_fixtures[f], extra);
            char *got = results_of(out);
            cr_assert_str_eq(got, want, "%s %s", xc_fixtures[f], extra);
            json_t *j = json_loads(out, 0, NULL);
            json_t *xs = json_object_get(json_object_get(j, "stats"), "expert_cache");
            cr_assert(json_is_true(json_object_get(xs, "offloaded")));
            cr_assert_eq(json_integer_value(json_object_get(xs, "slots")), slots[i]);
            cr_assert_gt(json_integer_value(json_object_get(xs, "bytes_read")), 0);
            json_decref(j);
            free(got);
            free(out);
        }
        free(want);
        free(path);
        xd_model_free(m);
    }
}

Test(xc_offload, run_refuses_a_budget_below_top_k) {
    char *path = xd_test_fixture("mixtral-tiny-q8_0.gguf");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s run -m '%s' -p hi -n 1 --expert-cache 100KiB 2>&1", XD_EXPERTD_BIN,
             path);
    FILE *p = popen(cmd, "r");
    char buf[1024] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", buf);
    cr_assert(strstr(buf, "at least") && strstr(buf, "432.00 KiB"), "%s", buf);
    free(path);
}
