/* cuemu.h - the CUDA backend's kernels and runtime calls, run on the CPU (EXPERTD_CUDA=EMU).
 *
 * Most sessions that work on this project get no GPU, and CI never has one. Without a device
 * the CUDA backend's .cu files were only ever compiled, so a wrong index in a kernel, an
 * out-of-bounds load or a host pointer passed where device memory belongs stayed hidden until
 * someone drew a GPU. This emulator closes most of that gap. The same .cu files are compiled
 * by the host C++ compiler against this header (and the cuda_runtime.h / cuda_fp16.h beside it,
 * which stand in for the toolkit's), after cuemu-gen.cmake has rewritten each
 * `kernel<<<grid, block, smem, stream>>>(args)` into `::xdemu::launch(kernel, grid, block,
 * smem, stream)(args)` and each `__shared__` array into a per-block one. Every CUDA thread of a block then runs as a fiber on the calling host
 * thread (cuemu.cpp): it runs until __syncthreads() or a warp shuffle and waits there for the
 * rest of its block (or warp), so barriers and shuffles mean what they mean on the device.
 *
 * What it checks, with ASan/UBSan on (tests/run.sh builds it that way):
 *   - kernel arithmetic and indexing: the golden rule, batch == alone and offloaded ==
 *     resident run through the real kernels (tests/test_cuda.c);
 *   - out-of-bounds and use-after-free accesses to device memory (cudaMalloc is the ASan heap,
 *     sized exactly) and to shared memory (each array of each block a heap block of its own);
 *   - misaligned vector loads (UBSan's alignment check on float4/uint4 accesses);
 *   - copies and memsets that leave their allocation, kernel pointer arguments that are not
 *     device or pinned memory, launch configurations the device would refuse, a shuffle
 *     whose partner lane exited, and barriers that never complete (deadlock): each is a
 *     launch failure that sticks, as a device fault does, and is printed to stderr;
 *   - reliance on zeroed memory: cudaMalloc and every block's shared memory start as 0xff
 *     bytes (NaN as floats);
 *   - missing waits: a stream's async copies, memsets and event completions are carried out
 *     as late as CUDA allows (when something waits on them), so a host that reads a copy's
 *     destination, reuses its pinned source or publishes a VRAM slot without waiting sees
 *     the old bytes (cuemu.cpp, "streams").
 * What it does not: timing, occupancy, races between blocks, a kernel still running when the
 * host or another stream touches its memory (kernels run at launch), warp-synchronous code
 * without shuffles, device math's last bits (expf etc. are the host's; the golden rule's
 * tolerance covers that), pointers to host memory inside structs passed to kernels. A real
 * GPU run (bench/cuda.sh) stays the proof.
 *
 * Blocks run one at a time in grid order; threads within a block round-robin, switching only
 * at barriers and shuffles, so a kernel's results are deterministic run to run.
 */
#ifndef XD_CUEMU_H
#define XD_CUEMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

/* ---- qualifiers ---------------------------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
/* cuemu-gen.cmake rewrites every __shared__ declaration (into xdemu::shared_array): one left
 * over is a compile error, never a silent per-thread array */
#define __shared__ __shared___declaration_not_rewritten_by_cuemu_gen

/* ---- vector types -------------------------------------------------------------------------- */
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    return uint4{x, y, z, w};
}

/* ---- the runtime API (cuemu.cpp) ------------------------------------------------------------ */
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct cudaPointerAttributes {
    cudaMemoryType type;
    int device;
    void *devicePointer, *hostPointer;
};
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int major, minor, multiProcessorCount, maxThreadsPerBlock;
};
typedef struct xdemu_stream *cudaStream_t;
typedef struct xdemu_event *cudaEvent_t;
#define cudaStreamNonBlocking 0x01u
#define cudaEventDisableTiming 0x02u
#define cudaHostAllocPortable 0x01u

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t st = nullptr);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st = nullptr);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t st);
cudaError_t cudaEventCreate(cudaEvent_t *ev);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t ev);
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t ev);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p);

namespace xdemu {

/* ---- what the kernels see of the thread they run as ---------------------------------------- */
struct thread_ids {
    uint3 tid;
    int lin; /* linear thread index in the block */
};
struct block_ids {
    uint3 bid;
    dim3 bdim, gdim;
};
const thread_ids *cur_thread(void);
const block_ids *cur_block(void);
void syncthreads(void);
uint64_t shfl_xor(unsigned mask, uint64_t bits, int lane_mask); /* 8 bytes from lane ^ mask */
void *dyn_smem(void);
/* the current block's shared array for declaration tag: bytes of its own (a heap block, so ASan
 * sees past its ends), filled with 0xff when the block starts (shared memory starts undefined) */
void *shared_mem(const void *tag, size_t bytes, size_t align);
template <class T, size_t N> T (&shared_array(const void *tag))[N] {
    return *(T(*)[N])shared_mem(tag, N * sizeof(T), alignof(T) > 16 ? alignof(T) : 16);
}

cudaError_t func_set_attr(const void *fn, cudaFuncAttribute a, int v);
/* whether p may be a kernel's pointer argument (null, device or pinned memory); faults the
 * device (sticky cudaErrorIllegalAddress, message on stderr) when not */
bool check_kernel_ptr(const char *name, int arg, const void *p);

typedef void (*body_fn)(void *);
/* Run body(arg) as every thread of every block of the grid (see the header comment). */
void run_grid(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem,
              cudaStream_t st, body_fn body, void *arg);

template <class Tuple, size_t... I>
bool check_args(const char *name, const Tuple &t, std::index_sequence<I...>) {
    bool ok = true;
    auto one = [&](int i, const auto &v) {
        if constexpr (std::is_pointer_v<std::decay_t<decltype(v)>>)
            ok = ok && check_kernel_ptr(name, i, (const void *)v);
        else (void)i, (void)v;
    };
    (one((int)I, std::get<I>(t)), ...);
    return ok;
}

/* kernel<<<g, b, smem, st>>>(args) as launch(kernel, "kernel", g, b, smem, st)(args): the arguments are
 * converted to the kernel's parameter types once, and every emulated thread gets its own copy
 * of them (as each device thread has its own parameter registers). */
template <class... P> struct launcher {
    void (*k)(P...);
    const char *name; /* the kernel's name as the launch spelled it */
    dim3 g, b;
    size_t smem;
    cudaStream_t st;
    template <class... A> void operator()(A &&...a) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel argument count");
        struct pack {
            void (*k)(P...);
            std::tuple<std::decay_t<P>...> args;
        } pk{k, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
        if (!check_args(name, pk.args, std::index_sequence_for<P...>{})) return;
        run_grid((const void *)k, name, g, b, smem, st,
                 [](void *p) {
                     pack *q = (pack *)p;
                     std::tuple<std::decay_t<P>...> mine = q->args;
                     std::apply(q->k, mine);
                 },
                 &pk);
    }
};
template <class... P>
launcher<P...> launch(void (*k)(P...), const char *name, dim3 g, dim3 b, size_t smem = 0,
                      cudaStream_t st = nullptr) {
    return launcher<P...>{k, name, g, b, smem, st};
}

}  // namespace xdemu

template <class... P>
static inline cudaError_t cudaFuncSetAttribute(void (*fn)(P...), cudaFuncAttribute a, int v) {
    return xdemu::func_set_attr((const void *)fn, a, v);
}

#define threadIdx (::xdemu::cur_thread()->tid)
#define blockIdx (::xdemu::cur_block()->bid)
#define blockDim (::xdemu::cur_block()->bdim)
#define gridDim (::xdemu::cur_block()->gdim)

/* ---- device intrinsics ---------------------------------------------------------------------- */
static inline void __syncthreads(void) { xdemu::syncthreads(); }
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a scalar");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = xdemu::shfl_xor(mask, bits, lane_mask);
    memcpy(&v, &bits, sizeof v);
    return v;
}
template <class T> static inline T __ldg(const T *p) { return *p; }

static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
/* the _rn operations: one IEEE rounding each, never contracted (the emulator is compiled with
 * -ffp-contract=off, so plain a * b + c is not fused either, unlike nvcc's default) */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline int __float2int_rn(float f) { return (int)nearbyintf(f); } /* ties to even */

/* four signed bytes of a times those of b, plus c */
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++)
        c += (int)(int8_t)(uint8_t)((unsigned)a >> (8 * i)) *
             (int)(int8_t)(uint8_t)((unsigned)b >> (8 * i));
    return c;
}
/* result byte i = byte (s >> 4i) & 7 of the 8 bytes y:x */
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = (uint64_t)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}

/* ---- half precision ------------------------------------------------------------------------ */
struct __half {
    uint16_t x;
};
struct __attribute__((aligned(4))) __half2 {
    __half x, y;
};
static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
/* exact: every half is a float */
static inline float __half2float(__half h) {
    const uint32_t s = (uint32_t)(h.x >> 15) << 31, e = (h.x >> 10) & 0x1f, m = h.x & 0x3ff;
    if (e == 0x1f) return __uint_as_float(s | 0x7f800000u | m << 13);
    if (e) return __uint_as_float(s | (e + 112) << 23 | m << 13);
    const float f = (float)m * 0x1p-24f; /* subnormal (or zero): exact */
    return s ? -f : f;
}
/* round to nearest even, overflow to infinity, NaN stays NaN */
static inline __half __float2half_rn(float f) {
    const uint32_t u = __float_as_uint(f), s = (u >> 16) & 0x8000u;
    const uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return __half{(uint16_t)(s | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0))};
    if (a >= 0x477ff000u) return __half{(uint16_t)(s | 0x7c00u)}; /* rounds past 65504 */
    if (a < 0x38800000u) {                                          /* below 2^-14: subnormal */
        const float q = nearbyintf(fabsf(f) * 0x1p24f);            /* exact scaling, then RNE */
        return __half{(uint16_t)(s | (uint32_t)q)};
    }
    const uint32_t e = (a >> 23) - 112, m = a & 0x7fffffu;
    uint32_t h = e << 10 | m >> 13;
    const uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;
    return __half{(uint16_t)(s | h)};
}
static inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }

#endif
