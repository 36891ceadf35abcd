/* engine.h - the engine thread: owns the model's context and serves generation requests from
 * any thread through a queue, reporting back through a mailbox.
 *
 * Model of use (libuv style): the caller creates a request (xd_gen) with its prompt tokens and
 * parameters, submits it, and from then on receives events for it - text as it is produced,
 * one FINISH per sequence, and exactly one END, always the last - by draining the mailbox
 * whenever the engine calls the notify callback (the server sets it to uv_async_send; the
 * engine knows no event loop). Cancellation is a flag the engine reads at step boundaries;
 * a cancelled request still gets its END (-ECANCELED). After END the engine never touches the
 * request again and the caller destroys it.
 *
 * Scheduling (engine.c): iteration-level. Every step admits waiting requests into free
 * sequence slots in arrival order while the paged KV cache has room for their prompts, forms
 * ONE batch of every running sequence's next token plus chunks of pending prompts under a
 * token budget, runs xd_forward once, samples each sequence with its own sampler and emits
 * events. A request's n sequences each take a slot and share the prompt's KV blocks. When the
 * KV cache runs out, the most recently admitted request is preempted (its KV freed, recomputed
 * later): its output stays the same, only later.
 *
 * Threads: submit, cancel, stats and drain may be called from any thread; notify is called on
 * the engine thread. Drain callbacks run on the thread that calls xd_engine_drain.
 */
#ifndef XD_ENGINE_H
#define XD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "expert_cache.h"
#include "forward.h"
#include "model.h"
#include "sampler.h"
#include "stats.h"

typedef void (*xd_engine_notify_cb)(void *arg);

struct xd_engine_params {
    int32_t n_parallel;  /* sequence slots (default 4) */
    int32_t n_ctx;       /* positions per slot (default min(model's, 4096)) */
    int32_t step_tokens; /* token budget of one step, decodes + prompt chunks (default 512) */
    int32_t max_waiting; /* submitted requests waiting for slots; more -> -EAGAIN (default 64) */
    const struct xd_ops *ops; /* xd_ops_cpu_ref(): the reference backend; else ignored */
    const char *backend;      /* compute backend by name (forward.h); NULL = "cpu" */
    int32_t n_threads;        /* kernel threads; 0 = one per online CPU */
    bool no_repack;           /* forward.h xd_ctx_params.no_repack */
    struct xd_xc *xc;         /* expert cache, borrowed; NULL: everything resident */
    uint64_t kv_bytes;        /* paged KV cache budget; 0 = n_parallel x n_ctx positions */
    /* Cache-aware scheduling (0 = off): with an offloaded expert cache whose slots hold the
     * experts the running decodes touched in their last decode-only step, prompt chunks wait
     * up to this many steps, so that steps touching every expert (a prefill does) come
     * together and the decodes' experts stay resident in between. Never changes any token. */
    int32_t prefill_hold;
    xd_engine_notify_cb notify; /* events are waiting; called on the engine thread */
    void *notify_arg;
};

/* What one request asks for. Copied by xd_gen_create: the caller may free its arrays after. */
struct xd_gen_params {
    struct xd_sampler_params sampler; /* sequence i samples with seed + i */
    int32_t n;                        /* sequences over the same prompt, 1..n_parallel */
    int32_t max_tokens;               /* tokens sampled per sequence, EOS included; 0 allowed */
    bool ignore_eos;                  /* end-of-generation tokens are banned */
    bool logprobs;                    /* TOKEN events carry logprobs (sampler.n_logprobs alts) */
    bool prompt_logprobs;             /* report the logprob of every prompt token (echo) */
    const char *const *stop;          /* n_stop stop strings of stop_len[i] bytes */
    const size_t *stop_len;
    size_t n_stop;
};

enum xd_finish { XD_FINISH_NONE, XD_FINISH_STOP, XD_FINISH_LENGTH };

enum xd_gen_event_kind {
    XD_GEN_PROMPT_LOGPROB, /* logprob of prompt token `pos` (1..n_prompt-1), prompt_logprobs */
    XD_GEN_TOKEN,          /* sequence `index` sampled `token`: text released now, logprobs */
    XD_GEN_FINISH,         /* sequence `index` ended with `finish`; text: the held-back rest */
    XD_GEN_END,            /* the request is over: status 0, -ECANCELED or an error. Last. */
};

struct xd_gen;

struct xd_gen_event {
    enum xd_gen_event_kind kind;
    struct xd_gen *gen;
    void *user;            /* as given to xd_gen_create */
    int32_t index;         /* sequence, 0..n-1 */
    int32_t token;         /* TOKEN: the token; PROMPT_LOGPROB: the prompt token */
    int32_t pos;           /* PROMPT_LOGPROB: its position */
    const char *text;      /* TOKEN, FINISH: valid UTF-8 released by this event (may be "") */
    size_t len;
    bool has_logprobs;     /* TOKEN, PROMPT_LOGPROB */
    struct xd_logprobs lp;
    enum xd_finish finish; /* FINISH */
    int status;            /* END */
};

typedef void (*xd_gen_event_cb)(const struct xd_gen_event *ev, void *arg);

/* Times (CLOCK_MONOTONIC ns, 0 = not reached) and counts of a request; read it after END. */
struct xd_gen_info {
    uint64_t t_submit, t_admit, t_first_token, t_end;
    int32_t n_prompt;
    int64_t n_generated; /* tokens sampled over all sequences */
    int status;
};

/* Copies prompt[n_prompt] and p into a new request owned by the caller. 0, XD_E_INVALID (empty
 * prompt, n < 1, max_tokens < 0, bad sampler params) or XD_E_NOMEM; *out untouched on failure. */
int xd_gen_create(const struct xd_gen_params *p, const int32_t *prompt, size_t n_prompt,
                  void *user, struct xd_gen **out);
/* Frees a request that was never submitted or has delivered its END. NULL is a no-op. */
void xd_gen_destroy(struct xd_gen *g);
const struct xd_gen_info *xd_gen_info(const struct xd_gen *g);
/* True when the request's state is consistent (see engine_gen.c). For assert() and tests. */
bool xd_gen_check_invariants(const struct xd_gen *g);

struct xd_engine;

/* Creates the context (n_parallel slots) and starts the engine thread. m must outlive the
 * engine. 0 or a negative code with a message in err; *out untouched on failure. */
int xd_engine_create(const struct xd_model *m, const struct xd_engine_params *p,
                     struct xd_engine **out, char *err, size_t errlen);

/* Queues g. 0: g will get exactly one END. XD_E_INVALID (a prompt token outside the
 * vocabulary, n above n_parallel), XD_E_CONTEXT (prompt + max_tokens above n_ctx, or n
 * times that above the KV pool), -EAGAIN
 * (max_waiting requests already wait), -ESHUTDOWN (the engine is shutting down): g is then the
 * caller's as before and gets no event. */
int xd_engine_submit(struct xd_engine *e, struct xd_gen *g);

/* Asks for g to stop at the next step boundary (queued: before it runs); its END will carry
 * -ECANCELED unless it ended already. Idempotent; g must be submitted and not yet destroyed. */
void xd_engine_cancel(struct xd_engine *e, struct xd_gen *g);

/* Delivers every queued event, in order, to cb on the calling thread; event text is valid
 * during the callback only. The callback may destroy the event's request on END, and may call
 * submit and cancel. Returns the number of events delivered. */
size_t xd_engine_drain(struct xd_engine *e, xd_gen_event_cb cb, void *arg);

/* The expert cache the engine's context uses (NULL for a dense model). Thread-safe calls only
 * (xd_xc_stats_get, xd_xc_resident_per_layer). */
struct xd_xc *xd_engine_xc(struct xd_engine *e);

/* Counters, read consistently (a snapshot taken after the last step). */
struct xd_engine_stats {
    struct xd_stats fwd;   /* the forward pass's counters */
    struct xd_xc_stats xc; /* the expert cache's (zero for a dense model) */
    int32_t n_parallel, n_ctx;
    int32_t running;       /* requests holding slots */
    int32_t waiting;       /* requests queued for slots */
    int32_t slots_used;
    uint64_t steps;
    uint64_t prompt_tokens;     /* prompt tokens run through prefill */
    uint64_t generated_tokens;  /* tokens sampled */
    uint64_t requests_ok, requests_cancelled, requests_failed;
    uint64_t forward_failures;  /* xd_forward errors (each isolated to its request) */
    uint64_t kv_bytes;          /* the KV pool */
    uint64_t kv_bytes_used;     /* in blocks held by sequences */
    int32_t kv_block_size;      /* positions per block */
    int32_t kv_blocks_total, kv_blocks_used, kv_blocks_shared;
    uint64_t kv_cow_copies;     /* shared blocks copied before a write */
    uint64_t preemptions;       /* requests whose KV was freed to make room (recomputed later) */
    uint64_t recomputed_tokens; /* positions run again after a preemption */
    uint64_t prefix_shared_tokens; /* prompt positions taken from another sequence's blocks */
    uint64_t experts_last_step; /* distinct experts run by the last step, summed over layers */
    uint64_t prefill_holds;     /* steps that ran decodes only while prompt chunks waited */
    uint64_t experts_per_step[XD_STATS_HIST_N]; /* the same per step, power-of-two buckets */
};
void xd_engine_stats(struct xd_engine *e, struct xd_engine_stats *out);

/* Stops the thread: every queued and running request gets END (-ECANCELED) in the mailbox.
 * Later submits fail with -ESHUTDOWN; drain still works. Idempotent. */
void xd_engine_shutdown(struct xd_engine *e);
/* Shuts down if needed and frees the engine and undelivered events (not the requests). */
void xd_engine_destroy(struct xd_engine *e);

#endif
