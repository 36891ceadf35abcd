/* expert_store.h - where each expert's bytes are on disk, and how to read them with O_DIRECT.
 *
 * Two layouts, one interface. GGUF-direct: an expert is three slices (gate, up, down) of the
 * merged expert tensors, at arbitrary 32-byte-aligned offsets; O_DIRECT needs 4 KiB-aligned
 * offsets and lengths, so each slice is read as its aligned superset (up to 8 KiB more per
 * slice) and the views point inside. Packed (`expertd pack`): each expert is one contiguous
 * 4 KiB-aligned extent holding gate | up | down, with a CRC-32C per expert and an index, so a
 * miss is one read and a checksum. The cache asks a store for an expert's regions and lays
 * them out in a slot; it never parses files itself.
 *
 * Packed store file (little-endian), version 1:
 *   [0, 4096)        header: "XDSTORE\0", version, alignment, n_layer, n_expert, the model
 *                    fingerprint, index offset/size, data offset, file size, index CRC, header CRC
 *   [4096, ...)      index: n_layer * n_expert entries of 80 bytes (offset, length, the three
 *                    parts' offsets and lengths within the extent, CRC-32C of the extent)
 *   data_off...      extents in (layer, expert) order, each 4 KiB-aligned and zero-padded
 * The fingerprint hashes the model's expert tensor shapes, types, offsets and a sample of each
 * tensor's first bytes, so a store packed from another model is refused at open.
 */
#ifndef XD_EXPERT_STORE_H
#define XD_EXPERT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define XD_XS_ALIGN 4096u
#define XD_XS_PARTS 3 /* gate, up, down */

/* One read of an expert: [off, off+len) of the store file into [slot_off, slot_off+len) of
 * the slot. len and off are multiples of XD_XS_ALIGN; need <= len is how many of those bytes
 * exist (less than len only where the file ends inside the last aligned block). */
struct xd_xs_region {
    uint64_t off, len, need, slot_off;
};

/* An expert's reads and where its three matrices then start in the slot. */
struct xd_xs_expert {
    int n_regions;
    struct xd_xs_region r[XD_XS_PARTS];
    uint64_t part_off[XD_XS_PARTS]; /* gate, up, down */
    bool has_crc;                   /* packed stores: crc is over the slot bytes of r[0] */
    uint32_t crc;
};

struct xd_xs;

/* Read experts straight from the model's GGUF file. path NULL reopens the model's own file
 * descriptor (/proc/self/fd). O_DIRECT where the filesystem allows it (xd_xs_direct says).
 * 0 or a negative code with a message in err; *out untouched on failure. */
int xd_xs_open_gguf(const struct xd_model *m, const char *path, struct xd_xs **out, char *err,
                    size_t errlen);
/* Open a packed store written by xd_xs_pack from the same model: header, index and fingerprint
 * are checked, and a file shorter than its index says fails with XD_E_TRUNCATED. */
int xd_xs_open_packed(const struct xd_model *m, const char *path, struct xd_xs **out, char *err,
                      size_t errlen);
void xd_xs_close(struct xd_xs *s);

/* The reads of expert (layer, expert); both in range. Never fails. */
void xd_xs_expert(const struct xd_xs *s, int64_t layer, int64_t expert, struct xd_xs_expert *out);
/* Bytes a slot needs to hold any expert of this store (a multiple of XD_XS_ALIGN). */
uint64_t xd_xs_slot_bytes(const struct xd_xs *s);
int xd_xs_fd(const struct xd_xs *s);
const char *xd_xs_path(const struct xd_xs *s);
const char *xd_xs_kind(const struct xd_xs *s); /* "gguf" or "packed" */
bool xd_xs_direct(const struct xd_xs *s);      /* opened with O_DIRECT */

/* Progress of xd_xs_pack: called after each expert; non-zero cancels (-ECANCELED). */
typedef int (*xd_xs_progress_cb)(uint64_t done, uint64_t total, void *user);

/* Write m's experts as a packed store at path (replaced if it exists, written to path.tmp and
 * renamed, so a failed pack leaves no store behind). 0 or a negative code with a message. */
int xd_xs_pack(const struct xd_model *m, const char *path, xd_xs_progress_cb cb, void *user,
               char *err, size_t errlen);
/* The store path `expertd pack` writes by default and the cache looks for: MODEL.gguf ->
 * MODEL.xdpack (".xdpack" appended when the name has no .gguf suffix). Returns the length it
 * needs, as snprintf. */
int xd_xs_default_path(const char *model_path, char *out, size_t outlen);

/* Fingerprint of m's expert layout and a sample of its bytes (what a store must match). */
uint64_t xd_xs_fingerprint(const struct xd_model *m);

#endif
