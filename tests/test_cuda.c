/* test_cuda.c - the CUDA backend against the CPU reference. Skips with a message where the
 * build has no CUDA or the machine no GPU (CI), so it runs for real only on a GPU machine. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#ifdef XD_HAVE_CUDA
#include "xd_cuda.h"
#endif

static void skip_without_gpu(void) {
#ifndef XD_HAVE_CUDA
    cr_skip("built without CUDA (-DEXPERTD_CUDA=OFF or no nvcc)");
#else
    if (xd_cuda_device_count() == 0) cr_skip("no CUDA device on this machine");
#endif
}

/* Quantize deterministic values with the CPU code, dequantize on CPU and GPU, compare bits. */
static void check_type(uint32_t type) {
    skip_without_gpu();
#ifdef XD_HAVE_CUDA
    const int64_t n = 32 * 1024;
    const struct xd_type_traits *tt = xd_type_traits(type);
    float *src = malloc(n * sizeof(float)), *cpu = malloc(n * sizeof(float)),
          *gpu = malloc(n * sizeof(float));
    void *q = malloc(xd_row_size(type, n));
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        src[i] = ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * 4.0f;
    }
    tt->from_float(src, q, n);
    tt->to_float(q, cpu, n);
    cr_assert_eq(xd_cuda_dequantize(type, q, gpu, n), 0);
    cr_assert_eq(memcmp(cpu, gpu, n * sizeof(float)), 0, "%s: GPU differs from CPU", tt->name);
    free(src);
    free(cpu);
    free(gpu);
    free(q);
#else
    (void)type;
#endif
}

Test(cuda, device_describe) {
    skip_without_gpu();
#ifdef XD_HAVE_CUDA
    char buf[256] = "";
    cr_assert_eq(xd_cuda_device_describe(0, buf, sizeof buf), 0);
    cr_assert(strlen(buf) > 0);
    cr_log_info("GPU 0: %s", buf);
#endif
}
Test(cuda, dequant_f32) { check_type(XD_TYPE_F32); }
Test(cuda, dequant_f16) { check_type(XD_TYPE_F16); }
Test(cuda, dequant_bf16) { check_type(XD_TYPE_BF16); }
Test(cuda, dequant_q8_0) { check_type(XD_TYPE_Q8_0); }
Test(cuda, dequant_q4_0) { check_type(XD_TYPE_Q4_0); }
