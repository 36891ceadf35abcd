/* stop.h - incremental stop-string matching over streamed text.
 *
 * The matcher is fed the decoded text of each generated token as it comes and answers, after
 * each piece, which bytes are safe to send to the client now. It holds back the tail that could
 * still grow into a stop string (a stop string may straddle token boundaries) and the tail of an
 * incomplete UTF-8 sequence (a multi-byte character may be split across byte-fallback tokens),
 * so emitted text never contains any part of a stop string and never ends inside a character.
 * When a stop string completes, the text emitted last ends right before it; the stop string and
 * anything after it are dropped. xd_stop_finish() flushes what is held at the end.
 *
 * Which stop wins: the one that completes first in the byte stream; among those completing at
 * the same byte, the longest (earliest start); among identical strings, the lowest index. This
 * rule makes the result independent of how the text is cut into pieces. (llama.cpp takes the
 * earliest start among stops found in the text checked at that token; the two agree except when
 * one stop string lies strictly inside another and both complete in the same piece.)
 *
 * Lifecycle:   OPEN --feed, a stop completes--> MATCHED
 *              OPEN --finish--> FINISHED
 * In MATCHED, feed and finish return nothing (stop_index repeats the match); in FINISHED, feed
 * is a caller bug and returns XD_E_INVALID.
 */
#ifndef XD_STOP_H
#define XD_STOP_H

#include <stdbool.h>
#include <stddef.h>

enum xd_stop_state { XD_STOP_OPEN, XD_STOP_MATCHED, XD_STOP_FINISHED };

/* The answer to one feed or finish. text points into the matcher and stays valid until the
 * next call on it (feed, finish, destroy). */
struct xd_stop_out {
    const char *text;   /* bytes to emit now (may be empty) */
    size_t len;
    int stop_index;     /* index in the caller's list of the stop string that matched, or -1 */
};

struct xd_stop;

/* Copies n_stops stop strings (stops[i] of lens[i] bytes, or NUL-terminated when lens is NULL)
 * into a new matcher at *out. Empty strings are ignored (they would match everywhere) but keep
 * their index. n_stops may be 0: the matcher then only holds back incomplete UTF-8.
 * Returns 0, XD_E_INVALID (NULL string or out) or XD_E_NOMEM; *out untouched on failure.
 * Cost per fed byte is O(n_stops) amortized: the request layer bounds n_stops (OpenAI: 4). */
int xd_stop_create(const char *const *stops, const size_t *lens, size_t n_stops,
                   struct xd_stop **out);

/* Frees the matcher; NULL is a no-op. */
void xd_stop_destroy(struct xd_stop *m);

/* Appends piece[0..len) and reports in *out what is safe to emit and whether a stop matched.
 * Returns 0, XD_E_INVALID (finished matcher, or NULL piece with len > 0) or XD_E_NOMEM (the
 * piece is not consumed and the matcher is as before, less what the previous call emitted). */
int xd_stop_feed(struct xd_stop *m, const char *piece, size_t len, struct xd_stop_out *out);

/* End of generation: *out gets every held-back byte (an incomplete UTF-8 tail included, for
 * the caller to keep or replace) and the matcher becomes FINISHED. After a match it reports
 * nothing more. Cannot fail. */
void xd_stop_finish(struct xd_stop *m, struct xd_stop_out *out);

/* Bytes fed but neither emitted nor dropped yet. */
size_t xd_stop_held(const struct xd_stop *m);

/* Where the matcher is in its lifecycle. */
enum xd_stop_state xd_stop_state(const struct xd_stop *m);

/* True when the matcher's internal state is consistent. For assert() and tests. */
bool xd_stop_check_invariants(const struct xd_stop *m);

#endif
