/* crc32c.h - CRC-32C (Castagnoli), the checksum of each expert in a packed store. */
#ifndef XD_CRC32C_H
#define XD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of n bytes at p, continuing from crc (0 to start). Never fails. */
uint32_t xd_crc32c(uint32_t crc, const void *p, size_t n);

#endif
