/* fuzz_template.c - libFuzzer target for the Jinja interpreter (engine/jinja_*.c).
 *
 * The input is a template; if it contains a NUL byte, what follows is read as JSON and, when
 * it is an object, merged into the render variables (so the fuzzer also varies messages,
 * tools and flags). The template is parsed with small limits and, when it parses, rendered
 * twice against a conversation with a system prompt, tool calls and content parts. Checked
 * contracts (a violation is __builtin_trap(), which libFuzzer reports as a crash):
 *   - a failure is one of the documented codes, with a message, and no output;
 *   - a success has output with a NUL after its length;
 *   - the same input renders to the same bytes twice (no state leaks between renders);
 *   - every limit holds (output length), and ASan/UBSan see no memory or UB error.
 * Seeds: tests/fuzz/corpus/template (the stored model templates and the snippets of
 * tests/fixtures/templates); dictionary: tests/fuzz/template.dict.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"
#include "xd_error.h"

static const char base_vars[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"You are helpful.\"},"
    "{\"role\": \"user\", \"content\": \"Hi <b>there</b> \\u00e9\\ud83d\\ude00\"},"
    "{\"role\": \"assistant\", \"content\": \"<think>\\nhmm\\n</think>\\n\\nHello\","
    " \"reasoning_content\": \"hmm\", \"tool_calls\": [{\"id\": \"call12345\", \"type\": "
    "\"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [true, "
    "null, 2.5]}}}]},"
    "{\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"42\"},"
    "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part\"}]}],"
    "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": "
    "\"does f\", \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": {\"type\": "
    "\"integer\"}}, \"required\": [\"a\"]}}}], \"enable_thinking\": false}";

static int known_code(int rc) {
    return rc == XD_E_TEMPLATE || rc == XD_E_TEMPLATE_RAISE || rc == XD_E_TEMPLATE_LIMIT ||
           rc == XD_E_UNSUPPORTED || rc == XD_E_INVALID;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct xd_jinja_limits lim;
    xd_jinja_limits_default(&lim);
    lim.max_source = 1 << 16;
    lim.max_nodes = 20000;
    lim.max_output = 1 << 18;
    lim.max_memory = 32u << 20;
    lim.max_steps = 300000;
    lim.max_loop_iters = 30000;
    lim.max_depth = 300;

    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char err[512];
    struct xd_jinja_tpl *t = NULL;
    int rc = xd_jinja_parse((const char *)data, tlen, &lim, &t, err, sizeof err);
    if (rc) {
        if (!known_code(rc) || !err[0]) __builtin_trap();
        return 0;
    }
    (void)xd_jinja_uses_name(t, "tools");

    json_t *vars = json_loads(base_vars, 0, NULL);
    if (!vars) __builtin_trap();
    if (nul) {
        json_t *extra = json_loadb((const char *)nul + 1, size - tlen - 1, JSON_ALLOW_NUL, NULL);
        if (json_is_object(extra)) json_object_update(vars, extra);
        json_decref(extra);
    }
    struct xd_jinja_render_opts ro = {.limits = &lim, .now = 1721995200};
    char *out1 = NULL, *out2 = NULL;
    size_t n1 = 0, n2 = 0;
    int rc1 = xd_jinja_render(t, vars, &ro, &out1, &n1, err, sizeof err);
    if (rc1) {
        if (out1 || !known_code(rc1) || (!err[0] && rc1 != XD_E_TEMPLATE_RAISE)) __builtin_trap();
    } else {
        if (!out1 || out1[n1] != '\0' || n1 > lim.max_output) __builtin_trap();
    }
    int rc2 = xd_jinja_render(t, vars, &ro, &out2, &n2, err, sizeof err);
    if (rc2 != rc1 || n2 != n1 || (rc1 == 0 && memcmp(out1, out2, n1) != 0)) __builtin_trap();
    free(out1);
    free(out2);
    json_decref(vars);
    xd_jinja_free(t);
    return 0;
}
