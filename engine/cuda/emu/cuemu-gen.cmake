# cuemu-gen.cmake - turn one CUDA source into C++ for the emulator build (EXPERTD_CUDA=EMU):
#   cmake -DIN=engine/cuda/ops.cu -DOUT=build/cuemu/ops.cpp -P cuemu-gen.cmake
# Three rewrites, nothing else (line numbers stay those of the .cu, through #line):
#   kernel<targs><<<grid, block, smem, stream>>>(args)  ->  ::xdemu::launch(kernel<targs>,
#       "kernel<targs>", grid, block, smem, stream)(args)   (template arguments hold no < or >)
#   extern __shared__ T name[];  ->  T *name = (T *)::xdemu::dyn_smem();
#   __shared__ [__align__(A)] T name[N];  ->  a reference to an array of the block's shared
#       memory (a heap block of its own per array and block: ASan sees past its ends; 16-byte
#       aligned, enough for every __align__ of the kernels)
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DIN=file.cu -DOUT=file.cpp -P cuemu-gen.cmake")
endif()
file(READ "${IN}" src)
string(REGEX REPLACE
  "extern[ \t]+__shared__[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\\[[ \t]*\\][ \t]*;"
  "\\1 *\\2 = (\\1 *)::xdemu::dyn_smem();" src "${src}")
string(REGEX REPLACE
  "__shared__[ \t]+(__align__\\([0-9]+\\)[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\\[[ \t]*([A-Za-z0-9_]+)[ \t]*\\][ \t]*;"
  "static const char xdemu_tag_\\3 = 0; \\2 (&\\3)[\\4] = ::xdemu::shared_array<\\2, \\4>(&xdemu_tag_\\3);"
  src "${src}")
string(FIND "${src}" "__shared__" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "${IN}: a __shared__ declaration cuemu-gen.cmake cannot rewrite")
endif()
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*(<[^<>;{}]*>)?)[ \t]*<<<" "::xdemu::launch(\\1, \"\\1\", "
  src "${src}")
string(REPLACE ">>>" ")" src "${src}")
string(FIND "${src}" "<<<" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "${IN}: a kernel launch cuemu-gen.cmake cannot rewrite")
endif()
file(WRITE "${OUT}" "#line 1 \"${IN}\"\n${src}")
