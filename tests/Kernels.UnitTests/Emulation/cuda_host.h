// The CUDA built-ins that the kernel sources use, on the host, so that a source runs on a machine without a GPU against
// an fp64 reference: one std::thread per CUDA thread of a block, the blocks one after another, __syncthreads as a
// barrier of the block's threads, and a warp shuffle as a write, a barrier and a read (so every thread of the block
// must call each shuffle, as the block reductions of common.cuh do). Math functions are the host's (<math.h>).
#pragma once
#include <condition_variable>
#include <cstring>
#include <functional>
#include <math.h>
#include <mutex>
#include <thread>
#include <vector>

struct Dim3
{
    unsigned x = 0, y = 0, z = 0;
};
thread_local Dim3 threadIdx, blockIdx;
Dim3 blockDim, gridDim;

// All threads of the running block wait until each has arrived.
class BlockBarrier
{
    std::mutex mutex;
    std::condition_variable all_arrived;
    unsigned arrived = 0, generation = 0;

public:
    void wait()
    {
        std::unique_lock<std::mutex> lock(mutex);
        unsigned mine = generation;
        if (++arrived == blockDim.x)
        {
            arrived = 0;
            generation++;
            all_arrived.notify_all();
        }
        else all_arrived.wait(lock, [&] { return generation != mine; });
    }
};
BlockBarrier block_barrier;
float shuffle_slots[1024];

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() { block_barrier.wait(); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask, int = 32)
{
    shuffle_slots[threadIdx.x] = v;
    block_barrier.wait();
    float other = shuffle_slots[threadIdx.x ^ lane_mask];
    block_barrier.wait();
    return other;
}

inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }

// Runs `kernel` (a call of the extern "C" function with its arguments) on a grid of grid_x blocks of `threads` threads.
inline void launch(unsigned grid_x, unsigned threads, const std::function<void()>& kernel)
{
    gridDim.x = grid_x;
    blockDim.x = threads;
    for (unsigned b = 0; b < grid_x; b++)
    {
        std::vector<std::thread> block;
        for (unsigned t = 0; t < threads; t++)
            block.emplace_back([&, b, t] { blockIdx.x = b; threadIdx.x = t; kernel(); });
        for (auto& thread : block) thread.join();
    }
}

// Round-to-nearest product and sum that no compiler contracts into an fma (adamw.cu). A host build for x86-64 (its
// default target has no FMA instruction) contracts no other product either; NVRTC on a GPU may.
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fadd_rn(float x, float y) { return x + y; }
