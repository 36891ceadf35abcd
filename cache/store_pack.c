/* store_pack.c - `expertd pack`'s engine: write a model's experts as a packed store, and the
 * store's header and index records.
 *
 * Each expert becomes one 4 KiB-aligned extent holding its gate, up and down slices (each
 * 64-byte aligned inside, so SIMD kernels see the same alignment as in the GGUF), zero-padded
 * to the next 4 KiB, with a CRC-32C of the whole extent. The point is the read path: one
 * aligned O_DIRECT read per expert instead of three unaligned slices rounded out to their
 * aligned supersets, and a checksum that catches a corrupted or torn store before its bytes
 * reach a matmul. The price is a second copy of the expert bytes on disk.
 *
 * The writer goes through the page cache (a sequential pass, then fdatasync and
 * POSIX_FADV_DONTNEED so the store does not linger in RAM), into path.tmp renamed at the end.
 * The record codecs are pure functions over bytes, so a damaged header is a clean error.
 * Not here: reading experts (expert_store.c), compression, multi-file stores.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "expert_store.h"
#include "store_pack.h"
#include "xd_error.h"

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

void xd__xs_header_encode(const struct xd__xs_header *h, void *buf) {
    unsigned char *p = buf;
    memset(p, 0, XD__XS_HEADER_BYTES);
    memcpy(p, XD__XS_MAGIC, 8); /* 7 characters and the NUL */
    put32(p + 8, h->version);
    put32(p + 12, h->align);
    put32(p + 16, h->n_layer);
    put32(p + 20, h->n_expert);
    put64(p + 24, h->fingerprint);
    put64(p + 32, h->index_off);
    put64(p + 40, h->index_bytes);
    put64(p + 48, h->data_off);
    put64(p + 56, h->file_bytes);
    put32(p + 64, h->index_crc);
    put32(p + 72, xd_crc32c(0, p, 72));
}

int xd__xs_header_decode(const void *buf, size_t n, struct xd__xs_header *h) {
    const unsigned char *p = buf;
    if (n < XD__XS_HEADER_BYTES) return XD_E_TRUNCATED;
    if (memcmp(p, XD__XS_MAGIC, 8)) return XD_E_FORMAT;
    if (get32(p + 72) != xd_crc32c(0, p, 72)) return XD_E_FORMAT;
    h->version = get32(p + 8);
    if (h->version != XD__XS_VERSION) return XD_E_VERSION;
    h->align = get32(p + 12);
    h->n_layer = get32(p + 16);
    h->n_expert = get32(p + 20);
    h->fingerprint = get64(p + 24);
    h->index_off = get64(p + 32);
    h->index_bytes = get64(p + 40);
    h->data_off = get64(p + 48);
    h->file_bytes = get64(p + 56);
    h->index_crc = get32(p + 64);
    if (h->align != XD_XS_ALIGN || h->n_layer == 0 || h->n_expert == 0 ||
        h->n_layer > (1u << 16) || h->n_expert > (1u << 16))
        return XD_E_FORMAT;
    if (h->index_off != XD__XS_HEADER_BYTES ||
        h->index_bytes != (uint64_t)h->n_layer * h->n_expert * XD__XS_ENTRY_BYTES ||
        h->data_off < h->index_off + h->index_bytes || h->data_off % XD_XS_ALIGN ||
        h->file_bytes < h->data_off || h->file_bytes % XD_XS_ALIGN)
        return XD_E_FORMAT;
    return 0;
}

void xd__xs_entry_encode(const struct xd__xs_entry *e, void *buf) {
    unsigned char *p = buf;
    memset(p, 0, XD__XS_ENTRY_BYTES);
    put64(p, e->off);
    put64(p + 8, e->len);
    for (int i = 0; i < 3; i++) {
        put64(p + 16 + 8 * i, e->part_off[i]);
        put64(p + 40 + 8 * i, e->part_len[i]);
    }
    put32(p + 64, e->crc);
}

void xd__xs_entry_decode(const void *buf, struct xd__xs_entry *e) {
    const unsigned char *p = buf;
    e->off = get64(p);
    e->len = get64(p + 8);
    for (int i = 0; i < 3; i++) {
        e->part_off[i] = get64(p + 16 + 8 * i);
        e->part_len[i] = get64(p + 40 + 8 * i);
    }
    e->crc = get32(p + 64);
}

static uint64_t fnv(uint64_t h, uint64_t v) {
    for (int i = 0; i < 8; i++) h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return h;
}

static const struct xd_tensor *part(const struct xd_layer *L, int p) {
    return p == 0 ? &L->gate_exps : p == 1 ? &L->up_exps : &L->down_exps;
}

uint64_t xd_xs_fingerprint(const struct xd_model *m) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, (uint64_t)m->hp.n_layer);
    h = fnv(h, (uint64_t)m->hp.n_expert);
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int p = 0; p < XD_XS_PARTS; p++) {
            const struct xd_tensor *t = part(&m->layers[l], p);
            h = fnv(h, t->type);
            for (int d = 0; d < 3; d++) h = fnv(h, (uint64_t)t->ne[d]);
            h = fnv(h, t->nb[2]);
            h = fnv(h, (uint64_t)((const uint8_t *)t->data - m->gguf.base));
            /* a content sample: one page of the model per expert tensor */
            size_t n = t->nb[2] < 256 ? t->nb[2] : 256;
            h = fnv(h, xd_crc32c(0, t->data, n));
        }
    return h;
}

int xd_xs_default_path(const char *model_path, char *out, size_t outlen) {
    size_t n = strlen(model_path);
    if (n > 5 && !strcmp(model_path + n - 5, ".gguf"))
        return snprintf(out, outlen, "%.*s.xdpack", (int)(n - 5), model_path);
    return snprintf(out, outlen, "%s.xdpack", model_path);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static int write_all(int fd, const void *buf, size_t n, uint64_t off) {
    const char *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int xd_xs_pack(const struct xd_model *m, const char *path, xd_xs_progress_cb cb, void *user,
               char *err, size_t errlen) {
    if (!m->moe) {
        snprintf(err, errlen, "the model has no experts to pack");
        return XD_E_INVALID;
    }
    const int64_t nl = m->hp.n_layer, ne = m->hp.n_expert, n = nl * ne;
    struct xd__xs_entry *ent = calloc((size_t)n, sizeof *ent);
    unsigned char *index = calloc((size_t)n, XD__XS_ENTRY_BYTES);
    unsigned char *hdr = calloc(1, XD__XS_HEADER_BYTES);
    size_t tmplen = strlen(path) + 5;
    char *tmp = calloc(1, tmplen);
    void *buf = NULL;
    int fd = -1, rc = 0;
    if (!ent || !index || !hdr || !tmp) {
        rc = XD_E_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    snprintf(tmp, tmplen, "%s.tmp", path);

    /* plan the extents */
    uint64_t data_off = align_up(XD__XS_HEADER_BYTES + (uint64_t)n * XD__XS_ENTRY_BYTES, XD_XS_ALIGN);
    uint64_t cur = data_off, max_ext = 0;
    for (int64_t l = 0; l < nl; l++)
        for (int64_t e = 0; e < ne; e++) {
            struct xd__xs_entry *x = &ent[l * ne + e];
            uint64_t o = 0;
            for (int p = 0; p < XD_XS_PARTS; p++) {
                x->part_off[p] = o;
                x->part_len[p] = part(&m->layers[l], p)->nb[2];
                o = align_up(o + x->part_len[p], 64);
            }
            x->off = cur;
            x->len = align_up(o, XD_XS_ALIGN);
            cur += x->len;
            if (x->len > max_ext) max_ext = x->len;
        }
    if (posix_memalign(&buf, XD_XS_ALIGN, max_ext)) {
        buf = NULL;
        rc = XD_E_NOMEM;
        snprintf(err, errlen, "out of memory for a %llu-byte expert", (unsigned long long)max_ext);
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    for (int64_t i = 0; i < n; i++) {
        struct xd__xs_entry *x = &ent[i];
        const struct xd_layer *L = &m->layers[i / ne];
        memset(buf, 0, x->len);
        for (int p = 0; p < XD_XS_PARTS; p++) {
            struct xd_tensor v = xd_tensor_expert(part(L, p), i % ne);
            memcpy((char *)buf + x->part_off[p], v.data, x->part_len[p]);
        }
        x->crc = xd_crc32c(0, buf, x->len);
        xd__xs_entry_encode(x, index + (size_t)i * XD__XS_ENTRY_BYTES);
        if ((rc = write_all(fd, buf, x->len, x->off))) {
            snprintf(err, errlen, "%s: write: %s", tmp, strerror(-rc));
            goto out;
        }
        if (cb && cb((uint64_t)(i + 1), (uint64_t)n, user)) {
            rc = -ECANCELED;
            snprintf(err, errlen, "cancelled");
            goto out;
        }
    }
    struct xd__xs_header h = {
        .version = XD__XS_VERSION, .align = XD_XS_ALIGN, .n_layer = (uint32_t)nl,
        .n_expert = (uint32_t)ne, .fingerprint = xd_xs_fingerprint(m),
        .index_off = XD__XS_HEADER_BYTES, .index_bytes = (uint64_t)n * XD__XS_ENTRY_BYTES,
        .data_off = data_off, .file_bytes = cur,
        .index_crc = xd_crc32c(0, index, (size_t)n * XD__XS_ENTRY_BYTES),
    };
    xd__xs_header_encode(&h, hdr);
    if ((rc = write_all(fd, index, (size_t)n * XD__XS_ENTRY_BYTES, XD__XS_HEADER_BYTES)) ||
        (rc = write_all(fd, hdr, XD__XS_HEADER_BYTES, 0))) {
        snprintf(err, errlen, "%s: write: %s", tmp, strerror(-rc));
        goto out;
    }
    if (fdatasync(fd)) {
        rc = -errno;
        snprintf(err, errlen, "%s: fdatasync: %s", tmp, strerror(errno));
        goto out;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); /* the store is read with O_DIRECT anyway */
    if (close(fd)) {
        fd = -1;
        rc = -errno;
        snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path)) {
        rc = -errno;
        snprintf(err, errlen, "rename %s -> %s: %s", tmp, path, strerror(errno));
        goto out;
    }
out:
    if (fd >= 0) close(fd);
    if (rc && tmp && tmp[0]) unlink(tmp);
    free(buf);
    free(tmp);
    free(hdr);
    free(index);
    free(ent);
    return rc;
}
