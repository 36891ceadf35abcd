/* expert_cache.c - the everything-resident expert cache: views into the model's mmap.
 *
 * Every expert is RESIDENT from the start, so acquire never waits and never fails for a valid
 * (layer, expert). It still counts pins per expert, so tests can check that the MoE layer
 * releases everything it acquires — the invariant the slot-pool cache depends on.
 */
#include "expert_cache.h"

#include <stdlib.h>

#include "xd_error.h"

struct xd_xc {
    const struct xd_model *m;
    int32_t *pins;     /* [n_layer * n_expert] */
    uint8_t *touched;  /* [n_layer * n_expert]: ever acquired */
    int64_t n_pinned;
    struct xd_xc_stats stats;
};

int xd_xc_create_resident(const struct xd_model *m, struct xd_xc **out) {
    if (!m->moe) return XD_E_INVALID;
    struct xd_xc *xc = calloc(1, sizeof *xc);
    if (!xc) return XD_E_NOMEM;
    xc->m = m;
    xc->pins = calloc((size_t)(m->hp.n_layer * m->hp.n_expert), sizeof *xc->pins);
    xc->touched = calloc((size_t)(m->hp.n_layer * m->hp.n_expert), 1);
    if (!xc->pins || !xc->touched) {
        free(xc->pins);
        free(xc->touched);
        free(xc);
        return XD_E_NOMEM;
    }
    *out = xc;
    return 0;
}

void xd_xc_destroy(struct xd_xc *xc) {
    if (!xc) return;
    free(xc->pins);
    free(xc->touched);
    free(xc);
}

int xd_xc_acquire(struct xd_xc *xc, int64_t layer, int64_t expert, struct xd_expert_view *out) {
    const struct xd_hparams *hp = &xc->m->hp;
    if (layer < 0 || layer >= hp->n_layer || expert < 0 || expert >= hp->n_expert)
        return XD_E_INVALID;
    const struct xd_layer *L = &xc->m->layers[layer];
    out->gate = xd_tensor_expert(&L->gate_exps, expert);
    out->up = xd_tensor_expert(&L->up_exps, expert);
    out->down = xd_tensor_expert(&L->down_exps, expert);
    const int64_t i = layer * hp->n_expert + expert;
    xc->pins[i]++;
    if (!xc->touched[i]) {
        xc->touched[i] = 1;
        xc->stats.distinct++;
    }
    xc->n_pinned++;
    xc->stats.acquires++;
    xc->stats.hits++;
    return 0;
}

void xd_xc_release(struct xd_xc *xc, int64_t layer, int64_t expert) {
    int32_t *pin = &xc->pins[layer * xc->m->hp.n_expert + expert];
    if (*pin > 0) {
        (*pin)--;
        xc->n_pinned--;
    }
}

void xd_xc_prefetch(struct xd_xc *xc, int64_t layer, const int32_t *experts, int n) {
    (void)layer;
    (void)experts;
    xc->stats.prefetches += (uint64_t)(n > 0 ? n : 0);
}

const struct xd_xc_stats *xd_xc_stats(const struct xd_xc *xc) { return &xc->stats; }

int64_t xd_xc_pinned(const struct xd_xc *xc) { return xc->n_pinned; }
