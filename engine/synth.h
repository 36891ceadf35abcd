/* synth.h - synthetic Mixture-of-Experts models, written as GGUF files llama.cpp can load.
 *
 * A model is described by a config (architecture, sizes, element type, seed, router skew),
 * planned into a tensor table (xd_synth_create), and streamed into a GGUF writer
 * (xd_synth_write) by generator threads. Weights are random and the outputs gibberish by
 * design; what matters is the layout (llama.cpp tensor names and keys), the byte size, the
 * numerical calm of the network and, with skew > 0, unevenly popular experts. The same config
 * and seed give the same bytes whatever the thread count.
 */
#ifndef XD_SYNTH_H
#define XD_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf_write.h"

enum xd_synth_arch {
    XD_SYNTH_MIXTRAL = 0,  /* general.architecture "llama" with experts */
    XD_SYNTH_QWEN3MOE = 1, /* "qwen3moe": q/k norms, head_dim independent of d_model */
    XD_SYNTH_ARCH_COUNT
};

struct xd_synth_config {
    enum xd_synth_arch arch;
    uint32_t type;       /* enum xd_type of the large matrices (needs from_float) */
    int64_t n_layers;    /* transformer blocks */
    int64_t d_model;     /* embedding length */
    int64_t n_heads;     /* query heads */
    int64_t n_kv_heads;  /* key/value heads; divides n_heads */
    int64_t head_dim;    /* 0: d_model / n_heads (mixtral requires exactly that) */
    int64_t n_experts;   /* experts per layer */
    int64_t top_k;       /* experts used per token */
    int64_t d_ff;        /* hidden size of one expert */
    int64_t n_ctx;       /* context_length */
    float rope_base;     /* rope.freq_base */
    float rms_eps;       /* attention.layer_norm_rms_epsilon */
    uint64_t seed;       /* weights are a pure function of (seed, tensor name, shape) */
    double skew;         /* >= 0: router row-norm Zipf exponent, see synth.c */
    const char *vocab_path; /* copy tokenizer.* from this GGUF; NULL: built-in byte vocab */
    const char *name;    /* general.name; NULL: "expertd-synth-<arch>" */
    int n_threads;       /* generator threads; <= 0: one per online CPU */
};

/* One planned tensor. */
struct xd_synth_tensor {
    char name[48];
    uint32_t type;      /* enum xd_type actually written */
    bool fallback;      /* a large matrix whose rows do not fit the config's block size */
    uint32_t n_dims;
    int64_t ne[4];      /* ne[0] contiguous; unused dims 1 */
    int32_t layer;      /* -1 outside the blocks */
    bool router;        /* ffn_gate_inp: rows scaled per expert by the skew */
    float mean, std;    /* elements ~ mean + std * N(0, 1) (times the router's row scale) */
    uint64_t nbytes;
};

struct xd_synth;

/* Fill c with the defaults of a small model of arch (about 14 MB at Q8_0). Never fails. */
void xd_synth_config_default(struct xd_synth_config *c, enum xd_synth_arch arch);
/* Architecture by name ("mixtral", "qwen3moe"); -1 if unknown. */
int xd_synth_arch_from_name(const char *name);
/* The --arch name of arch; "?" if out of range. Never NULL. */
const char *xd_synth_arch_name(enum xd_synth_arch arch);

/* Validate c, read the vocabulary and plan the tensors. Returns 0 and *out, or a negative
 * code with a message in err (*out NULL). c and the strings it points to may be freed after. */
int xd_synth_create(const struct xd_synth_config *c, struct xd_synth **out, char *err,
                    size_t errlen);
/* Free s (closes the --vocab file); s may be NULL. */
void xd_synth_destroy(struct xd_synth *s);

/* Tensors in the plan (and in the file). Never fails. */
int64_t xd_synth_n_tensors(const struct xd_synth *s);
/* Tensor i in file order; NULL unless 0 <= i < n_tensors. */
const struct xd_synth_tensor *xd_synth_tensor_at(const struct xd_synth *s, int64_t i);
/* Vocabulary size (rows of token_embd). */
int64_t xd_synth_n_vocab(const struct xd_synth *s);
/* Scale of expert's router row in layer (1 everywhere when skew is 0); 0 if out of range. */
float xd_synth_router_scale(const struct xd_synth *s, int64_t layer, int64_t expert);
/* Exact size of the file xd_synth_write produces; 0 on out-of-memory. */
uint64_t xd_synth_file_size(const struct xd_synth *s);

/* Called on the writing thread after each chunk; a non-zero return cancels the write
 * (xd_synth_write then returns -ECANCELED). */
typedef int (*xd_synth_progress_cb)(uint64_t done, uint64_t total, void *user);

/* Declare metadata and tensors in w (a fresh writer), then generate and stream every tensor.
 * Returns 0, or the writer's error / XD_E_NOMEM / -ECANCELED; the caller then discards w.
 * On success the caller still has to xd_gguf_writer_close(w). */
int xd_synth_write(const struct xd_synth *s, struct xd_gguf_writer *w, xd_synth_progress_cb cb,
                   void *user);

/* Set c->n_layers so that the file is as close as possible to bytes (at least one layer).
 * Same errors as xd_synth_create. */
int xd_synth_fit_layers(struct xd_synth_config *c, uint64_t bytes, char *err, size_t errlen);

#endif
