/* lru.h - intrusive doubly-linked lists of slot indices, one per partition (private to cache/).
 *
 * The expert cache keeps two of these: its LRU (RESIDENT slots, least recently used at the
 * head) and its free list. A partition is the whole pool under the global policy, or the slots
 * of one layer under the per-layer policy. Every operation is O(1); nothing allocates after
 * xd__lru_init.
 */
#ifndef XD_LRU_H
#define XD_LRU_H

#include <stdbool.h>
#include <stdint.h>

struct xd__lru {
    int32_t n_slots, n_parts;
    int32_t *prev, *next;  /* [n_slots]; -1 ends a list */
    int32_t *part;         /* [n_slots]: list the slot is on, -1 when on none */
    int32_t *head, *tail;  /* [n_parts]: head = oldest, tail = newest */
    int32_t *count;        /* [n_parts] */
};

/* 0 or XD_E_NOMEM; on failure l is left safe to free. */
int xd__lru_init(struct xd__lru *l, int32_t n_slots, int32_t n_parts);
void xd__lru_free(struct xd__lru *l);
/* Append slot (on no list) as the newest of part. */
void xd__lru_push(struct xd__lru *l, int32_t part, int32_t slot);
/* Take slot off its list; a slot on no list is left alone. */
void xd__lru_remove(struct xd__lru *l, int32_t slot);
/* Oldest slot of part, or -1 when the list is empty. */
int32_t xd__lru_oldest(const struct xd__lru *l, int32_t part);
/* Part the slot is listed in, or -1. */
int32_t xd__lru_part_of(const struct xd__lru *l, int32_t slot);
/* Walk every list and check links, counts and membership: 0 or XD_E_INVALID. */
int xd__lru_check(const struct xd__lru *l);

#endif
