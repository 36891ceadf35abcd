/* xd_cuda.h - the CUDA backend's C entry points (implemented in the .cu files of engine/cuda).
 *
 * Device discovery; on-device dequantization checked against the CPU reference; the
 * device-resident forward pass that forward.c delegates to for backend "cuda"
 * (forward_cuda.cu); the expert-cache backend that puts slots in VRAM (xc_cuda.cu); the VRAM
 * budget for experts; and bandwidth probes for the roofline figures of `bench engine`. Built
 * only when XD_HAVE_CUDA is defined (-DEXPERTD_CUDA=AUTO|ON and nvcc found); every function
 * reports "no device" cleanly (-ENODEV) on a machine without a GPU.
 */
#ifndef XD_CUDA_H
#define XD_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct xd_model;
struct xd_kv;
struct xd_xc;
struct xd_xc_config;
struct xd_xc_backend;
struct xd_stats;

/* Number of usable CUDA devices; 0 when there is no driver or device (never fails). */
int xd_cuda_device_count(void);
/* Name, memory and compute capability of device dev into buf. 0, or a negative code. */
int xd_cuda_device_describe(int dev, char *buf, size_t len);
/* Dequantize n elements of type (F32, F16, BF16, Q8_0, Q4_0) from host src to host dst on
 * device 0 (copy in, kernel, copy out). 0; XD_E_UNSUPPORTED for other types; -ENODEV without
 * a device; XD_E_IO on a CUDA error. */
int xd_cuda_dequantize(uint32_t type, const void *src, float *dst, int64_t n);

/* ---- the forward pass (forward_cuda.cu) ---------------------------------------------------- */
struct xd_cuda_ctx_params {
    int32_t n_ctx, n_seq, n_batch; /* as the xd_ctx's (resolved, > 0) */
    struct xd_xc *xc;              /* the context's expert cache (MoE models); borrowed */
};
struct xd_cuda_ctx;

/* Upload the non-expert weights (and, with an everything-resident cache, every expert), and
 * allocate the K/V cache and activations in VRAM. 0, -ENODEV, XD_E_NOMEM (VRAM; the message
 * says how much was free), XD_E_UNSUPPORTED (a tensor type or shape the kernels lack) or
 * XD_E_IO (another CUDA error), with a message in err; *out untouched on failure. */
int xd_cuda_ctx_create(const struct xd_model *m, const struct xd_cuda_ctx_params *p,
                       struct xd_cuda_ctx **out, char *err, size_t errlen);
void xd_cuda_ctx_destroy(struct xd_cuda_ctx *c); /* NULL is a no-op */
/* One chunk of n <= n_batch tokens (already validated by xd_forward): want[t] says whether
 * token t's logits row is wanted; rows are written to logits + *n_out * n_vocab on, and *n_out
 * advances. 0, or a negative code with xd_cuda_ctx_error() saying what failed (a CUDA error,
 * an expert read error from the cache). */
int xd_cuda_forward(struct xd_cuda_ctx *c, int32_t n, const int32_t *tok, const int32_t *pos,
                    const int32_t *seq, const bool *want, float *logits, int64_t *n_out,
                    struct xd_stats *stats);
const char *xd_cuda_ctx_error(const struct xd_cuda_ctx *c);

/* ---- experts in VRAM (xc_cuda.cu) ---------------------------------------------------------- */
/* An expert-cache backend: slots in VRAM (cudaMalloc), staging in pinned host memory
 * (cudaHostAlloc) that the cache's reads land in, and a streamed commit: each landed part of
 * an expert is a cudaMemcpyAsync on a copy stream of its own, waited for (an event) before the
 * cache publishes the slot; the compute stream keeps running meanwhile.
 * Must outlive every cache opened with it. */
struct xd_cuda_xcb;
int xd_cuda_xcb_create(struct xd_cuda_xcb **out, char *err, size_t errlen);
void xd_cuda_xcb_destroy(struct xd_cuda_xcb *b);
const struct xd_xc_backend *xd_cuda_xcb_backend(const struct xd_cuda_xcb *b);

/* VRAM this context needs besides experts: non-expert weights, K/V cache and activations. */
uint64_t xd_cuda_base_bytes(const struct xd_model *m, int32_t n_ctx, int32_t n_seq,
                            int32_t n_batch);
/* Open the expert cache for a CUDA context. With cfg->budget 0 the expert budget is what VRAM
 * has left (free memory, capped at gpu_memory when nonzero, minus xd_cuda_base_bytes and a
 * 512 MiB reserve); with a budget, that budget. Everything fits: *xc = NULL and *xcb = NULL
 * (the context uploads every expert once). Otherwise an offloaded cache with VRAM slots
 * (*xcb to destroy after *xc). 0, or a negative code with a message in err. */
int xd_cuda_open_xc(const struct xd_model *m, struct xd_xc_config *cfg, uint64_t gpu_memory,
                    int32_t n_ctx, int32_t n_seq, int32_t n_batch, struct xd_cuda_xcb **xcb,
                    struct xd_xc **xc, char *err, size_t errlen);

/* Measured copy bandwidths of device 0, median of reps copies of bytes: device to device
 * (counted as bytes read + bytes written, as CUDA's bandwidthTest does) and pinned host to
 * device. 0 or a negative code. */
int xd_cuda_bandwidth(size_t bytes, int reps, double *d2d_gb_s, double *h2d_gb_s);

#ifdef __cplusplus
}
#endif

#endif
