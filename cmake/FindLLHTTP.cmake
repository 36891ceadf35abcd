# FindLLHTTP - llhttp compiled from the C sources Debian's node-llhttp package installs
# (/usr/share/llhttp/{api,http,llhttp}.c, header in /usr/share/include/llhttp). Defines the
# static library target llhttp::llhttp. LLHTTP_ROOT may point elsewhere.
find_path(LLHTTP_INCLUDE_DIR llhttp.h
  HINTS ${LLHTTP_ROOT}/include ${LLHTTP_ROOT}
  PATHS /usr/share/include/llhttp /usr/include/llhttp /usr/local/include/llhttp)
find_path(LLHTTP_SOURCE_DIR llhttp.c
  HINTS ${LLHTTP_ROOT}/src ${LLHTTP_ROOT}
  PATHS /usr/share/llhttp /usr/src/llhttp)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(LLHTTP REQUIRED_VARS LLHTTP_INCLUDE_DIR LLHTTP_SOURCE_DIR)
if(LLHTTP_FOUND AND NOT TARGET llhttp::llhttp)
  add_library(xd_llhttp STATIC ${LLHTTP_SOURCE_DIR}/api.c ${LLHTTP_SOURCE_DIR}/http.c
    ${LLHTTP_SOURCE_DIR}/llhttp.c)
  target_include_directories(xd_llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
  # third-party generated code: build it without our -Werror set
  target_compile_options(xd_llhttp PRIVATE -w)
  set_target_properties(xd_llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
  add_library(llhttp::llhttp ALIAS xd_llhttp)
endif()
