// SwiGLU's elementwise part: y = silu(a) * b over the MLP's hidden activations a = W x, b = V x [N, hidden] (fp32 or
// bf16), and its backward da = g b silu'(a), db = g silu(a); fp32 arithmetic, one rounding to the element type.
#include "common.cuh"

// 16 bytes of elements (4 fp32 or 8 bf16): one load or store instruction per thread.
template <typename T> struct alignas(16) Pack { T v[16 / sizeof(T)]; };

__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// y = silu(a) * b, silu as libtorch computes it: a / (1 + exp(-a)).
__device__ __forceinline__ float swiglu(float a, float b) { return a / (1.0f + expf(-a)) * b; }

// da = g b s (1 + a (1 - s)) with s = sigmoid(a) (libtorch's silu backward of dy = g b); db = g silu(a).
__device__ __forceinline__ void swiglu_grads(float g, float a, float b, float& da, float& db)
{
    float denominator = 1.0f + expf(-a);
    float s = 1.0f / denominator;
    da = g * b * s * (1.0f + a * (1.0f - s));
    db = g * (a / denominator);
}

// Element i of n, one thread after another over the grid (any grid size covers all n): 16-byte packs where every
// pointer is 16-byte aligned (a tensor at the start of its allocation is), then the elements after the last pack.
template <typename T>
__device__ void swiglu_forward(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, long long n)
{
    constexpr int K = 16 / sizeof(T);
    long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x, stride = (long long)gridDim.x * blockDim.x;
    long long packs = aligned16(a) && aligned16(b) && aligned16(y) ? n / K : 0;
    for (long long p = first; p < packs; p += stride)
    {
        Pack<T> pa = ((const Pack<T>*)a)[p], pb = ((const Pack<T>*)b)[p], py;
#pragma unroll
        for (int k = 0; k < K; k++) py.v[k] = from_float<T>(swiglu(to_float(pa.v[k]), to_float(pb.v[k])));
        ((Pack<T>*)y)[p] = py;
    }
    for (long long i = packs * K + first; i < n; i += stride) y[i] = from_float<T>(swiglu(to_float(a[i]), to_float(b[i])));
}

// g, a, b -> da, db [n], element by element as swiglu_forward.
template <typename T>
__device__ void swiglu_backward(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                                T* __restrict__ da, T* __restrict__ db, long long n)
{
    constexpr int K = 16 / sizeof(T);
    long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x, stride = (long long)gridDim.x * blockDim.x;
    bool aligned = aligned16(g) && aligned16(a) && aligned16(b) && aligned16(da) && aligned16(db);
    long long packs = aligned ? n / K : 0;
    for (long long p = first; p < packs; p += stride)
    {
        Pack<T> pg = ((const Pack<T>*)g)[p], pa = ((const Pack<T>*)a)[p], pb = ((const Pack<T>*)b)[p], pda, pdb;
#pragma unroll
        for (int k = 0; k < K; k++)
        {
            float dak, dbk;
            swiglu_grads(to_float(pg.v[k]), to_float(pa.v[k]), to_float(pb.v[k]), dak, dbk);
            pda.v[k] = from_float<T>(dak);
            pdb.v[k] = from_float<T>(dbk);
        }
        ((Pack<T>*)da)[p] = pda;
        ((Pack<T>*)db)[p] = pdb;
    }
    for (long long i = packs * K + first; i < n; i += stride)
    {
        float dai, dbi;
        swiglu_grads(to_float(g[i]), to_float(a[i]), to_float(b[i]), dai, dbi);
        da[i] = from_float<T>(dai);
        db[i] = from_float<T>(dbi);
    }
}

extern "C" __global__ void swiglu_forward_f32(const float* a, const float* b, float* y, long long n) { swiglu_forward(a, b, y, n); }
extern "C" __global__ void swiglu_forward_bf16(const bf16_bits* a, const bf16_bits* b, bf16_bits* y, long long n) { swiglu_forward(a, b, y, n); }

extern "C" __global__ void swiglu_backward_f32(const float* g, const float* a, const float* b, float* da, float* db, long long n)
{
    swiglu_backward(g, a, b, da, db, n);
}
extern "C" __global__ void swiglu_backward_bf16(const bf16_bits* g, const bf16_bits* a, const bf16_bits* b, bf16_bits* da, bf16_bits* db, long long n)
{
    swiglu_backward(g, a, b, da, db, n);
}
