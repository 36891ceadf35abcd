/* fuzz_completion.c - libFuzzer target for the completions request decoder and validator
 * (proto/proto_completion.c over proto_gen.c): any bytes as a POST /v1/completions body.
 *
 * Contract checked: a rejected body comes back as XD_E_INVALID or XD_E_NOMEM with a 4xx status
 * (413/400/422...) and a message, and the request struct is safe to free again; an accepted one
 * holds only values inside the limits it was decoded against (token ids below n_vocab, n and
 * max_tokens in range, at least one prompt). __builtin_trap() marks a broken contract.
 * Seeds: tests/fuzz/corpus/completion.
 */
#include <stddef.h>
#include <stdint.h>

#include "proto_completion.h"
#include "xd_error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const struct proto_limits lim = proto_limits_default(32000, 4);
    struct proto_completion_req r;
    struct proto_error e = {0};
    int rc = proto_completion_decode((const char *)data, size, &lim, &r, &e);
    if (rc) {
        if (rc != XD_E_INVALID && rc != XD_E_NOMEM) __builtin_trap();
        if (rc == XD_E_INVALID && (e.status < 400 || e.status > 499 || !e.message[0]))
            __builtin_trap();
        proto_completion_req_free(&r); /* documented as safe after a failure */
        return 0;
    }
    if (r.n_prompts < 1 || (int64_t)r.n_prompts > lim.max_prompts) __builtin_trap();
    if (r.gen.n < 1 || r.gen.n > lim.max_n) __builtin_trap();
    if (r.gen.max_tokens < 0 || r.gen.max_tokens > lim.max_tokens) __builtin_trap();
    if (r.logprobs < -1 || r.logprobs > PROTO_MAX_LOGPROBS) __builtin_trap();
    for (size_t i = 0; i < r.n_prompts; i++) {
        const struct proto_prompt *p = &r.prompts[i];
        if (!p->is_tokens) {
            if (!p->text) __builtin_trap();
            continue;
        }
        if ((int64_t)p->n_tokens > lim.max_prompt_tokens) __builtin_trap();
        for (size_t t = 0; t < p->n_tokens; t++)
            if (p->tokens[t] < 0 || p->tokens[t] >= lim.n_vocab) __builtin_trap();
    }
    proto_completion_req_free(&r);
    return 0;
}
