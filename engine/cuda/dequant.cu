/* dequant.cu - CUDA device discovery and dequantization kernels (one thread per element).
 *
 * The kernels decode the same ggml block layouts as engine/quant.c, element by element, so the
 * result is bit-identical to the CPU reference (same float operations: d * q). They are the
 * building block the quantized matmul kernels of the CUDA backend will fuse into their loads;
 * on their own they serve tests and F16/BF16 → F32 conversion for cuBLAS paths.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "quant.h"
#include "xd_error.h"
}
#include "xd_cuda.h"

namespace {

struct block_q8_0_dev {
    uint16_t d;
    int8_t qs[32];
};
static_assert(sizeof(block_q8_0_dev) == 34, "q8_0 block is 34 bytes");

struct block_q4_0_dev {
    uint16_t d;
    uint8_t qs[16];
};
static_assert(sizeof(block_q4_0_dev) == 18, "q4_0 block is 18 bytes");

__device__ float half_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__global__ void k_f32(const float *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = src[i];
}

__global__ void k_f16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = half_bits_to_float(src[i]);
}

__global__ void k_bf16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

/* element i of block i/32: d * qs[i%32] */
__global__ void k_q8_0(const block_q8_0_dev *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const block_q8_0_dev &b = src[i / 32];
    dst[i] = half_bits_to_float(b.d) * (float)b.qs[i % 32];
}

/* element j < 16 is the low nibble of qs[j], j >= 16 the high nibble of qs[j-16]; minus 8 */
__global__ void k_q4_0(const block_q4_0_dev *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const block_q4_0_dev &b = src[i / 32];
    int j = (int)(i % 32);
    int q = j < 16 ? (b.qs[j] & 0x0F) : (b.qs[j - 16] >> 4);
    dst[i] = (float)(q - 8) * half_bits_to_float(b.d);
}

}  // namespace

extern "C" int xd_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" int xd_cuda_device_describe(int dev, char *buf, size_t len) {
    cudaDeviceProp p;
    if (dev < 0 || dev >= xd_cuda_device_count()) return -ENODEV;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return XD_E_IO;
    snprintf(buf, len, "%s, %.1f GiB, sm_%d%d", p.name, (double)p.totalGlobalMem / (1u << 30),
             p.major, p.minor);
    return 0;
}

extern "C" int xd_cuda_dequantize(uint32_t type, const void *src, float *dst, int64_t n) {
    if (xd_cuda_device_count() == 0) return -ENODEV;
    /* block geometry of the types handled here (the traits table lives in the C library,
     * which links this one, so it is not called from here) */
    int64_t blck;
    size_t bytes;
    switch (type) {
    case XD_TYPE_F32: blck = 1, bytes = 4; break;
    case XD_TYPE_F16:
    case XD_TYPE_BF16: blck = 1, bytes = 2; break;
    case XD_TYPE_Q8_0: blck = 32, bytes = sizeof(block_q8_0_dev); break;
    case XD_TYPE_Q4_0: blck = 32, bytes = sizeof(block_q4_0_dev); break;
    default: return XD_E_UNSUPPORTED;
    }
    if (n < 0 || n % blck) return XD_E_UNSUPPORTED;
    size_t in_bytes = (size_t)(n / blck) * bytes;
    void *d_src = nullptr;
    float *d_dst = nullptr;
    int rc = XD_E_IO;
    const int threads = 256;
    const unsigned blocks = (unsigned)((n + threads - 1) / threads);
    if (cudaMalloc(&d_src, in_bytes ? in_bytes : 1) != cudaSuccess) goto out;
    if (cudaMalloc((void **)&d_dst, (size_t)(n ? n : 1) * sizeof(float)) != cudaSuccess) goto out;
    if (cudaMemcpy(d_src, src, in_bytes, cudaMemcpyHostToDevice) != cudaSuccess) goto out;
    if (n > 0) {
        switch (type) {
        case XD_TYPE_F32: k_f32<<<blocks, threads>>>((const float *)d_src, d_dst, n); break;
        case XD_TYPE_F16: k_f16<<<blocks, threads>>>((const uint16_t *)d_src, d_dst, n); break;
        case XD_TYPE_BF16: k_bf16<<<blocks, threads>>>((const uint16_t *)d_src, d_dst, n); break;
        case XD_TYPE_Q8_0:
            k_q8_0<<<blocks, threads>>>((const block_q8_0_dev *)d_src, d_dst, n);
            break;
        default: k_q4_0<<<blocks, threads>>>((const block_q4_0_dev *)d_src, d_dst, n); break;
        }
        if (cudaGetLastError() != cudaSuccess) goto out;
    }
    if (cudaMemcpy(dst, d_dst, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
        goto out;
    rc = 0;
out:
    cudaFree(d_src);
    cudaFree(d_dst);
    return rc;
}
