/* lru.c - intrusive doubly-linked index lists, partitioned: the expert cache's LRU and free list.
 *
 * Exact LRU rather than redis's sampled approximation: the pool holds at most thousands of
 * slots and every touch is an O(1) unlink/append under the cache's lock, so there is nothing to
 * save by sampling, and exactness lets the trace replay (trace.c) predict the cache's hit count
 * to the access. Lists are arrays of prev/next indices, not pointers, so the whole structure is
 * five allocations made once and nothing moves.
 * Not here: deciding what to evict (expert_cache.c asks for the oldest RESIDENT slot; pinned
 * slots are simply never on the list).
 */
#include "lru.h"

#include <stdlib.h>

#include "xd_error.h"

int xd__lru_init(struct xd__lru *l, int32_t n_slots, int32_t n_parts) {
    *l = (struct xd__lru){.n_slots = n_slots, .n_parts = n_parts};
    size_t ns = (size_t)(n_slots > 0 ? n_slots : 1), np = (size_t)(n_parts > 0 ? n_parts : 1);
    l->prev = malloc(ns * sizeof *l->prev);
    l->next = malloc(ns * sizeof *l->next);
    l->part = malloc(ns * sizeof *l->part);
    l->head = malloc(np * sizeof *l->head);
    l->tail = malloc(np * sizeof *l->tail);
    l->count = calloc(np, sizeof *l->count);
    if (!l->prev || !l->next || !l->part || !l->head || !l->tail || !l->count) {
        xd__lru_free(l);
        return XD_E_NOMEM;
    }
    for (int32_t i = 0; i < n_slots; i++) l->prev[i] = l->next[i] = l->part[i] = -1;
    for (int32_t p = 0; p < n_parts; p++) l->head[p] = l->tail[p] = -1;
    return 0;
}

void xd__lru_free(struct xd__lru *l) {
    free(l->prev);
    free(l->next);
    free(l->part);
    free(l->head);
    free(l->tail);
    free(l->count);
    *l = (struct xd__lru){0};
}

void xd__lru_push(struct xd__lru *l, int32_t part, int32_t slot) {
    l->part[slot] = part;
    l->next[slot] = -1;
    l->prev[slot] = l->tail[part];
    if (l->tail[part] >= 0) l->next[l->tail[part]] = slot;
    else l->head[part] = slot;
    l->tail[part] = slot;
    l->count[part]++;
}

void xd__lru_remove(struct xd__lru *l, int32_t slot) {
    int32_t p = l->part[slot];
    if (p < 0) return;
    if (l->prev[slot] >= 0) l->next[l->prev[slot]] = l->next[slot];
    else l->head[p] = l->next[slot];
    if (l->next[slot] >= 0) l->prev[l->next[slot]] = l->prev[slot];
    else l->tail[p] = l->prev[slot];
    l->prev[slot] = l->next[slot] = l->part[slot] = -1;
    l->count[p]--;
}

int32_t xd__lru_oldest(const struct xd__lru *l, int32_t part) { return l->head[part]; }

int32_t xd__lru_part_of(const struct xd__lru *l, int32_t slot) { return l->part[slot]; }

int xd__lru_check(const struct xd__lru *l) {
    int32_t total = 0;
    for (int32_t p = 0; p < l->n_parts; p++) {
        int32_t n = 0, prev = -1;
        for (int32_t s = l->head[p]; s >= 0; prev = s, s = l->next[s]) {
            if (s >= l->n_slots || l->part[s] != p || l->prev[s] != prev || ++n > l->n_slots)
                return XD_E_INVALID;
        }
        if (l->tail[p] != prev || n != l->count[p]) return XD_E_INVALID;
        total += n;
    }
    int32_t listed = 0;
    for (int32_t s = 0; s < l->n_slots; s++) listed += l->part[s] >= 0;
    return listed == total ? 0 : XD_E_INVALID;
}
