/* fuzz_gguf.c - libFuzzer target for the GGUF reader (engine/gguf.c) and its dump.
 *
 * Parses the input with xd_gguf_parse. A rejected input must come back as a negative code with
 * a message. An accepted one is walked completely: every typed getter on every key, every
 * array element through every element accessor (nested arrays recursively), every string byte,
 * every tensor looked up by name and its first and last data byte read, and both dumps (text
 * and JSON) built. libFuzzer hands us an exact-size heap copy, so with ASan any read past the
 * input crashes; __builtin_trap() marks a broken contract the sanitizers cannot see.
 * Seeds: tests/fuzz/corpus/gguf (made by tests/fuzz/gen_gguf_corpus.py); dictionary:
 * tests/fuzz/gguf.dict.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_dump.h"

/* Folds every byte it is shown into a value the optimizer cannot drop. */
struct sink {
    uint64_t h;
};

static void sink_bytes(struct sink *s, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) s->h = s->h * 31 + b[i];
}

static void walk_value(struct sink *s, const struct xd_gguf_value *v) {
    switch (v->type) {
    case XD_GGUF_STRING: sink_bytes(s, v->v.str.ptr, v->v.str.len); return;
    case XD_GGUF_ARRAY: break;
    default: sink_bytes(s, &v->v, sizeof v->v); return;
    }
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        struct xd_gguf_value e;
        if (xd_gguf_arr_get(v, i, &e)) __builtin_trap(); /* i < n always succeeds */
        s->h += (uint64_t)xd_gguf_arr_i64(v, i);
        double d = xd_gguf_arr_f64(v, i);
        sink_bytes(s, &d, sizeof d);
        walk_value(s, &e);
    }
    struct xd_gguf_value e;
    if (!xd_gguf_arr_get(v, v->v.arr.n, &e)) __builtin_trap(); /* one past the end fails */
    s->h += (uint64_t)xd_gguf_arr_i64(v, v->v.arr.n);
}

static void walk_getters(struct sink *s, const struct xd_gguf *g, const char *key) {
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    bool b;
    struct xd_gguf_str str;
    const struct xd_gguf_value *arr;
    if (!xd_gguf_get_u32(g, key, &u32)) s->h += u32;
    if (!xd_gguf_get_u64(g, key, &u64)) s->h += u64;
    if (!xd_gguf_get_i64(g, key, &i64)) s->h += (uint64_t)i64;
    if (!xd_gguf_get_f32(g, key, &f)) sink_bytes(s, &f, sizeof f);
    if (!xd_gguf_get_bool(g, key, &b)) s->h += b;
    if (!xd_gguf_get_str(g, key, &str)) {
        sink_bytes(s, str.ptr, str.len);
        s->h += xd_gguf_str_eq(str, "llama");
    }
    if (!xd_gguf_get_arr(g, key, &arr)) s->h += arr->v.arr.n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct xd_gguf g;
    char err[256];
    int rc = xd_gguf_parse(data, size, &g, err, sizeof err);
    if (rc) {
        if (rc > 0 || !err[0] || g.n_kv || g.n_tensors || g.arena) __builtin_trap();
        xd_gguf_close(&g);
        return 0;
    }
    struct sink s = {0};
    if (g.alignment == 0 || (g.alignment & (g.alignment - 1))) __builtin_trap();
    for (int64_t i = 0; i < g.n_kv; i++) {
        const char *key = g.kv[i].key;
        if (xd_gguf_find_key(&g, key) != i) __builtin_trap(); /* keys are unique */
        walk_getters(&s, &g, key);
        walk_value(&s, &g.kv[i].value);
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const struct xd_gguf_tensor *t = &g.tensors[i];
        if (xd_gguf_find_tensor(&g, t->name) != t) __builtin_trap(); /* names are unique */
        if (t->offset % g.alignment || t->n_dims < 1 || t->n_dims > XD_GGUF_MAX_DIMS)
            __builtin_trap();
        const uint8_t *p = t->data;
        if (p < data + g.data_offset || (size_t)(p - data) + t->nbytes > size) __builtin_trap();
        if (t->nbytes) s.h += p[0] + p[t->nbytes - 1];
    }
    struct xd_gguf_experts e;
    if (!xd_gguf_experts_summarize(&g, &e)) {
        if (e.expert_bytes + e.other_bytes > size) __builtin_trap(); /* tensors are disjoint */
        xd_gguf_experts_free(&e);
    }
    json_t *j = xd_gguf_dump_json(&g, "fuzz.gguf");
    if (j) {
        char *text = json_dumps(j, JSON_COMPACT);
        if (text) s.h += strlen(text);
        free(text);
        json_decref(j);
    }
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        xd_gguf_dump_text(&g, "fuzz.gguf", devnull);
        fclose(devnull);
    }
    xd_gguf_close(&g);
    volatile uint64_t keep = s.h; /* every byte walked stays observable */
    (void)keep;
    return 0;
}
