// Shared by every kernel source. NVRTC compiles them with no include path: bf16 is carried as its 16 raw bits (no
// cuda_bf16.h), converted here with the same rounding as libtorch (round to nearest even); sums run in fp32.
#pragma once

typedef unsigned short bf16_bits;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16_bits x) { return __uint_as_float(((unsigned int)x) << 16); }

// float -> float (itself) or bf16 (round to nearest even; a NaN stays a quiet NaN).
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16_bits from_float<bf16_bits>(float x)
{
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_bits)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_bits)(u >> 16);
}

// The sum over a warp's 32 lanes, in every lane.
__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// The sum over the block (blockDim.x a multiple of 32, at most 1024), in every thread; `scratch` holds 32 floats of
// shared memory. Begins and ends with a barrier, so it may be called again with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : __int_as_float(0xff800000); // -inf
    return warp_max(v);
}
