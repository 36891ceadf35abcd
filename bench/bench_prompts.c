/* bench_prompts.c - the requests a benchmark sends: prompts read from a file or made of words,
 * lengths drawn from --seed, and each request's bytes built once before the clock starts.
 *
 * Trade-off: synthetic prompts are words, not token ids. Token-id prompts would hit an exact
 * length but only on the server whose vocabulary made them, and llama.cpp, vLLM and expertd
 * would each read them differently; common English words (" the", " of", ...) are one token in
 * SentencePiece and GPT-2 vocabularies, so the same text is about the same length everywhere,
 * and the report uses the server's usage.prompt_tokens when it sends one. Words are drawn at
 * random per request so a prefix cache cannot turn the benchmark into a cache benchmark.
 * Not here: datasets (ShareGPT, sonnet) - give them as --prompts FILE.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bench_impl.h"
#include "xd_error.h"

#define PROMPT_FILE_MAX (1024ull * 1024 * 1024) /* a prompts file over 1 GiB is a mistake */

/* One token each in Llama's SentencePiece vocabulary and GPT-2's BPE, with a leading space. */
static const char *const WORDS[] = {
    "the",   "of",      "and",     "to",     "in",      "is",     "was",    "for",     "on",
    "that",  "with",    "as",      "at",     "by",      "from",   "it",     "his",     "he",
    "be",    "are",     "this",    "not",    "or",      "have",   "had",    "but",     "they",
    "which", "one",     "you",     "were",   "her",     "all",    "she",    "there",   "would",
    "their", "we",      "him",     "been",   "has",     "when",   "who",    "will",    "more",
    "no",    "if",      "out",     "so",     "said",    "what",   "up",     "its",     "about",
    "into",  "than",    "them",    "can",    "only",    "other",  "new",    "some",    "could",
    "time",  "these",   "two",     "may",    "then",    "do",     "first",  "any",     "my",
    "now",   "such",    "like",    "our",    "over",    "man",    "me",     "even",    "most",
    "made",  "after",   "also",    "did",    "many",    "before", "must",   "through", "back",
    "years", "where",   "much",    "your",   "way",     "well",   "down",   "should",  "because",
    "each",  "just",    "those",   "people", "how",     "too",    "little", "state",   "good",
    "very",  "make",    "world",   "still",  "own",     "see",    "men",    "work",    "long",
    "get",   "here",    "between", "both",   "life",    "being",  "under",  "never",   "day",
    "same",  "another", "know",    "while",  "last",    "might",  "us",     "great",   "old",
    "year",  "off",     "come",    "since",  "against", "go",     "came",   "right",   "used",
    "take",  "three",
};

void xd_bench_prompt_synth(struct xd_bench_rng *rng, int32_t words, struct proto_buf *out) {
    const int64_t n_words = (int64_t)(sizeof WORDS / sizeof WORDS[0]);
    for (int32_t i = 0; i < words; i++) {
        if (i) proto_buf_append(out, " ", 1);
        proto_buf_puts(out, WORDS[xd_bench_rng_range(rng, 0, n_words - 1)]);
    }
}

static void free_texts(char **t, size_t n) {
    for (size_t i = 0; i < n; i++) free(t[i]);
    free(t);
}

/* A prompt from one JSON value: a string, or an object with a "prompt" string. */
static char *prompt_of(json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "prompt");
    if (!json_is_string(v)) return NULL;
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, json_string_value(v), n);
        s[n] = 0;
    }
    return s;
}

int xd_bench_prompts_read(const char *path, char ***texts, size_t *n, char *msg, size_t msg_cap) {
    *texts = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(msg, msg_cap, "%s: %s", path, strerror(e));
        return -e;
    }
    struct proto_buf b;
    proto_buf_init(&b);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= PROMPT_FILE_MAX)
        proto_buf_append(&b, chunk, got);
    bool rerr = ferror(f);
    fclose(f);
    if (rerr || b.oom || b.len > PROMPT_FILE_MAX) {
        snprintf(msg, msg_cap, "%s: %s", path,
                 rerr    ? "read error"
                 : b.oom ? "out of memory"
                         : "larger than 1 GiB");
        proto_buf_free(&b);
        return rerr ? XD_E_IO : XD_E_NOMEM;
    }
    const char *p = b.data ? b.data : "";
    size_t i = 0;
    while (i < b.len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
    char **t = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    if (i < b.len && p[i] == '[') { /* a JSON list */
        json_error_t je;
        json_t *arr = json_loadb(p, b.len, JSON_ALLOW_NUL, &je);
        if (!json_is_array(arr)) {
            snprintf(msg, msg_cap, "%s: not a JSON list (%s, line %d)", path, je.text, je.line);
            rc = XD_E_FORMAT;
        }
        size_t k;
        json_t *v;
        json_array_foreach(arr, k, v) {
            if (rc) break;
            if (cnt == cap) {
                cap = cap ? 2 * cap : 64;
                char **nt = realloc(t, cap * sizeof *t);
                if (!nt) {
                    rc = XD_E_NOMEM;
                    break;
                }
                t = nt;
            }
            if (!(t[cnt] = prompt_of(v))) {
                snprintf(msg, msg_cap, "%s: item %zu is not a string or {\"prompt\": string}", path,
                         k);
                rc = XD_E_FORMAT;
                break;
            }
            cnt++;
        }
        json_decref(arr);
    } else { /* JSON lines; blank lines skipped */
        size_t line = 0;
        while (i < b.len && !rc) {
            size_t j = i;
            while (j < b.len && p[j] != '\n') j++;
            line++;
            size_t k = i;
            while (k < j && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
            if (k < j) {
                json_error_t je;
                json_t *v = json_loadb(p + i, j - i, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
                if (cnt == cap) {
                    cap = cap ? 2 * cap : 64;
                    char **nt = realloc(t, cap * sizeof *t);
                    if (!nt)
                        rc = XD_E_NOMEM;
                    else
                        t = nt;
                }
                if (!rc && !(t[cnt] = prompt_of(v))) {
                    snprintf(msg, msg_cap, "%s:%zu: not a JSON string or {\"prompt\": string}",
                             path, line);
                    rc = XD_E_FORMAT;
                } else if (!rc) {
                    cnt++;
                }
                json_decref(v);
            }
            i = j + 1;
        }
    }
    proto_buf_free(&b);
    if (!rc && cnt == 0) {
        snprintf(msg, msg_cap, "%s: no prompts", path);
        rc = XD_E_FORMAT;
    }
    if (rc == XD_E_NOMEM) snprintf(msg, msg_cap, "%s: out of memory", path);
    if (rc) {
        free_texts(t, cnt);
        return rc;
    }
    *texts = t;
    *n = cnt;
    return 0;
}

void xd_bench_prompts_free(struct xd_bench_prompt *p, size_t n) {
    for (size_t i = 0; p && i < n; i++) {
        free(p[i].text);
        free(p[i].wire);
    }
    free(p);
}

/* The request bytes: head and JSON body. */
static int build_wire(const struct xd_bench_config *cfg, const char *model,
                      struct xd_bench_prompt *q) {
    json_t *o = json_object();
    if (!o) return XD_E_NOMEM;
    json_object_set_new(o, "model", json_string(model));
    json_object_set_new(o, "prompt", json_string(q->text));
    json_object_set_new(o, "max_tokens", json_integer(q->max_tokens));
    json_object_set_new(o, "temperature", json_real(cfg->temperature));
    json_object_set_new(o, "stream", json_true());
    json_t *so = json_object();
    json_object_set_new(so, "include_usage", json_true());
    json_object_set_new(o, "stream_options", so);
    if (cfg->ignore_eos) json_object_set_new(o, "ignore_eos", json_true());
    char *body = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!body) return XD_E_NOMEM;
    size_t body_len = strlen(body);
    struct proto_buf w;
    proto_buf_init(&w);
    proto_buf_printf(&w,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: expertd-bench/0.1\r\n"
                     "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n",
                     cfg->u.path, cfg->u.host_header, body_len);
    if (cfg->api_key) proto_buf_printf(&w, "Authorization: Bearer %s\r\n", cfg->api_key);
    proto_buf_append(&w, "\r\n", 2);
    size_t head_len = w.len;
    proto_buf_append(&w, body, body_len);
    free(body);
    if (w.oom) {
        proto_buf_free(&w);
        return XD_E_NOMEM;
    }
    q->wire = proto_buf_take(&w, &q->wire_len);
    q->body = q->wire + head_len;
    q->body_len = body_len;
    return 0;
}

int xd_bench_prompts_build(const struct xd_bench_config *cfg, const char *model,
                           struct xd_bench_prompt **out, char *msg, size_t msg_cap) {
    *out = NULL;
    char **texts = NULL;
    size_t n_texts = 0;
    int rc = 0;
    if (cfg->prompts_file &&
        (rc = xd_bench_prompts_read(cfg->prompts_file, &texts, &n_texts, msg, msg_cap)))
        return rc;
    struct xd_bench_prompt *p = calloc(cfg->num_prompts, sizeof *p);
    if (!p) rc = XD_E_NOMEM;
    /* lengths and words come from their own stream; the arrival schedule has another */
    struct xd_bench_rng rng;
    xd_bench_rng_seed(&rng, cfg->seed);
    for (size_t i = 0; !rc && i < cfg->num_prompts; i++) {
        struct xd_bench_prompt *q = &p[i];
        q->max_tokens = (int32_t)xd_bench_rng_range(&rng, cfg->out_lo, cfg->out_hi);
        if (texts) {
            q->words = -1;
            q->text = strdup(texts[i % n_texts]);
            if (!q->text) rc = XD_E_NOMEM;
        } else {
            q->words = (int32_t)xd_bench_rng_range(&rng, cfg->in_lo, cfg->in_hi);
            struct proto_buf b;
            proto_buf_init(&b);
            xd_bench_prompt_synth(&rng, q->words, &b);
            if (!b.len) proto_buf_append(&b, "", 1); /* a 0-word prompt is "" */
            q->text = b.oom ? NULL : proto_buf_take(&b, NULL);
            proto_buf_free(&b);
            if (!q->text) rc = XD_E_NOMEM;
        }
        if (!rc) rc = build_wire(cfg, model, q);
    }
    free_texts(texts, n_texts);
    if (rc) {
        if (rc == XD_E_NOMEM) snprintf(msg, msg_cap, "out of memory building the requests");
        xd_bench_prompts_free(p, cfg->num_prompts);
        return rc;
    }
    *out = p;
    return 0;
}
