/* proto_prom.h - Prometheus text exposition format (version 0.0.4), as pure appends to a
 * proto_buf. The server owns the metric table and the values; this only writes them.
 *
 *   # HELP name help text
 *   # TYPE name counter|gauge|histogram
 *   name{label="value",...} 42
 *   name_bucket{le="0.1"} 3 ... name_bucket{le="+Inf"} 9, name_sum 1.5, name_count 9
 */
#ifndef XD_PROTO_PROM_H
#define XD_PROTO_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"

/* A label pair; the value is escaped on output (\\, \", \n). */
struct proto_label {
    const char *name;
    const char *value;
};

/* A histogram's state: counts[i] observations <= bounds[i] (not cumulative; counts[n_bounds]
 * holds those above the last bound), their sum and count. bounds ascending. */
struct proto_hist {
    const double *bounds;
    size_t n_bounds;
    uint64_t *counts; /* n_bounds + 1 */
    double sum;
    uint64_t count;
};

/* Adds one observation. Cannot fail. */
void proto_hist_observe(struct proto_hist *h, double v);

/* "# HELP" and "# TYPE" lines of a family; type is "counter", "gauge" or "histogram". */
void proto_prom_family(struct proto_buf *b, const char *name, const char *type,
                       const char *help);
/* One sample line: name{labels} value. */
void proto_prom_sample(struct proto_buf *b, const char *name, const struct proto_label *labels,
                       size_t n_labels, double value);
/* The _bucket lines (cumulative, with le="+Inf"), _sum and _count of one labelled histogram. */
void proto_prom_hist(struct proto_buf *b, const char *name, const struct proto_label *labels,
                     size_t n_labels, const struct proto_hist *h);
/* A value as the format wants it: integers without exponent, +Inf/-Inf/NaN spelled out. */
void proto_prom_value(struct proto_buf *b, double v);

#endif
