/* gguf_dump.c - what `expertd inspect` prints: a GGUF file as a text report or one JSON object.
 *
 * Both views read only the parsed index (gguf.h); nothing here validates the file again, so any
 * file xd_gguf_parse accepts can be printed, whatever its keys say. The text report is for
 * people: a header, the architecture's hyper-parameters, a tokenizer summary, every key with long
 * arrays and long strings cut to a few items ("[151936 items: "!", "\"", ...]"), every tensor,
 * and the bytes of one expert per MoE layer, which is what sizes the expert cache. The JSON
 * object is for scripts and so is complete: huge arrays in full, every string made valid UTF-8.
 *
 * Trade-off: the JSON is built in memory (jansson) before it is written, a few hundred bytes per
 * vocabulary entry; streaming it by hand would save that at the price of our own escaping code,
 * and a 150k-token vocabulary costs tens of MB, which inspect can afford.
 * Not done here: interpreting hyper-parameters (model.c does that and checks them).
 */
#include "gguf_dump.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "xd_error.h"

#define DUMP_ARRAY_ALL 8   /* text: arrays up to this many items are printed whole */
#define DUMP_ARRAY_HEAD 5  /* text: longer ones show this many, then "..." */
#define DUMP_STR_MAX 100   /* text: bytes of a string shown before it is cut */

/* ---- UTF-8 -------------------------------------------------------------------------------- */

size_t xd_utf8_seq_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0; /* continuation byte, 0xc0/0xc1 (always overlong) or 0xf5.. */
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* A JSON string of len bytes at s, each byte that is not part of valid UTF-8 replaced by
 * U+FFFD. NULL when out of memory. */
static json_t *json_str_safe(const char *s, size_t len) {
    if (len == 0) return json_string("");
    json_t *j = json_stringn(s, len); /* the common case: already valid */
    if (j) return j;
    char *buf = malloc(len * 3 + 1); /* each bad byte grows to 3; len lies inside the file */
    if (!buf) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = xd_utf8_seq_len(p + i, len - i);
        if (n) {
            memcpy(buf + o, p + i, n);
            o += n, i += n;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3, i += 1;
        }
    }
    j = json_stringn_nocheck(buf, o);
    free(buf);
    return j;
}

/* ---- values as JSON ---------------------------------------------------------------------- */

static json_t *json_f64(double d) {
    if (isnan(d)) return json_string("NaN");
    if (isinf(d)) return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

static json_t *json_u64(uint64_t u) {
    if (u <= (uint64_t)INT64_MAX) return json_integer((json_int_t)u);
    char buf[24]; /* jansson's integers are signed: keep the exact value as text */
    snprintf(buf, sizeof buf, "%" PRIu64, u);
    return json_string(buf);
}

json_t *xd_gguf_value_json(const struct xd_gguf_value *v) {
    switch (v->type) {
    case XD_GGUF_UINT8:
    case XD_GGUF_UINT16:
    case XD_GGUF_UINT32:
    case XD_GGUF_UINT64: return json_u64(v->v.u64);
    case XD_GGUF_INT8:
    case XD_GGUF_INT16:
    case XD_GGUF_INT32:
    case XD_GGUF_INT64: return json_integer(v->v.i64);
    case XD_GGUF_FLOAT32:
    case XD_GGUF_FLOAT64: return json_f64(v->v.f64);
    case XD_GGUF_BOOL: return json_boolean(v->v.b);
    case XD_GGUF_STRING: return json_str_safe(v->v.str.ptr, v->v.str.len);
    case XD_GGUF_ARRAY: break;
    default: return json_null();
    }
    json_t *a = json_array();
    for (uint64_t i = 0; a && i < v->v.arr.n; i++) {
        struct xd_gguf_value e;
        json_t *je = xd_gguf_arr_get(v, i, &e) ? json_null() : xd_gguf_value_json(&e);
        if (json_array_append_new(a, je)) { /* steals je, even on failure */
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* ---- the expert summary ------------------------------------------------------------------ */

/* If name is blk.N.ffn_{gate,up,down,gate_up}_exps[.*], its layer N; else -1. */
static int64_t expert_layer(const char *name) {
    static const char *const kinds[] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps",
                                        "ffn_gate_up_exps"};
    if (strncmp(name, "blk.", 4)) return -1;
    const char *p = name + 4;
    int64_t n = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (++digits > 18) return -1; /* no overflow; no model has 10^18 layers */
        n = n * 10 + (*p - '0');
    }
    if (!digits || *p++ != '.') return -1;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t l = strlen(kinds[k]);
        if (!strncmp(p, kinds[k], l) && (p[l] == 0 || p[l] == '.')) return n;
    }
    return -1;
}

struct layer_ref {
    int64_t layer;
    int64_t tensor;
};

static int cmp_layer_ref(const void *a, const void *b) {
    const struct layer_ref *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return x->tensor < y->tensor ? -1 : x->tensor > y->tensor;
}

int xd_gguf_experts_summarize(const struct xd_gguf *g, struct xd_gguf_experts *e) {
    memset(e, 0, sizeof *e);
    if (g->n_tensors <= 0) return 0;
    /* Byte sums cannot wrap: non-empty tensors are disjoint extents inside the file. */
    struct layer_ref *refs = malloc((size_t)g->n_tensors * sizeof *refs);
    if (!refs) return XD_E_NOMEM;
    int64_t n_refs = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct xd_gguf_tensor *t = &g->tensors[i];
        int64_t layer = expert_layer(t->name);
        if (layer < 0) {
            e->other_bytes += t->nbytes;
            continue;
        }
        e->expert_bytes += t->nbytes;
        refs[n_refs++] = (struct layer_ref){layer, i};
    }
    if (n_refs == 0) {
        free(refs);
        return 0;
    }
    qsort(refs, (size_t)n_refs, sizeof *refs, cmp_layer_ref);
    e->layers = calloc((size_t)n_refs, sizeof *e->layers);
    if (!e->layers) {
        free(refs);
        memset(e, 0, sizeof *e);
        return XD_E_NOMEM;
    }
    for (int64_t i = 0; i < n_refs; i++) {
        const struct xd_gguf_tensor *t = &g->tensors[refs[i].tensor];
        struct xd_gguf_expert_layer *l = e->n_layers ? &e->layers[e->n_layers - 1] : NULL;
        if (!l || l->layer != refs[i].layer) {
            l = &e->layers[e->n_layers++];
            l->layer = refs[i].layer;
            l->n_expert = t->ne[t->n_dims - 1];
            l->consistent = true;
        }
        /* the experts are the outermost dimension: ne[2] of a 3-D weight, ne[1] of a bias */
        int64_t n_expert = t->ne[t->n_dims - 1];
        l->n_tensors++;
        l->bytes += t->nbytes;
        if (n_expert != l->n_expert || n_expert <= 0 || t->nbytes % (uint64_t)n_expert)
            l->consistent = false;
        else
            l->bytes_per_expert += t->nbytes / (uint64_t)n_expert;
    }
    free(refs);
    return 0;
}

void xd_gguf_experts_free(struct xd_gguf_experts *e) {
    free(e->layers);
    memset(e, 0, sizeof *e);
}

/* ---- the JSON report --------------------------------------------------------------------- */

static json_t *json_experts(const struct xd_gguf_experts *e) {
    json_t *layers = json_array();
    for (int64_t i = 0; layers && i < e->n_layers; i++) {
        const struct xd_gguf_expert_layer *l = &e->layers[i];
        json_t *jl = json_pack("{sIsIsisbsIsI}", "layer", (json_int_t)l->layer, "n_expert",
                               (json_int_t)l->n_expert, "n_tensors", l->n_tensors, "consistent",
                               l->consistent, "bytes_per_expert", (json_int_t)l->bytes_per_expert,
                               "bytes", (json_int_t)l->bytes);
        if (json_array_append_new(layers, jl)) {
            json_decref(layers);
            layers = NULL;
        }
    }
    if (!layers) return NULL;
    /* json_pack's "o" steals layers, also on failure */
    return json_pack("{sIsosIsIsI}", "n_layers", (json_int_t)e->n_layers, "layers", layers,
                     "expert_bytes", (json_int_t)e->expert_bytes, "non_expert_bytes",
                     (json_int_t)e->other_bytes, "total_bytes",
                     (json_int_t)(e->expert_bytes + e->other_bytes));
}

/* Set key (any bytes) in obj; a key whose safe form is taken already gets "#index" appended,
 * so two keys that differ only in invalid bytes both survive. Steals val. */
static int json_set_key(json_t *obj, const char *key, int64_t index, json_t *val) {
    json_t *k = json_str_safe(key, strlen(key));
    if (!k || !val) {
        json_decref(k);
        json_decref(val);
        return -1;
    }
    const char *sk = json_string_value(k);
    size_t sl = json_string_length(k);
    int rc;
    if (!json_object_getn(obj, sk, sl)) {
        rc = json_object_setn_new_nocheck(obj, sk, sl, val);
    } else {
        char *alt = malloc(sl + 24);
        if (!alt) {
            json_decref(k);
            json_decref(val);
            return -1;
        }
        int n = snprintf(alt, sl + 24, "%s#%" PRId64, sk, index);
        rc = json_object_setn_new_nocheck(obj, alt, (size_t)n, val);
        free(alt);
    }
    json_decref(k);
    return rc;
}

static json_t *json_tensor(const struct xd_gguf *g, const struct xd_gguf_tensor *t) {
    json_t *shape = json_array();
    for (uint32_t d = 0; shape && d < t->n_dims; d++)
        if (json_array_append_new(shape, json_integer(t->ne[d]))) {
            json_decref(shape);
            shape = NULL;
        }
    json_t *name = json_str_safe(t->name, strlen(t->name));
    if (!shape || !name) {
        json_decref(shape);
        json_decref(name);
        return NULL;
    }
    return json_pack("{sosssIsosIsIsI}", "name", name, "type", xd_type_name(t->type), "type_id",
                     (json_int_t)t->type, "shape", shape, "offset", (json_int_t)t->offset,
                     "file_offset", (json_int_t)(g->data_offset + t->offset), "bytes",
                     (json_int_t)t->nbytes);
}

json_t *xd_gguf_dump_json(const struct xd_gguf *g, const char *path) {
    struct xd_gguf_experts e;
    if (xd_gguf_experts_summarize(g, &e)) return NULL;
    json_t *meta = json_object(), *tensors = json_array();
    for (int64_t i = 0; meta && i < g->n_kv; i++)
        if (json_set_key(meta, g->kv[i].key, i, xd_gguf_value_json(&g->kv[i].value))) {
            json_decref(meta);
            meta = NULL;
        }
    for (int64_t i = 0; tensors && i < g->n_tensors; i++)
        if (json_array_append_new(tensors, json_tensor(g, &g->tensors[i]))) {
            json_decref(tensors);
            tensors = NULL;
        }
    json_t *experts = json_experts(&e);
    json_t *file = json_str_safe(path ? path : "", path ? strlen(path) : 0);
    xd_gguf_experts_free(&e);
    if (!meta || !tensors || !experts || !file) {
        json_decref(meta);
        json_decref(tensors);
        json_decref(experts);
        json_decref(file);
        return NULL;
    }
    return json_pack("{sosIsIsIsIsIsIsososo}", "file", file, "size", (json_int_t)g->size,
                     "version", (json_int_t)g->version, "alignment", (json_int_t)g->alignment,
                     "data_offset", (json_int_t)g->data_offset, "n_kv", (json_int_t)g->n_kv,
                     "n_tensors", (json_int_t)g->n_tensors, "metadata", meta, "tensors",
                     tensors, "experts", experts);
}

/* ---- the text report --------------------------------------------------------------------- */

/* Print len bytes of s (quoted if quote), escaping quotes, backslashes, control bytes and
 * bytes that are not valid UTF-8, cut after max bytes with the full length noted. Keys and
 * tensor names go through here too: a file's bytes never reach the terminal raw. Returns the
 * columns printed (a UTF-8 sequence counts one), for padding. */
static int put_str(FILE *f, const char *s, size_t len, size_t max, bool quote) {
    const unsigned char *p = (const unsigned char *)s;
    size_t shown = len < max ? len : max;
    int cols = 0;
    if (quote) cols += fputc('"', f) != EOF;
    for (size_t i = 0; i < shown;) {
        unsigned c = p[i];
        size_t n = xd_utf8_seq_len(p + i, len - i);
        if (c == '"' || c == '\\') {
            cols += fprintf(f, "\\%c", c);
        } else if (c == '\n') {
            cols += fprintf(f, "\\n");
        } else if (c == '\t') {
            cols += fprintf(f, "\\t");
        } else if (c == '\r') {
            cols += fprintf(f, "\\r");
        } else if (c < 0x20 || c == 0x7f || n == 0) {
            cols += fprintf(f, "\\x%02x", c);
        } else {
            fwrite(p + i, 1, n, f);
            cols++;
            i += n;
            continue;
        }
        i++;
    }
    if (quote) cols += fputc('"', f) != EOF;
    if (shown < len) cols += fprintf(f, "... (%zu bytes)", len);
    return cols;
}

/* A key or tensor name, escaped, padded with spaces to width columns. */
static void put_name(FILE *f, const char *name, int width) {
    int cols = put_str(f, name, strlen(name), SIZE_MAX, false);
    if (cols < width) fprintf(f, "%*s", width - cols, "");
}

/* The shortest of 6..9 (float) or 15..17 (double) significant digits that reads back as d. */
static void put_float(FILE *f, double d, bool single) {
    char buf[40];
    for (int prec = single ? 6 : 15; prec <= (single ? 9 : 17); prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (single ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d) break;
    }
    fputs(buf, f); /* NaN never compares equal: it ends at the last precision, printed "nan" */
}

/* "u32", "str", "arr[str,151936]", "arr[arr,3]". */
static void put_type(FILE *f, const struct xd_gguf_value *v) {
    if (v->type != XD_GGUF_ARRAY) {
        fputs(xd_gguf_vtype_name(v->type), f);
        return;
    }
    fprintf(f, "arr[%s,%" PRIu64 "]", xd_gguf_vtype_name(v->v.arr.elem), v->v.arr.n);
}

static void put_value(FILE *f, const struct xd_gguf_value *v) {
    switch (v->type) {
    case XD_GGUF_UINT8:
    case XD_GGUF_UINT16:
    case XD_GGUF_UINT32:
    case XD_GGUF_UINT64: fprintf(f, "%" PRIu64, v->v.u64); return;
    case XD_GGUF_INT8:
    case XD_GGUF_INT16:
    case XD_GGUF_INT32:
    case XD_GGUF_INT64: fprintf(f, "%" PRId64, v->v.i64); return;
    case XD_GGUF_FLOAT32: put_float(f, v->v.f64, true); return;
    case XD_GGUF_FLOAT64: put_float(f, v->v.f64, false); return;
    case XD_GGUF_BOOL: fputs(v->v.b ? "true" : "false", f); return;
    case XD_GGUF_STRING: put_str(f, v->v.str.ptr, v->v.str.len, DUMP_STR_MAX, true); return;
    case XD_GGUF_ARRAY: break;
    default: fputs("?", f); return;
    }
    uint64_t n = v->v.arr.n, shown = n <= DUMP_ARRAY_ALL ? n : DUMP_ARRAY_HEAD;
    fputc('[', f);
    if (shown < n) fprintf(f, "%" PRIu64 " items: ", n);
    for (uint64_t i = 0; i < shown; i++) {
        struct xd_gguf_value e;
        if (i) fputs(", ", f);
        if (xd_gguf_arr_get(v, i, &e) == 0) put_value(f, &e);
    }
    if (shown < n) fputs(", ...", f);
    fputc(']', f);
}

static void put_bytes(FILE *f, uint64_t b) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double x = (double)b;
    int u = 0;
    while (x >= 1024 && u < 6) x /= 1024, u++;
    if (u == 0)
        fprintf(f, "%" PRIu64 " B", b);
    else
        fprintf(f, "%" PRIu64 " (%.1f %s)", b, x, units[u]);
}

/* Print "  key   value" for each present key of keys[], arch-relative names prefixed with
 * arch; absent ones as "-" when show_absent. */
static void put_keys(FILE *f, const struct xd_gguf *g, const char *arch, const char *const *keys,
                     size_t n_keys, bool show_absent, char *buf, size_t buflen) {
    for (size_t i = 0; i < n_keys; i++) {
        snprintf(buf, buflen, "%s%s", arch, keys[i]);
        const struct xd_gguf_value *v = xd_gguf_get(g, buf);
        if (!v && !show_absent) continue;
        fputs("  ", f);
        put_name(f, buf, 44);
        fputc(' ', f);
        if (v)
            put_value(f, v);
        else
            fputs("-", f);
        fputc('\n', f);
    }
}

static void put_model(FILE *f, const struct xd_gguf *g, char *buf, size_t buflen) {
    /* the hyper-parameters a MoE model needs, shown even when absent so a gap is visible */
    static const char *const hparams[] = {
        ".block_count",           ".context_length",
        ".embedding_length",      ".feed_forward_length",
        ".expert_feed_forward_length", ".attention.head_count",
        ".attention.head_count_kv", ".attention.key_length",
        ".attention.value_length", ".attention.layer_norm_rms_epsilon",
        ".expert_count",          ".expert_used_count",
        ".rope.freq_base",        ".rope.dimension_count",
    };
    static const char *const general[] = {"general.architecture", "general.name",
                                          "general.file_type", "general.quantization_version"};
    struct xd_gguf_str arch = {"", 0};
    fputs("model\n", f);
    put_keys(f, g, "", general, sizeof general / sizeof general[0], false, buf, buflen);
    char prefix[256]; /* "{arch}": keys are at most 1024 bytes, but no real arch is over 200 */
    if (xd_gguf_get_str(g, "general.architecture", &arch) || arch.len == 0 || arch.len > 200 ||
        memchr(arch.ptr, 0, arch.len)) {
        fputs("  (no usable general.architecture: hyper-parameters not shown)\n", f);
        return;
    }
    snprintf(prefix, sizeof prefix, "%.*s", (int)arch.len, arch.ptr);
    put_keys(f, g, prefix, hparams, sizeof hparams / sizeof hparams[0], true, buf, buflen);
    /* then every other key of the architecture, in file order */
    size_t pl = strlen(prefix);
    for (int64_t i = 0; i < g->n_kv; i++) {
        const char *k = g->kv[i].key;
        if (strncmp(k, prefix, pl) || k[pl] != '.') continue;
        bool listed = false;
        for (size_t j = 0; j < sizeof hparams / sizeof hparams[0] && !listed; j++)
            listed = !strcmp(k + pl, hparams[j]);
        if (listed) continue;
        fputs("  ", f);
        put_name(f, k, 44);
        fputc(' ', f);
        put_value(f, &g->kv[i].value);
        fputc('\n', f);
    }
}

static void put_tokenizer(FILE *f, const struct xd_gguf *g, char *buf, size_t buflen) {
    static const char *const ids[] = {
        "tokenizer.ggml.model",           "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",    "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",   "tokenizer.ggml.add_eos_token",
    };
    static const char *const arrays[][2] = {
        {"tokenizer.ggml.tokens", "vocabulary size"},
        {"tokenizer.ggml.merges", "merges"},
        {"tokenizer.ggml.scores", "scores"},
        {"tokenizer.ggml.token_type", "token types"},
    };
    fputs("tokenizer\n", f);
    bool any = false;
    for (int64_t i = 0; i < g->n_kv && !any; i++) any = !strncmp(g->kv[i].key, "tokenizer.", 10);
    if (!any) {
        fputs("  (none)\n", f);
        return;
    }
    put_keys(f, g, "", ids, sizeof ids / sizeof ids[0], false, buf, buflen);
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        const struct xd_gguf_value *v = xd_gguf_get(g, arrays[i][0]);
        if (!v) continue;
        fprintf(f, "  %-44s ", arrays[i][1]);
        if (v->type == XD_GGUF_ARRAY)
            fprintf(f, "%" PRIu64 "\n", v->v.arr.n);
        else
            fputs("(not an array)\n", f);
    }
    struct xd_gguf_str tmpl;
    if (!xd_gguf_get_str(g, "tokenizer.chat_template", &tmpl))
        fprintf(f, "  %-44s %" PRIu64 " bytes\n", "chat template", tmpl.len);
}

static void put_tensors(FILE *f, const struct xd_gguf *g) {
    fprintf(f, "tensors (%" PRId64 ")\n", g->n_tensors);
    if (g->n_tensors == 0) return;
    fprintf(f, "  %5s  %-36s %-8s %-24s %14s %14s\n", "#", "name", "type", "shape", "bytes",
            "offset");
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct xd_gguf_tensor *t = &g->tensors[i];
        char shape[96];
        int n = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && n < (int)sizeof shape; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        if (n < (int)sizeof shape) snprintf(shape + n, sizeof shape - (size_t)n, "]");
        fprintf(f, "  %5" PRId64 "  ", i);
        put_name(f, t->name, 36);
        fprintf(f, " %-8s %-24s %14" PRIu64 " %14" PRIu64 "\n", xd_type_name(t->type), shape,
                t->nbytes, t->offset);
    }
}

static void put_experts(FILE *f, const struct xd_gguf_experts *e) {
    fprintf(f, "experts (%" PRId64 " MoE layers)\n", e->n_layers);
    if (e->n_layers) {
        fprintf(f, "  %6s %8s %8s %20s %20s\n", "layer", "experts", "tensors", "bytes/expert",
                "bytes");
        for (int64_t i = 0; i < e->n_layers; i++) {
            const struct xd_gguf_expert_layer *l = &e->layers[i];
            fprintf(f, "  %6" PRId64 " %8" PRId64 " %8d %20" PRIu64 " %20" PRIu64 "%s\n",
                    l->layer, l->n_expert, l->n_tensors, l->bytes_per_expert, l->bytes,
                    l->consistent ? "" : "  (expert counts differ: bytes/expert is partial)");
        }
    }
    uint64_t total = e->expert_bytes + e->other_bytes;
    fputs("  expert tensors      ", f);
    put_bytes(f, e->expert_bytes);
    if (total) fprintf(f, ", %.1f%% of all tensor bytes", 100.0 * (double)e->expert_bytes /
                                                                (double)total);
    fputs("\n  non-expert tensors  ", f);
    put_bytes(f, e->other_bytes);
    fputs("\n  all tensors         ", f);
    put_bytes(f, total);
    fputc('\n', f);
}

int xd_gguf_dump_text(const struct xd_gguf *g, const char *path, FILE *f) {
    struct xd_gguf_experts e;
    if (xd_gguf_experts_summarize(g, &e)) return XD_E_NOMEM;
    char buf[512];
    fputs("file         ", f);
    if (path) put_name(f, path, 0);
    fputs("\nsize         ", f);
    put_bytes(f, g->size);
    fprintf(f, "\nGGUF version %" PRIu32 "\nalignment    %" PRIu64 "\ndata offset  %" PRIu64
            "\nkeys         %" PRId64 "\ntensors      %" PRId64 "\n\n",
            g->version, g->alignment, g->data_offset, g->n_kv, g->n_tensors);
    put_model(f, g, buf, sizeof buf);
    fputc('\n', f);
    put_tokenizer(f, g, buf, sizeof buf);
    fprintf(f, "\nmetadata (%" PRId64 " keys)\n", g->n_kv);
    for (int64_t i = 0; i < g->n_kv; i++) {
        const struct xd_gguf_kv *kv = &g->kv[i];
        fprintf(f, "  %5" PRId64 "  ", i);
        put_name(f, kv->key, 0);
        fputc(' ', f);
        put_type(f, &kv->value);
        fputs(" = ", f);
        put_value(f, &kv->value);
        fputc('\n', f);
    }
    fputc('\n', f);
    put_tensors(f, g);
    fputc('\n', f);
    put_experts(f, &e);
    xd_gguf_experts_free(&e);
    return ferror(f) ? XD_E_IO : 0;
}
