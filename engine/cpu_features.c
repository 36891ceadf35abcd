/* cpu_features.c - cpuid and xgetbv, read once per backend.
 *
 * The instruction-set bits alone are not enough: the OS must also save the YMM (and for
 * AVX-512 the opmask and ZMM) register state across context switches, which XCR0 says. The
 * result is returned to the caller, which keeps it (the backend object); nothing is cached in a
 * static, so tests can probe freely. Not done: AMX, AVX-VNNI (256-bit), AVX512-FP16 — no kernel
 * uses them yet.
 */
#include "cpu_features.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (unsigned long long)hi << 32 | lo;
}

void xd_cpu_features_probe(struct xd_cpu_features *f) {
    memset(f, 0, sizeof *f);
    unsigned int a, b, c, d, max = __get_cpuid_max(0, NULL);
    if (max < 1 || !__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool osxsave = c >> 27 & 1, avx = c >> 28 & 1;
    const bool fma = c >> 12 & 1, f16c = c >> 29 & 1;
    if (!osxsave || !avx) return;
    const unsigned long long xcr0 = xgetbv0();
    const bool ymm_os = (xcr0 & 0x6) == 0x6;   /* SSE and AVX state */
    const bool zmm_os = (xcr0 & 0xe6) == 0xe6; /* plus opmask, ZMM_Hi256, Hi16_ZMM */
    if (!ymm_os || max < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = b >> 5 & 1;
    f->fma = fma;
    f->f16c = f16c;
    if (zmm_os) {
        f->avx512f = b >> 16 & 1;
        f->avx512bw = b >> 30 & 1;
        f->avx512vl = b >> 31 & 1;
        f->avx512vnni = c >> 11 & 1;
        unsigned int a1 = 0, b1, c1, d1;
        if (a >= 1) __cpuid_count(7, 1, a1, b1, c1, d1); /* a: highest subleaf of leaf 7 */
        f->avx512bf16 = a1 >> 5 & 1;
    }
}

#else

void xd_cpu_features_probe(struct xd_cpu_features *f) { memset(f, 0, sizeof *f); }

#endif
