/* test_gguf.c - the GGUF reader (engine/gguf.c), its dump (engine/gguf_dump.c) and
 * `expertd inspect`.
 *
 * Files are built byte by byte with a small builder, so each test states exactly what is on
 * disk. Every parse runs on a copy that ends against a PROT_NONE guard page (picohttpparser's
 * trick): a read one byte past the end crashes the test even without ASan. The valid files
 * check every parsed value exactly; the malformed corpus checks the error code and that the
 * message names the key or tensor at fault; every prefix of a small file, and a few hundred
 * prefixes of each fixture model, must fail with XD_E_TRUNCATED.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_dump.h"
#include "quant.h"
#include "xd_error.h"
#include "xd_test_util.h"

/* ---- the builder ------------------------------------------------------------------------- */

struct gb {
    uint8_t *p;
    size_t n, cap;
};

static void gb_put(struct gb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void gb_le(struct gb *b, uint64_t v, size_t n) {
    uint8_t t[8];
    for (size_t i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    gb_put(b, t, n);
}

static void gb_u8(struct gb *b, uint8_t v) { gb_le(b, v, 1); }
static void gb_u16(struct gb *b, uint16_t v) { gb_le(b, v, 2); }
static void gb_u32(struct gb *b, uint32_t v) { gb_le(b, v, 4); }
static void gb_u64(struct gb *b, uint64_t v) { gb_le(b, v, 8); }
static void gb_f32(struct gb *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    gb_u32(b, u);
}
static void gb_f64(struct gb *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    gb_u64(b, u);
}
static void gb_strn(struct gb *b, const char *s, size_t n) {
    gb_u64(b, n);
    gb_put(b, s, n);
}
static void gb_str(struct gb *b, const char *s) { gb_strn(b, s, strlen(s)); }

static void gb_header(struct gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gb_put(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

/* A key and its type; the caller writes the value. */
static void gb_key(struct gb *b, const char *key, uint32_t type) {
    gb_str(b, key);
    gb_u32(b, type);
}

/* An array header: element type and count; the caller writes the elements. */
static void gb_arr(struct gb *b, uint32_t elem, uint64_t n) {
    gb_u32(b, elem);
    gb_u64(b, n);
}

static void gb_tensor(struct gb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset) {
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) gb_u64(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

static void gb_pad(struct gb *b, size_t align) {
    while (b->n % align) gb_u8(b, 0);
}

/* n data bytes with a recognizable pattern: byte i of the data section is (i * 7 + 3) & 255 */
static void gb_data(struct gb *b, size_t n) {
    for (size_t i = 0; i < n; i++) gb_u8(b, (uint8_t)(i * 7 + 3));
}

static void gb_free(struct gb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- parsing against a guard page -------------------------------------------------------- */

struct guarded {
    uint8_t *map;
    size_t len;
    uint8_t *p; /* the copy, ending at the guard page */
};

static uint8_t *guard_copy(const void *src, size_t n, struct guarded *gd) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    gd->len = (n + page - 1) / page * page + page;
    gd->map = mmap(NULL, gd->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(gd->map, MAP_FAILED);
    cr_assert_eq(mprotect(gd->map + gd->len - page, page, PROT_NONE), 0);
    gd->p = gd->map + gd->len - page - n;
    if (n) memcpy(gd->p, src, n);
    cr_assert_eq(mprotect(gd->map, gd->len - page, PROT_READ), 0); /* and no writes either */
    return gd->p;
}

static void guard_free(struct guarded *gd) {
    munmap(gd->map, gd->len);
    memset(gd, 0, sizeof *gd);
}

struct parsed {
    struct guarded mem;
    struct xd_gguf g;
    int rc;
    char err[512];
};

static void parse_n(struct parsed *ps, const void *buf, size_t n) {
    memset(ps, 0, sizeof *ps);
    guard_copy(buf, n, &ps->mem);
    ps->rc = xd_gguf_parse(ps->mem.p, n, &ps->g, ps->err, sizeof ps->err);
}

static void parse_gb(struct parsed *ps, const struct gb *b) { parse_n(ps, b->p, b->n); }

static void parsed_free(struct parsed *ps) {
    xd_gguf_close(&ps->g);
    guard_free(&ps->mem);
}

/* Parse b, expect failure with code and a message containing needle; a failed parse leaves
 * the index empty. */
static void expect_fail(const struct gb *b, int code, const char *needle) {
    struct parsed ps;
    parse_gb(&ps, b);
    cr_expect_eq(ps.rc, code, "expected %s, got %s (%d): %s", xd_err_name(code),
                 xd_err_name(ps.rc), ps.rc, ps.err);
    cr_expect(strstr(ps.err, needle) != NULL, "message '%s' lacks '%s'", ps.err, needle);
    cr_expect_eq(ps.g.n_kv, 0);
    cr_expect_eq(ps.g.n_tensors, 0);
    cr_expect_null(ps.g.arena);
    parsed_free(&ps);
}

/* ---- the valid file with every value type ------------------------------------------------ */

#define N_ALL_KV 34
#define ALL_ALIGN 64

static const uint64_t all_ne0[] = {3};
static const uint64_t all_ne1[] = {2, 4};
static const uint64_t all_ne2[] = {32, 2};
static const uint64_t all_ne3[] = {0, 5};

static void build_all_types(struct gb *b, uint32_t version) {
    gb_header(b, version, 4, N_ALL_KV);
    gb_key(b, "t.u8", XD_GGUF_UINT8), gb_u8(b, 255);
    gb_key(b, "t.i8", XD_GGUF_INT8), gb_u8(b, 0x80);
    gb_key(b, "t.u16", XD_GGUF_UINT16), gb_u16(b, 65535);
    gb_key(b, "t.i16", XD_GGUF_INT16), gb_u16(b, 0x8000);
    gb_key(b, "t.u32", XD_GGUF_UINT32), gb_u32(b, UINT32_MAX);
    gb_key(b, "t.i32", XD_GGUF_INT32), gb_u32(b, 0x80000000u);
    gb_key(b, "t.f32", XD_GGUF_FLOAT32), gb_f32(b, 0.1f);
    gb_key(b, "t.bool.true", XD_GGUF_BOOL), gb_u8(b, 1);
    gb_key(b, "t.bool.false", XD_GGUF_BOOL), gb_u8(b, 0);
    gb_key(b, "t.str", XD_GGUF_STRING), gb_str(b, "hello, gguf");
    gb_key(b, "t.str.empty", XD_GGUF_STRING), gb_str(b, "");
    gb_key(b, "t.str.utf8", XD_GGUF_STRING), gb_str(b, "h\xc3\xa9 \xe2\x82\xac");
    gb_key(b, "t.u64", XD_GGUF_UINT64), gb_u64(b, UINT64_MAX);
    gb_key(b, "t.i64", XD_GGUF_INT64), gb_u64(b, (uint64_t)1 << 63);
    gb_key(b, "t.f64", XD_GGUF_FLOAT64), gb_f64(b, 3.141592653589793);
    gb_key(b, "a.u8", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_UINT8, 3);
    gb_u8(b, 0), gb_u8(b, 1), gb_u8(b, 255);
    gb_key(b, "a.i8", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_INT8, 2), gb_u8(b, 0xff), gb_u8(b, 127);
    gb_key(b, "a.u16", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_UINT16, 2), gb_u16(b, 1), gb_u16(b, 65535);
    gb_key(b, "a.i16", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_INT16, 1), gb_u16(b, 0xfffe);
    gb_key(b, "a.u32", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_UINT32, 2);
    gb_u32(b, 7), gb_u32(b, UINT32_MAX);
    gb_key(b, "a.i32", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_INT32, 1), gb_u32(b, (uint32_t)-5);
    gb_key(b, "a.f32", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_FLOAT32, 2);
    gb_f32(b, 0.5f), gb_f32(b, -2.25f);
    gb_key(b, "a.bool", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_BOOL, 3);
    gb_u8(b, 1), gb_u8(b, 0), gb_u8(b, 1);
    gb_key(b, "a.str", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_STRING, 3);
    gb_str(b, "a"), gb_str(b, ""), gb_str(b, "xyz");
    gb_key(b, "a.u64", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_UINT64, 2);
    gb_u64(b, UINT64_MAX), gb_u64(b, 0);
    gb_key(b, "a.i64", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_INT64, 2);
    gb_u64(b, (uint64_t)1 << 63), gb_u64(b, 5);
    gb_key(b, "a.f64", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_FLOAT64, 2);
    gb_f64(b, 1e300), gb_f64(b, -0.0);
    gb_key(b, "a.empty.u32", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_UINT32, 0);
    gb_key(b, "a.empty.str", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_STRING, 0);
    gb_key(b, "a.empty.arr", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_ARRAY, 0);
    /* [[1, 2] as i32, [] as u8, ["x", "yz"]] */
    gb_key(b, "a.nested", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_ARRAY, 3);
    gb_arr(b, XD_GGUF_INT32, 2), gb_u32(b, 1), gb_u32(b, 2);
    gb_arr(b, XD_GGUF_UINT8, 0);
    gb_arr(b, XD_GGUF_STRING, 2), gb_str(b, "x"), gb_str(b, "yz");
    /* [[[7]]] as u16 */
    gb_key(b, "a.deep", XD_GGUF_ARRAY), gb_arr(b, XD_GGUF_ARRAY, 1);
    gb_arr(b, XD_GGUF_ARRAY, 1), gb_arr(b, XD_GGUF_UINT16, 1), gb_u16(b, 7);
    gb_key(b, "general.alignment", XD_GGUF_UINT32), gb_u32(b, ALL_ALIGN);
    gb_key(b, "t.key.last", XD_GGUF_UINT32), gb_u32(b, 42);
    /* tensors: 12 + 16 + 68 bytes; the empty one lies inside the Q8_0 one (allowed) */
    gb_tensor(b, "t0", 1, all_ne0, XD_TYPE_F32, 0);
    gb_tensor(b, "t1", 2, all_ne1, XD_TYPE_F16, 64);
    gb_tensor(b, "t.q8", 2, all_ne2, XD_TYPE_Q8_0, 128);
    gb_tensor(b, "t.empty", 2, all_ne3, XD_TYPE_F32, 192);
    gb_pad(b, ALL_ALIGN);
    gb_data(b, 196); /* no padding after the last tensor: every shorter prefix is truncated */
}

static const struct xd_gguf_value *val(const struct xd_gguf *g, const char *key,
                                       enum xd_gguf_vtype type) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    cr_assert_not_null(v, "key %s missing", key);
    cr_assert_eq(v->type, type, "key %s has type %d", key, v->type);
    return v;
}

static const struct xd_gguf_value *arr(const struct xd_gguf *g, const char *key,
                                       enum xd_gguf_vtype elem, uint64_t n) {
    const struct xd_gguf_value *v = val(g, key, XD_GGUF_ARRAY);
    cr_assert_eq(v->v.arr.elem, elem, "key %s has element type %d", key, v->v.arr.elem);
    cr_assert_eq(v->v.arr.n, n, "key %s has %llu elements", key, (unsigned long long)v->v.arr.n);
    return v;
}

static void check_all_types(const struct parsed *ps, uint32_t version) {
    const struct xd_gguf *g = &ps->g;
    cr_assert_eq(ps->rc, 0, "parse failed: %s", ps->err);
    cr_expect_eq(g->version, version);
    cr_expect_eq(g->n_kv, N_ALL_KV);
    cr_expect_eq(g->n_tensors, 4);
    cr_expect_eq(g->alignment, ALL_ALIGN);
    cr_expect_eq(g->data_offset % ALL_ALIGN, 0);
    cr_expect_eq(g->data_offset + 196, g->size);
    cr_expect_eq(g->base, ps->mem.p);

    /* scalars, exactly */
    cr_expect_eq(val(g, "t.u8", XD_GGUF_UINT8)->v.u64, 255);
    cr_expect_eq(val(g, "t.i8", XD_GGUF_INT8)->v.i64, -128);
    cr_expect_eq(val(g, "t.u16", XD_GGUF_UINT16)->v.u64, 65535);
    cr_expect_eq(val(g, "t.i16", XD_GGUF_INT16)->v.i64, -32768);
    cr_expect_eq(val(g, "t.u32", XD_GGUF_UINT32)->v.u64, UINT32_MAX);
    cr_expect_eq(val(g, "t.i32", XD_GGUF_INT32)->v.i64, INT32_MIN);
    cr_expect_eq(val(g, "t.f32", XD_GGUF_FLOAT32)->v.f64, (double)0.1f);
    cr_expect_eq(val(g, "t.bool.true", XD_GGUF_BOOL)->v.b, true);
    cr_expect_eq(val(g, "t.bool.false", XD_GGUF_BOOL)->v.b, false);
    cr_expect(xd_gguf_str_eq(val(g, "t.str", XD_GGUF_STRING)->v.str, "hello, gguf"));
    cr_expect_eq(val(g, "t.str.empty", XD_GGUF_STRING)->v.str.len, 0);
    cr_expect(xd_gguf_str_eq(val(g, "t.str.utf8", XD_GGUF_STRING)->v.str,
                             "h\xc3\xa9 \xe2\x82\xac"));
    cr_expect_eq(val(g, "t.u64", XD_GGUF_UINT64)->v.u64, UINT64_MAX);
    cr_expect_eq(val(g, "t.i64", XD_GGUF_INT64)->v.i64, INT64_MIN);
    cr_expect_eq(val(g, "t.f64", XD_GGUF_FLOAT64)->v.f64, 3.141592653589793);
    cr_expect_eq(val(g, "t.key.last", XD_GGUF_UINT32)->v.u64, 42);
    cr_expect_eq(xd_gguf_find_key(g, "t.u8"), 0);
    cr_expect_eq(xd_gguf_find_key(g, "t.key.last"), N_ALL_KV - 1);
    cr_expect_eq(xd_gguf_find_key(g, "t.nope"), -1);

    /* arrays, element by element */
    const struct xd_gguf_value *a = arr(g, "a.u8", XD_GGUF_UINT8, 3);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), 0);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), 1);
    cr_expect_eq(xd_gguf_arr_i64(a, 2), 255);
    a = arr(g, "a.i8", XD_GGUF_INT8, 2);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), -1);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), 127);
    a = arr(g, "a.u16", XD_GGUF_UINT16, 2);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), 65535);
    a = arr(g, "a.i16", XD_GGUF_INT16, 1);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), -2);
    a = arr(g, "a.u32", XD_GGUF_UINT32, 2);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), 7);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), UINT32_MAX);
    a = arr(g, "a.i32", XD_GGUF_INT32, 1);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), -5);
    cr_expect_eq(xd_gguf_arr_f64(a, 0), -5.0);
    a = arr(g, "a.f32", XD_GGUF_FLOAT32, 2);
    cr_expect_eq(xd_gguf_arr_f64(a, 0), 0.5);
    cr_expect_eq(xd_gguf_arr_f64(a, 1), -2.25);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), -2); /* truncates toward zero */
    a = arr(g, "a.bool", XD_GGUF_BOOL, 3);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), 1);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), 0);
    cr_expect_eq(xd_gguf_arr_i64(a, 2), 1);
    a = arr(g, "a.str", XD_GGUF_STRING, 3);
    cr_expect(xd_gguf_str_eq(a->v.arr.strs[0], "a"));
    cr_expect(xd_gguf_str_eq(a->v.arr.strs[1], ""));
    cr_expect(xd_gguf_str_eq(a->v.arr.strs[2], "xyz"));
    cr_expect_eq(xd_gguf_arr_i64(a, 0), 0); /* not numeric: 0, no read */
    struct xd_gguf_value e;
    cr_expect_eq(xd_gguf_arr_get(a, 2, &e), 0);
    cr_expect_eq(e.type, XD_GGUF_STRING);
    cr_expect(xd_gguf_str_eq(e.v.str, "xyz"));
    a = arr(g, "a.u64", XD_GGUF_UINT64, 2);
    cr_expect_eq(xd_gguf_arr_get(a, 0, &e), 0);
    cr_expect_eq(e.type, XD_GGUF_UINT64);
    cr_expect_eq(e.v.u64, UINT64_MAX);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), 0);
    a = arr(g, "a.i64", XD_GGUF_INT64, 2);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), INT64_MIN);
    cr_expect_eq(xd_gguf_arr_i64(a, 1), 5);
    a = arr(g, "a.f64", XD_GGUF_FLOAT64, 2);
    cr_expect_eq(xd_gguf_arr_f64(a, 0), 1e300);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), INT64_MAX); /* saturates */
    cr_expect(signbit(xd_gguf_arr_f64(a, 1)));
    cr_expect_eq(xd_gguf_arr_i64(a, 2), 0); /* out of range: 0, no read */
    cr_expect_eq(xd_gguf_arr_get(a, 2, &e), XD_E_INVALID);
    arr(g, "a.empty.u32", XD_GGUF_UINT32, 0);
    arr(g, "a.empty.str", XD_GGUF_STRING, 0);
    arr(g, "a.empty.arr", XD_GGUF_ARRAY, 0);

    a = arr(g, "a.nested", XD_GGUF_ARRAY, 3);
    const struct xd_gguf_value *n0 = &a->v.arr.vals[0], *n1 = &a->v.arr.vals[1],
                               *n2 = &a->v.arr.vals[2];
    cr_expect_eq(n0->type, XD_GGUF_ARRAY);
    cr_expect_eq(n0->v.arr.elem, XD_GGUF_INT32);
    cr_expect_eq(n0->v.arr.n, 2);
    cr_expect_eq(xd_gguf_arr_i64(n0, 0), 1);
    cr_expect_eq(xd_gguf_arr_i64(n0, 1), 2);
    cr_expect_eq(n1->v.arr.elem, XD_GGUF_UINT8);
    cr_expect_eq(n1->v.arr.n, 0);
    cr_expect_eq(n2->v.arr.elem, XD_GGUF_STRING);
    cr_expect_eq(n2->v.arr.n, 2);
    cr_expect(xd_gguf_str_eq(n2->v.arr.strs[0], "x"));
    cr_expect(xd_gguf_str_eq(n2->v.arr.strs[1], "yz"));
    cr_expect_eq(xd_gguf_arr_get(a, 1, &e), 0);
    cr_expect_eq(e.type, XD_GGUF_ARRAY);
    cr_expect_eq(e.v.arr.elem, XD_GGUF_UINT8);
    a = arr(g, "a.deep", XD_GGUF_ARRAY, 1);
    a = &a->v.arr.vals[0];
    cr_expect_eq(a->v.arr.elem, XD_GGUF_ARRAY);
    cr_expect_eq(a->v.arr.n, 1);
    a = &a->v.arr.vals[0];
    cr_expect_eq(a->v.arr.elem, XD_GGUF_UINT16);
    cr_expect_eq(a->v.arr.n, 1);
    cr_expect_eq(xd_gguf_arr_i64(a, 0), 7);

    /* tensors: shape, type, size, offset and where the data pointer lands */
    static const struct {
        const char *name;
        uint32_t type, n_dims;
        int64_t ne[4];
        uint64_t offset, nbytes;
    } want[] = {
        {"t0", XD_TYPE_F32, 1, {3, 1, 1, 1}, 0, 12},
        {"t1", XD_TYPE_F16, 2, {2, 4, 1, 1}, 64, 16},
        {"t.q8", XD_TYPE_Q8_0, 2, {32, 2, 1, 1}, 128, 68},
        {"t.empty", XD_TYPE_F32, 2, {0, 5, 1, 1}, 192, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct xd_gguf_tensor *t = xd_gguf_find_tensor(g, want[i].name);
        cr_assert_not_null(t, "tensor %s missing", want[i].name);
        cr_expect_eq(t, &g->tensors[i]);
        cr_expect_eq(t->type, want[i].type);
        cr_expect_eq(t->n_dims, want[i].n_dims);
        for (int d = 0; d < 4; d++) cr_expect_eq(t->ne[d], want[i].ne[d], "%s ne[%d]", t->name, d);
        cr_expect_eq(t->offset, want[i].offset);
        cr_expect_eq(t->nbytes, want[i].nbytes);
        cr_expect_eq((const uint8_t *)t->data, g->base + g->data_offset + want[i].offset);
        if (t->nbytes)
            cr_expect_eq(*(const uint8_t *)t->data, (uint8_t)(want[i].offset * 7 + 3));
    }
    cr_expect_null(xd_gguf_find_tensor(g, "t2"));
}

Test(gguf, all_value_types_v3) {
    struct gb b = {0};
    struct parsed ps;
    build_all_types(&b, 3);
    parse_gb(&ps, &b);
    check_all_types(&ps, 3);
    parsed_free(&ps);
    gb_free(&b);
}

Test(gguf, all_value_types_v2) {
    struct gb b = {0};
    struct parsed ps;
    build_all_types(&b, 2);
    parse_gb(&ps, &b);
    check_all_types(&ps, 2);
    parsed_free(&ps);
    gb_free(&b);
}

Test(gguf, typed_getters) {
    struct gb b = {0};
    struct parsed ps;
    build_all_types(&b, 3);
    parse_gb(&ps, &b);
    cr_assert_eq(ps.rc, 0, "%s", ps.err);
    const struct xd_gguf *g = &ps.g;
    uint32_t u32 = 9;
    uint64_t u64 = 9;
    int64_t i64 = 9;
    float f = 9;
    bool bl = false;
    struct xd_gguf_str s = {"unchanged", 9};
    const struct xd_gguf_value *av = NULL;

    cr_expect_eq(xd_gguf_get_u32(g, "t.u8", &u32), 0);
    cr_expect_eq(u32, 255);
    cr_expect_eq(xd_gguf_get_u32(g, "t.u32", &u32), 0);
    cr_expect_eq(u32, UINT32_MAX);
    u32 = 9;
    cr_expect_eq(xd_gguf_get_u32(g, "t.u64", &u32), XD_E_BAD_TYPE); /* does not fit */
    cr_expect_eq(xd_gguf_get_u32(g, "t.i8", &u32), XD_E_BAD_TYPE);  /* negative */
    cr_expect_eq(xd_gguf_get_u32(g, "t.str", &u32), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_u32(g, "nope", &u32), XD_E_MISSING);
    cr_expect_eq(u32, 9, "untouched on failure");
    cr_expect_eq(xd_gguf_get_u64(g, "t.u64", &u64), 0);
    cr_expect_eq(u64, UINT64_MAX);
    cr_expect_eq(xd_gguf_get_u64(g, "t.i64", &u64), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_u64(g, "t.f32", &u64), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_u64(g, "t.bool.true", &u64), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_i64(g, "t.i64", &i64), 0);
    cr_expect_eq(i64, INT64_MIN);
    cr_expect_eq(xd_gguf_get_i64(g, "t.i8", &i64), 0);
    cr_expect_eq(i64, -128);
    cr_expect_eq(xd_gguf_get_i64(g, "t.u32", &i64), 0);
    cr_expect_eq(i64, UINT32_MAX);
    i64 = 9;
    cr_expect_eq(xd_gguf_get_i64(g, "t.u64", &i64), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_i64(g, "a.i64", &i64), XD_E_BAD_TYPE);
    cr_expect_eq(i64, 9);
    cr_expect_eq(xd_gguf_get_f32(g, "t.f32", &f), 0);
    cr_expect_eq(f, 0.1f);
    cr_expect_eq(xd_gguf_get_f32(g, "t.f64", &f), 0);
    cr_expect_eq(f, (float)3.141592653589793);
    cr_expect_eq(xd_gguf_get_f32(g, "t.i32", &f), 0);
    cr_expect_eq(f, -2147483648.0f);
    cr_expect_eq(xd_gguf_get_f32(g, "t.u16", &f), 0);
    cr_expect_eq(f, 65535.0f);
    f = 9;
    cr_expect_eq(xd_gguf_get_f32(g, "t.str", &f), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_f32(g, "t.bool.true", &f), XD_E_BAD_TYPE);
    cr_expect_eq(f, 9);
    cr_expect_eq(xd_gguf_get_bool(g, "t.bool.true", &bl), 0);
    cr_expect_eq(bl, true);
    cr_expect_eq(xd_gguf_get_bool(g, "t.bool.false", &bl), 0);
    cr_expect_eq(bl, false);
    cr_expect_eq(xd_gguf_get_bool(g, "t.u8", &bl), XD_E_BAD_TYPE);
    cr_expect_eq(xd_gguf_get_bool(g, "nope", &bl), XD_E_MISSING);
    cr_expect_eq(xd_gguf_get_str(g, "t.u8", &s), XD_E_BAD_TYPE);
    cr_expect(xd_gguf_str_eq(s, "unchanged"));
    cr_expect_eq(xd_gguf_get_str(g, "t.str.empty", &s), 0);
    cr_expect_eq(s.len, 0);
    cr_expect(xd_gguf_str_eq(s, ""));
    cr_expect_eq(xd_gguf_get_arr(g, "t.str", &av), XD_E_BAD_TYPE);
    cr_expect_null(av);
    cr_expect_eq(xd_gguf_get_arr(g, "a.str", &av), 0);
    cr_expect_eq(av, xd_gguf_get(g, "a.str"));
    cr_expect_eq(xd_gguf_get_arr(g, "nope", &av), XD_E_MISSING);
    cr_expect_eq(xd_gguf_vtype_size(XD_GGUF_UINT16), 2);
    cr_expect_eq(xd_gguf_vtype_size(XD_GGUF_STRING), 0);
    cr_expect_eq(xd_gguf_vtype_size(XD_GGUF_VTYPE_COUNT), 0);
    cr_expect_str_eq(xd_gguf_vtype_name(XD_GGUF_FLOAT64), "f64");
    cr_expect_str_eq(xd_gguf_vtype_name(XD_GGUF_VTYPE_COUNT), "?");
    struct xd_gguf_str empty = {NULL, 0};
    cr_expect(xd_gguf_str_eq(empty, ""));
    cr_expect(!xd_gguf_str_eq(empty, "x"));
    parsed_free(&ps);
    gb_free(&b);
}

Test(gguf, minimal_files) {
    struct gb b = {0};
    struct parsed ps;
    gb_header(&b, 3, 0, 0); /* 24 bytes, no padding: what llama.cpp writes for no tensors */
    parse_gb(&ps, &b);
    cr_expect_eq(ps.rc, 0, "%s", ps.err);
    cr_expect_eq(ps.g.n_kv, 0);
    cr_expect_eq(ps.g.n_tensors, 0);
    cr_expect_eq(ps.g.alignment, XD_GGUF_DEFAULT_ALIGNMENT);
    cr_expect_eq(ps.g.data_offset, 32);
    cr_expect_null(xd_gguf_get(&ps.g, "x"));
    cr_expect_null(xd_gguf_find_tensor(&ps.g, "x"));
    parsed_free(&ps);
    gb_free(&b);

    /* default alignment 32 with one tensor */
    static const uint64_t ne[] = {4};
    gb_header(&b, 3, 1, 0);
    gb_tensor(&b, "w", 1, ne, XD_TYPE_F32, 32);
    gb_pad(&b, 32);
    gb_data(&b, 48);
    parse_gb(&ps, &b);
    cr_expect_eq(ps.rc, 0, "%s", ps.err);
    cr_expect_eq(ps.g.data_offset, 64);
    cr_expect_eq(ps.g.tensors[0].nbytes, 16);
    cr_expect_eq((const uint8_t *)ps.g.tensors[0].data, ps.mem.p + 96);
    parsed_free(&ps);
    gb_free(&b);

    /* arrays nested exactly 8 deep are accepted */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "deep8", XD_GGUF_ARRAY);
    for (int d = 0; d < 7; d++) gb_arr(&b, XD_GGUF_ARRAY, 1);
    gb_arr(&b, XD_GGUF_UINT8, 1), gb_u8(&b, 5);
    parse_gb(&ps, &b);
    cr_expect_eq(ps.rc, 0, "%s", ps.err);
    parsed_free(&ps);
    gb_free(&b);

    /* xd_gguf_close on a zeroed and on a failed struct */
    struct xd_gguf z;
    memset(&z, 0, sizeof z);
    z.fd = -1;
    xd_gguf_close(&z);
    xd_gguf_close(NULL);
}

/* ---- the malformed corpus ---------------------------------------------------------------- */

/* A file with one tensor "w" of the given shape and type at offset, data_bytes of data. */
static void build_one_tensor(struct gb *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                             uint64_t offset, size_t data_bytes) {
    gb_header(b, 3, 1, 0);
    gb_tensor(b, "w", n_dims, ne, type, offset);
    gb_pad(b, 32);
    gb_data(b, data_bytes);
}

Test(gguf, bad_header) {
    struct gb b = {0};
    gb_put(&b, "GGU", 3);
    expect_fail(&b, XD_E_TRUNCATED, "too short");
    gb_free(&b);
    expect_fail(&b, XD_E_TRUNCATED, "0 bytes");

    gb_put(&b, "GGUG", 4), gb_u32(&b, 3), gb_u64(&b, 0), gb_u64(&b, 0);
    expect_fail(&b, XD_E_FORMAT, "bad magic");
    gb_free(&b);
    gb_put(&b, "XXXX", 4); /* a short non-GGUF file is called that, not truncated */
    expect_fail(&b, XD_E_FORMAT, "bad magic");
    gb_free(&b);

    for (uint32_t v = 0; v < 6; v++) {
        if (v == 2 || v == 3) continue;
        char needle[32];
        snprintf(needle, sizeof needle, "version %u", v);
        gb_header(&b, v, 0, 0);
        expect_fail(&b, XD_E_VERSION, needle);
        gb_free(&b);
    }
    gb_header(&b, 0x03000000u, 0, 0); /* version 3 written big-endian */
    expect_fail(&b, XD_E_VERSION, "big-endian");
    gb_free(&b);

    gb_put(&b, "GGUF", 4), gb_u32(&b, 3), gb_u64(&b, 0); /* n_kv missing */
    expect_fail(&b, XD_E_TRUNCATED, "header");
    gb_free(&b);
}

Test(gguf, huge_counts) {
    struct gb b = {0};
    gb_header(&b, 3, 0, (uint64_t)1 << 63);
    gb_data(&b, 64);
    expect_fail(&b, XD_E_FORMAT, "9223372036854775808 keys");
    gb_free(&b);
    gb_header(&b, 3, UINT64_MAX, 0);
    expect_fail(&b, XD_E_FORMAT, "18446744073709551615 tensors");
    gb_free(&b);
    gb_header(&b, 3, 0, ((uint64_t)1 << 63) - 1);
    gb_data(&b, 64);
    expect_fail(&b, XD_E_TRUNCATED, "9223372036854775807 keys");
    gb_free(&b);
    gb_header(&b, 3, (uint64_t)1 << 40, 0);
    gb_data(&b, 64);
    expect_fail(&b, XD_E_TRUNCATED, "1099511627776 tensors");
    gb_free(&b);
    /* 5 keys claimed, room for 4 of the smallest: caught before anything is allocated */
    gb_header(&b, 3, 0, 5);
    gb_data(&b, 4 * 14 + 13);
    expect_fail(&b, XD_E_TRUNCATED, "5 keys");
    gb_free(&b);

    /* counts inside values */
    gb_header(&b, 3, 0, 1), gb_key(&b, "big.arr", XD_GGUF_ARRAY);
    gb_arr(&b, XD_GGUF_UINT32, (uint64_t)1 << 62), gb_u32(&b, 1);
    expect_fail(&b, XD_E_TRUNCATED, "key 'big.arr'");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "big.strs", XD_GGUF_ARRAY);
    gb_arr(&b, XD_GGUF_STRING, UINT64_MAX), gb_str(&b, "x");
    expect_fail(&b, XD_E_TRUNCATED, "key 'big.strs'");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "big.nest", XD_GGUF_ARRAY);
    gb_arr(&b, XD_GGUF_ARRAY, (uint64_t)1 << 60), gb_arr(&b, XD_GGUF_UINT8, 0);
    expect_fail(&b, XD_E_TRUNCATED, "key 'big.nest'");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "inner", XD_GGUF_ARRAY);
    gb_arr(&b, XD_GGUF_ARRAY, 1), gb_arr(&b, XD_GGUF_UINT64, 1000), gb_u64(&b, 1);
    expect_fail(&b, XD_E_TRUNCATED, "key 'inner'");
    gb_free(&b);
}

Test(gguf, huge_lengths) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 1), gb_key(&b, "big.str", XD_GGUF_STRING);
    gb_u64(&b, (uint64_t)1 << 62), gb_put(&b, "abc", 3);
    expect_fail(&b, XD_E_TRUNCATED, "key 'big.str'");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "s", XD_GGUF_STRING);
    gb_u64(&b, UINT64_MAX), gb_put(&b, "abc", 3);
    expect_fail(&b, XD_E_TRUNCATED, "key 's'");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "strs", XD_GGUF_ARRAY), gb_arr(&b, XD_GGUF_STRING, 2);
    gb_str(&b, "ok"), gb_u64(&b, 1000), gb_put(&b, "abc", 3);
    expect_fail(&b, XD_E_TRUNCATED, "key 'strs': string 1 of 2");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_u64(&b, UINT64_MAX), gb_data(&b, 20); /* key name */
    expect_fail(&b, XD_E_TRUNCATED, "key 0 of 1");
    gb_free(&b);
    gb_header(&b, 3, 1, 0), gb_u64(&b, (uint64_t)1 << 62), gb_data(&b, 40); /* tensor name */
    expect_fail(&b, XD_E_TRUNCATED, "tensor 0");
    gb_free(&b);
}

Test(gguf, bad_types) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 1), gb_key(&b, "odd", 13), gb_u32(&b, 0);
    expect_fail(&b, XD_E_FORMAT, "key 'odd': unknown value type 13");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "odd", UINT32_MAX), gb_u64(&b, 0);
    expect_fail(&b, XD_E_FORMAT, "key 'odd': unknown value type 4294967295");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "odd.arr", XD_GGUF_ARRAY), gb_arr(&b, 13, 1);
    gb_u64(&b, 0);
    expect_fail(&b, XD_E_FORMAT, "key 'odd.arr': unknown array element type 13");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "odd.inner", XD_GGUF_ARRAY), gb_arr(&b, XD_GGUF_ARRAY, 1);
    gb_arr(&b, 200, 0);
    expect_fail(&b, XD_E_FORMAT, "key 'odd.inner': unknown array element type 200");
    gb_free(&b);

    gb_header(&b, 3, 0, 1), gb_key(&b, "deep9", XD_GGUF_ARRAY);
    for (int d = 0; d < 8; d++) gb_arr(&b, XD_GGUF_ARRAY, 1);
    gb_arr(&b, XD_GGUF_UINT8, 1), gb_u8(&b, 5);
    expect_fail(&b, XD_E_FORMAT, "key 'deep9': arrays nested deeper than 8");
    gb_free(&b);

    gb_header(&b, 3, 0, 1), gb_key(&b, "flag", XD_GGUF_BOOL), gb_u8(&b, 2);
    expect_fail(&b, XD_E_FORMAT, "key 'flag': bool value 2");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "flags", XD_GGUF_ARRAY), gb_arr(&b, XD_GGUF_BOOL, 3);
    gb_u8(&b, 1), gb_u8(&b, 0xff), gb_u8(&b, 0);
    expect_fail(&b, XD_E_FORMAT, "key 'flags': bool element 1");
    gb_free(&b);
}

Test(gguf, bad_names) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 3);
    gb_key(&b, "dup", XD_GGUF_UINT8), gb_u8(&b, 1);
    gb_key(&b, "other", XD_GGUF_UINT8), gb_u8(&b, 1);
    gb_key(&b, "dup", XD_GGUF_STRING), gb_str(&b, "again");
    expect_fail(&b, XD_E_FORMAT, "key 'dup' appears more than once");
    gb_free(&b);

    gb_header(&b, 3, 0, 1), gb_key(&b, "", XD_GGUF_UINT8), gb_u8(&b, 1), gb_data(&b, 8);
    expect_fail(&b, XD_E_FORMAT, "key 0: name of length 0");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_strn(&b, "a\0b", 3), gb_u32(&b, XD_GGUF_UINT8), gb_u8(&b, 1);
    expect_fail(&b, XD_E_FORMAT, "contains NUL");
    gb_free(&b);
    char longkey[1100];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    gb_header(&b, 3, 0, 1), gb_key(&b, longkey, XD_GGUF_UINT8), gb_u8(&b, 1);
    expect_fail(&b, XD_E_FORMAT, "too long");
    gb_free(&b);

    static const uint64_t ne[] = {8};
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "w", 1, ne, XD_TYPE_F32, 0);
    gb_tensor(&b, "w", 1, ne, XD_TYPE_F32, 32);
    gb_pad(&b, 32), gb_data(&b, 64);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w' appears more than once");
    gb_free(&b);
    gb_header(&b, 3, 1, 0), gb_tensor(&b, "", 1, ne, XD_TYPE_F32, 0), gb_pad(&b, 32);
    gb_data(&b, 32);
    expect_fail(&b, XD_E_FORMAT, "tensor 0: name length 0");
    gb_free(&b);
    gb_header(&b, 3, 1, 0);
    gb_strn(&b, "w\0x", 3), gb_u32(&b, 1), gb_u64(&b, 8), gb_u32(&b, XD_TYPE_F32), gb_u64(&b, 0);
    gb_pad(&b, 32), gb_data(&b, 32);
    expect_fail(&b, XD_E_FORMAT, "tensor 0: name contains a NUL");
    gb_free(&b);
}

Test(gguf, bad_tensor_layout) {
    struct gb b = {0};
    static const uint64_t ne8[] = {8}, ne16[] = {16}, ne0[] = {0};

    /* plain overlap: [0, 64) and [32, 64) */
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "a", 1, ne16, XD_TYPE_F32, 0);
    gb_tensor(&b, "b", 1, ne8, XD_TYPE_F32, 32);
    gb_pad(&b, 32), gb_data(&b, 64);
    expect_fail(&b, XD_E_FORMAT, "tensor 'b' (offset 32, 32 bytes) overlaps tensor 'a'");
    gb_free(&b);

    /* the overlap hidden behind an empty tensor: a [0, 128), empty e at 32, c [64, 96). A
     * neighbours-only check compares a-e and e-c and sees nothing. */
    static const uint64_t ne32[] = {32};
    gb_header(&b, 3, 3, 0);
    gb_tensor(&b, "a", 1, ne32, XD_TYPE_F32, 0);
    gb_tensor(&b, "e", 1, ne0, XD_TYPE_F32, 32);
    gb_tensor(&b, "c", 1, ne8, XD_TYPE_F32, 64);
    gb_pad(&b, 32), gb_data(&b, 128);
    expect_fail(&b, XD_E_FORMAT, "tensor 'c' (offset 64, 32 bytes) overlaps tensor 'a'");
    gb_free(&b);

    /* and the legitimate neighbours: back to back, in any table order */
    gb_header(&b, 3, 3, 0);
    gb_tensor(&b, "z", 1, ne8, XD_TYPE_F32, 64);
    gb_tensor(&b, "y", 1, ne16, XD_TYPE_F32, 0);
    gb_tensor(&b, "x", 1, ne0, XD_TYPE_F32, 32);
    gb_pad(&b, 32), gb_data(&b, 96);
    struct parsed ps;
    parse_gb(&ps, &b);
    cr_expect_eq(ps.rc, 0, "%s", ps.err);
    parsed_free(&ps);
    gb_free(&b);

    build_one_tensor(&b, 1, ne8, XD_TYPE_F32, 16, 64);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': offset 16 is not a multiple of the alignment 32");
    gb_free(&b);
    build_one_tensor(&b, 1, ne16, XD_TYPE_F32, 0, 63);
    expect_fail(&b, XD_E_TRUNCATED, "tensor 'w': data [0, +64) lies beyond the end");
    gb_free(&b);
    build_one_tensor(&b, 1, ne8, XD_TYPE_F32, (uint64_t)1 << 63, 64);
    expect_fail(&b, XD_E_TRUNCATED, "tensor 'w'");
    gb_free(&b);
    build_one_tensor(&b, 1, ne8, XD_TYPE_F32, UINT64_MAX - 31, 64);
    expect_fail(&b, XD_E_TRUNCATED, "tensor 'w'");
    gb_free(&b);
    /* an empty tensor still needs the data section to exist */
    gb_header(&b, 3, 1, 0);
    gb_tensor(&b, "w", 1, ne0, XD_TYPE_F32, 0);
    expect_fail(&b, XD_E_TRUNCATED, "tensor 'w': the data section starts at");
    gb_free(&b);
}

Test(gguf, bad_tensor_shape) {
    struct gb b = {0};
    static const uint64_t five[] = {1, 1, 1, 1, 1};
    build_one_tensor(&b, 0, five, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': 0 dimensions");
    gb_free(&b);
    build_one_tensor(&b, 5, five, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': 5 dimensions");
    gb_free(&b);
    static const uint64_t neg[] = {8, (uint64_t)1 << 63};
    build_one_tensor(&b, 2, neg, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_OVERFLOW, "tensor 'w': dimension 1 is 9223372036854775808");
    gb_free(&b);
    static const uint64_t prod[] = {(uint64_t)1 << 32, (uint64_t)1 << 32};
    build_one_tensor(&b, 2, prod, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_OVERFLOW, "tensor 'w': element count overflows");
    gb_free(&b);
    static const uint64_t prod4[] = {1024, 1024, 1024, (uint64_t)1 << 34};
    build_one_tensor(&b, 4, prod4, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_OVERFLOW, "tensor 'w': element count overflows");
    gb_free(&b);
    /* no elements, yet ne[1] * ne[2] wraps: rejected all the same */
    static const uint64_t zero[] = {0, (uint64_t)1 << 40, (uint64_t)1 << 40};
    build_one_tensor(&b, 3, zero, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_OVERFLOW, "tensor 'w': element count overflows");
    gb_free(&b);
    /* 2^62 elements fit int64, their 2^64 bytes do not fit 64 bits */
    static const uint64_t wide[] = {(uint64_t)1 << 62};
    build_one_tensor(&b, 1, wide, XD_TYPE_F32, 0, 32);
    expect_fail(&b, XD_E_OVERFLOW, "tensor 'w': row size overflows");
    gb_free(&b);
    static const uint64_t rows[] = {(uint64_t)1 << 31, (uint64_t)1 << 31};
    build_one_tensor(&b, 2, rows, XD_TYPE_F64, 0, 32);
    expect_fail(&b, XD_E_OVERFLOW, "tensor 'w': byte size overflows");
    gb_free(&b);

    static const uint64_t q33[] = {33, 2};
    build_one_tensor(&b, 2, q33, XD_TYPE_Q8_0, 0, 128);
    expect_fail(&b, XD_E_SHAPE, "tensor 'w': row length 33 is not a multiple of the Q8_0 block "
                                "size 32");
    gb_free(&b);
    static const uint64_t k128[] = {128};
    build_one_tensor(&b, 1, k128, XD_TYPE_Q4_K, 0, 256);
    expect_fail(&b, XD_E_SHAPE, "block size 256");
    gb_free(&b);

    static const uint64_t ne8[] = {8};
    build_one_tensor(&b, 1, ne8, 4, 0, 32); /* Q4_2: removed from ggml long ago */
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': unknown tensor type 4");
    gb_free(&b);
    build_one_tensor(&b, 1, ne8, XD_TYPE_COUNT, 0, 32);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': unknown tensor type");
    gb_free(&b);
    build_one_tensor(&b, 1, ne8, UINT32_MAX, 0, 32);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': unknown tensor type 4294967295");
    gb_free(&b);
}

Test(gguf, bad_alignment) {
    struct gb b = {0};
    static const uint64_t ne8[] = {8};
    gb_header(&b, 3, 0, 1), gb_key(&b, "general.alignment", XD_GGUF_UINT64), gb_u64(&b, 64);
    expect_fail(&b, XD_E_BAD_TYPE, "key 'general.alignment': type u64, expected u32");
    gb_free(&b);
    gb_header(&b, 3, 0, 1), gb_key(&b, "general.alignment", XD_GGUF_STRING), gb_str(&b, "32");
    expect_fail(&b, XD_E_BAD_TYPE, "key 'general.alignment'");
    gb_free(&b);
    uint32_t bad[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gb_header(&b, 3, 0, 1), gb_key(&b, "general.alignment", XD_GGUF_UINT32);
        gb_u32(&b, bad[i]);
        expect_fail(&b, XD_E_FORMAT, "is not a power of two");
        gb_free(&b);
    }
    /* alignment 1 and 2^31 are powers of two */
    uint32_t good[] = {1, 0x80000000u};
    for (size_t i = 0; i < 2; i++) {
        gb_header(&b, 3, good[i] == 1 ? 1 : 0, 1);
        gb_key(&b, "general.alignment", XD_GGUF_UINT32), gb_u32(&b, good[i]);
        if (good[i] == 1) gb_tensor(&b, "w", 1, ne8, XD_TYPE_F32, 0), gb_data(&b, 32);
        struct parsed ps;
        parse_gb(&ps, &b);
        cr_expect_eq(ps.rc, 0, "%s", ps.err);
        cr_expect_eq(ps.g.alignment, good[i]);
        parsed_free(&ps);
        gb_free(&b);
    }
    /* a tensor offset that is aligned to 32 but not to the file's 64 */
    gb_header(&b, 3, 1, 1), gb_key(&b, "general.alignment", XD_GGUF_UINT32), gb_u32(&b, 64);
    gb_tensor(&b, "w", 1, ne8, XD_TYPE_F32, 32), gb_pad(&b, 64), gb_data(&b, 64);
    expect_fail(&b, XD_E_FORMAT, "tensor 'w': offset 32 is not a multiple of the alignment 64");
    gb_free(&b);
}

/* ---- truncation -------------------------------------------------------------------------- */

Test(gguf, every_prefix_is_truncated) {
    struct gb b = {0};
    build_all_types(&b, 3);
    for (size_t n = 0; n < b.n; n++) {
        struct parsed ps;
        parse_n(&ps, b.p, n);
        cr_expect_eq(ps.rc, XD_E_TRUNCATED, "prefix of %zu/%zu bytes: %s (%s)", n, b.n,
                     xd_err_name(ps.rc), ps.err);
        cr_expect(ps.err[0] != 0, "prefix of %zu bytes: no message", n);
        cr_expect_eq(ps.g.n_kv, 0);
        parsed_free(&ps);
    }
    struct parsed ps;
    parse_n(&ps, b.p, b.n);
    cr_expect_eq(ps.rc, 0, "%s", ps.err);
    parsed_free(&ps);
    gb_free(&b);
}

static const char *const fixture_models[] = {
    "mixtral-tiny-q4_k_m.gguf",
    "mixtral-tiny-q8_0.gguf",
    "qwen3moe-tiny-f16.gguf",
    "qwen3moe-tiny-q8_0.gguf",
};

static char *read_fixture(const char *rel, size_t *size) {
    char *path = xd_test_fixture(rel);
    char *buf = xd_test_read_file(path, size);
    cr_assert_not_null(buf, "cannot read %s", path);
    free(path);
    return buf;
}

/* End of the last tensor's data: a prefix at least this long parses (a file may end with
 * padding after it); any shorter one must be reported truncated. */
static size_t tensors_end(const struct xd_gguf *g) {
    uint64_t end = g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        uint64_t e = g->data_offset + g->tensors[i].offset + g->tensors[i].nbytes;
        if (e > end) end = e;
    }
    return (size_t)end;
}

Test(gguf, fixture_prefixes_are_truncated) {
    for (size_t f = 0; f < sizeof fixture_models / sizeof fixture_models[0]; f++) {
        size_t size;
        char *buf = read_fixture(fixture_models[f], &size);
        struct xd_gguf g;
        char err[512];
        cr_assert_eq(xd_gguf_parse(buf, size, &g, err, sizeof err), 0, "%s: %s",
                     fixture_models[f], err);
        size_t end = tensors_end(&g);
        size_t data = (size_t)g.data_offset;
        xd_gguf_close(&g);
        /* 240 cuts spread over the tables (where the parsing happens), 60 over the data, and
         * the edges: the last byte of the tables, of the data, and no cut at all */
        size_t cuts[304], n_cuts = 0;
        for (size_t i = 0; i < 240; i++) cuts[n_cuts++] = data * i / 240 + i % 7;
        for (size_t i = 0; i < 60; i++) cuts[n_cuts++] = data + (size - data) * i / 60 + i % 5;
        cuts[n_cuts++] = data - 1;
        cuts[n_cuts++] = end - 1;
        cuts[n_cuts++] = end;
        cuts[n_cuts++] = size;
        for (size_t i = 0; i < n_cuts; i++) {
            size_t n = cuts[i] < size ? cuts[i] : size;
            struct parsed ps;
            parse_n(&ps, buf, n);
            if (n < end)
                cr_expect_eq(ps.rc, XD_E_TRUNCATED, "%s cut at %zu: %s (%s)", fixture_models[f],
                             n, xd_err_name(ps.rc), ps.err);
            else
                cr_expect_eq(ps.rc, 0, "%s cut at %zu: %s", fixture_models[f], n, ps.err);
            parsed_free(&ps);
        }
        free(buf);
    }
}

/* ---- the fixture models ------------------------------------------------------------------ */

Test(gguf, fixture_models) {
    static const struct {
        const char *file, *arch;
        int64_t n_tensors;
        uint32_t n_expert, n_used, n_layer;
        uint32_t expert_type; /* type of blk.0.ffn_gate_exps.weight */
    } want[] = {
        {"mixtral-tiny-q4_k_m.gguf", "llama", 43, 8, 2, 4, XD_TYPE_Q4_K},
        {"mixtral-tiny-q8_0.gguf", "llama", 43, 8, 2, 4, XD_TYPE_Q8_0},
        {"qwen3moe-tiny-f16.gguf", "qwen3moe", 39, 16, 4, 3, XD_TYPE_F16},
        {"qwen3moe-tiny-q8_0.gguf", "qwen3moe", 39, 16, 4, 3, XD_TYPE_Q8_0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *path = xd_test_fixture(want[i].file);
        struct xd_gguf g;
        char err[512], key[128];
        cr_assert_eq(xd_gguf_open(path, &g, err, sizeof err), 0, "%s: %s", path, err);
        cr_expect_eq(g.version, 3);
        cr_expect_eq(g.n_tensors, want[i].n_tensors, "%s", want[i].file);
        struct xd_gguf_str arch;
        cr_assert_eq(xd_gguf_get_str(&g, "general.architecture", &arch), 0);
        cr_expect(xd_gguf_str_eq(arch, want[i].arch));
        uint32_t v = 0;
        snprintf(key, sizeof key, "%s.expert_count", want[i].arch);
        cr_expect_eq(xd_gguf_get_u32(&g, key, &v), 0);
        cr_expect_eq(v, want[i].n_expert);
        snprintf(key, sizeof key, "%s.expert_used_count", want[i].arch);
        cr_expect_eq(xd_gguf_get_u32(&g, key, &v), 0);
        cr_expect_eq(v, want[i].n_used);
        snprintf(key, sizeof key, "%s.block_count", want[i].arch);
        cr_expect_eq(xd_gguf_get_u32(&g, key, &v), 0);
        cr_expect_eq(v, want[i].n_layer);
        const struct xd_gguf_tensor *t = xd_gguf_find_tensor(&g, "blk.0.ffn_gate_exps.weight");
        cr_assert_not_null(t);
        cr_expect_eq(t->type, want[i].expert_type, "%s: %s", want[i].file,
                     xd_type_name(t->type));
        cr_expect_eq(t->n_dims, 3);
        cr_expect_eq(t->ne[2], want[i].n_expert);
        cr_expect_eq(t->nbytes, xd_row_size(t->type, t->ne[0]) * (uint64_t)t->ne[1] *
                                    (uint64_t)t->ne[2]);
        struct xd_gguf_experts e;
        cr_assert_eq(xd_gguf_experts_summarize(&g, &e), 0);
        cr_expect_eq(e.n_layers, want[i].n_layer);
        uint64_t total = 0;
        for (int64_t k = 0; k < g.n_tensors; k++) total += g.tensors[k].nbytes;
        cr_expect_eq(e.expert_bytes + e.other_bytes, total);
        for (int64_t l = 0; l < e.n_layers; l++) {
            cr_expect_eq(e.layers[l].layer, l);
            cr_expect_eq(e.layers[l].n_expert, want[i].n_expert);
            cr_expect_eq(e.layers[l].n_tensors, 3);
            cr_expect(e.layers[l].consistent);
            cr_expect_eq(e.layers[l].bytes_per_expert * want[i].n_expert, e.layers[l].bytes);
        }
        xd_gguf_experts_free(&e);
        xd_gguf_close(&g);
        cr_expect_eq(g.fd, -1);
        free(path);
    }
}

Test(gguf, open_errors) {
    struct xd_gguf g;
    char err[512];
    cr_expect_eq(xd_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), -ENOENT);
    cr_expect(strstr(err, "/nonexistent/x.gguf") != NULL, "%s", err);
    cr_expect_eq(xd_gguf_open("/", &g, err, sizeof err), -EINVAL);
    char *empty = xd_test_write_temp("", 0);
    cr_expect_eq(xd_gguf_open(empty, &g, err, sizeof err), XD_E_TRUNCATED);
    unlink(empty);
    free(empty);
    xd_gguf_close(&g);
}

/* ---- the dump ---------------------------------------------------------------------------- */

Test(gguf_dump, utf8_seq_len) {
    static const struct {
        const char *s;
        size_t n, want;
    } cases[] = {
        {"a", 1, 1},           {"\xc3\xa9", 2, 2},         {"\xe2\x82\xac", 3, 3},
        {"\xf0\x9f\x98\x80", 4, 4}, {"\xc3", 1, 0},        {"\x80", 1, 0},
        {"\xc0\xaf", 2, 0},    {"\xe0\x80\xaf", 3, 0},      {"\xed\xa0\x80", 3, 0},
        {"\xf4\x90\x80\x80", 4, 0}, {"\xf5\x80\x80\x80", 4, 0}, {"\xe2\x28\xa1", 3, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(xd_utf8_seq_len((const unsigned char *)cases[i].s, cases[i].n),
                     cases[i].want, "case %zu", i);
}

Test(gguf_dump, json_values) {
    struct gb b = {0};
    gb_header(&b, 3, 0, 7);
    gb_key(&b, "bad.utf8", XD_GGUF_STRING), gb_strn(&b, "a\xff" "b\xc3", 4);
    gb_key(&b, "nul", XD_GGUF_STRING), gb_strn(&b, "a\0b", 3);
    gb_key(&b, "nan", XD_GGUF_FLOAT32), gb_f32(&b, NAN);
    gb_key(&b, "inf", XD_GGUF_ARRAY), gb_arr(&b, XD_GGUF_FLOAT64, 2);
    gb_f64(&b, INFINITY), gb_f64(&b, -INFINITY);
    gb_key(&b, "big", XD_GGUF_UINT64), gb_u64(&b, UINT64_MAX);
    gb_key(&b, "k\xfe", XD_GGUF_UINT8), gb_u8(&b, 1);
    gb_key(&b, "k\xfd", XD_GGUF_UINT8), gb_u8(&b, 2); /* same safe form as the key before */
    struct parsed ps;
    parse_gb(&ps, &b);
    cr_assert_eq(ps.rc, 0, "%s", ps.err);
    json_t *j = xd_gguf_dump_json(&ps.g, "mem\xff.gguf");
    cr_assert_not_null(j);
    char *text = json_dumps(j, JSON_COMPACT);
    cr_assert_not_null(text);
    json_error_t jerr;
    json_t *back = json_loads(text, JSON_ALLOW_NUL, &jerr); /* what we print is valid JSON */
    cr_assert_not_null(back, "%s: %s", jerr.text, text);
    json_t *m = json_object_get(back, "metadata");
    cr_expect_str_eq(json_string_value(json_object_get(m, "bad.utf8")),
                     "a\xef\xbf\xbd" "b\xef\xbf\xbd");
    cr_expect_eq(json_string_length(json_object_get(m, "nul")), 3);
    cr_expect_str_eq(json_string_value(json_object_get(m, "nan")), "NaN");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(m, "inf"), 0)), "Infinity");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(m, "inf"), 1)),
                     "-Infinity");
    cr_expect_str_eq(json_string_value(json_object_get(m, "big")), "18446744073709551615");
    cr_expect_eq(json_integer_value(json_object_get(m, "k\xef\xbf\xbd")), 1);
    cr_expect_eq(json_integer_value(json_object_get(m, "k\xef\xbf\xbd#6")), 2);
    cr_expect_eq(json_object_size(m), 7);
    cr_expect_str_eq(json_string_value(json_object_get(back, "file")), "mem\xef\xbf\xbd.gguf");
    free(text);
    json_decref(back);
    json_decref(j);
    parsed_free(&ps);
    gb_free(&b);

    /* the all-types file: full arrays, nested arrays, tensors */
    build_all_types(&b, 3);
    parse_gb(&ps, &b);
    cr_assert_eq(ps.rc, 0, "%s", ps.err);
    j = xd_gguf_dump_json(&ps.g, NULL);
    cr_assert_not_null(j);
    text = json_dumps(json_object_get(j, "metadata"), JSON_COMPACT);
    cr_expect(strstr(text, "\"a.nested\":[[1,2],[],[\"x\",\"yz\"]]") != NULL, "%s", text);
    cr_expect(strstr(text, "\"a.deep\":[[[7]]]") != NULL, "%s", text);
    cr_expect(strstr(text, "\"a.str\":[\"a\",\"\",\"xyz\"]") != NULL, "%s", text);
    cr_expect(strstr(text, "\"a.bool\":[true,false,true]") != NULL, "%s", text);
    cr_expect(strstr(text, "\"a.u64\":[\"18446744073709551615\",0]") != NULL, "%s", text);
    cr_expect(strstr(text, "\"t.i64\":-9223372036854775808") != NULL, "%s", text);
    cr_expect(strstr(text, "\"a.empty.arr\":[]") != NULL, "%s", text);
    free(text);
    json_t *t = json_array_get(json_object_get(j, "tensors"), 2);
    cr_expect_str_eq(json_string_value(json_object_get(t, "name")), "t.q8");
    cr_expect_str_eq(json_string_value(json_object_get(t, "type")), "Q8_0");
    cr_expect_eq(json_integer_value(json_object_get(t, "offset")), 128);
    cr_expect_eq(json_integer_value(json_object_get(t, "bytes")), 68);
    cr_expect_eq(json_array_size(json_object_get(t, "shape")), 2);
    cr_expect_eq(json_integer_value(json_object_get(j, "n_kv")), N_ALL_KV);
    json_decref(j);
    parsed_free(&ps);
    gb_free(&b);
}

Test(gguf_dump, experts_summary) {
    struct gb b = {0};
    static const uint64_t g0[] = {4, 2, 3}, d0[] = {2, 4, 3}, inp[] = {4, 3}, bias[] = {2, 3},
                          odd[] = {4, 2, 5};
    gb_header(&b, 3, 7, 0);
    gb_tensor(&b, "blk.0.ffn_gate_exps.weight", 3, g0, XD_TYPE_F32, 0);   /* 96 B, 32/expert */
    gb_tensor(&b, "blk.0.ffn_up_exps.weight", 3, g0, XD_TYPE_F32, 96);    /* 96 B */
    gb_tensor(&b, "blk.0.ffn_down_exps.weight", 3, d0, XD_TYPE_F32, 192); /* 96 B */
    gb_tensor(&b, "blk.0.ffn_gate_inp.weight", 2, inp, XD_TYPE_F32, 288); /* 48 B, not expert */
    gb_tensor(&b, "blk.12.ffn_gate_exps.bias", 2, bias, XD_TYPE_F32, 352); /* 24 B, 8/expert */
    gb_tensor(&b, "blk.12.ffn_up_exps.weight", 3, odd, XD_TYPE_F32, 384);  /* 160 B, 5 experts */
    gb_tensor(&b, "blk.x.ffn_up_exps.weight", 3, g0, XD_TYPE_F32, 544);   /* not a layer */
    gb_pad(&b, 32), gb_data(&b, 640);
    struct parsed ps;
    parse_gb(&ps, &b);
    cr_assert_eq(ps.rc, 0, "%s", ps.err);
    struct xd_gguf_experts e;
    cr_assert_eq(xd_gguf_experts_summarize(&ps.g, &e), 0);
    cr_assert_eq(e.n_layers, 2);
    cr_expect_eq(e.layers[0].layer, 0);
    cr_expect_eq(e.layers[0].n_expert, 3);
    cr_expect_eq(e.layers[0].n_tensors, 3);
    cr_expect(e.layers[0].consistent);
    cr_expect_eq(e.layers[0].bytes_per_expert, 96);
    cr_expect_eq(e.layers[0].bytes, 288);
    cr_expect_eq(e.layers[1].layer, 12);
    cr_expect_eq(e.layers[1].n_expert, 3);
    cr_expect_eq(e.layers[1].n_tensors, 2);
    cr_expect(!e.layers[1].consistent);
    cr_expect_eq(e.layers[1].bytes_per_expert, 8);
    cr_expect_eq(e.layers[1].bytes, 184);
    cr_expect_eq(e.expert_bytes, 288 + 184);
    cr_expect_eq(e.other_bytes, 48 + 96);
    xd_gguf_experts_free(&e);
    cr_expect_null(e.layers);
    parsed_free(&ps);
    gb_free(&b);
}

Test(gguf_dump, text_report) {
    struct gb b = {0};
    build_all_types(&b, 3);
    struct parsed ps;
    parse_gb(&ps, &b);
    cr_assert_eq(ps.rc, 0, "%s", ps.err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cr_expect_eq(xd_gguf_dump_text(&ps.g, "all\n.gguf", f), 0);
    fclose(f);
    static const char *const needles[] = {
        "file         all\\n.gguf\n",
        "GGUF version 3\n",
        "alignment    64\n",
        "tensors      4\n",
        "a.nested arr[arr,3] = [[1, 2], [], [\"x\", \"yz\"]]\n",
        "a.deep arr[arr,1] = [[[7]]]\n",
        "t.f32 f32 = 0.1\n",
        "t.f64 f64 = 3.14159265358979",
        "t.i64 i64 = -9223372036854775808\n",
        "t.str.utf8 str = \"h\xc3\xa9 \xe2\x82\xac\"\n",
        "a.empty.str arr[str,0] = []\n",
        "(no usable general.architecture",
        "tokenizer\n  (none)\n",
        "t.q8                                 Q8_0     [32, 2]",
        "experts (0 MoE layers)",
    };
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        cr_expect(strstr(text, needles[i]) != NULL, "text lacks '%s':\n%s", needles[i], text);
    free(text);
    parsed_free(&ps);
    gb_free(&b);

    /* long arrays are summarized, long strings cut, bad bytes escaped */
    gb_header(&b, 3, 0, 3);
    gb_key(&b, "tokenizer.ggml.tokens", XD_GGUF_ARRAY), gb_arr(&b, XD_GGUF_STRING, 1000);
    for (int i = 0; i < 1000; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "tok%d", i);
        gb_str(&b, tok);
    }
    char big[300];
    memset(big, 'x', sizeof big);
    gb_key(&b, "long", XD_GGUF_STRING), gb_strn(&b, big, sizeof big);
    gb_key(&b, "ctl", XD_GGUF_STRING), gb_strn(&b, "a\x01\"\\\xff", 5);
    parse_gb(&ps, &b);
    cr_assert_eq(ps.rc, 0, "%s", ps.err);
    f = open_memstream(&text, &len);
    cr_expect_eq(xd_gguf_dump_text(&ps.g, NULL, f), 0);
    fclose(f);
    cr_expect(strstr(text, "= [1000 items: \"tok0\", \"tok1\", \"tok2\", \"tok3\", \"tok4\", "
                           "...]\n") != NULL, "%s", text);
    cr_expect(strstr(text, "tok5") == NULL, "%s", text);
    cr_expect(strstr(text, "vocabulary size                              1000\n") != NULL, "%s",
              text);
    cr_expect(strstr(text, "xxx\"... (300 bytes)") != NULL, "%s", text);
    cr_expect(strstr(text, "ctl str = \"a\\x01\\\"\\\\\\xff\"\n") != NULL, "%s", text);
    free(text);
    parsed_free(&ps);
    gb_free(&b);
}

/* ---- `expertd inspect` end to end -------------------------------------------------------- */

/* Run a shell command, return its stdout (malloc'd) and exit status. */
static char *run(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    char *out = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            out = realloc(out, cap);
            cr_assert_not_null(out);
        }
        memcpy(out + len, chunk, n);
        len += n;
    }
    if (!out) out = calloc(1, 1);
    out[len] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

Test(inspect, fixtures_json) {
    static const struct {
        const char *file;
        size_t n_tensors;
        const char *types; /* of the tensors in names[] below */
    } want[] = {
        {"mixtral-tiny-q4_k_m.gguf", 43, "Q6_K Q4_K Q4_K Q6_K F32"},
        {"mixtral-tiny-q8_0.gguf", 43, "Q8_0 Q8_0 Q8_0 Q8_0 F32"},
        {"qwen3moe-tiny-f16.gguf", 39, "F16 F16 F16 F16 F32"},
        {"qwen3moe-tiny-q8_0.gguf", 39, "Q8_0 Q8_0 Q8_0 Q8_0 F32"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *path = xd_test_fixture(want[i].file), cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' inspect --json '%s'", XD_EXPERTD_BIN, path);
        int status;
        char *out = run(cmd, &status);
        cr_expect_eq(status, 0, "%s", cmd);
        json_error_t jerr;
        json_t *j = json_loads(out, 0, &jerr);
        cr_assert_not_null(j, "%s: %s", want[i].file, jerr.text);
        json_t *ts = json_object_get(j, "tensors");
        cr_expect_eq(json_array_size(ts), want[i].n_tensors, "%s", want[i].file);
        cr_expect_eq(json_integer_value(json_object_get(j, "n_tensors")),
                     (json_int_t)want[i].n_tensors);
        char types[64] = "";
        static const char *const names[] = {"output.weight", "token_embd.weight",
                                            "blk.0.ffn_down_exps.weight",
                                            "blk.2.ffn_down_exps.weight", "output_norm.weight"};
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            for (size_t t = 0; t < json_array_size(ts); t++) {
                json_t *jt = json_array_get(ts, t);
                if (strcmp(json_string_value(json_object_get(jt, "name")), names[k])) continue;
                size_t l = strlen(types);
                snprintf(types + l, sizeof types - l, "%s%s", k ? " " : "",
                         json_string_value(json_object_get(jt, "type")));
            }
        cr_expect_str_eq(types, want[i].types, "%s", want[i].file);
        json_t *m = json_object_get(j, "metadata");
        json_t *toks = json_object_get(m, "tokenizer.ggml.tokens");
        cr_expect(json_array_size(toks) >= 2000, "full vocabulary in JSON");
        json_t *ex = json_object_get(j, "experts");
        cr_expect_eq(json_integer_value(json_object_get(ex, "total_bytes")),
                     json_integer_value(json_object_get(ex, "expert_bytes")) +
                         json_integer_value(json_object_get(ex, "non_expert_bytes")));
        json_decref(j);
        free(out);
        free(path);
    }
}

Test(inspect, fixtures_text) {
    char *path = xd_test_fixture("qwen3moe-tiny-q8_0.gguf"), cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s'", XD_EXPERTD_BIN, path);
    int status;
    char *out = run(cmd, &status);
    cr_expect_eq(status, 0);
    static const char *const needles[] = {
        "GGUF version 3\n",
        "tensors      39\n",
        "qwen3moe.expert_count                        16\n",
        "qwen3moe.expert_feed_forward_length          96\n",
        "vocabulary size                              2048\n",
        ("tokenizer.ggml.tokens arr[str,2048] = [2048 items: \"!\", \"\\\"\", \"#\", \"$\", "
         "\"%\", ...]"),
        "blk.2.ffn_up_exps.weight             Q8_0     [128, 96, 16]",
        "experts (3 MoE layers)",
        /* one expert: (96*128 + 128*96 + 128*96) elements in Q8_0 (34 bytes per 32) */
        "       0       16        3                39168               626688\n",
    };
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        cr_expect(strstr(out, needles[i]) != NULL, "output lacks '%s'", needles[i]);
    cr_expect(strlen(out) < 64 * 1024, "text output is a summary (%zu bytes)", strlen(out));
    free(out);
    free(path);
}

Test(inspect, errors) {
    int status;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' inspect 2>&1", XD_EXPERTD_BIN);
    free(run(cmd, &status));
    cr_expect_eq(status, 2);
    snprintf(cmd, sizeof cmd, "'%s' inspect --bogus x 2>&1", XD_EXPERTD_BIN);
    free(run(cmd, &status));
    cr_expect_eq(status, 2);
    snprintf(cmd, sizeof cmd, "'%s' inspect /nonexistent.gguf 2>&1", XD_EXPERTD_BIN);
    char *out = run(cmd, &status);
    cr_expect_eq(status, 1);
    cr_expect(strstr(out, "/nonexistent.gguf") != NULL, "%s", out);
    free(out);

    /* a fixture cut inside its tensor data: the message names the tensor */
    size_t size;
    char *buf = read_fixture("mixtral-tiny-q8_0.gguf", &size);
    char *tmp = xd_test_write_temp(buf, size - 100);
    snprintf(cmd, sizeof cmd, "'%s' inspect --json '%s' 2>&1", XD_EXPERTD_BIN, tmp);
    out = run(cmd, &status);
    cr_expect_eq(status, 1);
    cr_expect(strstr(out, "tensor 'blk.3.ffn_up_exps.weight'") != NULL, "%s", out);
    cr_expect(strstr(out, "XD_E_TRUNCATED") != NULL, "%s", out);
    free(out);
    unlink(tmp);
    free(tmp);

    /* a duplicate key: the message names it */
    struct gb b = {0};
    gb_header(&b, 3, 0, 2);
    gb_key(&b, "general.name", XD_GGUF_STRING), gb_str(&b, "a");
    gb_key(&b, "general.name", XD_GGUF_STRING), gb_str(&b, "b");
    tmp = xd_test_write_temp(b.p, b.n);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' 2>&1", XD_EXPERTD_BIN, tmp);
    out = run(cmd, &status);
    cr_expect_eq(status, 1);
    cr_expect(strstr(out, "key 'general.name' appears more than once") != NULL, "%s", out);
    free(out);
    unlink(tmp);
    free(tmp);
    gb_free(&b);
    free(buf);
}
