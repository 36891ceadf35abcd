/* stop.c - incremental stop-string matching with hold-back, one Knuth-Morris-Pratt automaton per
 * stop string.
 *
 * Each stop string keeps a KMP state: the length of the longest suffix of everything fed so far
 * that is a prefix of the string. Feeding a byte advances every state (amortized O(1) each,
 * using the string's failure table built at create). A state reaching the string's length is a
 * match that completes at this byte. After a piece with no match, the largest state is exactly
 * the number of trailing bytes that might still become a stop string, so that many are held
 * back; nothing earlier can ever be part of a match, because a state grows by at most one per
 * byte. Because states depend only on the byte stream, the outcome is the same however the text
 * is cut into pieces (the tests feed byte by byte and whole to check this).
 *
 * The rejected alternative is llama.cpp's: search the text with find() after each token and
 * test every suffix against every stop for the partial case, O(L^2) per token for a stop of
 * length L, and hold back *everything* after the first partial match. The automaton costs
 * O(total stop length) memory and O(n_stops) per byte, and holds back only the tail.
 *
 * The pending buffer holds the bytes not yet emitted: the held tail of the last call plus the
 * new piece. Bytes handed out by a call stay in place until the next call (so out->text stays
 * valid) and are dropped then; the buffer grows only when a piece is larger than it (rare: a
 * token is a few bytes), never shrinks.
 */
#include "stop.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xd_error.h"

#define STOP_INITIAL_CAP 256

struct stop_pat {
    const unsigned char *s; /* into xd_stop.bytes */
    size_t len;             /* > 0 */
    const size_t *fail;     /* into xd_stop.fail: fail[i] = longest proper border of s[0..i] */
    size_t q;               /* KMP state: bytes of s matched by the current suffix, < len */
    int index;              /* position in the caller's list */
};

struct xd_stop {
    enum xd_stop_state state;
    struct stop_pat *pats;
    size_t n_pats;
    unsigned char *bytes; /* all stop strings, concatenated */
    size_t *fail;         /* all failure tables, concatenated */
    int matched;          /* stop_index of the match, or -1 */

    char *buf;            /* pending bytes: buf[0..n_emitted) handed out by the last call */
    size_t len, cap, n_emitted;
};

/* ---- helpers ------------------------------------------------------------------------------ */

static void build_failure(const unsigned char *s, size_t len, size_t *fail) {
    fail[0] = 0;
    size_t k = 0;
    for (size_t i = 1; i < len; i++) {
        while (k > 0 && s[i] != s[k]) k = fail[k - 1];
        if (s[i] == s[k]) k++;
        fail[i] = k;
    }
}

/* Advances p over byte ch; true when p completes a match (its state is then reset to 0: the
 * matcher stops at the first match, so what follows is never looked at). */
static bool pat_step(struct stop_pat *p, unsigned char ch) {
    size_t q = p->q;
    while (q > 0 && p->s[q] != ch) q = p->fail[q - 1];
    if (p->s[q] == ch) q++;
    if (q == p->len) {
        p->q = 0;
        return true;
    }
    p->q = q;
    return false;
}

/* Largest e <= end such that buf[0..e) does not stop inside a multi-byte UTF-8 sequence whose
 * remaining bytes have not arrived: looks back at most 3 bytes for the lead byte. Invalid input
 * (a stray continuation run, a bad lead byte) is not held: the client gets it as it is. */
static size_t utf8_safe_end(const char *buf, size_t end) {
    for (size_t back = 1; back <= 3 && back <= end; back++) {
        const unsigned char b = (unsigned char)buf[end - back];
        if ((b & 0xC0) == 0x80) continue; /* continuation byte: keep looking for the lead */
        const size_t need = b >= 0xF8 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        return need > back ? end - back : end;
    }
    return end;
}

/* Drops the bytes the previous call handed out. */
static void drop_emitted(struct xd_stop *m) {
    if (m->n_emitted == 0) return;
    memmove(m->buf, m->buf + m->n_emitted, m->len - m->n_emitted);
    m->len -= m->n_emitted;
    m->n_emitted = 0;
}

static void out_set(struct xd_stop_out *out, const char *text, size_t len, int stop_index) {
    out->text = text;
    out->len = len;
    out->stop_index = stop_index;
}

/* ---- public API -------------------------------------------------------------------------- */

int xd_stop_create(const char *const *stops, const size_t *lens, size_t n_stops,
                   struct xd_stop **out) {
    if (!out || (n_stops > 0 && !stops)) return XD_E_INVALID;
    size_t total = 0, n_pats = 0;
    for (size_t i = 0; i < n_stops; i++) {
        if (!stops[i]) return XD_E_INVALID;
        const size_t l = lens ? lens[i] : strlen(stops[i]);
        if (l > SIZE_MAX / 2 - total) return XD_E_INVALID;
        total += l;
        n_pats += l > 0;
    }
    if (n_stops > INT32_MAX) return XD_E_INVALID;

    struct xd_stop *m = calloc(1, sizeof *m);
    if (!m) return XD_E_NOMEM;
    m->matched = -1;
    m->cap = STOP_INITIAL_CAP;
    m->buf = malloc(m->cap);
    if (n_pats > 0) {
        m->pats = calloc(n_pats, sizeof *m->pats);
        m->bytes = malloc(total);
        m->fail = malloc(total * sizeof *m->fail);
    }
    if (!m->buf || (n_pats > 0 && (!m->pats || !m->bytes || !m->fail))) {
        xd_stop_destroy(m);
        return XD_E_NOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < n_stops; i++) {
        const size_t l = lens ? lens[i] : strlen(stops[i]);
        if (l == 0) continue;
        memcpy(m->bytes + off, stops[i], l);
        build_failure(m->bytes + off, l, m->fail + off);
        m->pats[m->n_pats++] = (struct stop_pat){
            .s = m->bytes + off, .len = l, .fail = m->fail + off, .q = 0, .index = (int)i};
        off += l;
    }
    *out = m;
    return 0;
}

void xd_stop_destroy(struct xd_stop *m) {
    if (!m) return;
    free(m->pats);
    free(m->bytes);
    free(m->fail);
    free(m->buf);
    free(m);
}

int xd_stop_feed(struct xd_stop *m, const char *piece, size_t len, struct xd_stop_out *out) {
    if (m->state == XD_STOP_FINISHED || (len > 0 && !piece)) return XD_E_INVALID;
    if (m->state == XD_STOP_MATCHED) {
        out_set(out, m->buf, 0, m->matched);
        return 0;
    }
    drop_emitted(m);
    if (len > m->cap - m->len) {
        size_t cap = m->cap;
        while (len > cap - m->len) {
            if (cap > SIZE_MAX / 2) return XD_E_NOMEM;
            cap *= 2;
        }
        char *nb = realloc(m->buf, cap);
        if (!nb) return XD_E_NOMEM;
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, piece, len);
    const size_t start = m->len;
    m->len += len;

    for (size_t i = start; i < m->len; i++) {
        const unsigned char ch = (unsigned char)m->buf[i];
        const struct stop_pat *won = NULL;
        for (size_t j = 0; j < m->n_pats; j++) {
            struct stop_pat *p = &m->pats[j];
            /* completing at the same byte: the longer one started earlier and wins */
            if (pat_step(p, ch) && (!won || p->len > won->len)) won = p;
        }
        if (won) {
            /* won's first len-1 bytes were held (its state was len-1 before this byte), so
             * the match starts inside the buffer. */
            const size_t cut = i + 1 - won->len;
            m->state = XD_STOP_MATCHED;
            m->matched = won->index;
            m->len = m->n_emitted = cut;
            out_set(out, m->buf, cut, won->index);
            assert(xd_stop_check_invariants(m));
            return 0;
        }
    }

    size_t hold = 0;
    for (size_t j = 0; j < m->n_pats; j++)
        if (m->pats[j].q > hold) hold = m->pats[j].q;
    const size_t emit = utf8_safe_end(m->buf, m->len - hold);
    m->n_emitted = emit;
    out_set(out, m->buf, emit, -1);
    assert(xd_stop_check_invariants(m));
    return 0;
}

void xd_stop_finish(struct xd_stop *m, struct xd_stop_out *out) {
    if (m->state != XD_STOP_OPEN) {
        m->len = m->n_emitted = 0;
        out_set(out, m->buf, 0, m->matched);
        return;
    }
    drop_emitted(m);
    m->n_emitted = m->len;
    m->state = XD_STOP_FINISHED;
    out_set(out, m->buf, m->len, -1);
}

size_t xd_stop_held(const struct xd_stop *m) {
    return m->state == XD_STOP_OPEN ? m->len - m->n_emitted : 0;
}

enum xd_stop_state xd_stop_state(const struct xd_stop *m) { return m->state; }

bool xd_stop_check_invariants(const struct xd_stop *m) {
    if (!m || !m->buf || m->len > m->cap || m->n_emitted > m->len) return false;
    size_t max_q = 0;
    for (size_t j = 0; j < m->n_pats; j++) {
        const struct stop_pat *p = &m->pats[j];
        if (p->len == 0 || p->q >= p->len) return false;
        if (j > 0 && p->index <= m->pats[j - 1].index) return false;
        if (p->q > max_q) max_q = p->q;
    }
    switch (m->state) {
    case XD_STOP_OPEN:
        /* what is held is the longest partial match plus at most 3 bytes of a character */
        return m->matched == -1 && m->len - m->n_emitted <= max_q + 3;
    case XD_STOP_MATCHED: return m->matched >= 0 && m->n_emitted == m->len;
    case XD_STOP_FINISHED: return m->matched == -1 && m->n_emitted == m->len;
    }
    return false;
}
