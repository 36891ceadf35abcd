/* gguf.h - GGUF model files (v2 and v3): a validating reader over mmap'ed bytes.
 *
 * xd_gguf_parse() is a pure function over the caller's bytes: it checks every count, length,
 * type and extent before use and builds an index (keys, values, tensors) whose strings and
 * tensor data point into those bytes, so nothing of the model is copied. xd_gguf_open() is the
 * thin I/O wrapper that mmaps a file and parses it. A malformed or truncated file yields a
 * negative XD_E_* code and a message naming the key or tensor at fault; never a crash.
 *
 * Which code for which fault (tests/test_gguf.c holds one case for each):
 *   XD_E_TRUNCATED  a length, count or extent runs past the end of the bytes (so every proper
 *                   prefix of a valid file fails with it), including counts too large to fit
 *   XD_E_FORMAT     bad magic, counts beyond int64, unknown value/element/tensor type, arrays
 *                   nested deeper than 8, bool not 0/1, empty/over-long/NUL-bearing names,
 *                   duplicate keys or tensor names, n_dims not 1..4, overlapping tensors,
 *                   offsets not aligned, general.alignment not a power of two
 *   XD_E_VERSION    version other than 2 or 3
 *   XD_E_BAD_TYPE   general.alignment not a u32
 *   XD_E_SHAPE      row length not a multiple of the type's block size
 *   XD_E_OVERFLOW   a dimension, element count or byte size beyond 64 bits
 *   XD_E_NOMEM      allocation failed (the index is bounded by a few times the file size)
 */
#ifndef XD_GGUF_H
#define XD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XD_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define XD_GGUF_DEFAULT_ALIGNMENT 32
#define XD_GGUF_MAX_DIMS 4

enum xd_gguf_vtype {
    XD_GGUF_UINT8 = 0,
    XD_GGUF_INT8 = 1,
    XD_GGUF_UINT16 = 2,
    XD_GGUF_INT16 = 3,
    XD_GGUF_UINT32 = 4,
    XD_GGUF_INT32 = 5,
    XD_GGUF_FLOAT32 = 6,
    XD_GGUF_BOOL = 7,
    XD_GGUF_STRING = 8,
    XD_GGUF_ARRAY = 9,
    XD_GGUF_UINT64 = 10,
    XD_GGUF_INT64 = 11,
    XD_GGUF_FLOAT64 = 12,
    XD_GGUF_VTYPE_COUNT
};

/* A string inside the file: not NUL-terminated. */
struct xd_gguf_str {
    const char *ptr;
    uint64_t len;
};

/* One metadata value. Scalars are widened: integers to u64/i64, floats to f64. Arrays keep a
 * pointer to their raw little-endian elements for numeric types, an index of strings for
 * STRING elements, and parsed values for nested ARRAY elements. */
struct xd_gguf_value {
    enum xd_gguf_vtype type;
    union {
        uint64_t u64;  /* UINT8/16/32/64 */
        int64_t i64;   /* INT8/16/32/64 */
        double f64;    /* FLOAT32/64 */
        bool b;        /* BOOL */
        struct xd_gguf_str str;
        struct {
            enum xd_gguf_vtype elem;
            uint64_t n;
            const uint8_t *data;                /* numeric/bool elements, possibly unaligned */
            const struct xd_gguf_str *strs;     /* elem == STRING: n entries */
            const struct xd_gguf_value *vals;   /* elem == ARRAY: n entries */
        } arr;
    } v;
};

struct xd_gguf_kv {
    const char *key; /* NUL-terminated copy */
    struct xd_gguf_value value;
};

struct xd_gguf_tensor {
    const char *name; /* NUL-terminated copy */
    uint32_t type;    /* enum xd_type */
    uint32_t n_dims;
    int64_t ne[XD_GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint64_t offset;  /* from the start of the data section */
    uint64_t nbytes;
    const void *data; /* into the mapped bytes */
};

struct xd_gguf {
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; /* file offset of the tensor data section */
    int64_t n_kv;
    struct xd_gguf_kv *kv;
    int64_t n_tensors;
    struct xd_gguf_tensor *tensors;
    const uint8_t *base; /* the bytes parsed */
    size_t size;
    /* owned storage */
    void *arena;        /* names, value indexes; freed by xd_gguf_close */
    void *map;          /* mmap'ed region when opened from a file */
    size_t map_size;
    int fd;             /* -1 when parsed from memory */
};

/* Parse size bytes at buf. On error returns a negative XD_E_* code, writes a message naming
 * the offending key/tensor to err (if errlen > 0) and leaves *g empty (safe to close). */
int xd_gguf_parse(const void *buf, size_t size, struct xd_gguf *g, char *err, size_t errlen);
/* mmap path read-only and parse it. Same contract as xd_gguf_parse; the fd stays open (for
 * O_DIRECT expert reads the cache opens its own). */
int xd_gguf_open(const char *path, struct xd_gguf *g, char *err, size_t errlen);
/* Release everything; g may be zeroed or failed. */
void xd_gguf_close(struct xd_gguf *g);

/* Index of key, or -1. */
int64_t xd_gguf_find_key(const struct xd_gguf *g, const char *key);
/* Value of key, or NULL; the pointer lives until xd_gguf_close. */
const struct xd_gguf_value *xd_gguf_get(const struct xd_gguf *g, const char *key);
/* Typed getters: 0 on success; XD_E_MISSING if absent, XD_E_BAD_TYPE if the value is not of a
 * compatible type or does not fit (any integer type that fits is accepted for ints; any
 * numeric type for floats). *out is untouched on failure. */
int xd_gguf_get_u32(const struct xd_gguf *g, const char *key, uint32_t *out);
int xd_gguf_get_u64(const struct xd_gguf *g, const char *key, uint64_t *out);
int xd_gguf_get_i64(const struct xd_gguf *g, const char *key, int64_t *out);
int xd_gguf_get_f32(const struct xd_gguf *g, const char *key, float *out);
int xd_gguf_get_bool(const struct xd_gguf *g, const char *key, bool *out);
int xd_gguf_get_str(const struct xd_gguf *g, const char *key, struct xd_gguf_str *out);
/* Array getter: the value must be an ARRAY (of any element type). */
int xd_gguf_get_arr(const struct xd_gguf *g, const char *key, const struct xd_gguf_value **out);

/* Element i of a numeric/bool array value, widened (floats to i64 saturate, NaN gives 0).
 * Returns 0 when arr is not a numeric/bool array or i >= n; never reads out of bounds. */
int64_t xd_gguf_arr_i64(const struct xd_gguf_value *arr, uint64_t i);
double xd_gguf_arr_f64(const struct xd_gguf_value *arr, uint64_t i);

/* Element i of any array value as a value of its own: scalars decoded (as the getters see
 * them), STRING elements as STRING values, nested arrays as themselves. 0, or XD_E_INVALID
 * (out untouched) when arr is not an array or i >= n. */
int xd_gguf_arr_get(const struct xd_gguf_value *arr, uint64_t i, struct xd_gguf_value *out);

/* Size in bytes of one scalar of type t (0 for STRING/ARRAY/unknown). */
size_t xd_gguf_vtype_size(enum xd_gguf_vtype t);
const char *xd_gguf_vtype_name(enum xd_gguf_vtype t);

/* Tensor by name, or NULL. */
const struct xd_gguf_tensor *xd_gguf_find_tensor(const struct xd_gguf *g, const char *name);

/* Compare a gguf string with a C string. */
bool xd_gguf_str_eq(struct xd_gguf_str s, const char *c);

#endif
