// The CUDA built-ins that the kernel sources use, on the host, so that a source runs on a machine without a GPU against
// an fp64 reference. Each CUDA thread of a block is a fiber (ucontext) on one host thread, run in turn until it waits at
// a barrier or returns; the blocks run one after another. __syncthreads is a barrier of the block's threads, a warp
// shuffle one of the warp's 32 lanes; a thread that has returned counts as arrived at both (as on a GPU, where a
// barrier waits only for threads that have not exited). A barrier that can never complete aborts with a message.
// Dynamic shared memory: C++ cannot spell `extern __shared__ T name[];` (extern and static conflict), so the test build
// writes it as `T* name = dynamic_shared<T>();` (HostEmulation.Run); it holds the launch's shared bytes, filled
// with 0xff (NaN as floats) at the start of each block so that a read before a write shows. Math is the host's <math.h>.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <memory>
#include <ucontext.h>
#include <vector>

struct Dim3
{
    unsigned x = 0, y = 0, z = 0;
};
Dim3 threadIdx, blockIdx, blockDim, gridDim; // threadIdx: the running fiber's, set before each resume

#define __global__
#define __launch_bounds__(...)
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

// The threads of one block: their fibers, the barriers they meet at, and the block's shared state.
namespace host_block
{
// Threads still expected (the group's size less those returned), those arrived, and how often it has completed.
struct Barrier
{
    unsigned expected = 0, arrived = 0, generation = 0;
};

struct Fiber
{
    ucontext_t context;
    std::unique_ptr<char[]> stack; // StackBytes, allocated once and kept across launches
    bool done = false;
    unsigned shuffles = 0; // its parity picks the slots: a lane may write the next shuffle's before the others read
                           // this one's, so that one barrier a shuffle suffices
};

constexpr size_t StackBytes = 64 << 10;
ucontext_t scheduler;
std::vector<Fiber> fibers;
Barrier block, warps[32];
bool progress; // something arrived, completed or returned since the scheduler's last sweep
float shuffle_slots[2][1024];
struct alignas(16) Chunk { unsigned char bytes[16]; };
std::vector<Chunk> dynamic_shared;
const std::function<void()>* kernel;

// Completes the barrier once every thread still expected has arrived.
inline void complete_if_all(Barrier& b)
{
    if (b.arrived > 0 && b.arrived == b.expected)
    {
        b.arrived = 0;
        b.generation++;
    }
}

// Arrives, then lets the other threads run until the barrier completes.
inline void wait(Barrier& b)
{
    unsigned mine = b.generation;
    progress = true;
    b.arrived++;
    complete_if_all(b);
    while (b.generation == mine) swapcontext(&fibers[threadIdx.x].context, &scheduler);
}

// A returned thread is expected no longer; its leaving may complete the barrier the others wait at.
inline void leave(Barrier& b)
{
    b.expected--;
    complete_if_all(b);
}

inline void run_thread()
{
    (*kernel)();
    leave(block);
    leave(warps[threadIdx.x / 32]);
    fibers[threadIdx.x].done = progress = true;
} // returns to uc_link: the scheduler

// Runs the block's threads in turn, each until it waits or returns, until all have returned.
inline void run(unsigned threads)
{
    block = {threads, 0, 0};
    for (unsigned w = 0; w < 32; w++) warps[w] = {w * 32 < threads ? std::min(32u, threads - w * 32) : 0, 0, 0};
    std::memset(dynamic_shared.data(), 0xff, dynamic_shared.size() * sizeof(Chunk));
    for (auto& f : fibers)
    {
        f.done = false;
        f.shuffles = 0;
        getcontext(&f.context);
        f.context.uc_stack = {f.stack.get(), 0, StackBytes};
        f.context.uc_link = &scheduler;
        makecontext(&f.context, run_thread, 0);
    }
    for (unsigned left = threads; left > 0;)
    {
        progress = false;
        left = 0;
        for (unsigned t = 0; t < threads; t++)
        {
            if (fibers[t].done) continue;
            threadIdx.x = t;
            swapcontext(&scheduler, &fibers[t].context);
            left += !fibers[t].done;
        }
        if (left > 0 && !progress)
        {
            std::fprintf(stderr, "deadlock in block %u: %u threads wait at barriers that the others never reach\n", blockIdx.x, left);
            std::abort();
        }
    }
}
} // namespace host_block

inline void __syncthreads() { host_block::wait(host_block::block); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask, int = 32)
{
    using namespace host_block;
    float* slots = shuffle_slots[fibers[threadIdx.x].shuffles++ % 2];
    slots[threadIdx.x] = v;
    wait(warps[threadIdx.x / 32]);
    return slots[threadIdx.x ^ lane_mask];
}

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); } // CUDA's is within 2 ulp

template <typename T> T* dynamic_shared() { return reinterpret_cast<T*>(host_block::dynamic_shared.data()); }

inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }

// Runs `kernel` (a call of the extern "C" function with its arguments) on a grid of grid_x blocks of `threads` threads
// with `shared_bytes` of dynamic shared memory, as kernel<<<grid_x, threads, shared_bytes>>>.
inline void launch(unsigned grid_x, unsigned threads, const std::function<void()>& kernel, size_t shared_bytes = 0)
{
    gridDim.x = grid_x;
    blockDim.x = threads;
    host_block::kernel = &kernel;
    host_block::fibers.resize(threads);
    for (auto& f : host_block::fibers)
        if (!f.stack) f.stack.reset(new char[host_block::StackBytes]);
    host_block::dynamic_shared.resize((shared_bytes + 15) / 16);
    for (unsigned b = 0; b < grid_x; b++)
    {
        blockIdx.x = b;
        host_block::run(threads);
    }
}

// Round-to-nearest product and sum that no compiler contracts into an fma (adamw.cu). A host build for x86-64 (its
// default target has no FMA instruction) contracts no other product either; NVRTC on a GPU may.
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fadd_rn(float x, float y) { return x + y; }
