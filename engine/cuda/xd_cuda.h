/* xd_cuda.h - the CUDA backend's C entry points (implemented in the .cu files of engine/cuda).
 *
 * This is the seed of the CUDA backend: device discovery and on-device dequantization with the
 * same block layouts as quant.c, checked against the CPU reference by tests/test_cuda.c on a
 * machine with a GPU. Built only when XD_HAVE_CUDA is defined (-DEXPERTD_CUDA=AUTO|ON and nvcc
 * found); every function reports "no device" cleanly on a machine without a GPU.
 */
#ifndef XD_CUDA_H
#define XD_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or device (never fails). */
int xd_cuda_device_count(void);
/* Name, memory and compute capability of device dev into buf. 0, or a negative code. */
int xd_cuda_device_describe(int dev, char *buf, size_t len);
/* Dequantize n elements of type (F32, F16, BF16, Q8_0, Q4_0) from host src to host dst on
 * device 0 (copy in, kernel, copy out). 0; XD_E_UNSUPPORTED for other types; -ENODEV without
 * a device; XD_E_IO on a CUDA error. */
int xd_cuda_dequantize(uint32_t type, const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
