/* xc_cuda.cu - experts in VRAM: the expert cache's CUDA backend, the VRAM budget for experts,
 * and the copy-bandwidth probes that the roofline figures of `bench engine` divide by.
 *
 * Slots are one cudaMalloc (never managed memory: a page fault per first touch would stall
 * kernels unpredictably); the cache's O_DIRECT reads land in pinned staging (cudaHostAlloc,
 * which io_uring can register) and the copy into its slot streams behind the read: each part
 * of an expert that has landed is one cudaMemcpyAsync on a copy stream of its own, and the
 * thread that finishes the read waits on an event recorded after its last part (the older
 * whole-expert commit stays behind XD_CUDA_WHOLE_COMMIT=1 for A/B runs). Copies overlap the
 * compute stream, which the forward pass keeps busy with the experts that were already
 * resident. The forward pass releases a slot only after its kernels have run
 * (forward_cuda.cu), so a refill never races a reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_impl.cuh"

extern "C" {
#include "expert_cache.h"
#include "model.h"
}
#include "xd_cuda.h"

struct xd_cuda_xcb {
    struct xd_xc_backend be;
    cudaStream_t copy;
};

namespace {

void *slots_alloc(void *user, size_t bytes) {
    (void)user;
    void *p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return nullptr;
    }
    return p;
}

void slots_free(void *user, void *p, size_t bytes) {
    (void)user, (void)bytes;
    cudaFree(p);
}

void *staging_alloc(void *user, size_t bytes) {
    (void)user;
    void *p = nullptr;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
        (void)cudaGetLastError();
        return nullptr;
    }
    return p;
}

void staging_free(void *user, void *p, size_t bytes) {
    (void)user, (void)bytes;
    cudaFreeHost(p);
}

/* Streamed commit: a part is one cudaMemcpyAsync on the copy stream, started while the rest
 * of the expert is still being read (the cache calls it with its lock held: it must not block,
 * and an async copy from pinned memory does not). */
int commit_part(void *user, void *slot, const void *staging, size_t off, size_t len) {
    xd_cuda_xcb *b = (xd_cuda_xcb *)user;
    cudaError_t e = cudaMemcpyAsync((char *)slot + off, (const char *)staging + off, len,
                                    cudaMemcpyHostToDevice, b->copy);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return XD_E_IO;
    }
    return 0;
}

/* Runs on the reader thread that finished the expert; several may wait at once. Each waits on
 * an event recorded now on the copy stream (FIFO: it covers the caller's parts and those queued
 * before them), not on the stream: a stream sync would also wait for the copies that other
 * threads queue later (their experts then become ready together, later than they could). */
int commit_wait(void *user) {
    xd_cuda_xcb *b = (xd_cuda_xcb *)user;
    cudaEvent_t ev;
    if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) {
        (void)cudaGetLastError();
        return XD_E_IO;
    }
    cudaError_t e = cudaEventRecord(ev, b->copy);
    if (e == cudaSuccess) e = cudaEventSynchronize(ev);
    cudaEventDestroy(ev);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return XD_E_IO;
    }
    return 0;
}

/* The whole-expert commit (XD_CUDA_WHOLE_COMMIT=1): one copy after the read, then its wait. */
int commit(void *user, void *slot, const void *staging, size_t bytes) {
    int rc = commit_part(user, slot, staging, 0, bytes);
    return rc ? rc : commit_wait(user);
}

uint64_t tbytes(const struct xd_tensor *t) {
    if (!t->data) return 0;
    return (uint64_t)xd_row_size(t->type, t->ne[0]) * (uint64_t)(t->ne[1] ? t->ne[1] : 1) *
           (uint64_t)(t->ne[2] ? t->ne[2] : 1);
}

}  // namespace

extern "C" int xd_cuda_xcb_create(struct xd_cuda_xcb **out, char *err, size_t errlen) {
    if (xd_cuda_device_count() == 0) {
        snprintf(err, errlen, "no CUDA device");
        return -ENODEV;
    }
    xd_cuda_xcb *b = (xd_cuda_xcb *)calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return XD_E_NOMEM;
    }
    cudaError_t e = cudaStreamCreateWithFlags(&b->copy, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "CUDA: copy stream: %s", cudaGetErrorString(e));
        free(b);
        return XD_E_IO;
    }
    b->be = xd_xc_backend{};
    b->be.name = "cuda";
    b->be.slots_alloc = slots_alloc;
    b->be.slots_free = slots_free;
    b->be.staging_alloc = staging_alloc;
    b->be.staging_free = staging_free;
    b->be.n_staging = 8;
    b->be.user = b;
    /* XD_CUDA_WHOLE_COMMIT=1: copy an expert only after its whole read (the A/B switch for the
     * streamed commit's figure in docs/benchmarks.md) */
    const char *whole = getenv("XD_CUDA_WHOLE_COMMIT");
    if (whole && *whole && strcmp(whole, "0")) {
        b->be.commit = commit;
    } else {
        b->be.commit_part = commit_part;
        b->be.commit_wait = commit_wait;
    }
    *out = b;
    return 0;
}

extern "C" void xd_cuda_xcb_destroy(struct xd_cuda_xcb *b) {
    if (!b) return;
    cudaStreamSynchronize(b->copy);
    cudaStreamDestroy(b->copy);
    free(b);
}

extern "C" const struct xd_xc_backend *xd_cuda_xcb_backend(const struct xd_cuda_xcb *b) {
    return &b->be;
}

extern "C" uint64_t xd_cuda_base_bytes(const struct xd_model *m, int32_t n_ctx, int32_t n_seq,
                                       int32_t n_batch) {
    const struct xd_hparams *hp = &m->hp;
    const uint64_t kvd = (uint64_t)(hp->n_head_kv * hp->head_dim);
    const uint64_t kv = 2ull * 2ull * (uint64_t)hp->n_layer * (uint64_t)n_seq * (uint64_t)n_ctx * kvd;
    const uint64_t ff = (uint64_t)(hp->n_ff_exp > hp->n_ff ? hp->n_ff_exp : hp->n_ff);
    const uint64_t k = (uint64_t)(hp->n_expert_used ? hp->n_expert_used : 1);
    const uint64_t act = 4ull * (uint64_t)n_batch *
                         (4ull * (uint64_t)hp->d_model + 4ull * (uint64_t)(hp->n_head * hp->head_dim) +
                          ff + k * (uint64_t)hp->d_model + (uint64_t)hp->n_vocab + 8ull * 128);
    return xd_model_nonexpert_bytes(m) + kv + act;
}

extern "C" int xd_cuda_open_xc(const struct xd_model *m, struct xd_xc_config *cfg,
                               uint64_t gpu_memory, int32_t n_ctx, int32_t n_seq, int32_t n_batch,
                               struct xd_cuda_xcb **xcb, struct xd_xc **xc, char *err,
                               size_t errlen) {
    *xcb = nullptr;
    *xc = nullptr;
    if (xd_cuda_device_count() == 0) {
        snprintf(err, errlen, "no CUDA device");
        return -ENODEV;
    }
    if (!m->moe) return 0;
    uint64_t experts = 0;
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        experts += tbytes(&m->layers[l].gate_exps) + tbytes(&m->layers[l].up_exps) +
                   tbytes(&m->layers[l].down_exps);
    if (!cfg->budget) {
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
            (void)cudaGetLastError();
            snprintf(err, errlen, "CUDA: cannot query free memory");
            return XD_E_IO;
        }
        uint64_t avail = fr;
        if (gpu_memory && gpu_memory < avail) avail = gpu_memory;
        const uint64_t base = xd_cuda_base_bytes(m, n_ctx, n_seq, n_batch) + (512ull << 20);
        if (avail > base && avail - base >= experts && !cfg->trace_path) return 0; /* all fit */
        cfg->budget = avail > base ? avail - base : 0;
        if (cfg->budget > experts) cfg->budget = experts;
        if (!cfg->budget) {
            snprintf(err, errlen, "not enough VRAM for the non-expert weights, K/V cache and "
                     "activations (%.2f GiB needed, %.2f GiB available)",
                     (double)base / (1u << 30), (double)avail / (1u << 30));
            return XD_E_NOMEM;
        }
    }
    int rc = xd_cuda_xcb_create(xcb, err, errlen);
    if (rc) return rc;
    cfg->backend = xd_cuda_xcb_backend(*xcb);
    if ((rc = xd_xc_open(m, cfg, xc, err, errlen))) {
        xd_cuda_xcb_destroy(*xcb);
        *xcb = nullptr;
        *xc = nullptr;
        return rc;
    }
    return 0;
}

namespace {

int cmp_f(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* median milliseconds of reps copies */
cudaError_t time_copies(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, int reps,
                        float *ms_median) {
    cudaEvent_t a, b;
    cudaError_t e = cudaEventCreate(&a);
    if (e != cudaSuccess) return e;
    if ((e = cudaEventCreate(&b)) != cudaSuccess) {
        cudaEventDestroy(a);
        return e;
    }
    float ms[64];
    if (reps > 64) reps = 64;
    e = cudaMemcpy(dst, src, bytes, kind); /* warm-up */
    for (int i = 0; i < reps && e == cudaSuccess; i++) {
        if ((e = cudaEventRecord(a)) == cudaSuccess &&
            (e = cudaMemcpyAsync(dst, src, bytes, kind)) == cudaSuccess &&
            (e = cudaEventRecord(b)) == cudaSuccess && (e = cudaEventSynchronize(b)) == cudaSuccess)
            e = cudaEventElapsedTime(&ms[i], a, b);
    }
    if (e == cudaSuccess) {
        qsort(ms, (size_t)reps, sizeof ms[0], cmp_f);
        *ms_median = ms[reps / 2];
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return e;
}

}  // namespace

extern "C" int xd_cuda_bandwidth(size_t bytes, int reps, double *d2d_gb_s, double *h2d_gb_s) {
    if (xd_cuda_device_count() == 0) return -ENODEV;
    if (reps < 1) reps = 1;
    void *d0 = nullptr, *d1 = nullptr, *h = nullptr;
    float ms = 0;
    cudaError_t e = cudaMalloc(&d0, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&d1, bytes);
    if (e == cudaSuccess) e = cudaHostAlloc(&h, bytes, 0);
    if (e == cudaSuccess) e = cudaMemset(d0, 1, bytes);
    if (e == cudaSuccess) memset(h, 1, bytes);
    if (e == cudaSuccess) e = time_copies(d1, d0, bytes, cudaMemcpyDeviceToDevice, reps, &ms);
    if (e == cudaSuccess) *d2d_gb_s = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
    if (e == cudaSuccess) e = time_copies(d0, h, bytes, cudaMemcpyHostToDevice, reps, &ms);
    if (e == cudaSuccess) *h2d_gb_s = (double)bytes / (ms * 1e-3) / 1e9;
    cudaFree(d0);
    cudaFree(d1);
    cudaFreeHost(h);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return e == cudaErrorMemoryAllocation ? XD_E_NOMEM : XD_E_IO;
    }
    return 0;
}
