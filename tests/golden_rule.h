/* golden_rule.h - the golden conformance rule of tests/fixtures/README, shared by the CPU
 * suite (test_golden.c) and the CUDA suite (test_cuda.c). Header-only (static functions) so
 * CMake's one-file-per-test rule still holds.
 *
 * For every model with a golden file: tokenize each prompt (must equal prompt_tokens exactly),
 * run greedy for the golden's steps, and compare step by step up to the first near tie (golden
 * margin < 0.1): same token, and every golden top-5 logprob above -10 within the tolerance
 * (a golden entry may be missing from our top-5 only where it would rank just below our fifth).
 * F32 files: 0.05 against golden. Others: 0.05 against golden-float, or 0.75 against golden.
 * Models not in tests/fixtures are looked up in ../shared/fixtures/models and skipped if absent.
 */
#ifndef XD_GOLDEN_RULE_H
#define XD_GOLDEN_RULE_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"
#include "xd_test_util.h"

struct run_out {
    struct xd_tokens prompt;
    int32_t tokens[64];
    struct xd_logprobs lp[64];
    int n;
};

/* Greedy run of n steps with top-5 logprobs on backend (NULL: cpu); the engine path
 * `expertd run --temp 0` takes. */
static void run_greedy(struct xd_model *m, const char *backend, const char *text, int n,
                       struct run_out *o) {
    cr_assert_eq(xd_tokenize(m->tok, text, strlen(text), XD_TOK_ADD_SPECIAL | XD_TOK_PARSE_SPECIAL,
                             &o->prompt), 0);
    char err[256];
    struct xd_ctx *ctx;
    struct xd_ctx_params cp = {.n_ctx = 512, .backend = backend};
    cr_assert_eq(xd_ctx_create(m, &cp, &ctx, err, sizeof err), 0, "%s", err);
    const int32_t nv = (int32_t)m->hp.n_vocab, np = (int32_t)o->prompt.n;
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t *pos = malloc((size_t)np * sizeof *pos), *seq = calloc((size_t)np, sizeof *seq);
    for (int32_t i = 0; i < np; i++) pos[i] = i;
    struct xd_batch b = {.n_tokens = np, .token = o->prompt.ids, .pos = pos, .seq = seq};
    cr_assert_eq(xd_forward(ctx, &b, logits), 0);
    for (o->n = 0; o->n < n && o->n < 64; o->n++) {
        int32_t best = 0;
        for (int32_t i = 1; i < nv; i++)
            if (logits[i] > logits[best]) best = i;
        xd_logprobs_compute(logits, nv, best, 5, &o->lp[o->n]);
        o->tokens[o->n] = best;
        int32_t p = np + o->n, s = 0;
        struct xd_batch one = {.n_tokens = 1, .token = &o->tokens[o->n], .pos = &p, .seq = &s};
        cr_assert_eq(xd_forward(ctx, &one, logits), 0);
    }
    cr_assert_eq(xd_xc_pinned(xd_ctx_xc(ctx)), 0, "expert pins leaked");
    free(logits);
    free(pos);
    free(seq);
    xd_ctx_destroy(ctx);
}

/* The fixtures README rule. Returns NULL when out matches the case, else a static reason;
 * *max_dev gets the largest |logprob difference| seen over the compared steps. */
static const char *compare(const struct run_out *o, json_t *c, double tol, double *max_dev,
                           char *why, size_t whylen) {
    json_t *pt = json_object_get(c, "prompt_tokens"), *steps = json_object_get(c, "steps");
    *max_dev = 0;
    if (json_array_size(pt) != o->prompt.n) return "prompt token count differs";
    for (size_t i = 0; i < o->prompt.n; i++)
        if (json_integer_value(json_array_get(pt, i)) != o->prompt.ids[i])
            return "prompt tokens differ";
    for (size_t i = 0; i < json_array_size(steps); i++) {
        json_t *st = json_array_get(steps, i), *top = json_object_get(st, "top");
        double l0 = json_number_value(json_array_get(json_array_get(top, 0), 1));
        double l1 = json_number_value(json_array_get(json_array_get(top, 1), 1));
        if (l0 - l1 < 0.1) return NULL; /* a near tie: the rest is not comparable */
        if ((int)i >= o->n || o->tokens[i] != json_integer_value(json_object_get(st, "token"))) {
            snprintf(why, whylen, "step %zu: token %d != %lld", i, (int)i < o->n ? o->tokens[i] : -1,
                     (long long)json_integer_value(json_object_get(st, "token")));
            return why;
        }
        const struct xd_logprobs *lp = &o->lp[i];
        double floor = lp->n_top >= 5 ? lp->top[lp->n_top - 1].logprob : -1e9;
        for (size_t j = 0; j < json_array_size(top); j++) {
            json_int_t t = json_integer_value(json_array_get(json_array_get(top, j), 0));
            double l = json_number_value(json_array_get(json_array_get(top, j), 1));
            if (l <= -10) continue;
            int found = -1;
            for (int q = 0; q < lp->n_top; q++)
                if (lp->top[q].token == t) found = q;
            if (found < 0) {
                if (l > floor + tol) {
                    snprintf(why, whylen, "step %zu: token %lld (logprob %.3f) missing from top-5",
                             i, (long long)t, l);
                    return why;
                }
                continue;
            }
            double dev = fabs(lp->top[found].logprob - l);
            if (dev > *max_dev) *max_dev = dev;
            if (dev > tol) {
                snprintf(why, whylen, "step %zu: logprob of %lld off by %.3f", i, (long long)t, dev);
                return why;
            }
        }
    }
    return NULL;
}

/* Model path: tests/fixtures first, then ../shared beside the repository; NULL if neither. */
static char *model_path(const char *name) {
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

static json_t *load_json(const char *rel) {
    char *p = xd_test_fixture(rel);
    json_t *j = json_load_file(p, 0, NULL);
    free(p);
    return j;
}

/* Check every case of the model's golden files on backend (NULL: cpu); skips when the model is
 * absent. Returns the largest deviation (against golden-float where there is one). */
static double check_model_on(const char *stem, const char *backend) {
    char rel[256], name[128];
    snprintf(rel, sizeof rel, "golden/%s.golden.json", stem);
    json_t *g = load_json(rel);
    cr_assert(g, "cannot read %s", rel);
    snprintf(rel, sizeof rel, "golden/%s.golden-float.json", stem);
    json_t *gf = load_json(rel); /* absent for F32 models */
    snprintf(name, sizeof name, "%s.gguf", stem);
    char *path = model_path(name);
    if (!path) {
        json_decref(g);
        json_decref(gf);
        cr_skip("%s is neither in tests/fixtures nor in ../shared/fixtures/models", name);
    }
    char err[512];
    struct xd_model *m;
    cr_assert_eq(xd_model_load(path, &m, err, sizeof err), 0, "%s: %s", path, err);
    json_t *cases = json_object_get(g, "cases");
    double worst = 0;
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *c = json_array_get(cases, ci);
        struct run_out *o = calloc(1, sizeof *o);
        int steps = (int)json_array_size(json_object_get(c, "steps"));
        run_greedy(m, backend, json_string_value(json_object_get(c, "prompt")), steps, o);
        char why[256], whyf[256];
        double dev = 0, devf = 0;
        const char *res;
        if (!gf) {
            res = compare(o, c, 0.05, &dev, why, sizeof why);
        } else {
            const char *rf = compare(o, json_array_get(json_object_get(gf, "cases"), ci), 0.05,
                                     &devf, whyf, sizeof whyf);
            const char *rq = compare(o, c, 0.75, &dev, why, sizeof why);
            res = rf && rq ? rf : NULL;
            dev = devf; /* report the deviation against the float reference */
        }
        cr_expect_null(res, "%s (%s) case %zu: %s", stem, backend ? backend : "cpu", ci,
                       res ? res : "");
        if (dev > worst) worst = dev;
        xd_tokens_free(&o->prompt);
        free(o);
    }
    fprintf(stderr, "golden %s (%s): %zu cases, largest logprob deviation %.4f\n", stem,
            backend ? backend : "cpu", json_array_size(cases), worst);
    xd_model_free(m);
    free(path);
    json_decref(g);
    json_decref(gf);
    return worst;
}

#endif
