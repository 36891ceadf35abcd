/* test_sched.c - engine/engine.c's scheduler with the paged KV cache, on the tiny fixture
 * model: first-come first-served admission, the per-step token budget, preemption under a
 * small KV budget with resumed requests giving the very tokens they give alone, cancellation
 * of running and preempted requests, n > 1 sharing the prompt's blocks, and requests larger
 * than the pool refused at submit. Every test ends idle with no KV block held. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "expert_cache.h"
#include "kv_cache.h"
#include "model.h"
#include "tokenizer.h"
#include "xd_error.h"
#include "xd_test_util.h"

#define MAX_TOK 128

struct seq_out {
    int32_t tokens[MAX_TOK];
    int n_tokens;
    int n_finish;
};

struct req_out {
    struct xd_gen *g;
    struct seq_out seq[4];
    int n_end;
    int status;
};

static struct xd_model *model;

static void setup(void) {
    char err[256];
    char *path = xd_test_fixture("mixtral-tiny-q8_0.gguf");
    cr_assert_eq(xd_model_load(path, &model, err, sizeof err), 0, "%s", err);
    free(path);
}

static void teardown(void) { xd_model_free(model); }

static void on_event(const struct xd_gen_event *ev, void *arg) {
    (void)arg;
    struct req_out *r = ev->user;
    struct seq_out *s = &r->seq[ev->index];
    if (ev->kind == XD_GEN_TOKEN && ev->token >= 0 && s->n_tokens < MAX_TOK)
        s->tokens[s->n_tokens++] = ev->token;
    if (ev->kind == XD_GEN_FINISH) s->n_finish++;
    if (ev->kind == XD_GEN_END) {
        r->n_end++;
        r->status = ev->status;
    }
}

/* KV bytes of one block of the fixture model */
static uint64_t block_bytes(void) {
    return 4ull * XD_KV_BLOCK * (uint64_t)model->hp.n_layer *
           (uint64_t)(model->hp.n_head_kv * model->hp.head_dim);
}

static struct xd_engine *engine(int32_t n_parallel, int32_t step_tokens, uint64_t kv_blocks) {
    struct xd_engine_params p = {.n_parallel = n_parallel, .n_ctx = 256,
                                 .step_tokens = step_tokens, .max_waiting = 64,
                                 .kv_bytes = kv_blocks * block_bytes()};
    struct xd_engine *e;
    char err[256];
    cr_assert_eq(xd_engine_create(model, &p, &e, err, sizeof err), 0, "%s", err);
    return e;
}

static struct xd_gen_params params(uint64_t seed, int32_t max_tokens) {
    struct xd_gen_params p = {.sampler = xd_sampler_params_default(), .n = 1,
                              .max_tokens = max_tokens, .ignore_eos = true};
    p.sampler.seed = seed;
    p.sampler.temperature = 0.9f;
    return p;
}

static int32_t n_prompt_of(const char *prompt) {
    struct xd_tokens t = {0};
    cr_assert_eq(xd_tokenize(model->tok, prompt, strlen(prompt), XD_TOK_ADD_SPECIAL, &t), 0);
    int32_t n = (int32_t)t.n;
    xd_tokens_free(&t);
    return n;
}

static int submit(struct xd_engine *e, const char *prompt, const struct xd_gen_params *p,
                  struct req_out *r) {
    struct xd_tokens t = {0};
    cr_assert_eq(xd_tokenize(model->tok, prompt, strlen(prompt), XD_TOK_ADD_SPECIAL, &t), 0);
    memset(r, 0, sizeof *r);
    cr_assert_eq(xd_gen_create(p, t.ids, t.n, r, &r->g), 0);
    xd_tokens_free(&t);
    int rc = xd_engine_submit(e, r->g);
    if (rc) {
        xd_gen_destroy(r->g);
        r->g = NULL;
    }
    return rc;
}

static void wait_all(struct xd_engine *e, struct req_out *rs, int n) {
    for (int it = 0; it < 120000; it++) {
        xd_engine_drain(e, on_event, NULL);
        int done = 0;
        for (int i = 0; i < n; i++) done += rs[i].n_end > 0;
        if (done == n) return;
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("requests did not end");
}

static void assert_idle_and_free(struct xd_engine *e) {
    struct xd_engine_stats st;
    for (int it = 0; it < 1000; it++) {
        xd_engine_stats(e, &st);
        if (!st.slots_used && !st.running && !st.waiting && !st.kv_blocks_used) break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(st.slots_used, 0);
    cr_assert_eq(st.running, 0);
    cr_assert_eq(st.waiting, 0);
    cr_assert_eq(st.kv_blocks_used, 0, "%d KV blocks still held", st.kv_blocks_used);
}

static const char *prompts[] = {
    "Once upon a time",
    "The quick brown fox jumps over the lazy dog, again and again",
    "Hello there",
    "A much longer prompt that needs more than one chunk of prefill in the step budget",
    "Tell me",
    "One two three four five six seven",
};
#define N_PROMPTS ((int)(sizeof prompts / sizeof prompts[0]))

/* Every prompt alone, in a roomy engine: the reference tokens. */
static void reference(struct req_out *ref, int n, int32_t max_tokens) {
    struct xd_engine *e = engine(1, 64, 0);
    for (int i = 0; i < n; i++) {
        struct xd_gen_params p = params((uint64_t)(100 + i), max_tokens);
        cr_assert_eq(submit(e, prompts[i % N_PROMPTS], &p, &ref[i]), 0);
        wait_all(e, &ref[i], 1);
        cr_assert_eq(ref[i].status, 0);
        xd_gen_destroy(ref[i].g);
    }
    xd_engine_destroy(e);
}

static void assert_same_tokens(const struct seq_out *a, const struct seq_out *b, int i) {
    cr_assert_eq(a->n_tokens, b->n_tokens, "request %d: %d tokens vs %d", i, a->n_tokens,
                 b->n_tokens);
    cr_assert_eq(memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof(int32_t)), 0,
                 "request %d: tokens differ from the ones generated alone", i);
}

TestSuite(sched, .init = setup, .fini = teardown);

Test(sched, admission_is_first_come_first_served) {
    struct xd_engine *e = engine(1, 64, 0);
    struct req_out r[4];
    for (int i = 0; i < 4; i++) {
        struct xd_gen_params p = params((uint64_t)i, 3 + i);
        cr_assert_eq(submit(e, prompts[i], &p, &r[i]), 0);
    }
    wait_all(e, r, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(r[i].status, 0);
        if (i) cr_assert_gt(xd_gen_info(r[i].g)->t_admit, xd_gen_info(r[i - 1].g)->t_admit);
        if (i) cr_assert_gt(xd_gen_info(r[i].g)->t_end, xd_gen_info(r[i - 1].g)->t_end);
        if (i) cr_assert_geq(xd_gen_info(r[i].g)->t_admit, xd_gen_info(r[i - 1].g)->t_end);
    }
    assert_idle_and_free(e);
    for (int i = 0; i < 4; i++) xd_gen_destroy(r[i].g);
    xd_engine_destroy(e);
}

Test(sched, prefill_is_chunked_by_the_step_budget) {
    const int32_t budget = 8, n_prompt = n_prompt_of(prompts[3]);
    cr_assert_gt(n_prompt, 2 * budget);
    struct xd_engine *e = engine(2, budget, 0);
    struct req_out r;
    struct xd_gen_params p = params(1, 1);
    cr_assert_eq(submit(e, prompts[3], &p, &r), 0);
    wait_all(e, &r, 1);
    cr_assert_eq(r.status, 0);
    struct xd_engine_stats st;
    xd_engine_stats(e, &st);
    /* one step per chunk of 8; the last chunk samples the only token */
    cr_assert_eq(st.steps, (uint64_t)((n_prompt + budget - 1) / budget));
    cr_assert_eq(st.prompt_tokens, (uint64_t)n_prompt);
    cr_assert_eq(st.fwd.tokens, (uint64_t)n_prompt);
    /* two requests: decode rows of the first share each step with the second's chunks, and
     * no step runs more than the budget */
    struct req_out two[2];
    struct xd_gen_params q = params(2, 20);
    cr_assert_eq(submit(e, prompts[1], &q, &two[0]), 0);
    cr_assert_eq(submit(e, prompts[3], &q, &two[1]), 0);
    wait_all(e, two, 2);
    struct xd_engine_stats st2;
    xd_engine_stats(e, &st2);
    const uint64_t tokens = st2.fwd.tokens - st.fwd.tokens, steps = st2.steps - st.steps;
    cr_assert_leq(tokens, steps * (uint64_t)budget);
    cr_assert_eq(tokens, (uint64_t)(n_prompt_of(prompts[1]) + n_prompt + 2 * 19));
    assert_idle_and_free(e);
    xd_gen_destroy(r.g);
    xd_gen_destroy(two[0].g);
    xd_gen_destroy(two[1].g);
    xd_engine_destroy(e);
}

/* Six requests of 40 tokens in a pool of 8 blocks (each needs 3-5 blocks): decodes run out of
 * blocks, the newest requests are preempted and recomputed, and every request still gives the
 * tokens it gives alone. */
Test(sched, preemption_and_resume_give_identical_tokens) {
    enum { N = 6, T = 40 };
    struct req_out ref[N], r[N];
    reference(ref, N, T);
    struct xd_engine *e = engine(N, 32, 8);
    for (int i = 0; i < N; i++) {
        struct xd_gen_params p = params((uint64_t)(100 + i), T);
        cr_assert_eq(submit(e, prompts[i], &p, &r[i]), 0);
    }
    wait_all(e, r, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].status, 0, "request %d: %s", i, xd_strerror(r[i].status));
        cr_assert_eq(r[i].seq[0].n_finish, 1);
        assert_same_tokens(&r[i].seq[0], &ref[i].seq[0], i);
    }
    struct xd_engine_stats st;
    xd_engine_stats(e, &st);
    cr_assert_gt(st.preemptions, 0, "the pool was never short: the test tests nothing");
    cr_assert_gt(st.recomputed_tokens, 0);
    cr_assert_eq(st.kv_blocks_total, 8);
    cr_assert_eq(st.requests_ok, N);
    assert_idle_and_free(e);
    for (int i = 0; i < N; i++) xd_gen_destroy(r[i].g);
    xd_engine_destroy(e);
}

/* n = 3: sequence 0 prefills once, the others share its blocks (copying the partial one) and
 * sample what they would sample alone with seed + i. */
Test(sched, n_sequences_share_the_prompt_kv) {
    const char *prompt = prompts[1];
    const int32_t n_prompt = n_prompt_of(prompt);
    cr_assert_neq(n_prompt % XD_KV_BLOCK, 0, "the test wants a partial last block");
    struct req_out ref[3];
    struct xd_engine *e = engine(4, 64, 0);
    for (int i = 0; i < 3; i++) {
        struct xd_gen_params p = params((uint64_t)(50 + i), 24);
        cr_assert_eq(submit(e, prompt, &p, &ref[i]), 0);
        wait_all(e, &ref[i], 1);
        xd_gen_destroy(ref[i].g);
    }
    struct xd_engine_stats st0, st;
    xd_engine_stats(e, &st0);
    struct req_out r;
    struct xd_gen_params p = params(50, 24);
    p.n = 3;
    cr_assert_eq(submit(e, prompt, &p, &r), 0);
    wait_all(e, &r, 1);
    cr_assert_eq(r.status, 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r.seq[i].n_finish, 1);
        assert_same_tokens(&r.seq[i], &ref[i].seq[0], i);
    }
    xd_engine_stats(e, &st);
    cr_assert_eq(st.prompt_tokens - st0.prompt_tokens, (uint64_t)n_prompt, "prefilled once");
    cr_assert_eq(st.fwd.tokens - st0.fwd.tokens, (uint64_t)(n_prompt + 3 * 23));
    cr_assert_eq(st.kv_cow_copies - st0.kv_cow_copies, 2, "two copies of the partial block");
    assert_idle_and_free(e);
    xd_gen_destroy(r.g);
    xd_engine_destroy(e);
}

/* n = 2 among others in a small pool: sharing and preemption together. */
Test(sched, n_sequences_survive_preemption) {
    enum { T = 30 };
    struct req_out ref[2], r[3];
    struct xd_engine *e0 = engine(2, 64, 0);
    for (int i = 0; i < 2; i++) {
        struct xd_gen_params p = params((uint64_t)(7 + i), T);
        cr_assert_eq(submit(e0, prompts[3], &p, &ref[i]), 0);
        wait_all(e0, &ref[i], 1);
        xd_gen_destroy(ref[i].g);
    }
    xd_engine_destroy(e0);
    struct xd_engine *e = engine(4, 16, 9);
    struct xd_gen_params big = params(1, T);
    cr_assert_eq(submit(e, prompts[1], &big, &r[0]), 0);
    cr_assert_eq(submit(e, prompts[0], &big, &r[1]), 0);
    struct xd_gen_params p = params(7, T);
    p.n = 2;
    cr_assert_eq(submit(e, prompts[3], &p, &r[2]), 0);
    wait_all(e, r, 3);
    for (int i = 0; i < 3; i++) cr_assert_eq(r[i].status, 0);
    for (int i = 0; i < 2; i++) assert_same_tokens(&r[2].seq[i], &ref[i].seq[0], i);
    struct xd_engine_stats st;
    xd_engine_stats(e, &st);
    cr_assert_gt(st.preemptions, 0);
    assert_idle_and_free(e);
    for (int i = 0; i < 3; i++) xd_gen_destroy(r[i].g);
    xd_engine_destroy(e);
}

/* Cancelling requests while others run (one of them likely preempted at that moment): each
 * gets one END, the others' tokens do not change, every block comes back. */
Test(sched, cancellation_mid_run_and_while_preempted) {
    enum { N = 5, T = 40 };
    struct req_out ref[N], r[N];
    reference(ref, N, T);
    struct xd_engine *e = engine(N, 32, 8);
    for (int i = 0; i < N; i++) {
        struct xd_gen_params p = params((uint64_t)(100 + i), T);
        cr_assert_eq(submit(e, prompts[i], &p, &r[i]), 0);
    }
    struct xd_engine_stats st;
    for (int it = 0; it < 20000; it++) { /* until the pool has run short once */
        xd_engine_drain(e, on_event, NULL);
        xd_engine_stats(e, &st);
        if (st.preemptions > 0) break;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    xd_engine_cancel(e, r[4].g); /* the newest: preempted first */
    xd_engine_cancel(e, r[1].g);
    wait_all(e, r, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].n_end, 1);
        if (i == 1 || i == 4) {
            cr_assert(r[i].status == -ECANCELED || r[i].status == 0);
            continue;
        }
        cr_assert_eq(r[i].status, 0);
        assert_same_tokens(&r[i].seq[0], &ref[i].seq[0], i);
    }
    assert_idle_and_free(e);
    for (int i = 0; i < N; i++) xd_gen_destroy(r[i].g);
    xd_engine_destroy(e);
}

Test(sched, requests_larger_than_the_pool_are_refused) {
    struct xd_engine *e = engine(4, 32, 3); /* 48 positions */
    struct req_out r;
    struct xd_gen_params p = params(1, 60);
    cr_assert_eq(submit(e, prompts[0], &p, &r), XD_E_CONTEXT);
    p.max_tokens = 20;
    p.n = 3; /* fits shared, not apart: refused (a preempted n > 1 recomputes apart) */
    cr_assert_eq(submit(e, prompts[0], &p, &r), XD_E_CONTEXT);
    p.n = 1;
    cr_assert_eq(submit(e, prompts[0], &p, &r), 0);
    wait_all(e, &r, 1);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.seq[0].n_tokens, 20);
    assert_idle_and_free(e);
    xd_gen_destroy(r.g);
    xd_engine_destroy(e);
    /* a budget below one block cannot make an engine */
    struct xd_engine_params ep = {.n_parallel = 1, .n_ctx = 64, .kv_bytes = block_bytes() - 1};
    struct xd_engine *bad = NULL;
    char err[256];
    cr_assert_eq(xd_engine_create(model, &ep, &bad, err, sizeof err), XD_E_INVALID);
    cr_assert_null(bad);
}

/* Prefix sharing across requests: B starts its prefill after A has stored the same prompt, so
 * it takes A's full blocks and computes only the rest; both give the tokens they give alone. */
Test(sched, requests_with_a_common_prefix_share_full_blocks) {
    const char *prompt = "The quick brown fox jumps over the lazy dog, again and again, while the "
                         "cat watches from the window and the bird sings in the old tree";
    const int32_t n_prompt = n_prompt_of(prompt);
    cr_assert_geq(n_prompt, 2 * XD_KV_BLOCK + 1);
    struct req_out ref[2], r[2];
    struct xd_engine *e = engine(2, 8, 0);
    for (int i = 0; i < 2; i++) {
        struct xd_gen_params p = params((uint64_t)(300 + i), 16);
        cr_assert_eq(submit(e, prompt, &p, &ref[i]), 0);
        wait_all(e, &ref[i], 1);
        xd_gen_destroy(ref[i].g);
    }
    struct xd_engine_stats st0, st;
    xd_engine_stats(e, &st0);
    cr_assert_eq(st0.prefix_shared_tokens, 0, "requests one after the other share nothing");
    for (int i = 0; i < 2; i++) {
        struct xd_gen_params p = params((uint64_t)(300 + i), 16);
        cr_assert_eq(submit(e, prompt, &p, &r[i]), 0);
    }
    wait_all(e, r, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(r[i].status, 0);
        assert_same_tokens(&r[i].seq[0], &ref[i].seq[0], i);
    }
    xd_engine_stats(e, &st);
    const uint64_t shared = (uint64_t)((n_prompt - 1) / XD_KV_BLOCK * XD_KV_BLOCK);
    cr_assert_eq(st.prefix_shared_tokens, shared);
    cr_assert_eq(st.prompt_tokens - st0.prompt_tokens, 2 * (uint64_t)n_prompt - shared);
    assert_idle_and_free(e);
    for (int i = 0; i < 2; i++) xd_gen_destroy(r[i].g);
    xd_engine_destroy(e);
}

/* n > 1 whose sequences end on their first token (max_tokens 1, and 0): sharing happens before
 * sequence 0 gives its blocks back. */
Test(sched, n_sequences_ending_at_once) {
    struct xd_engine *e = engine(4, 64, 0);
    for (int32_t mt = 0; mt <= 1; mt++) {
        struct req_out r;
        struct xd_gen_params p = params(5, mt);
        p.n = 3;
        cr_assert_eq(submit(e, prompts[1], &p, &r), 0);
        wait_all(e, &r, 1);
        cr_assert_eq(r.status, 0, "max_tokens %d: %s", mt, xd_strerror(r.status));
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(r.seq[i].n_finish, 1);
            cr_assert_eq(r.seq[i].n_tokens, mt);
        }
        xd_gen_destroy(r.g);
    }
    assert_idle_and_free(e);
    xd_engine_destroy(e);
}

/* Cache-aware scheduling (prefill_hold): with an offloaded expert cache that holds what a
 * decode touches, prompt chunks that arrive while it decodes are held back for a few steps
 * (counted in prefill_holds) - and not one token of any request changes. */
Test(sched, prefill_hold_holds_prompts_and_changes_no_token, .timeout = 120) {
    enum { N = 4, MAX = 24 };
    struct req_out ref[N], r[N];
    reference(ref, N, MAX);
    uint64_t expert_bytes = 0;
    for (int64_t l = 0; l < model->hp.n_layer; l++) {
        const struct xd_layer *L = &model->layers[l];
        expert_bytes += L->gate_exps.nb[3] + L->up_exps.nb[3] + L->down_exps.nb[3];
    }
    struct xd_xc_config cfg = {.budget = expert_bytes / 2};
    struct xd_xc *xc;
    char err[256];
    cr_assert_eq(xd_xc_open(model, &cfg, &xc, err, sizeof err), 0, "%s", err);
    struct xd_engine_params p = {.n_parallel = N, .n_ctx = 256, .step_tokens = 64,
                                 .max_waiting = 64, .xc = xc, .prefill_hold = 4};
    struct xd_engine *e;
    cr_assert_eq(xd_engine_create(model, &p, &e, err, sizeof err), 0, "%s", err);
    struct xd_gen_params gp = params(100, MAX);
    cr_assert_eq(submit(e, prompts[0], &gp, &r[0]), 0);
    for (int it = 0; it < 120000 && r[0].seq[0].n_tokens < 4; it++) { /* decoding by now */
        xd_engine_drain(e, on_event, NULL);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    cr_assert_geq(r[0].seq[0].n_tokens, 4);
    for (int i = 1; i < N; i++) {
        gp = params((uint64_t)(100 + i), MAX);
        cr_assert_eq(submit(e, prompts[i], &gp, &r[i]), 0);
    }
    wait_all(e, r, N);
    struct xd_engine_stats st;
    xd_engine_stats(e, &st);
    cr_assert_gt(st.prefill_holds, 0, "no step held a prompt back");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].status, 0);
        assert_same_tokens(&r[i].seq[0], &ref[i].seq[0], i);
        xd_gen_destroy(r[i].g);
    }
    assert_idle_and_free(e);
    xd_engine_destroy(e);
    xd_xc_destroy(xc);
}
