/* gguf_write.h - a streaming GGUF v3 writer.
 *
 * A writer lives through three phases: DECLARE (add metadata and tensor infos, all kept in
 * memory: a few hundred KiB even with a 150k-token vocabulary), DATA (after
 * xd_gguf_writer_begin_data() has written the header, every tensor's bytes are streamed in the
 * order the tensors were declared; padding to the alignment is inserted by the writer) and
 * closed. The tensor data itself is never held in memory: callers hand over chunks of any size.
 *
 * Errors are sticky, like a stdio stream's: once a call fails, every later call returns the
 * same code, so a caller may check only the last one. Codes are negative errno (-ENOSPC from a
 * write) or XD_E_* (XD_E_INVALID for API misuse, XD_E_SHAPE for a row that is not a whole
 * number of blocks).
 */
#ifndef XD_GGUF_WRITE_H
#define XD_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

struct xd_gguf_writer;

/* Create (or truncate) path, mode 0644, and return a writer on it in *out. Returns 0 or a
 * negative errno; *out is NULL on failure and no file is left behind. */
int xd_gguf_writer_create(const char *path, struct xd_gguf_writer **out);
/* A writer on an open, writable fd positioned at offset 0; the writer takes the fd over and
 * closes it, but never unlinks anything. fd -1 makes a writer that only measures (declare,
 * then xd_gguf_writer_file_size, then discard). Returns 0 or XD_E_NOMEM (fd closed). */
int xd_gguf_writer_create_fd(int fd, struct xd_gguf_writer **out);

/* Add key with value v (deep-copied: strings, arrays of strings, nested arrays). A UINT32
 * "general.alignment" (a power of two) sets the alignment of the data section. Fails with
 * XD_E_INVALID for a duplicate or empty key, a malformed value or a call after begin_data. */
int xd_gguf_writer_add_value(struct xd_gguf_writer *w, const char *key,
                             const struct xd_gguf_value *v);
/* Typed shorthands for add_value; same contract. */
int xd_gguf_writer_add_u32(struct xd_gguf_writer *w, const char *key, uint32_t v);
int xd_gguf_writer_add_i32(struct xd_gguf_writer *w, const char *key, int32_t v);
int xd_gguf_writer_add_u64(struct xd_gguf_writer *w, const char *key, uint64_t v);
int xd_gguf_writer_add_f32(struct xd_gguf_writer *w, const char *key, float v);
int xd_gguf_writer_add_bool(struct xd_gguf_writer *w, const char *key, int v);
/* s is NUL-terminated. */
int xd_gguf_writer_add_str(struct xd_gguf_writer *w, const char *key, const char *s);
/* An array of n numeric or bool elements of type elem, little-endian at data. */
int xd_gguf_writer_add_arr(struct xd_gguf_writer *w, const char *key, enum xd_gguf_vtype elem,
                           const void *data, uint64_t n);
/* An array of n NUL-terminated strings. */
int xd_gguf_writer_add_arr_str(struct xd_gguf_writer *w, const char *key,
                               const char *const *strs, uint64_t n);

/* Declare the next tensor: n_dims (1..4) sizes in ne (ne[0] contiguous) of element type
 * type. Its data is expected in declaration order. XD_E_SHAPE when ne[0] is not a multiple of
 * the type's block size; XD_E_INVALID for a duplicate name, bad dims or a call after
 * begin_data. */
int xd_gguf_writer_add_tensor(struct xd_gguf_writer *w, const char *name, uint32_t type,
                              uint32_t n_dims, const int64_t *ne);

/* Bytes of the finished file as declared so far (header, metadata, tensor infos, aligned
 * data). Never fails. */
uint64_t xd_gguf_writer_file_size(const struct xd_gguf_writer *w);

/* Write the header, metadata and tensor infos; after this only write/close are allowed. */
int xd_gguf_writer_begin_data(struct xd_gguf_writer *w);
/* Append n bytes of tensor data (they may span tensors; padding is inserted between them).
 * XD_E_INVALID when more bytes arrive than were declared. */
int xd_gguf_writer_write(struct xd_gguf_writer *w, const void *data, size_t n);

/* Flush, close the fd and free w. Returns 0 when the file is complete, else the first error
 * of the writer's life (XD_E_INVALID when fewer data bytes were written than declared) and
 * then removes the file as discard() does: a path never holds a truncated model. */
int xd_gguf_writer_close(struct xd_gguf_writer *w);
/* Close without flushing, free w and unlink the file if the writer created it by path and it
 * is still that regular file (never a device or a file put there since). w may be NULL. */
void xd_gguf_writer_discard(struct xd_gguf_writer *w);

#endif
