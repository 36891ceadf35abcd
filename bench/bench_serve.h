/* bench_serve.h - `expertd bench serve`: the HTTP load generator for OpenAI-compatible
 * completion servers (expertd, llama.cpp's llama-server, vLLM). */
#ifndef XD_BENCH_SERVE_H
#define XD_BENCH_SERVE_H

/* Runs the benchmark; argv[0] is "serve". Returns the exit status: 0 when every request
 * completed, 1 when any failed or the run could not start (reports are written either way),
 * 2 for bad options. Prints to stdout (tables) and stderr (progress, errors). */
int xd_bench_serve_main(int argc, char **argv);

#endif
