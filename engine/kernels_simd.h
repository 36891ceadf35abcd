/* kernels_simd.h - internal: the quantized matmul kernels, written once for both vector widths.
 *
 * Included by kernels_avx2.c (XK_NL = 8 rows per panel, ymm) and kernels_avx512.c (XK_NL = 16,
 * zmm) after each defines the vector types and the xk_* primitives for its instruction set; the
 * code here is the same for both, so a fix lands in both.
 *
 * Layout: one vector lane per weight row. The codes of a panel of XK_NL rows are transposed so
 * that one vector holds 4 consecutive codes of every row (group g of a block), unpacked to one
 * byte per code, next to the rows' scales as int32 or float vectors. Each group then takes one
 * u8 x s8 dot-product step against 4 activation codes of one token broadcast to every lane
 * (vpdpbusd, or maddubs+madd on AVX2), so each lane accumulates the exact integer block sum of
 * its row, and the block's float step (kernels.h) is one fma per lane: no horizontal sums.
 *   - Up to XK_DIRECT_T tokens (decode) the transposed codes go straight into the dot products
 *     (direct_*): the weights stream through registers once and nothing is stored.
 *   - Q8_0 up to XK_WIDE_T tokens (batched decode, the LM head of a 16-sequence step): the
 *     block's codes are decoded into registers once and every token takes them, XK_TMAX_Q8 at a
 *     time, its accumulator in L1 (wide_q8_0). Unlike pack + micro, the weights keep streaming
 *     while the tokens are computed: 12-16 tokens 10-20% faster from DRAM on one Zen 4 core. The
 *     k-quants' direct kernels need more registers per block, so they go straight to packing.
 *   - More tokens (prefill, experts with many tokens): a panel is packed into scratch once per
 *     slice of XD_KERN_PANEL_BYTES (pack_*) and reused by every token, XK_TMAX_* at a time in
 *     registers (micro_*); accumulators wait in scratch between slices.
 * All three give the same bits, so the switch between them can depend on the token count.
 * Memory: the XK_NL rows of a panel are XK_NL streams a row apart, which the hardware
 * prefetchers follow badly (a core got half the bandwidth of one sequential stream here), so
 * the kernels prefetch the next panel of their range in address order, one sequential stream.
 *
 * Rejected alternative: dot each row with the activations and reduce the lanes of each block
 * (llama.cpp's layout). For one token it costs about as many shuffles as the transpose here (the
 * horizontal sums replace it), but it cannot reuse a row's decoding across tokens, and prefill
 * is where that matters.
 * Panel layout (kernels.h, xd__panel_repack): the k-quant kernels also run on a copy whose
 * bytes are already where the transposes would put them (the pl variants: xk_tr8/xk_tr4 become
 * loads, one sequential stream per panel). The backend makes that copy at load for the weights
 * it reads from the mapping (xd_backend_repack); an offloaded expert cache's slots keep the row
 * layout and these kernels. Measured with one thread on Zen 4: Q4_K direct from 15 to 25 GB/s,
 * Q6_K from 12 to 17. Q8_0 (its d moved behind the codes: panel_head 2) gains less, because its
 * row kernel already reads near the bandwidth of a core: decode +4-11% with 2 threads, no
 * gather of the scales, prefill unchanged within noise (docs/benchmarks.md).
 */

#define XK_ALWAYS inline __attribute__((always_inline))
#define XK_DIRECT_T 4 /* tokens up to which the codes are used straight from registers */
#ifndef XK_WIDE_T
#define XK_WIDE_T 32 /* tokens up to which Q8_0 decodes a block once for all tokens (wide_q8_0) */
#endif
#ifndef XK_DIRECT_T_Q8
#define XK_DIRECT_T_Q8 XK_DIRECT_T /* the same for Q8_0 (8 where there are 32 vector registers) */
#endif

/* The rows of a panel; rows past the end of the range repeat the last one. pf: where the next
 * panel's bytes start (NULL: none), pf_step of them to prefetch per block packed. */
struct xk_rows {
    const uint8_t *r[XK_NL];
    vi roff; /* lane i: r[i] - r[0], as int32 (for gathers) */
    const uint8_t *pf;
    size_t pf_step;
};

/* The next panel, in address order while this one is packed: one sequential stream for the
 * memory system instead of XK_NL rows a row apart (which halve the bandwidth a core gets). */
#ifndef XK_PF_LOC
#define XK_PF_LOC 2 /* prefetcht1: into L2 */
#endif
#ifndef XK_PF_PANELS
#define XK_PF_PANELS 1 /* 2, and prefetching past the range: Q4_K_M decode 5-15% slower (Zen 4) */
#endif
static inline void xk_prefetch_next(const struct xk_rows *rp, int64_t b) {
    if (!rp->pf) return;
    for (size_t o = 0; o < rp->pf_step; o += 64)
        __builtin_prefetch(rp->pf + (size_t)b * rp->pf_step + o, 0, XK_PF_LOC);
}

/* The rows of a panel in the panel layout (kernels.h: xd__panel_repack) when pl: the chunk of
 * the block at byte off of the rows starts at r[0] + off * XK_NL, and what xk_transpose8/4
 * build from bytes o.. of the rows lies at chunk + o * XK_NL, so they become plain loads. Every
 * kernel below takes pl as a compile-time constant. */
XK_TARGET static XK_ALWAYS void xk_panel_load(const struct xk_rows *rp, size_t off, vi *out,
                                              const int n) {
#pragma GCC unroll 8
    for (int i = 0; i < n; i++) out[i] = xk_loadu(rp->r[0] + off * XK_NL + (size_t)i * sizeof(vi));
}

XK_TARGET static XK_ALWAYS void xk_tr8(const struct xk_rows *rp, size_t off, vi out[8],
                                       const bool pl) {
    if (pl) xk_panel_load(rp, off, out, 8);
    else xk_transpose8(rp, off, out);
}

XK_TARGET static XK_ALWAYS void xk_tr4(const struct xk_rows *rp, size_t off, vi out[4],
                                       const bool pl) {
    if (pl) xk_panel_load(rp, off, out, 4);
    else xk_transpose4(rp, off, out);
}

/* A switch from the token count tn to the kernel for exactly that many (the direct, wide and
 * micro kernels; call(T) expands to the call with T constant). */
#define XK_DIRECT_SWITCH(call)                                                                     \
    switch (tn) {                                                                                  \
    case 1: call(1); break;                                                                        \
    case 2: call(2); break;                                                                        \
    case 3: call(3); break;                                                                        \
    default: call(XK_DIRECT_T); break;                                                             \
    }

#if XK_DIRECT_T_Q8 >= 8
#define XK_Q8_SWITCH(call)                                                                         \
    switch (tn) {                                                                                  \
    case 1: call(1); break;                                                                        \
    case 2: call(2); break;                                                                        \
    case 3: call(3); break;                                                                        \
    case 4: call(4); break;                                                                        \
    case 5: call(5); break;                                                                        \
    case 6: call(6); break;                                                                        \
    case 7: call(7); break;                                                                        \
    default: call(XK_DIRECT_T_Q8); break;                                                          \
    }
#else
#if XK_DIRECT_T_Q8 != XK_DIRECT_T
#error "XK_DIRECT_T_Q8 is XK_DIRECT_T or at least 8"
#endif
#define XK_Q8_SWITCH(call) XK_DIRECT_SWITCH(call)
#endif
#if XK_TMAX_Q8 != XK_DIRECT_T_Q8 || XK_TMAX_K != XK_DIRECT_T
#error "the micro kernels' widths are the direct kernels' (one switch serves both)"
#endif
/* ---- Q8_0 ----------------------------------------------------------------------------------- */

#define XK_Q8_PK ((size_t)8 * sizeof(vi) + sizeof(vf)) /* packed bytes per block */

/* The codes of the Q8_0 block at off (bytes 2..33 of each row; in the panel layout, whose head
 * is the 2 bytes of d, the chunk's first 8 vectors), prepared for xk_q8_dot, and the rows' d. */
XK_TARGET static XK_ALWAYS void q8_block(const struct xk_rows *rp, size_t off, vi g[8], vf *d,
                                         const bool pl) {
    xk_tr8(rp, pl ? off : off + 2, g, pl);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) g[i] = xk_q8_prep(g[i]);
    *d = pl ? xk_f16_load(rp->r[0] + (off + 32) * XK_NL)
            : xk_f16_lo(xk_gather_rows(rp, off)); /* d, qs[0..1] */
}

XK_TARGET static XK_ALWAYS void pack_q8_0_T(const struct xk_rows *rp, int64_t b0, int64_t nb,
                                            uint8_t *pk, const bool pl) {
    for (int64_t b = 0; b < nb; b++, pk += XK_Q8_PK) {
        const size_t off = (size_t)(b0 + b) * sizeof(struct xd_block_q8_0);
        xk_prefetch_next(rp, b);
        vi g[8];
        vf d;
        q8_block(rp, off, g, &d, pl);
#pragma GCC unroll 16
        for (int i = 0; i < 8; i++) xk_store((vi *)pk + i, g[i]);
        xk_storef(pk + 8 * sizeof(vi), d);
    }
}

XK_TARGET static void pack_q8_0(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_q8_0_T(rp, b0, nb, pk, false);
}

XK_TARGET static void pack_q8_0_pl(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_q8_0_T(rp, b0, nb, pk, true);
}

XK_TARGET static XK_ALWAYS void micro_q8_0_T(const uint8_t *pk, int64_t nb, const uint8_t *xa,
                                             size_t xs, float *acc, bool first, const int T) {
    vf a[XK_TMAX_Q8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) a[t] = first ? xk_zerof() : xk_loadf(acc + t * XK_NL);
    for (int64_t b = 0; b < nb; b++, pk += XK_Q8_PK) {
        const struct xd_qa32 *x[XK_TMAX_Q8];
        vi is[XK_TMAX_Q8];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            x[t] = (const struct xd_qa32 *)(xa + (size_t)t * xs) + b;
            is[t] = xk_q8_init(x[t]->sum);
        }
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const vi w = xk_load((const vi *)pk + g);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) is[t] = xk_q8_dot(is[t], w, xk_bcast32(x[t]->q + 4 * g));
        }
        const vf dw = xk_loadf(pk + 8 * sizeof(vi));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            a[t] = xk_fmadd(xk_mul(dw, xk_set1f(x[t]->d)), xk_cvt(is[t]), a[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) xk_storef(acc + t * XK_NL, a[t]);
}

#define XK_MQ8(T) micro_q8_0_T(pk, nb, xa, xs, acc, first, T)
XK_TARGET static void micro_q8_0(const uint8_t *pk, int64_t nb, const uint8_t *xa, size_t xs,
                                 float *acc, int tn, bool first) {
    XK_Q8_SWITCH(XK_MQ8)
}

/* The exact integer sums of block b for T tokens (their activation rows xs apart), from the
 * block's 8 prepared code vectors w; x[t] is left pointing at token t's activation block. */
XK_TARGET static XK_ALWAYS void q8_isums(const vi w[8], int64_t b, const uint8_t *xa, size_t xs,
                                         const struct xd_qa32 **x, vi *is, const int T) {
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        x[t] = (const struct xd_qa32 *)(xa + (size_t)t * xs) + b;
        is[t] = xk_q8_init(x[t]->sum);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) is[t] = xk_q8_dot(is[t], w[i], xk_bcast32(x[t]->q + 4 * i));
}

/* Few tokens: the transposed codes go straight into the dot products, never through memory. */
XK_TARGET static XK_ALWAYS void direct_q8_0_T(const struct xk_rows *rp, int64_t nbk,
                                              const bool pl, const uint8_t *xa, size_t xs,
                                              float *acc, const int T) {
    vf a[XK_DIRECT_T_Q8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) a[t] = xk_zerof();
    for (int64_t b = 0; b < nbk; b++) {
        const size_t off = (size_t)b * sizeof(struct xd_block_q8_0);
        xk_prefetch_next(rp, b);
        vi g[8];
        vf dw;
        q8_block(rp, off, g, &dw, pl);
        const struct xd_qa32 *x[XK_DIRECT_T_Q8];
        vi is[XK_DIRECT_T_Q8];
        q8_isums(g, b, xa, xs, x, is, T);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            a[t] = xk_fmadd(xk_mul(dw, xk_set1f(x[t]->d)), xk_cvt(is[t]), a[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) xk_storef(acc + t * XK_NL, a[t]);
}

/* A few more tokens than the registers hold (batched decode: 9..XK_WIDE_T): the block's codes
 * are decoded into registers once and every token takes them in groups of XK_TMAX_Q8, its
 * accumulator waiting in acc (L1) between blocks. The same float steps in the same order as
 * direct and micro (zero, then one fma per block), so the same bits; unlike pack + micro, the
 * weights keep streaming (one prefetch step per block) while the tokens are computed. */
XK_TARGET static XK_ALWAYS void wide_q8_0_group(const vi w[8], vf dw, int64_t b, const uint8_t *xa,
                                                size_t xs, float *acc, const int T) {
    const struct xd_qa32 *x[XK_TMAX_Q8];
    vi is[XK_TMAX_Q8];
    q8_isums(w, b, xa, xs, x, is, T);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const vf a = b ? xk_loadf(acc + t * XK_NL) : xk_zerof();
        xk_storef(acc + t * XK_NL, xk_fmadd(xk_mul(dw, xk_set1f(x[t]->d)), xk_cvt(is[t]), a));
    }
}

XK_TARGET static XK_ALWAYS void wide_q8_0_T(const struct xk_rows *rp, int64_t nbk, const bool pl,
                                            const uint8_t *xa, size_t xs, float *acc, int n_tok) {
    for (int64_t b = 0; b < nbk; b++) {
        const size_t off = (size_t)b * sizeof(struct xd_block_q8_0);
        xk_prefetch_next(rp, b);
        vi w[8];
        vf dw;
        q8_block(rp, off, w, &dw, pl);
        for (int t0 = 0; t0 < n_tok; t0 += XK_TMAX_Q8) {
            const int tn = n_tok - t0 < XK_TMAX_Q8 ? n_tok - t0 : XK_TMAX_Q8;
            const uint8_t *xt = xa + (size_t)t0 * xs;
            float *at = acc + t0 * XK_NL;
#define XK_WQ8(T) wide_q8_0_group(w, dw, b, xt, xs, at, T)
            XK_Q8_SWITCH(XK_WQ8)
        }
    }
}

XK_TARGET static void wide_q8_0(const struct xk_rows *rp, int64_t nbk, const uint8_t *xa, size_t xs,
                                float *acc, int tn) {
    wide_q8_0_T(rp, nbk, false, xa, xs, acc, tn);
}
XK_TARGET static void wide_q8_0_pl(const struct xk_rows *rp, int64_t nbk, const uint8_t *xa,
                                   size_t xs, float *acc, int tn) {
    wide_q8_0_T(rp, nbk, true, xa, xs, acc, tn);
}

/* ---- Q4_K and Q5_K: codes 0..31, 8 sub-blocks of 32 with 6-bit scales and mins ----------------
 */

/* packed superblock: codes [64 groups], scales [8] (int32), mins as int16 pairs [4], d, dmin */
#define XK_K4_PK ((size_t)(64 + 8 + 4) * sizeof(vi) + 2 * sizeof(vf))

/* The header of 16 bytes (d, dmin, 12 scale bytes) of every row -> the 8 scales (int32), the 8
 * mins as int16 pairs (m[2i] | m[2i+1] << 16), d and dmin. */
XK_TARGET static XK_ALWAYS void k4_header(const struct xk_rows *rp, size_t off, vi sc[8], vi mp[4],
                                          vf *d, vf *dmin, const bool pl) {
    vi h[4];
    xk_tr4(rp, off, h, pl); /* h[0] = d | dmin << 16, h[1..3] = scale bytes 0..11 */
    /* the 6-bit values four to a dword, byte j of each: scales 0..3, mins 0..3, scales 4..7
     * (low nibble of bytes 8..11, top bits of bytes 0..3), mins 4..7 (high nibbles, bytes 4..7) */
    const vi b6 = xk_set1(0x3f3f3f3f), b4 = xk_set1(0x0f0f0f0f), b30 = xk_set1(0x30303030);
    const vi s_lo = xk_and(h[1], b6), m_lo = xk_and(h[2], b6);
    const vi s_hi = xk_or(xk_and(h[3], b4), xk_and(xk_srli32(h[1], 2), b30));
    const vi m_hi = xk_or(xk_and(xk_srli32(h[3], 4), b4), xk_and(xk_srli32(h[2], 2), b30));
    /* byte shuffles (within 128 bits): byte j of each dword to an int32, or bytes 2i, 2i+1 to
     * the two int16 halves of a dword */
    static const int8_t sel[4][16] = {
        {0, -1, -1, -1, 4, -1, -1, -1, 8, -1, -1, -1, 12, -1, -1, -1},
        {1, -1, -1, -1, 5, -1, -1, -1, 9, -1, -1, -1, 13, -1, -1, -1},
        {2, -1, -1, -1, 6, -1, -1, -1, 10, -1, -1, -1, 14, -1, -1, -1},
        {3, -1, -1, -1, 7, -1, -1, -1, 11, -1, -1, -1, 15, -1, -1, -1}};
    static const int8_t pair[2][16] = {
        {0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1},
        {2, -1, 3, -1, 6, -1, 7, -1, 10, -1, 11, -1, 14, -1, 15, -1}};
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const vi c = xk_bcast128(sel[j]);
        sc[j] = xk_shuffle8(s_lo, c);
        sc[4 + j] = xk_shuffle8(s_hi, c);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        const vi c = xk_bcast128(pair[i]);
        mp[i] = xk_shuffle8(m_lo, c);
        mp[2 + i] = xk_shuffle8(m_hi, c);
    }
    *d = xk_f16_lo(h[0]);
    *dmin = xk_f16_lo(xk_srli32(h[0], 16));
}

/* The codes of sub-blocks 2c (lo) and 2c+1 (hi), 8 groups of 4 each, from the 32 qs bytes at
 * qs_off + 32c; for Q5_K (qh not NULL) bit s of qh[l] becomes bit 4 (shifts never cross a byte). */
XK_TARGET static XK_ALWAYS void k4_codes(const struct xk_rows *rp, size_t qs_off, int c,
                                         const vi *qh, vi lo[8], vi hi[8], const bool pl) {
    const vi m4 = xk_set1_8(0x0f), b4 = xk_set1_8(0x10);
    vi g[8];
    xk_tr8(rp, qs_off + 32 * (size_t)c, g, pl);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        lo[i] = xk_and(g[i], m4);
        hi[i] = xk_and(xk_srli16(g[i], 4), m4);
        if (qh) {
            const int s0 = 2 * c, s1 = 2 * c + 1;
            const vi h0 = s0 < 4 ? xk_slli16(qh[i], 4 - s0) : xk_srli16(qh[i], s0 - 4);
            const vi h1 = s1 < 4 ? xk_slli16(qh[i], 4 - s1) : xk_srli16(qh[i], s1 - 4);
            lo[i] = xk_or(lo[i], xk_and(h0, b4));
            hi[i] = xk_or(hi[i], xk_and(h1, b4));
        }
    }
}

XK_TARGET static XK_ALWAYS void pack_k4(const struct xk_rows *rp, int64_t b0, int64_t nb,
                                        uint8_t *pk, bool q5, const bool pl) {
    const size_t bs = q5 ? sizeof(struct xd_block_q5_K) : sizeof(struct xd_block_q4_K);
    for (int64_t b = 0; b < nb; b++, pk += XK_K4_PK) {
        const size_t off = (size_t)(b0 + b) * bs;
        xk_prefetch_next(rp, b);
        vi *W = (vi *)pk, *SC = W + 64, *MP = SC + 8;
        vi sc[8], mp[4], qh[8];
        vf d, dmin;
        k4_header(rp, off, sc, mp, &d, &dmin, pl);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) xk_store(SC + i, sc[i]);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) xk_store(MP + i, mp[i]);
        xk_storef(pk + 76 * sizeof(vi), d);
        xk_storef(pk + 76 * sizeof(vi) + sizeof(vf), dmin);
        if (q5) xk_tr8(rp, off + 16, qh, pl);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            vi lo[8], hi[8];
            k4_codes(rp, off + (q5 ? 48 : 16), c, q5 ? qh : NULL, lo, hi, pl);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                xk_store(W + 8 * (2 * c) + i, lo[i]);
                xk_store(W + 8 * (2 * c + 1) + i, hi[i]);
            }
        }
    }
}

XK_TARGET static void pack_q4_K(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_k4(rp, b0, nb, pk, false, false);
}

XK_TARGET static void pack_q5_K(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_k4(rp, b0, nb, pk, true, false);
}

XK_TARGET static void pack_q4_K_pl(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_k4(rp, b0, nb, pk, false, true);
}

XK_TARGET static void pack_q5_K_pl(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_k4(rp, b0, nb, pk, true, true);
}

/* Few tokens: header, codes and dot products in registers, block by block. */
XK_TARGET static XK_ALWAYS void direct_k4_T(const struct xk_rows *rp, int64_t nbk, bool q5,
                                            const bool pl, const uint8_t *xa, size_t xs,
                                            float *acc, const int T) {
    const size_t bs = q5 ? sizeof(struct xd_block_q5_K) : sizeof(struct xd_block_q4_K);
    vf a[XK_DIRECT_T];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) a[t] = xk_zerof();
    for (int64_t b = 0; b < nbk; b++) {
        const size_t off = (size_t)b * bs;
        xk_prefetch_next(rp, b);
        vi sc[8], mp[4], qh[8];
        vf d, dmin;
        k4_header(rp, off, sc, mp, &d, &dmin, pl);
        if (q5) xk_tr8(rp, off + 16, qh, pl);
        const struct xd_qa256 *x[XK_DIRECT_T];
        vi i1[XK_DIRECT_T], i2[XK_DIRECT_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            x[t] = (const struct xd_qa256 *)(xa + (size_t)t * xs) + b;
            i1[t] = xk_zero();
            i2[t] = xk_zero();
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            vi lo[8], hi[8], is0[XK_DIRECT_T], is1[XK_DIRECT_T];
            k4_codes(rp, off + (q5 ? 48 : 16), c, q5 ? qh : NULL, lo, hi, pl);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) is0[t] = is1[t] = xk_zero();
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    is0[t] = xk_dot_u8(is0[t], lo[i], xk_bcast32(x[t]->q + 64 * c + 4 * i));
                    is1[t] = xk_dot_u8(is1[t], hi[i], xk_bcast32(x[t]->q + 64 * c + 32 + 4 * i));
                }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                i1[t] = xk_add32(i1[t], xk_add32(xk_mullo32(is0[t], sc[2 * c]),
                                                 xk_mullo32(is1[t], sc[2 * c + 1])));
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                i2[t] = xk_dot_s16(i2[t], mp[i], xk_bcast32(x[t]->bsum32 + 2 * i));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const vf dx = xk_set1f(x[t]->d);
            a[t] = xk_fmadd(xk_mul(d, dx), xk_cvt(i1[t]), a[t]);
            a[t] = xk_fnmadd(xk_mul(dmin, dx), xk_cvt(i2[t]), a[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) xk_storef(acc + t * XK_NL, a[t]);
}

XK_TARGET static XK_ALWAYS void micro_k4_T(const uint8_t *pk, int64_t nb, const uint8_t *xa,
                                           size_t xs, float *acc, bool first, const int T) {
    vf a[XK_TMAX_K];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) a[t] = first ? xk_zerof() : xk_loadf(acc + t * XK_NL);
    for (int64_t b = 0; b < nb; b++, pk += XK_K4_PK) {
        const vi *W = (const vi *)pk, *SC = W + 64, *MP = SC + 8;
        const struct xd_qa256 *x[XK_TMAX_K];
        vi i1[XK_TMAX_K], i2[XK_TMAX_K];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            x[t] = (const struct xd_qa256 *)(xa + (size_t)t * xs) + b;
            i1[t] = xk_zero();
            i2[t] = xk_zero();
        }
#pragma GCC unroll 16
        for (int s = 0; s < 8; s++) {
            vi is[XK_TMAX_K];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) is[t] = xk_zero();
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                const vi w = xk_load(W + 8 * s + g);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++)
                    is[t] = xk_dot_u8(is[t], w, xk_bcast32(x[t]->q + 32 * s + 4 * g));
            }
            const vi sc = xk_load(SC + s);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) i1[t] = xk_add32(i1[t], xk_mullo32(is[t], sc));
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const vi mp = xk_load(MP + i);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                i2[t] = xk_dot_s16(i2[t], mp, xk_bcast32(x[t]->bsum32 + 2 * i));
        }
        const vf d = xk_loadf(pk + 76 * sizeof(vi)),
                 dmin = xk_loadf(pk + 76 * sizeof(vi) + sizeof(vf));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const vf dx = xk_set1f(x[t]->d);
            a[t] = xk_fmadd(xk_mul(d, dx), xk_cvt(i1[t]), a[t]);
            a[t] = xk_fnmadd(xk_mul(dmin, dx), xk_cvt(i2[t]), a[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) xk_storef(acc + t * XK_NL, a[t]);
}

#define XK_MK4(T) micro_k4_T(pk, nb, xa, xs, acc, first, T)
XK_TARGET static void micro_k4(const uint8_t *pk, int64_t nb, const uint8_t *xa, size_t xs,
                               float *acc, int tn, bool first) {
    XK_DIRECT_SWITCH(XK_MK4)
}

/* ---- Q6_K: codes 0..63 (stored +32), 16 sub-blocks of 16 with int8 scales -------------------- */

#define XK_Q6_PK ((size_t)(64 + 16) * sizeof(vi) + sizeof(vf))

/* The codes (0..63) of half h of a Q6_K block for one k (0..3): group i of 4 holds elements
 * 128h + 32k + 4i..+3, from nibble k/2 of ql(k%2) and bits 2k of qh, moved to bits 4..5. */
XK_TARGET static XK_ALWAYS vi q6_code(const vi ql0[8], const vi ql1[8], const vi qh[8], int k,
                                      int i) {
    const vi m4 = xk_set1_8(0x0f), m30 = xk_set1_8(0x30);
    const vi ql = k % 2 ? ql1[i] : ql0[i];
    const vi n = k < 2 ? xk_and(ql, m4) : xk_and(xk_srli16(ql, 4), m4);
    const vi h = k == 0   ? xk_slli16(qh[i], 4)
                 : k == 1 ? xk_slli16(qh[i], 2)
                 : k == 2 ? qh[i]
                          : xk_srli16(qh[i], 2);
    return xk_or(n, xk_and(h, m30));
}

/* The int8 scale s of every row, from the transposed scale dwords. */
XK_TARGET static XK_ALWAYS vi q6_scale(const vi s4[4], int s) {
    return xk_srai32(xk_slli32(s4[s / 4], 24 - 8 * (s % 4)), 24);
}

/* The fp16 d of every row: the last two bytes of the block (the tail of the panel layout). */
XK_TARGET static XK_ALWAYS vf q6_d(const struct xk_rows *rp, size_t off, const bool pl) {
    if (pl) return xk_f16_load(rp->r[0] + (off + 208) * XK_NL);
    /* gather the dword ending there, keep its high half */
    return xk_f16_lo(xk_srli32(xk_gather_rows(rp, off + 206), 16));
}

XK_TARGET static XK_ALWAYS void pack_q6_K_T(const struct xk_rows *rp, int64_t b0, int64_t nb,
                                            uint8_t *pk, const bool pl) {
    for (int64_t b = 0; b < nb; b++, pk += XK_Q6_PK) {
        const size_t off = (size_t)(b0 + b) * sizeof(struct xd_block_q6_K);
        xk_prefetch_next(rp, b);
        vi *W = (vi *)pk, *SC = W + 64;
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {
            vi ql0[8], ql1[8], qh[8];
            xk_tr8(rp, off + 64 * (size_t)half, ql0, pl);
            xk_tr8(rp, off + 64 * (size_t)half + 32, ql1, pl);
            xk_tr8(rp, off + 128 + 32 * (size_t)half, qh, pl);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    xk_store(W + 32 * half + 8 * k + i, q6_code(ql0, ql1, qh, k, i));
        }
        vi s4[4];
        xk_tr4(rp, off + 192, s4, pl); /* the 16 int8 scales, 4 per dword */
#pragma GCC unroll 16
        for (int s = 0; s < 16; s++) xk_store(SC + s, q6_scale(s4, s));
        xk_storef(pk + 80 * sizeof(vi), q6_d(rp, off, pl));
    }
}

XK_TARGET static void pack_q6_K(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_q6_K_T(rp, b0, nb, pk, false);
}

XK_TARGET static void pack_q6_K_pl(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk) {
    pack_q6_K_T(rp, b0, nb, pk, true);
}

/* Few tokens: codes and dot products in registers; sub-block s = 8 half + 2k + sb covers groups
 * 4sb..4sb+3 of (half, k), i.e. x codes 16s..16s+15. */
XK_TARGET static XK_ALWAYS void direct_q6_K_T(const struct xk_rows *rp, int64_t nbk,
                                              const bool pl, const uint8_t *xa, size_t xs,
                                              float *acc, const int T) {
    vf a[XK_DIRECT_T];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) a[t] = xk_zerof();
    for (int64_t b = 0; b < nbk; b++) {
        const size_t off = (size_t)b * sizeof(struct xd_block_q6_K);
        xk_prefetch_next(rp, b);
        vi s4[4];
        xk_tr4(rp, off + 192, s4, pl);
        const vf d = q6_d(rp, off, pl);
        const struct xd_qa256 *x[XK_DIRECT_T];
        vi isum[XK_DIRECT_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            x[t] = (const struct xd_qa256 *)(xa + (size_t)t * xs) + b;
            isum[t] = xk_zero();
        }
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {
            vi ql0[8], ql1[8], qh[8];
            xk_tr8(rp, off + 64 * (size_t)half, ql0, pl);
            xk_tr8(rp, off + 64 * (size_t)half + 32, ql1, pl);
            xk_tr8(rp, off + 128 + 32 * (size_t)half, qh, pl);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
#pragma GCC unroll 2
                for (int sb = 0; sb < 2; sb++) {
                    const int sub = 8 * half + 2 * k + sb;
                    vi is[XK_DIRECT_T];
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) is[t] = xk_set1(-32 * x[t]->bsum16[sub]);
#pragma GCC unroll 4
                    for (int ii = 0; ii < 4; ii++) {
                        const vi w = q6_code(ql0, ql1, qh, k, 4 * sb + ii);
#pragma GCC unroll 4
                        for (int t = 0; t < T; t++)
                            is[t] = xk_dot_u8(is[t], w, xk_bcast32(x[t]->q + 16 * sub + 4 * ii));
                    }
                    const vi sc = q6_scale(s4, sub);
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) isum[t] = xk_add32(isum[t], xk_mullo32(is[t], sc));
                }
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            a[t] = xk_fmadd(xk_mul(d, xk_set1f(x[t]->d)), xk_cvt(isum[t]), a[t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) xk_storef(acc + t * XK_NL, a[t]);
}

XK_TARGET static XK_ALWAYS void micro_q6_K_T(const uint8_t *pk, int64_t nb, const uint8_t *xa,
                                             size_t xs, float *acc, bool first, const int T) {
    vf a[XK_TMAX_K];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) a[t] = first ? xk_zerof() : xk_loadf(acc + t * XK_NL);
    for (int64_t b = 0; b < nb; b++, pk += XK_Q6_PK) {
        const vi *W = (const vi *)pk, *SC = W + 64;
        const struct xd_qa256 *x[XK_TMAX_K];
        vi isum[XK_TMAX_K];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            x[t] = (const struct xd_qa256 *)(xa + (size_t)t * xs) + b;
            isum[t] = xk_zero();
        }
#pragma GCC unroll 16
        for (int s = 0; s < 16; s++) {
            vi is[XK_TMAX_K];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) is[t] = xk_set1(-32 * x[t]->bsum16[s]); /* the +32 */
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                const vi w = xk_load(W + 4 * s + g);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++)
                    is[t] = xk_dot_u8(is[t], w, xk_bcast32(x[t]->q + 16 * s + 4 * g));
            }
            const vi sc = xk_load(SC + s);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) isum[t] = xk_add32(isum[t], xk_mullo32(is[t], sc));
        }
        const vf d = xk_loadf(pk + 80 * sizeof(vi));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            a[t] = xk_fmadd(xk_mul(d, xk_set1f(x[t]->d)), xk_cvt(isum[t]), a[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) xk_storef(acc + t * XK_NL, a[t]);
}

#define XK_MQ6(T) micro_q6_K_T(pk, nb, xa, xs, acc, first, T)
XK_TARGET static void micro_q6_K(const uint8_t *pk, int64_t nb, const uint8_t *xa, size_t xs,
                                 float *acc, int tn, bool first) {
    XK_DIRECT_SWITCH(XK_MQ6)
}

/* ---- the few-token kernels, one per width ------------------------------------------------- */

typedef void (*xk_direct_fn)(const struct xk_rows *rp, int64_t nbk, const uint8_t *xa, size_t xs,
                             float *acc, int tn);

#define XK_Q8(T) direct_q8_0_T(rp, nbk, false, xa, xs, acc, T)
#define XK_Q8P(T) direct_q8_0_T(rp, nbk, true, xa, xs, acc, T)
XK_TARGET static void direct_q8_0(const struct xk_rows *rp, int64_t nbk, const uint8_t *xa,
                                  size_t xs, float *acc, int tn) {
    XK_Q8_SWITCH(XK_Q8)
}
XK_TARGET static void direct_q8_0_pl(const struct xk_rows *rp, int64_t nbk, const uint8_t *xa,
                                     size_t xs, float *acc, int tn) {
    XK_Q8_SWITCH(XK_Q8P)
}

#define XK_Q4(T) direct_k4_T(rp, nbk, false, false, xa, xs, acc, T)
#define XK_Q4P(T) direct_k4_T(rp, nbk, false, true, xa, xs, acc, T)
#define XK_Q5(T) direct_k4_T(rp, nbk, true, false, xa, xs, acc, T)
#define XK_Q5P(T) direct_k4_T(rp, nbk, true, true, xa, xs, acc, T)
#define XK_Q6(T) direct_q6_K_T(rp, nbk, false, xa, xs, acc, T)
#define XK_Q6P(T) direct_q6_K_T(rp, nbk, true, xa, xs, acc, T)
#define XK_DIRECT_FN(name, call)                                                                   \
    XK_TARGET static void name(const struct xk_rows *rp, int64_t nbk, const uint8_t *xa,           \
                               size_t xs, float *acc, int tn) {                                    \
        XK_DIRECT_SWITCH(call)                                                                     \
    }
XK_DIRECT_FN(direct_q4_K, XK_Q4)
XK_DIRECT_FN(direct_q4_K_pl, XK_Q4P)
XK_DIRECT_FN(direct_q5_K, XK_Q5)
XK_DIRECT_FN(direct_q5_K_pl, XK_Q5P)
XK_DIRECT_FN(direct_q6_K, XK_Q6)
XK_DIRECT_FN(direct_q6_K_pl, XK_Q6P)

/* ---- the driver: panels of rows, slices of the row, groups of tokens ------------------------ */

typedef void (*xk_pack_fn)(const struct xk_rows *rp, int64_t b0, int64_t nb, uint8_t *pk);
typedef void (*xk_micro_fn)(const uint8_t *pk, int64_t nb, const uint8_t *xa, size_t xs, float *acc,
                            int tn, bool first);

struct xk_kind {
    int64_t blk;    /* weights per block */
    size_t w_blk;   /* bytes per weight block */
    size_t act_blk; /* bytes per activation block */
    size_t pk_blk;  /* packed bytes per block of a panel */
    int tmax;       /* tokens per micro-kernel call */
    xk_pack_fn pack;
    xk_micro_fn micro;
    xk_direct_fn direct; /* for at most dmax tokens: no packing */
    int dmax;
    xk_direct_fn wide; /* for dmax+1 .. XK_WIDE_T tokens (NULL: pack + micro) */
};

/* Up to XK_DIRECT_T tokens the codes are transposed in registers and used at once (the weights
 * stream through once, nothing is stored), up to XK_WIDE_T (kinds with a wide kernel) the
 * tokens take them in groups; beyond, a panel is packed once into scratch (in slices of
 * XD_KERN_PANEL_BYTES) and reused by every token. All give the same bits. */
XK_TARGET static XK_ALWAYS void xk_gemm(const struct xk_kind *k, const struct xd_tensor *w,
                                        int64_t r0, int64_t r1, const void *xa, size_t xs,
                                        int64_t n_tok, float *y, int64_t ldy, void *scratch) {
    uint8_t *pk = scratch;
    float *acc = (float *)(pk + XD_KERN_PANEL_BYTES);
    const int64_t nbk = w->ne[0] / k->blk;
    const bool direct = n_tok <= k->dmax || (k->wide && n_tok <= XK_WIDE_T);
    const xk_direct_fn dfn = n_tok <= k->dmax ? k->direct : k->wide;
    int64_t kc = direct ? nbk : (int64_t)(XD_KERN_PANEL_BYTES / k->pk_blk);
    kc = kc < 1 ? 1 : kc;
    /* lane i's row offset, rows past nr repeating the last: computed in registers (int32
     * stores read back as one vector stall the store forwarding, ~3% of a Q4_K decode) */
    static const int32_t iota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const vi lane = xk_loadu(iota), nb1 = xk_set1((int)w->nb[1]);
    const vi roff_full = xk_mullo32(lane, nb1);
    for (int64_t p = r0; p < r1; p += XK_NL) {
        const int nr = r1 - p < XK_NL ? (int)(r1 - p) : XK_NL;
        struct xk_rows rp = {.pf = NULL};
#pragma GCC unroll 16
        for (int i = 0; i < XK_NL; i++)
            rp.r[i] = (const uint8_t *)w->data + (size_t)(p + (i < nr ? i : nr - 1)) * w->nb[1];
        rp.roff = nr == XK_NL ? roff_full : xk_mullo32(xk_min32(lane, xk_set1(nr - 1)), nb1);
        /* one pass over the row: prefetch the panel XK_PF_PANELS ahead (rows are contiguous),
         * never past this range: another thread's chunk starts there, and on a CPU whose L3
         * is filled only by L2 evictions (AMD) a line this core prefetched is read from DRAM
         * again by that thread; the first panels of a range are left to the hardware */
        const int64_t pn = p + XK_PF_PANELS * XK_NL;
        if (kc >= nbk && pn < r1 && w->nb[1] == (size_t)nbk * k->w_blk) {
            const int64_t nn = r1 - pn < XK_NL ? r1 - pn : XK_NL;
            rp.pf = (const uint8_t *)w->data + (size_t)pn * w->nb[1];
            rp.pf_step = ((size_t)nn * w->nb[1] + (size_t)nbk - 1) / (size_t)nbk;
        }
        if (direct) {
            dfn(&rp, nbk, xa, xs, acc, (int)n_tok);
        } else {
            for (int64_t b0 = 0; b0 < nbk; b0 += kc) {
                const int64_t nb = nbk - b0 < kc ? nbk - b0 : kc;
                k->pack(&rp, b0, nb, pk);
                const uint8_t *xb = (const uint8_t *)xa + (size_t)b0 * k->act_blk;
                for (int64_t t0 = 0; t0 < n_tok; t0 += k->tmax) {
                    const int tn = n_tok - t0 < k->tmax ? (int)(n_tok - t0) : k->tmax;
                    k->micro(pk, nb, xb + (size_t)t0 * xs, xs, acc + t0 * XK_NL, tn, b0 == 0);
                }
            }
        }
        for (int64_t t = 0; t < n_tok; t++) xk_store_rows(y + t * ldy + p, acc + t * XK_NL, nr);
    }
}

#define XK_GEMM_Q8(name, pack, direct, wide)                                                       \
    XK_TARGET static void name(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa, \
                               size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {   \
        static const struct xk_kind k = {32,         sizeof(struct xd_block_q8_0),                 \
                                         sizeof(struct xd_qa32), XK_Q8_PK, XK_TMAX_Q8, pack,       \
                                         micro_q8_0, direct,     XK_DIRECT_T_Q8, wide};            \
        xk_gemm(&k, w, r0, r1, xa, xs, n_tok, y, ldy, scratch);                                    \
    }
XK_GEMM_Q8(gemm_q8_0, pack_q8_0, direct_q8_0, wide_q8_0)
XK_GEMM_Q8(gemm_q8_0_pl, pack_q8_0_pl, direct_q8_0_pl, wide_q8_0_pl)

/* The k-quants, in the row layout and in the panel layout (kernels.h). */
#define XK_GEMM_K(name, block, pk_blk, pack, micro, direct)                                        \
    XK_TARGET static void name(const struct xd_tensor *w, int64_t r0, int64_t r1, const void *xa, \
                               size_t xs, int64_t n_tok, float *y, int64_t ldy, void *scratch) {   \
        static const struct xk_kind k = {256,        sizeof(block), sizeof(struct xd_qa256),       \
                                         pk_blk,     XK_TMAX_K,     pack,                          \
                                         micro,      direct,        XK_DIRECT_T,   NULL};          \
        xk_gemm(&k, w, r0, r1, xa, xs, n_tok, y, ldy, scratch);                                    \
    }
XK_GEMM_K(gemm_q4_K, struct xd_block_q4_K, XK_K4_PK, pack_q4_K, micro_k4, direct_q4_K)
XK_GEMM_K(gemm_q4_K_pl, struct xd_block_q4_K, XK_K4_PK, pack_q4_K_pl, micro_k4, direct_q4_K_pl)
XK_GEMM_K(gemm_q5_K, struct xd_block_q5_K, XK_K4_PK, pack_q5_K, micro_k4, direct_q5_K)
XK_GEMM_K(gemm_q5_K_pl, struct xd_block_q5_K, XK_K4_PK, pack_q5_K_pl, micro_k4, direct_q5_K_pl)
XK_GEMM_K(gemm_q6_K, struct xd_block_q6_K, XK_Q6_PK, pack_q6_K, micro_q6_K, direct_q6_K)
XK_GEMM_K(gemm_q6_K_pl, struct xd_block_q6_K, XK_Q6_PK, pack_q6_K_pl, micro_q6_K, direct_q6_K_pl)

/* The table entries of the quantized types, the same in every table that includes this file. */
#define XK_QUANT_TYPES                                                                             \
    [XD_TYPE_Q8_0] = {.act = XD_ACT_Q8_32,                                                         \
                      .gemm = gemm_q8_0,                                                           \
                      .panel = XK_NL,                                                              \
                      .gemm_panel = gemm_q8_0_pl,                                                  \
                      .panel_head = 2},                                                            \
    [XD_TYPE_Q4_K] = {.act = XD_ACT_Q8_256, .gemm = gemm_q4_K, .panel = XK_NL,                     \
                      .gemm_panel = gemm_q4_K_pl},                                                 \
    [XD_TYPE_Q5_K] = {.act = XD_ACT_Q8_256, .gemm = gemm_q5_K, .panel = XK_NL,                     \
                      .gemm_panel = gemm_q5_K_pl},                                                 \
    [XD_TYPE_Q6_K] = {.act = XD_ACT_Q8_256, .gemm = gemm_q6_K, .panel = XK_NL,                     \
                      .gemm_panel = gemm_q6_K_pl}
