/* quant.h - tensor element types and their traits (block size, bytes per block, conversions).
 *
 * Type ids are ggml's, so a GGUF tensor's type field indexes xd_type_traits() directly. Every
 * type a GGUF file may carry is known here by its size (so a reader can validate extents and
 * `inspect` can print any file); `to_float` and `vec_dot_f32` are set only for the types the
 * engine computes with, and `from_float` for the types `expertd gen` can write. Block layouts
 * follow ggml-common.h; they live in quant_blocks.h, where each struct's size is checked with
 * static_assert.
 */
#ifndef XD_QUANT_H
#define XD_QUANT_H

#include <stddef.h>
#include <stdint.h>

enum xd_type {
    XD_TYPE_F32 = 0,
    XD_TYPE_F16 = 1,
    XD_TYPE_Q4_0 = 2,
    XD_TYPE_Q4_1 = 3,
    /* 4, 5: Q4_2, Q4_3, removed from ggml */
    XD_TYPE_Q5_0 = 6,
    XD_TYPE_Q5_1 = 7,
    XD_TYPE_Q8_0 = 8,
    XD_TYPE_Q8_1 = 9,
    XD_TYPE_Q2_K = 10,
    XD_TYPE_Q3_K = 11,
    XD_TYPE_Q4_K = 12,
    XD_TYPE_Q5_K = 13,
    XD_TYPE_Q6_K = 14,
    XD_TYPE_Q8_K = 15,
    XD_TYPE_IQ2_XXS = 16,
    XD_TYPE_IQ2_XS = 17,
    XD_TYPE_IQ3_XXS = 18,
    XD_TYPE_IQ1_S = 19,
    XD_TYPE_IQ4_NL = 20,
    XD_TYPE_IQ3_S = 21,
    XD_TYPE_IQ2_S = 22,
    XD_TYPE_IQ4_XS = 23,
    XD_TYPE_I8 = 24,
    XD_TYPE_I16 = 25,
    XD_TYPE_I32 = 26,
    XD_TYPE_I64 = 27,
    XD_TYPE_F64 = 28,
    XD_TYPE_IQ1_M = 29,
    XD_TYPE_BF16 = 30,
    /* 31..33: Q4_0_4_4, Q4_0_4_8, Q4_0_8_8, removed from GGUF files */
    XD_TYPE_TQ1_0 = 34,
    XD_TYPE_TQ2_0 = 35,
    /* 36..38: IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8, removed */
    XD_TYPE_MXFP4 = 39,
    XD_TYPE_NVFP4 = 40,
    XD_TYPE_Q1_0 = 41,
    XD_TYPE_Q2_0 = 42,
    XD_TYPE_COUNT = 43,
};

#define XD_QK_K 256 /* super-block size of the k-quants */

/* Convert n elements (a multiple of blck_size) of this type at src to float. */
typedef void (*xd_to_float_fn)(const void *src, float *dst, int64_t n);
/* Quantize n floats (a multiple of blck_size) into dst (n/blck_size blocks). */
typedef void (*xd_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of one row of n elements (a multiple of blck_size) with the float vector x.
 * Deterministic: the result depends only on the inputs (fixed summation order, see quant.c). */
typedef float (*xd_vec_dot_f32_fn)(const void *row, const float *x, int64_t n);

struct xd_type_traits {
    const char *name;              /* "Q4_K"; NULL for ids that are not a type */
    int64_t blck_size;             /* elements per block */
    size_t type_size;              /* bytes per block */
    xd_to_float_fn to_float;       /* NULL: not computable yet (IQ*, MXFP4, ...) */
    xd_from_float_fn from_float;   /* NULL: cannot be written by gen */
    xd_vec_dot_f32_fn vec_dot_f32; /* set exactly where to_float is */
};

/* Traits for a type id; NULL when id is not a known ggml type. Never fails otherwise. */
const struct xd_type_traits *xd_type_traits(uint32_t id);
/* Type name or "?" for unknown ids. */
const char *xd_type_name(uint32_t id);
/* Type id for a name ("q8_0", case-insensitive); -1 if unknown. */
int xd_type_from_name(const char *name);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block size, id is unknown
 * or the size would overflow size_t. */
size_t xd_row_size(uint32_t id, int64_t n);

/* Dequantize n elements of type at src into dst. 0 on success; XD_E_UNSUPPORTED when the type
 * is unknown or has no to_float, XD_E_INVALID when n is negative or not a multiple of the
 * block size (dst untouched on failure). */
int xd_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
/* Quantize n floats into type at dst. Same codes as xd_dequantize_row (UNSUPPORTED: no
 * from_float). */
int xd_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* Half and bfloat16 conversions (exact, round-to-nearest-even for the narrowing ones; a NaN
 * stays a NaN of the same sign, quieted when narrowed). These never fail. */
float xd_fp16_to_fp32(uint16_t h);
uint16_t xd_fp32_to_fp16(float f);
float xd_bf16_to_fp32(uint16_t h);
uint16_t xd_fp32_to_bf16(float f);

#endif
