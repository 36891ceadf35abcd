/* sampler.c - per-request sampling: penalties, bias, top-k / top-p / min-p, temperature, and
 * the log-softmax that `--logprobs` and the API report.
 *
 * A step copies the logits into a scratch of n_vocab (logit, id) pairs owned by the sampler,
 * applies bias and penalties by id while the scratch is still in id order, then narrows the
 * candidates in place and draws from what is left. The trade-off is memory for speed and
 * determinism: 8 bytes per vocabulary entry per live request (1.2 MiB at 150k tokens), plus
 * 8 bytes per entry more when presence/frequency penalties are on, allocated once at create,
 * so a step never allocates. A scratch shared by all samplers of the engine thread would cost
 * less memory but tie samplers to a thread; at the sizes involved (KV cache is megabytes per
 * sequence) that is not worth it.
 *
 * Not sorting: a full sort of 150k candidates per token (O(V log V), milliseconds) is the
 * rejected alternative. top_k selects the k best in place (heap selection for small k,
 * quickselect otherwise, O(V)) and sorts only those k. top_p without top_k buckets the mass by
 * logit in one pass and sorts only the bucket where the cumulative mass crosses top_p (see
 * top_p_cut_unsorted). min_p needs no order at all (a threshold on the logit). Every comparison
 * breaks ties by the lower id and every pass is deterministic, so the candidate order and thus
 * the token drawn are functions of the inputs and the RNG state alone.
 *
 * Deliberate differences from llama.cpp, whose greedy output and logprobs the golden tests
 * compare against: the RNG is xoshiro256** seeded by splitmix64 (llama.cpp uses mt19937), so
 * seeded *random* outputs are reproducible within expertd but not equal to llama.cpp's; and
 * presence/frequency penalties count the generated tokens only (OpenAI), where llama.cpp counts
 * occurrences inside its repetition window, prompt included. With the default parameters both
 * agree. Not implemented: DRY, XTC, typical-p, top-n-sigma, mirostat, grammars.
 */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xd_error.h"

#define SAMPLER_HEAPSELECT_MAX 256 /* k up to this uses heap selection, larger k quickselect */
#define SAMPLER_INSERTION_MAX 24   /* ranges up to this are insertion-sorted */
#define SAMPLER_TOP_P_BUCKETS 512  /* top_p without top_k: buckets by logit below the max, */
#define SAMPLER_TOP_P_RANGE 32.0f  /* over this many logit units */

struct cand {
    float logit;
    int32_t id;
};

struct xd_sampler {
    struct xd_sampler_params p;   /* p.logit_bias points at bias below */
    int32_t n_vocab;
    struct xd_logit_bias *bias;   /* [p.n_logit_bias], the caller's list copied */
    uint64_t rng[4];              /* xoshiro256** state */
    struct cand *cand;            /* [n_vocab] scratch, meaningful only inside a step */

    /* repetition penalty: ring of the last ring_cap accepted tokens (NULL when off) */
    int32_t *ring;
    size_t ring_cap, ring_len, ring_head;

    /* presence/frequency penalties: counts of generated tokens (NULL when both are off) */
    uint32_t *gen_count;          /* [n_vocab] */
    int32_t *gen_tokens;          /* [n_vocab], the first n_gen_distinct are the ids seen */
    size_t n_gen_distinct;
    uint64_t n_generated, n_prompt;
};

/* ---- the RNG: xoshiro256** seeded with splitmix64 (Blackman & Vigna) --------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* splitmix64 is a bijection of its counter, so at most one of the four words is zero and the
 * all-zero state xoshiro cannot leave is unreachable. */
static void rng_seed(uint64_t st[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) st[i] = splitmix64(&seed);
}

static uint64_t rng_next(uint64_t st[4]) {
    const uint64_t result = rotl64(st[1] * 5, 7) * 9;
    const uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t st[4]) { return (double)(rng_next(st) >> 11) * 0x1.0p-53; }

/* e^d for d = logit - max <= 0. Below -87 the result is under FLT_MIN, contributes nothing
 * next to the max's e^0 = 1, and glibc's expf would take its slow underflow path (errno). */
static inline float exp_rel(float d) { return d < -87.0f ? 0.0f : expf(d); }

/* ---- candidate ordering: larger logit first, then lower id (a strict total order) --------- */

static inline bool better(struct cand a, struct cand b) {
    /* bitwise, not short-circuit: no branch, which matters inside the partition loop */
    return (a.logit > b.logit) | ((a.logit == b.logit) & (a.id < b.id));
}

static inline void cand_swap(struct cand *a, struct cand *b) {
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* NaN would break the total order; +inf would turn (l - max) into NaN. */
static inline float clean_logit(float l) {
    if (l != l) return -INFINITY;
    return l > FLT_MAX ? FLT_MAX : l;
}

static void cand_insertion_sort(struct cand *c, size_t n) {
    for (size_t i = 1; i < n; i++) {
        struct cand x = c[i];
        size_t j = i;
        while (j > 0 && better(x, c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* Heap of c[0..n) whose root is the WORST element: a parent is never better than a child. */
static void heap_sift_down(struct cand *c, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && better(c[child], c[child + 1])) child++; /* the worse child */
        if (!better(c[root], c[child])) return;
        cand_swap(&c[root], &c[child]);
        root = child;
    }
}

/* Sorts c[0..n) best first. Heapsort above the insertion threshold: O(n log n) worst case and
 * no allocation (glibc's qsort may malloc a merge buffer). */
static void cand_sort(struct cand *c, size_t n) {
    if (n <= SAMPLER_INSERTION_MAX) {
        cand_insertion_sort(c, n);
        return;
    }
    for (size_t i = n / 2; i-- > 0;) heap_sift_down(c, i, n);
    for (size_t end = n; end > 1; end--) {
        cand_swap(&c[0], &c[end - 1]); /* the worst left goes last */
        heap_sift_down(c, 0, end - 1);
    }
}

/* Heap selection: c[0..k) becomes a worst-rooted heap of the k best; one pass over the rest,
 * almost always a single failed comparison per element. O(n + k log k log n)-ish. */
static void cand_heap_select(struct cand *c, size_t n, size_t k) {
    for (size_t i = k / 2; i-- > 0;) heap_sift_down(c, i, k);
    for (size_t i = k; i < n; i++) {
        if (better(c[i], c[0])) {
            cand_swap(&c[i], &c[0]);
            heap_sift_down(c, 0, k);
        }
    }
}

/* Lomuto partition of c[lo..hi) (hi - lo >= 3) around the median of three; returns the pivot's
 * final index p: c[lo..p) are better than c[p], c[p+1..hi) worse. */
static size_t cand_partition(struct cand *c, size_t lo, size_t hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (better(c[mid], c[lo])) cand_swap(&c[mid], &c[lo]);
    if (better(c[hi - 1], c[mid])) cand_swap(&c[hi - 1], &c[mid]);
    if (better(c[mid], c[lo])) cand_swap(&c[mid], &c[lo]);
    cand_swap(&c[mid], &c[hi - 1]);
    const struct cand pivot = c[hi - 1];
    size_t store = lo;
    /* Branch-free Lomuto: always swap, advance only past a better element. When c[i] is not
     * better, c[store..i] are all not better and the swap keeps them so. On random logits the
     * branchy version mispredicts half the time and runs ~2x slower. */
    for (size_t i = lo; i < hi - 1; i++) {
        const struct cand x = c[i];
        const bool b = better(x, pivot);
        c[i] = c[store];
        c[store] = x;
        store += b;
    }
    cand_swap(&c[store], &c[hi - 1]);
    return store;
}

/* Quickselect: the k best of c[0..n) end up in c[0..k), in no particular order. A depth budget
 * bounds the worst case: when it runs out the remaining range is heapsorted (O(n log n)). */
static void cand_quickselect(struct cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n; /* invariant: c[0..lo) better than c[lo..hi), better than c[hi..n) */
    int budget = 8;
    for (size_t m = n; m > 1; m >>= 1) budget += 2;
    while (hi - lo > SAMPLER_INSERTION_MAX) {
        if (budget-- == 0) {
            cand_sort(c + lo, hi - lo);
            return;
        }
        size_t p = cand_partition(c, lo, hi);
        if (p == k || p + 1 == k) return;
        if (k < p) hi = p;
        else lo = p + 1;
    }
    cand_insertion_sort(c + lo, hi - lo);
}

/* Moves the k best of c[0..n) into c[0..k) (unordered). k >= n or k == 0: nothing to do. */
static void cand_select(struct cand *c, size_t n, size_t k) {
    if (k == 0 || k >= n) return;
    if (k <= SAMPLER_HEAPSELECT_MAX) cand_heap_select(c, n, k);
    else cand_quickselect(c, n, k);
}

/* ---- the steps of the chain -------------------------------------------------------------- */

static void apply_bias(struct xd_sampler *s) {
    for (size_t i = 0; i < s->p.n_logit_bias; i++)
        s->cand[s->bias[i].token].logit += s->bias[i].bias;
}

static void apply_penalties(struct xd_sampler *s) {
    struct cand *c = s->cand;
    if (s->ring_len > 0) {
        const float r = s->p.repetition_penalty;
        /* Each distinct token of the window is penalised once. The scratch is still in id
         * order (c[t].id == t), so the id doubles as a "done" mark: flipped to ~t (negative)
         * when t is penalised, restored by a second walk over the window. This avoids a
         * vocab-sized bitmap or sorting the window; the caveat is that nothing between the
         * two walks may look at ids. */
        for (size_t k = 0; k < s->ring_len; k++) {
            const int32_t t = s->ring[k];
            if (c[t].id != t) continue;
            const float l = c[t].logit;
            c[t].logit = l <= 0.0f ? l * r : l / r;
            c[t].id = ~t;
        }
        for (size_t k = 0; k < s->ring_len; k++) c[s->ring[k]].id = s->ring[k];
    }
    if (s->gen_count) {
        const float pres = s->p.presence_penalty, freq = s->p.frequency_penalty;
        for (size_t j = 0; j < s->n_gen_distinct; j++) {
            const int32_t t = s->gen_tokens[j];
            c[t].logit -= pres + freq * (float)s->gen_count[t];
        }
    }
}

/* Greedy: index of the largest logit, ties to the lowest id; XD_E_INVALID if all are -inf. */
static int argmax(const struct cand *c, size_t n) {
    int best = XD_E_INVALID;
    float best_l = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (c[i].logit > best_l) {
            best_l = c[i].logit;
            best = c[i].id;
        }
    }
    return best;
}

static float max_logit(const struct cand *c, size_t n) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit > m) m = c[i].logit;
    return m;
}

/* top_p over c[0..n) sorted best first (after top_k): keep the shortest prefix whose mass, at
 * temperature 1 as in llama.cpp, reaches top_p. Returns the count kept (>= 1). */
static size_t top_p_cut_sorted(const struct cand *c, size_t n, float max, float top_p) {
    double z = 0.0;
    for (size_t i = 0; i < n; i++) z += exp_rel(c[i].logit - max);
    const double target = (double)top_p * z;
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += exp_rel(c[i].logit - max);
        if (cum >= target) return i + 1;
    }
    return n;
}

/* Bucket of a logit for top_p_cut_unsorted(): by distance below the max, the last bucket
 * taking everything at least SAMPLER_TOP_P_RANGE below (relative weight < e^-32). */
static size_t top_p_bucket(float max, float logit) {
    const float d = (max - logit) * (SAMPLER_TOP_P_BUCKETS / SAMPLER_TOP_P_RANGE);
    return d < (float)(SAMPLER_TOP_P_BUCKETS - 1) ? (size_t)d : SAMPLER_TOP_P_BUCKETS - 1;
}

/* Moves the candidates with bucket < b (or <= b when inclusive) to the front of c[0..n);
 * returns how many there are. */
static size_t top_p_partition(struct cand *c, size_t n, float max, size_t b, bool inclusive) {
    size_t store = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t bi = top_p_bucket(max, c[i].logit);
        if (bi < b || (inclusive && bi == b)) cand_swap(&c[i], &c[store++]);
    }
    return store;
}

/* top_p over c[0..n) in any order, without sorting the vocabulary. One pass sorts the mass
 * into buckets by logit (1/16 of a logit wide) and finds the bucket where the cumulative mass
 * reaches top_p; every better bucket is kept whole, unsorted; only the candidates of that
 * bucket are sorted to find the exact cut. The kept set is the one a full sort would give, up
 * to rounding at the edge (the masses are summed in a different order). The rejected
 * alternative, selecting and sorting a prefix of doubling size, costs a pass over the rest of
 * the vocabulary per doubling: ~10 passes for a flat distribution with a 20k-token nucleus. */
static size_t top_p_cut_unsorted(struct cand *c, size_t n, float max, float top_p) {
    double mass[SAMPLER_TOP_P_BUCKETS] = {0};
    double z = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float w = exp_rel(c[i].logit - max);
        mass[top_p_bucket(max, c[i].logit)] += w;
        z += w;
    }
    const double target = (double)top_p * z;
    double cum = 0.0;
    size_t b = 0;
    while (b < SAMPLER_TOP_P_BUCKETS - 1 && cum + mass[b] < target) cum += mass[b++];
    const size_t n_upto = top_p_partition(c, n, max, b, true);
    const size_t n_before = top_p_partition(c, n_upto, max, b, false);
    cand_sort(c + n_before, n_upto - n_before);
    for (size_t i = n_before; i < n_upto; i++) {
        cum += exp_rel(c[i].logit - max);
        if (cum >= target) return i + 1;
    }
    return n_upto > 0 ? n_upto : 1; /* rounding: keep the whole bucket (the max is in it) */
}

/* min_p: keep p >= min_p * p_max, i.e. logit >= max + log(min_p). The max always survives.
 * A sorted list is cut; an unsorted one is compacted in place, keeping its order. */
static size_t min_p_cut(struct cand *c, size_t n, size_t n_sorted, float max, float min_p) {
    const float thr = max + logf(min_p);
    if (n_sorted >= n) {
        size_t i = 1;
        while (i < n && c[i].logit >= thr) i++;
        return i;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit >= thr) c[j++] = c[i];
    return j;
}

/* Draws from softmax(c[0..n) / temp); max is the largest logit among them. Overwrites the
 * logits with the weights. The walk follows the candidates' order, which is deterministic. */
static int draw(struct xd_sampler *s, struct cand *c, size_t n, float max, float temp) {
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float w = exp_rel((c[i].logit - max) / temp);
        c[i].logit = w;
        total += w;
    }
    const double u = rng_uniform(s->rng) * total;
    double acc = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].logit <= 0.0f) continue;
        acc += c[i].logit;
        last = i;
        if (u < acc) return c[i].id;
    }
    return c[last].id; /* u landed past the sum's rounding: the last token with weight */
}

static int choose(struct xd_sampler *s) {
    struct cand *c = s->cand;
    const struct xd_sampler_params *p = &s->p;
    size_t n = (size_t)s->n_vocab, n_sorted = 0;

    if (p->temperature <= 0.0f) return argmax(c, n);

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        cand_select(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
        cand_sort(c, n);
        n_sorted = n;
    }
    const float max = n_sorted ? c[0].logit : max_logit(c, n);
    if (max == -INFINITY) return XD_E_INVALID;
    if (p->top_p < 1.0f) {
        if (n_sorted == n) {
            n = top_p_cut_sorted(c, n, max, p->top_p);
            n_sorted = n;
        } else {
            n = top_p_cut_unsorted(c, n, max, p->top_p);
        }
    }
    if (p->min_p > 0.0f) n = min_p_cut(c, n, n_sorted, max, p->min_p);
    return draw(s, c, n, max, p->temperature);
}

/* ---- public API -------------------------------------------------------------------------- */

struct xd_sampler_params xd_sampler_params_default(void) {
    return (struct xd_sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .seed = 0,
        .repetition_penalty = 1.0f,
        .repetition_window = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .logit_bias = NULL,
        .n_logit_bias = 0,
        .n_logprobs = 0,
    };
}

static bool params_valid(const struct xd_sampler_params *p, int32_t n_vocab) {
    if (!isfinite(p->temperature) || p->top_k < 0) return false;
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f) || !(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return false;
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty)) return false;
    if (p->repetition_window < 0 || p->repetition_window > XD_SAMPLER_MAX_WINDOW) return false;
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty)) return false;
    if (p->n_logprobs < 0 || p->n_logprobs > XD_LOGPROBS_MAX) return false;
    if (p->n_logit_bias > 0 && !p->logit_bias) return false;
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        const struct xd_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab) return false;
        if (isnan(b->bias) || b->bias == INFINITY) return false;
    }
    return true;
}

int xd_sampler_create(const struct xd_sampler_params *p, int32_t n_vocab,
                      struct xd_sampler **out) {
    if (!p || !out || n_vocab <= 0 || !params_valid(p, n_vocab)) return XD_E_INVALID;
    struct xd_sampler *s = calloc(1, sizeof *s);
    if (!s) return XD_E_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    if (!s->cand) goto nomem;
    if (p->n_logit_bias > 0) {
        s->bias = malloc(p->n_logit_bias * sizeof *s->bias);
        if (!s->bias) goto nomem;
        memcpy(s->bias, p->logit_bias, p->n_logit_bias * sizeof *s->bias);
    }
    s->p.logit_bias = s->bias;
    if (p->repetition_penalty != 1.0f && p->repetition_window > 0) {
        s->ring_cap = (size_t)p->repetition_window;
        s->ring = malloc(s->ring_cap * sizeof *s->ring);
        if (!s->ring) goto nomem;
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        s->gen_count = calloc((size_t)n_vocab, sizeof *s->gen_count);
        s->gen_tokens = malloc((size_t)n_vocab * sizeof *s->gen_tokens);
        if (!s->gen_count || !s->gen_tokens) goto nomem;
    }
    rng_seed(s->rng, p->seed);
    *out = s;
    return 0;
nomem:
    xd_sampler_destroy(s);
    return XD_E_NOMEM;
}

void xd_sampler_destroy(struct xd_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->bias);
    free(s->ring);
    free(s->gen_count);
    free(s->gen_tokens);
    free(s);
}

int xd_sampler_accept(struct xd_sampler *s, int32_t token, bool generated) {
    if (token < 0 || token >= s->n_vocab) return XD_E_INVALID;
    if (s->ring) {
        s->ring[s->ring_head] = token;
        s->ring_head = (s->ring_head + 1) % s->ring_cap;
        if (s->ring_len < s->ring_cap) s->ring_len++;
    }
    if (generated) {
        if (s->gen_count && s->gen_count[token]++ == 0) s->gen_tokens[s->n_gen_distinct++] = token;
        s->n_generated++;
    } else {
        s->n_prompt++;
    }
    return 0;
}

/* Fills the scratch in id order and applies steps 1-3. */
static void load_adjusted(struct xd_sampler *s, const float *logits) {
    struct cand *c = s->cand;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        c[i].logit = clean_logit(logits[i]);
        c[i].id = i;
    }
    apply_bias(s);
    apply_penalties(s);
}

void xd_sampler_adjusted_logits(struct xd_sampler *s, const float *logits, float *out) {
    load_adjusted(s, logits);
    for (int32_t i = 0; i < s->n_vocab; i++) out[i] = s->cand[i].logit;
}

int xd_sampler_sample(struct xd_sampler *s, const float *logits, struct xd_logprobs *lp) {
    load_adjusted(s, logits);
    const int tok = choose(s);
    if (lp) xd_logprobs_compute(logits, s->n_vocab, tok >= 0 ? tok : -1, s->p.n_logprobs, lp);
    return tok;
}

void xd_sampler_reset(struct xd_sampler *s) {
    s->ring_len = s->ring_head = 0;
    if (s->gen_count)
        for (size_t j = 0; j < s->n_gen_distinct; j++) s->gen_count[s->gen_tokens[j]] = 0;
    s->n_gen_distinct = 0;
    s->n_generated = s->n_prompt = 0;
    rng_seed(s->rng, s->p.seed);
}

const struct xd_sampler_params *xd_sampler_params(const struct xd_sampler *s) { return &s->p; }

bool xd_sampler_check_invariants(const struct xd_sampler *s) {
    if (!s || !s->cand || s->n_vocab <= 0) return false;
    if ((s->ring != NULL) != (s->ring_cap > 0)) return false;
    if (s->ring_len > s->ring_cap || (s->ring_cap && s->ring_head >= s->ring_cap)) return false;
    if (s->ring_len < s->ring_cap && s->ring_head != s->ring_len) return false;
    for (size_t k = 0; k < s->ring_len; k++)
        if (s->ring[k] < 0 || s->ring[k] >= s->n_vocab) return false;
    if (!s->gen_count) return s->n_gen_distinct == 0;
    /* every listed id has a count, every count is listed once, counts sum to n_generated */
    uint64_t sum = 0;
    size_t n_nonzero = 0;
    for (int32_t t = 0; t < s->n_vocab; t++) {
        sum += s->gen_count[t];
        n_nonzero += s->gen_count[t] > 0;
    }
    if (sum != s->n_generated || n_nonzero != s->n_gen_distinct) return false;
    for (size_t j = 0; j < s->n_gen_distinct; j++) {
        const int32_t t = s->gen_tokens[j];
        if (t < 0 || t >= s->n_vocab || s->gen_count[t] == 0) return false;
    }
    return true;
}

/* ---- log-probabilities ------------------------------------------------------------------- */

void xd_logprobs_compute(const float *logits, int32_t n_vocab, int32_t chosen, int32_t n_top,
                         struct xd_logprobs *lp) {
    if (n_top < 0) n_top = 0;
    if (n_top > XD_LOGPROBS_MAX) n_top = XD_LOGPROBS_MAX;
    if (n_top > n_vocab) n_top = n_vocab;

    /* pass 1: the max, and the n_top best kept sorted by insertion (raw logits stored in
     * .logprob for now). Ids arrive ascending, so an equal logit never displaces. */
    struct xd_token_logprob *top = lp->top;
    int32_t nt = 0;
    float max = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float l = clean_logit(logits[i]);
        if (l > max) max = l;
        if (n_top == 0 || (nt == n_top && !(l > top[nt - 1].logprob))) continue;
        int32_t j = nt < n_top ? nt++ : nt - 1;
        while (j > 0 && l > top[j - 1].logprob) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (struct xd_token_logprob){.token = i, .logprob = l};
    }
    lp->n_top = nt;

    /* pass 2: log-sum-exp with the max subtracted (every term in (0, 1]), summed in double */
    double lse = -INFINITY;
    if (max > -INFINITY) {
        double sum = 0.0;
        for (int32_t i = 0; i < n_vocab; i++) sum += exp_rel(clean_logit(logits[i]) - max);
        lse = (double)max + log(sum);
    }
    for (int32_t j = 0; j < nt; j++)
        top[j].logprob = lse == -INFINITY ? -INFINITY : (float)((double)top[j].logprob - lse);
    if (chosen >= 0 && chosen < n_vocab && lse != -INFINITY)
        lp->chosen = (struct xd_token_logprob){chosen, (float)(clean_logit(logits[chosen]) - lse)};
    else
        lp->chosen = (struct xd_token_logprob){chosen >= 0 && chosen < n_vocab ? chosen : -1,
                                               -INFINITY};
}
