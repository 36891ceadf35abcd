/* cmd_serve.c - `expertd serve`: parse the options into a srv_config and run the server
 * (srv.c). Exit status 0 after a drain, 1 when the server cannot start or the model cannot be
 * loaded, 2 for bad options.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "expert_cache.h"
#include "ops.h"
#include "srv.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: expertd serve -m MODEL [options]\n"
            "  -m, --model FILE          GGUF model\n"
            "  --model-name NAME         id clients send as \"model\" (default: file name "
            "without .gguf)\n"
            "  --chat-template FILE      Jinja chat template for /v1/chat/completions (default:\n"
            "                            the model's tokenizer.chat_template, else ChatML)\n"
            "  --host ADDR               address to bind (default 127.0.0.1)\n"
            "  --port N                  TCP port (default 8080; 0 = any free port)\n"
            "  --port-file FILE          write the bound port to FILE once listening\n"
            "  --api-key KEY             require 'Authorization: Bearer KEY' on /v1/* (also "
            "$EXPERTD_API_KEY)\n"
            "  --parallel N              sequence slots of the engine (default 4)\n"
            "  --ctx N                   positions per slot (default min(model, 4096))\n"
            "  --step-tokens N           token budget of one engine step (default 512)\n"
            "  --prefill-hold N          with --expert-cache: prompt chunks wait up to N steps\n"
            "                            while the decodes' experts fit the cache (default 0 = off)\n"
            "  --kv-cache SIZE           paged KV cache pool: bytes, K/M/G or KiB/MiB/GiB\n"
            "                            (default: --parallel x --ctx positions); when it is\n"
            "                            full the newest request is preempted and recomputed\n"
            "  --max-queue N             requests waiting for a slot before 429 (default 64)\n"
            "  --max-connections N       open connections before 503 (default 256)\n"
            "  --max-body BYTES          request body limit (default 8 MiB)\n"
            "  --max-header BYTES        request line + headers limit (default 16 KiB)\n"
            "  --header-timeout S        seconds to receive a request's headers (default 10)\n"
            "  --body-timeout S          seconds to receive its body (default 30)\n"
            "  --idle-timeout S          keep-alive connection idle limit (default 60)\n"
            "  --drain-timeout S         SIGTERM: seconds in-flight requests get (default 30)\n"
            "  -t, --threads N           CPU kernel threads (default: one per CPU)\n"
            "  --no-repack               keep the weights in the file's row layout (no copy in\n"
            "                            the CPU kernels' panel layout: less load time, slower)\n"
            "  --backend NAME            compute backend: " XD_BACKEND_NAMES ", cuda (default "
            "cpu)\n"
            "  --gpu-memory SIZE         cuda: VRAM to use at most (default: what is free); "
            "without\n"
            "                            --expert-cache the experts get what the rest leaves\n"
            "  --quiet                   no per-request log lines\n"
            "expert offloading (MoE models):\n%s",
            xd_xc_config_usage());
}

static bool num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "expertd serve: %s expects a number in [%g, %g], got '%s'\n", flag, lo,
                hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* "dir/name.gguf" -> "name" in buf. */
static const char *default_name(const char *path, char *buf, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", b);
    size_t n = strlen(buf);
    if (n > 5 && !strcmp(buf + n - 5, ".gguf")) buf[n - 5] = 0;
    return buf;
}

int xd_cmd_serve(int argc, char **argv) {
    struct srv_config c;
    srv_config_default(&c);
    c.api_key = getenv("EXPERTD_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        double v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            c.quiet = true;
            continue;
        }
        if (!strcmp(a, "--no-repack")) {
            c.no_repack = true;
            continue;
        }
        const int used = xd_xc_config_argv(&c.xc, "serve", argc, argv, &i);
        if (used < 0) return 2;
        if (used) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "expertd serve: unknown option or missing value: %s\n", a);
            return 2;
        }
        const char *val = argv[++i];
#define NUM(lo, hi) \
    if (!num(a, val, lo, hi, &v)) return 2
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) c.model_path = val;
        else if (!strcmp(a, "--model-name")) c.model_name = val;
        else if (!strcmp(a, "--chat-template")) c.chat_template_path = val;
        else if (!strcmp(a, "--host")) c.host = val;
        else if (!strcmp(a, "--port-file")) c.port_file = val;
        else if (!strcmp(a, "--api-key")) c.api_key = val;
        else if (!strcmp(a, "--backend")) c.backend = val;
        else if (!strcmp(a, "--gpu-memory")) {
            if (xd_xc_parse_size(val, &c.gpu_memory)) {
                fprintf(stderr, "expertd serve: --gpu-memory: bad size '%s'\n", val);
                return 2;
            }
        }
        else if (!strcmp(a, "--kv-cache")) {
            if (xd_xc_parse_size(val, &c.kv_bytes) || c.kv_bytes == 0) {
                fprintf(stderr, "expertd serve: --kv-cache expects a size, got '%s'\n", val);
                return 2;
            }
        }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NUM(0, 1024);
            c.n_threads = (int32_t)v;
        }
        else if (!strcmp(a, "--port")) {
            NUM(0, 65535);
            c.port = (int)v;
        } else if (!strcmp(a, "--parallel")) {
            NUM(1, 1024);
            c.n_parallel = (int32_t)v;
        } else if (!strcmp(a, "--ctx")) {
            NUM(16, 1 << 20);
            c.n_ctx = (int32_t)v;
        } else if (!strcmp(a, "--step-tokens")) {
            NUM(1, 1 << 16);
            c.step_tokens = (int32_t)v;
        } else if (!strcmp(a, "--prefill-hold")) {
            NUM(0, 1024);
            c.prefill_hold = (int32_t)v;
        } else if (!strcmp(a, "--max-queue")) {
            NUM(0, 1 << 20);
            c.max_queue = (int32_t)v;
        } else if (!strcmp(a, "--max-connections")) {
            NUM(1, 1 << 20);
            c.max_connections = (int32_t)v;
        } else if (!strcmp(a, "--max-body")) {
            NUM(1024, 1 << 30);
            c.http.max_body_bytes = (size_t)v;
        } else if (!strcmp(a, "--max-header")) {
            NUM(256, 1 << 24);
            c.http.max_header_bytes = (size_t)v;
        } else if (!strcmp(a, "--header-timeout")) {
            NUM(0.001, 86400);
            c.header_timeout_ms = (uint64_t)(v * 1000);
        } else if (!strcmp(a, "--body-timeout")) {
            NUM(0.001, 86400);
            c.body_timeout_ms = (uint64_t)(v * 1000);
        } else if (!strcmp(a, "--idle-timeout")) {
            NUM(0.001, 86400);
            c.idle_timeout_ms = (uint64_t)(v * 1000);
        } else if (!strcmp(a, "--drain-timeout")) {
            NUM(0, 86400);
            c.drain_timeout_ms = (uint64_t)(v * 1000);
        } else {
            fprintf(stderr, "expertd serve: unknown option %s\n", a);
            return 2;
        }
#undef NUM
    }
    if (!c.model_path) {
        fprintf(stderr, "expertd serve: -m MODEL is required\n");
        usage(stderr);
        return 2;
    }
    if (c.api_key && !*c.api_key) c.api_key = NULL;
    char name[256];
    if (!c.model_name) c.model_name = default_name(c.model_path, name, sizeof name);
    /* a peer that resets the connection must cost an EPIPE, not the process */
    signal(SIGPIPE, SIG_IGN);
    return srv_run(&c);
}
