/* kernel_gemm.c - time one CPU kernel table's gemm on synthetic weights, one thread.
 *
 *   build/xd_kernel_gemm [TYPE [ROWS [COLS [MATRICES [REPS]]]]]
 *     TYPE q8_0 (default), q4_k or q6_k; ROWS x COLS weights (default 3584 x 1024, an expert of
 *     issue 6's bench model); MATRICES of them, walked in turn so that they stream from DRAM
 *     (default 48: 187 MB of Q8_0); best of REPS passes (default 5).
 *
 * Prints, for 1..8, 12, 16, 24, 32 and 48 tokens, the time of one pass over every matrix and its
 * GB/s, on the best table the CPU has (avx512, else avx2), from the row layout and (where the table
 * has panel kernels and ROWS is a multiple of the panel) from the same weights in the panel layout
 * (kernels.h), passes alternating. Kernel-level work only: no thread pool, no activation
 * conversion in the timing. Used for the kernel figures in docs/benchmarks.md; compare builds
 * side by side, alternating runs. XD_KERNEL_TABLE=avx2 times the AVX2 table on an AVX-512 CPU.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_features.h"
#include "kernels.h"
#include "model.h"
#include "quant_blocks.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const int q4 = argc > 1 && !strcmp(argv[1], "q4_k"), q6 = argc > 1 && !strcmp(argv[1], "q6_k");
    const int64_t rows = argc > 2 ? atoll(argv[2]) : 3584, cols = argc > 3 ? atoll(argv[3]) : 1024;
    const int nmat = argc > 4 ? atoi(argv[4]) : 48, reps = argc > 5 ? atoi(argv[5]) : 5;
    const uint32_t type = q4 ? XD_TYPE_Q4_K : q6 ? XD_TYPE_Q6_K : XD_TYPE_Q8_0;
    const int64_t blk = q4 || q6 ? 256 : 32;
    const size_t bb = q4   ? sizeof(struct xd_block_q4_K)
                      : q6 ? sizeof(struct xd_block_q6_K)
                           : sizeof(struct xd_block_q8_0);
    if (rows <= 0 || cols <= 0 || cols % blk || nmat <= 0 || reps <= 0) {
        fprintf(stderr, "usage: xd_kernel_gemm [q8_0|q4_k|q6_k] [ROWS] [COLS (a multiple of %lld)] "
                        "[MATRICES] [REPS]\n", (long long)blk);
        return 2;
    }
    struct xd_cpu_features f;
    xd_cpu_features_probe(&f);
    const char *tab = getenv("XD_KERNEL_TABLE"); /* "avx2": that table on an AVX-512 CPU */
    const bool avx2 = tab && !strcmp(tab, "avx2") && xd_cpu_has_avx2(&f);
    const struct xd_kernels *K = avx2                      ? xd__kernels_avx2()
                                 : xd_cpu_has_avx512(&f) ? xd__kernels_avx512(f.avx512bf16)
                                 : xd_cpu_has_avx2(&f)   ? xd__kernels_avx2()
                                                         : xd__kernels_ref();
    const size_t rb = (size_t)(cols / blk) * bb, mat = rb * (size_t)rows;
    uint8_t *w = aligned_alloc(64, (mat * (size_t)nmat + 63) / 64 * 64);
    enum { TMAX = 48 };
    float *x = malloc(sizeof(float) * (size_t)(TMAX * cols));
    const size_t xs = xd__act_row_size(K->type[type].act, cols);
    uint8_t *xa = malloc(xs * TMAX);
    float *y = malloc(sizeof(float) * (size_t)(rows * TMAX));
    void *scratch = aligned_alloc(64, (XD_KERN_SCRATCH(TMAX) + 63) / 64 * 64);
    if (!w || !x || !xa || !y || !scratch) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    uint64_t s = 88172645463325252ull; /* xorshift: random codes, fp16 scales of 2^-4 */
    for (size_t i = 0; i < mat * (size_t)nmat; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = (uint8_t)s;
    }
    for (size_t b = 0; b < mat * (size_t)nmat / bb; b++) {
        const uint16_t h = 0x2c00;
        memcpy(w + b * bb + (q6 ? 208 : 0), &h, 2);
        if (q4) memcpy(w + b * bb + 2, &h, 2);
    }
    /* the same weights in the panel layout (kernels.h), when the table has panel kernels */
    const struct xd_kern_type *kt = &K->type[type];
    uint8_t *wp = NULL;
    if (kt->gemm_panel && rows % kt->panel == 0 &&
        (wp = aligned_alloc(64, (mat * (size_t)nmat + 63) / 64 * 64)))
        xd__panel_repack(wp, w, rows * nmat, rb, bb, (size_t)kt->panel_head, kt->panel);
    for (int64_t i = 0; i < TMAX * cols; i++) x[i] = (float)((i * 7919) % 1000 - 500) / 500.0f;
    for (int t = 0; t < TMAX; t++) K->convert[K->type[type].act](x + t * cols, xa + t * xs, cols);
    printf("%s %s, %lld x %lld x %d matrices (%.1f MB), best of %d, 1 thread\n", K->name,
           q4 ? "Q4_K" : q6 ? "Q6_K" : "Q8_0", (long long)rows, (long long)cols, nmat,
           (double)(mat * (size_t)nmat) / 1e6, reps);
    const int toks[] = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48};
    for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
        double best[2] = {1e30, 1e30}; /* row layout, panel layout: passes alternate */
        for (int r = 0; r < reps; r++)
            for (int l = 0; l < (wp ? 2 : 1); l++) {
                const double t0 = now_s();
                for (int m = 0; m < nmat; m++) {
                    struct xd_tensor wt = {.name = "w", .type = type, .ne = {cols, rows, 1, 1},
                                           .nb = {bb, rb, mat, mat},
                                           .data = (l ? wp : w) + (size_t)m * mat};
                    (l ? kt->gemm_panel : kt->gemm)(&wt, 0, rows, xa, xs, toks[k], y, rows,
                                                    scratch);
                }
                const double dt = now_s() - t0;
                best[l] = dt < best[l] ? dt : best[l];
            }
        printf("tokens %2d: rows %7.2f ms %5.1f GB/s", toks[k], best[0] * 1e3,
               (double)(mat * (size_t)nmat) / best[0] / 1e9);
        if (wp)
            printf("   panels %7.2f ms %5.1f GB/s", best[1] * 1e3,
                   (double)(mat * (size_t)nmat) / best[1] / 1e9);
        printf("\n");
    }
    free(w), free(wp), free(x), free(xa), free(y), free(scratch);
    return 0;
}
