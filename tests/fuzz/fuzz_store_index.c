/* fuzz_store_index.c - libFuzzer target for the packed expert store's header and index as
 * xd_xs_open_packed() reads them from disk (cache/expert_store.c, cache/store_pack.c).
 *
 * Once: the tiny Mixtral fixture is loaded and packed into a temporary store, whose header and
 * index (everything before the expert data) become the template. Per input: byte 0 picks what
 * to fix up after mutating (bit 0: the header CRC, bit 1: the index CRC - so the fuzzer gets
 * past the checksums into the field checks - bit 2: truncate the file to a fuzzed length),
 * bytes 1-2 an offset into the template, and the rest is XORed into the template from there.
 * The result is written over the store's head and opened. Contract: the open fails with a
 * negative code and a message, or succeeds with every expert's regions inside the file, at
 * 4 KiB-aligned offsets, and covering its three slices. __builtin_trap() marks a broken one.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "expert_store.h"
#include "model.h"
#include "store_pack.h"
#include "xd_error.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libFuzzer's process-wide state, set up once in Initialize. */
static struct xd_model *model;
static char store[64];
static int store_fd = -1;
static uint8_t *head; /* header + index of the valid store */
static size_t head_len;
static off_t store_len;

static void die(const char *what, const char *err) {
    fprintf(stderr, "fuzz_store_index: %s: %s\n", what, err);
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char err[256];
    if (xd_model_load(XD_FIXTURES "/mixtral-tiny-q8_0.gguf", &model, err, sizeof err))
        die("model", err);
    snprintf(store, sizeof store, "/tmp/xd-fuzz-store-%d.xdpack", (int)getpid());
    if (xd_xs_pack(model, store, NULL, NULL, err, sizeof err)) die("pack", err);
    store_fd = open(store, O_RDWR);
    struct stat st;
    if (store_fd < 0 || fstat(store_fd, &st)) die(store, "cannot open");
    store_len = st.st_size;
    uint8_t hdr[XD__XS_HEADER_BYTES];
    struct xd__xs_header h;
    if (pread(store_fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        xd__xs_header_decode(hdr, sizeof hdr, &h))
        die(store, "bad header");
    head_len = (size_t)h.data_off;
    head = malloc(head_len);
    if (!head || pread(store_fd, head, head_len, 0) != (ssize_t)head_len) die(store, "read");
    unlink(store); /* the open descriptor keeps it; nothing is left behind */
    snprintf(store, sizeof store, "/proc/self/fd/%d", store_fd);
    return 0;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    uint8_t *b = malloc(head_len);
    if (!b) return 0;
    memcpy(b, head, head_len);
    const size_t at = ((size_t)data[1] | (size_t)data[2] << 8) % head_len;
    for (size_t i = 3; i < size && at + i - 3 < head_len; i++) b[at + i - 3] ^= data[i];
    if (data[0] & 2) { /* index CRC over the (mutated) index as the header now places it */
        struct xd__xs_header h;
        if (!xd__xs_header_decode(b, head_len, &h) || h.index_off < head_len) {
            uint64_t off = h.index_off, n = h.index_bytes;
            if (off <= head_len && n <= head_len - off)
                put32(b + 64, xd_crc32c(0, b + off, (size_t)n));
        }
    }
    if (data[0] & 1) put32(b + 72, xd_crc32c(0, b, 72));
    off_t len = store_len;
    if (data[0] & 4) len = (off_t)(((uint64_t)data[1] << 12 | data[2] << 4) % (uint64_t)store_len);
    if (ftruncate(store_fd, len) || pwrite(store_fd, b, head_len, 0) != (ssize_t)head_len ||
        ftruncate(store_fd, len < (off_t)head_len ? (off_t)head_len : len)) {
        free(b);
        return 0;
    }
    struct xd_xs *s = NULL;
    char err[256] = "";
    int rc = xd_xs_open_packed(model, store, &s, err, sizeof err);
    if (rc) {
        if (rc >= 0 || !err[0] || s) __builtin_trap();
    } else {
        const off_t flen = len < (off_t)head_len ? (off_t)head_len : len;
        for (int64_t l = 0; l < model->hp.n_layer; l++)
            for (int64_t e = 0; e < model->hp.n_expert; e++) {
                struct xd_xs_expert x;
                xd_xs_expert(s, l, e, &x);
                if (x.n_regions < 1 || x.n_regions > XD_XS_PARTS) __builtin_trap();
                for (int r = 0; r < x.n_regions; r++) {
                    if (x.r[r].off % XD_XS_ALIGN || x.r[r].len % XD_XS_ALIGN) __builtin_trap();
                    if (x.r[r].off + x.r[r].len < x.r[r].off) __builtin_trap();
                    if (x.r[r].off + x.r[r].need > (uint64_t)flen) __builtin_trap();
                }
            }
        xd_xs_close(s);
    }
    /* back to the valid store for the next input */
    if (ftruncate(store_fd, store_len) || pwrite(store_fd, head, head_len, 0) < 0) {
    }
    free(b);
    return 0;
}
