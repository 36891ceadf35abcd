/* test_engine_thread.c - engine/engine.c: the engine thread with the tiny fixture model.
 * Seeded requests give the same tokens alone and batched; cancellation, n > 1, max_tokens 0,
 * stop strings, submit errors, queue limits and shutdown each end every request with exactly
 * one END; slots are all free afterwards. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "model.h"
#include "tokenizer.h"
#include "xd_error.h"
#include "xd_test_util.h"

#define MAX_TOK 256

struct seq_out {
    int32_t tokens[MAX_TOK];
    int n_tokens;
    char text[4096];
    size_t len;
    enum xd_finish finish;
    int n_finish;
};

struct req_out {
    struct xd_gen *g;
    struct seq_out seq[4];
    int n_end;
    int status;
    int n_events_after_end;
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
    struct req_out *r = ev->user;
    if (r->n_end) r->n_events_after_end++;
    struct seq_out *s = &r->seq[ev->index];
    switch (ev->kind) {
    case XD_GEN_TOKEN:
        if (ev->token >= 0 && s->n_tokens < MAX_TOK) s->tokens[s->n_tokens++] = ev->token;
        /* fallthrough */
    case XD_GEN_FINISH:
        cr_assert_lt(s->len + ev->len, sizeof s->text);
        memcpy(s->text + s->len, ev->text, ev->len);
        s->len += ev->len;
        if (ev->kind == XD_GEN_FINISH) {
            s->finish = ev->finish;
            s->n_finish++;
        }
        break;
    case XD_GEN_END:
        r->n_end++;
        r->status = ev->status;
        break;
    case XD_GEN_PROMPT_LOGPROB: break;
    }
}

static struct xd_engine *engine(int32_t n_parallel, int32_t max_waiting) {
    struct xd_engine_params p = {.n_parallel = n_parallel, .n_ctx = 512, .step_tokens = 64,
                                 .max_waiting = max_waiting};
    struct xd_engine *e;
    char err[256];
    cr_assert_eq(xd_engine_create(model, &p, &e, err, sizeof err), 0, "%s", err);
    return e;
}

static struct xd_gen_params params(uint64_t seed, int32_t max_tokens) {
    struct xd_gen_params p = {.sampler = xd_sampler_params_default(), .n = 1,
                              .max_tokens = max_tokens};
    p.sampler.seed = seed;
    p.sampler.temperature = 0.9f;
    return p;
}

static int submit_text(struct xd_engine *e, const char *prompt, const struct xd_gen_params *p,
                       struct req_out *r) {
    struct xd_tokens t = {0};
    cr_assert_eq(xd_tokenize(model->tok, prompt, strlen(prompt), XD_TOK_ADD_SPECIAL, &t), 0);
    memset(r, 0, sizeof *r);
    cr_assert_eq(xd_gen_create(p, t.ids, t.n, r, &r->g), 0);
    xd_tokens_free(&t);
    cr_assert(xd_gen_check_invariants(r->g));
    return xd_engine_submit(e, r->g);
}

/* Drains until every request in rs has ended (bounded: 60 s). */
static void wait_all(struct xd_engine *e, struct req_out **rs, int n) {
    for (int it = 0; it < 60000; it++) {
        xd_engine_drain(e, on_event, NULL);
        int done = 0;
        for (int i = 0; i < n; i++) done += rs[i]->n_end > 0;
        if (done == n) return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("requests did not end");
}

static void assert_idle(struct xd_engine *e) {
    struct xd_engine_stats st;
    for (int it = 0; it < 1000; it++) {
        xd_engine_stats(e, &st);
        if (!st.slots_used && !st.running && !st.waiting) break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(st.slots_used, 0);
    cr_assert_eq(st.running, 0);
    cr_assert_eq(st.waiting, 0);
}

TestSuite(engine_thread, .init = setup, .fini = teardown);

Test(engine_thread, seeded_request_same_alone_and_batched) {
    struct xd_engine *e = engine(4, 16);
    struct xd_gen_params p = params(1234, 40);
    p.ignore_eos = true;
    struct req_out alone, *ra = &alone;
    cr_assert_eq(submit_text(e, "Once upon a time", &p, &alone), 0);
    wait_all(e, &ra, 1);
    cr_assert_eq(alone.status, 0);
    cr_assert_eq(alone.seq[0].n_tokens, 40);

    /* the same request again, now sharing every step with three others (one still in prefill
     * of a longer prompt, so decode and prefill rows mix) */
    struct req_out others[3], again, *all[4] = {&others[0], &others[1], &others[2], &again};
    for (int i = 0; i < 3; i++) {
        struct xd_gen_params q = params((uint64_t)i, 30 + i * 7);
        q.ignore_eos = true;
        cr_assert_eq(submit_text(e, i == 1 ? "A much longer prompt that needs more than one "
                                             "chunk of prefill in the step budget of the engine"
                                           : "Hello there",
                                 &q, &others[i]),
                     0);
    }
    cr_assert_eq(submit_text(e, "Once upon a time", &p, &again), 0);
    wait_all(e, all, 4);
    cr_assert_eq(again.status, 0);
    cr_assert_eq(again.seq[0].n_tokens, alone.seq[0].n_tokens);
    cr_assert_eq(memcmp(again.seq[0].tokens, alone.seq[0].tokens, sizeof(int32_t) * 40), 0,
                 "batched tokens differ from the ones generated alone");
    cr_assert_eq(again.seq[0].len, alone.seq[0].len);
    cr_assert_eq(memcmp(again.seq[0].text, alone.seq[0].text, alone.seq[0].len), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(others[i].status, 0);
        cr_assert_eq(others[i].seq[0].n_tokens, 30 + i * 7);
        cr_assert_eq(others[i].seq[0].finish, XD_FINISH_LENGTH);
        xd_gen_destroy(others[i].g);
    }
    struct xd_engine_stats st;
    xd_engine_stats(e, &st);
    cr_assert_eq(st.requests_ok, 5);
    cr_assert_gt(st.fwd.forward_calls, 0);
    assert_idle(e);
    xd_gen_destroy(alone.g);
    xd_gen_destroy(again.g);
    xd_engine_destroy(e);
}

Test(engine_thread, n_sequences_each_finish_once) {
    struct xd_engine *e = engine(4, 16);
    struct xd_gen_params p = params(7, 12);
    p.n = 3;
    p.ignore_eos = true;
    struct req_out r, *rr = &r;
    cr_assert_eq(submit_text(e, "Tell me", &p, &r), 0);
    wait_all(e, &rr, 1);
    cr_assert_eq(r.status, 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r.seq[i].n_finish, 1);
        cr_assert_eq(r.seq[i].n_tokens, 12);
    }
    cr_assert_eq(xd_gen_info(r.g)->n_generated, 36);
    cr_assert_eq(r.n_events_after_end, 0);
    assert_idle(e);
    xd_gen_destroy(r.g);
    xd_engine_destroy(e);
}

Test(engine_thread, cancel_running_and_queued) {
    struct xd_engine *e = engine(1, 16);
    struct xd_gen_params p = params(1, 400);
    p.ignore_eos = true;
    struct req_out run, queued, *all[2] = {&run, &queued};
    cr_assert_eq(submit_text(e, "Long one", &p, &run), 0);
    cr_assert_eq(submit_text(e, "Waiting one", &p, &queued), 0);
    xd_engine_cancel(e, queued.g);
    for (int it = 0; it < 5000 && run.seq[0].n_tokens < 3; it++) {
        xd_engine_drain(e, on_event, NULL);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    xd_engine_cancel(e, run.g);
    xd_engine_cancel(e, run.g); /* idempotent */
    wait_all(e, all, 2);
    cr_assert_eq(run.status, -ECANCELED);
    cr_assert_eq(queued.status, -ECANCELED);
    cr_assert_lt(run.seq[0].n_tokens, 400);
    cr_assert_eq(queued.seq[0].n_tokens, 0);
    cr_assert_eq(run.n_end, 1);
    cr_assert_eq(queued.n_end, 1);
    struct xd_engine_stats st;
    xd_engine_stats(e, &st);
    cr_assert_eq(st.requests_cancelled, 2);
    assert_idle(e);
    xd_gen_destroy(run.g);
    xd_gen_destroy(queued.g);
    xd_engine_destroy(e);
}

Test(engine_thread, stop_string_and_max_tokens_zero) {
    struct xd_engine *e = engine(2, 16);
    struct xd_gen_params p = params(5, 30);
    p.sampler.temperature = 0;
    p.ignore_eos = true;
    struct req_out free_run, *fr = &free_run;
    cr_assert_eq(submit_text(e, "The", &p, &free_run), 0);
    wait_all(e, &fr, 1);
    cr_assert_gt(free_run.seq[0].len, 4);
    /* stop at the text's 3rd..4th bytes: the answer ends right before them */
    char stop[3] = {free_run.seq[0].text[2], free_run.seq[0].text[3], 0};
    const char *stops[1] = {stop};
    p.stop = stops;
    p.n_stop = 1;
    struct req_out stopped, zero, *all[2] = {&stopped, &zero};
    cr_assert_eq(submit_text(e, "The", &p, &stopped), 0);
    struct xd_gen_params z = params(5, 0);
    cr_assert_eq(submit_text(e, "The", &z, &zero), 0);
    wait_all(e, all, 2);
    cr_assert_eq(stopped.seq[0].finish, XD_FINISH_STOP);
    cr_assert_leq(stopped.seq[0].len, 2);
    cr_assert_eq(memcmp(stopped.seq[0].text, free_run.seq[0].text, stopped.seq[0].len), 0);
    cr_assert_eq(zero.status, 0);
    cr_assert_eq(zero.seq[0].finish, XD_FINISH_LENGTH);
    cr_assert_eq(zero.seq[0].n_tokens, 0);
    cr_assert_eq(xd_gen_info(zero.g)->n_generated, 0);
    assert_idle(e);
    xd_gen_destroy(free_run.g);
    xd_gen_destroy(stopped.g);
    xd_gen_destroy(zero.g);
    xd_engine_destroy(e);
}

Test(engine_thread, submit_errors_leave_the_request_to_the_caller) {
    struct xd_engine *e = engine(2, 1);
    struct xd_gen_params p = params(1, 10);
    struct xd_gen *g;
    int32_t bad[2] = {1, 1 << 20};
    cr_assert_eq(xd_gen_create(&p, bad, 2, NULL, &g), 0);
    cr_assert_eq(xd_engine_submit(e, g), XD_E_INVALID);
    xd_gen_destroy(g);
    int32_t ok[1] = {1};
    p.max_tokens = 600; /* n_ctx is 512 */
    cr_assert_eq(xd_gen_create(&p, ok, 1, NULL, &g), 0);
    cr_assert_eq(xd_engine_submit(e, g), XD_E_CONTEXT);
    xd_gen_destroy(g);
    p.max_tokens = 10;
    p.n = 3; /* more sequences than slots */
    cr_assert_eq(xd_gen_create(&p, ok, 1, NULL, &g), 0);
    cr_assert_eq(xd_engine_submit(e, g), XD_E_INVALID);
    xd_gen_destroy(g);
    cr_assert_eq(xd_gen_create(&p, ok, 0, NULL, &g), XD_E_INVALID, "empty prompt");
    /* queue limit: max_waiting 1 */
    struct xd_gen_params q = params(1, 300);
    q.ignore_eos = true;
    struct req_out rs[4], *all[4];
    int n_ok = 0, n_again = 0;
    for (int i = 0; i < 4; i++) {
        int rc = submit_text(e, "Busy", &q, &rs[i]);
        if (rc == 0) all[n_ok++] = &rs[i];
        else {
            cr_assert_eq(rc, -EAGAIN);
            n_again++;
            xd_gen_destroy(rs[i].g);
        }
    }
    cr_assert_gt(n_again, 0);
    xd_engine_shutdown(e); /* ends everything that was accepted */
    wait_all(e, all, n_ok);
    for (int i = 0; i < n_ok; i++) {
        cr_assert(all[i]->status == -ECANCELED || all[i]->status == 0);
        cr_assert_eq(all[i]->n_end, 1);
        xd_gen_destroy(all[i]->g);
    }
    cr_assert_eq(submit_text(e, "late", &q, &rs[0]), -ESHUTDOWN);
    xd_gen_destroy(rs[0].g);
    xd_engine_destroy(e);
}
