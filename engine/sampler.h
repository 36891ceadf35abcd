/* sampler.h - per-request token sampling: penalties, logit bias, top-k / top-p / min-p,
 * temperature, a seeded RNG, and log-probabilities of the raw logits.
 *
 * One xd_sampler belongs to one request. Everything it needs between steps (the RNG state, the
 * penalty history, the scratch the size of the vocabulary) lives in the object, allocated once
 * by xd_sampler_create(); xd_sampler_sample() never allocates and touches no global state, so a
 * request's tokens depend only on its params (seed included), the tokens it was told about via
 * xd_sampler_accept(), and the logits it is given. There is no "random seed" mode inside: a
 * caller that wants one draws the seed itself (getrandom) and reports it. A sampler is used by
 * one thread at a time; distinct samplers share nothing.
 *
 * The transform chain of one step, in order (the order of llama.cpp's common sampler with its
 * default sampler list, minus the samplers expertd does not implement):
 *   1. logit bias            l[t] += bias[t]                      (llama.cpp applies it first)
 *   2. repetition penalty    over the last `repetition_window` accepted tokens, prompt and
 *                            generated alike: l > 0 ? l / r : l * r   (CTRL, llama.cpp style)
 *   3. presence / frequency  over every generated token (OpenAI semantics):
 *                            l[t] -= presence * (c[t] > 0) + frequency * c[t]
 *   4. top_k                 keep the k largest (0 = off)
 *   5. top_p                 keep the smallest prefix, largest first, whose probability mass
 *                            (softmax of the survivors at temperature 1) reaches top_p (1 = off)
 *   6. min_p                 keep tokens with p >= min_p * p_max (0 = off)
 *   7. temperature           l /= T, then draw from the softmax of the survivors.
 *   temperature <= 0 skips 4..7: argmax of the logits after 1..3, ties to the lowest id, and
 *   no random number is drawn.
 * Ties everywhere are broken by the lower token id, so every step is a pure function of its
 * inputs and the RNG state.
 *
 * ignore_eos: not a parameter here. The caller adds {eos_id, -INFINITY} (and any other
 * end-of-generation id) to logit_bias, exactly as llama.cpp's server does.
 */
#ifndef XD_SAMPLER_H
#define XD_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XD_LOGPROBS_MAX 20        /* most alternatives one step can report (OpenAI's limit) */
#define XD_SAMPLER_MAX_WINDOW (1 << 20) /* longest repetition-penalty window accepted */

/* One logit_bias entry: added to the token's logit before anything else. -INFINITY bans the
 * token outright; OpenAI's -100 only makes it vanishingly unlikely (e^-100 relative weight). */
struct xd_logit_bias {
    int32_t token;
    float bias;
};

/* Per-request parameters. Start from xd_sampler_params_default() and change fields. */
struct xd_sampler_params {
    float temperature;          /* <= 0: greedy. default 0.8 */
    int32_t top_k;              /* 0 = off, >= n_vocab is off too. default 40 */
    float top_p;                /* in [0, 1]; 1 = off. default 0.95 */
    float min_p;                /* in [0, 1]; 0 = off. default 0.05 */
    uint64_t seed;              /* RNG seed; the same seed gives the same tokens. default 0 */
    float repetition_penalty;   /* > 0; 1 = off. default 1 */
    int32_t repetition_window;  /* last N accepted tokens (prompt + generated); 0 = off. 64 */
    float presence_penalty;     /* 0 = off. default 0 */
    float frequency_penalty;    /* 0 = off. default 0 */
    const struct xd_logit_bias *logit_bias; /* n_logit_bias entries, copied by create; */
    size_t n_logit_bias;                    /* a token listed twice gets both biases */
    int32_t n_logprobs;         /* 0..XD_LOGPROBS_MAX alternatives reported per step. default 0 */
};

/* One token and its log-probability. */
struct xd_token_logprob {
    int32_t token;
    float logprob;
};

/* What one step reports: the chosen token's logprob and the n_top most likely tokens, all from
 * log-softmax over the full vocabulary of the raw logits (before bias, penalties, truncation or
 * temperature), sorted by logprob descending, ties by lower id. */
struct xd_logprobs {
    struct xd_token_logprob chosen;
    int32_t n_top;
    struct xd_token_logprob top[XD_LOGPROBS_MAX];
};

struct xd_sampler;

/* llama.cpp's defaults for the sampling fields; penalties off, no bias, no logprobs. */
struct xd_sampler_params xd_sampler_params_default(void);

/* Validates p and allocates a sampler for a vocabulary of n_vocab tokens into *out.
 * Returns 0, XD_E_INVALID (bad field or bias token out of range; the message says nothing
 * more, so callers validate request fields first) or XD_E_NOMEM; *out is untouched on failure.
 * p->logit_bias is copied: the caller may free it after the call. */
int xd_sampler_create(const struct xd_sampler_params *p, int32_t n_vocab,
                      struct xd_sampler **out);

/* Frees the sampler; NULL is a no-op. */
void xd_sampler_destroy(struct xd_sampler *s);

/* Records one token for the penalties: every prompt token (generated = false) in order, then
 * each generated token once it is chosen. Sampling does not record its own result.
 * Returns 0 or XD_E_INVALID (token outside the vocabulary; nothing recorded). Never allocates. */
int xd_sampler_accept(struct xd_sampler *s, int32_t token, bool generated);

/* Chooses the next token from logits[n_vocab] (not modified). If lp is not NULL it receives
 * the logprobs described above, with params.n_logprobs alternatives. Returns the token id
 * (>= 0) or XD_E_INVALID when no token has a finite logit after bias and penalties (lp is
 * still filled then). NaN logits count as -INFINITY, +INFINITY as FLT_MAX. Never allocates. */
int xd_sampler_sample(struct xd_sampler *s, const float *logits, struct xd_logprobs *lp);

/* Writes to out[n_vocab] the logits after steps 1-3 (bias and penalties), what the truncation
 * steps then see; NaN in becomes -INFINITY. For tests and `--json` debugging. Never allocates. */
void xd_sampler_adjusted_logits(struct xd_sampler *s, const float *logits, float *out);

/* Forgets every accepted token and reseeds the RNG with params.seed: the sampler behaves as
 * if just created. Cannot fail. */
void xd_sampler_reset(struct xd_sampler *s);

/* The parameters in use (logit_bias points at the sampler's own copy). */
const struct xd_sampler_params *xd_sampler_params(const struct xd_sampler *s);

/* True when the penalty history is consistent; O(n_vocab). For assert() and tests. */
bool xd_sampler_check_invariants(const struct xd_sampler *s);

/* Log-softmax of the raw logits[n_vocab] into lp: the token `chosen` (outside the vocabulary:
 * reported as {-1, -INFINITY}) and the n_top best (n_top clamped to 0..XD_LOGPROBS_MAX).
 * Max-subtracted, exp sum accumulated in double; NaN counts as -INFINITY, and all -INFINITY
 * logits give -INFINITY everywhere. Pure; xd_sampler_sample() uses it. Cannot fail. */
void xd_logprobs_compute(const float *logits, int32_t n_vocab, int32_t chosen, int32_t n_top,
                         struct xd_logprobs *lp);

#endif
