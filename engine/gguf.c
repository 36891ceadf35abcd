/* gguf.c - a validating GGUF reader over mmap'ed bytes.
 *
 * The parser walks the header, the key/value table and the tensor table once, checking every
 * count against the bytes that remain (so a hostile count cannot make us allocate gigabytes),
 * every length and size product for overflow, every type id against the traits table, and every
 * tensor extent against the data section, then rejects duplicate keys, duplicate tensor names
 * and overlapping tensors. Only then is the index handed out. Strings stay in the file
 * (pointer + length) except keys and tensor names, which are copied NUL-terminated into one
 * arena because every caller wants them as C strings.
 *
 * Trade-off: validating everything up front costs one O(n log n) pass over the tables at open
 * (microseconds for real models); in exchange no accessor needs to re-check anything.
 * Not done here: dequantization (quant.c), interpretation of keys (model.c, tokenizer.c).
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant.h"
#include "xd_error.h"

#define GGUF_MAX_NESTING 8        /* arrays of arrays deeper than this are rejected */
#define GGUF_MAX_NAME 1024        /* longest key or tensor name accepted */

/* ---- arena: many small allocations freed at once ---------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

static void *arena_alloc(void **arena, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = *arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 16) ? n : (1u << 16);
        struct arena_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc) return NULL;
        nc->cap = cap;
        nc->used = 0;
        nc->next = c;
        *arena = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(void *arena) {
    struct arena_chunk *c = arena;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- the cursor ------------------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t size, pos;
    char *err;
    size_t errlen;
    void **arena;
};

static int fail(struct rd *r, int code, const char *fmt, ...) {
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static size_t remaining(const struct rd *r) { return r->size - r->pos; }

static uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Read an n-byte little-endian integer; XD_E_TRUNCATED if fewer than n bytes remain. */
static int rd_uint(struct rd *r, size_t n, uint64_t *out) {
    if (remaining(r) < n) return XD_E_TRUNCATED;
    *out = load_le(r->p + r->pos, n);
    r->pos += n;
    return 0;
}

static int rd_str(struct rd *r, struct xd_gguf_str *s) {
    uint64_t len;
    int rc = rd_uint(r, 8, &len);
    if (rc) return rc;
    if (len > remaining(r)) return XD_E_TRUNCATED;
    s->ptr = (const char *)r->p + r->pos;
    s->len = len;
    r->pos += len;
    return 0;
}

static char *dup_cstr(struct rd *r, struct xd_gguf_str s) {
    char *c = arena_alloc(r->arena, s.len + 1);
    if (!c) return NULL;
    memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

static const size_t vtype_size[XD_GGUF_VTYPE_COUNT] = {
    [XD_GGUF_UINT8] = 1, [XD_GGUF_INT8] = 1,    [XD_GGUF_UINT16] = 2,  [XD_GGUF_INT16] = 2,
    [XD_GGUF_UINT32] = 4, [XD_GGUF_INT32] = 4,  [XD_GGUF_FLOAT32] = 4, [XD_GGUF_BOOL] = 1,
    [XD_GGUF_STRING] = 0, [XD_GGUF_ARRAY] = 0,  [XD_GGUF_UINT64] = 8,  [XD_GGUF_INT64] = 8,
    [XD_GGUF_FLOAT64] = 8,
};

static const char *const vtype_name[XD_GGUF_VTYPE_COUNT] = {
    [XD_GGUF_UINT8] = "u8",    [XD_GGUF_INT8] = "i8",     [XD_GGUF_UINT16] = "u16",
    [XD_GGUF_INT16] = "i16",   [XD_GGUF_UINT32] = "u32",  [XD_GGUF_INT32] = "i32",
    [XD_GGUF_FLOAT32] = "f32", [XD_GGUF_BOOL] = "bool",   [XD_GGUF_STRING] = "str",
    [XD_GGUF_ARRAY] = "arr",   [XD_GGUF_UINT64] = "u64",  [XD_GGUF_INT64] = "i64",
    [XD_GGUF_FLOAT64] = "f64",
};

size_t xd_gguf_vtype_size(enum xd_gguf_vtype t) {
    return (unsigned)t < XD_GGUF_VTYPE_COUNT ? vtype_size[t] : 0;
}

const char *xd_gguf_vtype_name(enum xd_gguf_vtype t) {
    return (unsigned)t < XD_GGUF_VTYPE_COUNT ? vtype_name[t] : "?";
}

static bool vtype_is_signed(enum xd_gguf_vtype t) {
    return t == XD_GGUF_INT8 || t == XD_GGUF_INT16 || t == XD_GGUF_INT32 || t == XD_GGUF_INT64;
}

/* Decode a scalar of type t from raw little-endian bytes into v. */
static void decode_scalar(enum xd_gguf_vtype t, const uint8_t *p, struct xd_gguf_value *v) {
    uint64_t raw = load_le(p, vtype_size[t]);
    v->type = t;
    switch (t) {
    case XD_GGUF_INT8: v->v.i64 = (int8_t)raw; break;
    case XD_GGUF_INT16: v->v.i64 = (int16_t)raw; break;
    case XD_GGUF_INT32: v->v.i64 = (int32_t)raw; break;
    case XD_GGUF_INT64: v->v.i64 = (int64_t)raw; break;
    case XD_GGUF_FLOAT32: {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, 4);
        v->v.f64 = f;
        break;
    }
    case XD_GGUF_FLOAT64: memcpy(&v->v.f64, &raw, 8); break;
    case XD_GGUF_BOOL: v->v.b = raw != 0; break;
    default: v->v.u64 = raw; break;
    }
}

/* Parse one value of type t at the cursor; key names the owner for messages. */
static int rd_value(struct rd *r, enum xd_gguf_vtype t, struct xd_gguf_value *v, const char *key,
                    int depth) {
    int rc;
    if ((unsigned)t >= XD_GGUF_VTYPE_COUNT)
        return fail(r, XD_E_FORMAT, "key '%s': unknown value type %u", key, (unsigned)t);
    v->type = t;
    if (t == XD_GGUF_STRING) {
        if ((rc = rd_str(r, &v->v.str)))
            return fail(r, rc, "key '%s': string value runs past the end of the file", key);
        return 0;
    }
    if (t != XD_GGUF_ARRAY) {
        if (remaining(r) < vtype_size[t])
            return fail(r, XD_E_TRUNCATED, "key '%s': value runs past the end of the file", key);
        if (t == XD_GGUF_BOOL && r->p[r->pos] > 1)
            return fail(r, XD_E_FORMAT, "key '%s': bool value %u is neither 0 nor 1", key,
                        r->p[r->pos]);
        decode_scalar(t, r->p + r->pos, v);
        r->pos += vtype_size[t];
        return 0;
    }
    if (depth >= GGUF_MAX_NESTING)
        return fail(r, XD_E_FORMAT, "key '%s': arrays nested deeper than %d", key,
                    GGUF_MAX_NESTING);
    uint64_t et, n;
    if ((rc = rd_uint(r, 4, &et)) || (rc = rd_uint(r, 8, &n)))
        return fail(r, rc, "key '%s': array header runs past the end of the file", key);
    if (et >= XD_GGUF_VTYPE_COUNT)
        return fail(r, XD_E_FORMAT, "key '%s': unknown array element type %u", key,
                    (unsigned)et);
    v->v.arr.elem = (enum xd_gguf_vtype)et;
    v->v.arr.n = n;
    v->v.arr.data = r->p + r->pos;
    v->v.arr.strs = NULL;
    v->v.arr.vals = NULL;
    if (et == XD_GGUF_STRING) {
        /* each string takes at least its 8-byte length: bounds n before we allocate */
        if (n > remaining(r) / 8)
            return fail(r, XD_E_TRUNCATED, "key '%s': array of %llu strings runs past the end "
                        "of the file", key, (unsigned long long)n);
        struct xd_gguf_str *strs = arena_alloc(r->arena, (size_t)n * sizeof *strs + 1);
        if (!strs) return fail(r, XD_E_NOMEM, "key '%s': out of memory", key);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_str(r, &strs[i])))
                return fail(r, rc, "key '%s': string %llu of %llu runs past the end of the file",
                            key, (unsigned long long)i, (unsigned long long)n);
        v->v.arr.strs = strs;
    } else if (et == XD_GGUF_ARRAY) {
        if (n > remaining(r) / 12) /* element type + count of each nested array */
            return fail(r, XD_E_TRUNCATED, "key '%s': array of %llu arrays runs past the end "
                        "of the file", key, (unsigned long long)n);
        struct xd_gguf_value *vals = arena_alloc(r->arena, (size_t)n * sizeof *vals + 1);
        if (!vals) return fail(r, XD_E_NOMEM, "key '%s': out of memory", key);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_value(r, XD_GGUF_ARRAY, &vals[i], key, depth + 1))) return rc;
        v->v.arr.vals = vals;
    } else {
        size_t es = vtype_size[et];
        if (n > remaining(r) / es)
            return fail(r, XD_E_TRUNCATED, "key '%s': array of %llu %s runs past the end of the "
                        "file", key, (unsigned long long)n, vtype_name[et]);
        if (et == XD_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (r->p[r->pos + i] > 1)
                    return fail(r, XD_E_FORMAT, "key '%s': bool element %llu is neither 0 nor 1",
                                key, (unsigned long long)i);
        r->pos += (size_t)(n * es);
    }
    return 0;
}

/* ---- sorting helpers for duplicate and overlap checks ----------------------------------- */

static int cmp_kv_key(const void *a, const void *b) {
    const struct xd_gguf_kv *x = *(const struct xd_gguf_kv *const *)a;
    const struct xd_gguf_kv *y = *(const struct xd_gguf_kv *const *)b;
    return strcmp(x->key, y->key);
}

static int cmp_tensor_name(const void *a, const void *b) {
    const struct xd_gguf_tensor *x = *(const struct xd_gguf_tensor *const *)a;
    const struct xd_gguf_tensor *y = *(const struct xd_gguf_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const struct xd_gguf_tensor *x = *(const struct xd_gguf_tensor *const *)a;
    const struct xd_gguf_tensor *y = *(const struct xd_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_unique_keys(struct rd *r, struct xd_gguf *g) {
    if (g->n_kv < 2) return 0;
    const struct xd_gguf_kv **idx = malloc((size_t)g->n_kv * sizeof *idx);
    if (!idx) return fail(r, XD_E_NOMEM, "out of memory indexing %lld keys", (long long)g->n_kv);
    for (int64_t i = 0; i < g->n_kv; i++) idx[i] = &g->kv[i];
    qsort(idx, (size_t)g->n_kv, sizeof *idx, cmp_kv_key);
    int rc = 0;
    for (int64_t i = 1; i < g->n_kv && !rc; i++)
        if (!strcmp(idx[i - 1]->key, idx[i]->key))
            rc = fail(r, XD_E_FORMAT, "key '%s' appears more than once", idx[i]->key);
    free(idx);
    return rc;
}

static int check_tensors_disjoint(struct rd *r, struct xd_gguf *g) {
    if (g->n_tensors < 2) return 0;
    const struct xd_gguf_tensor **idx = malloc((size_t)g->n_tensors * sizeof *idx);
    if (!idx)
        return fail(r, XD_E_NOMEM, "out of memory indexing %lld tensors", (long long)g->n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++) idx[i] = &g->tensors[i];
    int rc = 0;
    qsort(idx, (size_t)g->n_tensors, sizeof *idx, cmp_tensor_name);
    for (int64_t i = 1; i < g->n_tensors && !rc; i++)
        if (!strcmp(idx[i - 1]->name, idx[i]->name))
            rc = fail(r, XD_E_FORMAT, "tensor '%s' appears more than once", idx[i]->name);
    if (!rc) {
        /* Sorted by offset, a tensor overlaps an earlier one iff it starts before the furthest
         * end seen so far. Comparing only neighbours (the first version) missed an overlap
         * hidden behind an empty tensor lying inside the larger one. Empty tensors occupy no
         * bytes and overlap nothing. Extents were checked against the file, so no sum wraps. */
        qsort(idx, (size_t)g->n_tensors, sizeof *idx, cmp_tensor_offset);
        const struct xd_gguf_tensor *far = NULL; /* the non-empty tensor ending furthest */
        for (int64_t i = 0; i < g->n_tensors && !rc; i++) {
            const struct xd_gguf_tensor *t = idx[i];
            if (!t->nbytes) continue;
            if (far && far->offset + far->nbytes > t->offset)
                rc = fail(r, XD_E_FORMAT, "tensor '%s' (offset %llu, %llu bytes) overlaps "
                          "tensor '%s' (offset %llu, %llu bytes)", t->name,
                          (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                          far->name, (unsigned long long)far->offset,
                          (unsigned long long)far->nbytes);
            if (!far || t->offset + t->nbytes > far->offset + far->nbytes) far = t;
        }
    }
    free(idx);
    return rc;
}

/* ---- tensor infos ------------------------------------------------------------------------ */

static int rd_tensor_info(struct rd *r, struct xd_gguf_tensor *t, int64_t i) {
    struct xd_gguf_str name;
    uint64_t v;
    int rc;
    if ((rc = rd_str(r, &name)))
        return fail(r, rc, "tensor %lld: name runs past the end of the file", (long long)i);
    if (name.len == 0 || name.len > GGUF_MAX_NAME)
        return fail(r, XD_E_FORMAT, "tensor %lld: name length %llu is out of range (1..%d)",
                    (long long)i, (unsigned long long)name.len, GGUF_MAX_NAME);
    if (!(t->name = dup_cstr(r, name))) return fail(r, XD_E_NOMEM, "out of memory");
    if (memchr(name.ptr, 0, name.len))
        return fail(r, XD_E_FORMAT, "tensor %lld: name contains a NUL byte", (long long)i);
    if ((rc = rd_uint(r, 4, &v)))
        return fail(r, rc, "tensor '%s': header runs past the end of the file", t->name);
    if (v < 1 || v > XD_GGUF_MAX_DIMS)
        return fail(r, XD_E_FORMAT, "tensor '%s': %llu dimensions (1..%d allowed)", t->name,
                    (unsigned long long)v, XD_GGUF_MAX_DIMS);
    t->n_dims = (uint32_t)v;
    /* The product is bounded over the non-zero dimensions: an empty tensor of shape
     * [0, 2^40, 2^40] has no elements, but code that multiplies ne[1] * ne[2] (rows, strides)
     * must not overflow either. */
    uint64_t nel = 1, span = 1;
    for (int d = 0; d < XD_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims) {
            if ((rc = rd_uint(r, 8, &ne)))
                return fail(r, rc, "tensor '%s': shape runs past the end of the file", t->name);
            if (ne > (uint64_t)INT64_MAX)
                return fail(r, XD_E_OVERFLOW, "tensor '%s': dimension %d is %llu", t->name, d,
                            (unsigned long long)ne);
        }
        t->ne[d] = (int64_t)ne;
        if (ne && span > (uint64_t)INT64_MAX / ne)
            return fail(r, XD_E_OVERFLOW, "tensor '%s': element count overflows", t->name);
        if (ne) span *= ne;
        nel *= ne;
    }
    if ((rc = rd_uint(r, 4, &v)))
        return fail(r, rc, "tensor '%s': type runs past the end of the file", t->name);
    const struct xd_type_traits *tt = xd_type_traits((uint32_t)v);
    /* ids the traits table knows by name only (no sizes) are as unknown as ids it lacks */
    if (!tt || !tt->name || tt->blck_size <= 0 || tt->type_size == 0)
        return fail(r, XD_E_FORMAT, "tensor '%s': unknown tensor type %llu", t->name,
                    (unsigned long long)v);
    t->type = (uint32_t)v;
    if (t->ne[0] % tt->blck_size)
        return fail(r, XD_E_SHAPE, "tensor '%s': row length %lld is not a multiple of the %s "
                    "block size %lld", t->name, (long long)t->ne[0], tt->name,
                    (long long)tt->blck_size);
    /* both products checked: a row of 2^62 F64 elements alone wraps 64 bits */
    uint64_t blocks = (uint64_t)(t->ne[0] / tt->blck_size);
    if (blocks > UINT64_MAX / tt->type_size)
        return fail(r, XD_E_OVERFLOW, "tensor '%s': row size overflows", t->name);
    uint64_t row = blocks * tt->type_size;
    uint64_t rows = t->ne[0] ? nel / (uint64_t)t->ne[0] : 0;
    if (rows && row > UINT64_MAX / rows)
        return fail(r, XD_E_OVERFLOW, "tensor '%s': byte size overflows", t->name);
    t->nbytes = row * rows;
    if ((rc = rd_uint(r, 8, &t->offset)))
        return fail(r, rc, "tensor '%s': offset runs past the end of the file", t->name);
    return 0;
}

/* ---- the parse ---------------------------------------------------------------------------- */

int xd_gguf_parse(const void *buf, size_t size, struct xd_gguf *g, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    if (err && errlen) err[0] = 0;
    struct rd r = {.p = buf, .size = size, .err = err, .errlen = errlen, .arena = &g->arena};
    uint64_t magic, version, n_tensors, n_kv;
    int rc;
    /* the magic first, so that a short non-GGUF file is called what it is */
    if ((rc = rd_uint(&r, 4, &magic)))
        return fail(&r, XD_E_TRUNCATED, "file is %zu bytes, too short for a GGUF header", size);
    if (magic != XD_GGUF_MAGIC) return fail(&r, XD_E_FORMAT, "not a GGUF file (bad magic)");
    if ((rc = rd_uint(&r, 4, &version)))
        return fail(&r, XD_E_TRUNCATED, "file is %zu bytes, too short for a GGUF header", size);
    if (version < 2 || version > 3)
        return fail(&r, XD_E_VERSION, "GGUF version %llu is not supported (2 and 3 are)%s",
                    (unsigned long long)version,
                    (version & 0xffff) == 0 ? "; the file looks big-endian" : "");
    if ((rc = rd_uint(&r, 8, &n_tensors)) || (rc = rd_uint(&r, 8, &n_kv)))
        return fail(&r, XD_E_TRUNCATED, "header runs past the end of the file");
    /* A count that is not a valid int64 is corrupt (XD_E_FORMAT). A count larger than the bytes
     * that follow could hold is a file cut short (or lying; we cannot tell, and call it
     * XD_E_TRUNCATED so that every prefix of a valid file fails with one code). The smallest
     * key/value is 8 (length) + 1 (key) + 4 (type) + 1 (u8) bytes; the smallest tensor info is
     * 8 + 1 + 4 + 8 + 4 + 8 bytes. This bound also caps what we allocate for the index. */
    if (n_kv > (uint64_t)INT64_MAX || n_tensors > (uint64_t)INT64_MAX)
        return fail(&r, XD_E_FORMAT, "header claims %llu tensors and %llu keys, more than any file "
                    "can hold", (unsigned long long)n_tensors, (unsigned long long)n_kv);
    if (n_kv > remaining(&r) / 14)
        return fail(&r, XD_E_TRUNCATED, "header claims %llu keys; the %zu bytes that follow hold "
                    "at most %zu", (unsigned long long)n_kv, remaining(&r), remaining(&r) / 14);
    if (n_tensors > remaining(&r) / 33)
        return fail(&r, XD_E_TRUNCATED, "header claims %llu tensors; the %zu bytes that follow "
                    "hold at most %zu", (unsigned long long)n_tensors, remaining(&r),
                    remaining(&r) / 33);
    g->version = (uint32_t)version;
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kv = arena_alloc(&g->arena, (size_t)n_kv * sizeof *g->kv + 1);
    g->tensors = arena_alloc(&g->arena, (size_t)n_tensors * sizeof *g->tensors + 1);
    if (!g->kv || !g->tensors) {
        rc = fail(&r, XD_E_NOMEM, "out of memory");
        goto out;
    }

    for (int64_t i = 0; i < g->n_kv; i++) {
        struct xd_gguf_str key;
        uint64_t type;
        if ((rc = rd_str(&r, &key))) {
            rc = fail(&r, rc, "key %lld of %lld: name runs past the end of the file",
                      (long long)i, (long long)g->n_kv);
            goto out;
        }
        if (key.len == 0 || key.len > GGUF_MAX_NAME || memchr(key.ptr, 0, key.len)) {
            rc = fail(&r, XD_E_FORMAT, "key %lld: name of length %llu is empty, too long or "
                      "contains NUL", (long long)i, (unsigned long long)key.len);
            goto out;
        }
        struct xd_gguf_kv *kv = &g->kv[i];
        if (!(kv->key = dup_cstr(&r, key))) {
            rc = fail(&r, XD_E_NOMEM, "out of memory");
            goto out;
        }
        if ((rc = rd_uint(&r, 4, &type))) {
            rc = fail(&r, rc, "key '%s': type runs past the end of the file", kv->key);
            goto out;
        }
        if (type >= XD_GGUF_VTYPE_COUNT) {
            rc = fail(&r, XD_E_FORMAT, "key '%s': unknown value type %llu", kv->key,
                      (unsigned long long)type);
            goto out;
        }
        if ((rc = rd_value(&r, (enum xd_gguf_vtype)type, &kv->value, kv->key, 0))) goto out;
    }
    if ((rc = check_unique_keys(&r, g))) goto out;

    g->alignment = XD_GGUF_DEFAULT_ALIGNMENT;
    const struct xd_gguf_value *al = xd_gguf_get(g, "general.alignment");
    if (al) {
        if (al->type != XD_GGUF_UINT32) {
            rc = fail(&r, XD_E_BAD_TYPE, "key 'general.alignment': type %s, expected u32",
                      xd_gguf_vtype_name(al->type));
            goto out;
        }
        if (al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1))) {
            rc = fail(&r, XD_E_FORMAT, "key 'general.alignment': %llu is not a power of two",
                      (unsigned long long)al->v.u64);
            goto out;
        }
        g->alignment = al->v.u64;
    }

    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct xd_gguf_tensor *t = &g->tensors[i];
        if ((rc = rd_tensor_info(&r, t, i))) goto out;
        if (t->offset % g->alignment) {
            rc = fail(&r, XD_E_FORMAT, "tensor '%s': offset %llu is not a multiple of the "
                      "alignment %llu", t->name, (unsigned long long)t->offset,
                      (unsigned long long)g->alignment);
            goto out;
        }
    }
    uint64_t data = r.pos + (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_offset = data;
    /* A file without tensors may end right after its tables (llama.cpp writes vocab-only files
     * without the final padding); one with tensors needs its data section, even if every tensor
     * is empty, or their data pointers would point past the buffer. */
    if (g->n_tensors > 0 && data > size) {
        rc = fail(&r, XD_E_TRUNCATED, "tensor '%s': the data section starts at %llu, past the "
                  "end of the file (%zu bytes)", g->tensors[0].name, (unsigned long long)data,
                  size);
        goto out;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct xd_gguf_tensor *t = &g->tensors[i];
        uint64_t avail = size - data;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            rc = fail(&r, XD_E_TRUNCATED, "tensor '%s': data [%llu, +%llu) lies beyond the end "
                      "of the file (%llu data bytes)", t->name, (unsigned long long)t->offset,
                      (unsigned long long)t->nbytes, (unsigned long long)avail);
            goto out;
        }
        t->data = r.p + data + t->offset;
    }
    if ((rc = check_tensors_disjoint(&r, g))) goto out;
    g->base = buf;
    g->size = size;
    return 0;
out:
    arena_free(g->arena);
    memset(g, 0, sizeof *g);
    g->fd = -1;
    return rc;
}

int xd_gguf_open(const char *path, struct xd_gguf *g, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err && errlen) snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int sr = fstat(fd, &st);
    if (sr < 0 || !S_ISREG(st.st_mode)) {
        int e = sr < 0 ? errno : EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, sr < 0 ? strerror(e) : "not a regular file");
        close(fd);
        return -e;
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    /* A file truncated by someone else while mapped raises SIGBUS on access: model files are
     * treated as immutable while served, as by every mmap-based loader. */
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            if (err && errlen) snprintf(err, errlen, "%s: mmap: %s", path, strerror(e));
            close(fd);
            return -e;
        }
    }
    int rc = xd_gguf_parse(map ? map : (const void *)"", size, g, err, errlen);
    if (rc) {
        if (map) munmap(map, size);
        close(fd);
        return rc;
    }
    g->map = map;
    g->map_size = size;
    g->fd = fd;
    return 0;
}

void xd_gguf_close(struct xd_gguf *g) {
    if (!g) return;
    arena_free(g->arena);
    if (g->map) munmap(g->map, g->map_size);
    if (g->fd >= 0) close(g->fd);
    memset(g, 0, sizeof *g);
    g->fd = -1;
}

/* ---- accessors ---------------------------------------------------------------------------- */

int64_t xd_gguf_find_key(const struct xd_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key)) return i;
    return -1;
}

const struct xd_gguf_value *xd_gguf_get(const struct xd_gguf *g, const char *key) {
    int64_t i = xd_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i].value;
}

/* Widen any integer scalar; false if v is not an integer. */
static bool as_int(const struct xd_gguf_value *v, bool *neg, uint64_t *mag) {
    if (v->type == XD_GGUF_STRING || v->type == XD_GGUF_ARRAY || v->type == XD_GGUF_FLOAT32 ||
        v->type == XD_GGUF_FLOAT64 || v->type == XD_GGUF_BOOL)
        return false;
    if (vtype_is_signed(v->type) && v->v.i64 < 0) {
        *neg = true;
        *mag = (uint64_t)(-(v->v.i64 + 1)) + 1;
    } else {
        *neg = false;
        *mag = v->v.u64;
    }
    return true;
}

int xd_gguf_get_u64(const struct xd_gguf *g, const char *key, uint64_t *out) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    bool neg;
    uint64_t m;
    if (!v) return XD_E_MISSING;
    if (!as_int(v, &neg, &m) || neg) return XD_E_BAD_TYPE;
    *out = m;
    return 0;
}

int xd_gguf_get_u32(const struct xd_gguf *g, const char *key, uint32_t *out) {
    uint64_t v;
    int rc = xd_gguf_get_u64(g, key, &v);
    if (rc) return rc;
    if (v > UINT32_MAX) return XD_E_BAD_TYPE;
    *out = (uint32_t)v;
    return 0;
}

int xd_gguf_get_i64(const struct xd_gguf *g, const char *key, int64_t *out) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    bool neg;
    uint64_t m;
    if (!v) return XD_E_MISSING;
    if (!as_int(v, &neg, &m)) return XD_E_BAD_TYPE;
    if (neg) {
        if (m > (uint64_t)INT64_MAX + 1) return XD_E_BAD_TYPE;
        *out = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
    } else {
        if (m > (uint64_t)INT64_MAX) return XD_E_BAD_TYPE;
        *out = (int64_t)m;
    }
    return 0;
}

int xd_gguf_get_f32(const struct xd_gguf *g, const char *key, float *out) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    bool neg;
    uint64_t m;
    if (!v) return XD_E_MISSING;
    if (v->type == XD_GGUF_FLOAT32 || v->type == XD_GGUF_FLOAT64) {
        *out = (float)v->v.f64;
        return 0;
    }
    if (!as_int(v, &neg, &m)) return XD_E_BAD_TYPE;
    *out = neg ? -(float)m : (float)m;
    return 0;
}

int xd_gguf_get_bool(const struct xd_gguf *g, const char *key, bool *out) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    if (!v) return XD_E_MISSING;
    if (v->type != XD_GGUF_BOOL) return XD_E_BAD_TYPE;
    *out = v->v.b;
    return 0;
}

int xd_gguf_get_str(const struct xd_gguf *g, const char *key, struct xd_gguf_str *out) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    if (!v) return XD_E_MISSING;
    if (v->type != XD_GGUF_STRING) return XD_E_BAD_TYPE;
    *out = v->v.str;
    return 0;
}

int xd_gguf_get_arr(const struct xd_gguf *g, const char *key, const struct xd_gguf_value **out) {
    const struct xd_gguf_value *v = xd_gguf_get(g, key);
    if (!v) return XD_E_MISSING;
    if (v->type != XD_GGUF_ARRAY) return XD_E_BAD_TYPE;
    *out = v;
    return 0;
}

/* Decode element i of a numeric/bool array; false (v untouched) when the value is not such an
 * array or i is out of range. */
static bool arr_elem(const struct xd_gguf_value *arr, uint64_t i, struct xd_gguf_value *v) {
    if (arr->type != XD_GGUF_ARRAY || i >= arr->v.arr.n) return false;
    enum xd_gguf_vtype t = arr->v.arr.elem;
    if ((unsigned)t >= XD_GGUF_VTYPE_COUNT || !vtype_size[t]) return false;
    decode_scalar(t, arr->v.arr.data + i * vtype_size[t], v);
    return true;
}

int xd_gguf_arr_get(const struct xd_gguf_value *arr, uint64_t i, struct xd_gguf_value *out) {
    if (arr->type != XD_GGUF_ARRAY || i >= arr->v.arr.n) return XD_E_INVALID;
    switch (arr->v.arr.elem) {
    case XD_GGUF_STRING:
        out->type = XD_GGUF_STRING;
        out->v.str = arr->v.arr.strs[i];
        return 0;
    case XD_GGUF_ARRAY: *out = arr->v.arr.vals[i]; return 0;
    default: return arr_elem(arr, i, out) ? 0 : XD_E_INVALID;
    }
}

int64_t xd_gguf_arr_i64(const struct xd_gguf_value *arr, uint64_t i) {
    struct xd_gguf_value v;
    if (!arr_elem(arr, i, &v)) return 0;
    switch (v.type) {
    case XD_GGUF_FLOAT32:
    case XD_GGUF_FLOAT64:
        /* a cast of NaN or of a value out of range is undefined behaviour: saturate instead */
        if (v.v.f64 != v.v.f64) return 0;
        if (v.v.f64 >= 9223372036854775807.0) return INT64_MAX;
        if (v.v.f64 <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)v.v.f64;
    case XD_GGUF_BOOL: return v.v.b;
    default: return vtype_is_signed(v.type) ? v.v.i64 : (int64_t)v.v.u64;
    }
}

double xd_gguf_arr_f64(const struct xd_gguf_value *arr, uint64_t i) {
    struct xd_gguf_value v;
    if (!arr_elem(arr, i, &v)) return 0;
    switch (v.type) {
    case XD_GGUF_FLOAT32:
    case XD_GGUF_FLOAT64: return v.v.f64;
    case XD_GGUF_BOOL: return v.v.b;
    default: return vtype_is_signed(v.type) ? (double)v.v.i64 : (double)v.v.u64;
    }
}

const struct xd_gguf_tensor *xd_gguf_find_tensor(const struct xd_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

bool xd_gguf_str_eq(struct xd_gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0); /* s.ptr may be NULL when empty */
}
