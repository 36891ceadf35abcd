/* test_proto.c - proto/: every completion field decoded and validated, every error path, and
 * the response, SSE, error and Prometheus encodings byte for byte. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "proto_buf.h"
#include "proto_completion.h"
#include "proto_error.h"
#include "proto_gen.h"
#include "proto_prom.h"
#include "xd_error.h"

static struct proto_limits lim(void) {
    struct proto_limits l = proto_limits_default(1000, 4);
    l.max_tokens = 4096;
    l.max_prompt_tokens = 4096;
    return l;
}

static int decode(const char *body, struct proto_completion_req *r, struct proto_error *e) {
    struct proto_limits l = lim();
    memset(e, 0, sizeof *e);
    return proto_completion_decode(body, strlen(body), &l, r, e);
}

Test(proto_request, minimal_has_openai_defaults) {
    struct proto_completion_req r;
    struct proto_error e;
    cr_assert_eq(decode("{\"model\":\"m\",\"prompt\":\"hi\"}", &r, &e), 0, "%s", e.message);
    cr_assert_str_eq(r.gen.model, "m");
    cr_assert_eq(r.n_prompts, 1);
    cr_assert_not(r.prompts[0].is_tokens);
    cr_assert_str_eq(r.prompts[0].text, "hi");
    cr_assert_eq(r.gen.max_tokens, 16);
    cr_assert_eq(r.gen.n, 1);
    cr_assert_not(r.gen.stream);
    cr_assert_not(r.gen.include_usage);
    cr_assert_eq(r.gen.temperature, 1.0);
    cr_assert_eq(r.gen.top_p, 1.0);
    cr_assert_eq(r.gen.top_k, 0);
    cr_assert_eq(r.gen.min_p, 0.0);
    cr_assert_eq(r.gen.repetition_penalty, 1.0);
    cr_assert_eq(r.gen.presence_penalty, 0.0);
    cr_assert_eq(r.gen.frequency_penalty, 0.0);
    cr_assert_not(r.gen.has_seed);
    cr_assert_eq(r.gen.n_stop, 0);
    cr_assert_eq(r.gen.n_logit_bias, 0);
    cr_assert_eq(r.logprobs, -1);
    cr_assert_not(r.echo);
    cr_assert_not(r.gen.ignore_eos);
    proto_completion_req_free(&r);
}

Test(proto_request, every_field) {
    const char *body =
        "{\"model\":\"tiny\",\"prompt\":\"a\\u0000b\",\"max_tokens\":7,\"temperature\":0.5,"
        "\"top_p\":0.9,\"n\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"logprobs\":2,\"echo\":true,\"stop\":[\"x\",\"yy\"],\"presence_penalty\":-1.5,"
        "\"frequency_penalty\":2,\"seed\":-1,\"logit_bias\":{\"5\":-100,\"999\":2.5},"
        "\"user\":\"u1\",\"best_of\":3,\"suffix\":null,\"top_k\":-1,\"min_p\":0.05,"
        "\"repetition_penalty\":1.1,\"ignore_eos\":true}";
    struct proto_completion_req r;
    struct proto_error e;
    cr_assert_eq(decode(body, &r, &e), 0, "%s", e.message);
    cr_assert_str_eq(r.gen.model, "tiny");
    cr_assert_eq(r.prompts[0].len, 3);
    cr_assert_eq(memcmp(r.prompts[0].text, "a\0b", 3), 0);
    cr_assert_eq(r.gen.max_tokens, 7);
    cr_assert_eq(r.gen.temperature, 0.5);
    cr_assert_eq(r.gen.top_p, 0.9);
    cr_assert_eq(r.gen.n, 3);
    cr_assert(r.gen.stream);
    cr_assert(r.gen.include_usage);
    cr_assert_eq(r.logprobs, 2);
    cr_assert(r.echo);
    cr_assert_eq(r.gen.n_stop, 2);
    cr_assert_str_eq(r.gen.stop[0], "x");
    cr_assert_str_eq(r.gen.stop[1], "yy");
    cr_assert_eq(r.gen.stop_len[1], 2);
    cr_assert_eq(r.gen.presence_penalty, -1.5);
    cr_assert_eq(r.gen.frequency_penalty, 2.0);
    cr_assert(r.gen.has_seed);
    cr_assert_eq(r.gen.seed, UINT64_MAX);
    cr_assert_eq(r.gen.n_logit_bias, 2);
    cr_assert_eq(r.gen.logit_bias[0].token, 5);
    cr_assert_eq(r.gen.logit_bias[0].bias, -100.0f);
    cr_assert_eq(r.gen.logit_bias[1].token, 999);
    cr_assert_eq(r.gen.logit_bias[1].bias, 2.5f);
    cr_assert_str_eq(r.gen.user, "u1");
    cr_assert_eq(r.best_of, 3);
    cr_assert_eq(r.gen.top_k, 0);
    cr_assert_eq(r.gen.min_p, 0.05);
    cr_assert_eq(r.gen.repetition_penalty, 1.1);
    cr_assert(r.gen.ignore_eos);
    proto_completion_req_free(&r);
}

Test(proto_request, null_means_default) {
    struct proto_completion_req r;
    struct proto_error e;
    cr_assert_eq(decode("{\"model\":\"m\",\"prompt\":\"p\",\"max_tokens\":null,\"n\":null,"
                        "\"temperature\":null,\"stop\":null,\"logprobs\":null,\"seed\":null,"
                        "\"logit_bias\":null,\"stream\":null,\"user\":null,\"echo\":null}",
                        &r, &e),
                 0, "%s", e.message);
    cr_assert_eq(r.gen.max_tokens, 16);
    cr_assert_eq(r.logprobs, -1);
    cr_assert_not(r.gen.has_seed);
    proto_completion_req_free(&r);
}

Test(proto_request, prompt_shapes) {
    struct proto_completion_req r;
    struct proto_error e;
    cr_assert_eq(decode("{\"model\":\"m\",\"prompt\":[\"a\",\"bc\"]}", &r, &e), 0);
    cr_assert_eq(r.n_prompts, 2);
    cr_assert_str_eq(r.prompts[1].text, "bc");
    proto_completion_req_free(&r);

    cr_assert_eq(decode("{\"model\":\"m\",\"prompt\":[1,2,999]}", &r, &e), 0);
    cr_assert_eq(r.n_prompts, 1);
    cr_assert(r.prompts[0].is_tokens);
    cr_assert_eq(r.prompts[0].n_tokens, 3);
    cr_assert_eq(r.prompts[0].tokens[2], 999);
    proto_completion_req_free(&r);

    cr_assert_eq(decode("{\"model\":\"m\",\"prompt\":[[1],[2,3]]}", &r, &e), 0);
    cr_assert_eq(r.n_prompts, 2);
    cr_assert_eq(r.prompts[1].n_tokens, 2);
    cr_assert_eq(r.prompts[1].tokens[1], 3);
    proto_completion_req_free(&r);

    cr_assert_eq(decode("{\"model\":\"m\",\"prompt\":\"\"}", &r, &e), 0);
    cr_assert_eq(r.prompts[0].len, 0);
    proto_completion_req_free(&r);
}

struct bad_case {
    const char *body;
    int status;
    const char *param; /* "" = null */
    const char *msg_part;
};

static const struct bad_case bad_cases[] = {
    {"{", 400, "", "could not parse the JSON"},
    {"", 400, "", "could not parse the JSON"},
    {"[1,2]", 400, "", "must be a JSON object"},
    {"\"x\"", 400, "", "must be a JSON object"},
    {"{\"prompt\":\"x\"}", 400, "model", "must provide a model"},
    {"{\"model\":\"m\"}", 400, "prompt", "must provide a prompt"},
    {"{\"model\":1,\"prompt\":\"x\"}", 400, "model", "must be a string"},
    {"{\"model\":\"m\",\"prompt\":5}", 400, "prompt", "must be a string, an array"},
    {"{\"model\":\"m\",\"prompt\":[]}", 400, "prompt", "non-empty"},
    {"{\"model\":\"m\",\"prompt\":[[]]}", 400, "prompt", "non-empty"},
    {"{\"model\":\"m\",\"prompt\":[\"a\",1]}", 400, "prompt", "array of strings"},
    {"{\"model\":\"m\",\"prompt\":[[1],\"a\"]}", 400, "prompt", "array of strings"},
    {"{\"model\":\"m\",\"prompt\":[1,\"a\"]}", 400, "prompt", "array of strings"},
    {"{\"model\":\"m\",\"prompt\":[1,1000]}", 400, "prompt", "between 0 and 999, got 1000"},
    {"{\"model\":\"m\",\"prompt\":[-1]}", 400, "prompt", "between 0 and 999, got -1"},
    {"{\"model\":\"m\",\"prompt\":[1.5]}", 400, "prompt", "array of strings"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":\"5\"}", 400, "max_tokens",
     "integer between 0 and 4096"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":1.5}", 400, "max_tokens", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":-1}", 400, "max_tokens", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":4097}", 400, "max_tokens", "4096"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":2.5}", 400, "temperature",
     "number between 0 and 2"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":\"hot\"}", 400, "temperature", "number"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":-0.1}", 400, "temperature", "number"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":1.5}", 400, "top_p", "between 0 and 1"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"min_p\":-1}", 400, "min_p", "between 0 and 1"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":-2}", 400, "top_k", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":true}", 400, "top_k", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"n\":0}", 400, "n", "between 1 and 4"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"n\":5}", 400, "n", "between 1 and 4"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "stream", "boolean"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"echo\":1}", 400, "echo", "boolean"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"ignore_eos\":0}", 400, "ignore_eos", "boolean"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":6}", 400, "logprobs", "between 0 and 5"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":true}", 400, "logprobs", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stop\":5}", 400, "stop", "at most 4"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop",
     "at most 4"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",2]}", 400, "stop", "at most 4"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"presence_penalty\":3}", 400, "presence_penalty",
     "between -2 and 2"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"frequency_penalty\":-2.5}", 400, "frequency_penalty",
     "between -2 and 2"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"repetition_penalty\":0}", 400, "repetition_penalty",
     "between 0.01 and 10"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"seed\":1.5}", 400, "seed", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":[1]}", 400, "logit_bias", "object"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"a\":1}}", 400, "logit_bias",
     "between 0 and 999, got 'a'"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"1000\":1}}", 400, "logit_bias",
     "token ids"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"1\":101}}", 400, "logit_bias",
     "between -100 and 100"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"1\":\"x\"}}", 400, "logit_bias",
     "between -100 and 100"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"user\":5}", 400, "user", "string"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"suffix\":\"tail\"}", 400, "suffix", "not supported"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"best_of\":2}", 400, "best_of", "not supported"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"best_of\":0}", 400, "best_of", "integer"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}", 400,
     "stream_options", "only allowed when 'stream' is enabled"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"foo\":1}}", 400,
     "stream_options", "Unrecognized stream option"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}",
     400, "stream_options.include_usage", "boolean"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream_options\":3}", 400,
     "stream_options", "object"},
    {"{\"model\":\"m\",\"prompt\":\"x\",\"n_predict\":5}", 400, "n_predict",
     "Unrecognized request argument supplied: n_predict"},
};

Test(proto_request, every_error_path) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        struct proto_completion_req r;
        struct proto_error e;
        int rc = decode(c->body, &r, &e);
        cr_assert_eq(rc, XD_E_INVALID, "case %zu %s: rc %d", i, c->body, rc);
        cr_assert_eq(e.status, c->status, "case %zu", i);
        cr_assert_str_eq(e.param, c->param, "case %zu %s: param '%s'", i, c->body, e.param);
        cr_assert(strstr(e.message, c->msg_part), "case %zu %s: message '%s'", i, c->body,
                  e.message);
        cr_assert_null(r.prompts, "case %zu: freed on failure", i);
        proto_completion_req_free(&r); /* safe twice */
    }
}

Test(proto_request, limits_on_counts) {
    struct proto_limits l = lim();
    l.max_prompts = 2;
    l.max_prompt_tokens = 3;
    l.max_logit_bias = 1;
    l.max_stop_len = 2;
    struct proto_completion_req r;
    struct proto_error e;
    const char *bodies[] = {
        "{\"model\":\"m\",\"prompt\":[\"a\",\"b\",\"c\"]}",
        "{\"model\":\"m\",\"prompt\":[1,2,3,4]}",
        "{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"1\":1,\"2\":2}}",
        "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":\"abc\"}",
    };
    const char *params[] = {"prompt", "prompt", "logit_bias", "stop"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(proto_completion_decode(bodies[i], strlen(bodies[i]), &l, &r, &e),
                     XD_E_INVALID, "%s", bodies[i]);
        cr_assert_str_eq(e.param, params[i]);
        cr_assert_eq(e.status, 400);
    }
}

Test(proto_request, every_prefix_of_a_body_is_rejected_or_whole) {
    const char *body = "{\"model\":\"m\",\"prompt\":[[1,2],[3]],\"stop\":[\"a\"],"
                       "\"logit_bias\":{\"7\":1},\"stream\":true}";
    size_t n = strlen(body);
    struct proto_limits l = lim();
    for (size_t k = 0; k < n; k++) {
        /* an exact-size copy so any over-read shows under ASan */
        char *copy = malloc(k ? k : 1);
        memcpy(copy, body, k);
        struct proto_completion_req r;
        struct proto_error e;
        cr_assert_eq(proto_completion_decode(copy, k, &l, &r, &e), XD_E_INVALID, "prefix %zu", k);
        free(copy);
    }
}

/* ---- encoding ------------------------------------------------------------------------------- */

static const struct proto_meta M = {"cmpl-abc", 1700000000, "tiny"};

Test(proto_response, whole_response_byte_exact) {
    struct proto_choice ch[2] = {
        {.index = 0, .text = "Hello \"w\"\n", .len = 10, .finish_reason = "length"},
        {.index = 1, .text = "\xc3\xa9", .len = 2, .finish_reason = "stop"},
    };
    struct proto_usage u = {5, 7};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_completion_encode(&M, ch, 2, &u, &b), 0);
    cr_assert_str_eq(b.data,
                     "{\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
                     "\"model\":\"tiny\",\"choices\":[{\"index\":0,\"text\":\"Hello "
                     "\\\"w\\\"\\n\",\"logprobs\":null,\"finish_reason\":\"length\"},{\"index\":1,"
                     "\"text\":\"\xc3\xa9\",\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                     "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
                     "\"total_tokens\":12}}");
    proto_buf_free(&b);
}

Test(proto_response, logprobs_byte_exact) {
    struct proto_top_logprob top0[2] = {{"He", 2, -0.25f}, {"Hi", 2, -1.5f}};
    struct proto_token_logprob lp[2] = {
        {.token = "<s>", .len = 3, .has_logprob = false, .text_offset = 0},
        {.token = "He", .len = 2, .has_logprob = true, .logprob = -0.25f, .text_offset = 3,
         .top = top0, .n_top = 2},
    };
    struct proto_choice ch = {.index = 0, .text = "He", .len = 2, .has_logprobs = true,
                              .lp = lp, .n_lp = 2, .finish_reason = NULL};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_completion_chunk(&M, &ch, false, &b), 0);
    cr_assert_str_eq(b.data,
                     "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":"
                     "1700000000,\"model\":\"tiny\",\"choices\":[{\"index\":0,\"text\":\"He\","
                     "\"logprobs\":{\"tokens\":[\"<s>\",\"He\"],\"token_logprobs\":[null,-0.25],"
                     "\"top_logprobs\":[null,{\"He\":-0.25,\"Hi\":-1.5}],\"text_offset\":[0,3]},"
                     "\"finish_reason\":null}]}\n\n");
    proto_buf_free(&b);
}

Test(proto_response, chunks_usage_done_byte_exact) {
    struct proto_choice ch = {.index = 2, .text = "", .len = 0, .finish_reason = "stop"};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_completion_chunk(&M, &ch, true, &b), 0);
    struct proto_usage u = {3, 4};
    cr_assert_eq(proto_completion_usage_chunk(&M, &u, &b), 0);
    cr_assert_eq(proto_sse_done(&b), 0);
    cr_assert_str_eq(
        b.data,
        "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
        "\"model\":\"tiny\",\"choices\":[{\"index\":2,\"text\":\"\",\"logprobs\":null,"
        "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
        "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
        "\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
        "\"total_tokens\":7}}\n\n"
        "data: [DONE]\n\n");
    proto_buf_free(&b);
}

Test(proto_response, invalid_utf8_text_is_refused) {
    struct proto_choice ch = {.index = 0, .text = "\xff", .len = 1};
    struct proto_usage u = {0, 0};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_completion_encode(&M, &ch, 1, &u, &b), XD_E_INVALID);
    cr_assert_eq(b.len, 0);
    proto_buf_free(&b);
}

Test(proto_error, bodies_byte_exact) {
    struct proto_error e;
    proto_error_set(&e, 400, "temperature", "invalid_value", "'%s' bad", "temperature");
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_error_encode(&e, &b), 0);
    cr_assert_str_eq(b.data, "{\"error\":{\"message\":\"'temperature' bad\",\"type\":"
                             "\"invalid_request_error\",\"param\":\"temperature\",\"code\":"
                             "\"invalid_value\"}}");
    proto_buf_reset(&b);
    proto_error_set(&e, 503, NULL, NULL, "busy \xff");
    cr_assert_eq(proto_sse_error(&e, &b), 0);
    cr_assert_str_eq(b.data, "data: {\"error\":{\"message\":\"busy ?\",\"type\":\"server_error\","
                             "\"param\":null,\"code\":null}}\n\n");
    proto_buf_free(&b);
    cr_assert_str_eq(proto_error_type(401), "authentication_error");
    cr_assert_str_eq(proto_error_type(429), "rate_limit_error");
    cr_assert_str_eq(proto_error_type(404), "invalid_request_error");
    cr_assert_str_eq(proto_http_reason(413), "Payload Too Large");
    cr_assert_str_eq(proto_http_reason(299), "Unknown");
}

Test(proto_prom, exposition_byte_exact) {
    static const double bounds[] = {0.1, 1};
    uint64_t counts[3] = {0};
    struct proto_hist h = {bounds, 2, counts, 0, 0};
    proto_hist_observe(&h, 0.05);
    proto_hist_observe(&h, 0.1);
    proto_hist_observe(&h, 0.5);
    proto_hist_observe(&h, 7);
    struct proto_buf b;
    proto_buf_init(&b);
    proto_prom_family(&b, "x_total", "counter", "Help with \\ and\nnewline.");
    struct proto_label l[2] = {{"endpoint", "/v1/\"c\"\\\n"}, {"status", "200"}};
    proto_prom_sample(&b, "x_total", l, 2, 42);
    proto_prom_family(&b, "y_seconds", "histogram", "Latency.");
    proto_prom_hist(&b, "y_seconds", NULL, 0, &h);
    proto_prom_sample(&b, "z", NULL, 0, 0.25);
    proto_prom_sample(&b, "z", NULL, 0, INFINITY);
    proto_prom_sample(&b, "z", NULL, 0, NAN);
    cr_assert_str_eq(b.data, "# HELP x_total Help with \\\\ and\\nnewline.\n"
                             "# TYPE x_total counter\n"
                             "x_total{endpoint=\"/v1/\\\"c\\\"\\\\\\n\",status=\"200\"} 42\n"
                             "# HELP y_seconds Latency.\n"
                             "# TYPE y_seconds histogram\n"
                             "y_seconds_bucket{le=\"0.1\"} 2\n"
                             "y_seconds_bucket{le=\"1\"} 3\n"
                             "y_seconds_bucket{le=\"+Inf\"} 4\n"
                             "y_seconds_sum 7.65\n"
                             "y_seconds_count 4\n"
                             "z 0.25\n"
                             "z +Inf\n"
                             "z NaN\n");
    proto_buf_free(&b);
}

Test(proto_buf, append_take_and_oom_flag) {
    struct proto_buf b;
    proto_buf_init(&b);
    for (int i = 0; i < 1000; i++) proto_buf_printf(&b, "%d,", i);
    cr_assert_eq(strncmp(b.data, "0,1,2,", 6), 0);
    size_t len;
    char *s = proto_buf_take(&b, &len);
    cr_assert_eq(len, strlen(s));
    cr_assert_null(b.data);
    free(s);
    b.oom = true;
    cr_assert_eq(proto_buf_puts(&b, "x"), XD_E_NOMEM);
    cr_assert_null(proto_buf_take(&b, &len));
    cr_assert_eq(len, 0);
}
