/* test_template.c - the chat-template engine against Python's Jinja2, byte for byte.
 *
 * Expectations come from tests/fixtures/templates/make_expected.py (Debian's python3-jinja2,
 * configured as Hugging Face's apply_chat_template configures it) and are checked in, so these
 * tests need no Python:
 *   - matrix: every stored model template x every conversation of cases.json renders to the
 *     exact bytes Jinja2 rendered, or fails where Jinja2 failed (with the same message when
 *     the template called raise_exception);
 *   - snippets: small templates pinning one behaviour each (whitespace control, scoping,
 *     filters, tests, methods, number and string formatting, errors);
 *   - the CLI (expertd template render/check) once, comparing its stdout bytes;
 *   - hostile and malformed templates stop with the specific error and message, quickly;
 *   - the chat_template API: origin (GGUF, file, ChatML fallback), capabilities, arguments.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chat_template.h"
#include "gguf.h"
#include "gguf_write.h"
#include "jinja.h"
#include "xd_error.h"
#include "xd_test_util.h"

extern char **environ;

static void utc(void) {
    setenv("TZ", "UTC", 1);
    tzset();
}

static json_t *load_json_fixture(const char *rel) {
    char *p = xd_test_fixture(rel);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    cr_assert(j, "%s: line %d: %s", p, je.line, je.text);
    free(p);
    return j;
}

static char *read_fixture(const char *rel, size_t *n) {
    char *p = xd_test_fixture(rel);
    char *s = xd_test_read_file(p, n);
    free(p);
    return s;
}

/* Report where two byte strings first differ. */
static void expect_same_bytes(const char *got, size_t ng, const char *want, size_t nw,
                              const char *what) {
    if (ng == nw && memcmp(got, want, nw) == 0) return;
    size_t i = 0;
    while (i < ng && i < nw && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    cr_expect_fail("%s: differs at byte %zu (got %zu bytes, want %zu)\n  got:  ...%.*s\n  want: "
                   "...%.*s",
                   what, i, ng, nw, (int)((ng - from) > 100 ? 100 : ng - from), got + from,
                   (int)((nw - from) > 100 ? 100 : nw - from), want + from);
}

/* ---- the matrix: stored templates x conversations ---------------------------------------- */

Test(template, matrix_matches_jinja2, .timeout = 120) {
    utc();
    json_t *doc = load_json_fixture("templates/cases.json");
    json_t *tpls = json_object_get(doc, "templates"), *cases = json_object_get(doc, "cases");
    int64_t now = json_integer_value(json_object_get(doc, "now"));
    size_t n_tpl = json_object_size(tpls), n_case = json_array_size(cases);
    cr_assert(n_tpl >= 10 && n_case >= 10);
    size_t same = 0, raised = 0, failed = 0, total = 0;
    const char *stem;
    json_t *tok;
    json_object_foreach(tpls, stem, tok) {
        char rel[256];
        snprintf(rel, sizeof rel, "templates/%s.jinja", stem);
        size_t n;
        char *src = read_fixture(rel, &n);
        cr_assert(src, "missing %s", rel);
        struct xd_chat_template *t = NULL;
        char err[1024];
        int rc = xd_chat_template_load(src, n, NULL, &t, err, sizeof err);
        cr_assert_eq(rc, 0, "%s does not load: %s", stem, err);
        for (size_t k = 0; k < n_case; k++) {
            json_t *cs = json_array_get(cases, k);
            const char *name = json_string_value(json_object_get(cs, "name"));
            struct xd_chat_render_opts o = {
                .add_generation_prompt = json_is_true(json_object_get(cs, "add_generation_prompt")),
                .bos_token = json_string_value(json_array_get(tok, 0)),
                .eos_token = json_string_value(json_array_get(tok, 1)),
                .vars = json_object_get(cs, "vars"),
                .now = now,
            };
            char *out = NULL;
            size_t len = 0;
            rc = xd_chat_template_render(t, json_object_get(cs, "messages"), &o, &out, &len, err,
                                         sizeof err);
            char what[300], erel[300];
            snprintf(what, sizeof what, "%s x %s", stem, name);
            snprintf(erel, sizeof erel, "templates/expected/%s/%s.txt", stem, name);
            size_t nw;
            char *want = read_fixture(erel, &nw);
            total++;
            if (want) {
                cr_expect_eq(rc, 0, "%s: Jinja2 renders it, we fail: %s", what, err);
                if (!rc) expect_same_bytes(out, len, want, nw, what);
                if (!rc && len == nw && !memcmp(out, want, nw)) same++;
            } else {
                snprintf(erel, sizeof erel, "templates/expected/%s/%s.error", stem, name);
                char *e = read_fixture(erel, &nw);
                cr_assert(e, "%s: no expectation (run make_expected.py)", what);
                if (!strncmp(e, "raise\n", 6)) {
                    cr_expect_eq(rc, XD_E_TEMPLATE_RAISE, "%s: want raise_exception, got %d %s",
                                 what, rc, err);
                    cr_expect_str_eq(err, e + 6, "%s: raise_exception message", what);
                    if (rc == XD_E_TEMPLATE_RAISE && !strcmp(err, e + 6)) raised++;
                } else {
                    cr_expect_neq(rc, 0, "%s: Jinja2 fails (%s), we render", what, e + 6);
                    cr_expect_neq(rc, -ENOMEM, "%s", what);
                    if (rc) failed++;
                }
                free(e);
            }
            free(want);
            free(out);
        }
        xd_chat_template_free(t);
        free(src);
    }
    cr_expect_eq(total, n_tpl * n_case);
    cr_expect_eq(same + raised + failed, total);
    fprintf(stderr,
            "template matrix: %zu templates x %zu conversations = %zu: %zu byte-identical, %zu "
            "raise_exception with the same message, %zu failing where Jinja2 fails\n",
            n_tpl, n_case, total, same, raised, failed);
    json_decref(doc);
}

/* ---- snippets ---------------------------------------------------------------------------- */

Test(template, snippets_match_jinja2, .timeout = 60) {
    utc();
    json_t *doc = load_json_fixture("templates/snippets.json");
    json_t *exp = load_json_fixture("templates/expected/snippets.json");
    json_t *sn = json_object_get(doc, "snippets"), *res = json_object_get(exp, "results");
    cr_assert_eq(json_array_size(sn), json_array_size(res), "run make_expected.py");
    json_t *cases = load_json_fixture("templates/cases.json");
    struct xd_jinja_render_opts ro = {.now = json_integer_value(json_object_get(cases, "now"))};
    size_t ok = 0;
    for (size_t k = 0; k < json_array_size(sn); k++) {
        json_t *s = json_array_get(sn, k), *r = json_array_get(res, k);
        const char *src = json_string_value(json_object_get(s, "t"));
        json_t *vars = json_object_get(s, "v");
        char err[1024] = "";
        struct xd_jinja_tpl *t = NULL;
        char *out = NULL;
        size_t len = 0;
        int rc = xd_jinja_parse(src, strlen(src), NULL, &t, err, sizeof err);
        if (!rc) rc = xd_jinja_render(t, vars, &ro, &out, &len, err, sizeof err);
        json_t *w;
        bool good = false;
        if ((w = json_object_get(r, "out"))) {
            cr_expect_eq(rc, 0, "snippet %zu %s: fails: %s", k, src, err);
            if (!rc) {
                char what[64];
                snprintf(what, sizeof what, "snippet %zu", k);
                expect_same_bytes(out, len, json_string_value(w), json_string_length(w), what);
                good = len == json_string_length(w) && !memcmp(out, json_string_value(w), len);
                if (!good) fprintf(stderr, "snippet %zu: %s\n", k, src);
            }
        } else if ((w = json_object_get(r, "raise"))) {
            cr_expect_eq(rc, XD_E_TEMPLATE_RAISE, "snippet %zu %s: %d %s", k, src, rc, err);
            cr_expect_str_eq(err, json_string_value(w), "snippet %zu", k);
            good = rc == XD_E_TEMPLATE_RAISE && !strcmp(err, json_string_value(w));
        } else {
            w = json_object_get(r, "error");
            cr_expect_neq(rc, 0, "snippet %zu %s: Jinja2 fails (%s), we render '%.*s'", k, src,
                          json_string_value(w), (int)len, out ? out : "");
            cr_expect(rc != -ENOMEM && err[0], "snippet %zu: an error needs a message", k);
            good = rc != 0;
        }
        ok += good;
        free(out);
        xd_jinja_free(t);
    }
    fprintf(stderr, "template snippets: %zu of %zu as Jinja2\n", ok, json_array_size(sn));
    json_decref(doc);
    json_decref(exp);
    json_decref(cases);
}

/* ---- the CLI ----------------------------------------------------------------------------- */

/* Run expertd with args; stdout and stderr into malloc'd strings; returns the exit status. */
static int run_cli(const char *const *args, char **out, size_t *nout, char **errs) {
    char o[] = "/tmp/xdtpl-out-XXXXXX", e[] = "/tmp/xdtpl-err-XXXXXX";
    int fo = mkstemp(o), fe = mkstemp(e);
    cr_assert(fo >= 0 && fe >= 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fo, 1);
    posix_spawn_file_actions_adddup2(&fa, fe, 2);
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)XD_EXPERTD_BIN;
    for (; args[n - 1] && n < 31; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid;
    int rc = posix_spawn(&pid, XD_EXPERTD_BIN, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "spawn %s: %s", XD_EXPERTD_BIN, strerror(rc));
    int st;
    waitpid(pid, &st, 0);
    close(fo);
    close(fe);
    *out = xd_test_read_file(o, nout);
    *errs = xd_test_read_file(e, NULL);
    unlink(o);
    unlink(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

Test(template, cli_render_and_check, .timeout = 60) {
    utc();
    json_t *doc = load_json_fixture("templates/cases.json");
    json_t *cases = json_object_get(doc, "cases");
    json_t *cs = NULL;
    for (size_t k = 0; k < json_array_size(cases); k++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(cases, k), "name")), "tools"))
            cs = json_array_get(cases, k);
    cr_assert(cs);
    char *msgs = json_dumps(json_object_get(cs, "messages"), 0);
    char *vars = json_dumps(json_object_get(cs, "vars"), 0);
    char *mpath = xd_test_write_temp(msgs, strlen(msgs));
    char *tpl = xd_test_fixture("templates/Qwen-Qwen3-0.6B.jinja");
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)json_integer_value(json_object_get(doc, "now")));
    const char *args[] = {"template", "render", "--template", tpl,     "--messages",
                          mpath,      "--bos",  "",           "--eos", "<|im_end|>",
                          "--vars",   vars,     "--now",      now,     NULL};
    char *out, *errs;
    size_t n;
    int st = run_cli(args, &out, &n, &errs);
    cr_assert_eq(st, 0, "expertd template render: exit %d: %s", st, errs);
    size_t nw;
    char *want = read_fixture("templates/expected/Qwen-Qwen3-0.6B/tools.txt", &nw);
    cr_assert(want);
    expect_same_bytes(out, n, want, nw, "CLI stdout");
    free(out);
    free(errs);

    /* a template error: exit 1 and the template's own message */
    const char *bad =
        "[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]";
    char *bpath = xd_test_write_temp(bad, strlen(bad));
    char *mix = xd_test_fixture("templates/mistralai-Mixtral-8x7B-Instruct-v0.1.jinja");
    const char *args2[] = {"template", "render", "--template", mix, "--messages", bpath, NULL};
    st = run_cli(args2, &out, &n, &errs);
    cr_expect_eq(st, 1);
    cr_expect_eq(n, 0, "no output on error");
    cr_expect(strstr(errs, "Conversation roles must alternate"), "stderr: %s", errs);
    free(out);
    free(errs);

    /* a template that does not parse: exit 1, the line named */
    const char *broken = "line one\n{% for m in messages %}{{ m.content }}";
    char *tpath = xd_test_write_temp(broken, strlen(broken));
    const char *args3[] = {"template", "render", "--template", tpath, "--messages", bpath, NULL};
    st = run_cli(args3, &out, &n, &errs);
    cr_expect_eq(st, 1);
    cr_expect(strstr(errs, "line 2") && strstr(errs, "endfor"), "stderr: %s", errs);
    free(out);
    free(errs);

    /* check: origin and capabilities */
    const char *args4[] = {"template", "check", "--template", mix, NULL};
    st = run_cli(args4, &out, &n, &errs);
    cr_expect_eq(st, 0, "%s", errs);
    cr_expect_str_eq(out,
                     "{\"origin\":\"file\",\"system\":false,\"tools\":false,\"thinking\":false}\n");
    free(out);
    free(errs);

    /* no generation prompt, and bad usage */
    const char *args5[] = {
        "template", "render", "--template", tpl, "--messages", bpath, "--no-generation-prompt",
        NULL};
    st = run_cli(args5, &out, &n, &errs);
    cr_expect_eq(st, 0, "%s", errs);
    cr_expect_str_eq(out, "<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n");
    free(out);
    free(errs);
    const char *args6[] = {"template", "render", "--messages", bpath, NULL};
    st = run_cli(args6, &out, &n, &errs);
    cr_expect_eq(st, 2);
    free(out);
    free(errs);

    unlink(mpath);
    unlink(bpath);
    unlink(tpath);
    free(mpath);
    free(bpath);
    free(tpath);
    free(tpl);
    free(mix);
    free(want);
    free(msgs);
    free(vars);
    json_decref(doc);
}

/* ---- hostile and malformed templates ----------------------------------------------------- */

struct bad_case {
    const char *name;
    const char *src; /* NULL: built by the test */
    int code;
    const char *msg; /* a substring of the message */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run_src(const char *src, size_t n, const struct xd_jinja_limits *lim, char *err,
                   size_t errlen, char **out, size_t *len) {
    struct xd_jinja_tpl *t = NULL;
    *out = NULL;
    int rc = xd_jinja_parse(src, n, lim, &t, err, errlen);
    if (rc) return rc;
    json_t *vars = json_pack("{s:[{s:s,s:s}]}", "messages", "role", "user", "content", "hi");
    rc = xd_jinja_render(t, vars, NULL, out, len, err, errlen);
    json_decref(vars);
    xd_jinja_free(t);
    return rc;
}

static char *repeat(const char *a, size_t times, const char *mid, const char *b, size_t btimes) {
    size_t n = strlen(a) * times + strlen(mid) + strlen(b) * btimes + 1;
    char *s = malloc(n), *p = s;
    for (size_t i = 0; i < times; i++) p = stpcpy(p, a);
    p = stpcpy(p, mid);
    for (size_t i = 0; i < btimes; i++) p = stpcpy(p, b);
    return s;
}

Test(template, hostile_templates_stop_cleanly, .timeout = 120) {
    static const struct bad_case cases[] = {
        {"unclosed for", "{% for m in messages %}{{ m.content }}", XD_E_TEMPLATE, "'endfor'"},
        {"unclosed if", "a\n{% if x %}b{% elif y %}c", XD_E_TEMPLATE, "'endif'"},
        {"unclosed var", "{{ x ", XD_E_TEMPLATE, "end of print statement"},
        {"unclosed comment", "{# x ", XD_E_TEMPLATE, "comment"},
        {"unclosed raw", "{% raw %} x", XD_E_TEMPLATE, "raw"},
        {"unclosed string", "{{ 'abc }}", XD_E_TEMPLATE, "string"},
        {"stray end tag", "{% endfor %}", XD_E_TEMPLATE, "unknown tag 'endfor'"},
        {"wrong end tag", "{% if x %}{% endfor %}", XD_E_TEMPLATE, "innermost open block is 'if'"},
        {"bad bracket", "{{ (1 ] }}", XD_E_TEMPLATE, "unexpected ']'"},
        {"unknown filter", "{{ x|frobnicate }}", XD_E_TEMPLATE, "no filter named 'frobnicate'"},
        {"unknown test", "{{ x is frob }}", XD_E_TEMPLATE, "no test named 'frob'"},
        {"unsupported filter", "{{ x|groupby('a') }}", XD_E_UNSUPPORTED, "groupby"},
        {"unsupported tag", "{% include 'other.jinja' %}", XD_E_UNSUPPORTED, "'include'"},
        {"unsupported call block", "{% call m() %}x{% endcall %}", XD_E_UNSUPPORTED, "'call'"},
        {"recursive loop", "{% for x in y recursive %}{% endfor %}", XD_E_UNSUPPORTED, "recursive"},
        {"break outside loop", "{% break %}", XD_E_TEMPLATE, "outside of a loop"},
        {"bad utf-8", "ab\xff{{ x }}", XD_E_TEMPLATE, "UTF-8"},
        {"huge int literal", "{{ 99999999999999999999999 }}", XD_E_UNSUPPORTED, "64-bit"},
        {"infinite macro recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
         XD_E_TEMPLATE_LIMIT, "recursion depth"},
        {"mutual recursion",
         "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
         XD_E_TEMPLATE_LIMIT, "recursion depth"},
        {"huge nested loops",
         "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
         XD_E_TEMPLATE_LIMIT, "loop iteration limit"},
        {"range over the sandbox cap", "{% for i in range(10**9) %}{% endfor %}",
         XD_E_TEMPLATE_LIMIT, "range too big"},
        {"huge output", "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
         XD_E_TEMPLATE_LIMIT, "output limit"},
        {"string doubling",
         "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}{{ ns.s|length }}",
         XD_E_TEMPLATE_LIMIT, "limit"},
        {"list doubling",
         "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}"
         "{% endfor %}{{ ns.l|length }}",
         XD_E_TEMPLATE_LIMIT, "limit"},
        {"repeat bomb", "{{ 'x' * 10**15 }}", XD_E_TEMPLATE_LIMIT, "memory limit"},
        {"raise", "{{ raise_exception('stop: ' ~ messages|length) }}", XD_E_TEMPLATE_RAISE,
         "stop: 1"},
        {"deep parentheses", NULL, XD_E_TEMPLATE_LIMIT, "nested too deeply"},
        {"deep blocks", NULL, XD_E_TEMPLATE_LIMIT, "nested too deeply"},
        {"long operator chain", NULL, XD_E_TEMPLATE_LIMIT, "expression nested too deeply"},
        {"long elif chain", NULL, XD_E_TEMPLATE_LIMIT, "nested too deeply"},
        {"deep tuple key",
         "{% set ns = namespace(v=1) %}{% for i in range(3000) %}{% set ns.v = (ns.v,) %}"
         "{% endfor %}{{ {ns.v: 1} }}",
         XD_E_TEMPLATE, "unhashable"},
        {"deep value nesting",
         "{% set ns = namespace(v=1) %}{% for i in range(5000) %}{% set ns.v = [ns.v] %}"
         "{% endfor %}{{ ns.v|tojson }}",
         XD_E_TEMPLATE_LIMIT, "nested too deeply"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct bad_case *bc = &cases[k];
        char *built = NULL;
        if (!strcmp(bc->name, "deep parentheses")) built = repeat("{{ (", 1, "", "(", 5000);
        if (built) { /* "{{ (((...(" then "1)))...) }}" */
            char *tail = repeat("1", 1, "", ")", 5001);
            char *both = malloc(strlen(built) + strlen(tail) + 4);
            sprintf(both, "%s%s }}", built, tail);
            free(built);
            free(tail);
            built = both;
        }
        if (!strcmp(bc->name, "deep blocks"))
            built = repeat("{% if 1 %}", 5000, "x", "{% endif %}", 5000);
        if (!strcmp(bc->name, "long elif chain"))
            built = repeat("{% if x %}", 1, "", "{% elif x %}", 50000);
        if (!strcmp(bc->name, "long elif chain")) {
            char *full = malloc(strlen(built) + 16);
            sprintf(full, "%s{%% endif %%}", built);
            free(built);
            built = full;
        }
        if (!strcmp(bc->name, "long operator chain")) {
            char *chain = repeat("1+", 100000, "1", "", 0);
            size_t n = strlen(chain);
            built = malloc(n + 8);
            snprintf(built, n + 8, "{{ %s }}", chain);
            free(chain);
        }
        const char *src = built ? built : bc->src;
        char err[1024] = "";
        char *out = NULL;
        size_t len;
        double t0 = now_s();
        int rc = run_src(src, strlen(src), NULL, err, sizeof err, &out, &len);
        double dt = now_s() - t0;
        cr_expect_eq(rc, bc->code, "%s: code %d (%s), want %d", bc->name, rc, err, bc->code);
        cr_expect(strstr(err, bc->msg), "%s: message '%s' lacks '%s'", bc->name, err, bc->msg);
        cr_expect(dt < 10.0, "%s: took %.1f s", bc->name, dt);
        cr_expect_null(out);
        free(out);
        free(built);
    }
}

Test(template, limits_are_configurable) {
    struct xd_jinja_limits lim;
    xd_jinja_limits_default(&lim);
    char err[512];
    char *out;
    size_t len;
    lim.max_steps = 1000;
    const char *loop = "{% for i in range(10000) %}{{ i }}{% endfor %}";
    int rc = run_src(loop, strlen(loop), &lim, err, sizeof err, &out, &len);
    cr_expect_eq(rc, XD_E_TEMPLATE_LIMIT);
    cr_expect(strstr(err, "step limit"), "%s", err);
    xd_jinja_limits_default(&lim);
    lim.max_nodes = 10;
    const char *many = "{{ 1 }}{{ 2 }}{{ 3 }}{{ 4 }}{{ 5 }}{{ 6 }}{{ 7 }}{{ 8 }}{{ 9 }}{{ 10 }}";
    rc = run_src(many, strlen(many), &lim, err, sizeof err, &out, &len);
    cr_expect_eq(rc, XD_E_TEMPLATE_LIMIT);
    cr_expect(strstr(err, "too many"), "%s", err);
    xd_jinja_limits_default(&lim);
    lim.max_source = 8;
    rc = run_src("0123456789", 10, &lim, err, sizeof err, &out, &len);
    cr_expect_eq(rc, XD_E_TEMPLATE_LIMIT);
    xd_jinja_limits_default(&lim);
    lim.max_output = 5;
    rc = run_src("123456", 6, &lim, err, sizeof err, &out, &len);
    cr_expect_eq(rc, XD_E_TEMPLATE_LIMIT);
    rc = run_src("12345", 5, &lim, err, sizeof err, &out, &len);
    cr_expect_eq(rc, 0);
    cr_expect_str_eq(out, "12345");
    free(out);
    xd_jinja_limits_default(&lim);
    lim.max_memory = 1 << 20;
    rc = run_src("{{ 'x' * 2000000 }}", 19, &lim, err, sizeof err, &out, &len);
    cr_expect_eq(rc, XD_E_TEMPLATE_LIMIT);
    cr_expect(strstr(err, "memory limit"), "%s", err);
}

/* ---- the chat_template API ----------------------------------------------------------------- */

static struct xd_chat_template *load_stored(const char *stem) {
    char rel[256];
    snprintf(rel, sizeof rel, "templates/%s.jinja", stem);
    char *p = xd_test_fixture(rel);
    struct xd_chat_template *t = NULL;
    char err[512];
    int rc = xd_chat_template_load_file(p, NULL, &t, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: %s", p, err);
    cr_expect_eq(xd_chat_template_origin(t), XD_CHAT_TEMPLATE_FILE);
    free(p);
    return t;
}

Test(template, capabilities_from_probe) {
    struct xd_chat_template *t = load_stored("mistralai-Mixtral-8x7B-Instruct-v0.1");
    cr_expect_eq(xd_chat_template_caps(t), 0u, "Mixtral raises on a system message");
    xd_chat_template_free(t);
    t = load_stored("Qwen-Qwen3-0.6B");
    cr_expect_eq(xd_chat_template_caps(t),
                 XD_CHAT_TPL_SYSTEM | XD_CHAT_TPL_TOOLS | XD_CHAT_TPL_THINKING);
    xd_chat_template_free(t);
    t = load_stored("meta-llama-Llama-3.1-8B-Instruct");
    cr_expect_eq(xd_chat_template_caps(t), XD_CHAT_TPL_SYSTEM | XD_CHAT_TPL_TOOLS);
    xd_chat_template_free(t);
}

Test(template, load_errors_say_why) {
    struct xd_chat_template *t = (struct xd_chat_template *)0x1;
    char err[512];
    int rc = xd_chat_template_load("{% for %}", 9, NULL, &t, err, sizeof err);
    cr_expect_eq(rc, XD_E_TEMPLATE);
    cr_expect(strstr(err, "line 1"), "%s", err);
    cr_expect_eq(t, (struct xd_chat_template *)0x1, "*out untouched on failure");
    rc = xd_chat_template_load("{{ raise_exception('nope') }}", 29, NULL, &t, err, sizeof err);
    cr_expect_eq(rc, XD_E_TEMPLATE_RAISE);
    cr_expect(strstr(err, "probe") && strstr(err, "nope"), "%s", err);
    const char *inc = "{% include 'x.jinja' %}";
    rc = xd_chat_template_load(inc, strlen(inc), NULL, &t, err, sizeof err);
    cr_expect_eq(rc, XD_E_UNSUPPORTED);
    cr_expect(strstr(err, "include") && strstr(err, "not supported"), "%s", err);
    const char *bad = "{% for m in messages %}{{ m.nope.deeper }}{% endfor %}";
    rc = xd_chat_template_load(bad, strlen(bad), NULL, &t, err, sizeof err);
    cr_expect_eq(rc, XD_E_TEMPLATE);
    cr_expect(strstr(err, "no attribute 'nope'"), "%s", err);
    rc = xd_chat_template_load_file("/nonexistent/t.jinja", NULL, &t, err, sizeof err);
    cr_expect_eq(rc, -ENOENT);
}

Test(template, render_arguments) {
    utc();
    struct xd_chat_template *t = NULL;
    char err[512];
    int rc = xd_chat_template_load(xd_chat_template_chatml, strlen(xd_chat_template_chatml), NULL,
                                   &t, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    char *out;
    size_t len;
    json_t *notarr = json_object();
    rc = xd_chat_template_render(t, notarr, NULL, &out, &len, err, sizeof err);
    cr_expect_eq(rc, XD_E_INVALID);
    cr_expect_null(out);
    json_decref(notarr);
    json_t *m = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    /* vars cannot override the explicit variables */
    json_t *vars =
        json_pack("{s:[],s:b,s:s}", "messages", "add_generation_prompt", 0, "extra", "x");
    struct xd_chat_render_opts o = {.add_generation_prompt = true, .vars = vars};
    rc = xd_chat_template_render(t, m, &o, &out, &len, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_str_eq(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    cr_expect_eq(len, strlen(out));
    free(out);
    json_decref(vars);
    /* NUL inside content survives (JSON \u0000) */
    json_t *mn =
        json_loads("[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]", JSON_ALLOW_NUL, NULL);
    rc = xd_chat_template_render(t, mn, NULL, &out, &len, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_eq(len, strlen("<|im_start|>user\na") + 1 + strlen("b<|im_end|>\n"));
    free(out);
    json_decref(mn);
    json_decref(m);
    xd_chat_template_free(t);
}

static char *write_gguf(const char *tpl, bool as_string) {
    char tmpl[] = "/tmp/xdtpl-gguf-XXXXXX";
    int fd = mkstemp(tmpl);
    cr_assert(fd >= 0);
    struct xd_gguf_writer *w;
    cr_assert_eq(xd_gguf_writer_create_fd(fd, &w), 0);
    cr_assert_eq(xd_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    const char *toks[] = {"<unk>", "<s>", "</s>", "hi"};
    cr_assert_eq(xd_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 4), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1), 0);
    cr_assert_eq(xd_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2), 0);
    if (tpl && as_string)
        cr_assert_eq(xd_gguf_writer_add_str(w, "tokenizer.chat_template", tpl), 0);
    if (tpl && !as_string) cr_assert_eq(xd_gguf_writer_add_u32(w, "tokenizer.chat_template", 7), 0);
    cr_assert_eq(xd_gguf_writer_begin_data(w), 0);
    cr_assert_eq(xd_gguf_writer_close(w), 0);
    return strdup(tmpl);
}

Test(template, model_template_gguf_file_fallback) {
    utc();
    size_t n;
    char *mix = read_fixture("templates/mistralai-Mixtral-8x7B-Instruct-v0.1.jinja", &n);
    cr_assert(mix);
    char *with = write_gguf(mix, true), *without = write_gguf(NULL, true),
         *wrong = write_gguf("x", false);
    struct xd_gguf g;
    char err[512];
    struct xd_chat_template *t = NULL;

    cr_assert_eq(xd_gguf_open(with, &g, err, sizeof err), 0, "%s", err);
    const char *src;
    size_t len;
    cr_expect_eq(xd_chat_template_gguf_source(&g, &src, &len), 0);
    cr_expect(len == n && !memcmp(src, mix, n));
    cr_assert_eq(xd_chat_template_load_model(&g, NULL, NULL, &t, err, sizeof err), 0, "%s", err);
    cr_expect_eq(xd_chat_template_origin(t), XD_CHAT_TEMPLATE_GGUF);
    cr_expect_str_eq(xd_chat_template_origin_name(xd_chat_template_origin(t)), "gguf");
    cr_expect(!(xd_chat_template_caps(t) & XD_CHAT_TPL_SYSTEM));
    xd_chat_template_free(t);
    /* --chat-template FILE wins over the GGUF's */
    char *qwen = xd_test_fixture("templates/Qwen-Qwen2.5-7B-Instruct.jinja");
    cr_assert_eq(xd_chat_template_load_model(&g, qwen, NULL, &t, err, sizeof err), 0, "%s", err);
    cr_expect_eq(xd_chat_template_origin(t), XD_CHAT_TEMPLATE_FILE);
    cr_expect(strstr(xd_chat_template_source(t, NULL), "Alibaba Cloud"));
    xd_chat_template_free(t);
    xd_gguf_close(&g);

    cr_assert_eq(xd_gguf_open(without, &g, err, sizeof err), 0, "%s", err);
    cr_expect_eq(xd_chat_template_gguf_source(&g, &src, &len), XD_E_MISSING);
    cr_assert_eq(xd_chat_template_load_model(&g, NULL, NULL, &t, err, sizeof err), 0, "%s", err);
    cr_expect_eq(xd_chat_template_origin(t), XD_CHAT_TEMPLATE_FALLBACK);
    cr_expect_str_eq(xd_chat_template_source(t, NULL), xd_chat_template_chatml);
    cr_expect_eq(xd_chat_template_caps(t), XD_CHAT_TPL_SYSTEM);
    json_t *m = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content", "S", "role", "user",
                          "content", "U");
    struct xd_chat_render_opts o = {.add_generation_prompt = true};
    char *out;
    cr_assert_eq(xd_chat_template_render(t, m, &o, &out, &len, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                          "<|im_start|>assistant\n");
    free(out);
    json_decref(m);
    xd_chat_template_free(t);
    xd_gguf_close(&g);

    cr_assert_eq(xd_gguf_open(wrong, &g, err, sizeof err), 0, "%s", err);
    t = NULL;
    cr_expect_eq(xd_chat_template_load_model(&g, NULL, NULL, &t, err, sizeof err), XD_E_BAD_TYPE);
    cr_expect_null(t);
    xd_gguf_close(&g);

    /* the CLI with -m: the model's template and its BOS/EOS texts */
    char *mpath = xd_test_write_temp("[{\"role\":\"user\",\"content\":\"hi\"}]", 32);
    const char *args[] = {"template", "render", "-m", with, "--messages", mpath, NULL};
    char *errs;
    int st = run_cli(args, &out, &len, &errs);
    cr_expect_eq(st, 0, "%s", errs);
    cr_expect_str_eq(out, "<s>[INST] hi [/INST]");
    free(out);
    free(errs);
    unlink(mpath);
    free(mpath);
    unlink(with);
    unlink(without);
    unlink(wrong);
    free(with);
    free(without);
    free(wrong);
    free(qwen);
    free(mix);
}

/* A loaded template is read-only: renders on many threads at once agree with one alone. */
struct thread_arg {
    const struct xd_chat_template *t;
    const json_t *m;
    const char *want;
    int bad;
};

static void *render_many(void *p) {
    struct thread_arg *a = p;
    struct xd_chat_render_opts o = {.add_generation_prompt = true, .now = 1721995200};
    for (int i = 0; i < 30; i++) {
        char *out;
        size_t len;
        char err[256];
        if (xd_chat_template_render(a->t, a->m, &o, &out, &len, err, sizeof err) ||
            strcmp(out, a->want))
            a->bad++;
        free(out);
    }
    return NULL;
}

Test(template, concurrent_renders, .timeout = 60) {
    utc();
    struct xd_chat_template *t = load_stored("openai-gpt-oss-120b");
    json_t *doc = load_json_fixture("templates/cases.json");
    const json_t *m = json_object_get(json_array_get(json_object_get(doc, "cases"), 2), "messages");
    struct xd_chat_render_opts o = {.add_generation_prompt = true, .now = 1721995200};
    char *want;
    size_t len;
    char err[256];
    cr_assert_eq(xd_chat_template_render(t, m, &o, &want, &len, err, sizeof err), 0, "%s", err);
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){t, m, want, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, render_many, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(args[i].bad, 0);
    }
    free(want);
    json_decref(doc);
    xd_chat_template_free(t);
}
