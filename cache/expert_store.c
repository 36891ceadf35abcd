/* expert_store.c - opening an expert store and describing each expert's reads.
 *
 * A store is one file opened O_DIRECT (so expert bytes never enter the page cache and the
 * memory budget is real) plus a way to map (layer, expert) to aligned regions. For the GGUF
 * file the regions are computed from the model's tensor views on each call (three aligned
 * supersets); for a packed store they come from its index, which is read once at open, checked
 * entry by entry against the model (offsets aligned and inside the file, part sizes equal to
 * the model's), and kept in memory (80 bytes per expert).
 *
 * Where the filesystem refuses O_DIRECT (tmpfs, some overlays) the file is opened buffered and
 * xd_xs_direct() says so; the cache logs it once, since the budget then leaks into the page
 * cache. Not here: the reads themselves (xio.h engines), the packed format's writer
 * (store_pack.c).
 */
#include "expert_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "store_pack.h"
#include "xd_error.h"

struct xd_xs {
    const struct xd_model *m;
    int fd;
    bool direct, packed;
    char *path;
    uint64_t file_size;
    uint64_t slot_bytes;
    struct xd__xs_entry *index; /* packed: [n_layer * n_expert] */
};

static uint64_t align_down(uint64_t v) { return v / XD_XS_ALIGN * XD_XS_ALIGN; }
static uint64_t align_up(uint64_t v) { return (v + XD_XS_ALIGN - 1) / XD_XS_ALIGN * XD_XS_ALIGN; }

static const struct xd_tensor *part(const struct xd_layer *L, int p) {
    return p == 0 ? &L->gate_exps : p == 1 ? &L->up_exps : &L->down_exps;
}

/* Open path for reading, O_DIRECT if possible. */
static int open_store(struct xd_xs *s, const char *path, char *err, size_t errlen) {
    s->path = strdup(path);
    if (!s->path) return XD_E_NOMEM;
    s->fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    s->direct = s->fd >= 0;
    if (s->fd < 0 && errno == EINVAL) s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(s->fd, &st)) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    s->file_size = (uint64_t)st.st_size;
    return 0;
}

void xd_xs_close(struct xd_xs *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->index);
    free(s->path);
    free(s);
}

static void gguf_expert(const struct xd_xs *s, int64_t layer, int64_t expert,
                        struct xd_xs_expert *out) {
    const struct xd_layer *L = &s->m->layers[layer];
    uint64_t slot_off = 0;
    out->n_regions = XD_XS_PARTS;
    out->has_crc = false;
    out->crc = 0;
    for (int p = 0; p < XD_XS_PARTS; p++) {
        const struct xd_tensor *t = part(L, p);
        uint64_t off = (uint64_t)((const uint8_t *)t->data - s->m->gguf.base) +
                       (uint64_t)expert * t->nb[2];
        uint64_t a0 = align_down(off), a1 = align_up(off + t->nb[2]);
        struct xd_xs_region *r = &out->r[p];
        r->off = a0;
        r->len = a1 - a0;
        r->need = (a1 < s->file_size ? a1 : s->file_size) - a0;
        r->slot_off = slot_off;
        out->part_off[p] = slot_off + (off - a0);
        slot_off += r->len;
    }
}

static void packed_expert(const struct xd_xs *s, int64_t layer, int64_t expert,
                          struct xd_xs_expert *out) {
    const struct xd__xs_entry *x = &s->index[layer * s->m->hp.n_expert + expert];
    out->n_regions = 1;
    out->r[0] = (struct xd_xs_region){.off = x->off, .len = x->len, .need = x->len, .slot_off = 0};
    for (int p = 0; p < XD_XS_PARTS; p++) out->part_off[p] = x->part_off[p];
    out->has_crc = true;
    out->crc = x->crc;
}

void xd_xs_expert(const struct xd_xs *s, int64_t layer, int64_t expert, struct xd_xs_expert *out) {
    if (s->packed) packed_expert(s, layer, expert, out);
    else gguf_expert(s, layer, expert, out);
}

static void compute_slot_bytes(struct xd_xs *s) {
    s->slot_bytes = 0;
    for (int64_t l = 0; l < s->m->hp.n_layer; l++)
        for (int64_t e = 0; e < s->m->hp.n_expert; e++) {
            struct xd_xs_expert x;
            xd_xs_expert(s, l, e, &x);
            uint64_t end = x.r[x.n_regions - 1].slot_off + x.r[x.n_regions - 1].len;
            if (end > s->slot_bytes) s->slot_bytes = end;
        }
}

int xd_xs_open_gguf(const struct xd_model *m, const char *path, struct xd_xs **out, char *err,
                    size_t errlen) {
    if (!m->moe) {
        snprintf(err, errlen, "the model has no experts");
        return XD_E_INVALID;
    }
    struct xd_xs *s = calloc(1, sizeof *s);
    if (!s) return XD_E_NOMEM;
    s->m = m;
    s->fd = -1;
    char self[64];
    if (!path) {
        snprintf(self, sizeof self, "/proc/self/fd/%d", m->gguf.fd);
        path = self;
    }
    int rc = open_store(s, path, err, errlen);
    if (!rc && s->file_size != m->gguf.size) {
        snprintf(err, errlen, "%s is %llu bytes but the model's file is %llu: not the same file",
                 path, (unsigned long long)s->file_size, (unsigned long long)m->gguf.size);
        rc = XD_E_INVALID;
    }
    if (rc) {
        xd_xs_close(s);
        return rc;
    }
    compute_slot_bytes(s);
    *out = s;
    return 0;
}

/* Read n bytes at off with a plain (buffered) descriptor: header and index only. */
static int read_meta(const char *path, void *buf, size_t n, uint64_t off) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? -errno : XD_E_TRUNCATED;
            close(fd);
            return e;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

int xd_xs_open_packed(const struct xd_model *m, const char *path, struct xd_xs **out, char *err,
                      size_t errlen) {
    if (!m->moe) {
        snprintf(err, errlen, "the model has no experts");
        return XD_E_INVALID;
    }
    struct xd_xs *s = calloc(1, sizeof *s);
    unsigned char *hb = malloc(XD__XS_HEADER_BYTES), *ib = NULL;
    int rc = 0;
    if (!s || !hb) {
        rc = XD_E_NOMEM;
        goto fail;
    }
    s->m = m;
    s->fd = -1;
    s->packed = true;
    if ((rc = open_store(s, path, err, errlen))) goto fail;
    struct xd__xs_header h;
    if ((rc = read_meta(path, hb, XD__XS_HEADER_BYTES, 0)) ||
        (rc = xd__xs_header_decode(hb, XD__XS_HEADER_BYTES, &h))) {
        snprintf(err, errlen, "%s: not a packed expert store (%s)", path, xd_strerror(rc));
        goto fail;
    }
    if (h.n_layer != m->hp.n_layer || h.n_expert != m->hp.n_expert ||
        h.fingerprint != xd_xs_fingerprint(m)) {
        rc = XD_E_INVALID;
        snprintf(err, errlen, "%s was packed from another model (%u layers x %u experts, "
                 "fingerprint %016llx; this model: %lld x %lld, %016llx)", path, h.n_layer,
                 h.n_expert, (unsigned long long)h.fingerprint, (long long)m->hp.n_layer,
                 (long long)m->hp.n_expert, (unsigned long long)xd_xs_fingerprint(m));
        goto fail;
    }
    if (s->file_size < h.file_bytes) {
        rc = XD_E_TRUNCATED;
        snprintf(err, errlen, "%s is truncated: %llu bytes, the index needs %llu", path,
                 (unsigned long long)s->file_size, (unsigned long long)h.file_bytes);
        goto fail;
    }
    const size_t n = (size_t)h.n_layer * h.n_expert;
    ib = malloc(h.index_bytes);
    s->index = calloc(n, sizeof *s->index);
    if (!ib || !s->index) {
        rc = XD_E_NOMEM;
        goto fail;
    }
    if ((rc = read_meta(path, ib, h.index_bytes, h.index_off))) {
        snprintf(err, errlen, "%s: cannot read the index: %s", path, xd_strerror(rc));
        goto fail;
    }
    if (xd_crc32c(0, ib, h.index_bytes) != h.index_crc) {
        rc = XD_E_FORMAT;
        snprintf(err, errlen, "%s: the index checksum does not match", path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        struct xd__xs_entry *x = &s->index[i];
        xd__xs_entry_decode(ib + i * XD__XS_ENTRY_BYTES, x);
        const struct xd_layer *L = &m->layers[i / (size_t)h.n_expert];
        bool ok = x->off % XD_XS_ALIGN == 0 && x->len % XD_XS_ALIGN == 0 && x->len > 0 &&
                  x->off >= h.data_off && x->off <= h.file_bytes &&
                  x->len <= h.file_bytes - x->off && x->len <= (1ull << 40);
        for (int p = 0; ok && p < XD_XS_PARTS; p++)
            ok = x->part_len[p] == part(L, p)->nb[2] && x->part_off[p] % 32 == 0 &&
                 x->part_off[p] <= x->len && x->part_len[p] <= x->len - x->part_off[p];
        if (!ok) {
            rc = XD_E_FORMAT;
            snprintf(err, errlen, "%s: index entry of layer %zu expert %zu does not fit the "
                     "file or the model", path, i / (size_t)h.n_expert, i % (size_t)h.n_expert);
            goto fail;
        }
    }
    free(ib);
    free(hb);
    compute_slot_bytes(s);
    *out = s;
    return 0;
fail:
    free(ib);
    free(hb);
    xd_xs_close(s);
    return rc;
}

uint64_t xd_xs_slot_bytes(const struct xd_xs *s) { return s->slot_bytes; }
int xd_xs_fd(const struct xd_xs *s) { return s->fd; }
const char *xd_xs_path(const struct xd_xs *s) { return s->path; }
const char *xd_xs_kind(const struct xd_xs *s) { return s->packed ? "packed" : "gguf"; }
bool xd_xs_direct(const struct xd_xs *s) { return s->direct; }
