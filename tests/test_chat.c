/* test_chat.c - proto/proto_chat.c: every chat field decoded and validated against OpenAI's
 * schema, messages normalized for the template, every error path a 400 naming its parameter,
 * and the chat response, chunk and usage encodings byte for byte. */
#include <criterion/criterion.h>
#include <string.h>

#include "proto_chat.h"
#include "xd_error.h"

static struct proto_limits lim(void) {
    struct proto_limits l = proto_limits_default(1000, 4);
    l.max_tokens = 4096;
    l.max_prompt_tokens = 4096;
    return l;
}

static int decode(const char *body, struct proto_chat_req *r, struct proto_error *e) {
    struct proto_limits l = lim();
    memset(e, 0, sizeof *e);
    return proto_chat_decode(body, strlen(body), &l, r, e);
}

static char *dump(const json_t *j) { return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS); }

Test(chat_request, minimal_has_chat_defaults) {
    struct proto_chat_req r;
    struct proto_error e;
    cr_assert_eq(
        decode("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r, &e),
        0, "%s", e.message);
    cr_assert_str_eq(r.gen.model, "m");
    cr_assert_eq(r.gen.max_tokens, -1, "chat's default is the rest of the context");
    cr_assert_eq(r.gen.n, 1);
    cr_assert_not(r.logprobs);
    cr_assert_eq(r.top_logprobs, 0);
    cr_assert_null(r.template_kwargs);
    char *s = dump(r.messages);
    cr_assert_str_eq(s, "[{\"content\":\"hi\",\"role\":\"user\"}]");
    free(s);
    proto_chat_req_free(&r);
}

Test(chat_request, every_field) {
    const char *body =
        "{\"model\":\"tiny\",\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"name\":\"ann\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null,"
        "\"refusal\":null,\"tool_calls\":[]},{\"role\":\"user\",\"content\":\"c\"}],"
        "\"max_tokens\":9,\"max_completion_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"n\":2,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stop\":[\"x\"],"
        "\"seed\":3,\"presence_penalty\":1,\"frequency_penalty\":-1,\"logit_bias\":{\"5\":-100},"
        "\"logprobs\":true,\"top_logprobs\":20,\"response_format\":{\"type\":\"text\"},"
        "\"tools\":null,\"tool_choice\":\"none\",\"parallel_tool_calls\":false,\"user\":\"u\","
        "\"top_k\":40,\"min_p\":0.1,\"repetition_penalty\":1.1,\"ignore_eos\":true,"
        "\"chat_template_kwargs\":{\"enable_thinking\":false}}";
    struct proto_chat_req r;
    struct proto_error e;
    cr_assert_eq(decode(body, &r, &e), 0, "%s", e.message);
    cr_assert_eq(r.gen.max_tokens, 7, "max_completion_tokens wins over max_tokens");
    cr_assert_eq(r.gen.temperature, 0.5);
    cr_assert_eq(r.gen.top_p, 0.9);
    cr_assert_eq(r.gen.n, 2);
    cr_assert(r.gen.stream);
    cr_assert(r.gen.include_usage);
    cr_assert_eq(r.gen.n_stop, 1);
    cr_assert(r.gen.has_seed);
    cr_assert_eq(r.gen.seed, 3);
    cr_assert_eq(r.gen.presence_penalty, 1.0);
    cr_assert_eq(r.gen.frequency_penalty, -1.0);
    cr_assert_eq(r.gen.n_logit_bias, 1);
    cr_assert(r.logprobs);
    cr_assert_eq(r.top_logprobs, 20);
    cr_assert_str_eq(r.gen.user, "u");
    cr_assert_eq(r.gen.top_k, 40);
    cr_assert_eq(r.gen.min_p, 0.1);
    cr_assert_eq(r.gen.repetition_penalty, 1.1);
    cr_assert(r.gen.ignore_eos);
    cr_assert(json_is_false(json_object_get(r.template_kwargs, "enable_thinking")));
    char *s = dump(r.messages);
    /* developer -> system, text parts joined with "\n", null assistant content -> "" */
    cr_assert_str_eq(s, "[{\"content\":\"Be brief.\",\"role\":\"system\"},"
                        "{\"content\":\"a\\nb\",\"name\":\"ann\",\"role\":\"user\"},"
                        "{\"content\":\"\",\"role\":\"assistant\"},"
                        "{\"content\":\"c\",\"role\":\"user\"}]");
    free(s);
    proto_chat_req_free(&r);
}

Test(chat_request, max_tokens_alone_and_null) {
    struct proto_chat_req r;
    struct proto_error e;
    cr_assert_eq(decode("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}],"
                        "\"max_tokens\":5}",
                        &r, &e),
                 0, "%s", e.message);
    cr_assert_eq(r.gen.max_tokens, 5);
    proto_chat_req_free(&r);
    cr_assert_eq(decode("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}],"
                        "\"max_completion_tokens\":null,\"tool_choice\":\"auto\"}",
                        &r, &e),
                 0, "%s", e.message);
    cr_assert_eq(r.gen.max_tokens, -1);
    proto_chat_req_free(&r);
}

/* body, status, param, a piece of the message */
static const struct {
    const char *body, *param, *msg;
    int status;
} errors[] = {
    {"{\"model\":\"m\"}", "messages", "provide a messages", 400},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model", "model parameter", 400},
    {"{\"model\":\"m\",\"messages\":[]}", "messages", "non-empty array", 400},
    {"{\"model\":\"m\",\"messages\":\"hi\"}", "messages", "non-empty array", 400},
    {"{\"model\":\"m\",\"messages\":[\"hi\"]}", "messages[0]", "must be an object", 400},
    {"{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "messages[0].role", "one of", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "messages[0].role",
     "got 'robot'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\",\"tool_call_id\":"
     "\"1\"}]}",
     "messages[0].role", "'tool' messages are not supported", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", "messages[0].content", "required",
     400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content",
     "string or an array", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"a\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x\"}}]}]}",
     "messages[0].content[1].type", "type 'image_url' are not supported", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]"
     "}",
     "messages[0].content[0].type", "type 'input_audio'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}",
     "messages[0].content[0]", "string 'type'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
     "messages[0].content[0].text", "must be a string", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"mood\":\"ok\"}]}",
     "messages[0].mood", "Unrecognized message field", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":5}]}",
     "messages[0].name", "must be a string", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"refusal\":\"no\"}]}",
     "messages[0].refusal", "assistant messages only", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
     "[{\"id\":\"1\"}]}]}",
     "messages[0].tool_calls", "tool calling", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
     "{\"type\":\"json_object\"}}",
     "response_format", "'json_object' is not supported yet", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
     "{\"type\":\"json_schema\",\"json_schema\":{}}}",
     "response_format", "'json_schema' is not supported yet", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
     "{\"type\":\"yaml\"}}",
     "response_format", "got 'yaml'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
     "\"text\"}",
     "response_format", "object with a 'type'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
     "\"function\",\"function\":{\"name\":\"f\"}}]}",
     "tools", "not supported by this server yet", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":[{}]}",
     "functions", "not supported", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":"
     "\"required\"}",
     "tool_choice", "not supported", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}",
     "top_logprobs", "requires 'logprobs'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
     "\"top_logprobs\":21}",
     "top_logprobs", "between 0 and 20", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":1}",
     "logprobs", "boolean", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
     "\"max_completion_tokens\":-1}",
     "max_completion_tokens", "between 0 and 4096", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}",
     "temperature", "between 0 and 2", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":5}", "n",
     "between 1 and 4", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":"
     "{\"include_usage\":true}}",
     "stream_options", "only allowed when 'stream'", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"prompt\":\"x\"}",
     "prompt", "Unrecognized request argument", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"echo\":true}", "echo",
     "Unrecognized request argument", 400},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
     "\"chat_template_kwargs\":[1]}",
     "chat_template_kwargs", "must be an object", 400},
    {"[1,2]", NULL, "must be a JSON object", 400},
    {"{\"model\":", NULL, "could not parse", 400},
};

Test(chat_request, every_error_path) {
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        struct proto_chat_req r;
        struct proto_error e;
        int rc = decode(errors[i].body, &r, &e);
        cr_assert_eq(rc, XD_E_INVALID, "case %zu: %s", i, errors[i].body);
        cr_assert_eq(e.status, errors[i].status, "case %zu", i);
        cr_assert_str_eq(e.param, errors[i].param ? errors[i].param : "", "case %zu: %s", i,
                         e.message);
        cr_assert_not_null(strstr(e.message, errors[i].msg), "case %zu: %s", i, e.message);
        cr_assert_null(r.messages, "case %zu: freed on failure", i);
        proto_chat_req_free(&r); /* safe again */
    }
}

Test(chat_request, every_prefix_of_a_body_is_rejected_or_whole) {
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                       "\"text\",\"text\":\"hi\"}]}],\"logprobs\":true,\"top_logprobs\":1}";
    size_t n = strlen(body);
    struct proto_limits l = lim();
    for (size_t i = 0; i <= n; i++) {
        struct proto_chat_req r;
        struct proto_error e = {0};
        char *copy = malloc(i ? i : 1); /* exactly i bytes: ASan catches any over-read */
        memcpy(copy, body, i);
        int rc = proto_chat_decode(copy, i, &l, &r, &e);
        cr_assert_eq(rc, i == n ? 0 : XD_E_INVALID, "prefix %zu", i);
        if (rc) cr_assert_eq(e.status, 400);
        proto_chat_req_free(&r);
        free(copy);
    }
}

/* ---- encoding ------------------------------------------------------------------------------- */

static const struct proto_meta M = {"chatcmpl-abc", 1700000000, "tiny"};

Test(chat_response, whole_response_byte_exact) {
    struct proto_choice ch[2] = {
        {.index = 0, .text = "Hello \"w\"\n", .len = 10, .finish_reason = "stop"},
        {.index = 1, .text = "\xc3\xa9", .len = 2, .finish_reason = "length"},
    };
    struct proto_usage u = {5, 7};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_chat_encode(&M, ch, 2, &u, &b), 0);
    cr_assert_str_eq(b.data,
                     "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":"
                     "1700000000,\"model\":\"tiny\",\"choices\":[{\"index\":0,\"message\":{"
                     "\"role\":\"assistant\",\"content\":\"Hello \\\"w\\\"\\n\"},\"logprobs\":"
                     "null,\"finish_reason\":\"stop\"},{\"index\":1,\"message\":{\"role\":"
                     "\"assistant\",\"content\":\"\xc3\xa9\"},\"logprobs\":null,\"finish_reason\":"
                     "\"length\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
                     "\"total_tokens\":12}}");
    proto_buf_free(&b);
}

Test(chat_response, logprobs_in_chat_shape_byte_exact) {
    /* "bytes:\xe2\x80" is how a piece of a character is named; its bytes are the raw ones */
    struct proto_top_logprob top0[2] = {{"He", 2, -0.25f}, {"bytes:\\xe2\\x80", 14, -1.5f}};
    struct proto_token_logprob lp[1] = {
        {.token = "He", .len = 2, .has_logprob = true, .logprob = -0.25f, .top = top0, .n_top = 2},
    };
    struct proto_choice ch = {.index = 0,
                              .text = "He",
                              .len = 2,
                              .has_logprobs = true,
                              .lp = lp,
                              .n_lp = 1,
                              .finish_reason = "length"};
    struct proto_usage u = {1, 1};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_chat_encode(&M, &ch, 1, &u, &b), 0);
    cr_assert_str_eq(b.data,
                     "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":"
                     "1700000000,\"model\":\"tiny\",\"choices\":[{\"index\":0,\"message\":{"
                     "\"role\":\"assistant\",\"content\":\"He\"},\"logprobs\":{\"content\":[{"
                     "\"token\":\"He\",\"logprob\":-0.25,\"bytes\":[72,101],\"top_logprobs\":[{"
                     "\"token\":\"He\",\"logprob\":-0.25,\"bytes\":[72,101]},{\"token\":"
                     "\"bytes:\\\\xe2\\\\x80\",\"logprob\":-1.5,\"bytes\":[226,128]}]}],"
                     "\"refusal\":null},\"finish_reason\":\"length\"}],\"usage\":{"
                     "\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}");
    proto_buf_free(&b);
}

Test(chat_response, role_content_finish_usage_done_byte_exact) {
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_chat_role_chunk(&M, 1, true, &b), 0);
    struct proto_choice piece = {.index = 1, .text = "Hi", .len = 2};
    cr_assert_eq(proto_chat_chunk(&M, &piece, true, &b), 0);
    struct proto_choice last = {.index = 1, .text = "!", .len = 1, .finish_reason = "stop"};
    cr_assert_eq(proto_chat_chunk(&M, &last, true, &b), 0);
    struct proto_usage u = {3, 4};
    cr_assert_eq(proto_chat_usage_chunk(&M, &u, &b), 0);
    cr_assert_eq(proto_sse_done(&b), 0);
#define HEAD                                                                                       \
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":"             \
    "1700000000,\"model\":\"tiny\",\"choices\":["
    cr_assert_str_eq(
        b.data,
        HEAD "{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
             "\"finish_reason\":null}],\"usage\":null}\n\n" HEAD
             "{\"index\":1,\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":"
             "null}],\"usage\":null}\n\n" HEAD
             "{\"index\":1,\"delta\":{\"content\":\"!\"},\"logprobs\":null,\"finish_reason\":"
             "null}],\"usage\":null}\n\n" HEAD
             "{\"index\":1,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
             "\"usage\":null}\n\n" HEAD
             "],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n"
             "data: [DONE]\n\n");
#undef HEAD
    proto_buf_free(&b);
}

Test(chat_response, empty_step_sends_nothing_and_bad_utf8_is_refused) {
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_choice none = {.index = 0, .text = "", .len = 0};
    cr_assert_eq(proto_chat_chunk(&M, &none, false, &b), 0);
    cr_assert_eq(b.len, 0);
    struct proto_choice bad = {.index = 0, .text = "\xff", .len = 1, .finish_reason = "stop"};
    struct proto_usage u = {0, 0};
    cr_assert_eq(proto_chat_encode(&M, &bad, 1, &u, &b), XD_E_INVALID);
    cr_assert_eq(proto_chat_chunk(&M, &bad, false, &b), XD_E_INVALID);
    proto_buf_free(&b);
}
