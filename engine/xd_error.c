/* xd_error.c - messages, names and HTTP statuses for the codes of xd_error.h. */
#include "xd_error.h"

#include <errno.h>
#include <string.h>

const char *xd_strerror(int err) {
    if (err == 0) return "success";
    switch (err) {
#define XD__ERR_MSG(name, off, msg, status) \
    case XD_E_##name: return msg;
        XD_ERRNO_MAP(XD__ERR_MSG)
#undef XD__ERR_MSG
    default: break;
    }
    /* strerror() is not thread-safe in general, but glibc returns static strings for valid
     * errnos; fall back to a fixed text otherwise. */
    if (err < 0 && err > -4096) return strerror(-err);
    return "unknown error";
}

const char *xd_err_name(int err) {
    switch (err) {
    case 0: return "OK";
#define XD__ERR_NAME(name, off, msg, status) \
    case XD_E_##name: return "XD_E_" #name;
        XD_ERRNO_MAP(XD__ERR_NAME)
#undef XD__ERR_NAME
    case -EIO: return "EIO";
    case -ENOMEM: return "ENOMEM";
    case -ENOENT: return "ENOENT";
    case -EINVAL: return "EINVAL";
    case -EAGAIN: return "EAGAIN";
    case -ECANCELED: return "ECANCELED";
    default: return "E?";
    }
}

int xd_err_http_status(int err) {
    switch (err) {
#define XD__ERR_HTTP(name, off, msg, status) \
    case XD_E_##name: return status;
        XD_ERRNO_MAP(XD__ERR_HTTP)
#undef XD__ERR_HTTP
    case -ENOMEM: return 503;
    case -EINVAL: return 400;
    default: return 500;
    }
}
