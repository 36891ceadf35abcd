/* model.c - binds a GGUF file to an architecture: hyper-parameters, weight views, tokenizer.
 *
 * Architectures are table rows, and so are the tensors of a layer: each tensor spec gives the
 * name pattern, the field it fills, its expected shape in symbolic dimensions and when it is
 * required. Loading resolves the symbols from the hyper-parameters and checks every tensor's
 * shape and type before anything runs, so a mismatched file fails at open with the tensor's
 * name instead of computing garbage. Weights are never copied: views point into the mmap.
 *
 * Not here: the forward pass (forward.c), expert residency (cache/).
 */
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "tokenizer.h"
#include "xd_error.h"

/* Symbolic dimensions of the tensor specs. */
enum dim { D_1, D_MODEL, D_VOCAB, D_Q, D_KV, D_VO, D_HEAD, D_EXPERT, D_FF_EXP, D_FF, D_COUNT };

/* When a per-layer tensor is required. */
enum need { NEED_ALWAYS, NEED_QK_NORM, NEED_MOE, NEED_DENSE };

struct tensor_spec {
    const char *suffix; /* "attn_q.weight" → blk.N.attn_q.weight */
    size_t field;       /* offsetof(struct xd_layer, ...) */
    enum dim ne[3];
    enum need need;
};

static const struct tensor_spec layer_tensors[] = {
    {"attn_norm.weight", offsetof(struct xd_layer, attn_norm), {D_MODEL, D_1, D_1}, NEED_ALWAYS},
    {"attn_q.weight", offsetof(struct xd_layer, wq), {D_MODEL, D_Q, D_1}, NEED_ALWAYS},
    {"attn_k.weight", offsetof(struct xd_layer, wk), {D_MODEL, D_KV, D_1}, NEED_ALWAYS},
    {"attn_v.weight", offsetof(struct xd_layer, wv), {D_MODEL, D_VO, D_1}, NEED_ALWAYS},
    {"attn_output.weight", offsetof(struct xd_layer, wo), {D_Q, D_MODEL, D_1}, NEED_ALWAYS},
    {"attn_q_norm.weight", offsetof(struct xd_layer, q_norm), {D_HEAD, D_1, D_1}, NEED_QK_NORM},
    {"attn_k_norm.weight", offsetof(struct xd_layer, k_norm), {D_HEAD, D_1, D_1}, NEED_QK_NORM},
    {"ffn_norm.weight", offsetof(struct xd_layer, ffn_norm), {D_MODEL, D_1, D_1}, NEED_ALWAYS},
    {"ffn_gate_inp.weight", offsetof(struct xd_layer, gate_inp), {D_MODEL, D_EXPERT, D_1},
     NEED_MOE},
    {"ffn_gate_exps.weight", offsetof(struct xd_layer, gate_exps),
     {D_MODEL, D_FF_EXP, D_EXPERT}, NEED_MOE},
    {"ffn_up_exps.weight", offsetof(struct xd_layer, up_exps), {D_MODEL, D_FF_EXP, D_EXPERT},
     NEED_MOE},
    {"ffn_down_exps.weight", offsetof(struct xd_layer, down_exps),
     {D_FF_EXP, D_MODEL, D_EXPERT}, NEED_MOE},
    {"ffn_gate.weight", offsetof(struct xd_layer, ffn_gate), {D_MODEL, D_FF, D_1}, NEED_DENSE},
    {"ffn_up.weight", offsetof(struct xd_layer, ffn_up), {D_MODEL, D_FF, D_1}, NEED_DENSE},
    {"ffn_down.weight", offsetof(struct xd_layer, ffn_down), {D_FF, D_MODEL, D_1}, NEED_DENSE},
};

struct xd_arch {
    const char *name; /* general.architecture */
    enum xd_rope_style rope;
    bool qk_norm;
    bool moe_required;
};

static const struct xd_arch arches[] = {
    /* Mixtral is "llama" with expert_count > 0; plain llama is the dense case. */
    {.name = "llama", .rope = XD_ROPE_NORM, .qk_norm = false, .moe_required = false},
    {.name = "qwen3moe", .rope = XD_ROPE_NEOX, .qk_norm = true, .moe_required = true},
};

__attribute__((format(printf, 4, 5))) static int errf(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Read "{arch}.{key}" as a positive integer; dflt < 0 means required. */
static int get_dim(const struct xd_gguf *g, const char *arch, const char *key, int64_t dflt,
                   int64_t *out, char *err, size_t errlen) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    uint64_t v;
    int rc = xd_gguf_get_u64(g, full, &v);
    if (rc == XD_E_MISSING && dflt >= 0) {
        *out = dflt;
        return 0;
    }
    if (rc == XD_E_MISSING) return errf(err, errlen, rc, "key '%s' is missing", full);
    if (rc) return errf(err, errlen, rc, "key '%s' is not a non-negative integer", full);
    if (v > (1ull << 31)) return errf(err, errlen, XD_E_FORMAT, "key '%s' = %llu is too large",
                                      full, (unsigned long long)v);
    *out = (int64_t)v;
    return 0;
}

static int get_float(const struct xd_gguf *g, const char *arch, const char *key, float dflt,
                     float *out, char *err, size_t errlen) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = xd_gguf_get_f32(g, full, out);
    if (rc == XD_E_MISSING) {
        *out = dflt;
        return 0;
    }
    if (rc) return errf(err, errlen, rc, "key '%s' is not a number", full);
    return 0;
}

static int load_hparams(struct xd_model *m, char *err, size_t errlen) {
    const struct xd_gguf *g = &m->gguf;
    const char *a = m->arch_name;
    struct xd_hparams *hp = &m->hp;
    int rc;
    if ((rc = get_dim(g, a, "embedding_length", -1, &hp->d_model, err, errlen)) ||
        (rc = get_dim(g, a, "block_count", -1, &hp->n_layer, err, errlen)) ||
        (rc = get_dim(g, a, "attention.head_count", -1, &hp->n_head, err, errlen)) ||
        (rc = get_dim(g, a, "context_length", 4096, &hp->n_ctx_train, err, errlen)) ||
        (rc = get_dim(g, a, "feed_forward_length", 0, &hp->n_ff, err, errlen)) ||
        (rc = get_dim(g, a, "expert_count", 0, &hp->n_expert, err, errlen)) ||
        (rc = get_dim(g, a, "expert_used_count", 0, &hp->n_expert_used, err, errlen)))
        return rc;
    if (hp->d_model == 0 || hp->n_layer == 0 || hp->n_head == 0)
        return errf(err, errlen, XD_E_FORMAT, "%s: embedding_length, block_count and "
                    "attention.head_count must be positive", a);
    if ((rc = get_dim(g, a, "attention.head_count_kv", hp->n_head, &hp->n_head_kv, err, errlen)) ||
        (rc = get_dim(g, a, "attention.key_length", hp->d_model / hp->n_head, &hp->head_dim, err,
                      errlen)) ||
        (rc = get_dim(g, a, "attention.value_length", hp->head_dim, &hp->head_dim_v, err,
                      errlen)) ||
        (rc = get_dim(g, a, "rope.dimension_count", hp->head_dim, &hp->n_rot, err, errlen)))
        return rc;
    if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv)
        return errf(err, errlen, XD_E_FORMAT, "%s.attention.head_count_kv = %lld must divide "
                    "head_count = %lld", a, (long long)hp->n_head_kv, (long long)hp->n_head);
    if (hp->head_dim == 0 || hp->head_dim_v != hp->head_dim)
        return errf(err, errlen, XD_E_UNSUPPORTED, "%s: key_length %lld and value_length %lld "
                    "must be equal and positive", a, (long long)hp->head_dim,
                    (long long)hp->head_dim_v);
    if (hp->n_rot == 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return errf(err, errlen, XD_E_FORMAT, "%s.rope.dimension_count = %lld must be even and "
                    "at most the head size %lld", a, (long long)hp->n_rot, (long long)hp->head_dim);
    if (hp->n_expert) {
        if (hp->n_expert_used == 0 || hp->n_expert_used > hp->n_expert)
            return errf(err, errlen, XD_E_FORMAT, "%s.expert_used_count = %lld must be in "
                        "1..expert_count (%lld)", a, (long long)hp->n_expert_used,
                        (long long)hp->n_expert);
        int64_t dflt = hp->n_ff ? hp->n_ff : 0;
        if ((rc = get_dim(g, a, "expert_feed_forward_length", dflt, &hp->n_ff_exp, err, errlen)))
            return rc;
    }
    if ((rc = get_float(g, a, "rope.freq_base", 10000.0f, &hp->rope_base, err, errlen)) ||
        (rc = get_float(g, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, err,
                        errlen)) ||
        (rc = get_float(g, a, "expert_weights_scale", 0.0f, &hp->expert_weights_scale, err,
                        errlen)))
        return rc;
    if (!(hp->rope_base > 0) || !(hp->rms_eps > 0))
        return errf(err, errlen, XD_E_FORMAT, "%s: rope.freq_base and layer_norm_rms_epsilon "
                    "must be positive", a);
    return 0;
}

/* Bind the tensor called name to *t, checking its shape against want (0 = any). */
static int bind(struct xd_model *m, const char *name, const int64_t want[3], struct xd_tensor *t,
                bool required, char *err, size_t errlen) {
    const struct xd_gguf_tensor *gt = xd_gguf_find_tensor(&m->gguf, name);
    memset(t, 0, sizeof *t);
    if (!gt) return required ? errf(err, errlen, XD_E_MISSING, "tensor '%s' is missing", name) : 0;
    const struct xd_type_traits *tt = xd_type_traits(gt->type);
    if (!tt || !tt->vec_dot_f32)
        return errf(err, errlen, XD_E_UNSUPPORTED, "tensor '%s': type %s is not supported yet",
                    name, xd_type_name(gt->type));
    for (int d = 0; d < 3; d++)
        if (gt->ne[d] != want[d])
            return errf(err, errlen, XD_E_SHAPE, "tensor '%s': shape [%lld, %lld, %lld], expected "
                        "[%lld, %lld, %lld]", name, (long long)gt->ne[0], (long long)gt->ne[1],
                        (long long)gt->ne[2], (long long)want[0], (long long)want[1],
                        (long long)want[2]);
    if (want[1] == 1 && want[2] == 1 && gt->type != XD_TYPE_F32)
        return errf(err, errlen, XD_E_UNSUPPORTED, "tensor '%s': norm weights must be F32, not %s",
                    name, xd_type_name(gt->type));
    if (gt->ne[3] != 1)
        return errf(err, errlen, XD_E_SHAPE, "tensor '%s' has a 4th dimension", name);
    t->name = gt->name;
    t->type = gt->type;
    for (int d = 0; d < 4; d++) t->ne[d] = gt->ne[d];
    t->nb[0] = tt->type_size;
    t->nb[1] = xd_row_size(gt->type, gt->ne[0]);
    t->nb[2] = t->nb[1] * (size_t)gt->ne[1];
    t->nb[3] = t->nb[2] * (size_t)gt->ne[2];
    t->data = gt->data;
    return 0;
}

static int bind_tensors(struct xd_model *m, char *err, size_t errlen) {
    const struct xd_hparams *hp = &m->hp;
    int64_t dims[D_COUNT] = {
        [D_1] = 1, [D_MODEL] = hp->d_model, [D_VOCAB] = hp->n_vocab,
        [D_Q] = hp->n_head * hp->head_dim, [D_KV] = hp->n_head_kv * hp->head_dim,
        [D_VO] = hp->n_head_kv * hp->head_dim_v, [D_HEAD] = hp->head_dim,
        [D_EXPERT] = hp->n_expert, [D_FF_EXP] = hp->n_ff_exp, [D_FF] = hp->n_ff,
    };
    int rc;
    const int64_t embd[3] = {hp->d_model, hp->n_vocab, 1}, vec[3] = {hp->d_model, 1, 1};
    if ((rc = bind(m, "token_embd.weight", embd, &m->tok_embd, true, err, errlen)) ||
        (rc = bind(m, "output_norm.weight", vec, &m->output_norm, true, err, errlen)) ||
        (rc = bind(m, "output.weight", embd, &m->output, false, err, errlen)))
        return rc;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    if (xd_type_traits(m->tok_embd.type)->to_float == NULL)
        return errf(err, errlen, XD_E_UNSUPPORTED, "tensor 'token_embd.weight': type %s",
                    xd_type_name(m->tok_embd.type));
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return errf(err, errlen, XD_E_NOMEM, "out of memory");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            const struct tensor_spec *s = &layer_tensors[i];
            bool need = s->need == NEED_ALWAYS || (s->need == NEED_QK_NORM && m->qk_norm) ||
                        (s->need == NEED_MOE && m->moe) || (s->need == NEED_DENSE && !m->moe);
            if (!need) continue;
            char name[96];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, s->suffix);
            int64_t want[3] = {dims[s->ne[0]], dims[s->ne[1]], dims[s->ne[2]]};
            struct xd_tensor *t = (struct xd_tensor *)((char *)&m->layers[l] + s->field);
            if ((rc = bind(m, name, want, t, true, err, errlen))) return rc;
        }
    }
    if (m->moe) {
        const struct xd_layer *L = &m->layers[0];
        m->expert_bytes = L->gate_exps.nb[2] + L->up_exps.nb[2] + L->down_exps.nb[2];
    }
    return 0;
}

int xd_model_load(const char *path, struct xd_model **out, char *err, size_t errlen) {
    *out = NULL;
    struct xd_model *m = calloc(1, sizeof *m);
    if (!m) return errf(err, errlen, XD_E_NOMEM, "out of memory");
    int rc = xd_gguf_open(path, &m->gguf, err, errlen);
    if (rc) {
        free(m);
        return rc;
    }
    struct xd_gguf_str arch;
    if ((rc = xd_gguf_get_str(&m->gguf, "general.architecture", &arch))) {
        errf(err, errlen, rc, "key 'general.architecture' is %s",
             rc == XD_E_MISSING ? "missing" : "not a string");
        goto fail;
    }
    for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++)
        if (xd_gguf_str_eq(arch, arches[i].name)) m->arch = &arches[i];
    if (!m->arch) {
        rc = errf(err, errlen, XD_E_UNSUPPORTED, "architecture '%.*s' is not supported (llama, "
                  "qwen3moe are)", (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
        goto fail;
    }
    m->arch_name = m->arch->name;
    m->rope = m->arch->rope;
    m->qk_norm = m->arch->qk_norm;
    if ((rc = load_hparams(m, err, errlen))) goto fail;
    m->moe = m->hp.n_expert > 0;
    if (m->arch->moe_required && !m->moe) {
        rc = errf(err, errlen, XD_E_FORMAT, "key '%s.expert_count' must be positive",
                  m->arch_name);
        goto fail;
    }
    if ((rc = xd_tokenizer_load(&m->gguf, &m->tok, err, errlen))) goto fail;
    const struct xd_gguf_tensor *te = xd_gguf_find_tensor(&m->gguf, "token_embd.weight");
    if (!te) {
        rc = errf(err, errlen, XD_E_MISSING, "tensor 'token_embd.weight' is missing");
        goto fail;
    }
    m->hp.n_vocab = te->ne[1];
    if (xd_tokenizer_n_vocab(m->tok) > m->hp.n_vocab) {
        rc = errf(err, errlen, XD_E_SHAPE, "tokenizer has %lld tokens but 'token_embd.weight' "
                  "has %lld rows", (long long)xd_tokenizer_n_vocab(m->tok),
                  (long long)m->hp.n_vocab);
        goto fail;
    }
    if ((rc = bind_tensors(m, err, errlen))) goto fail;
    *out = m;
    return 0;
fail:
    xd_model_free(m);
    return rc;
}

void xd_model_free(struct xd_model *m) {
    if (!m) return;
    if (m->tok) xd_tokenizer_free(m->tok);
    free(m->layers);
    xd_gguf_close(&m->gguf);
    free(m);
}

struct xd_tensor xd_tensor_expert(const struct xd_tensor *t, int64_t expert) {
    struct xd_tensor v = *t;
    v.ne[2] = 1;
    v.nb[3] = v.nb[2];
    v.data = (const char *)t->data + (size_t)expert * t->nb[2];
    return v;
}

uint64_t xd_model_nonexpert_bytes(const struct xd_model *m) {
    uint64_t total = 0;
    for (int64_t i = 0; i < m->gguf.n_tensors; i++) {
        const struct xd_gguf_tensor *t = &m->gguf.tensors[i];
        if (!strstr(t->name, "_exps.")) total += t->nbytes;
    }
    return total;
}
