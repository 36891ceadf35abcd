/* test_golden.c - the engine against llama.cpp's outputs, by the rule of the fixtures README
 * (golden_rule.h has the rule; test_cuda.c applies it to the CUDA backend). */
#include "golden_rule.h"

static void check_model(const char *stem) { (void)check_model_on(stem, NULL); }

Test(golden, mixtral_f32) { check_model("mixtral-tiny-f32"); }
Test(golden, mixtral_f16) { check_model("mixtral-tiny-f16"); }
Test(golden, mixtral_q8_0) { check_model("mixtral-tiny-q8_0"); }
Test(golden, mixtral_q4_k_m) { check_model("mixtral-tiny-q4_k_m"); }
Test(golden, qwen3moe_f32) { check_model("qwen3moe-tiny-f32"); }
Test(golden, qwen3moe_f16) { check_model("qwen3moe-tiny-f16"); }
Test(golden, qwen3moe_q8_0) { check_model("qwen3moe-tiny-q8_0"); }
