/* cmd_bench.c - `expertd bench <mode>`: one table of benchmark modes, nothing else.
 *
 * Each mode lives in bench/ and takes the arguments from its own name on; adding one (`serve`,
 * the HTTP load generator) is one row here. Mutable state lives in the mode that owns it.
 */
#include <stdio.h>
#include <string.h>

#include "bench_engine.h"
#include "bench_serve.h"
#include "cmd.h"

struct bench_mode {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static const struct bench_mode modes[] = {
    {"engine", xd_bench_engine_main,
     "prefill and decode tok/s of the CPU engine (like llama-bench)"},
    {"membw", xd_bench_membw_main, "memory read bandwidth of N threads (the decode roofline)"},
    {"serve", xd_bench_serve_main,
     "load-test an OpenAI-compatible server over HTTP (TTFT, ITL, E2E)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: expertd bench <mode> [options]   (expertd bench <mode> --help)\n\nmodes:\n");
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        fprintf(f, "  %-8s %s\n", modes[i].name, modes[i].help);
}

int xd_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(argv[1], modes[i].name)) return modes[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "expertd bench: unknown mode '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
