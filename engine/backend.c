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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
