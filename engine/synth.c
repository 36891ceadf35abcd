/* synth.c - synthetic MoE models: plan the tensor table, generate random weights, stream GGUF.
 *
 * The layout follows llama.cpp exactly (src/models/llama.cpp and qwen3moe.cpp): the same
 * tensor names, the merged 3-D expert tensors {n_embd, n_ff, n_expert}, the hyper-parameter
 * keys each loader reads, and the types llama.cpp's quantizer would leave behind: norms and
 * the router (ffn_gate_inp) in F32, the chosen type for every large matrix, and F16 for a
 * large matrix whose rows are not a whole number of the chosen type's blocks (reported per
 * tensor through xd_synth_tensor_at()->fallback).
 *
 * Weights. Each element is mean + std * z with z a standard normal quantile picked by 16
 * random bits: a 65536-entry table of Phi^-1((i + 0.5) / 65536) (exact Gaussian shape, tails
 * to 4.32 sd), so one splitmix64 output gives four samples. The rejected alternatives cost
 * more per sample: Box-Muller (a log and a sincos per pair), Irwin-Hall on the 16-bit lanes of
 * one 64-bit draw (first version here: 1.5 ns per sample, bounded at 3.46 sd). Q8_0 is
 * quantized straight from the integer z-scores (q8_0_row), because quant.c's from_float on a
 * float row cost 2.5 ns per element, more than generating it; the other types go through
 * from_float. Matrices have std 1/sqrt(fan_in) so an RMS-normed input gives unit outputs; the
 * two residual-branch outputs (attn_output, ffn_down_exps) are further scaled by
 * 1/sqrt(2 n_layers) (GPT-2's trick) so the residual stream stays near unit RMS however deep
 * the model; norms are 1 + 0.05 z. The network is calm and its output is gibberish.
 *
 * Determinism. A tensor is cut into chunks of about 2M elements (whole rows); each chunk's RNG
 * is seeded by (seed, FNV-1a of the tensor name, chunk index). So the bytes depend on the seed,
 * the name and the shape only: not on the thread count, the scheduling or the other tensors.
 *
 * Skew. llama's MoE layers have no router bias, so "hot" experts are made by scaling router
 * rows: in layer l, the expert of popularity rank r (a per-layer random permutation) gets row
 * scale (r + 1)^-skew, renormalized to RMS 1 across the experts. For an isotropic input x the
 * logit of expert e is then N(0, m_e^2), and a wider logit wins the top-k more often. The
 * hottest expert's share of routing slots rises from 1/E (skew 0) towards 1/(2k), where it
 * saturates (the widest logit is selected whenever it is positive). For E=8, k=2 (simulated): skew 0.3 ->
 * 16%, 0.5 -> 18%, 1 -> 22%, 2 -> 24% (uniform 12.5%; test_gen measures 21.6% at skew 1 on
 * generated routers). For E=128, k=8: skew 1 -> ~6% (uniform 0.8%, ceiling 6.25%).
 *
 * Speed. Generator threads (one per CPU) fill a ring of chunk buffers; the calling thread
 * writes them in file order, so memory is bounded by the ring (2 slots per thread + 2) and the
 * disk sees one sequential stream. Not done: writing tensors out of order (GGUF would allow
 * it, but a sequential file is what the expert cache benchmarks want to read back).
 */
#include "synth.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "quant_blocks.h"
#include "xd_error.h"

#define CHUNK_ELEMS ((int64_t)1 << 21) /* elements per generated chunk (whole rows) */
#define MAX_THREADS 64
#define NORM_STD 0.05f
#define Z_SCALE 4096.0f /* z-score table unit: |z| <= 4.33 sd: |entry| <= 17715 fits int16 */
#define Z_N 65536       /* z-score table entries: 16 random bits each */

/* ---- architectures and defaults ----------------------------------------------------------- */

struct arch_desc {
    const char *name;       /* --arch */
    const char *gguf_arch;  /* general.architecture and the key prefix */
    bool free_head_dim;     /* attention.key_length / value_length may differ from d/heads */
    bool expert_ff_key;     /* expert_feed_forward_length */
    struct xd_synth_config defaults;
};

static const struct arch_desc archs[XD_SYNTH_ARCH_COUNT] = {
    [XD_SYNTH_MIXTRAL] = {
        .name = "mixtral", .gguf_arch = "llama",
        .defaults = {.arch = XD_SYNTH_MIXTRAL, .type = XD_TYPE_Q8_0, .n_layers = 4,
                     .d_model = 256, .n_heads = 8, .n_kv_heads = 4, .head_dim = 0,
                     .n_experts = 8, .top_k = 2, .d_ff = 512, .n_ctx = 4096,
                     .rope_base = 1000000.0f, .rms_eps = 1e-5f, .seed = 1},
    },
    [XD_SYNTH_QWEN3MOE] = {
        .name = "qwen3moe", .gguf_arch = "qwen3moe", .free_head_dim = true,
        .expert_ff_key = true,
        .defaults = {.arch = XD_SYNTH_QWEN3MOE, .type = XD_TYPE_Q8_0, .n_layers = 4,
                     .d_model = 256, .n_heads = 8, .n_kv_heads = 2, .head_dim = 64,
                     .n_experts = 16, .top_k = 4, .d_ff = 256, .n_ctx = 4096,
                     .rope_base = 1000000.0f, .rms_eps = 1e-6f, .seed = 1},
    },
};

/* general.file_type (llama_ftype) for the types gen writes; -1 where llama.cpp has none */
static int ftype_of(uint32_t type) {
    static const struct { uint32_t type; int ftype; } map[] = {
        {XD_TYPE_F32, 0}, {XD_TYPE_F16, 1}, {XD_TYPE_Q4_0, 2}, {XD_TYPE_Q8_0, 7},
        {XD_TYPE_Q4_K, 14 /* Q4_K_S: every large matrix Q4_K */}, {XD_TYPE_BF16, 32},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].type == type) return map[i].ftype;
    return -1;
}

/* ---- the tensor table --------------------------------------------------------------------- */

enum dim { D_1, D_MODEL, D_Q, D_KV, D_HEAD, D_EXPERTS, D_FF, D_VOCAB, D__COUNT };

enum role {
    R_NORM,   /* F32, 1 + 0.05 z */
    R_MAT,    /* chosen type, std 1/sqrt(fan_in) */
    R_RESID,  /* chosen type, std 1/sqrt(fan_in) / sqrt(2 n_layers): residual-branch output */
    R_ROUTER, /* F32, std 1/sqrt(fan_in), rows scaled by the skew */
    R_EMBD,   /* chosen type, std 1 */
};

#define A_MIX (1u << XD_SYNTH_MIXTRAL)
#define A_QWEN (1u << XD_SYNTH_QWEN3MOE)
#define A_ALL (A_MIX | A_QWEN)

struct tensor_tmpl {
    const char *name; /* "%d" is the layer for per-layer tensors */
    uint8_t n_dims;
    uint8_t dims[3];
    uint8_t role;
    uint8_t archs;
};

static const struct tensor_tmpl head_tensors[] = {
    {"token_embd.weight", 2, {D_MODEL, D_VOCAB}, R_EMBD, A_ALL},
};

static const struct tensor_tmpl layer_tensors[] = {
    {"blk.%d.attn_norm.weight", 1, {D_MODEL}, R_NORM, A_ALL},
    {"blk.%d.attn_q.weight", 2, {D_MODEL, D_Q}, R_MAT, A_ALL},
    {"blk.%d.attn_k.weight", 2, {D_MODEL, D_KV}, R_MAT, A_ALL},
    {"blk.%d.attn_v.weight", 2, {D_MODEL, D_KV}, R_MAT, A_ALL},
    {"blk.%d.attn_q_norm.weight", 1, {D_HEAD}, R_NORM, A_QWEN},
    {"blk.%d.attn_k_norm.weight", 1, {D_HEAD}, R_NORM, A_QWEN},
    {"blk.%d.attn_output.weight", 2, {D_Q, D_MODEL}, R_RESID, A_ALL},
    {"blk.%d.ffn_norm.weight", 1, {D_MODEL}, R_NORM, A_ALL},
    {"blk.%d.ffn_gate_inp.weight", 2, {D_MODEL, D_EXPERTS}, R_ROUTER, A_ALL},
    {"blk.%d.ffn_gate_exps.weight", 3, {D_MODEL, D_FF, D_EXPERTS}, R_MAT, A_ALL},
    {"blk.%d.ffn_up_exps.weight", 3, {D_MODEL, D_FF, D_EXPERTS}, R_MAT, A_ALL},
    {"blk.%d.ffn_down_exps.weight", 3, {D_FF, D_MODEL, D_EXPERTS}, R_RESID, A_ALL},
};

static const struct tensor_tmpl tail_tensors[] = {
    {"output_norm.weight", 1, {D_MODEL}, R_NORM, A_ALL},
    {"output.weight", 2, {D_MODEL, D_VOCAB}, R_MAT, A_ALL},
};

struct xd_synth {
    struct xd_synth_config c; /* with head_dim resolved; strings dropped */
    const struct arch_desc *arch;
    char name[128];           /* general.name */
    struct xd_gguf vocab;     /* the --vocab source, mapped while s lives (if vocab_copied) */
    bool vocab_copied;
    int64_t n_vocab;
    float *router_scale; /* [n_layers * n_experts] */
    int16_t ztab[Z_N];   /* normal quantiles, see fill_ztab */
    struct xd_synth_tensor *t;
    int64_t n_t;
};

/* ---- RNG ---------------------------------------------------------------------------------- */

#define GOLDEN 0x9e3779b97f4a7c15ull

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Phi^-1(p) for 0 < p <= 0.5: Acklam's rational approximation, relative error 1.2e-9. */
static double norm_quantile_lower(double p) {
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                -2.759285104469687e+02, 1.383577518672690e+02,
                                -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                -1.556989798598866e+02, 6.680131188771011e+01,
                                -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                -2.400758277161838e+00, -2.549732539343734e+00,
                                4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01,
                                2.445134137142996e+00, 3.754408661907416e+00};
    if (p < 0.02425) {
        double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/* Standard normal quantiles at (i + 0.5) / 65536, times Z_SCALE: 16 random bits pick one.
 * Computed for the lower half and mirrored, so the table is exactly symmetric. The error of
 * the approximation is far below the 1/Z_SCALE rounding; it uses log and sqrt only, so a libm
 * differing in the last ulp could change an entry only at an exact .5 (not seen). */
static void fill_ztab(int16_t *z) {
    for (int i = 0; i < Z_N / 2; i++) {
        double v = norm_quantile_lower((i + 0.5) / Z_N) * Z_SCALE;
        z[i] = (int16_t)lround(v);
        z[Z_N - 1 - i] = (int16_t)-z[i];
    }
}

/* n z-scores (times Z_SCALE) from the splitmix64 stream at *state: four per 64-bit output. */
static void z_row(uint64_t *state, const int16_t *ztab, int16_t *out, int64_t n) {
    uint64_t s = *state;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s += GOLDEN;
        uint64_t r = mix64(s);
        out[i] = ztab[r & 0xffff];
        out[i + 1] = ztab[(r >> 16) & 0xffff];
        out[i + 2] = ztab[(r >> 32) & 0xffff];
        out[i + 3] = ztab[r >> 48];
    }
    if (i < n) {
        s += GOLDEN;
        for (uint64_t r = mix64(s); i < n; i++, r >>= 16) out[i] = ztab[r & 0xffff];
    }
    *state = s;
}

/* Q8_0 straight from integer z-scores (elements k * z) without a float row: quant.c's rule,
 * d = amax / 127 and q = round(x / d), except that ties round up rather than away from zero
 * (only exact ties differ). Measured 0.7 against 2.8 ns per element for float + from_float. */
static void q8_0_row(const int16_t *z, void *dst, int64_t n, float k) {
    struct xd_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / XD_QK8_0; i++, z += XD_QK8_0) {
        int amax = 0;
        for (int j = 0; j < XD_QK8_0; j++) {
            const int a = z[j] < 0 ? -z[j] : z[j];
            amax = a > amax ? a : amax;
        }
        const float id = amax ? 127.0f / (float)amax : 0.0f;
        b[i].d = xd_fp32_to_fp16((float)amax * k / 127.0f);
        /* z * id is in [-127, 127]: shift positive so truncation rounds (vectorizes) */
        for (int j = 0; j < XD_QK8_0; j++)
            b[i].qs[j] = (int8_t)((int)((float)z[j] * id + 128.5f) - 128);
    }
}

/* ---- config ------------------------------------------------------------------------------- */

void xd_synth_config_default(struct xd_synth_config *c, enum xd_synth_arch arch) {
    *c = archs[(unsigned)arch < XD_SYNTH_ARCH_COUNT ? arch : XD_SYNTH_MIXTRAL].defaults;
}

int xd_synth_arch_from_name(const char *name) {
    for (int i = 0; i < XD_SYNTH_ARCH_COUNT; i++)
        if (!strcmp(name, archs[i].name)) return i;
    return -1;
}

const char *xd_synth_arch_name(enum xd_synth_arch arch) {
    return (unsigned)arch < XD_SYNTH_ARCH_COUNT ? archs[arch].name : "?";
}

static int failf(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int failf(char *err, size_t errlen, int rc, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Limits keep every size product far from overflow and every key within a u32. */
static int check_config(const struct xd_synth_config *c, int64_t *head_dim, char *err,
                        size_t errlen) {
    const struct {
        const char *what;
        int64_t v, lo, hi;
    } lim[] = {
        {"layers", c->n_layers, 1, 4096},     {"d-model", c->d_model, 1, 65536},
        {"heads", c->n_heads, 1, 1024},       {"kv-heads", c->n_kv_heads, 1, 1024},
        {"head-dim", c->head_dim, 0, 4096},   {"experts", c->n_experts, 1, 1024},
        {"top-k", c->top_k, 1, 1024},         {"ff", c->d_ff, 1, 1 << 20},
        {"ctx", c->n_ctx, 1, (int64_t)1 << 30},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++)
        if (lim[i].v < lim[i].lo || lim[i].v > lim[i].hi)
            return failf(err, errlen, XD_E_INVALID, "--%s %lld is out of range [%lld, %lld]",
                         lim[i].what, (long long)lim[i].v, (long long)lim[i].lo,
                         (long long)lim[i].hi);
    if ((unsigned)c->arch >= XD_SYNTH_ARCH_COUNT)
        return failf(err, errlen, XD_E_INVALID, "unknown architecture %d", (int)c->arch);
    const struct xd_type_traits *tt = xd_type_traits(c->type);
    if (!tt || !tt->from_float)
        return failf(err, errlen, XD_E_UNSUPPORTED, "type %s cannot be written",
                     xd_type_name(c->type));
    if (c->n_heads % c->n_kv_heads)
        return failf(err, errlen, XD_E_INVALID, "--heads %lld is not a multiple of --kv-heads "
                     "%lld", (long long)c->n_heads, (long long)c->n_kv_heads);
    if (c->top_k > c->n_experts)
        return failf(err, errlen, XD_E_INVALID, "--top-k %lld exceeds --experts %lld",
                     (long long)c->top_k, (long long)c->n_experts);
    int64_t hd = c->head_dim;
    if (!archs[c->arch].free_head_dim || hd == 0) {
        if (c->d_model % c->n_heads)
            return failf(err, errlen, XD_E_INVALID, "--d-model %lld is not a multiple of "
                         "--heads %lld", (long long)c->d_model, (long long)c->n_heads);
        int64_t tied = c->d_model / c->n_heads;
        if (hd && hd != tied)
            return failf(err, errlen, XD_E_INVALID, "%s ties head_dim to d_model/heads = %lld "
                         "(got --head-dim %lld; qwen3moe allows any)",
                         archs[c->arch].name, (long long)tied, (long long)hd);
        hd = tied;
    }
    if (hd % 2)
        return failf(err, errlen, XD_E_INVALID, "head_dim %lld is odd (RoPE rotates pairs)",
                     (long long)hd);
    if (!(c->rope_base > 0.0f) || !isfinite(c->rope_base))
        return failf(err, errlen, XD_E_INVALID, "--rope-base must be positive");
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return failf(err, errlen, XD_E_INVALID, "rms epsilon must be positive");
    if (!(c->skew >= 0.0 && c->skew <= 16.0))
        return failf(err, errlen, XD_E_INVALID, "--skew %g is out of range [0, 16]", c->skew);
    *head_dim = hd;
    return 0;
}

/* ---- vocabulary --------------------------------------------------------------------------- */

#define BUILTIN_BOS 256
#define BUILTIN_EOS 257
#define BUILTIN_N_VOCAB 258

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * map in order to U+0100.. . Writes the UTF-8 of byte b's code point; returns its length. */
static int byte_token(unsigned b, char out[3]) {
    unsigned cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) {
        cp = b;
    } else {
        unsigned n = 0; /* rank of b among the non-printable bytes */
        for (unsigned x = 0; x < b; x++)
            n += !((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) ||
                   (x >= 0xae && x <= 0xff));
        cp = 0x100 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    out[2] = 0;
    return 2;
}

static int declare_builtin_vocab(struct xd_gguf_writer *w) {
    char text[256][3];
    const char *tokens[BUILTIN_N_VOCAB];
    int32_t types[BUILTIN_N_VOCAB];
    for (unsigned b = 0; b < 256; b++) {
        byte_token(b, text[b]);
        tokens[b] = text[b];
        types[b] = 1; /* NORMAL */
    }
    tokens[BUILTIN_BOS] = "<|startoftext|>";
    tokens[BUILTIN_EOS] = "<|endoftext|>";
    types[BUILTIN_BOS] = types[BUILTIN_EOS] = 3; /* CONTROL */
    xd_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    xd_gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt-2");
    xd_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, BUILTIN_N_VOCAB);
    xd_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", XD_GGUF_INT32, types,
                           BUILTIN_N_VOCAB);
    /* no merges: every byte is its own token, which is valid BPE (llama.cpp needs the key) */
    xd_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", NULL, 0);
    xd_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", BUILTIN_BOS);
    xd_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", BUILTIN_EOS);
    xd_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 1);
    return xd_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", 0);
}

static int declare_copied_vocab(const struct xd_synth *s, struct xd_gguf_writer *w) {
    int rc = 0;
    for (int64_t i = 0; i < s->vocab.n_kv && !rc; i++)
        if (!strncmp(s->vocab.kv[i].key, "tokenizer.", 10))
            rc = xd_gguf_writer_add_value(w, s->vocab.kv[i].key, &s->vocab.kv[i].value);
    return rc;
}

static int open_vocab(struct xd_synth *s, const char *path, char *err, size_t errlen) {
    char msg[256];
    int rc = xd_gguf_open(path, &s->vocab, msg, sizeof msg);
    if (rc) return failf(err, errlen, rc, "--vocab: %s", msg);
    s->vocab_copied = true;
    const struct xd_gguf_value *tok;
    if (xd_gguf_get_arr(&s->vocab, "tokenizer.ggml.tokens", &tok) ||
        tok->v.arr.elem != XD_GGUF_STRING || tok->v.arr.n == 0 || tok->v.arr.n > (1u << 24))
        return failf(err, errlen, XD_E_MISSING, "--vocab %s: no tokenizer.ggml.tokens array "
                     "of 1..16M strings", path);
    s->n_vocab = (int64_t)tok->v.arr.n;
    return 0;
}

/* ---- planning ----------------------------------------------------------------------------- */

static void plan_router_scales(struct xd_synth *s) {
    const int64_t E = s->c.n_experts;
    for (int64_t l = 0; l < s->c.n_layers; l++) {
        float *m = s->router_scale + l * E;
        uint64_t st = mix64(s->c.seed ^ fnv1a("router-rank")) + (uint64_t)l * GOLDEN;
        double sumsq = 0;
        for (int64_t e = 0; e < E; e++) {
            m[e] = (float)pow((double)(e + 1), -s->c.skew);
            sumsq += (double)m[e] * m[e];
        }
        float norm = (float)(1.0 / sqrt(sumsq / (double)E));
        for (int64_t e = 0; e < E; e++) m[e] *= norm;
        /* m is in rank order; a per-layer Fisher-Yates shuffle (a stream of its own) decides
         * which expert gets which rank */
        for (int64_t e = E - 1; e > 0; e--) {
            st += GOLDEN;
            int64_t j = (int64_t)(mix64(st) % (uint64_t)(e + 1));
            float tmp = m[e];
            m[e] = m[j];
            m[j] = tmp;
        }
    }
}

static void add_tensor(struct xd_synth *s, const struct tensor_tmpl *tp, int32_t layer,
                      const int64_t dimv[D__COUNT]) {
    struct xd_synth_tensor *t = &s->t[s->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, tp->name, layer);
    t->layer = layer;
    t->n_dims = tp->n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < tp->n_dims ? dimv[tp->dims[d]] : 1;
    const double fan_in = (double)t->ne[0];
    switch ((enum role)tp->role) {
    case R_NORM:
        t->type = XD_TYPE_F32;
        t->mean = 1.0f;
        t->std = NORM_STD;
        break;
    case R_ROUTER:
        t->type = XD_TYPE_F32;
        t->router = true;
        t->std = (float)(1.0 / sqrt(fan_in));
        break;
    case R_MAT:
    case R_RESID:
    case R_EMBD:
        t->type = s->c.type;
        t->std = tp->role == R_EMBD ? 1.0f : (float)(1.0 / sqrt(fan_in));
        if (tp->role == R_RESID) t->std *= (float)(1.0 / sqrt(2.0 * (double)s->c.n_layers));
        if (t->ne[0] % xd_type_traits(t->type)->blck_size) {
            t->type = XD_TYPE_F16;
            t->fallback = true;
        }
        break;
    }
    uint64_t rows = (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    t->nbytes = (uint64_t)xd_row_size(t->type, t->ne[0]) * rows;
}

static void plan_tensors(struct xd_synth *s) {
    const struct xd_synth_config *c = &s->c;
    const int64_t dimv[D__COUNT] = {
        [D_1] = 1, [D_MODEL] = c->d_model, [D_Q] = c->n_heads * c->head_dim,
        [D_KV] = c->n_kv_heads * c->head_dim, [D_HEAD] = c->head_dim,
        [D_EXPERTS] = c->n_experts, [D_FF] = c->d_ff, [D_VOCAB] = s->n_vocab,
    };
    const unsigned am = 1u << c->arch;
    for (size_t i = 0; i < sizeof head_tensors / sizeof head_tensors[0]; i++)
        if (head_tensors[i].archs & am) add_tensor(s, &head_tensors[i], -1, dimv);
    for (int32_t l = 0; l < (int32_t)c->n_layers; l++)
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++)
            if (layer_tensors[i].archs & am) add_tensor(s, &layer_tensors[i], l, dimv);
    for (size_t i = 0; i < sizeof tail_tensors / sizeof tail_tensors[0]; i++)
        if (tail_tensors[i].archs & am) add_tensor(s, &tail_tensors[i], -1, dimv);
}

int xd_synth_create(const struct xd_synth_config *c, struct xd_synth **out, char *err,
                    size_t errlen) {
    *out = NULL;
    int64_t hd;
    int rc = check_config(c, &hd, err, errlen);
    if (rc) return rc;
    struct xd_synth *s = calloc(1, sizeof *s);
    if (!s) return failf(err, errlen, XD_E_NOMEM, "out of memory");
    s->c = *c;
    s->c.head_dim = hd;
    s->c.vocab_path = NULL;
    s->c.name = NULL;
    s->arch = &archs[c->arch];
    s->vocab.fd = -1;
    snprintf(s->name, sizeof s->name, "%s", c->name ? c->name : "");
    if (!c->name) snprintf(s->name, sizeof s->name, "expertd-synth-%s", s->arch->name);
    if (c->vocab_path) {
        if ((rc = open_vocab(s, c->vocab_path, err, errlen))) goto fail;
    } else {
        s->n_vocab = BUILTIN_N_VOCAB;
    }
    size_t n_layer_t = sizeof layer_tensors / sizeof layer_tensors[0];
    size_t cap = (size_t)c->n_layers * n_layer_t + 8;
    s->t = calloc(cap, sizeof *s->t);
    s->router_scale = malloc((size_t)(c->n_layers * c->n_experts) * sizeof *s->router_scale);
    if (!s->t || !s->router_scale) {
        rc = failf(err, errlen, XD_E_NOMEM, "out of memory");
        goto fail;
    }
    plan_tensors(s);
    plan_router_scales(s);
    fill_ztab(s->ztab);
    *out = s;
    return 0;
fail:
    xd_synth_destroy(s);
    return rc;
}

void xd_synth_destroy(struct xd_synth *s) {
    if (!s) return;
    if (s->vocab_copied) xd_gguf_close(&s->vocab);
    free(s->t);
    free(s->router_scale);
    free(s);
}

int64_t xd_synth_n_tensors(const struct xd_synth *s) { return s->n_t; }

const struct xd_synth_tensor *xd_synth_tensor_at(const struct xd_synth *s, int64_t i) {
    return i >= 0 && i < s->n_t ? &s->t[i] : NULL;
}

int64_t xd_synth_n_vocab(const struct xd_synth *s) { return s->n_vocab; }

float xd_synth_router_scale(const struct xd_synth *s, int64_t layer, int64_t expert) {
    if (layer < 0 || layer >= s->c.n_layers || expert < 0 || expert >= s->c.n_experts)
        return 0.0f;
    return s->router_scale[layer * s->c.n_experts + expert];
}

/* ---- metadata ----------------------------------------------------------------------------- */

/* Declare every key and tensor; returns the writer's (sticky) status. */
static int declare(const struct xd_synth *s, struct xd_gguf_writer *w) {
    const struct xd_synth_config *c = &s->c;
    const char *a = s->arch->gguf_arch;
    char key[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    xd_gguf_writer_add_str(w, "general.architecture", a);
    xd_gguf_writer_add_str(w, "general.name", s->name);
    int ft = ftype_of(c->type);
    if (ft >= 0) xd_gguf_writer_add_u32(w, "general.file_type", (uint32_t)ft);
    xd_gguf_writer_add_u32(w, "general.quantization_version", 2);
    xd_gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)c->n_ctx);
    xd_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)c->d_model);
    xd_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)c->n_layers);
    xd_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)c->d_ff);
    xd_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads);
    xd_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    xd_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->rms_eps);
    xd_gguf_writer_add_f32(w, KEY("rope.freq_base"), c->rope_base);
    xd_gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim);
    xd_gguf_writer_add_u32(w, KEY("expert_count"), (uint32_t)c->n_experts);
    xd_gguf_writer_add_u32(w, KEY("expert_used_count"), (uint32_t)c->top_k);
    if (s->arch->free_head_dim) {
        xd_gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim);
        xd_gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim);
    }
    if (s->arch->expert_ff_key)
        xd_gguf_writer_add_u32(w, KEY("expert_feed_forward_length"), (uint32_t)c->d_ff);
    xd_gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t)s->n_vocab);
#undef KEY
    xd_gguf_writer_add_u64(w, "expertd.synth.seed", c->seed);
    xd_gguf_writer_add_f32(w, "expertd.synth.skew", (float)c->skew);
    int rc = s->vocab_copied ? declare_copied_vocab(s, w) : declare_builtin_vocab(w);
    for (int64_t i = 0; i < s->n_t && !rc; i++)
        rc = xd_gguf_writer_add_tensor(w, s->t[i].name, s->t[i].type, s->t[i].n_dims,
                                       s->t[i].ne);
    return rc;
}

uint64_t xd_synth_file_size(const struct xd_synth *s) {
    struct xd_gguf_writer *w;
    if (xd_gguf_writer_create_fd(-1, &w)) return 0;
    uint64_t n = declare(s, w) ? 0 : xd_gguf_writer_file_size(w);
    xd_gguf_writer_discard(w);
    return n;
}

int xd_synth_fit_layers(struct xd_synth_config *c, uint64_t bytes, char *err, size_t errlen) {
    uint64_t size[2];
    for (int i = 0; i < 2; i++) {
        struct xd_synth_config t = *c;
        struct xd_synth *s;
        t.n_layers = i + 1;
        int rc = xd_synth_create(&t, &s, err, errlen);
        if (rc) return rc;
        size[i] = xd_synth_file_size(s);
        xd_synth_destroy(s);
        if (!size[i]) return failf(err, errlen, XD_E_NOMEM, "out of memory");
    }
    uint64_t per_layer = size[1] - size[0];
    int64_t n = 1;
    if (bytes > size[0]) n = 1 + (int64_t)((bytes - size[0] + per_layer / 2) / per_layer);
    if (n > 4096)
        return failf(err, errlen, XD_E_INVALID, "--size needs %lld layers of %llu bytes "
                     "(at most 4096): make the layers larger", (long long)n,
                     (unsigned long long)per_layer);
    c->n_layers = n;
    return 0;
}

/* ---- generation --------------------------------------------------------------------------- */

struct job {
    int64_t tensor;
    int64_t row0, n_rows;
    uint64_t chunk; /* index within the tensor: seeds the chunk's stream */
};

enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_READY };

struct slot {
    uint8_t *buf;
    size_t n;
    int64_t job;  /* the job held (BUSY, READY) */
    int64_t turn; /* the only job that may take the slot when FREE: job % n_slots == slot */
    enum slot_state state;
};

/* Shared by the generator threads and the writing thread; everything below mu is guarded. */
struct gen {
    const struct xd_synth *s;
    const struct job *jobs;
    int64_t n_jobs;
    int64_t max_ne0;
    struct slot *slots;
    int n_slots;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* any slot changed state, or stop */
    int64_t next_job;  /* next job to hand to a generator */
    bool stop;
    int err; /* a generator's failure */
};

/* Per-thread scratch: one row of z-scores and one of floats. */
struct scratch {
    int16_t *z;
    float *f;
};

/* Generate job j's rows into dst (row-major, in the tensor's type). */
static void gen_chunk(const struct xd_synth *s, const struct job *j, const struct scratch *sc,
                      uint8_t *dst) {
    const struct xd_synth_tensor *t = &s->t[j->tensor];
    const struct xd_type_traits *tt = xd_type_traits(t->type);
    const size_t row_bytes = xd_row_size(t->type, t->ne[0]);
    const int64_t n = t->ne[0];
    uint64_t st = mix64(mix64(s->c.seed ^ fnv1a(t->name)) + j->chunk * GOLDEN);
    for (int64_t r = 0; r < j->n_rows; r++) {
        float std = t->std;
        if (t->router) std *= s->router_scale[t->layer * s->c.n_experts + (j->row0 + r) % t->ne[1]];
        const float k = std / Z_SCALE;
        uint8_t *out = dst + (size_t)r * row_bytes;
        z_row(&st, s->ztab, sc->z, n);
        if (t->type == XD_TYPE_Q8_0 && t->mean == 0.0f) {
            q8_0_row(sc->z, out, n, k);
            continue;
        }
        float *f = t->type == XD_TYPE_F32 ? (float *)(void *)out : sc->f;
        for (int64_t i = 0; i < n; i++) f[i] = t->mean + k * (float)sc->z[i];
        if (t->type != XD_TYPE_F32) tt->from_float(f, out, n);
    }
}

static void *gen_thread(void *arg) {
    struct gen *g = arg;
    struct scratch sc = {malloc((size_t)g->max_ne0 * sizeof *sc.z),
                         malloc((size_t)g->max_ne0 * sizeof *sc.f)};
    pthread_mutex_lock(&g->mu);
    if (!sc.z || !sc.f) {
        g->err = XD_E_NOMEM;
        g->stop = true;
        pthread_cond_broadcast(&g->cv);
    }
    while (!g->stop && g->next_job < g->n_jobs) {
        int64_t j = g->next_job++;
        struct slot *sl = &g->slots[j % g->n_slots];
        /* the slot frees when the writer has written job j - n_slots; the turn keeps a
         * generator that took j + n_slots meanwhile from jumping the queue (which would
         * leave the writer waiting for j forever) */
        while (!g->stop && !(sl->state == SLOT_FREE && sl->turn == j))
            pthread_cond_wait(&g->cv, &g->mu);
        if (g->stop) break;
        sl->state = SLOT_BUSY;
        sl->job = j;
        pthread_mutex_unlock(&g->mu);
        const struct job *jb = &g->jobs[j];
        gen_chunk(g->s, jb, &sc, sl->buf);
        sl->n = (size_t)jb->n_rows * xd_row_size(g->s->t[jb->tensor].type,
                                                 g->s->t[jb->tensor].ne[0]);
        pthread_mutex_lock(&g->mu);
        sl->state = SLOT_READY;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    free(sc.z);
    free(sc.f);
    return NULL;
}

/* Cut every tensor into jobs of whole rows; returns the job array (n in *n_jobs). */
static struct job *plan_jobs(const struct xd_synth *s, int64_t *n_jobs, size_t *max_bytes,
                             int64_t *max_ne0) {
    int64_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        struct job *jobs = NULL;
        if (pass == 1 && !(jobs = malloc((size_t)(n ? n : 1) * sizeof *jobs))) return NULL;
        n = 0;
        *max_bytes = 0;
        *max_ne0 = 1;
        for (int64_t i = 0; i < s->n_t; i++) {
            const struct xd_synth_tensor *t = &s->t[i];
            int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
            int64_t per = t->ne[0] >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / t->ne[0];
            size_t rb = xd_row_size(t->type, t->ne[0]);
            if (t->ne[0] > *max_ne0) *max_ne0 = t->ne[0];
            uint64_t chunk = 0;
            for (int64_t r = 0; r < rows; r += per, chunk++, n++) {
                int64_t k = rows - r < per ? rows - r : per;
                if ((size_t)k * rb > *max_bytes) *max_bytes = (size_t)k * rb;
                if (jobs) jobs[n] = (struct job){.tensor = i, .row0 = r, .n_rows = k,
                                                 .chunk = chunk};
            }
        }
        if (pass == 1) {
            *n_jobs = n;
            return jobs;
        }
    }
    return NULL;
}

static int n_threads_for(const struct xd_synth *s) {
    long n = s->c.n_threads > 0 ? s->c.n_threads : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

int xd_synth_write(const struct xd_synth *s, struct xd_gguf_writer *w, xd_synth_progress_cb cb,
                   void *user) {
    int rc = declare(s, w);
    if (rc || (rc = xd_gguf_writer_begin_data(w))) return rc;

    struct gen g = {.s = s};
    size_t max_bytes;
    struct job *jobs = plan_jobs(s, &g.n_jobs, &max_bytes, &g.max_ne0);
    if (!jobs) return XD_E_NOMEM;
    g.jobs = jobs;
    uint64_t total = 0, done = 0;
    for (int64_t i = 0; i < s->n_t; i++) total += s->t[i].nbytes;

    int n_threads = n_threads_for(s);
    g.n_slots = 2 * n_threads + 2;
    g.slots = calloc((size_t)g.n_slots, sizeof *g.slots);
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    bool ok = g.slots && th;
    for (int i = 0; ok && i < g.n_slots; i++) {
        g.slots[i].turn = i;
        ok = (g.slots[i].buf = malloc(max_bytes)) != 0;
    }
    if (!ok) {
        rc = XD_E_NOMEM;
        goto out;
    }
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    int started = 0;
    for (; started < n_threads; started++)
        if ((rc = pthread_create(&th[started], NULL, gen_thread, &g))) break;
    rc = started ? 0 : -rc;

    for (int64_t j = 0; j < g.n_jobs && !rc; j++) {
        struct slot *sl = &g.slots[j % g.n_slots];
        pthread_mutex_lock(&g.mu);
        while (!g.stop && !(sl->state == SLOT_READY && sl->job == j))
            pthread_cond_wait(&g.cv, &g.mu);
        rc = g.stop ? g.err : 0;
        pthread_mutex_unlock(&g.mu);
        if (rc) break;
        rc = xd_gguf_writer_write(w, sl->buf, sl->n);
        done += sl->n;
        pthread_mutex_lock(&g.mu);
        sl->state = SLOT_FREE;
        sl->turn = j + g.n_slots;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
        if (!rc && cb && cb(done, total, user)) rc = -ECANCELED;
    }
    pthread_mutex_lock(&g.mu);
    g.stop = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
out:
    if (g.slots)
        for (int i = 0; i < g.n_slots; i++) free(g.slots[i].buf);
    free(g.slots);
    free(th);
    free(jobs);
    return rc;
}
