/* ops_cpu.c - the scalar CPU reference backend (cpu-ref): one small function per op.
 *
 * These are the numbers of the float path (llama.cpp's "golden-float"), so they favour a clear,
 * fixed reduction order over speed: matmul is one vec_dot_f32 (quant.c) per output value with
 * float activations, sums of squares and softmax denominators are accumulated in double as ggml
 * does. Weights are read in place from the mmap, never converted up front. One thread: the
 * backend object only lends its attention scratch. The fast backend (ops_cpu_fast.c) reuses
 * rmsnorm and get_row from here unchanged.
 */
#include <math.h>
#include <string.h>

#include "backend_impl.h"
#include "ops.h"
#include "quant.h"

/* W (n_in, n_out) @ x[t] (n_in,) -> y[t] (n_out,) */
static void matmul(struct xd_backend *be, const struct xd_tensor *w, const float *x, int64_t ldx,
                   float *y, int64_t ldy, int64_t n_tok) {
    (void)be;
    const struct xd_type_traits *tt = xd_type_traits(w->type);
    const char *row = w->data;
    for (int64_t r = 0; r < w->ne[1]; r++, row += w->nb[1])
        for (int64_t t = 0; t < n_tok; t++) y[t * ldy + r] = tt->vec_dot_f32(row, x + t * ldx, w->ne[0]);
}

/* x (n,) -> y (n,) = x * 1/sqrt(mean(x^2) + eps) * w */
void xd__rmsnorm_ref(struct xd_backend *be, float *y, const float *x, const float *w, int64_t n,
                     float eps) {
    (void)be;
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
}

/* The angle of pair i is pos * base^(-2i/n_rot), advanced by repeated multiplication in float
 * exactly as ggml does, so positions far into the context round the same way. */
static void rope(struct xd_backend *be, float *x, int64_t n_head, int64_t head_dim, int64_t n_rot,
                 int32_t pos, float base, enum xd_rope_style style) {
    (void)be;
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    for (int64_t h = 0; h < n_head; h++) {
        float *v = x + h * head_dim;
        float theta = (float)pos;
        for (int64_t i = 0; i < n_rot / 2; i++, theta *= theta_scale) {
            const float c = cosf(theta), s = sinf(theta);
            int64_t a = style == XD_ROPE_NORM ? 2 * i : i;
            int64_t b = style == XD_ROPE_NORM ? 2 * i + 1 : i + n_rot / 2;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

/* One token: out (n_head*head_dim,) over positions 0..n_pos-1; scores: n_pos floats. */
static void attend(float *out, const float *q, const struct xd_kv *kv, int64_t layer, int32_t seq,
                   int32_t n_pos, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                   float scale, float *scores) {
    const int64_t group = n_head / n_head_kv;
    for (int64_t h = 0; h < n_head; h++) {
        const float *qh = q + h * head_dim;
        const int64_t kvh = h / group;
        float mx = -INFINITY;
        for (int32_t p = 0; p < n_pos; p++) {
            const uint16_t *k = xd_kv_key(kv, layer, seq, p) + kvh * head_dim;
            float s = 0.0f;
            for (int64_t i = 0; i < head_dim; i++) s += qh[i] * xd_fp16_to_fp32(k[i]);
            scores[p] = s * scale;
            if (scores[p] > mx) mx = scores[p];
        }
        double sum = 0.0;
        for (int32_t p = 0; p < n_pos; p++) {
            scores[p] = expf(scores[p] - mx);
            sum += scores[p];
        }
        const float inv = (float)(1.0 / sum);
        float *oh = out + h * head_dim;
        memset(oh, 0, (size_t)head_dim * sizeof *oh);
        for (int32_t p = 0; p < n_pos; p++) {
            const uint16_t *v = xd_kv_value(kv, layer, seq, p) + kvh * head_dim;
            const float w = scores[p] * inv;
            for (int64_t i = 0; i < head_dim; i++) oh[i] += w * xd_fp16_to_fp32(v[i]);
        }
    }
}

static void attention(struct xd_backend *be, float *out, const float *q, int64_t ld,
                      const struct xd_kv *kv, int64_t layer, const int32_t *seq,
                      const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                      int64_t head_dim, float scale) {
    for (int64_t t = 0; t < n_tok; t++)
        attend(out + t * ld, q + t * ld, kv, layer, seq[t], pos[t] + 1, n_head, n_head_kv,
               head_dim, scale, be->scores);
}

/* y = gate * sigmoid(gate) * up */
static void swiglu(struct xd_backend *be, float *y, const float *gate, const float *up, int64_t n) {
    (void)be;
    for (int64_t i = 0; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void xd__get_row_ref(struct xd_backend *be, float *y, const struct xd_tensor *emb, int64_t row) {
    (void)be;
    xd_type_traits(emb->type)->to_float((const char *)emb->data + (size_t)row * emb->nb[1], y,
                                        emb->ne[0]);
}

static const struct xd_ops ops_cpu_ref = {
    .name = "cpu-ref",
    .matmul = matmul,
    .rmsnorm = xd__rmsnorm_ref,
    .rope = rope,
    .attention = attention,
    .swiglu = swiglu,
    .get_row = xd__get_row_ref,
};

const struct xd_ops *xd_ops_cpu_ref(void) { return &ops_cpu_ref; }
