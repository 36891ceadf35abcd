/* quant_blocks.h - the byte layout of one block of every ggml quantized type.
 *
 * These are the on-disk layouts of ggml-common.h, written as C structs so kernels (the scalar
 * reference in quant.c, SIMD and CUDA kernels later) read fields by name. Half-precision fields
 * are raw uint16_t bit patterns (convert with xd_fp16_to_fp32). Every struct's size is checked
 * against the format with static_assert; the types the engine cannot compute with yet are here
 * only so their sizes come from a checked definition rather than a bare number.
 */
#ifndef XD_QUANT_BLOCKS_H
#define XD_QUANT_BLOCKS_H

#include <assert.h>
#include <stdint.h>

#include "quant.h"

#define XD_QK4_0 32
#define XD_QK4_1 32
#define XD_QK5_0 32
#define XD_QK5_1 32
#define XD_QK8_0 32
#define XD_QK8_1 32
#define XD_QK_MXFP4 32
#define XD_QK_NVFP4 64
#define XD_QK1_0 128
#define XD_QK2_0 64
#define XD_QK4_NL 32
#define XD_K_SCALE_SIZE 12 /* 8 six-bit scales + 8 six-bit mins of Q4_K/Q5_K */

/* ---- legacy 32-element blocks: x = d*q (+ m) ---- */
struct xd_block_q4_0 {
    uint16_t d;               /* fp16 scale */
    uint8_t qs[XD_QK4_0 / 2]; /* element j in low nibble of qs[j], j+16 in the high one */
};
static_assert(sizeof(struct xd_block_q4_0) == 2 + XD_QK4_0 / 2, "q4_0 block size");

struct xd_block_q4_1 {
    uint16_t d, m;
    uint8_t qs[XD_QK4_1 / 2];
};
static_assert(sizeof(struct xd_block_q4_1) == 4 + XD_QK4_1 / 2, "q4_1 block size");

struct xd_block_q5_0 {
    uint16_t d;
    uint8_t qh[4]; /* bit j: 5th bit of element j (little-endian u32) */
    uint8_t qs[XD_QK5_0 / 2];
};
static_assert(sizeof(struct xd_block_q5_0) == 2 + 4 + XD_QK5_0 / 2, "q5_0 block size");

struct xd_block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[XD_QK5_1 / 2];
};
static_assert(sizeof(struct xd_block_q5_1) == 4 + 4 + XD_QK5_1 / 2, "q5_1 block size");

struct xd_block_q8_0 {
    uint16_t d;
    int8_t qs[XD_QK8_0];
};
static_assert(sizeof(struct xd_block_q8_0) == 2 + XD_QK8_0, "q8_0 block size");

struct xd_block_q8_1 {
    uint16_t d, s; /* s = d * sum(qs) */
    int8_t qs[XD_QK8_1];
};
static_assert(sizeof(struct xd_block_q8_1) == 4 + XD_QK8_1, "q8_1 block size");

/* ---- k-quants: 256-element super-blocks of 16 or 32-element sub-blocks ---- */
struct xd_block_q2_K {
    uint8_t scales[XD_QK_K / 16]; /* low nibble scale, high nibble min, per 16 elements */
    uint8_t qs[XD_QK_K / 4];
    uint16_t d, dmin;
};
static_assert(sizeof(struct xd_block_q2_K) == XD_QK_K / 16 + XD_QK_K / 4 + 4, "q2_K block size");

struct xd_block_q3_K {
    uint8_t hmask[XD_QK_K / 8]; /* high bit, set means "do not subtract 4" */
    uint8_t qs[XD_QK_K / 4];    /* low two bits */
    uint8_t scales[12];         /* 16 six-bit scales, biased by 32 */
    uint16_t d;
};
static_assert(sizeof(struct xd_block_q3_K) == XD_QK_K / 8 + XD_QK_K / 4 + 12 + 2,
              "q3_K block size");

struct xd_block_q4_K {
    uint16_t d, dmin;
    uint8_t scales[XD_K_SCALE_SIZE];
    uint8_t qs[XD_QK_K / 2];
};
static_assert(sizeof(struct xd_block_q4_K) == 4 + XD_K_SCALE_SIZE + XD_QK_K / 2, "q4_K block size");

struct xd_block_q5_K {
    uint16_t d, dmin;
    uint8_t scales[XD_K_SCALE_SIZE];
    uint8_t qh[XD_QK_K / 8];
    uint8_t qs[XD_QK_K / 2];
};
static_assert(sizeof(struct xd_block_q5_K) == 4 + XD_K_SCALE_SIZE + XD_QK_K / 8 + XD_QK_K / 2,
              "q5_K block size");

struct xd_block_q6_K {
    uint8_t ql[XD_QK_K / 2];     /* low four bits */
    uint8_t qh[XD_QK_K / 4];     /* high two bits */
    int8_t scales[XD_QK_K / 16]; /* signed 8-bit scale per 16 elements */
    uint16_t d;
};
static_assert(sizeof(struct xd_block_q6_K) == XD_QK_K / 2 + XD_QK_K / 4 + XD_QK_K / 16 + 2,
              "q6_K block size");

struct xd_block_q8_K {
    float d;
    int8_t qs[XD_QK_K];
    int16_t bsums[XD_QK_K / 16];
};
static_assert(sizeof(struct xd_block_q8_K) == 4 + XD_QK_K + XD_QK_K / 16 * 2, "q8_K block size");

/* ---- types known by size only (no to_float yet) ---- */
struct xd_block_iq2_xxs {
    uint16_t d;
    uint16_t qs[XD_QK_K / 8];
};
static_assert(sizeof(struct xd_block_iq2_xxs) == 2 + XD_QK_K / 4, "iq2_xxs block size");

struct xd_block_iq2_xs {
    uint16_t d;
    uint16_t qs[XD_QK_K / 8];
    uint8_t scales[XD_QK_K / 32];
};
static_assert(sizeof(struct xd_block_iq2_xs) == 2 + XD_QK_K / 4 + XD_QK_K / 32,
              "iq2_xs block size");

struct xd_block_iq2_s {
    uint16_t d;
    uint8_t qs[XD_QK_K / 4];
    uint8_t qh[XD_QK_K / 32];
    uint8_t scales[XD_QK_K / 32];
};
static_assert(sizeof(struct xd_block_iq2_s) == 2 + XD_QK_K / 4 + XD_QK_K / 16, "iq2_s block size");

struct xd_block_iq3_xxs {
    uint16_t d;
    uint8_t qs[3 * XD_QK_K / 8];
};
static_assert(sizeof(struct xd_block_iq3_xxs) == 2 + 3 * (XD_QK_K / 8), "iq3_xxs block size");

struct xd_block_iq3_s {
    uint16_t d;
    uint8_t qs[XD_QK_K / 4];
    uint8_t qh[XD_QK_K / 32];
    uint8_t signs[XD_QK_K / 8];
    uint8_t scales[XD_QK_K / 64];
};
static_assert(sizeof(struct xd_block_iq3_s) == 2 + 13 * (XD_QK_K / 32) + XD_QK_K / 64,
              "iq3_s block size");

struct xd_block_iq1_s {
    uint16_t d;
    uint8_t qs[XD_QK_K / 8];
    uint16_t qh[XD_QK_K / 32];
};
static_assert(sizeof(struct xd_block_iq1_s) == 2 + XD_QK_K / 8 + XD_QK_K / 16, "iq1_s block size");

struct xd_block_iq1_m {
    uint8_t qs[XD_QK_K / 8];
    uint8_t qh[XD_QK_K / 16];
    uint8_t scales[XD_QK_K / 32];
};
static_assert(sizeof(struct xd_block_iq1_m) == XD_QK_K / 8 + XD_QK_K / 16 + XD_QK_K / 32,
              "iq1_m block size");

struct xd_block_iq4_nl {
    uint16_t d;
    uint8_t qs[XD_QK4_NL / 2];
};
static_assert(sizeof(struct xd_block_iq4_nl) == 2 + XD_QK4_NL / 2, "iq4_nl block size");

struct xd_block_iq4_xs {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[XD_QK_K / 64];
    uint8_t qs[XD_QK_K / 2];
};
static_assert(sizeof(struct xd_block_iq4_xs) == 4 + XD_QK_K / 64 + XD_QK_K / 2,
              "iq4_xs block size");

struct xd_block_tq1_0 {
    uint8_t qs[(XD_QK_K - 4 * XD_QK_K / 64) / 5]; /* five ternary digits per byte */
    uint8_t qh[XD_QK_K / 64];                     /* four per byte */
    uint16_t d;
};
static_assert(sizeof(struct xd_block_tq1_0) == 2 + XD_QK_K / 64 + (XD_QK_K - 4 * XD_QK_K / 64) / 5,
              "tq1_0 block size");

struct xd_block_tq2_0 {
    uint8_t qs[XD_QK_K / 4];
    uint16_t d;
};
static_assert(sizeof(struct xd_block_tq2_0) == 2 + XD_QK_K / 4, "tq2_0 block size");

struct xd_block_mxfp4 {
    uint8_t e; /* E8M0 shared exponent */
    uint8_t qs[XD_QK_MXFP4 / 2];
};
static_assert(sizeof(struct xd_block_mxfp4) == 1 + XD_QK_MXFP4 / 2, "mxfp4 block size");

struct xd_block_nvfp4 {
    uint8_t d[XD_QK_NVFP4 / 16]; /* UE4M3 scale per 16 elements */
    uint8_t qs[XD_QK_NVFP4 / 2];
};
static_assert(sizeof(struct xd_block_nvfp4) == XD_QK_NVFP4 / 16 + XD_QK_NVFP4 / 2,
              "nvfp4 block size");

struct xd_block_q1_0 {
    uint16_t d;
    uint8_t qs[XD_QK1_0 / 8];
};
static_assert(sizeof(struct xd_block_q1_0) == 2 + XD_QK1_0 / 8, "q1_0 block size");

struct xd_block_q2_0 {
    uint16_t d;
    uint8_t qs[XD_QK2_0 / 4];
};
static_assert(sizeof(struct xd_block_q2_0) == 2 + XD_QK2_0 / 4, "q2_0 block size");

#endif
