/* gguf_dump.h - views of a parsed GGUF file for people and scripts (`expertd inspect`).
 *
 * Pure functions over a struct xd_gguf from gguf.h: a text report (header, hyper-parameters,
 * tokenizer summary, every key with long arrays summarized, every tensor, bytes per expert),
 * the same as one JSON object (jansson; full arrays, strings made valid UTF-8), and the expert
 * summary both are built on.
 */
#ifndef XD_GGUF_DUMP_H
#define XD_GGUF_DUMP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gguf.h"

/* The routed experts of one layer: the tensors blk.N.ffn_{gate,up,down,gate_up}_exps.* whose
 * outermost dimension counts the experts. */
struct xd_gguf_expert_layer {
    int64_t layer;             /* N in blk.N */
    int64_t n_expert;          /* outermost dimension of the layer's first expert tensor */
    int n_tensors;             /* expert tensors found (3: gate, up, down) */
    bool consistent;           /* every tensor had n_expert experts of whole bytes */
    uint64_t bytes_per_expert; /* one expert's gate+up+down slices: sum of nbytes / n_expert */
    uint64_t bytes;            /* all experts of the layer: sum of nbytes */
};

struct xd_gguf_experts {
    int64_t n_layers;                    /* layers with expert tensors */
    struct xd_gguf_expert_layer *layers; /* n_layers entries sorted by layer; malloc'd */
    uint64_t expert_bytes;               /* bytes of all expert tensors */
    uint64_t other_bytes;                /* bytes of every other tensor */
};

/* Summarize the expert tensors of g into *e. 0, or XD_E_NOMEM with *e empty. Free with
 * xd_gguf_experts_free. */
int xd_gguf_experts_summarize(const struct xd_gguf *g, struct xd_gguf_experts *e);
/* Release what xd_gguf_experts_summarize allocated; e may be empty. */
void xd_gguf_experts_free(struct xd_gguf_experts *e);

/* Write the text report of g (parsed from path, which is only printed) to f. 0, XD_E_NOMEM,
 * or XD_E_IO when writing fails. */
int xd_gguf_dump_text(const struct xd_gguf *g, const char *path, FILE *f);
/* The JSON report of g: {"file", "size", "version", "alignment", "data_offset", "n_kv",
 * "n_tensors", "metadata", "tensors", "experts"}. NULL when out of memory; caller decrefs. */
json_t *xd_gguf_dump_json(const struct xd_gguf *g, const char *path);
/* One metadata value as JSON: integers as numbers (u64 above INT64_MAX as a decimal string),
 * floats as numbers (NaN and infinities as the strings "NaN", "Infinity", "-Infinity"), bools,
 * strings with invalid UTF-8 replaced by U+FFFD, arrays in full. NULL when out of memory. */
json_t *xd_gguf_value_json(const struct xd_gguf_value *v);

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when the bytes there are not one
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). n > 0. */
size_t xd_utf8_seq_len(const unsigned char *p, size_t n);

#endif
