/* xd_test_util.h - small helpers shared by the Criterion tests. */
#ifndef XD_TEST_UTIL_H
#define XD_TEST_UTIL_H

#include <stddef.h>

/* Path of a file under tests/fixtures; caller frees. */
char *xd_test_fixture(const char *rel);
/* Whole file in a malloc'd buffer (NUL-terminated, *size excludes the NUL); NULL on error. */
char *xd_test_read_file(const char *path, size_t *size);
/* Write bytes to a fresh temporary file; returns its malloc'd path (caller unlinks, frees). */
char *xd_test_write_temp(const void *data, size_t size);

#endif
