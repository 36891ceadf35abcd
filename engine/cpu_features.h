/* cpu_features.h - what the x86-64 CPU (and the OS, for the wide register state) can run.
 *
 * Probed once by the CPU backend when it is created and kept in the backend object, so the
 * binary is built for baseline x86-64 and picks its kernels at run time. On other
 * architectures every flag is false.
 */
#ifndef XD_CPU_FEATURES_H
#define XD_CPU_FEATURES_H

#include <stdbool.h>

struct xd_cpu_features {
    bool avx2, fma, f16c;             /* with OS support for the YMM state */
    bool avx512f, avx512bw, avx512vl; /* with OS support for the ZMM and opmask state */
    bool avx512vnni, avx512bf16;
};

/* Fill *f from cpuid and xgetbv. Never fails. */
void xd_cpu_features_probe(struct xd_cpu_features *f);

/* The kernels the CPU can run, as the backends require them. */
static inline bool xd_cpu_has_avx2(const struct xd_cpu_features *f) {
    return f->avx2 && f->fma && f->f16c;
}
static inline bool xd_cpu_has_avx512(const struct xd_cpu_features *f) {
    return xd_cpu_has_avx2(f) && f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni;
}

#endif
