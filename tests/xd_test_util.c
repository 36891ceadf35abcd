/* xd_test_util.c - fixture paths and whole-file reads for the tests. */
#include "xd_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *xd_test_fixture(const char *rel) {
    size_t n = strlen(XD_FIXTURES) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", XD_FIXTURES, rel);
    return p;
}

char *xd_test_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
                buf[n] = 0;
                if (size) *size = (size_t)n;
            } else {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    return buf;
}

char *xd_test_write_temp(const void *data, size_t size) {
    char tmpl[] = "/tmp/xdtest-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) return NULL;
    const char *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            close(fd);
            unlink(tmpl);
            return NULL;
        }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
    return strdup(tmpl);
}
