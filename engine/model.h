/* model.h - a loaded model: hyper-parameters, weights as views into the mmap, the tokenizer.
 *
 * The model knows no backend: tensors are (type, shape, strides, pointer) views into the GGUF
 * mapping, and expert weights are reached only through the expert cache (cache/), which is
 * given the 3-D merged expert tensors of each layer. Architectures are rows of a table
 * (model.c): the GGUF arch name, the RoPE style, whether Q/K are RMS-normed per head, and the
 * per-layer tensors with their expected shapes.
 */
#ifndef XD_MODEL_H
#define XD_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

enum xd_rope_style {
    XD_ROPE_NORM, /* llama.cpp "normal": rotate adjacent pairs (x[2i], x[2i+1]) */
    XD_ROPE_NEOX, /* GPT-NeoX: rotate (x[i], x[i + n_rot/2]) */
};

/* A weight tensor in place. ne[0] is the row length (contiguous); nb[i] is the byte stride of
 * dimension i (nb[1] = bytes of one row, nb[2] = bytes of one expert's matrix). */
struct xd_tensor {
    const char *name;
    uint32_t type; /* enum xd_type */
    int64_t ne[4];
    size_t nb[4];
    const void *data;
};

struct xd_hparams {
    int64_t n_vocab;
    int64_t n_ctx_train;
    int64_t d_model;     /* embedding_length */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim;    /* attention.key_length, default d_model / n_head */
    int64_t head_dim_v;  /* attention.value_length, default head_dim */
    int64_t n_ff;        /* dense FFN width (feed_forward_length) */
    int64_t n_expert;    /* 0 for a dense model */
    int64_t n_expert_used;
    int64_t n_ff_exp;    /* expert FFN width */
    int64_t n_rot;       /* rope.dimension_count, default head_dim */
    float rope_base;
    float rms_eps;
    float expert_weights_scale; /* 0 or 1: not applied */
};

struct xd_arch;

struct xd_layer {
    struct xd_tensor attn_norm;          /* [d_model] */
    struct xd_tensor wq, wk, wv, wo;     /* [d_model, n_head*head_dim] ... */
    struct xd_tensor q_norm, k_norm;     /* [head_dim] (qk-norm archs only) */
    struct xd_tensor ffn_norm;           /* [d_model] */
    struct xd_tensor gate_inp;           /* router [d_model, n_expert] (MoE) */
    struct xd_tensor gate_exps, up_exps; /* [d_model, n_ff_exp, n_expert] */
    struct xd_tensor down_exps;          /* [n_ff_exp, d_model, n_expert] */
    struct xd_tensor ffn_gate, ffn_up;   /* dense: [d_model, n_ff] */
    struct xd_tensor ffn_down;           /* dense: [n_ff, d_model] */
};

struct xd_model {
    struct xd_gguf gguf;
    const struct xd_arch *arch;
    const char *arch_name;
    enum xd_rope_style rope;
    bool qk_norm;
    bool moe;
    struct xd_hparams hp;
    struct xd_tensor tok_embd;    /* [d_model, n_vocab] */
    struct xd_tensor output_norm; /* [d_model] */
    struct xd_tensor output;      /* [d_model, n_vocab]; tok_embd when tied */
    struct xd_layer *layers;      /* n_layer */
    struct xd_tokenizer *tok;
    uint64_t expert_bytes;        /* bytes of one expert's gate+up+down in layer 0 */
};

/* Open, validate and bind a model. On error returns a negative code, writes a message naming
 * the key or tensor at fault, and *out is NULL. The caller frees with xd_model_free. */
int xd_model_load(const char *path, struct xd_model **out, char *err, size_t errlen);
void xd_model_free(struct xd_model *m);

/* Bytes of all weights that are not routed experts (attention, norms, router, LM head,
 * embedding table). */
uint64_t xd_model_nonexpert_bytes(const struct xd_model *m);

/* A 2-D view of one expert's matrix inside a 3-D merged expert tensor. */
struct xd_tensor xd_tensor_expert(const struct xd_tensor *t, int64_t expert);

#endif
