/* proto_prom.c - writes the Prometheus text format. Escaping per the format's rules (HELP:
 * backslash and newline; label values: backslash, quote and newline), integral values printed
 * as integers so counters read naturally, others in the shortest form that reads back exactly.
 * It knows no metric names and keeps no state; names are the caller's and must already match
 * [a-zA-Z_:][a-zA-Z0-9_:]* (they are literals of the server's table, never request data).
 */
#include "proto_prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void proto_hist_observe(struct proto_hist *h, double v) {
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

static void escaped(struct proto_buf *b, const char *s, bool quote) {
    for (; *s; s++) {
        if (*s == '\\') proto_buf_puts(b, "\\\\");
        else if (*s == '\n') proto_buf_puts(b, "\\n");
        else if (quote && *s == '"') proto_buf_puts(b, "\\\"");
        else proto_buf_append(b, s, 1);
    }
}

void proto_prom_value(struct proto_buf *b, double v) {
    if (isnan(v)) proto_buf_puts(b, "NaN");
    else if (isinf(v)) proto_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15) proto_buf_printf(b, "%.0f", v);
    else {
        /* the shortest of 15 or 17 significant digits that reads back as v: 0.1, not
         * 0.10000000000000001 */
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.15g", v);
        if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
        proto_buf_puts(b, tmp);
    }
}

void proto_prom_family(struct proto_buf *b, const char *name, const char *type,
                       const char *help) {
    proto_buf_printf(b, "# HELP %s ", name);
    escaped(b, help, false);
    proto_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void labels_out(struct proto_buf *b, const struct proto_label *l, size_t n,
                       const char *le) {
    if (!n && !le) return;
    proto_buf_puts(b, "{");
    for (size_t i = 0; i < n; i++) {
        proto_buf_printf(b, "%s%s=\"", i ? "," : "", l[i].name);
        escaped(b, l[i].value, true);
        proto_buf_puts(b, "\"");
    }
    if (le) proto_buf_printf(b, "%sle=\"%s\"", n ? "," : "", le);
    proto_buf_puts(b, "}");
}

void proto_prom_sample(struct proto_buf *b, const char *name, const struct proto_label *labels,
                       size_t n_labels, double value) {
    proto_buf_puts(b, name);
    labels_out(b, labels, n_labels, NULL);
    proto_buf_puts(b, " ");
    proto_prom_value(b, value);
    proto_buf_puts(b, "\n");
}

void proto_prom_hist(struct proto_buf *b, const char *name, const struct proto_label *labels,
                     size_t n_labels, const struct proto_hist *h) {
    uint64_t cum = 0;
    char le[32];
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        struct proto_buf tmp = {0};
        if (i < h->n_bounds) proto_prom_value(&tmp, h->bounds[i]);
        snprintf(le, sizeof le, "%s", i < h->n_bounds ? (tmp.data ? tmp.data : "0") : "+Inf");
        proto_buf_free(&tmp);
        proto_buf_printf(b, "%s_bucket", name);
        labels_out(b, labels, n_labels, le);
        proto_buf_printf(b, " %llu\n", (unsigned long long)cum);
    }
    proto_buf_printf(b, "%s_sum", name);
    labels_out(b, labels, n_labels, NULL);
    proto_buf_puts(b, " ");
    proto_prom_value(b, h->sum);
    proto_buf_printf(b, "\n%s_count", name);
    labels_out(b, labels, n_labels, NULL);
    proto_buf_printf(b, " %llu\n", (unsigned long long)h->count);
}
