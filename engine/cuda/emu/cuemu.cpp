/* cuemu.cpp - the emulated device: memory, streams, events, and the fiber scheduler that runs
 * kernels (see cuemu.h for what the emulator is for and what it checks).
 *
 * Memory. Device memory is the host heap (ASan's, in the sanitizer build) behind a table of
 * live allocations, so that copies, memsets and kernel pointer arguments can be checked
 * against it; the "VRAM" size is XD_CUEMU_VRAM_MIB (default 8192). Pinned memory is
 * page-aligned heap memory (the expert cache reads into it with O_DIRECT).
 *
 * Streams. Async copies, memsets and event completions wait in their stream's queue until
 * something waits for them (the "streams" section below), so a missing wait shows.
 *
 * Faults. A device fault (out-of-range copy, bad kernel argument, deadlocked barrier, a
 * shuffle with an exited lane, a refused launch configuration) prints one line to stderr and
 * makes every later call fail with its error, as a real context does after a fault; the
 * process goes on (nothing here exits or aborts).
 *
 * Kernels. run_grid runs blocks one after another. The threads of a block are fibers with
 * stacks of their own (mmap'd once per host thread, guard page below each); the scheduler
 * resumes them round-robin, and a fiber gives the CPU back only where it must wait for others:
 *
 *     RUNNABLE --(__syncthreads / shuffle: others not there yet)--> WAITING (yields)
 *     WAITING  --(resumed, condition now holds)-------------------> RUNNABLE
 *     RUNNABLE --(kernel body returns)----------------------------> DONE
 *
 * A barrier completes when every thread that has not returned has arrived (returned threads
 * count as arrived, as on the device). A shuffle completes when every lane of the warp has
 * deposited its value for that shuffle; deposits alternate between two buffers, so a lane
 * can run one shuffle ahead without overwriting a value someone has yet to read. A full
 * round in which no fiber moved is a deadlock. A waiting fiber hands the CPU straight to the
 * next live one (not through the scheduler: half the switches), and the switch is 12
 * instructions of assembly on x86-64, where swapcontext makes a system call (the signal mask)
 * per switch: test_cuda's logits_close_to_cpu took 3.1 s with it and 32.6 s with ucontext
 * (Release, 2-core VM). Other machines, or -DXD_CUEMU_UCONTEXT, use ucontext.
 *
 * The one piece of process-wide mutable state outside main in this project lives here: the
 * emulated device (its allocation table, VRAM counter and sticky error), as the CUDA driver
 * keeps one context per process. It exists only in EXPERTD_CUDA=EMU builds.
 */
#include "cuemu.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define XDEMU_ASAN 1
#else
#define XDEMU_ASAN 0
#endif

#if defined(__x86_64__) && !defined(XD_CUEMU_UCONTEXT)
#define XDEMU_ASM_SWITCH 1
#else
#define XDEMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

struct xdemu_event;
/* an operation waiting on its stream: a copy, a memset, or an event's completion */
struct xdemu_op {
    enum { COPY, SET, MARK } kind;
    void *dst;
    const void *src;
    size_t n;
    int v;
    xdemu_event *ev;
    unsigned gen; /* MARK: the event's recording it completes */
};
struct xdemu_stream {
    unsigned flags;
    std::deque<xdemu_op> q; /* issued, not yet carried out (device's stream mutex) */
};
struct xdemu_event {
    unsigned flags;
    xdemu_stream *st; /* the stream of its last recording (null: the default stream) */
    unsigned gen;     /* recordings so far */
    bool recorded, done;
    double t;
};

namespace xdemu {
namespace {

/* ---- the device ----------------------------------------------------------------------------- */
enum mem_kind { MEM_DEVICE = 1, MEM_PINNED = 2 };
struct allocation {
    size_t bytes;
    mem_kind kind;
};
struct device {
    std::mutex mu;
    std::map<uintptr_t, allocation> allocs; /* by start address */
    std::map<const void *, int> max_dyn_smem;
    size_t vram = 0, used = 0;
    cudaError_t sticky = cudaSuccess;
    /* streams: their queues and the events recorded on them (never taken while mu is held) */
    std::mutex smu;
    std::set<xdemu_stream *> streams;
};

device &dev() {
    static device d;
    return d;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess) last_error = e;
    return e;
}

/* the sticky fault, if any (every call checks it first) */
cudaError_t sticky() {
    device &d = dev();
    std::lock_guard<std::mutex> g(d.mu);
    return d.sticky;
}

__attribute__((format(printf, 2, 3))) cudaError_t fault(cudaError_t e, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cuemu: device fault: %s\n", msg);
    device &d = dev();
    {
        std::lock_guard<std::mutex> g(d.mu);
        if (d.sticky == cudaSuccess) d.sticky = e;
    }
    return set_error(e);
}

size_t vram_bytes() {
    const char *e = getenv("XD_CUEMU_VRAM_MIB");
    const long mib = e && *e ? atol(e) : 8192;
    return (size_t)(mib > 0 ? mib : 8192) << 20;
}

/* The allocation holding [p, p + n) (n may be 0: p may then be its end), or null. Lock held. */
const allocation *find_locked(device &d, const void *p, size_t n) {
    const uintptr_t a = (uintptr_t)p;
    auto it = d.allocs.upper_bound(a);
    if (it == d.allocs.begin()) return nullptr;
    --it;
    if (a - it->first > it->second.bytes || n > it->second.bytes - (a - it->first)) return nullptr;
    return &it->second;
}

/* the kind of memory p .. p + n lies in: MEM_DEVICE, MEM_PINNED, or 0 (ordinary host memory) */
int kind_of(const void *p, size_t n) {
    device &d = dev();
    std::lock_guard<std::mutex> g(d.mu);
    const allocation *a = find_locked(d, p, n);
    return a ? a->kind : 0;
}

/* whether p (device memory) overlaps any allocation without lying inside one: a range that
 * leaves its allocation */
bool straddles(const void *p, size_t n) {
    device &d = dev();
    std::lock_guard<std::mutex> g(d.mu);
    if (find_locked(d, p, n)) return false;
    const uintptr_t a = (uintptr_t)p;
    auto it = d.allocs.upper_bound(a + (n ? n - 1 : 0));
    if (it == d.allocs.begin()) return false;
    --it;
    return a < it->first + it->second.bytes;
}

/* p .. p + n must be device memory (want_device) or must not; *kind: what it is (kind_of) */
cudaError_t check_range(const char *what, const void *p, size_t n, bool want_device, int *kind) {
    const int k = *kind = kind_of(p, n);
    if (want_device && k != MEM_DEVICE)
        return fault(cudaErrorInvalidValue, "%s: %zu bytes at %p are not inside one device "
                     "allocation%s", what, n, p, straddles(p, n) ? " (the range leaves it)" : "");
    if (!want_device && k == MEM_DEVICE)
        return fault(cudaErrorInvalidValue, "%s: host operand %p is device memory", what, p);
    if (!want_device && k == 0 && straddles(p, n))
        return fault(cudaErrorInvalidValue, "%s: %zu bytes at %p leave their allocation", what, n, p);
    return cudaSuccess;
}

double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cudaError_t do_alloc(void **out, size_t bytes, mem_kind kind) {
    if (!out) return set_error(cudaErrorInvalidValue);
    *out = nullptr;
    if (cudaError_t e = sticky()) return set_error(e);
    device &d = dev();
    {
        std::lock_guard<std::mutex> g(d.mu);
        if (!d.vram) d.vram = vram_bytes();
        if (kind == MEM_DEVICE && (bytes > d.vram || d.used > d.vram - bytes))
            return set_error(cudaErrorMemoryAllocation);
    }
    void *p = nullptr;
    /* exactly bytes (ASan then catches the first byte past the end) */
    if (posix_memalign(&p, kind == MEM_DEVICE ? 256 : 4096, bytes ? bytes : 1))
        return set_error(cudaErrorMemoryAllocation);
    if (kind == MEM_DEVICE) memset(p, 0xff, bytes); /* VRAM is not zeroed: NaN as floats */
    std::lock_guard<std::mutex> g(d.mu);
    d.allocs[(uintptr_t)p] = allocation{bytes ? bytes : 1, kind};
    if (kind == MEM_DEVICE) d.used += bytes ? bytes : 1;
    *out = p;
    return cudaSuccess;
}

/* Check a copy of n bytes; *lazy: both sides are device or pinned memory, so an async copy
 * may be carried out later (a copy to or from pageable memory completes before it returns, as
 * the CUDA runtime's does). */
cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, bool *lazy) {
    if (cudaError_t e = sticky()) return set_error(e);
    if (!dst || !src) return set_error(cudaErrorInvalidValue);
    if (kind == cudaMemcpyDefault) {
        const bool dd = kind_of(dst, n) == MEM_DEVICE, sd = kind_of(src, n) == MEM_DEVICE;
        kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                  : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    }
    const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    int dk = 0, sk = 0;
    cudaError_t e = check_range("cudaMemcpy destination", dst, n, dst_dev, &dk);
    if (!e) e = check_range("cudaMemcpy source", src, n, src_dev, &sk);
    *lazy = !e && dk && sk;
    return e;
}

/* ---- streams -------------------------------------------------------------------------------- *
 * Asynchronous work is carried out as late as CUDA allows, so that a missing wait shows: a
 * stream's copies, memsets and event completions run, in issue order, only when something
 * waits for them (a stream or event synchronize, a kernel launched on that stream, cudaFree). Kernels run at launch, after their stream's earlier work. The
 * default stream (null) runs everything at once. */
void exec_op(const xdemu_op &o) {
    switch (o.kind) {
    case xdemu_op::COPY: memmove(o.dst, o.src, o.n); break;
    case xdemu_op::SET: memset(o.dst, o.v, o.n); break;
    case xdemu_op::MARK: /* (ev null: the event was destroyed) */
        if (o.ev && o.ev->gen == o.gen) o.ev->done = true, o.ev->t = now_s();
        break;
    }
}

/* carry out st's queue, up to the completion of `until` (all of it when null); smu held */
void flush_locked(xdemu_stream *st, const xdemu_event *until) {
    while (!st->q.empty() && !(until && until->done)) {
        const xdemu_op o = st->q.front();
        st->q.pop_front();
        exec_op(o);
    }
}

void flush(xdemu_stream *st) {
    if (!st) return;
    std::lock_guard<std::mutex> g(dev().smu);
    flush_locked(st, nullptr);
}

void flush_all() {
    device &d = dev();
    std::lock_guard<std::mutex> g(d.smu);
    for (xdemu_stream *st : d.streams) flush_locked(st, nullptr);
}

/* issue op on st: queued when st is a stream and lazy, else carried out now (after st's
 * earlier work) */
void issue(xdemu_stream *st, const xdemu_op &o, bool lazy) {
    if (!st) {
        exec_op(o);
        return;
    }
    std::lock_guard<std::mutex> g(dev().smu);
    if (lazy) {
        st->q.push_back(o);
        return;
    }
    flush_locked(st, nullptr);
    exec_op(o);
}

cudaError_t do_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, xdemu_stream *st,
                    bool async) {
    if (!n) return set_error(sticky());
    bool lazy = false;
    if (cudaError_t e = check_copy(dst, src, n, kind, &lazy)) return e;
    issue(st, xdemu_op{xdemu_op::COPY, dst, src, n, 0, nullptr, 0}, async && lazy);
    return cudaSuccess;
}

cudaError_t do_free(void *p, mem_kind kind) {
    if (!p) return cudaSuccess;
    flush_all(); /* cudaFree and cudaFreeHost wait for the device */
    device &d = dev();
    bool found = false;
    {
        std::lock_guard<std::mutex> g(d.mu);
        auto it = d.allocs.find((uintptr_t)p);
        if (it != d.allocs.end() && it->second.kind == kind) {
            if (kind == MEM_DEVICE) d.used -= it->second.bytes;
            d.allocs.erase(it);
            found = true;
        }
    }
    if (!found)
        return fault(cudaErrorInvalidValue, "%s(%p): not a live %s allocation",
                     kind == MEM_DEVICE ? "cudaFree" : "cudaFreeHost", p,
                     kind == MEM_DEVICE ? "device" : "pinned");
    free(p);
    return cudaSuccess;
}

/* ---- fibers --------------------------------------------------------------------------------- */
#if XDEMU_ASM_SWITCH
/* xdemu_switch(save, to): push the callee-saved registers, store the stack pointer in *save,
 * load `to` and pop the registers saved there, return into that fiber */
extern "C" void xdemu_switch(void **save, void *to);
asm(".text\n"
    ".p2align 4\n"
    ".globl xdemu_switch\n"
    ".hidden xdemu_switch\n"
    ".type xdemu_switch, @function\n"
    "xdemu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size xdemu_switch, .-xdemu_switch\n");
#endif

constexpr int MAX_THREADS = 1024;
constexpr size_t STACK_BYTES = (size_t)256 << 10; /* ASan frames are large; virtual anyway */

enum fiber_state { F_RUNNABLE, F_DONE };

struct fiber {
    thread_ids ids;
    fiber_state state;
    unsigned shfl_seq;
    char *stack; /* lowest usable byte (the guard page is below it) */
#if XDEMU_ASM_SWITCH
    void *sp;
#else
    ucontext_t uc;
#endif
#if XDEMU_ASAN
    void *fake;
#endif
};

struct sched {
    fiber f[MAX_THREADS];
    int n_stacks; /* f[0 .. n_stacks) have stacks */
#if XDEMU_ASM_SWITCH
    void *main_sp;
#else
    ucontext_t main_uc;
#endif
#if XDEMU_ASAN
    void *main_fake;
    const void *main_bottom;
    size_t main_size;
#endif
    /* the block being run */
    block_ids blk;
    body_fn body;
    void *arg;
    int n, n_done, cur;
    bool from_main; /* the running fiber was resumed by the scheduler (run_from_main) */
    unsigned long lap_progress; /* progress at the last round-robin wrap-around */
    int bar_arrived;
    unsigned bar_gen;
    unsigned long progress; /* bumped by every step that changes a wait condition */
    const char *fault_what; /* set by a fiber that hit a fault; the scheduler reports it */
    char *smem; /* dynamic shared memory: exactly the launch's bytes */
    struct {
        const void *tag;
        void *p;
    } shm[16]; /* the block's static shared arrays */
    int n_shm;
    /* shuffles: per warp, two buffers of one value a lane, and the deposits each has had */
    uint64_t xch[MAX_THREADS / 32][2][32];
    unsigned long xch_n[MAX_THREADS / 32][2];
    int warp_done[MAX_THREADS / 32]; /* lanes returned */
};

struct sched_holder {
    sched *s = nullptr;
    ~sched_holder() {
        if (!s) return;
        for (int i = 0; i < s->n_stacks; i++)
            munmap(s->f[i].stack - 4096, STACK_BYTES + 4096);
        delete s;
    }
};
thread_local sched_holder tls;

sched *sched_get() {
    if (!tls.s) tls.s = new (std::nothrow) sched();
    return tls.s;
}

void fiber_entry();

/* After fiber f is resumed: tell ASan which stack it now runs on (and learn the scheduler's
 * stack when that is where f came from). */
void resumed(sched *s, fiber *f) {
#if XDEMU_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(f->fake, &bottom, &size);
    if (s->from_main) s->main_bottom = bottom, s->main_size = size;
#endif
    s->from_main = false;
    (void)f;
}

/* Switch from the running fiber f to fiber g, or back to the scheduler (g null). dying: f will
 * never run again. */
void switch_from(sched *s, fiber *f, fiber *g, bool dying) {
#if XDEMU_ASAN
    __sanitizer_start_switch_fiber(dying ? nullptr : &f->fake, g ? g->stack : s->main_bottom,
                                   g ? STACK_BYTES : s->main_size);
#else
    (void)dying;
#endif
    if (g) s->cur = (int)(g - s->f);
#if XDEMU_ASM_SWITCH
    xdemu_switch(&f->sp, g ? g->sp : s->main_sp);
#else
    swapcontext(&f->uc, g ? &g->uc : &s->main_uc);
#endif
    resumed(s, f);
}

/* the scheduler starts fiber i (or resumes it) and gets the CPU back when the block is done
 * or has faulted */
void run_from_main(sched *s, int i) {
    fiber *f = &s->f[i];
#if XDEMU_ASAN
    __sanitizer_start_switch_fiber(&s->main_fake, f->stack, STACK_BYTES);
#endif
    s->cur = i;
    s->from_main = true;
#if XDEMU_ASM_SWITCH
    xdemu_switch(&s->main_sp, f->sp);
#else
    swapcontext(&s->main_uc, &f->uc);
#endif
#if XDEMU_ASAN
    __sanitizer_finish_switch_fiber(s->main_fake, nullptr, nullptr);
#endif
}

/* the next fiber after i in round-robin order that has not returned; -1 when none has */
int next_live(const sched *s, int i) {
    for (int k = 1; k <= s->n; k++) {
        const int j = (i + k) % s->n;
        if (s->f[j].state != F_DONE) return j;
    }
    return -1;
}

/* Fiber f waits: run the next live fiber. A lap (from one wrap-around of the round-robin to
 * the next) in which nothing moved is a deadlock: the block is abandoned. */
void yield(sched *s, fiber *f) {
    const int i = (int)(f - s->f), j = next_live(s, i);
    if (j <= i) {
        if (s->progress == s->lap_progress) {
            s->fault_what = "deadlock: threads wait at a barrier or shuffle that the others never "
                            "reach";
            for (;;) switch_from(s, f, nullptr, false);
        }
        s->lap_progress = s->progress;
    }
    if (j != i) switch_from(s, f, &s->f[j], false);
}

bool fiber_init(sched *s, int i) {
    fiber *f = &s->f[i];
    if (i >= s->n_stacks) {
        void *m = mmap(nullptr, STACK_BYTES + 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return false;
        mprotect(m, 4096, PROT_NONE); /* guard: a stack overflow faults instead of corrupting */
        f->stack = (char *)m + 4096;
        s->n_stacks = i + 1;
    }
    f->state = F_RUNNABLE;
    f->shfl_seq = 0;
#if XDEMU_ASAN
    f->fake = nullptr;
#endif
#if XDEMU_ASM_SWITCH
    /* top: a null return address for fiber_entry (so it starts with the ABI's alignment), the
     * entry point for xdemu_switch's ret, and six zero callee-saved registers */
    void **sp = (void **)(((uintptr_t)(f->stack + STACK_BYTES)) & ~(uintptr_t)15);
    *--sp = nullptr;
    *--sp = (void *)fiber_entry;
    for (int r = 0; r < 6; r++) *--sp = nullptr;
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = STACK_BYTES;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_entry, 0);
#endif
    return true;
}

void fiber_entry() {
    sched *s = tls.s;
    fiber *f = &s->f[s->cur];
    resumed(s, f);
    s->body(s->arg);
    f->state = F_DONE;
    s->n_done++;
    s->warp_done[f->ids.lin >> 5]++;
    s->progress++;
    const int i = (int)(f - s->f), j = next_live(s, i);
    if (j >= 0 && j <= i) s->lap_progress = s->progress;
    switch_from(s, f, j >= 0 ? &s->f[j] : nullptr, true);
    __builtin_unreachable();
}

/* fiber-side fault: record it and go back to the scheduler, which abandons the block */
[[noreturn]] void fiber_fault(sched *s, const char *what) {
    s->fault_what = what;
    for (;;) switch_from(s, &s->f[s->cur], nullptr, false);
}

int lanes_in_warp(const sched *s, int w) {
    const int left = s->n - 32 * w;
    return left < 32 ? left : 32;
}

/* the blocks of a launch, in grid order; stops at the first fault */
void run_blocks(sched *s, const char *name, dim3 grid, dim3 block, size_t smem) {
    s->blk.bdim = block, s->blk.gdim = grid;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                s->blk.bid = uint3{bx, by, bz};
                if (smem) memset(s->smem, 0xff, smem); /* shared memory starts undefined */
                for (int i = 0; i < s->n; i++) {
                    if (!fiber_init(s, i)) {
                        fault(cudaErrorMemoryAllocation, "no memory for fiber stacks");
                        return;
                    }
                    fiber *f = &s->f[i];
                    f->ids.lin = i;
                    f->ids.tid = uint3{(unsigned)i % block.x, (unsigned)i / block.x % block.y,
                                       (unsigned)i / (block.x * block.y)};
                }
                for (int w = 0; w < (s->n + 31) / 32; w++)
                    s->xch_n[w][0] = s->xch_n[w][1] = 0, s->warp_done[w] = 0;
                s->n_done = 0, s->bar_arrived = 0, s->bar_gen = 0, s->fault_what = nullptr;
                s->lap_progress = s->progress;
                s->n_shm = 0;
                run_from_main(s, 0); /* back when every thread has returned, or at a fault */
                for (int i = 0; i < s->n_shm; i++) free(s->shm[i].p);
                if (const char *what = s->fault_what) {
                    fault(cudaErrorLaunchFailure, "%s, block (%u,%u,%u) of (%u,%u,%u), %d "
                          "threads: %s", name, bx, by, bz, grid.x, grid.y, grid.z, s->n, what);
#if XDEMU_ASAN
                    /* the abandoned fibers' frames leave redzones on their stacks */
                    for (int i = 0; i < s->n_stacks; i++)
                        __asan_unpoison_memory_region(s->f[i].stack, STACK_BYTES);
#endif
                    return; /* the suspended fibers are abandoned; fiber_init resets them */
                }
            }
}

}  // namespace

/* ---- what kernels call ---------------------------------------------------------------------- */
const thread_ids *cur_thread(void) {
    sched *s = tls.s;
    return &s->f[s->cur].ids;
}
const block_ids *cur_block(void) { return &tls.s->blk; }
void *dyn_smem(void) { return tls.s->smem; }

void *shared_mem(const void *tag, size_t bytes, size_t align) {
    sched *s = tls.s;
    for (int i = 0; i < s->n_shm; i++)
        if (s->shm[i].tag == tag) return s->shm[i].p;
    void *p = nullptr;
    if (s->n_shm == 16) fiber_fault(s, "more than 16 __shared__ arrays in a kernel");
    if (posix_memalign(&p, align < 16 ? 16 : align, bytes))
        fiber_fault(s, "no memory for a __shared__ array");
    memset(p, 0xff, bytes);
    s->shm[s->n_shm].tag = tag, s->shm[s->n_shm].p = p;
    s->n_shm++;
    return p;
}

void syncthreads(void) {
    sched *s = tls.s;
    fiber *f = &s->f[s->cur];
    const unsigned gen = s->bar_gen;
    s->bar_arrived++;
    s->progress++;
    for (;;) {
        if (s->bar_gen != gen) return;
        if (s->bar_arrived + s->n_done >= s->n) {
            s->bar_gen++;
            s->bar_arrived = 0;
            s->progress++;
            return;
        }
        yield(s, f);
    }
}

uint64_t shfl_xor(unsigned mask, uint64_t bits, int lane_mask) {
    sched *s = tls.s;
    fiber *f = &s->f[s->cur];
    if (mask != 0xffffffffu) fiber_fault(s, "a shuffle with a partial mask (not emulated)");
    const int w = f->ids.lin >> 5, lane = f->ids.lin & 31, nl = lanes_in_warp(s, w);
    const int src = lane ^ lane_mask;
    if (lane_mask < 0 || lane_mask > 31 || src >= nl)
        fiber_fault(s, "a shuffle from a lane that does not exist");
    /* shuffle seq of every lane uses buffer seq & 1 for the (seq + 1) / 2-th time: it is
     * complete when that buffer has had (seq + 1) / 2 deposits from each of the nl lanes */
    const unsigned seq = ++f->shfl_seq, ph = seq & 1;
    const unsigned long want = (unsigned long)nl * ((seq + 1) / 2);
    s->xch[w][ph][lane] = bits;
    s->xch_n[w][ph]++;
    s->progress++;
    while (s->xch_n[w][ph] < want) {
        if (s->warp_done[w]) fiber_fault(s, "a full-mask shuffle after a lane of the warp returned");
        yield(s, f);
    }
    return s->xch[w][ph][src];
}

bool check_kernel_ptr(const char *name, int arg, const void *p) {
    if (!p || kind_of(p, 0)) return true;
    fault(cudaErrorIllegalAddress, "%s: pointer argument %d (%p) is neither device nor pinned "
          "memory", name, arg, p);
    return false;
}

cudaError_t func_set_attr(const void *fn, cudaFuncAttribute a, int v) {
    if (cudaError_t e = sticky()) return set_error(e);
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > 227 * 1024)
        return set_error(cudaErrorInvalidValue);
    device &d = dev();
    std::lock_guard<std::mutex> g(d.mu);
    d.max_dyn_smem[fn] = v;
    return cudaSuccess;
}

void run_grid(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem,
              cudaStream_t st, body_fn body, void *arg) {
    flush(st); /* the stream's earlier work first; the kernel runs now */
    if (sticky() != cudaSuccess) {
        set_error(sticky());
        return;
    }
    const uint64_t nthr = (uint64_t)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || grid.y > 65535 || grid.z > 65535 || !nthr ||
        nthr > 1024 || block.z > 64) {
        set_error(cudaErrorInvalidConfiguration); /* not a fault: the launch is refused */
        return;
    }
    size_t max_smem = 48 * 1024;
    {
        device &d = dev();
        std::lock_guard<std::mutex> g(d.mu);
        auto it = d.max_dyn_smem.find(fn);
        if (it != d.max_dyn_smem.end()) max_smem = (size_t)it->second;
    }
    if (smem > max_smem) {
        set_error(cudaErrorInvalidValue);
        return;
    }
    sched *s = sched_get();
    if (!s) {
        set_error(cudaErrorMemoryAllocation);
        return;
    }
    s->smem = nullptr;
    if (smem && !(s->smem = (char *)malloc(smem))) {
        set_error(cudaErrorMemoryAllocation);
        return;
    }
    s->body = body, s->arg = arg, s->n = (int)nthr;
    run_blocks(s, name, grid, block, smem);
    free(s->smem);
    s->smem = nullptr;
}

}  // namespace xdemu

/* ---- the runtime API ------------------------------------------------------------------------ */
using namespace xdemu;

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = sticky();
    return e;
}

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev_id) {
    if (dev_id != 0) return set_error(cudaErrorInvalidValue);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "expertd CUDA emulator (CPU, no GPU)");
    device &d = dev();
    {
        std::lock_guard<std::mutex> g(d.mu);
        if (!d.vram) d.vram = vram_bytes();
        p->totalGlobalMem = d.vram;
    }
    p->sharedMemPerBlock = 48 * 1024;
    p->major = 9, p->minor = 0; /* what the kernels are written for */
    p->multiProcessorCount = 1;
    p->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}


cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (cudaError_t e = sticky()) return set_error(e);
    device &d = dev();
    std::lock_guard<std::mutex> g(d.mu);
    if (!d.vram) d.vram = vram_bytes();
    *free_bytes = d.vram - d.used;
    *total_bytes = d.vram;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) { return do_alloc(p, bytes, MEM_DEVICE); }
cudaError_t cudaFree(void *p) { return do_free(p, MEM_DEVICE); }
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags) {
    (void)flags;
    return do_alloc(p, bytes, MEM_PINNED);
}
cudaError_t cudaFreeHost(void *p) { return do_free(p, MEM_PINNED); }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    return do_copy(dst, src, n, kind, nullptr, false);
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t st) {
    return do_copy(dst, src, n, kind, st, true);
}
cudaError_t cudaMemset(void *p, int v, size_t n) { return cudaMemsetAsync(p, v, n, nullptr); }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st) {
    if (cudaError_t e = sticky()) return set_error(e);
    if (!n) return cudaSuccess;
    int k;
    if (cudaError_t e = check_range("cudaMemset", p, n, true, &k)) return e;
    issue(st, xdemu_op{xdemu_op::SET, p, nullptr, n, v, nullptr, 0}, true);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags) {
    if (cudaError_t e = sticky()) return set_error(e);
    *st = new (std::nothrow) xdemu_stream{flags, {}};
    if (!*st) return set_error(cudaErrorMemoryAllocation);
    device &d = dev();
    std::lock_guard<std::mutex> g(d.smu);
    d.streams.insert(*st);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t st) {
    if (!st) return set_error(cudaErrorInvalidResourceHandle);
    device &d = dev();
    {
        std::lock_guard<std::mutex> g(d.smu);
        flush_locked(st, nullptr); /* its work completes, as on the device */
        d.streams.erase(st);
    }
    delete st;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t st) {
    if (st) flush(st);
    return set_error(sticky());
}

cudaError_t cudaEventCreate(cudaEvent_t *ev) { return cudaEventCreateWithFlags(ev, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags) {
    if (cudaError_t e = sticky()) return set_error(e);
    *ev = new (std::nothrow) xdemu_event{flags, nullptr, 0, false, false, 0.0};
    return *ev ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaEventDestroy(cudaEvent_t ev) {
    if (!ev) return set_error(cudaErrorInvalidResourceHandle);
    {
        /* as on the device, destroying does not wait for the work before a pending completion:
         * the completion is dropped instead */
        device &d = dev();
        std::lock_guard<std::mutex> g(d.smu);
        for (xdemu_stream *st : d.streams)
            for (xdemu_op &o : st->q)
                if (o.kind == xdemu_op::MARK && o.ev == ev) o.ev = nullptr;
    }
    delete ev;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st) {
    if (cudaError_t e = sticky()) return set_error(e);
    if (!ev) return set_error(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> g(dev().smu);
    if (ev->recorded && !ev->done && ev->st && ev->st != st) flush_locked(ev->st, ev);
    ev->gen++;
    ev->recorded = true, ev->done = false, ev->st = st;
    const xdemu_op o{xdemu_op::MARK, nullptr, nullptr, 0, 0, ev, ev->gen};
    if (st) st->q.push_back(o);
    else exec_op(o);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t ev) {
    if (!ev) return set_error(cudaErrorInvalidResourceHandle);
    {
        std::lock_guard<std::mutex> g(dev().smu);
        if (ev->recorded && !ev->done && ev->st) flush_locked(ev->st, ev);
    }
    return set_error(sticky());
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (cudaError_t e = sticky()) return set_error(e);
    if (!a || !b || (a->flags | b->flags) & cudaEventDisableTiming)
        return set_error(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> g(dev().smu);
    if (!a->recorded || !b->recorded || !a->done || !b->done) return set_error(cudaErrorNotReady);
    *ms = (float)((b->t - a->t) * 1e3);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p) {
    if (cudaError_t e = sticky()) return set_error(e);
    memset(a, 0, sizeof *a);
    const int k = kind_of(p, 0);
    a->type = k == MEM_DEVICE ? cudaMemoryTypeDevice
              : k == MEM_PINNED ? cudaMemoryTypeHost : cudaMemoryTypeUnregistered;
    a->devicePointer = k ? (void *)p : nullptr;
    a->hostPointer = k == MEM_DEVICE ? nullptr : (void *)p;
    return cudaSuccess;
}
