/* test_gen.c - the GGUF writer (engine/gguf_write.c), the synthetic model generator
 * (engine/synth.c) and `expertd gen`.
 *
 * The writer is checked by round trip through the validating reader: every value type, arrays
 * of every element type, arrays of strings and nested arrays, a non-default alignment, tensors
 * of several types, and its errors (misuse, -ENOSPC from /dev/full, a truncated file removed).
 * Generated models are checked against an expected layout written out here independently of
 * synth.c (keys, values, tensor names, types, shapes), for both architectures and every type
 * gen writes; then determinism, the copied vocabulary, the router skew (by routing random
 * inputs through the generated ffn_gate_inp) and the command (usage errors, partial file
 * removal under RLIMIT_FSIZE, and `expertd inspect --json` on its output).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"
#include "synth.h"
#include "xd_error.h"
#include "xd_test_util.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* A fresh directory under /tmp for one test; caller removes it with rm_dir. */
static char *make_dir(void) {
    char tmpl[] = "/tmp/xdgen-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static char *path_in(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void rm_dir(char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    free(dir);
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Write a synthetic model for c to path through the library; asserts success. */
static void synth_to(const struct xd_synth_config *c, const char *path, uint64_t *size) {
    char err[256] = "";
    struct xd_synth *s;
    cr_assert_eq(xd_synth_create(c, &s, err, sizeof err), 0, "create: %s", err);
    struct xd_gguf_writer *w;
    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    int rc = xd_synth_write(s, w, NULL, NULL);
    if (rc) xd_gguf_writer_discard(w);
    else rc = xd_gguf_writer_close(w);
    cr_assert_eq(rc, 0, "write %s: %s", path, xd_strerror(rc));
    if (size) *size = xd_synth_file_size(s);
    xd_synth_destroy(s);
}

static void open_ok(const char *path, struct xd_gguf *g) {
    char err[256] = "";
    int rc = xd_gguf_open(path, g, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: %s (%s)", path, err, xd_strerror(rc));
}

/* Run argv (argv[0] = the expertd binary) with stdout/stderr to files; fsize > 0 caps the file
 * size (RLIMIT_FSIZE, SIGXFSZ ignored so writes fail with EFBIG). Returns the exit status. */
static int run(char *const argv[], const char *out, const char *errf, rlim_t fsize) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0) _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        if (fsize) {
            struct rlimit rl = {fsize, fsize};
            signal(SIGXFSZ, SIG_IGN);
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- writer: round trip of every value type ---------------------------------------------- */

static struct xd_gguf_value scalar(enum xd_gguf_vtype t, int64_t i, double f) {
    struct xd_gguf_value v = {.type = t};
    if (t == XD_GGUF_FLOAT32 || t == XD_GGUF_FLOAT64) v.v.f64 = f;
    else if (t == XD_GGUF_BOOL) v.v.b = i != 0;
    else v.v.i64 = i;
    return v;
}

static struct xd_gguf_value arr_num(enum xd_gguf_vtype elem, const void *data, uint64_t n) {
    struct xd_gguf_value v = {.type = XD_GGUF_ARRAY};
    v.v.arr.elem = elem;
    v.v.arr.n = n;
    v.v.arr.data = data;
    return v;
}

Test(gguf_write, roundtrip_every_type) {
    char *dir = make_dir();
    char *path = path_in(dir, "rt.gguf");
    struct xd_gguf_writer *w;
    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);

    /* scalars: each type at an extreme value */
    static const struct {
        const char *key;
        enum xd_gguf_vtype t;
        int64_t i;
        double f;
    } sc[] = {
        {"s.u8", XD_GGUF_UINT8, 255, 0},          {"s.i8", XD_GGUF_INT8, -128, 0},
        {"s.u16", XD_GGUF_UINT16, 65535, 0},      {"s.i16", XD_GGUF_INT16, -32768, 0},
        {"s.u32", XD_GGUF_UINT32, 4000000000, 0}, {"s.i32", XD_GGUF_INT32, INT32_MIN, 0},
        {"s.f32", XD_GGUF_FLOAT32, 0, -1.5e-3},   {"s.bool", XD_GGUF_BOOL, 1, 0},
        {"s.u64", XD_GGUF_UINT64, -1 /* 2^64-1 */, 0},
        {"s.i64", XD_GGUF_INT64, INT64_MIN, 0},   {"s.f64", XD_GGUF_FLOAT64, 0, 1e300},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        struct xd_gguf_value v = scalar(sc[i].t, sc[i].i, sc[i].f);
        cr_assert_eq(xd_gguf_writer_add_value(w, sc[i].key, &v), 0, "%s", sc[i].key);
    }
    cr_assert_eq(xd_gguf_writer_add_str(w, "s.str", "h\xc3\xa9llo \"w\"\n"), 0);
    cr_assert_eq(xd_gguf_writer_add_str(w, "s.empty", ""), 0);
    struct xd_gguf_value bin = {.type = XD_GGUF_STRING, .v.str = {"a\0b", 3}};
    cr_assert_eq(xd_gguf_writer_add_value(w, "s.nul", &bin), 0);

    /* numeric arrays of every element type */
    const uint8_t u8[] = {0, 1, 255};
    const int8_t i8[] = {-128, 0, 127};
    const uint16_t u16[] = {1, 65535};
    const int16_t i16[] = {-32768, 32767};
    const uint32_t u32[] = {7, 4000000000u};
    const int32_t i32[] = {INT32_MIN, -1, INT32_MAX};
    const float f32[] = {0.5f, -2.25f, 1e-30f};
    const uint8_t bo[] = {1, 0, 1, 1};
    const uint64_t u64[] = {UINT64_MAX, 3};
    const int64_t i64[] = {INT64_MIN, INT64_MAX};
    const double f64[] = {-1e-300, 3.141592653589793};
    const struct {
        const char *key;
        enum xd_gguf_vtype t;
        const void *d;
        uint64_t n, size;
    } ar[] = {
        {"a.u8", XD_GGUF_UINT8, u8, 3, 1},    {"a.i8", XD_GGUF_INT8, i8, 3, 1},
        {"a.u16", XD_GGUF_UINT16, u16, 2, 2}, {"a.i16", XD_GGUF_INT16, i16, 2, 2},
        {"a.u32", XD_GGUF_UINT32, u32, 2, 4}, {"a.i32", XD_GGUF_INT32, i32, 3, 4},
        {"a.f32", XD_GGUF_FLOAT32, f32, 3, 4}, {"a.bool", XD_GGUF_BOOL, bo, 4, 1},
        {"a.u64", XD_GGUF_UINT64, u64, 2, 8}, {"a.i64", XD_GGUF_INT64, i64, 2, 8},
        {"a.f64", XD_GGUF_FLOAT64, f64, 2, 8}, {"a.empty", XD_GGUF_INT32, NULL, 0, 4},
    };
    for (size_t i = 0; i < sizeof ar / sizeof ar[0]; i++)
        cr_assert_eq(xd_gguf_writer_add_arr(w, ar[i].key, ar[i].t, ar[i].d, ar[i].n), 0);

    const char *strs[] = {"", "one", "\xe2\x82\xac uro", "<|endoftext|>"};
    cr_assert_eq(xd_gguf_writer_add_arr_str(w, "a.str", strs, 4), 0);

    /* nested: [[1,2,3], [], [-1]] of i32; [["x","yz"], ["w"]]; and [[[u8 9]]] (3 deep) */
    struct xd_gguf_value inner[3] = {arr_num(XD_GGUF_INT32, i32, 3),
                                     arr_num(XD_GGUF_INT32, NULL, 0),
                                     arr_num(XD_GGUF_INT32, &i32[1], 1)};
    struct xd_gguf_value nest = {.type = XD_GGUF_ARRAY};
    nest.v.arr.elem = XD_GGUF_ARRAY;
    nest.v.arr.n = 3;
    nest.v.arr.vals = inner;
    cr_assert_eq(xd_gguf_writer_add_value(w, "n.i32", &nest), 0);
    const struct xd_gguf_str sa[] = {{"x", 1}, {"yz", 2}}, sb[] = {{"w", 1}};
    struct xd_gguf_value sin[2] = {{.type = XD_GGUF_ARRAY}, {.type = XD_GGUF_ARRAY}};
    sin[0].v.arr.elem = sin[1].v.arr.elem = XD_GGUF_STRING;
    sin[0].v.arr.n = 2;
    sin[0].v.arr.strs = sa;
    sin[1].v.arr.n = 1;
    sin[1].v.arr.strs = sb;
    struct xd_gguf_value nests = {.type = XD_GGUF_ARRAY};
    nests.v.arr.elem = XD_GGUF_ARRAY;
    nests.v.arr.n = 2;
    nests.v.arr.vals = sin;
    cr_assert_eq(xd_gguf_writer_add_value(w, "n.str", &nests), 0);
    struct xd_gguf_value l3 = arr_num(XD_GGUF_UINT8, &u8[2], 1), l2 = {.type = XD_GGUF_ARRAY},
                         l1 = {.type = XD_GGUF_ARRAY};
    l2.v.arr.elem = XD_GGUF_ARRAY;
    l2.v.arr.n = 1;
    l2.v.arr.vals = &l3;
    l1.v.arr.elem = XD_GGUF_ARRAY;
    l1.v.arr.n = 1;
    l1.v.arr.vals = &l2;
    cr_assert_eq(xd_gguf_writer_add_value(w, "n.deep", &l1), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "general.alignment", 64), 0);

    /* tensors: sizes chosen so nothing is a multiple of the alignment or of 4096 */
    const struct {
        const char *name;
        uint32_t type, n_dims;
        int64_t ne[3];
    } tt[] = {
        {"t.f32", XD_TYPE_F32, 1, {5}},
        {"t.q8", XD_TYPE_Q8_0, 2, {64, 3}},
        {"t.empty", XD_TYPE_F32, 2, {4, 0}},
        {"t.f16", XD_TYPE_F16, 3, {7, 3, 2}},
        {"t.q4k", XD_TYPE_Q4_K, 2, {256, 1}},
    };
    const size_t nt = sizeof tt / sizeof tt[0];
    for (size_t i = 0; i < nt; i++)
        cr_assert_eq(xd_gguf_writer_add_tensor(w, tt[i].name, tt[i].type, tt[i].n_dims, tt[i].ne),
                     0);
    uint64_t declared = xd_gguf_writer_file_size(w);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    /* data: byte k of tensor i is (i * 37 + k) & 0xff, fed in awkward pieces */
    uint64_t nbytes[8];
    for (size_t i = 0; i < nt; i++) {
        uint64_t rows = (uint64_t)(tt[i].n_dims > 1 ? tt[i].ne[1] : 1) *
                        (uint64_t)(tt[i].n_dims > 2 ? tt[i].ne[2] : 1);
        nbytes[i] = xd_row_size(tt[i].type, tt[i].ne[0]) * rows;
        for (uint64_t k = 0; k < nbytes[i];) {
            uint8_t piece[5];
            size_t m = 0;
            for (; m < sizeof piece && k < nbytes[i]; m++, k++) piece[m] = (uint8_t)(i * 37 + k);
            cr_assert_eq(xd_gguf_writer_write(w, piece, m), 0);
        }
    }
    cr_assert_eq(xd_gguf_writer_close(w), 0);

    struct xd_gguf g;
    open_ok(path, &g);
    cr_assert_eq(g.size, declared);
    cr_assert_eq(g.version, 3);
    cr_assert_eq(g.alignment, 64);
    cr_assert_eq(g.data_offset % 64, 0);
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        const struct xd_gguf_value *v = xd_gguf_get(&g, sc[i].key);
        cr_assert_not_null(v, "%s", sc[i].key);
        cr_assert_eq(v->type, sc[i].t, "%s", sc[i].key);
        struct xd_gguf_value e = scalar(sc[i].t, sc[i].i, sc[i].f);
        if (sc[i].t == XD_GGUF_FLOAT32) cr_assert_eq((float)v->v.f64, (float)e.v.f64);
        else if (sc[i].t == XD_GGUF_FLOAT64) cr_assert_eq(v->v.f64, e.v.f64);
        else if (sc[i].t == XD_GGUF_BOOL) cr_assert_eq(v->v.b, e.v.b);
        else if (sc[i].t == XD_GGUF_UINT64) cr_assert_eq(v->v.u64, UINT64_MAX);
        else if (sc[i].t == XD_GGUF_UINT8 || sc[i].t == XD_GGUF_UINT16 || sc[i].t == XD_GGUF_UINT32)
            cr_assert_eq(v->v.u64, (uint64_t)sc[i].i, "%s", sc[i].key);
        else cr_assert_eq(v->v.i64, sc[i].i, "%s", sc[i].key);
    }
    struct xd_gguf_str s;
    cr_assert_eq(xd_gguf_get_str(&g, "s.str", &s), 0);
    cr_assert(xd_gguf_str_eq(s, "h\xc3\xa9llo \"w\"\n"));
    cr_assert_eq(xd_gguf_get_str(&g, "s.empty", &s), 0);
    cr_assert_eq(s.len, 0);
    cr_assert_eq(xd_gguf_get_str(&g, "s.nul", &s), 0);
    cr_assert(s.len == 3 && !memcmp(s.ptr, "a\0b", 3));
    for (size_t i = 0; i < sizeof ar / sizeof ar[0]; i++) {
        const struct xd_gguf_value *v;
        cr_assert_eq(xd_gguf_get_arr(&g, ar[i].key, &v), 0, "%s", ar[i].key);
        cr_assert_eq(v->v.arr.elem, ar[i].t);
        cr_assert_eq(v->v.arr.n, ar[i].n);
        if (ar[i].n) cr_assert_eq(memcmp(v->v.arr.data, ar[i].d, ar[i].n * ar[i].size), 0);
    }
    const struct xd_gguf_value *v;
    cr_assert_eq(xd_gguf_get_arr(&g, "a.str", &v), 0);
    cr_assert_eq(v->v.arr.elem, XD_GGUF_STRING);
    cr_assert_eq(v->v.arr.n, 4);
    for (int i = 0; i < 4; i++) cr_assert(xd_gguf_str_eq(v->v.arr.strs[i], strs[i]));
    cr_assert_eq(xd_gguf_get_arr(&g, "n.i32", &v), 0);
    cr_assert_eq(v->v.arr.elem, XD_GGUF_ARRAY);
    cr_assert_eq(v->v.arr.n, 3);
    cr_assert_eq(v->v.arr.vals[0].v.arr.n, 3);
    cr_assert_eq(v->v.arr.vals[1].v.arr.n, 0);
    cr_assert_eq(v->v.arr.vals[2].v.arr.n, 1);
    cr_assert_eq(xd_gguf_arr_i64(&v->v.arr.vals[0], 0), INT32_MIN);
    cr_assert_eq(xd_gguf_arr_i64(&v->v.arr.vals[0], 2), INT32_MAX);
    cr_assert_eq(xd_gguf_arr_i64(&v->v.arr.vals[2], 0), -1);
    cr_assert_eq(xd_gguf_get_arr(&g, "n.str", &v), 0);
    cr_assert_eq(v->v.arr.vals[0].v.arr.elem, XD_GGUF_STRING);
    cr_assert(xd_gguf_str_eq(v->v.arr.vals[0].v.arr.strs[1], "yz"));
    cr_assert(xd_gguf_str_eq(v->v.arr.vals[1].v.arr.strs[0], "w"));
    cr_assert_eq(xd_gguf_get_arr(&g, "n.deep", &v), 0);
    cr_assert_eq(v->v.arr.vals[0].v.arr.vals[0].v.arr.elem, XD_GGUF_UINT8);
    cr_assert_eq(xd_gguf_arr_i64(&v->v.arr.vals[0].v.arr.vals[0], 0), 255);

    cr_assert_eq(g.n_tensors, (int64_t)nt);
    for (size_t i = 0; i < nt; i++) {
        const struct xd_gguf_tensor *t = xd_gguf_find_tensor(&g, tt[i].name);
        cr_assert_not_null(t, "%s", tt[i].name);
        cr_assert_eq(t->type, tt[i].type);
        cr_assert_eq(t->n_dims, tt[i].n_dims);
        for (uint32_t d = 0; d < tt[i].n_dims; d++) cr_assert_eq(t->ne[d], tt[i].ne[d]);
        cr_assert_eq(t->offset % 64, 0);
        cr_assert_eq(t->nbytes, nbytes[i]);
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < nbytes[i]; k++)
            cr_assert_eq(p[k], (uint8_t)(i * 37 + k), "%s byte %llu", tt[i].name,
                         (unsigned long long)k);
    }
    xd_gguf_close(&g);
    free(path);
    rm_dir(dir);
}

/* ---- writer: errors ----------------------------------------------------------------------- */

Test(gguf_write, misuse_is_sticky_and_truncated_files_are_removed) {
    char *dir = make_dir();
    char *path = path_in(dir, "bad.gguf");
    struct xd_gguf_writer *w;
    const int64_t ne[2] = {32, 2};

    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "k", 1), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "k", 2), XD_E_INVALID); /* duplicate */
    cr_assert_eq(xd_gguf_writer_add_u32(w, "other", 2), XD_E_INVALID); /* sticky */
    cr_assert_eq(xd_gguf_writer_close(w), XD_E_INVALID);
    cr_assert(!file_exists(path), "a failed close removes the file");

    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    const int64_t odd[1] = {33};
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "q", XD_TYPE_Q8_0, 1, odd), XD_E_SHAPE);
    xd_gguf_writer_discard(w);
    cr_assert(!file_exists(path));

    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "general.alignment", 3), XD_E_INVALID);
    xd_gguf_writer_discard(w);

    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), 0);
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), XD_E_INVALID);
    xd_gguf_writer_discard(w);

    /* too few bytes: close fails and removes the file; too many: write fails */
    float data[65] = {0};
    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), 0);
    cr_assert_eq(xd_gguf_writer_write(w, data, 4), XD_E_INVALID); /* before begin_data */
    xd_gguf_writer_discard(w);
    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), 0);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "late", 1), XD_E_INVALID);
    xd_gguf_writer_discard(w);
    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), 0);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    cr_assert_eq(xd_gguf_writer_write(w, data, 63 * 4), 0);
    cr_assert_eq(xd_gguf_writer_close(w), XD_E_INVALID);
    cr_assert(!file_exists(path));
    cr_assert_eq(xd_gguf_writer_create(path, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), 0);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    cr_assert_eq(xd_gguf_writer_write(w, data, 65 * 4), XD_E_INVALID);
    xd_gguf_writer_discard(w);
    cr_assert(!file_exists(path));
    free(path);
    rm_dir(dir);
}

Test(gguf_write, enospc_is_returned) {
    int fd = open("/dev/full", O_WRONLY);
    if (fd < 0) cr_skip("no /dev/full here");
    struct xd_gguf_writer *w;
    cr_assert_eq(xd_gguf_writer_create_fd(fd, &w), 0);
    const int64_t ne[2] = {1024, 4096}; /* 16 MiB: more than the writer buffers */
    cr_assert_eq(xd_gguf_writer_add_tensor(w, "t", XD_TYPE_F32, 2, ne), 0);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    float *row = calloc(1024, sizeof *row);
    int rc = 0;
    for (int i = 0; i < 4096 && !rc; i++) rc = xd_gguf_writer_write(w, row, 1024 * sizeof *row);
    cr_assert_eq(rc, -ENOSPC, "got %d (%s)", rc, xd_strerror(rc));
    cr_assert_eq(xd_gguf_writer_write(w, row, 4), -ENOSPC, "errors are sticky");
    cr_assert_eq(xd_gguf_writer_close(w), -ENOSPC);
    free(row);
    cr_assert(file_exists("/dev/full"), "a device is never unlinked");
}

/* ---- generated models: layout ------------------------------------------------------------- */

struct expect_tensor {
    const char *name; /* "%d" for the layer */
    int n_dims;
    char dims[3]; /* D model, Q heads*hd, K kv*hd, H head, E experts, F ff, V vocab */
    char kind;    /* 'n' norm (F32), 'r' router (F32), 'm' large matrix (the type) */
    bool qwen_only;
};

static const struct expect_tensor expect_layer[] = {
    {"blk.%d.attn_norm.weight", 1, "D", 'n', false},
    {"blk.%d.attn_q.weight", 2, "DQ", 'm', false},
    {"blk.%d.attn_k.weight", 2, "DK", 'm', false},
    {"blk.%d.attn_v.weight", 2, "DK", 'm', false},
    {"blk.%d.attn_output.weight", 2, "QD", 'm', false},
    {"blk.%d.attn_q_norm.weight", 1, "H", 'n', true},
    {"blk.%d.attn_k_norm.weight", 1, "H", 'n', true},
    {"blk.%d.ffn_norm.weight", 1, "D", 'n', false},
    {"blk.%d.ffn_gate_inp.weight", 2, "DE", 'r', false},
    {"blk.%d.ffn_gate_exps.weight", 3, "DFE", 'm', false},
    {"blk.%d.ffn_up_exps.weight", 3, "DFE", 'm', false},
    {"blk.%d.ffn_down_exps.weight", 3, "FDE", 'm', false},
};
static const struct expect_tensor expect_global[] = {
    {"token_embd.weight", 2, "DV", 'm', false},
    {"output_norm.weight", 1, "D", 'n', false},
    {"output.weight", 2, "DV", 'm', false},
};

static int64_t dim_of(char d, const struct xd_synth_config *c, int64_t hd, int64_t n_vocab) {
    switch (d) {
    case 'D': return c->d_model;
    case 'Q': return c->n_heads * hd;
    case 'K': return c->n_kv_heads * hd;
    case 'H': return hd;
    case 'E': return c->n_experts;
    case 'F': return c->d_ff;
    case 'V': return n_vocab;
    }
    return -1;
}

static void check_u32(const struct xd_gguf *g, const char *key, uint64_t want) {
    uint32_t v;
    cr_assert_eq(xd_gguf_get_u32(g, key, &v), 0, "missing %s", key);
    cr_assert_eq(v, want, "%s = %u, want %llu", key, v, (unsigned long long)want);
    cr_assert_eq(xd_gguf_get(g, key)->type, XD_GGUF_UINT32, "%s is not u32", key);
}

static void check_str(const struct xd_gguf *g, const char *key, const char *want) {
    struct xd_gguf_str s;
    cr_assert_eq(xd_gguf_get_str(g, key, &s), 0, "missing %s", key);
    cr_assert(xd_gguf_str_eq(s, want), "%s = '%.*s', want '%s'", key, (int)s.len, s.ptr, want);
}

/* Check a generated file against c: every key llama.cpp reads and every tensor. */
static void check_layout(const char *path, const struct xd_synth_config *c, int64_t n_vocab) {
    const bool qwen = c->arch == XD_SYNTH_QWEN3MOE;
    const char *a = qwen ? "qwen3moe" : "llama";
    const int64_t hd = c->head_dim ? c->head_dim : c->d_model / c->n_heads;
    struct xd_gguf g;
    open_ok(path, &g);
    char k[128];
#define K(s) (snprintf(k, sizeof k, "%s.%s", a, s), k)
    check_str(&g, "general.architecture", a);
    check_u32(&g, "general.quantization_version", 2);
    check_u32(&g, K("context_length"), (uint64_t)c->n_ctx);
    check_u32(&g, K("embedding_length"), (uint64_t)c->d_model);
    check_u32(&g, K("block_count"), (uint64_t)c->n_layers);
    check_u32(&g, K("feed_forward_length"), (uint64_t)c->d_ff);
    check_u32(&g, K("attention.head_count"), (uint64_t)c->n_heads);
    check_u32(&g, K("attention.head_count_kv"), (uint64_t)c->n_kv_heads);
    check_u32(&g, K("rope.dimension_count"), (uint64_t)hd);
    check_u32(&g, K("expert_count"), (uint64_t)c->n_experts);
    check_u32(&g, K("expert_used_count"), (uint64_t)c->top_k);
    check_u32(&g, K("vocab_size"), (uint64_t)n_vocab);
    float f;
    cr_assert_eq(xd_gguf_get_f32(&g, K("rope.freq_base"), &f), 0);
    cr_assert_eq(f, c->rope_base);
    cr_assert_eq(xd_gguf_get_f32(&g, K("attention.layer_norm_rms_epsilon"), &f), 0);
    cr_assert_eq(f, c->rms_eps);
    if (qwen) {
        check_u32(&g, K("attention.key_length"), (uint64_t)hd);
        check_u32(&g, K("attention.value_length"), (uint64_t)hd);
        check_u32(&g, K("expert_feed_forward_length"), (uint64_t)c->d_ff);
    } else {
        cr_assert_null(xd_gguf_get(&g, K("attention.key_length")));
    }
#undef K
    static const struct {
        uint32_t type, ftype;
    } ft[] = {{XD_TYPE_F32, 0}, {XD_TYPE_F16, 1}, {XD_TYPE_Q8_0, 7}, {XD_TYPE_Q4_K, 14}};
    for (size_t i = 0; i < sizeof ft / sizeof ft[0]; i++)
        if (ft[i].type == c->type) check_u32(&g, "general.file_type", ft[i].ftype);
    const struct xd_gguf_value *tok;
    cr_assert_eq(xd_gguf_get_arr(&g, "tokenizer.ggml.tokens", &tok), 0);
    cr_assert_eq(tok->v.arr.elem, XD_GGUF_STRING);
    cr_assert_eq((int64_t)tok->v.arr.n, n_vocab);

    const int64_t n_layer_t = qwen ? 12 : 10;
    cr_assert_eq(g.n_tensors, 3 + c->n_layers * n_layer_t);
    const uint32_t blck = (uint32_t)xd_type_traits(c->type)->blck_size;
    for (int64_t l = -1; l < c->n_layers; l++) {
        const struct expect_tensor *list = l < 0 ? expect_global : expect_layer;
        size_t n = l < 0 ? 3 : sizeof expect_layer / sizeof expect_layer[0];
        for (size_t i = 0; i < n; i++) {
            if (list[i].qwen_only && !qwen) continue;
            char name[64];
            snprintf(name, sizeof name, list[i].name, (int)l);
            const struct xd_gguf_tensor *t = xd_gguf_find_tensor(&g, name);
            cr_assert_not_null(t, "%s: no tensor %s", path, name);
            cr_assert_eq(t->n_dims, (uint32_t)list[i].n_dims, "%s dims", name);
            for (int d = 0; d < list[i].n_dims; d++)
                cr_assert_eq(t->ne[d], dim_of(list[i].dims[d], c, hd, n_vocab), "%s ne[%d]",
                             name, d);
            uint32_t want = list[i].kind != 'm' ? XD_TYPE_F32
                            : t->ne[0] % blck           ? XD_TYPE_F16
                                                        : c->type;
            cr_assert_eq(t->type, want, "%s is %s, want %s", name, xd_type_name(t->type),
                         xd_type_name(want));
        }
    }
    xd_gguf_close(&g);
}

static void gen_and_check(enum xd_synth_arch arch, uint32_t type) {
    char *dir = make_dir();
    char *path = path_in(dir, "m.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, arch);
    c.type = type;
    c.n_layers = 2;
    uint64_t size;
    synth_to(&c, path, &size);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq((uint64_t)st.st_size, size, "file size matches xd_synth_file_size");
    check_layout(path, &c, 258);
    free(path);
    rm_dir(dir);
}

Test(gen, mixtral_f32) { gen_and_check(XD_SYNTH_MIXTRAL, XD_TYPE_F32); }
Test(gen, mixtral_f16) { gen_and_check(XD_SYNTH_MIXTRAL, XD_TYPE_F16); }
Test(gen, mixtral_q8_0) { gen_and_check(XD_SYNTH_MIXTRAL, XD_TYPE_Q8_0); }
Test(gen, mixtral_q4_k) { gen_and_check(XD_SYNTH_MIXTRAL, XD_TYPE_Q4_K); }
Test(gen, qwen3moe_f32) { gen_and_check(XD_SYNTH_QWEN3MOE, XD_TYPE_F32); }
Test(gen, qwen3moe_f16) { gen_and_check(XD_SYNTH_QWEN3MOE, XD_TYPE_F16); }
Test(gen, qwen3moe_q8_0) { gen_and_check(XD_SYNTH_QWEN3MOE, XD_TYPE_Q8_0); }
Test(gen, qwen3moe_q4_k) { gen_and_check(XD_SYNTH_QWEN3MOE, XD_TYPE_Q4_K); }

Test(gen, rows_that_are_not_whole_blocks_fall_back_to_f16) {
    char *dir = make_dir();
    char *path = path_in(dir, "fb.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_QWEN3MOE);
    c.type = XD_TYPE_Q4_K;
    c.n_layers = 1;
    c.d_ff = 320;   /* ffn_down_exps rows of 320: not whole 256-blocks */
    c.head_dim = 48; /* attn_output rows of 8*48 = 384: neither */
    synth_to(&c, path, NULL);
    check_layout(path, &c, 258); /* expects F16 exactly where ne[0] % 256 != 0 */
    struct xd_gguf g;
    open_ok(path, &g);
    cr_assert_eq(xd_gguf_find_tensor(&g, "blk.0.ffn_down_exps.weight")->type, XD_TYPE_F16);
    cr_assert_eq(xd_gguf_find_tensor(&g, "blk.0.attn_output.weight")->type, XD_TYPE_F16);
    cr_assert_eq(xd_gguf_find_tensor(&g, "blk.0.ffn_up_exps.weight")->type, XD_TYPE_Q4_K);
    xd_gguf_close(&g);
    struct xd_synth *s;
    cr_assert_eq(xd_synth_create(&c, &s, NULL, 0), 0);
    int n_fallback = 0;
    for (int64_t i = 0; i < xd_synth_n_tensors(s); i++)
        n_fallback += xd_synth_tensor_at(s, i)->fallback;
    cr_assert_eq(n_fallback, 2);
    xd_synth_destroy(s);
    free(path);
    rm_dir(dir);
}

Test(gen, bad_configs_are_rejected_with_a_message) {
    struct xd_synth_config c;
    struct xd_synth *s;
    char err[256];
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.head_dim = 64; /* 256 / 8 = 32 is the only head size mixtral can have */
    cr_assert_eq(xd_synth_create(&c, &s, err, sizeof err), XD_E_INVALID);
    cr_assert_null(s);
    cr_assert(strstr(err, "head_dim"), "%s", err);
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.top_k = 9;
    cr_assert_eq(xd_synth_create(&c, &s, err, sizeof err), XD_E_INVALID);
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.n_kv_heads = 3;
    cr_assert_eq(xd_synth_create(&c, &s, err, sizeof err), XD_E_INVALID);
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.type = XD_TYPE_IQ2_XXS;
    cr_assert_eq(xd_synth_create(&c, &s, err, sizeof err), XD_E_UNSUPPORTED);
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.vocab_path = "/nonexistent/vocab.gguf";
    cr_assert_eq(xd_synth_create(&c, &s, err, sizeof err), -ENOENT);
}

/* ---- determinism -------------------------------------------------------------------------- */

Test(gen, same_seed_same_bytes_any_thread_count) {
    char *dir = make_dir();
    char *p1 = path_in(dir, "a.gguf"), *p2 = path_in(dir, "b.gguf"), *p3 = path_in(dir, "c.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_QWEN3MOE);
    c.n_layers = 2;
    c.skew = 0.5;
    c.seed = 42;
    c.n_threads = 1;
    synth_to(&c, p1, NULL);
    c.n_threads = 3;
    synth_to(&c, p2, NULL);
    c.seed = 43;
    synth_to(&c, p3, NULL);
    size_t n1, n2, n3;
    char *b1 = xd_test_read_file(p1, &n1), *b2 = xd_test_read_file(p2, &n2),
         *b3 = xd_test_read_file(p3, &n3);
    cr_assert(b1 && b2 && b3);
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(b1, b2, n1), 0, "same seed, 1 vs 3 threads: identical files");
    cr_assert_eq(n1, n3);
    cr_assert_neq(memcmp(b1, b3, n1), 0);
    /* and every large tensor differs, not just the seed key */
    struct xd_gguf g1, g3;
    open_ok(p1, &g1);
    open_ok(p3, &g3);
    for (int64_t i = 0; i < g1.n_tensors; i++)
        cr_assert_neq(memcmp(g1.tensors[i].data, g3.tensors[i].data, g1.tensors[i].nbytes), 0,
                      "%s is the same under another seed", g1.tensors[i].name);
    xd_gguf_close(&g1);
    xd_gguf_close(&g3);
    free(b1), free(b2), free(b3);
    free(p1), free(p2), free(p3);
    rm_dir(dir);
}

/* A path gets O_DIRECT (aligned blocks, unaligned tail buffered); a plain fd does not: both
 * must produce the same bytes. */
Test(gen, direct_and_buffered_writes_agree) {
    char *dir = make_dir();
    char *p1 = path_in(dir, "direct.gguf"), *p2 = path_in(dir, "buffered.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.n_layers = 3;
    c.d_model = 320; /* odd sizes: the header and tensors straddle 4 KiB blocks */
    c.d_ff = 352;
    synth_to(&c, p1, NULL);
    struct xd_synth *s;
    cr_assert_eq(xd_synth_create(&c, &s, NULL, 0), 0);
    int fd = open(p2, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    struct xd_gguf_writer *w;
    cr_assert_eq(xd_gguf_writer_create_fd(fd, &w), 0);
    cr_assert_eq(xd_synth_write(s, w, NULL, NULL), 0);
    cr_assert_eq(xd_gguf_writer_close(w), 0);
    xd_synth_destroy(s);
    size_t n1, n2;
    char *b1 = xd_test_read_file(p1, &n1), *b2 = xd_test_read_file(p2, &n2);
    cr_assert(b1 && b2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(n1 % 4096 != 0, 1, "the test wants an unaligned tail");
    cr_assert_eq(memcmp(b1, b2, n1), 0);
    free(b1), free(b2), free(p1), free(p2);
    rm_dir(dir);
}

/* ---- weights: scale and calm -------------------------------------------------------------- */

Test(gen, weights_have_the_planned_scale) {
    char *dir = make_dir();
    char *path = path_in(dir, "w.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.type = XD_TYPE_F32;
    c.n_layers = 2;
    synth_to(&c, path, NULL);
    struct xd_gguf g;
    open_ok(path, &g);
    const struct {
        const char *name;
        double mean, std;
    } want[] = {
        {"token_embd.weight", 0, 1},
        {"blk.0.attn_q.weight", 0, 1 / 16.0},             /* 1/sqrt(256) */
        {"blk.1.ffn_up_exps.weight", 0, 1 / 16.0},
        {"blk.1.ffn_down_exps.weight", 0, 1 / sqrt(512.0) / 2}, /* / sqrt(2 * 2 layers) */
        {"blk.0.attn_output.weight", 0, 1 / 16.0 / 2},
        {"output_norm.weight", 1, 0.05},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct xd_gguf_tensor *t = xd_gguf_find_tensor(&g, want[i].name);
        cr_assert_not_null(t);
        const float *x = t->data;
        int64_t n = (int64_t)(t->nbytes / 4);
        double s = 0, ss = 0, amax = 0;
        for (int64_t j = 0; j < n; j++) {
            s += x[j];
            ss += (double)x[j] * x[j];
            if (fabs(x[j] - want[i].mean) > amax) amax = fabs(x[j] - want[i].mean);
        }
        double mean = s / (double)n, sd = sqrt(ss / (double)n - mean * mean);
        cr_assert(fabs(mean - want[i].mean) < 4 * want[i].std / sqrt((double)n) + 1e-6,
                  "%s mean %g", want[i].name, mean);
        /* the sd estimate of n samples is good to about 1/sqrt(2n) */
        cr_assert(fabs(sd / want[i].std - 1) < 0.02 + 3 / sqrt(2.0 * (double)n),
                  "%s sd %g want %g", want[i].name, sd, want[i].std);
        cr_assert(amax <= 4.34 * want[i].std, "%s: the quantile table ends at 4.32 sd",
                  want[i].name);
        cr_assert(amax >= 3.0 * want[i].std || n < 1000, "%s: tails missing", want[i].name);
    }
    xd_gguf_close(&g);
    free(path);
    rm_dir(dir);
}

/* ---- vocabulary --------------------------------------------------------------------------- */

Test(gen, builtin_vocab_is_gpt2_bytes) {
    char *dir = make_dir();
    char *path = path_in(dir, "v.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    c.n_layers = 1;
    synth_to(&c, path, NULL);
    struct xd_gguf g;
    open_ok(path, &g);
    check_str(&g, "tokenizer.ggml.model", "gpt2");
    check_str(&g, "tokenizer.ggml.pre", "gpt-2");
    check_u32(&g, "tokenizer.ggml.bos_token_id", 256);
    check_u32(&g, "tokenizer.ggml.eos_token_id", 257);
    const struct xd_gguf_value *tok, *ty, *mg;
    cr_assert_eq(xd_gguf_get_arr(&g, "tokenizer.ggml.tokens", &tok), 0);
    cr_assert_eq(xd_gguf_get_arr(&g, "tokenizer.ggml.token_type", &ty), 0);
    cr_assert_eq(xd_gguf_get_arr(&g, "tokenizer.ggml.merges", &mg), 0);
    cr_assert_eq(mg->v.arr.elem, XD_GGUF_STRING);
    cr_assert_eq(mg->v.arr.n, 0);
    cr_assert_eq(tok->v.arr.n, 258);
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs['A'], "A"));
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs[' '], "\xc4\xa0"));  /* U+0120 'Ġ' */
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs['\n'], "\xc4\x8a")); /* U+010A 'Ċ' */
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs[0], "\xc4\x80"));    /* U+0100 */
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs[0xad], "\xc5\x83")); /* soft hyphen: last, U+0143 */
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs[0xe9], "\xc3\xa9")); /* 'é' stands for itself */
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs[256], "<|startoftext|>"));
    cr_assert(xd_gguf_str_eq(tok->v.arr.strs[257], "<|endoftext|>"));
    /* all distinct, as a vocabulary must be */
    for (int i = 0; i < 258; i++)
        for (int j = i + 1; j < 258; j++)
            cr_assert(tok->v.arr.strs[i].len != tok->v.arr.strs[j].len ||
                      memcmp(tok->v.arr.strs[i].ptr, tok->v.arr.strs[j].ptr,
                             tok->v.arr.strs[i].len));
    cr_assert_eq(xd_gguf_arr_i64(ty, 65), 1);
    cr_assert_eq(xd_gguf_arr_i64(ty, 257), 3);
    xd_gguf_close(&g);
    free(path);
    rm_dir(dir);
}

Test(gen, vocab_is_copied) {
    char *dir = make_dir();
    char *path = path_in(dir, "vc.gguf");
    char *src = xd_test_fixture("tokenizer/ggml-vocab-llama-spm.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_QWEN3MOE);
    c.n_layers = 1;
    c.vocab_path = src;
    synth_to(&c, path, NULL);
    struct xd_gguf g, v;
    open_ok(path, &g);
    open_ok(src, &v);
    const struct xd_gguf_value *a, *b;
    cr_assert_eq(xd_gguf_get_arr(&v, "tokenizer.ggml.tokens", &a), 0);
    cr_assert_eq(xd_gguf_get_arr(&g, "tokenizer.ggml.tokens", &b), 0);
    cr_assert_eq(a->v.arr.n, b->v.arr.n);
    for (uint64_t i = 0; i < a->v.arr.n; i++)
        cr_assert(a->v.arr.strs[i].len == b->v.arr.strs[i].len &&
                      !memcmp(a->v.arr.strs[i].ptr, b->v.arr.strs[i].ptr, a->v.arr.strs[i].len),
                  "token %llu differs", (unsigned long long)i);
    /* every tokenizer.* key of the source is there with the same type */
    int n_copied = 0;
    for (int64_t i = 0; i < v.n_kv; i++) {
        if (strncmp(v.kv[i].key, "tokenizer.", 10)) continue;
        const struct xd_gguf_value *x = xd_gguf_get(&g, v.kv[i].key);
        cr_assert_not_null(x, "%s not copied", v.kv[i].key);
        cr_assert_eq(x->type, v.kv[i].value.type);
        n_copied++;
    }
    cr_assert_geq(n_copied, 5);
    check_str(&g, "tokenizer.ggml.model", "llama");
    check_layout(path, &c, (int64_t)a->v.arr.n);
    xd_gguf_close(&g);
    xd_gguf_close(&v);
    free(src);
    free(path);
    rm_dir(dir);
}

/* ---- router skew -------------------------------------------------------------------------- */

/* Route n random unit-variance inputs through every layer's ffn_gate_inp (E x D, F32) and
 * return the largest share of top-k slots any one expert gets, over the layers (mean). Also
 * reports the hottest expert of each layer in hot[]. */
static double top_share(const char *path, int64_t k, int n, int hot[]) {
    struct xd_gguf g;
    open_ok(path, &g);
    uint32_t n_layers, E;
    cr_assert_eq(xd_gguf_get_u32(&g, "llama.block_count", &n_layers), 0);
    cr_assert_eq(xd_gguf_get_u32(&g, "llama.expert_count", &E), 0);
    double total = 0;
    uint64_t st = 12345;
    for (uint32_t l = 0; l < n_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp.weight", l);
        const struct xd_gguf_tensor *t = xd_gguf_find_tensor(&g, name);
        cr_assert_eq(t->type, XD_TYPE_F32);
        const int64_t D = t->ne[0];
        const float *W = t->data;
        float *x = malloc((size_t)D * sizeof *x), logit[64];
        int count[64] = {0};
        for (int s = 0; s < n; s++) {
            for (int64_t d = 0; d < D; d++) { /* Box-Muller: independent of synth's RNG */
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                double u1 = ((st >> 11) + 1.0) / 9007199254740993.0;
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                double u2 = (st >> 11) / 9007199254740992.0;
                x[d] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
            }
            for (uint32_t e = 0; e < E; e++) {
                double acc = 0;
                for (int64_t d = 0; d < D; d++) acc += (double)W[e * D + d] * x[d];
                logit[e] = (float)acc;
            }
            for (int64_t j = 0; j < k; j++) { /* top-k by repeated argmax */
                uint32_t best = 0;
                for (uint32_t e = 1; e < E; e++)
                    if (logit[e] > logit[best]) best = e;
                count[best]++;
                logit[best] = -INFINITY;
            }
        }
        int m = 0;
        for (uint32_t e = 1; e < E; e++)
            if (count[e] > count[m]) m = (int)e;
        if (hot) hot[l] = m;
        total += (double)count[m] / ((double)n * (double)k);
        free(x);
    }
    xd_gguf_close(&g);
    return total / n_layers;
}

Test(gen, skew_makes_hot_experts) {
    char *dir = make_dir();
    char *p0 = path_in(dir, "s0.gguf"), *p1 = path_in(dir, "s1.gguf");
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL); /* 8 experts, top-2 */
    c.n_layers = 4;
    c.type = XD_TYPE_F16;
    synth_to(&c, p0, NULL);
    c.skew = 1.0;
    synth_to(&c, p1, NULL);
    int hot[4];
    double uniform = top_share(p0, 2, 3000, NULL);
    double skewed = top_share(p1, 2, 3000, hot);
    cr_log_info("top expert share: skew 0 %.3f, skew 1 %.3f (uniform 0.125)", uniform, skewed);
    cr_assert(uniform > 0.11 && uniform < 0.15, "skew 0: top share %.3f", uniform);
    cr_assert(skewed > 0.18 && skewed < 0.26, "skew 1: top share %.3f", skewed);
    cr_assert(hot[0] != hot[1] || hot[1] != hot[2] || hot[2] != hot[3],
              "the hot expert is drawn per layer");
    /* and the hottest expert is the one synth scaled the most */
    struct xd_synth *s;
    cr_assert_eq(xd_synth_create(&c, &s, NULL, 0), 0);
    for (int l = 0; l < 4; l++)
        for (int e = 0; e < 8; e++)
            cr_assert_leq(xd_synth_router_scale(s, l, e), xd_synth_router_scale(s, l, hot[l]));
    xd_synth_destroy(s);
    free(p0), free(p1);
    rm_dir(dir);
}

/* ---- sizing ------------------------------------------------------------------------------- */

Test(gen, fit_layers_hits_the_size) {
    struct xd_synth_config c;
    xd_synth_config_default(&c, XD_SYNTH_MIXTRAL);
    char err[256];
    const uint64_t target = 100u << 20;
    cr_assert_eq(xd_synth_fit_layers(&c, target, err, sizeof err), 0, "%s", err);
    struct xd_synth *s;
    cr_assert_eq(xd_synth_create(&c, &s, NULL, 0), 0);
    uint64_t size = xd_synth_file_size(s);
    xd_synth_destroy(s);
    c.n_layers = 1;
    cr_assert_eq(xd_synth_create(&c, &s, NULL, 0), 0);
    uint64_t one = xd_synth_file_size(s);
    xd_synth_destroy(s);
    c.n_layers = 2;
    cr_assert_eq(xd_synth_create(&c, &s, NULL, 0), 0);
    uint64_t per_layer = xd_synth_file_size(s) - one;
    xd_synth_destroy(s);
    cr_assert(size + per_layer / 2 + 1024 >= target && size <= target + per_layer / 2 + 1024,
              "size %llu for target %llu (layer %llu)", (unsigned long long)size,
              (unsigned long long)target, (unsigned long long)per_layer);
    cr_assert_eq(xd_synth_fit_layers(&c, 1, err, sizeof err), 0);
    cr_assert_eq(c.n_layers, 1);
}

/* ---- the command -------------------------------------------------------------------------- */

Test(gen_cmd, usage_errors_exit_2) {
    char *dir = make_dir();
    char *out = path_in(dir, "out"), *errf = path_in(dir, "err"), *m = path_in(dir, "m.gguf");
    char *a1[] = {XD_EXPERTD_BIN, "gen", NULL};
    cr_assert_eq(run(a1, out, errf, 0), 2);
    char *a2[] = {XD_EXPERTD_BIN, "gen", "-o", m, "--type", "q9_9", NULL};
    cr_assert_eq(run(a2, out, errf, 0), 2);
    char *a3[] = {XD_EXPERTD_BIN, "gen", "-o", m, "--layers", "2", "--size", "1G", NULL};
    cr_assert_eq(run(a3, out, errf, 0), 2);
    char *a4[] = {XD_EXPERTD_BIN, "gen", "-o", m, "--top-k", "20", NULL};
    cr_assert_eq(run(a4, out, errf, 0), 2);
    char *a5[] = {XD_EXPERTD_BIN, "gen", "--help", NULL};
    cr_assert_eq(run(a5, out, errf, 0), 0);
    cr_assert(!file_exists(m));
    free(out), free(errf), free(m);
    rm_dir(dir);
}

Test(gen_cmd, partial_file_is_removed_on_write_error) {
    char *dir = make_dir();
    char *out = path_in(dir, "out"), *errf = path_in(dir, "err"), *m = path_in(dir, "m.gguf");
    char *argv[] = {XD_EXPERTD_BIN, "gen", "-o", m, "--size", "64M", "--type", "f32", NULL};
    cr_assert_eq(run(argv, out, errf, 8 << 20), 1);
    cr_assert(!file_exists(m), "partial model left behind");
    char *msg = xd_test_read_file(errf, NULL);
    cr_assert(msg && strstr(msg, "too large"), "stderr: %s", msg ? msg : "(none)");
    free(msg);
    free(out), free(errf), free(m);
    rm_dir(dir);
}

Test(gen_cmd, gen_then_inspect_json) {
    char *dir = make_dir();
    char *out = path_in(dir, "out"), *errf = path_in(dir, "err"), *m = path_in(dir, "m.gguf");
    char *g[] = {XD_EXPERTD_BIN, "gen", "-o", m, "--arch", "qwen3moe", "--layers", "3",
                 "--experts", "12", "--top-k", "3", "--ff", "128", "--type", "f16",
                 "--seed", "7", "--quiet", NULL};
    cr_assert_eq(run(g, out, errf, 0), 0);
    char *i[] = {XD_EXPERTD_BIN, "inspect", m, "--json", NULL};
    int rc = run(i, out, errf, 0);
    char *msg = xd_test_read_file(errf, NULL);
    if (rc == 2 && msg && strstr(msg, "not built yet")) {
        free(msg);
        rm_dir(dir);
        cr_skip("expertd inspect is not built yet");
    }
    free(msg);
    cr_assert_eq(rc, 0);
    json_error_t jerr;
    json_t *j = json_load_file(out, 0, &jerr);
    cr_assert_not_null(j, "inspect --json: %s", jerr.text);
    json_t *meta = json_object_get(j, "metadata");
    cr_assert_str_eq(json_string_value(json_object_get(meta, "general.architecture")),
                     "qwen3moe");
    cr_assert_eq(json_integer_value(json_object_get(meta, "qwen3moe.expert_count")), 12);
    cr_assert_eq(json_integer_value(json_object_get(meta, "qwen3moe.block_count")), 3);
    cr_assert_eq(json_integer_value(json_object_get(meta, "expertd.synth.seed")), 7);
    cr_assert_eq(json_integer_value(json_object_get(j, "n_tensors")), 3 + 3 * 12);
    json_t *tensors = json_object_get(j, "tensors");
    bool found = false;
    for (size_t k = 0; k < json_array_size(tensors); k++) {
        json_t *t = json_array_get(tensors, k);
        if (strcmp(json_string_value(json_object_get(t, "name")), "blk.2.ffn_down_exps.weight"))
            continue;
        found = true;
        json_t *shape = json_object_get(t, "shape");
        cr_assert_eq(json_integer_value(json_array_get(shape, 0)), 128);
        cr_assert_eq(json_integer_value(json_array_get(shape, 1)), 256);
        cr_assert_eq(json_integer_value(json_array_get(shape, 2)), 12);
        cr_assert_str_eq(json_string_value(json_object_get(t, "type")), "F16");
    }
    cr_assert(found);
    json_t *ex = json_object_get(j, "experts");
    cr_assert_eq(json_integer_value(json_object_get(ex, "n_layers")), 3);
    json_t *l0 = json_array_get(json_object_get(ex, "layers"), 0);
    cr_assert_eq(json_integer_value(json_object_get(l0, "n_expert")), 12);
    cr_assert_eq(json_integer_value(json_object_get(l0, "bytes_per_expert")), 3 * 256 * 128 * 2);
    json_decref(j);
    free(out), free(errf), free(m);
    rm_dir(dir);
}
