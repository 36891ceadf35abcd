/* main.c - the expertd binary: one table of subcommands, nothing else. Mutable state lives in
 * the subcommand that owns it; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"

struct xd_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static const struct xd_cmd cmds[] = {
    {"run", xd_cmd_run, "generate text from a prompt (the CPU engine)"},
    {"tokenize", xd_cmd_tokenize, "print the token ids of a text as a JSON array"},
    {"inspect", xd_cmd_inspect, "print a GGUF model's metadata, tensors and expert sizes"},
    {"gen", xd_cmd_gen, "write a synthetic MoE model as GGUF"},
    {"bench", xd_cmd_bench, "benchmarks: engine (tok/s), membw (GB/s), serve (HTTP load)"},
    {"serve", xd_cmd_serve, "serve OpenAI-compatible completions over HTTP"},
    {"pack", xd_cmd_pack, "write a model's experts as a packed store for --expert-cache"},
    {"replay", xd_cmd_replay, "replay an expert trace under LRU and Belady's optimum"},
    {"template", xd_cmd_template, "render a chat template (the model's or a file) for messages"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: expertd <command> [options]   (expertd <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("expertd 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "expertd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
