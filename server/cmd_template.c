/* cmd_template.c - `expertd template`: render a chat template from the command line, for
 * scripts and for checking a template against Python's Jinja2 byte for byte.
 *
 *   expertd template render (--template FILE | -m MODEL) --messages FILE [--no-generation-prompt]
 *                           [--bos S] [--eos S] [--vars JSON|@FILE] [--now EPOCH]
 *   expertd template check  (--template FILE | -m MODEL)
 *
 * render prints the rendered text exactly as the engine makes it - no newline added - so
 * `expertd template render ... | cmp - expected.txt` is a byte comparison. MESSAGES is a JSON
 * array of message objects, or an object with a "messages" array (an OpenAI request body; its
 * other keys are ignored); "-" reads stdin. With -m the model's own template is used (the
 * ChatML fallback when it has none) and --bos/--eos default to the vocabulary's token texts.
 * check loads and probes the template and prints what it found as one JSON line. Errors go to
 * stderr: exit 1 for a template that fails to load or render (the message names the line and
 * the problem, or is the template's own raise_exception text), 2 for bad usage or input.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cmd.h"
#include "gguf.h"
#include "xd_error.h"

static void usage(FILE *f) {
    fputs("usage: expertd template render (--template FILE | -m MODEL) --messages FILE\n"
          "                               [--no-generation-prompt] [--bos S] [--eos S]\n"
          "                               [--vars JSON|@FILE] [--now EPOCH]\n"
          "       expertd template check (--template FILE | -m MODEL)\n"
          "  render: print the rendered prompt exactly (no newline added)\n"
          "  check:  load and probe the template; print its origin and capabilities as JSON\n"
          "  --template FILE         a Jinja chat template\n"
          "  -m, --model PATH        use the GGUF's tokenizer.chat_template (ChatML if none)\n"
          "  --messages FILE         JSON array of messages, or {\"messages\": [...]}; - is stdin\n"
          "  --no-generation-prompt  do not end with the assistant header\n"
          "  --bos S, --eos S        bos_token / eos_token (default: the model's, else \"\")\n"
          "  --vars JSON             more variables, e.g. '{\"enable_thinking\": false}'\n"
          "  --now EPOCH             the time strftime_now formats (default: now)\n",
          f);
}

/* The text of the token whose id the GGUF key names, or NULL. Points into g. */
static char *token_text(const struct xd_gguf *g, const char *id_key) {
    uint32_t id;
    const struct xd_gguf_value *toks;
    if (xd_gguf_get_u32(g, id_key, &id) || xd_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks))
        return NULL;
    if (toks->v.arr.elem != XD_GGUF_STRING || id >= toks->v.arr.n) return NULL;
    struct xd_gguf_str s = toks->v.arr.strs[id];
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

static json_t *load_json(const char *arg, bool is_path, char *err, size_t errlen) {
    json_error_t je;
    json_t *j;
    if (!is_path)
        j = json_loads(arg, JSON_ALLOW_NUL, &je);
    else if (!strcmp(arg, "-"))
        j = json_loadf(stdin, JSON_ALLOW_NUL, &je);
    else
        j = json_load_file(arg, JSON_ALLOW_NUL, &je);
    if (!j) snprintf(err, errlen, "%s: line %d: %s", is_path ? arg : "JSON", je.line, je.text);
    return j;
}

int xd_cmd_template(int argc, char **argv) {
    const char *sub = argc > 1 ? argv[1] : NULL;
    if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
        usage(sub ? stdout : stderr);
        return sub ? 0 : 2;
    }
    bool render = !strcmp(sub, "render");
    if (!render && strcmp(sub, "check")) {
        fprintf(stderr, "expertd template: unknown subcommand '%s'\n", sub);
        usage(stderr);
        return 2;
    }
    const char *tpl_path = NULL, *model = NULL, *msgs_path = NULL, *bos = NULL, *eos = NULL,
               *vars_arg = NULL;
    bool gen = true;
    long long now = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--template")                      ? &tpl_path
                           : (!strcmp(a, "-m") || !strcmp(a, "--model")) ? &model
                           : !strcmp(a, "--messages")                    ? &msgs_path
                           : !strcmp(a, "--bos")                         ? &bos
                           : !strcmp(a, "--eos")                         ? &eos
                           : !strcmp(a, "--vars")                        ? &vars_arg
                                                                         : NULL;
        if (dst || !strcmp(a, "--now")) {
            if (++i >= argc) {
                fprintf(stderr, "expertd template: %s needs a value\n", a);
                return 2;
            }
            if (dst)
                *dst = argv[i];
            else {
                char *end;
                now = strtoll(argv[i], &end, 10);
                if (*end || now <= 0) {
                    fprintf(stderr, "expertd template: --now takes seconds since the epoch\n");
                    return 2;
                }
            }
        } else if (!strcmp(a, "--no-generation-prompt")) {
            gen = false;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "expertd template: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!tpl_path == !model) {
        fprintf(stderr, "expertd template: give exactly one of --template FILE and -m MODEL\n");
        return 2;
    }
    if (render && !msgs_path) {
        fprintf(stderr, "expertd template: render needs --messages FILE\n");
        return 2;
    }

    char err[1024] = "";
    int status = 0;
    json_t *msgs = NULL, *vars = NULL;
    char *mbos = NULL, *meos = NULL, *out = NULL;
    struct xd_chat_template *t = NULL;
    struct xd_gguf g;
    memset(&g, 0, sizeof g);
    g.fd = -1;
    bool have_gguf = false;

    if (render) {
        json_t *doc = load_json(msgs_path, true, err, sizeof err);
        if (!doc) {
            fprintf(stderr, "expertd template: %s\n", err);
            return 2;
        }
        msgs =
            json_is_object(doc) ? json_incref(json_object_get(doc, "messages")) : json_incref(doc);
        json_decref(doc);
        if (!json_is_array(msgs)) {
            fprintf(stderr, "expertd template: %s: expected a JSON array of messages\n", msgs_path);
            json_decref(msgs);
            return 2;
        }
        if (vars_arg) {
            vars = load_json(vars_arg[0] == '@' ? vars_arg + 1 : vars_arg, vars_arg[0] == '@', err,
                             sizeof err);
            if (!json_is_object(vars)) {
                fprintf(stderr, "expertd template: --vars: %s\n",
                        vars ? "expected a JSON object" : err);
                status = 2;
                goto done;
            }
        }
    }

    int rc;
    if (model) {
        rc = xd_gguf_open(model, &g, err, sizeof err);
        if (rc) {
            fprintf(stderr, "expertd template: %s: %s\n", model, err[0] ? err : xd_strerror(rc));
            status = 2;
            goto done;
        }
        have_gguf = true;
        rc = xd_chat_template_load_model(&g, NULL, NULL, &t, err, sizeof err);
        if (!bos) bos = mbos = token_text(&g, "tokenizer.ggml.bos_token_id");
        if (!eos) eos = meos = token_text(&g, "tokenizer.ggml.eos_token_id");
    } else {
        rc = xd_chat_template_load_file(tpl_path, NULL, &t, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "expertd template: %s: %s\n", model ? model : tpl_path,
                err[0] ? err : xd_strerror(rc));
        status = rc < 0 && rc > -4096 ? 2 : 1;
        goto done;
    }
    if (!render) {
        unsigned caps = xd_chat_template_caps(t);
        printf("{\"origin\":\"%s\",\"system\":%s,\"tools\":%s,\"thinking\":%s}\n",
               xd_chat_template_origin_name(xd_chat_template_origin(t)),
               caps & XD_CHAT_TPL_SYSTEM ? "true" : "false",
               caps & XD_CHAT_TPL_TOOLS ? "true" : "false",
               caps & XD_CHAT_TPL_THINKING ? "true" : "false");
        goto done;
    }
    struct xd_chat_render_opts o = {
        .add_generation_prompt = gen, .bos_token = bos, .eos_token = eos, .vars = vars, .now = now};
    size_t len;
    rc = xd_chat_template_render(t, msgs, &o, &out, &len, err, sizeof err);
    if (rc) {
        if (rc == XD_E_TEMPLATE_RAISE)
            fprintf(stderr, "expertd template: the template raised an exception: %s\n", err);
        else
            fprintf(stderr, "expertd template: %s\n", err[0] ? err : xd_strerror(rc));
        status = 1;
        goto done;
    }
    if (fwrite(out, 1, len, stdout) != len || fflush(stdout)) {
        fprintf(stderr, "expertd template: writing the output: %s\n", strerror(errno));
        status = 1;
    }
done:
    free(out);
    free(mbos);
    free(meos);
    xd_chat_template_free(t);
    if (have_gguf) xd_gguf_close(&g);
    json_decref(msgs);
    json_decref(vars);
    return status;
}
