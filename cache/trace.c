/* trace.c - parsing expert access traces and replaying them under LRU and Belady's MIN.
 *
 * The online replay reuses the cache's own list code (lru.c), its slot discipline - free
 * slots first, then the eviction rule's victim, partitions by layer under the per-layer
 * policy, a step's resident experts pinned before its misses take slots, released hits first -
 * and its frequency bookkeeping for expected-next-use eviction, so for single-expert steps it
 * predicts the real cache's hit count exactly (tests/test_xc.c checks it); for multi-expert
 * steps the real cache releases misses in completion order, which can differ from the
 * replay's list order. Belady's MIN gets the same freedom (a step's
 * resident experts first, never evicting an expert the step holds while another will do) and
 * evicts the expert whose next access is furthest, found by a linear scan (O(accesses x
 * slots)): fine for traces of thousands of steps and pools of thousands of slots; a heap keyed
 * by next use would be the next step.
 * Not here: recording (expert_cache.c writes the lines under its lock).
 */
#include "trace.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lru.h"
#include "xd_error.h"

void xd_xc_trace_free(struct xd_xc_trace *t) {
    free(t->step_layer);
    free(t->step_start);
    free(t->acc);
    *t = (struct xd_xc_trace){0};
}

static int grow(void **p, int64_t *cap, int64_t need, size_t size) {
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return XD_E_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* Parse a non-negative decimal at *p (spaces skipped first); -1 if none. */
static int64_t num(const char **p, const char *end) {
    while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
    if (*p >= end || **p < '0' || **p > '9') return -1;
    int64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        v = v * 10 + (**p - '0');
        if (v > (1 << 30)) return -1;
        (*p)++;
    }
    return v;
}

int xd_xc_trace_parse(const char *buf, size_t n, struct xd_xc_trace *t, char *err, size_t errlen) {
    *t = (struct xd_xc_trace){0};
    int64_t cap_steps = 0, cap_start = 0, cap_acc = 0, line = 0;
    const char *p = buf, *end = buf + n;
    uint32_t *seen = NULL; /* [n_expert]: 1 + the last step that named the expert */
    int rc = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        line++;
        if (line == 1) {
            long long nl, ne, k = 2;
            char hdr[128];
            size_t hl = (size_t)(eol - p) < sizeof hdr - 1 ? (size_t)(eol - p) : sizeof hdr - 1;
            memcpy(hdr, p, hl);
            hdr[hl] = 0;
            int got = sscanf(hdr, "# expertd expert trace v1 layers %lld experts %lld topk %lld",
                             &nl, &ne, &k);
            if (got < 2 || nl <= 0 || ne <= 0 || nl > (1 << 20) || ne > (1 << 20) || k <= 0 ||
                k > ne) {
                rc = XD_E_FORMAT;
                goto bad;
            }
            t->n_layer = nl;
            t->n_expert = ne;
            t->top_k = k;
            if (!(seen = calloc((size_t)ne, sizeof *seen))) {
                rc = XD_E_NOMEM;
                goto fail;
            }
        } else if (eol > p && *p != '#') {
            const char *q = p;
            int64_t layer = num(&q, eol);
            if (layer < 0 || layer >= t->n_layer) {
                rc = XD_E_FORMAT;
                goto bad;
            }
            if ((rc = grow((void **)&t->step_layer, &cap_steps, t->n_steps + 2, sizeof *t->step_layer)) ||
                (rc = grow((void **)&t->step_start, &cap_start, t->n_steps + 2, sizeof *t->step_start)))
                goto fail;
            t->step_layer[t->n_steps] = (int32_t)layer;
            t->step_start[t->n_steps] = t->n_acc;
            int64_t e;
            while ((e = num(&q, eol)) >= 0) {
                /* a step names distinct experts (a layer acquires each once): a repeat would
                 * make the replay hold one expert in two slots */
                if (e >= t->n_expert || seen[e] == (uint32_t)t->n_steps + 1) {
                    rc = XD_E_FORMAT;
                    goto bad;
                }
                seen[e] = (uint32_t)t->n_steps + 1;
                if ((rc = grow((void **)&t->acc, &cap_acc, t->n_acc + 1, sizeof *t->acc))) goto fail;
                t->acc[t->n_acc++] = (int32_t)e;
            }
            while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
            if (q != eol) {
                rc = XD_E_FORMAT;
                goto bad;
            }
            t->n_steps++;
            t->step_start[t->n_steps] = t->n_acc;
        }
        p = eol + 1;
    }
    if (line == 0) {
        rc = XD_E_FORMAT;
        goto bad;
    }
    if (!t->step_start && !(t->step_start = calloc(1, sizeof *t->step_start))) {
        rc = XD_E_NOMEM;
        goto fail;
    }
    free(seen);
    return 0;
bad:
    if (err && errlen) snprintf(err, errlen, "line %lld is not a trace line", (long long)line);
    free(seen);
    xd_xc_trace_free(t);
    return rc;
fail:
    if (err && errlen) snprintf(err, errlen, "out of memory");
    free(seen);
    xd_xc_trace_free(t);
    return rc;
}

int xd_xc_trace_load(const char *path, struct xd_xc_trace *t, char *err, size_t errlen) {
    *t = (struct xd_xc_trace){0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(err, errlen, "out of memory");
                return XD_E_NOMEM;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? -EIO : xd_xc_trace_parse(buf, n, t, err, errlen);
    if (bad) snprintf(err, errlen, "%s: read error", path);
    free(buf);
    return rc;
}

/* The cache's bookkeeping for expected-next-use eviction (expert_cache.c: next_use, visit). */
struct sim_nu {
    uint32_t *freq, *visits;
    uint64_t n_visits;
    int64_t cur;
};

static double sim_next_use(const struct xd_xc_trace *t, const struct sim_nu *nu, int64_t key) {
    const int64_t l = key / t->n_expert, nl = t->n_layer;
    const int64_t d = ((l - nu->cur - 1) % nl + nl) % nl + 1;
    const double k = (double)t->top_k / (double)t->n_expert;
    double p = ((double)nu->freq[key] + k) / ((double)nu->visits[l] + 1.0);
    p = p < 1e-6 ? 1e-6 : p > 1.0 ? 1.0 : p;
    return (double)d + (double)nl * (1.0 - p) / p;
}

int xd_xc_sim_online(const struct xd_xc_trace *t, int64_t n_slots, enum xd_xc_policy policy,
                     enum xd_xc_evict evict, struct xd_xc_sim *out) {
    const int32_t n_parts = policy == XD_XC_POLICY_LAYER ? (int32_t)t->n_layer : 1;
    if (n_slots < 1 || n_slots < n_parts || n_slots > (1 << 30)) return XD_E_INVALID;
    const int64_t n_keys = t->n_layer * t->n_expert;
    struct xd__lru lru, fr;
    struct sim_nu nu = {.freq = calloc((size_t)n_keys, sizeof *nu.freq),
                        .visits = calloc((size_t)t->n_layer, sizeof *nu.visits)};
    int32_t *where = malloc((size_t)n_keys * sizeof *where);
    int32_t *key = malloc((size_t)n_slots * sizeof *key);
    int32_t *held = malloc((size_t)(t->n_expert + 1) * sizeof *held);
    uint8_t *hit = malloc((size_t)(t->n_expert + 1));
    int rc = xd__lru_init(&lru, (int32_t)n_slots, n_parts);
    if (!rc) rc = xd__lru_init(&fr, (int32_t)n_slots, n_parts);
    else fr = (struct xd__lru){0};
    if (rc || !where || !key || !held || !hit || !nu.freq || !nu.visits) {
        rc = XD_E_NOMEM;
        goto out;
    }
    for (int64_t k = 0; k < n_keys; k++) where[k] = -1;
    for (int32_t s = 0; s < (int32_t)n_slots; s++) {
        key[s] = -1;
        xd__lru_push(&fr, s % n_parts, s);
    }
    *out = (struct xd_xc_sim){0};
    for (int64_t i = 0; i < t->n_steps; i++) {
        const int64_t l = t->step_layer[i], a0 = t->step_start[i], a1 = t->step_start[i + 1];
        const int32_t part = policy == XD_XC_POLICY_LAYER ? (int32_t)l : 0;
        int32_t n_held = 0;
        /* the layer's turn: as visit() */
        nu.cur = l;
        nu.visits[l]++;
        if (++nu.n_visits >= 1024u * (uint64_t)t->n_layer) {
            nu.n_visits = 0;
            for (int64_t k = 0; k < n_keys; k++) nu.freq[k] /= 2;
            for (int64_t q = 0; q < t->n_layer; q++) nu.visits[q] /= 2;
        }
        /* the step's resident experts first: pinned, so the misses cannot evict them */
        int32_t h0 = 0, n_hit;
        for (int64_t a = a0; a < a1; a++) {
            const int64_t k = l * t->n_expert + t->acc[a];
            hit[a - a0] = where[k] >= 0;
            if (!hit[a - a0]) continue;
            out->hits++;
            nu.freq[k]++;
            xd__lru_remove(&lru, where[k]);
            held[n_held++] = where[k];
        }
        n_hit = n_held;
        /* then as a set does (expert_cache.c: reserve, xd_xc_set_next): before each hand-out,
         * start the misses that can have a slot - a free one, or a victim expected no sooner
         * than the experts held (any victim when none is held) - then hand out and release the
         * oldest held expert; reads are taken to land in the order they were started */
        for (;;) {
            double floor = INFINITY; /* the smallest expected next use of the held experts */
            bool floor_known = false;
            for (int64_t a = a0; a < a1; a++) {
                const int64_t k = l * t->n_expert + t->acc[a];
                if (hit[a - a0]) continue;
                int32_t s = xd__lru_oldest(&fr, part);
                if (s >= 0) {
                    xd__lru_remove(&fr, s);
                } else {
                    s = xd__lru_oldest(&lru, part);
                    if (s < 0) break; /* every slot held: after a release */
                    if (evict == XD_XC_EVICT_NEXT_USE) { /* as victim_next_use(), take_slot() */
                        double best_t = 0;
                        for (int32_t c = s; c >= 0; c = lru.next[c]) {
                            const double tt = sim_next_use(t, &nu, key[c]);
                            if (c == s || tt > best_t) s = c, best_t = tt;
                        }
                        if (!floor_known) {
                            floor_known = true;
                            for (int32_t h = h0; h < n_held; h++)
                                floor = fmin(floor, sim_next_use(t, &nu, key[held[h]]));
                        }
                        /* held hits not handed out, held reads: the forced-read exception */
                        const int32_t ready = h0 < n_hit ? n_hit - h0 : 0;
                        const int32_t reading = n_held - (h0 > n_hit ? h0 : n_hit);
                        if (best_t < floor && !(ready == 0 && reading < XD_XC_SET_FORCED_READS))
                            break; /* wait for a held expert's slot */
                    }
                    xd__lru_remove(&lru, s);
                    where[key[s]] = -1;
                }
                nu.freq[k]++;
                hit[a - a0] = 1; /* handled (a miss) */
                key[s] = (int32_t)k;
                where[k] = s;
                held[n_held++] = s;
                if (floor_known) floor = fmin(floor, sim_next_use(t, &nu, k));
            }
            if (h0 == n_held) break; /* nothing held, nothing left to start */
            xd__lru_push(&lru, part, held[h0++]); /* hand out in reservation order, release */
        }
        out->accesses += (uint64_t)(a1 - a0);
    }
out:
    xd__lru_free(&lru);
    xd__lru_free(&fr);
    free(nu.freq);
    free(nu.visits);
    free(where);
    free(key);
    free(held);
    free(hit);
    return rc;
}

int xd_xc_sim_belady(const struct xd_xc_trace *t, int64_t n_slots, struct xd_xc_sim *out) {
    if (n_slots < 1 || n_slots > (1 << 30)) return XD_E_INVALID;
    const int64_t n_keys = t->n_layer * t->n_expert, never = INT64_MAX;
    int64_t *next = malloc((size_t)(t->n_acc + 1) * sizeof *next);
    int64_t *last = malloc((size_t)n_keys * sizeof *last);
    int64_t *res_key = malloc((size_t)n_slots * sizeof *res_key);
    int64_t *res_next = malloc((size_t)n_slots * sizeof *res_next);
    int64_t *stamp = malloc((size_t)n_slots * sizeof *stamp);
    int32_t *where = malloc((size_t)n_keys * sizeof *where);
    int32_t *layer_of = malloc((size_t)(t->n_acc + 1) * sizeof *layer_of);
    uint8_t *done = malloc((size_t)(t->n_expert + 1));
    int rc = 0;
    if (!next || !last || !res_key || !res_next || !stamp || !where || !layer_of || !done) {
        rc = XD_E_NOMEM;
        goto out;
    }
    for (int64_t i = 0; i < t->n_steps; i++)
        for (int64_t a = t->step_start[i]; a < t->step_start[i + 1]; a++) layer_of[a] = t->step_layer[i];
    for (int64_t k = 0; k < n_keys; k++) last[k] = never, where[k] = -1;
    for (int64_t a = t->n_acc - 1; a >= 0; a--) {
        const int64_t k = layer_of[a] * t->n_expert + t->acc[a];
        next[a] = last[k];
        last[k] = a;
    }
    *out = (struct xd_xc_sim){.accesses = (uint64_t)t->n_acc};
    int64_t n_res = 0;
    for (int64_t i = 0; i < t->n_steps; i++) {
        const int64_t a0 = t->step_start[i], a1 = t->step_start[i + 1];
        /* as in the cache, a step's resident experts are touched (and pinned) first */
        for (int64_t a = a0; a < a1; a++) {
            const int32_t s = where[layer_of[a] * t->n_expert + t->acc[a]];
            done[a - a0] = s >= 0;
            if (s < 0) continue;
            out->hits++;
            res_next[s] = next[a];
            stamp[s] = i;
        }
        for (int64_t a = a0; a < a1; a++) {
            if (done[a - a0]) continue;
            const int64_t k = layer_of[a] * t->n_expert + t->acc[a];
            int32_t s;
            if (n_res < n_slots) {
                s = (int32_t)n_res++;
            } else { /* the furthest next use among experts this step does not hold */
                s = -1;
                for (int pinned_ok = 0; s < 0 && pinned_ok < 2; pinned_ok++)
                    for (int32_t j = 0; j < (int32_t)n_slots; j++)
                        if ((pinned_ok || stamp[j] != i) && (s < 0 || res_next[j] > res_next[s])) s = j;
                where[res_key[s]] = -1;
            }
            res_key[s] = k;
            res_next[s] = next[a];
            stamp[s] = i;
            where[k] = s;
        }
    }
out:
    free(next);
    free(last);
    free(res_key);
    free(res_next);
    free(stamp);
    free(where);
    free(layer_of);
    free(done);
    return rc;
}
