/* bench_engine.h - `expertd bench engine` (prefill/decode speed of the CPU engine, like
 * llama-bench) and `expertd bench membw` (the memory read bandwidth the same threads reach),
 * plus the probe itself for other benchmarks to call. */
#ifndef XD_BENCH_ENGINE_H
#define XD_BENCH_ENGINE_H

#include <stddef.h>

/* Run the mode; argv[0] is "engine" / "membw". Returns the exit status: 0, 1 when the run
 * failed, 2 for bad options. Tables on stdout (one JSON object with --json), errors on stderr. */
int xd_bench_engine_main(int argc, char **argv);
int xd_bench_membw_main(int argc, char **argv);

struct xd_membw_result {
    double gb_s_median, gb_s_best; /* over the repetitions, 1 GB = 1e9 bytes */
    size_t bytes;                  /* buffer read per repetition */
    int threads, reps;
};

/* Read a fresh buffer of `bytes` (rounded up to 1 MiB) with n_threads threads, reps times (after
 * one untimed pass), the threads summing 1 MiB chunks with the widest loads the CPU has.
 * 0, XD_E_INVALID or XD_E_NOMEM (the buffer or the threads). */
int xd_membw_measure(size_t bytes, int n_threads, int reps, struct xd_membw_result *out);

#endif
