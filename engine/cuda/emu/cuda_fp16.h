/* cuda_fp16.h - stands in for the CUDA toolkit's header in the emulator build (EXPERTD_CUDA=EMU):
 * everything the backend uses is in cuemu.h. */
#include "cuemu.h"
