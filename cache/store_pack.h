/* store_pack.h - the packed store's on-disk records (private to cache/: expert_store.c reads
 * them, store_pack.c writes them). The layout is described in expert_store.h. */
#ifndef XD_STORE_PACK_H
#define XD_STORE_PACK_H

#include <stddef.h>
#include <stdint.h>

#define XD__XS_MAGIC "XDSTORE"
#define XD__XS_VERSION 1u
#define XD__XS_HEADER_BYTES 4096u
#define XD__XS_ENTRY_BYTES 80u
#define XD__XS_HEADER_USED 76u /* bytes of the header covered by its CRC, CRC included after */

struct xd__xs_header {
    uint32_t version, align, n_layer, n_expert;
    uint64_t fingerprint;
    uint64_t index_off, index_bytes, data_off, file_bytes;
    uint32_t index_crc;
};

struct xd__xs_entry {
    uint64_t off, len;     /* the extent in the file */
    uint64_t part_off[3];  /* gate, up, down within the extent */
    uint64_t part_len[3];
    uint32_t crc;          /* CRC-32C of the whole extent, padding included */
};

/* Decode and check a header from n bytes (at least XD__XS_HEADER_BYTES): magic, version,
 * header CRC, alignment 4096, index right after the header, data after the index, counts that
 * fit. Pure: 0, XD_E_FORMAT, XD_E_VERSION or XD_E_TRUNCATED. */
int xd__xs_header_decode(const void *buf, size_t n, struct xd__xs_header *h);
void xd__xs_header_encode(const struct xd__xs_header *h, void *buf /* XD__XS_HEADER_BYTES */);
void xd__xs_entry_decode(const void *buf /* XD__XS_ENTRY_BYTES */, struct xd__xs_entry *e);
void xd__xs_entry_encode(const struct xd__xs_entry *e, void *buf /* XD__XS_ENTRY_BYTES */);

#endif
