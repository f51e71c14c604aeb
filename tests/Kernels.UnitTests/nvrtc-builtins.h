// What NVRTC provides to a CUDA source without any include, declared for clang's CUDA front end, so that the kernel
// sources are type-checked on machines without NVRTC (KernelSourceTests: clang -fsyntax-only, device side only). A
// source that uses anything not declared here would fail under NVRTC too, unless NVRTC has it built in: add it here
// only when NVRTC's documentation lists it among its built-ins.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __restrict__ __restrict
#include "__clang_cuda_builtin_vars.h" // threadIdx, blockIdx, blockDim, gridDim, warpSize

__device__ void __syncthreads();
__device__ void __syncwarp(unsigned mask = 0xffffffffu);
__device__ float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width = 32);
__device__ float __shfl_sync(unsigned mask, float v, int lane, int width = 32);
__device__ float __uint_as_float(unsigned int x);
__device__ unsigned int __float_as_uint(float x);
__device__ float __int_as_float(int x);
__device__ int __float_as_int(float x);
__device__ float atomicAdd(float* address, float v);
__device__ float expf(float x);
__device__ float logf(float x);
__device__ float log1pf(float x);
__device__ float sqrtf(float x);
__device__ float rsqrtf(float x);
__device__ float tanhf(float x);
__device__ float fabsf(float x);
__device__ float fmaxf(float x, float y);
__device__ float fminf(float x, float y);
__device__ float powf(float x, float y);
__device__ float sinf(float x);
__device__ float cosf(float x);
__device__ float fmaf(float x, float y, float z);
__device__ float __fdividef(float x, float y);
__device__ float __fmul_rn(float x, float y);
__device__ float __fadd_rn(float x, float y);
__device__ double sqrt(double x);
__device__ double pow(double x, double y);
