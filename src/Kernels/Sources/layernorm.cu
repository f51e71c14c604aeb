// LayerNorm over the last dim d of N rows, weight only (no bias): forward and backward, one warp per row, fp32 math.
#include "common.cuh" // bf16_bits, to_float, from_float, warp_sum

// x, y [N, d] (T); weight [d] (T); mean, rstd [N] fp32, kept for backward. A block of blockDim.x / 32 warps handles
// as many consecutive rows. Two passes over the row (mean, then the variance around it, as torch's biased variance);
// y = (x - mean) * rstd * weight.
template <typename T>
__device__ void layernorm_forward(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y,
                                  float* __restrict__ mean, float* __restrict__ rstd, int N, int d, float eps)
{
    int lane = threadIdx.x % 32;
    long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return; // the whole warp leaves together: the shuffles below see only full warps
    const T* xr = x + row * d;
    T* yr = y + row * d;

    float sum = 0.0f;
    for (int j = lane; j < d; j += 32) sum += to_float(xr[j]);
    float m = warp_sum(sum) / d;

    float squares = 0.0f;
    for (int j = lane; j < d; j += 32)
    {
        float centred = to_float(xr[j]) - m;
        squares += centred * centred;
    }
    float s = rsqrtf(warp_sum(squares) / d + eps);

    for (int j = lane; j < d; j += 32) yr[j] = from_float<T>((to_float(xr[j]) - m) * s * to_float(weight[j]));
    if (lane == 0)
    {
        mean[row] = m;
        rstd[row] = s;
    }
}

// dy, x, dx [N, d] (T); weight [d] (T); mean, rstd [N] from the forward; partial [gridDim.x, d] fp32: this block's
// sum over its rows of dy * xhat, the weight's gradient before the sum over blocks (layernorm_weight_grad).
// Dynamic shared memory: (blockDim.x / 32) * d floats, one row of partial sums per warp, so every sum runs in a fixed
// order (deterministic, no atomics). Warp w of block b handles rows r = b * warps + w, then r + gridDim.x * warps, ...
// With xhat = (x - mean) * rstd and g = dy * weight:
//   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)).
template <typename T>
__device__ void layernorm_backward(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ weight,
                                   const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                                   float* __restrict__ partial, int N, int d)
{
    extern __shared__ float warp_partial[]; // [warps, d]
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float* own = warp_partial + (long)warp * d;
    for (int j = lane; j < d; j += 32) own[j] = 0.0f;

    for (long row = (long)blockIdx.x * warps + warp; row < N; row += (long)gridDim.x * warps)
    {
        const T* dyr = dy + row * d;
        const T* xr = x + row * d;
        T* dxr = dx + row * d;
        float m = mean[row], s = rstd[row];

        float g_sum = 0.0f, g_xhat_sum = 0.0f;
        for (int j = lane; j < d; j += 32)
        {
            float g = to_float(dyr[j]) * to_float(weight[j]);
            g_sum += g;
            g_xhat_sum += g * ((to_float(xr[j]) - m) * s);
        }
        float g_mean = warp_sum(g_sum) / d;
        float g_xhat_mean = warp_sum(g_xhat_sum) / d;

        for (int j = lane; j < d; j += 32)
        {
            float dyj = to_float(dyr[j]);
            float xhat = (to_float(xr[j]) - m) * s;
            dxr[j] = from_float<T>(s * (dyj * to_float(weight[j]) - g_mean - xhat * g_xhat_mean));
            own[j] += dyj * xhat; // column j belongs to this lane alone
        }
    }

    __syncthreads();
    float* out = partial + (long)blockIdx.x * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
    {
        float sum = 0.0f;
        for (int w = 0; w < warps; w++) sum += warp_partial[(long)w * d + j];
        out[j] = sum;
    }
}

// partial [blocks, d] fp32 -> dweight [d] (T): column sums. A block of 256 threads covers 32 columns: thread
// (group = threadIdx.x / 32, lane) sums the rows group, group + 8, ..., and group 0 adds the 8 sums in order.
template <typename T>
__device__ void layernorm_weight_grad(const float* __restrict__ partial, T* __restrict__ dweight, int blocks, int d)
{
    __shared__ float sums[8][32];
    int lane = threadIdx.x % 32, group = threadIdx.x / 32;
    int j = blockIdx.x * 32 + lane;
    float sum = 0.0f;
    if (j < d)
        for (int b = group; b < blocks; b += 8) sum += partial[(long)b * d + j];
    sums[group][lane] = sum;
    __syncthreads();
    if (group == 0 && j < d)
    {
        float total = 0.0f;
        for (int g = 0; g < 8; g++) total += sums[g][lane];
        dweight[j] = from_float<T>(total);
    }
}

extern "C" __global__ void layernorm_forward_f32(const float* x, const float* weight, float* y, float* mean, float* rstd, int N, int d, float eps)
{
    layernorm_forward(x, weight, y, mean, rstd, N, d, eps);
}

extern "C" __global__ void layernorm_forward_bf16(const bf16_bits* x, const bf16_bits* weight, bf16_bits* y, float* mean, float* rstd, int N, int d, float eps)
{
    layernorm_forward(x, weight, y, mean, rstd, N, d, eps);
}

extern "C" __global__ void layernorm_backward_f32(const float* dy, const float* x, const float* weight, const float* mean,
                                                  const float* rstd, float* dx, float* partial, int N, int d)
{
    layernorm_backward(dy, x, weight, mean, rstd, dx, partial, N, d);
}

extern "C" __global__ void layernorm_backward_bf16(const bf16_bits* dy, const bf16_bits* x, const bf16_bits* weight, const float* mean,
                                                   const float* rstd, bf16_bits* dx, float* partial, int N, int d)
{
    layernorm_backward(dy, x, weight, mean, rstd, dx, partial, N, d);
}

extern "C" __global__ void layernorm_weight_grad_f32(const float* partial, float* dweight, int blocks, int d)
{
    layernorm_weight_grad(partial, dweight, blocks, d);
}

extern "C" __global__ void layernorm_weight_grad_bf16(const float* partial, bf16_bits* dweight, int blocks, int d)
{
    layernorm_weight_grad(partial, dweight, blocks, d);
}
