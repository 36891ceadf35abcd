/* backend.c - creating a CPU backend: pick the kernels from cpuid, start the threads, size the
 * scratch.
 *
 * A backend is a long-lived object owned by one context (its engine thread): the ops table,
 * the CPU features probed once at creation (never a static), the thread pool, and all scratch
 * any op needs, allocated here so no op allocates or can fail. Scratch is sized from the
 * context's limits (tokens per call, longest matmul input, positions per sequence).
 *
 * Names (ops.h): "cpu" resolves to cpu-avx512 where the CPU has AVX-512 F/BW/VL/VNNI, else
 * cpu-avx2 where it has AVX2+FMA+F16C, else cpu-scalar. Asking for an instruction set the CPU
 * lacks is an error, not a silent downgrade. Not done: NUMA-aware scratch, pinning.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend_impl.h"
#include "xd_error.h"

static int errf(char *err, size_t errlen, int code, const char *msg, const char *arg) {
    if (err && errlen) snprintf(err, errlen, msg, arg);
    return code;
}

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Choose the ops and kernels for name; 0 or XD_E_UNSUPPORTED. */
static int select_kernels(struct xd_backend *be, const char *name) {
    const bool avx512 = xd_cpu_has_avx512(&be->cpu), avx2 = xd_cpu_has_avx2(&be->cpu);
    if (!name || !*name || !strcmp(name, "cpu"))
        name = avx512 ? "cpu-avx512" : avx2 ? "cpu-avx2" : "cpu-scalar";
    if (!strcmp(name, "cpu-ref")) {
        be->ops = xd_ops_cpu_ref();
        be->kern = xd__kernels_ref(); /* for the attention primitives only */
    } else if (!strcmp(name, "cpu-scalar")) {
        be->ops = xd__ops_cpu_fast();
        be->kern = xd__kernels_ref();
    } else if (!strcmp(name, "cpu-avx2") && avx2) {
        be->ops = xd__ops_cpu_fast();
        be->kern = xd__kernels_avx2();
    } else if (!strcmp(name, "cpu-avx512") && avx512) {
        be->ops = xd__ops_cpu_fast();
        be->kern = xd__kernels_avx512(be->cpu.avx512bf16);
        be->kern2 = xd__kernels_avx2(); /* BF16 without AVX512-BF16: same numbers */
    } else {
        return XD_E_UNSUPPORTED;
    }
    if (!be->kern) return XD_E_UNSUPPORTED;
    snprintf(be->name, sizeof be->name, "%s", name);
    return 0;
}

int xd_backend_create(const struct xd_backend_params *p, struct xd_backend **out, char *err,
                      size_t errlen) {
    struct xd_backend_params d = p ? *p : (struct xd_backend_params){0};
    if (d.n_threads < 0 || d.n_threads > 1024 || d.max_tokens < 0 || d.max_row < 0 || d.max_pos < 0)
        return errf(err, errlen, XD_E_INVALID, "invalid backend parameters%s", "");
    if (d.n_threads == 0) {
        const long n = sysconf(_SC_NPROCESSORS_ONLN);
        d.n_threads = n < 1 ? 1 : n > 256 ? 256 : (int32_t)n;
    }
    d.max_tokens = d.max_tokens ? d.max_tokens : 512;
    d.max_row = d.max_row ? d.max_row : 4096;
    d.max_pos = d.max_pos ? d.max_pos : 4096;
    struct xd_backend *be = calloc(1, sizeof *be);
    if (!be) return errf(err, errlen, XD_E_NOMEM, "out of memory%s", "");
    xd_cpu_features_probe(&be->cpu);
    int rc = select_kernels(be, d.name);
    if (rc) {
        free(be);
        return errf(err, errlen, rc,
                    "backend '%s' is unknown or this CPU cannot run it (known: " XD_BACKEND_NAMES
                    ")",
                    d.name ? d.name : "");
    }
    /* cpu-ref is single-threaded by definition */
    be->n_threads = be->ops == xd_ops_cpu_ref() ? 1 : d.n_threads;
    be->max_tokens = d.max_tokens;
    be->max_row = (d.max_row + 255) / 256 * 256;
    be->max_pos = d.max_pos;
    /* the largest converted row is bf16 (2 bytes a value); 8-bit blocks take less */
    be->xq_size = (size_t)be->max_tokens * (size_t)be->max_row * 2;
    be->scratch_stride = round_up(XD_KERN_SCRATCH(be->max_tokens), 64);
    /* attention: scores of max_pos positions and one head of q (head_dim <= max_row) for each
     * of XD_ATTN_MAXQ heads */
    be->scores_stride = XD_ATTN_MAXQ * (round_up((size_t)be->max_pos, 16) + (size_t)be->max_row);
    const size_t nth = (size_t)be->n_threads;
    be->xq = aligned_alloc(64, round_up(be->xq_size, 64));
    be->scratch = aligned_alloc(64, be->scratch_stride * nth);
    be->scores = aligned_alloc(64, be->scores_stride * nth * sizeof(float));
    if (!be->xq || !be->scratch || !be->scores) {
        xd_backend_destroy(be);
        return errf(err, errlen, XD_E_NOMEM, "out of memory for the backend's scratch%s", "");
    }
    if ((rc = xd_pool_create(be->n_threads, &be->pool))) {
        xd_backend_destroy(be);
        return errf(err, errlen, rc, "cannot start the kernel threads%s", "");
    }
    *out = be;
    return 0;
}

void xd_backend_destroy(struct xd_backend *be) {
    if (!be) return;
    xd_pool_destroy(be->pool);
    if (be->pmem) munmap(be->pmem, be->pmem_bytes);
    free(be->pmap);
    free(be->xq);
    free(be->scratch);
    free(be->scores);
    free(be);
}

const struct xd_ops *xd_backend_ops(const struct xd_backend *be) { return be->ops; }
const char *xd_backend_name(const struct xd_backend *be) { return be->name; }
int xd_backend_n_threads(const struct xd_backend *be) { return be->n_threads; }
const struct xd_backend_stats *xd_backend_stats(const struct xd_backend *be) { return &be->stats; }
void xd_backend_stats_reset(struct xd_backend *be) { memset(&be->stats, 0, sizeof be->stats); }

/* ---- weights in the panel layout (xd_backend_repack) ---------------------------------------- */

const struct xd_kern_type *xd__kern_for(const struct xd_backend *be, uint32_t type) {
    if (type >= XD_TYPE_COUNT) return NULL;
    if (be->kern && be->kern->type[type].gemm) return &be->kern->type[type];
    if (be->kern2 && be->kern2->type[type].gemm) return &be->kern2->type[type];
    return NULL;
}

/* The table entry the matmuls will use for type, if it has panel kernels. */
static const struct xd_kern_type *panel_kern(const struct xd_backend *be, uint32_t type) {
    if (be->ops != xd__ops_cpu_fast()) return NULL;
    const struct xd_kern_type *k = xd__kern_for(be, type);
    return k && k->gemm_panel ? k : NULL;
}

/* Bytes of t if the panel kernels can take it (whole panels, rows and matrices contiguous),
 * else 0. */
static size_t panel_bytes(const struct xd_backend *be, const struct xd_tensor *t) {
    const struct xd_kern_type *k = t->data ? panel_kern(be, t->type) : NULL;
    if (!k) return 0;
    const struct xd_type_traits *tr = xd_type_traits(t->type);
    const size_t row = (size_t)(t->ne[0] / tr->blck_size) * tr->type_size;
    if (t->ne[0] % tr->blck_size || t->ne[1] % k->panel || t->nb[1] != row) return 0;
    if (t->ne[2] > 1 && t->nb[2] != row * (size_t)t->ne[1]) return 0;
    if (t->ne[3] > 1) return 0;
    return row * (size_t)t->ne[1] * (size_t)(t->ne[2] > 1 ? t->ne[2] : 1);
}

struct repack_job {
    const struct xd_tensor *t;
    uint8_t *dst;
    int64_t rows, panel; /* all rows of all matrices, panel rows */
    int head;            /* xd_kern_type.panel_head */
    size_t row;
    _Atomic int64_t next;
};

static void repack_task(void *arg, int ith, int nth) {
    (void)ith, (void)nth;
    struct repack_job *j = arg;
    const size_t blk = xd_type_traits(j->t->type)->type_size;
    int64_t r0, len;
    while ((r0 = xd_pool_claim(&j->next, j->rows, 64 * j->panel, &len)) >= 0)
        xd__panel_repack(j->dst + (size_t)r0 * j->row,
                         (const uint8_t *)j->t->data + (size_t)r0 * j->row, len, j->row, blk,
                         (size_t)j->head, j->panel);
}

static int cmp_pmap(const void *a, const void *b) {
    const struct xd_panel_map *x = a, *y = b;
    return x->src < y->src ? -1 : x->src > y->src;
}

int xd_backend_repack(struct xd_backend *be, const struct xd_model *m, bool experts, char *err,
                      size_t errlen) {
    if (be->pmem) return 0;
    /* the candidates: every matmul weight the forward pass reads from the mapping */
    const int64_t nl = m->hp.n_layer;
    const size_t max_t = (size_t)nl * 10 + 1;
    const struct xd_tensor **ts = calloc(max_t, sizeof *ts);
    size_t *tb = calloc(max_t, sizeof *tb); /* panel_bytes of ts[i] */
    if (!ts || !tb) {
        free(ts);
        free(tb);
        return errf(err, errlen, XD_E_NOMEM, "out of memory%s", "");
    }
    size_t n = 0, total = 0;
    for (int64_t l = 0; l < nl; l++) {
        const struct xd_layer *L = &m->layers[l];
        const struct xd_tensor *c[] = {&L->wq,        &L->wk,      &L->wv,        &L->wo,
                                       &L->ffn_gate,  &L->ffn_up,  &L->ffn_down,  &L->gate_exps,
                                       &L->up_exps,   &L->down_exps};
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
            if ((i < 7 || experts) && (tb[n] = panel_bytes(be, c[i]))) ts[n++] = c[i];
    }
    if (m->output.data != m->tok_embd.data && (tb[n] = panel_bytes(be, &m->output)))
        ts[n++] = &m->output;
    for (size_t i = 0; i < n; i++) total += (tb[i] + 4095) / 4096 * 4096;
    if (!n) {
        free(ts);
        free(tb);
        return 0;
    }
    uint8_t *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct xd_panel_map *map = calloc(n, sizeof *map);
    if (mem == MAP_FAILED || !map) {
        if (mem != MAP_FAILED) munmap(mem, total);
        free(map);
        free(ts);
        free(tb);
        return errf(err, errlen, XD_E_NOMEM, "out of memory for the repacked weights%s", "");
    }
#ifdef MADV_HUGEPAGE
    madvise(mem, total, MADV_HUGEPAGE); /* streamed front to back: fewer TLB misses */
#endif
    size_t off = 0;
    const long pg = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < n; i++) {
        const struct xd_tensor *t = ts[i];
        const size_t bytes = tb[i], row = t->nb[1];
        const struct xd_kern_type *kt = panel_kern(be, t->type);
        const int64_t panel = kt->panel;
        struct repack_job j = {.t = t, .dst = mem + off, .panel = panel, .row = row,
                               .head = kt->panel_head, .rows = (int64_t)(bytes / row)};
        atomic_init(&j.next, 0);
        xd_pool_run(be->pool, repack_task, &j);
        map[i] = (struct xd_panel_map){.src = t->data, .len = bytes, .dst = mem + off,
                                       .row = row, .panel_bytes = (size_t)panel * row};
        /* drop the mapping's pages of the range from this process (whole pages inside it) */
        const uintptr_t ps = (uintptr_t)pg, base = (uintptr_t)t->data;
        const uintptr_t a = (base + ps - 1) / ps * ps, b = (base + bytes) / ps * ps;
        if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
        off += (bytes + 4095) / 4096 * 4096;
    }
    mprotect(mem, total, PROT_READ);
    qsort(map, n, sizeof *map, cmp_pmap);
    free(ts);
    free(tb);
    be->pmem = mem;
    be->pmem_bytes = total;
    be->pmap = map;
    be->n_pmap = (int)n;
    return 0;
}

uint64_t xd_backend_repacked_bytes(const struct xd_backend *be) {
    uint64_t s = 0;
    for (int i = 0; i < be->n_pmap; i++) s += be->pmap[i].len;
    return s;
}

const struct xd_panel_map *xd__panel_find(const struct xd_backend *be, const void *data) {
    const uint8_t *p = data;
    int lo = 0, hi = be->n_pmap - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        const struct xd_panel_map *e = &be->pmap[mid];
        if (p < e->src) hi = mid - 1;
        else if (p >= e->src + e->len) lo = mid + 1;
        else return e;
    }
    return NULL;
}
