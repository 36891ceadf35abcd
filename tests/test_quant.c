/* test_quant.c - the type traits table, fp16/bf16 conversions, every dequantizer, the
 * quantizers and vec_dot_f32, checked against hand-worked values, exhaustive sweeps, error
 * bounds derived from each block's scale, and llama.cpp's own output (the golden fixtures).
 *
 * Hand-built blocks are encoded here by the *writer's* layout rules (as ggml's quantizers pack
 * bytes), with exact small numbers, so every expected value is worked out from the format and
 * a few are written down as literals; the decoder under test follows the reader's loops.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "xd_error.h"
#include "xd_test_util.h"

/* ---- helpers -------------------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Deterministic generator (xorshift64*), so every run tests the same data. */
struct rng {
    uint64_t s;
};

static uint32_t rng_u32(struct rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (uint32_t)((r->s * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Uniform in [-1, 1). */
static float rng_unit(struct rng *r) { return (float)((double)rng_u32(r) / 2147483648.0 - 1.0); }

/* Roughly normal (sum of four uniforms), with an occasional outlier as real weights have. */
static float rng_weight(struct rng *r) {
    float v = (rng_unit(r) + rng_unit(r) + rng_unit(r) + rng_unit(r)) * 0.5f;
    if ((rng_u32(r) & 255) == 0) v *= 6.0f;
    return v;
}

/* Value of an fp16 bit pattern, computed from the definition (independent of the code). */
static double fp16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* Half the gap between fp16 neighbours at |h|: how far fp16(d) may be from d. */
static double fp16_half_ulp(uint16_t h) {
    int e = (h >> 10) & 31;
    return e == 0 ? ldexp(1, -25) : ldexp(1, e - 26);
}

/* ---- traits table ---------------------------------------------------------------------- */

struct size_case {
    uint32_t id;
    const char *name;
    int64_t blck;
    size_t size;
};

/* Block sizes and bytes as ggml's type_traits has them. */
static const struct size_case k_sizes[] = {
    {XD_TYPE_F32, "F32", 1, 4},
    {XD_TYPE_F16, "F16", 1, 2},
    {XD_TYPE_Q4_0, "Q4_0", 32, 18},
    {XD_TYPE_Q4_1, "Q4_1", 32, 20},
    {XD_TYPE_Q5_0, "Q5_0", 32, 22},
    {XD_TYPE_Q5_1, "Q5_1", 32, 24},
    {XD_TYPE_Q8_0, "Q8_0", 32, 34},
    {XD_TYPE_Q8_1, "Q8_1", 32, 36},
    {XD_TYPE_Q2_K, "Q2_K", 256, 84},
    {XD_TYPE_Q3_K, "Q3_K", 256, 110},
    {XD_TYPE_Q4_K, "Q4_K", 256, 144},
    {XD_TYPE_Q5_K, "Q5_K", 256, 176},
    {XD_TYPE_Q6_K, "Q6_K", 256, 210},
    {XD_TYPE_Q8_K, "Q8_K", 256, 292},
    {XD_TYPE_IQ2_XXS, "IQ2_XXS", 256, 66},
    {XD_TYPE_IQ2_XS, "IQ2_XS", 256, 74},
    {XD_TYPE_IQ3_XXS, "IQ3_XXS", 256, 98},
    {XD_TYPE_IQ1_S, "IQ1_S", 256, 50},
    {XD_TYPE_IQ4_NL, "IQ4_NL", 32, 18},
    {XD_TYPE_IQ3_S, "IQ3_S", 256, 110},
    {XD_TYPE_IQ2_S, "IQ2_S", 256, 82},
    {XD_TYPE_IQ4_XS, "IQ4_XS", 256, 136},
    {XD_TYPE_I8, "I8", 1, 1},
    {XD_TYPE_I16, "I16", 1, 2},
    {XD_TYPE_I32, "I32", 1, 4},
    {XD_TYPE_I64, "I64", 1, 8},
    {XD_TYPE_F64, "F64", 1, 8},
    {XD_TYPE_IQ1_M, "IQ1_M", 256, 56},
    {XD_TYPE_BF16, "BF16", 1, 2},
    {XD_TYPE_TQ1_0, "TQ1_0", 256, 54},
    {XD_TYPE_TQ2_0, "TQ2_0", 256, 66},
    {XD_TYPE_MXFP4, "MXFP4", 32, 17},
    {XD_TYPE_NVFP4, "NVFP4", 64, 36},
    {XD_TYPE_Q1_0, "Q1_0", 128, 18},
    {XD_TYPE_Q2_0, "Q2_0", 64, 18},
};

#define N_SIZES (sizeof k_sizes / sizeof k_sizes[0])

static const uint32_t k_computable[] = {
    XD_TYPE_F32,  XD_TYPE_F16,  XD_TYPE_BF16, XD_TYPE_Q4_0, XD_TYPE_Q4_1,
    XD_TYPE_Q5_0, XD_TYPE_Q5_1, XD_TYPE_Q8_0, XD_TYPE_Q2_K, XD_TYPE_Q3_K,
    XD_TYPE_Q4_K, XD_TYPE_Q5_K, XD_TYPE_Q6_K, XD_TYPE_Q8_K,
};

#define N_COMPUTABLE (sizeof k_computable / sizeof k_computable[0])

Test(traits, sizes_match_ggml) {
    for (size_t i = 0; i < N_SIZES; i++) {
        const struct xd_type_traits *t = xd_type_traits(k_sizes[i].id);
        cr_assert_not_null(t, "type %u missing", k_sizes[i].id);
        cr_assert_str_eq(t->name, k_sizes[i].name);
        cr_assert_eq(t->blck_size, k_sizes[i].blck, "%s blck_size", k_sizes[i].name);
        cr_assert_eq(t->type_size, k_sizes[i].size, "%s type_size", k_sizes[i].name);
    }
}

Test(traits, ids_that_are_not_types) {
    const uint32_t holes[] = {4, 5, 31, 32, 33, 36, 37, 38, XD_TYPE_COUNT, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof holes / sizeof holes[0]; i++) {
        cr_assert_null(xd_type_traits(holes[i]), "id %u", holes[i]);
        cr_assert_str_eq(xd_type_name(holes[i]), "?");
        cr_assert_eq(xd_row_size(holes[i], 256), 0);
    }
    /* every id that is not a hole has a size: a GGUF reader can validate any file */
    int n_known = 0;
    for (uint32_t id = 0; id < XD_TYPE_COUNT; id++) n_known += xd_type_traits(id) != NULL;
    cr_assert_eq(n_known, (int)N_SIZES);
}

Test(traits, names_case_insensitive) {
    for (size_t i = 0; i < N_SIZES; i++) {
        char lower[16];
        size_t n = strlen(k_sizes[i].name);
        for (size_t k = 0; k <= n; k++)
            lower[k] = (char)(k_sizes[i].name[k] >= 'A' && k_sizes[i].name[k] <= 'Z'
                                  ? k_sizes[i].name[k] + 32
                                  : k_sizes[i].name[k]);
        cr_assert_eq(xd_type_from_name(lower), (int)k_sizes[i].id, "%s", lower);
        cr_assert_eq(xd_type_from_name(k_sizes[i].name), (int)k_sizes[i].id);
        cr_assert_str_eq(xd_type_name(k_sizes[i].id), k_sizes[i].name);
    }
    cr_assert_eq(xd_type_from_name("q8_0"), XD_TYPE_Q8_0);
    cr_assert_eq(xd_type_from_name("Q4_k"), XD_TYPE_Q4_K);
    cr_assert_eq(xd_type_from_name("q9_0"), -1);
    cr_assert_eq(xd_type_from_name(""), -1);
    cr_assert_eq(xd_type_from_name(NULL), -1);
}

Test(traits, row_size) {
    cr_assert_eq(xd_row_size(XD_TYPE_F32, 10), 40);
    cr_assert_eq(xd_row_size(XD_TYPE_Q8_0, 4096), 4096 / 32 * 34);
    cr_assert_eq(xd_row_size(XD_TYPE_Q4_K, 4096), 16 * 144);
    cr_assert_eq(xd_row_size(XD_TYPE_Q4_K, 4096 + 32), 0); /* not whole blocks */
    cr_assert_eq(xd_row_size(XD_TYPE_Q8_0, 0), 0);
    cr_assert_eq(xd_row_size(XD_TYPE_Q8_0, -32), 0);
    cr_assert_eq(xd_row_size(XD_TYPE_I64, INT64_MAX), 0); /* overflows size_t */
}

Test(traits, computable_types_have_all_three) {
    for (uint32_t id = 0; id < XD_TYPE_COUNT; id++) {
        const struct xd_type_traits *t = xd_type_traits(id);
        if (!t) continue;
        cr_assert_eq(t->to_float != NULL, t->vec_dot_f32 != NULL, "%s", t->name);
        if (t->from_float) cr_assert_not_null(t->to_float, "%s", t->name);
    }
    for (size_t i = 0; i < N_COMPUTABLE; i++)
        cr_assert_not_null(xd_type_traits(k_computable[i])->to_float);
    const uint32_t writable[] = {XD_TYPE_F32,  XD_TYPE_F16,  XD_TYPE_BF16,
                                 XD_TYPE_Q8_0, XD_TYPE_Q4_0, XD_TYPE_Q4_K};
    for (size_t i = 0; i < sizeof writable / sizeof writable[0]; i++)
        cr_assert_not_null(xd_type_traits(writable[i])->from_float);
}

Test(traits, dequantize_row_errors) {
    uint8_t blk[256] = {0};
    float out[64], canary = 12345.0f;
    for (int i = 0; i < 64; i++) out[i] = canary;
    cr_assert_eq(xd_dequantize_row(XD_TYPE_IQ2_XXS, blk, out, 256), XD_E_UNSUPPORTED);
    cr_assert_eq(xd_dequantize_row(XD_TYPE_MXFP4, blk, out, 32), XD_E_UNSUPPORTED);
    cr_assert_eq(xd_dequantize_row(4, blk, out, 32), XD_E_UNSUPPORTED);
    cr_assert_eq(xd_dequantize_row(XD_TYPE_Q8_0, blk, out, 31), XD_E_INVALID);
    cr_assert_eq(xd_dequantize_row(XD_TYPE_Q8_0, blk, out, -32), XD_E_INVALID);
    cr_assert(out[0] == canary, "dst written on failure");
    cr_assert_eq(xd_dequantize_row(XD_TYPE_Q8_0, blk, out, 32), 0);
    cr_assert(out[0] == 0.0f && out[31] == 0.0f && out[32] == canary);
    cr_assert_eq(xd_quantize_row(XD_TYPE_Q6_K, out, blk, 256), XD_E_UNSUPPORTED);
    cr_assert_eq(xd_quantize_row(XD_TYPE_Q8_0, out, blk, 33), XD_E_INVALID);
}

/* ---- fp16 ------------------------------------------------------------------------------- */

Test(fp16, widen_all_65536_exact) {
    int bad = -1;
    for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
        float f = xd_fp16_to_fp32((uint16_t)h);
        int e = (h >> 10) & 31, m = h & 1023;
        if (e == 31 && m != 0) {
            /* NaN: payload and sign kept exactly in the top mantissa bits */
            uint32_t want = ((h & 0x8000u) << 16) | 0x7f800000u | ((uint32_t)m << 13);
            if (bits_of(f) != want) bad = (int)h;
        } else if (e == 31) {
            if (!isinf(f) || (signbit(f) != 0) != ((h & 0x8000) != 0)) bad = (int)h;
        } else if ((double)f != fp16_value((uint16_t)h) ||
                   (signbit(f) != 0) != ((h & 0x8000) != 0)) {
            bad = (int)h;
        }
    }
    cr_assert_eq(bad, -1, "fp16 0x%04x widened wrongly", bad);
}

Test(fp16, roundtrip_all_65536) {
    int bad = -1;
    for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
        uint16_t back = xd_fp32_to_fp16(xd_fp16_to_fp32((uint16_t)h));
        int is_nan = ((h >> 10) & 31) == 31 && (h & 1023) != 0;
        uint16_t want = is_nan ? (uint16_t)(h | 0x0200) : (uint16_t)h; /* NaNs come back quiet */
        if (back != want) bad = (int)h;
    }
    cr_assert_eq(bad, -1, "fp16 0x%04x does not round-trip", bad);
}

/* Between every pair of neighbouring fp16 values (subnormal, normal, and 65504 -> Inf), the
 * exact midpoint goes to the even one, and one float ulp either side goes to the nearer. */
Test(fp16, narrow_round_to_nearest_even) {
    int bad = -1;
    for (uint32_t h = 0; h < 0x7c00 && bad < 0; h++) {
        double a = fp16_value((uint16_t)h);
        double b = h + 1 < 0x7c00 ? fp16_value((uint16_t)(h + 1)) : 65536.0; /* Inf's place */
        float mid = (float)((a + b) / 2); /* 12 significant bits: exact in float */
        cr_assert((double)mid == (a + b) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        for (int s = 0; s < 2; s++) {
            uint16_t sg = s ? 0x8000 : 0;
            float m = s ? -mid : mid;
            if (xd_fp32_to_fp16(m) != (even | sg)) bad = (int)h;
            if (xd_fp32_to_fp16(nextafterf(m, 0.0f)) != (h | sg)) bad = (int)h;
            if (xd_fp32_to_fp16(nextafterf(m, s ? -INFINITY : INFINITY)) != ((h + 1) | sg))
                bad = (int)h;
        }
    }
    cr_assert_eq(bad, -1, "rounding between fp16 0x%04x and its successor", bad);
}

Test(fp16, narrow_specials) {
    cr_assert_eq(xd_fp32_to_fp16(0.0f), 0x0000);
    cr_assert_eq(xd_fp32_to_fp16(-0.0f), 0x8000);
    cr_assert_eq(xd_fp32_to_fp16(1.0f), 0x3c00);
    cr_assert_eq(xd_fp32_to_fp16(-2.0f), 0xc000);
    cr_assert_eq(xd_fp32_to_fp16(65504.0f), 0x7bff);
    cr_assert_eq(xd_fp32_to_fp16(65519.99f), 0x7bff);
    cr_assert_eq(xd_fp32_to_fp16(65520.0f), 0x7c00); /* tie, rounds to even = Inf */
    cr_assert_eq(xd_fp32_to_fp16(1e6f), 0x7c00);
    cr_assert_eq(xd_fp32_to_fp16(-1e30f), 0xfc00);
    cr_assert_eq(xd_fp32_to_fp16(INFINITY), 0x7c00);
    cr_assert_eq(xd_fp32_to_fp16(-INFINITY), 0xfc00);
    cr_assert_eq(xd_fp32_to_fp16(0x1p-24f), 0x0001); /* smallest subnormal */
    cr_assert_eq(xd_fp32_to_fp16(0x1p-25f), 0x0000); /* half of it: tie to even 0 */
    cr_assert_eq(xd_fp32_to_fp16(0x1.000002p-25f), 0x0001);
    cr_assert_eq(xd_fp32_to_fp16(0x3p-25f), 0x0002);     /* 1.5 units: tie to even 2 */
    cr_assert_eq(xd_fp32_to_fp16(0x1.ff8p-15f), 0x03ff); /* largest subnormal, exact */
    cr_assert_eq(xd_fp32_to_fp16(0x1.ffcp-15f), 0x0400); /* tie above it: up into the normals */
    cr_assert_eq(xd_fp32_to_fp16(1e-40f), 0x0000);       /* float subnormal */
    cr_assert_eq(xd_fp32_to_fp16(-1e-40f), 0x8000);
    cr_assert_eq(xd_fp32_to_fp16(1.0f / 3.0f), 0x3555);
    uint16_t qn = xd_fp32_to_fp16(NAN);
    cr_assert(((qn >> 10) & 31) == 31 && (qn & 0x200), "NaN -> quiet NaN, got 0x%04x", qn);
    uint16_t sn = xd_fp32_to_fp16(float_of(0xff800001u)); /* signalling NaN, low payload */
    cr_assert_eq(sn, 0xfe00, "negative sNaN with a low payload must stay a NaN: 0x%04x", sn);
}

/* ---- bf16 ------------------------------------------------------------------------------- */

Test(bf16, widen_and_roundtrip_all_65536) {
    int bad = -1;
    for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
        float f = xd_bf16_to_fp32((uint16_t)h);
        if (bits_of(f) != h << 16) bad = (int)h;
        int is_nan = ((h >> 7) & 255) == 255 && (h & 127) != 0;
        uint16_t want = is_nan ? (uint16_t)(h | 0x40) : (uint16_t)h;
        if (xd_fp32_to_bf16(f) != want) bad = (int)h;
    }
    cr_assert_eq(bad, -1, "bf16 0x%04x", bad);
}

Test(bf16, narrow_rounding) {
    cr_assert_eq(xd_fp32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(xd_fp32_to_bf16(1.0f + 0x1p-8f), 0x3f80);        /* tie, even is down */
    cr_assert_eq(xd_fp32_to_bf16(1.0f + 0x3p-8f), 0x3f82);        /* tie, even is up */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x3f808001u)), 0x3f81); /* just above the tie */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x3f807fffu)), 0x3f80); /* just below */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x3f818000u)), 0x3f82); /* odd below: tie goes up */
    cr_assert_eq(xd_fp32_to_bf16(-1.0f - 0x3p-8f), 0xbf82);
    cr_assert_eq(xd_fp32_to_bf16(3.14159265f), 0x4049);
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to Inf */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x7f7f7fffu)), 0x7f7f); /* stays finite */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x00008000u)), 0x0000); /* subnormal tie -> even */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x00018000u)), 0x0002);
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x00008001u)), 0x0001);
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x807fffffu)), 0x8080); /* rounds into normals */
    cr_assert_eq(xd_fp32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(xd_fp32_to_bf16(-INFINITY), 0xff80);
    cr_assert_eq(xd_fp32_to_bf16(float_of(0x7f800001u)), 0x7fc0); /* sNaN stays NaN, quiet */
    cr_assert_eq(xd_fp32_to_bf16(float_of(0xffffffffu)), 0xffff);
}

/* ---- hand-built blocks ------------------------------------------------------------------ */

static void expect_block(uint32_t type, const uint8_t *blk, const float *want, int n,
                         const int *spots, const float *spot_vals, int n_spots) {
    float y[256];
    cr_assert_eq(xd_dequantize_row(type, blk, y, n), 0);
    for (int i = 0; i < n_spots; i++)
        cr_assert(y[spots[i]] == spot_vals[i], "%s[%d] = %g, worked out by hand: %g",
                  xd_type_name(type), spots[i], y[spots[i]], spot_vals[i]);
    for (int i = 0; i < n; i++)
        cr_assert(y[i] == want[i], "%s[%d] = %.9g, want %.9g", xd_type_name(type), i, y[i],
                  want[i]);
    /* the dot product agrees with the dequantized block */
    float x[256];
    double ref = 0;
    for (int i = 0; i < n; i++) {
        x[i] = (float)(i % 7) - 3.0f;
        ref += (double)want[i] * x[i];
    }
    float dot = xd_type_traits(type)->vec_dot_f32(blk, x, n);
    cr_assert(dot == (float)ref, "%s dot %.9g want %.9g", xd_type_name(type), dot, ref);
}

Test(blocks, f32_f16_bf16) {
    const float f[4] = {1.5f, -0.0f, 3.0e-40f, -65504.0f};
    uint8_t b[16];
    memcpy(b, f, sizeof f);
    float y[4];
    cr_assert_eq(xd_dequantize_row(XD_TYPE_F32, b, y, 4), 0);
    cr_assert_eq(memcmp(y, f, sizeof f), 0);

    const uint16_t h[8] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x3555, 0x8400, 0x3800, 0x0000};
    const float hw[8] = {1.0f, -2.0f, 0x1p-24f, 65504.0f, 0.333251953125f, -0x1p-14f, 0.5f, 0.0f};
    for (int i = 0; i < 8; i++) put16(b + 2 * i, h[i]);
    expect_block(XD_TYPE_F16, b, hw, 8, NULL, NULL, 0);

    const uint16_t g[8] = {0x3f80, 0xc049, 0x0001, 0x7f7f, 0x3eaa, 0x8080, 0x4000, 0x3c00};
    const float gw[8] = {1.0f,        -3.140625f, 0x1p-133f, 0x1.fep127f,
                         0.33203125f, -0x1p-126f, 2.0f,      0.0078125f};
    for (int i = 0; i < 8; i++) put16(b + 2 * i, g[i]);
    expect_block(XD_TYPE_BF16, b, gw, 8, NULL, NULL, 0);
}

/* Q4_0 (18 bytes: fp16 d, 16 bytes of nibbles): d = 0.5, byte j = j | (15-j) << 4, so
 * element j = (j - 8) * 0.5 and element 16 + j = ((15 - j) - 8) * 0.5. */
Test(blocks, q4_0) {
    uint8_t b[18];
    put16(b, 0x3800);
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(j | (15 - j) << 4);
    float want[32];
    for (int j = 0; j < 16; j++) {
        want[j] = (float)(j - 8) * 0.5f;
        want[16 + j] = (float)(7 - j) * 0.5f;
    }
    const int spots[] = {0, 9, 16, 31};
    const float vals[] = {-4.0f, 0.5f, 3.5f, -4.0f};
    expect_block(XD_TYPE_Q4_0, b, want, 32, spots, vals, 4);
}

/* Q4_1 (20 bytes: d, m, nibbles): d = 0.25, m = -1, same nibbles: x = q/4 - 1. */
Test(blocks, q4_1) {
    uint8_t b[20];
    put16(b, 0x3400);
    put16(b + 2, 0xbc00);
    for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(j | (15 - j) << 4);
    float want[32];
    for (int j = 0; j < 16; j++) {
        want[j] = (float)j * 0.25f - 1.0f;
        want[16 + j] = (float)(15 - j) * 0.25f - 1.0f;
    }
    const int spots[] = {0, 4, 15, 16, 31};
    const float vals[] = {-1.0f, 0.0f, 2.75f, 2.75f, -1.0f};
    expect_block(XD_TYPE_Q4_1, b, want, 32, spots, vals, 5);
}

/* Q5_0 (22 bytes: d, qh u32 LE, nibbles): d = 1, qh = 0x80F0000F sets the fifth bit of
 * elements 0..3, 20..23 and 31; x = (nibble | 16*bit) - 16. */
Test(blocks, q5_0) {
    uint8_t b[22];
    put16(b, 0x3c00);
    b[2] = 0x0f, b[3] = 0x00, b[4] = 0xf0, b[5] = 0x80;
    for (int j = 0; j < 16; j++) b[6 + j] = (uint8_t)(j | (15 - j) << 4);
    const uint32_t qh = 0x80F0000Fu;
    float want[32];
    for (int e = 0; e < 32; e++) {
        int nib = e < 16 ? e : 31 - e;
        want[e] = (float)((nib | (int)((qh >> e) & 1) << 4) - 16);
    }
    const int spots[] = {0, 3, 4, 15, 16, 20, 31};
    const float vals[] = {0.0f, 3.0f, -12.0f, -1.0f, -1.0f, 11.0f, 0.0f};
    expect_block(XD_TYPE_Q5_0, b, want, 32, spots, vals, 7);
}

/* Q5_1 (24 bytes: d, m, qh, nibbles): d = 0.5, m = 1, fifth bit on elements 0 and 16. */
Test(blocks, q5_1) {
    uint8_t b[24];
    put16(b, 0x3800);
    put16(b + 2, 0x3c00);
    b[4] = 0x01, b[5] = 0x00, b[6] = 0x01, b[7] = 0x00;
    for (int j = 0; j < 16; j++) b[8 + j] = (uint8_t)(j | (15 - j) << 4);
    float want[32];
    for (int e = 0; e < 32; e++) {
        int q = (e < 16 ? e : 31 - e) | ((e == 0 || e == 16) ? 16 : 0);
        want[e] = (float)q * 0.5f + 1.0f;
    }
    const int spots[] = {0, 1, 15, 16, 17, 31};
    const float vals[] = {9.0f, 1.5f, 8.5f, 16.5f, 8.0f, 1.0f};
    expect_block(XD_TYPE_Q5_1, b, want, 32, spots, vals, 6);
}

/* Q8_0 (34 bytes: d, 32 int8): d = 0.25, q = j - 16, with the extremes -128 and 127. */
Test(blocks, q8_0) {
    uint8_t b[34];
    put16(b, 0x3400);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)(j - 16);
    b[2 + 30] = 0x80, b[2 + 31] = 0x7f;
    float want[32];
    for (int j = 0; j < 32; j++) want[j] = (float)(j - 16) * 0.25f;
    want[30] = -32.0f, want[31] = 31.75f;
    const int spots[] = {0, 16, 29, 30, 31};
    const float vals[] = {-4.0f, 0.0f, 3.25f, -32.0f, 31.75f};
    expect_block(XD_TYPE_Q8_0, b, want, 32, spots, vals, 5);
}

/* Q2_K (84 bytes: scales[16] at 0, qs[64] at 16, d at 80, dmin at 82). Writer's packing:
 * element e's two bits sit in qs[32*(e/128) + e%32] at bit 2*((e%128)/32); sub-block s = e/16
 * has scale (low nibble) and min (high nibble). d = 1, dmin = 0.5, scale = s%4 + 1,
 * min = s/4, q(e) = (e + e/32 + e/128) % 4 (so each pass and half sees different values);
 * x = d*scale*q - dmin*min. */
Test(blocks, q2_K) {
    uint8_t b[84] = {0};
    put16(b + 80, 0x3c00);
    put16(b + 82, 0x3800);
    for (int s = 0; s < 16; s++) b[s] = (uint8_t)((s % 4 + 1) | (s / 4) << 4);
    float want[256];
    for (int e = 0; e < 256; e++) {
        int q = (e + e / 32 + e / 128) % 4, s = e / 16;
        b[16 + 32 * (e / 128) + e % 32] |= (uint8_t)(q << (2 * ((e % 128) / 32)));
        want[e] = (float)((s % 4 + 1) * q) - 0.5f * (float)(s / 4);
    }
    const int spots[] = {0, 17, 70, 130, 255};
    const float vals[] = {0.0f, 2.0f, -0.5f, 2.0f, 10.5f};
    expect_block(XD_TYPE_Q2_K, b, want, 256, spots, vals, 5);
}

/* Q3_K (110 bytes: hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108). Writer's
 * packing: value v in -4..3 stored as L = v + 4; L > 3 sets bit e/32 of hmask[e%32] and
 * keeps L - 4 in the two bits (qs as in Q2_K); scale s (six bits, biased by 32) has its low
 * nibble in byte s (s < 8) or the high nibble of byte s-8, its top two bits in byte 8 + s%4
 * at bit 2*(s/4). d = 0.5, scale(s) = s + 1, v(e) = (e + e/32) % 8 - 4 (so the high bit of
 * byte l differs from pass to pass); x = d * scale * v. */
Test(blocks, q3_K) {
    uint8_t b[110] = {0};
    put16(b + 108, 0x3800);
    for (int s = 0; s < 16; s++) {
        int sv = 33 + s; /* scale s + 1 */
        if (s < 8)
            b[96 + s] |= (uint8_t)(sv & 15);
        else
            b[96 + s - 8] |= (uint8_t)((sv & 15) << 4);
        b[96 + 8 + s % 4] |= (uint8_t)((sv >> 4) << (2 * (s / 4)));
    }
    float want[256];
    for (int e = 0; e < 256; e++) {
        int v = (e + e / 32) % 8 - 4, L = v + 4;
        if (L > 3) {
            b[e % 32] |= (uint8_t)(1 << (e / 32));
            L -= 4;
        }
        b[32 + 32 * (e / 128) + e % 32] |= (uint8_t)(L << (2 * ((e % 128) / 32)));
        want[e] = 0.5f * (float)(e / 16 + 1) * (float)v;
    }
    const int spots[] = {0, 37, 64, 100, 255};
    const float vals[] = {-2.0f, 3.0f, -5.0f, 10.5f, 16.0f};
    expect_block(XD_TYPE_Q3_K, b, want, 256, spots, vals, 5);
}

/* The 12-byte six-bit scale/min packing of Q4_K and Q5_K, as the writer does it. */
static void pack_k4_scales(uint8_t *dst, const int *sc, const int *mn) {
    memset(dst, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            dst[j] = (uint8_t)sc[j];
            dst[j + 4] = (uint8_t)mn[j];
        } else {
            dst[j + 4] = (uint8_t)((sc[j] & 15) | (mn[j] & 15) << 4);
            dst[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            dst[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* Q4_K (144 bytes: d, dmin, scales[12] at 4, qs[128] at 16). Element e's nibble is in
 * qs[32*(e/64) + e%32], low for e%64 < 32, high otherwise; sub-block s = e/32. d = 0.5,
 * dmin = 0.25, scale(s) = 5s + 20 and min(s) = 8s + 7 (both need the top two bits from
 * s >= 4 on), q(e) = (3e + e/32) % 16; x = d*scale*q - dmin*min. */
Test(blocks, q4_K) {
    uint8_t b[144] = {0};
    int sc[8], mn[8];
    for (int s = 0; s < 8; s++) sc[s] = 5 * s + 20, mn[s] = 8 * s + 7;
    put16(b, 0x3800);
    put16(b + 2, 0x3400);
    pack_k4_scales(b + 4, sc, mn);
    float want[256];
    for (int e = 0; e < 256; e++) {
        int q = (3 * e + e / 32) % 16, s = e / 32;
        b[16 + 32 * (e / 64) + e % 32] |= (uint8_t)(q << (e % 64 >= 32 ? 4 : 0));
        want[e] = 0.5f * (float)(sc[s] * q) - 0.25f * (float)mn[s];
    }
    const int spots[] = {0, 33, 130, 255};
    const float vals[] = {-1.75f, 46.25f, 190.25f, 94.25f};
    expect_block(XD_TYPE_Q4_K, b, want, 256, spots, vals, 4);
}

/* Q5_K (176 bytes: d, dmin, scales[12] at 4, qh[32] at 16, qs[128] at 48): as Q4_K plus the
 * fifth bit of element e in bit e/32 of qh[e%32]. q(e) = (7e + e/32) % 32. */
Test(blocks, q5_K) {
    uint8_t b[176] = {0};
    int sc[8], mn[8];
    for (int s = 0; s < 8; s++) sc[s] = 5 * s + 20, mn[s] = 8 * s + 7;
    put16(b, 0x3800);
    put16(b + 2, 0x3400);
    pack_k4_scales(b + 4, sc, mn);
    float want[256];
    for (int e = 0; e < 256; e++) {
        int q = (7 * e + e / 32) % 32, s = e / 32;
        b[48 + 32 * (e / 64) + e % 32] |= (uint8_t)((q & 15) << (e % 64 >= 32 ? 4 : 0));
        b[16 + e % 32] |= (uint8_t)((q >> 4) << (e / 32));
        want[e] = 0.5f * (float)(sc[s] * q) - 0.25f * (float)mn[s];
    }
    const int spots[] = {0, 33, 130, 255};
    const float vals[] = {-1.75f, 96.25f, 350.25f, -15.75f};
    expect_block(XD_TYPE_Q5_K, b, want, 256, spots, vals, 4);
}

/* Q6_K (210 bytes: ql[128] at 0, qh[64] at 128, int8 scales[16] at 192, d at 208). Writer's
 * packing: L = q + 32; in half h = e/128, with k = (e%128)/32 and l = e%32, the low nibble of
 * L goes to ql[64h + l + 32*(k%2)] (low nibble for k < 2, high for k >= 2) and L >> 4 to
 * bits 2k of qh[32h + l]. d = 0.25, scale(s) = 8s - 60, q(e) = (5e + e/16) % 64 - 32. */
Test(blocks, q6_K) {
    uint8_t b[210] = {0};
    put16(b + 208, 0x3400);
    for (int s = 0; s < 16; s++) b[192 + s] = (uint8_t)(int8_t)(8 * s - 60);
    float want[256];
    for (int e = 0; e < 256; e++) {
        int q = (5 * e + e / 16) % 64 - 32, L = q + 32;
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        b[64 * h + l + 32 * (k % 2)] |= (uint8_t)((L & 15) << (4 * (k / 2)));
        b[128 + 32 * h + l] |= (uint8_t)((L >> 4) << (2 * k));
        want[e] = 0.25f * (float)((8 * (e / 16) - 60) * q);
    }
    const int spots[] = {0, 17, 100, 255};
    const float vals[] = {480.0f, 130.0f, -78.0f, -330.0f};
    expect_block(XD_TYPE_Q6_K, b, want, 256, spots, vals, 4);
}

/* Q8_K (292 bytes: float d, int8 qs[256], int16 bsums[16] unused by decoding): d = 0.5,
 * q = j - 128. */
Test(blocks, q8_K) {
    uint8_t b[292] = {0};
    const float d = 0.5f;
    memcpy(b, &d, 4);
    float want[256];
    for (int j = 0; j < 256; j++) {
        b[4 + j] = (uint8_t)(int8_t)(j - 128);
        want[j] = 0.5f * (float)(j - 128);
    }
    const int spots[] = {0, 200, 255};
    const float vals[] = {-64.0f, 36.0f, 63.5f};
    expect_block(XD_TYPE_Q8_K, b, want, 256, spots, vals, 3);
}

/* ---- from_float -> to_float -------------------------------------------------------------- */

#define RT_N (256 * 64)

static float *random_weights(uint64_t seed, int64_t n) {
    struct rng r = {seed};
    float *x = malloc((size_t)n * sizeof *x);
    cr_assert_not_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = rng_weight(&r) * 0.05f;
    /* a few hard blocks: all zero, one spike, constant, negative-dominated, tiny values */
    for (int i = 0; i < 256; i++) {
        x[i] = 0.0f;
        x[256 + i] = i == 77 ? 3.0f : 0.0f;
        x[512 + i] = 0.125f;
        x[768 + i] = -fabsf(x[768 + i]) * 4.0f;
        x[1024 + i] *= 1e-6f;
    }
    return x;
}

static float *roundtrip(uint32_t type, const float *x, int64_t n, void **q_out) {
    void *q = malloc(xd_row_size(type, n));
    float *y = malloc((size_t)n * sizeof *y);
    cr_assert(q && y);
    cr_assert_eq(xd_quantize_row(type, x, q, n), 0);
    cr_assert_eq(xd_dequantize_row(type, q, y, n), 0);
    if (q_out)
        *q_out = q;
    else
        free(q);
    return y;
}

Test(roundtrip, f32_f16_bf16) {
    float *x = random_weights(1, RT_N);
    float *y = roundtrip(XD_TYPE_F32, x, RT_N, NULL);
    cr_assert_eq(memcmp(x, y, RT_N * sizeof *x), 0);
    free(y);
    y = roundtrip(XD_TYPE_F16, x, RT_N, NULL);
    for (int i = 0; i < RT_N; i++) {
        /* half an fp16 ulp: relative 2^-11 in the normal range, 2^-25 absolute below it */
        double bound = fmax(fabs(x[i]) * 0x1p-11, 0x1p-25);
        cr_assert(fabs((double)y[i] - x[i]) <= bound, "f16 [%d] %g -> %g", i, x[i], y[i]);
        cr_assert(xd_fp32_to_fp16(x[i]) == xd_fp32_to_fp16(y[i]));
    }
    free(y);
    y = roundtrip(XD_TYPE_BF16, x, RT_N, NULL);
    for (int i = 0; i < RT_N; i++)
        cr_assert(fabs((double)y[i] - x[i]) <= fabs(x[i]) * 0x1p-8, "bf16 [%d]", i);
    free(y);
    free(x);
}

/* Q8_0 stores d = fp16(amax/127) but rounds q = round(x/d') with the unrounded d', so
 * |y - x| <= |q|*|d - d'| + d'/2 <= 127*hu + (|d| + hu)/2, hu = half an fp16 ulp at d; plus
 * one float rounding of q*d. The largest element maps to +-127. */
Test(roundtrip, q8_0_bound) {
    float *x = random_weights(2, RT_N);
    void *q;
    float *y = roundtrip(XD_TYPE_Q8_0, x, RT_N, &q);
    const uint8_t *b = q;
    for (int blk = 0; blk < RT_N / 32; blk++) {
        uint16_t dh = (uint16_t)(b[34 * blk] | b[34 * blk + 1] << 8);
        double d = fabs(fp16_value(dh)), hu = fp16_half_ulp(dh);
        double bound = 127 * hu + (d + hu) / 2;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * blk + j]));
        int saw127 = amax == 0.0f;
        for (int j = 0; j < 32; j++) {
            int i = 32 * blk + j;
            double err = fabs((double)y[i] - x[i]);
            cr_assert(err <= bound + fabs(y[i]) * 0x1p-24, "q8_0 [%d] %g -> %g (d %g)", i, x[i],
                      y[i], d);
            int8_t qv = (int8_t)b[34 * blk + 2 + j];
            saw127 |= fabsf(x[i]) == amax && (qv == 127 || qv == -127);
        }
        cr_assert(saw127, "block %d: largest element is not +-127", blk);
    }
    free(q);
    free(y);
    free(x);
}

/* Q4_0: d = max/-8 in fp16, q = trunc(x/d' + 8.5) capped at 15. Levels d*(q-8) for q-8 in
 * -8..6 are reached by rounding (error <= d'/2 + 8*hu), while q = 15 also takes everything
 * rounding to level 8 (at most d' away). */
Test(roundtrip, q4_0_bound) {
    float *x = random_weights(3, RT_N);
    void *q;
    float *y = roundtrip(XD_TYPE_Q4_0, x, RT_N, &q);
    const uint8_t *b = q;
    for (int blk = 0; blk < RT_N / 32; blk++) {
        uint16_t dh = (uint16_t)(b[18 * blk] | b[18 * blk + 1] << 8);
        double d = fabs(fp16_value(dh)), hu = fp16_half_ulp(dh);
        for (int j = 0; j < 32; j++) {
            int i = 32 * blk + j;
            int nib = j < 16 ? b[18 * blk + 2 + j] & 15 : b[18 * blk + 2 + j - 16] >> 4;
            double step = nib == 15 ? d + hu : (d + hu) / 2;
            double err = fabs((double)y[i] - x[i]);
            cr_assert(err <= step + 8 * hu + fabs(y[i]) * 0x1p-24, "q4_0 [%d] %g -> %g (d %g)", i,
                      x[i], y[i], d);
        }
    }
    free(q);
    free(y);
    free(x);
}

/* A sub-block of a k-quant holds the levels dl*q - ml for q in [qlo, qhi]. Every value must
 * decode to the level nearest the original: within dl/2 when the original lies inside the
 * levels' span (plus float rounding of the operands), else the span's end nearest it. This is
 * the bound from the sub-block's own scale; values outside the span are the ones the scale
 * search chose to clip, and there must be few of them. Returns how many were clipped. */
static int64_t check_grid(const char *what, int64_t i, float x, float y, float dl, float ml,
                          int qlo, int qhi) {
    float e0 = dl * (float)qlo - ml, e1 = dl * (float)qhi - ml;
    float lo = fminf(e0, e1), hi = fmaxf(e0, e1);
    double half = fabs((double)dl) / 2;
    double slack = (fabs(x) + fabs(ml) + fabs(y)) * 0x1p-22;
    if (x >= lo - half && x <= hi + half) {
        cr_assert(fabs((double)y - x) <= half + slack, "%s [%lld] %.9g -> %.9g, step %g", what,
                  (long long)i, x, y, fabs(dl));
        return 0;
    }
    float end = x < lo ? lo : hi;
    cr_assert(fabs((double)y - end) <= slack, "%s [%lld] %.9g clipped to %.9g, not the end %.9g",
              what, (long long)i, x, y, end);
    return 1;
}

static void k4_unpack(const uint8_t *p, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = p[j] & 63;
        *mn = p[j + 4] & 63;
    } else {
        *sc = (p[j + 4] & 15) | (p[j - 4] >> 6) << 4;
        *mn = (p[j + 4] >> 4) | (p[j] >> 6) << 4;
    }
}

/* Checks every element of n values of a Q4_K/Q5_K/Q6_K/Q8_0 tensor against the originals;
 * returns the number of clipped values. */
static int64_t check_quantized(const char *what, uint32_t type, const uint8_t *q, const float *x,
                               const float *y, int64_t n) {
    int64_t clipped = 0;
    for (int64_t i = 0; i < n; i++) {
        if (type == XD_TYPE_Q8_0) {
            const uint8_t *b = q + 34 * (i / 32);
            uint16_t dh = (uint16_t)(b[0] | b[1] << 8);
            double d = fabs(fp16_value(dh)), hu = fp16_half_ulp(dh);
            double bound = 127 * hu + (d + hu) / 2 + fabs(y[i]) * 0x1p-24;
            cr_assert(fabs((double)y[i] - x[i]) <= bound, "%s [%lld] %.9g -> %.9g, d %g", what,
                      (long long)i, x[i], y[i], d);
        } else if (type == XD_TYPE_Q4_K || type == XD_TYPE_Q5_K) {
            const uint8_t *b = q + (type == XD_TYPE_Q4_K ? 144 : 176) * (i / 256);
            float d = xd_fp16_to_fp32((uint16_t)(b[0] | b[1] << 8));
            float dmin = xd_fp16_to_fp32((uint16_t)(b[2] | b[3] << 8));
            int sc, mn;
            k4_unpack(b + 4, (int)(i % 256) / 32, &sc, &mn);
            clipped += check_grid(what, i, x[i], y[i], d * (float)sc, dmin * (float)mn, 0,
                                  type == XD_TYPE_Q4_K ? 15 : 31);
        } else if (type == XD_TYPE_Q6_K) {
            const uint8_t *b = q + 210 * (i / 256);
            float d = xd_fp16_to_fp32((uint16_t)(b[208] | b[209] << 8));
            int sc = (int8_t)b[192 + (i % 256) / 16];
            clipped += check_grid(what, i, x[i], y[i], d * (float)sc, 0.0f, -32, 31);
        } else {
            cr_assert_fail("no bound for %s", xd_type_name(type));
        }
    }
    return clipped;
}

Test(roundtrip, q4_K_bound_and_accuracy) {
    float *x = random_weights(4, RT_N);
    void *q;
    float *y = roundtrip(XD_TYPE_Q4_K, x, RT_N, &q);
    /* block 4 (values ~1e-7) needs a super-block scale below fp16's range: d flushes to 0
     * and everything decodes to 0, as in llama.cpp; it is checked on its own */
    const uint8_t *qb = q;
    int64_t clipped =
        check_quantized("q4_K", XD_TYPE_Q4_K, qb, x, y, 1024) +
        check_quantized("q4_K", XD_TYPE_Q4_K, qb + 5 * 144, x + 1280, y + 1280, RT_N - 1280);
    cr_assert(clipped <= RT_N / 100, "%lld of %d values clipped", (long long)clipped, RT_N);
    for (int i = 1024; i < 1280; i++)
        cr_assert(y[i] == 0.0f && fabsf(x[i]) < 0x1p-20f, "tiny block [%d] %g -> %g", i, x[i],
                  y[i]);
    /* 4.5 bits per weight: relative rms error about 7% on weight-like data (measured 0.071 on
     * llama.cpp's own Q4_K of mixtral-tiny); zero and constant blocks come back exactly */
    double se = 0, sx = 0;
    for (int i = 1280; i < RT_N; i++) {
        se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        sx += (double)x[i] * x[i];
    }
    cr_assert(sqrt(se / sx) < 0.09, "relative rms error %g", sqrt(se / sx));
    for (int i = 0; i < 256; i++) cr_assert(y[i] == 0.0f, "zero block [%d] -> %g", i, y[i]);
    free(q);
    free(y);
    free(x);
}

/* ---- vec_dot_f32 --------------------------------------------------------------------------- */

/* Random bytes for a row of a type, with every fp16/float scale field set to a sane value
 * (random bytes there could be Inf/NaN, which says nothing about the kernel). */
static void random_row(struct rng *r, uint32_t type, uint8_t *row, int64_t n) {
    const struct xd_type_traits *t = xd_type_traits(type);
    size_t size = xd_row_size(type, n);
    for (size_t i = 0; i < size; i++) row[i] = (uint8_t)rng_u32(r);
    int64_t nb = n / t->blck_size;
    for (int64_t k = 0; k < nb; k++) {
        uint8_t *b = row + (size_t)k * t->type_size;
        uint16_t h1 = xd_fp32_to_fp16(rng_unit(r) * 0.01f);
        uint16_t h2 = xd_fp32_to_fp16(rng_unit(r) * 0.01f);
        switch (type) {
        case XD_TYPE_F32: {
            float v = rng_unit(r);
            memcpy(b, &v, 4);
            break;
        }
        case XD_TYPE_F16: put16(b, xd_fp32_to_fp16(rng_unit(r))); break;
        case XD_TYPE_BF16: put16(b, xd_fp32_to_bf16(rng_unit(r))); break;
        case XD_TYPE_Q4_1:
        case XD_TYPE_Q5_1: put16(b, h1), put16(b + 2, h2); break;
        case XD_TYPE_Q4_0:
        case XD_TYPE_Q5_0:
        case XD_TYPE_Q8_0: put16(b, h1); break;
        case XD_TYPE_Q2_K: put16(b + 80, h1), put16(b + 82, h2); break;
        case XD_TYPE_Q3_K: put16(b + 108, h1); break;
        case XD_TYPE_Q4_K:
        case XD_TYPE_Q5_K: put16(b, h1), put16(b + 2, h2); break;
        case XD_TYPE_Q6_K: put16(b + 208, h1); break;
        case XD_TYPE_Q8_K: {
            float v = rng_unit(r) * 0.01f;
            memcpy(b, &v, 4);
            break;
        }
        default: cr_assert_fail("type %u", type);
        }
    }
}

Test(vec_dot, matches_dequantize_then_double_dot) {
    struct rng r = {5};
    const int64_t lens[] = {256, 512, 768, 4096, 11008};
    const int64_t odd_lens[] = {1, 7, 9, 255, 257, 1000, 4099};
    for (size_t ti = 0; ti < N_COMPUTABLE; ti++) {
        uint32_t type = k_computable[ti];
        const struct xd_type_traits *t = xd_type_traits(type);
        for (size_t li = 0; li < 5 + (t->blck_size == 1 ? 7 : 0); li++) {
            int64_t n = li < 5 ? lens[li] : odd_lens[li - 5];
            uint8_t *row = malloc(xd_row_size(type, n));
            float *x = malloc((size_t)(n + 1) * sizeof *x), *w = malloc((size_t)n * sizeof *w);
            cr_assert(row && x && w);
            random_row(&r, type, row, n);
            for (int64_t i = 0; i < n; i++) x[i] = rng_weight(&r);
            cr_assert_eq(xd_dequantize_row(type, row, w, n), 0);
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)w[i] * x[i];
                mag += fabs((double)w[i] * x[i]);
            }
            float dot = t->vec_dot_f32(row, x, n);
            /* 8 float lanes of at most 32 products each, then doubles: the error is a few
             * float ulps of the sum of magnitudes, plus the final rounding to float */
            double tol = mag * 0x1p-18 + fabs(ref) * 0x1p-24;
            cr_assert(fabs((double)dot - ref) <= tol, "%s n=%lld: dot %.9g ref %.9g tol %g",
                      t->name, (long long)n, dot, ref, tol);
            /* deterministic, and independent of where x lives */
            memmove(x + 1, x, (size_t)n * sizeof *x);
            float again = t->vec_dot_f32(row, x + 1, n);
            cr_assert(bits_of(again) == bits_of(dot), "%s: result depends on x's address", t->name);
            free(row);
            free(x);
            free(w);
        }
    }
}

/* ---- fixtures --------------------------------------------------------------------------- */

/* A model file from tests/fixtures, else from the shared fixture folder beside the repo
 * (../shared/fixtures/models); NULL when neither has it. Caller frees. */
static char *find_model(const char *model) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s.gguf", model);
    char *p = xd_test_fixture(rel);
    if (p && access(p, R_OK) == 0) return p;
    free(p);
    snprintf(rel, sizeof rel, "../../../shared/fixtures/models/%s.gguf", model);
    p = xd_test_fixture(rel);
    if (p && access(p, R_OK) == 0) return p;
    free(p);
    return NULL;
}

static int64_t n_elements(const struct xd_gguf_tensor *t) {
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n;
}

static void check_golden(const char *model) {
    char rel[256];
    snprintf(rel, sizeof rel, "golden/%s.dequant.json", model);
    char *jpath = xd_test_fixture(rel);
    json_error_t jerr;
    json_t *root = json_load_file(jpath, 0, &jerr);
    cr_assert_not_null(root, "%s: %s", jpath, jerr.text);
    cr_assert(json_is_array(root) && json_array_size(root) > 0);
    free(jpath);

    char *mpath = find_model(model);
    if (!mpath) {
        json_decref(root);
        cr_skip_test("%s.gguf is not in tests/fixtures nor ../shared/fixtures/models", model);
    }
    struct xd_gguf g;
    char err[256];
    int rc = xd_gguf_open(mpath, &g, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: %s", mpath, err);
    size_t idx;
    json_t *ent;
    json_array_foreach(root, idx, ent) {
        const char *name = json_string_value(json_object_get(ent, "tensor"));
        json_t *vals = json_object_get(ent, "first_values");
        cr_assert(name && json_is_array(vals));
        const struct xd_gguf_tensor *t = xd_gguf_find_tensor(&g, name);
        cr_assert_not_null(t, "%s: no tensor %s", model, name);
        cr_assert_eq(t->type, (uint32_t)json_integer_value(json_object_get(ent, "ggml_type")), "%s",
                     name);
        size_t nv = json_array_size(vals);
        int64_t blck = xd_type_traits(t->type)->blck_size;
        int64_t n = ((int64_t)nv + blck - 1) / blck * blck;
        cr_assert(n <= n_elements(t));
        float *y = malloc((size_t)n * sizeof *y);
        cr_assert_eq(xd_dequantize_row(t->type, t->data, y, n), 0, "%s", name);
        for (size_t i = 0; i < nv; i++) {
            /* the fixture holds llama.cpp's float rounded to 9 decimal places: ours, rounded
             * the same way, must give the same number */
            double want = json_number_value(json_array_get(vals, i));
            char txt[64];
            snprintf(txt, sizeof txt, "%.9f", (double)y[i]);
            cr_assert(strtod(txt, NULL) == want, "%s %s (%s) [%zu]: %s, llama.cpp %.9f", model,
                      name, xd_type_name(t->type), i, txt, want);
        }
        free(y);
    }
    xd_gguf_close(&g);
    free(mpath);
    json_decref(root);
}

Test(fixtures, golden_mixtral_q8_0) { check_golden("mixtral-tiny-q8_0"); }
Test(fixtures, golden_mixtral_q4_k_m) { check_golden("mixtral-tiny-q4_k_m"); }
Test(fixtures, golden_mixtral_f16) { check_golden("mixtral-tiny-f16"); }
Test(fixtures, golden_qwen3moe_f16) { check_golden("qwen3moe-tiny-f16"); }
Test(fixtures, golden_qwen3moe_q8_0) { check_golden("qwen3moe-tiny-q8_0"); }

/* Every Q8_0/Q4_K/Q5_K/Q6_K tensor of a llama.cpp-quantized model against the f32 model it
 * was made from: each value within its own block's quantization step (check_quantized), and
 * requantizing the f32 tensor with our Q8_0/Q4_K quantizers gives llama.cpp's bytes. */
static void check_against_f32(const char *model) {
    char *qpath = find_model(model);
    char *fpath = find_model("mixtral-tiny-f32");
    if (!qpath || !fpath) {
        free(qpath);
        free(fpath);
        cr_skip_test("%s or mixtral-tiny-f32 missing", model);
    }
    struct xd_gguf q, f;
    char err[256];
    cr_assert_eq(xd_gguf_open(qpath, &q, err, sizeof err), 0, "%s", err);
    cr_assert_eq(xd_gguf_open(fpath, &f, err, sizeof err), 0, "%s", err);
    int n_checked = 0;
    for (int64_t k = 0; k < q.n_tensors; k++) {
        const struct xd_gguf_tensor *tq = &q.tensors[k];
        if (tq->type != XD_TYPE_Q8_0 && tq->type != XD_TYPE_Q4_K && tq->type != XD_TYPE_Q5_K &&
            tq->type != XD_TYPE_Q6_K)
            continue;
        const struct xd_gguf_tensor *tf = xd_gguf_find_tensor(&f, tq->name);
        cr_assert_not_null(tf, "%s missing from the f32 model", tq->name);
        cr_assert_eq(tf->type, XD_TYPE_F32);
        int64_t n = n_elements(tq);
        cr_assert_eq(n, n_elements(tf));
        float *y = malloc((size_t)n * sizeof *y);
        cr_assert_eq(xd_dequantize_row(tq->type, tq->data, y, n), 0);
        int64_t clipped = check_quantized(tq->name, tq->type, tq->data, tf->data, y, n);
        cr_assert(clipped <= n / 200, "%s: %lld of %lld clipped", tq->name, (long long)clipped,
                  (long long)n);
        const struct xd_type_traits *t = xd_type_traits(tq->type);
        if (t->from_float) {
            size_t size = xd_row_size(tq->type, n);
            uint8_t *mine = malloc(size);
            t->from_float(tf->data, mine, n);
            cr_assert_eq(memcmp(mine, tq->data, size), 0,
                         "%s: our %s quantizer differs from llama.cpp's reference", tq->name,
                         t->name);
            free(mine);
        }
        free(y);
        n_checked++;
    }
    cr_assert_gt(n_checked, 0);
    xd_gguf_close(&q);
    xd_gguf_close(&f);
    free(qpath);
    free(fpath);
}

Test(fixtures, mixtral_q8_0_within_step_of_f32) { check_against_f32("mixtral-tiny-q8_0"); }
Test(fixtures, mixtral_q4_k_m_within_step_of_f32) { check_against_f32("mixtral-tiny-q4_k_m"); }
