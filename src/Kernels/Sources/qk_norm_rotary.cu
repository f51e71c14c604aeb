// qk-LayerNorm per head fused with rotary positions, forward and backward: one warp per row of hs (one head of one
// token), read straight out of qkv [B, T, 3, nh, hs], written as [B, nh, T, hs] fp32; statistics in fp32.
#include "common.cuh" // bf16_bits, to_float, from_float, warp_sum

constexpr int QK_WARPS = 8;          // rows per block: blocks of 256 threads, one warp per row
constexpr int QK_PER_LANE = 8;       // hs <= 256: each lane holds elements lane, lane + 32, ... of its row in registers
constexpr float QK_EPS = 1e-5f;      // LayerNorm's eps

// Row r = (b nh + h) T + t of the output [B, nh, T, hs]: where its hs elements start in qkv [B, T, 3, nh, hs].
__device__ __forceinline__ long long qk_row_start(int r, int seq, int heads, int hs, int which)
{
    long long t = r % seq, bh = r / seq, h = bh % heads, b = bh / heads;
    return (((b * seq + t) * 3 + which) * heads + h) * hs;
}

// out [rows, hs] fp32 with rows = B nh T (the order of [B, nh, T, hs]); mean, rstd [rows]; qkv [B, T, 3, nh, hs];
// weight [hs]; cos_table, sin_table [T_max, hs/2] (sin signed per pair: -sin, +sin). o = (x - mean) rstd weight, then
// the first hs/2 dims turn in pairs: y_i = o_i cos_i + o_{i^1} sin_i; hs/2 even, so a pair never straddles hs/2 and
// lane i's partner is lane i^1 of the same warp. The loops stop after the row's last element (at the same k in every
// lane, so that the shuffles see the whole warp).
template <typename T>
__device__ void qk_norm_rotary_forward(float* out, float* mean, float* rstd, const T* qkv, const float* weight,
    const float* cos_table, const float* sin_table, int rows, int seq, int heads, int hs, int which)
{
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = blockIdx.x * QK_WARPS + warp;
    if (r >= rows) return; // the whole warp: r is the same in all its lanes
    const T* x = qkv + qk_row_start(r, seq, heads, hs, which);
    int half = hs / 2;
    float v[QK_PER_LANE];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < QK_PER_LANE; k++)
    {
        if (32 * k >= hs) break;
        int i = lane + 32 * k;
        v[k] = i < hs ? to_float(x[i]) : 0.0f;
        sum += v[k];
    }
    float m = warp_sum(sum) / hs;
    float squares = 0.0f;
#pragma unroll
    for (int k = 0; k < QK_PER_LANE; k++)
    {
        if (32 * k >= hs) break;
        float d = lane + 32 * k < hs ? v[k] - m : 0.0f;
        squares += d * d;
    }
    float s = rsqrtf(warp_sum(squares) / hs + QK_EPS);
    const float* c = cos_table + (long long)(r % seq) * half;
    const float* sn = sin_table + (long long)(r % seq) * half;
    float* y = out + (long long)r * hs;
#pragma unroll
    for (int k = 0; k < QK_PER_LANE; k++)
    {
        if (32 * k >= hs) break;
        int i = lane + 32 * k;
        float o = i < hs ? (v[k] - m) * s * weight[i] : 0.0f;
        float partner = __shfl_xor_sync(0xffffffffu, o, 1); // every lane takes part, in and out of the row
        if (i < half) o = o * c[i] + partner * sn[i];
        if (i < hs) y[i] = o;
    }
    if (lane == 0)
    {
        mean[r] = m;
        rstd[r] = s;
    }
}

// dqkv [B, T, 3, nh, hs]: slice `which` written (the caller zeroes the others); dweight_partial [gridDim.x, hs]: each
// block's sum over its rows (summed by the caller, in a fixed order, so the result does not vary from run to run);
// dout [rows, hs] fp32, the gradient of out. The inverse rotation first: g_i = dy_i cos_i + dy_{i^1} sin_{i^1} for
// i < hs/2, else dy_i (the gradient of o); then LayerNorm's: xhat = (x - mean) rstd, dweight += g xhat,
// dx = rstd (g w - mean(g w) - xhat mean(g w xhat)).
template <typename T>
__device__ void qk_norm_rotary_backward(T* dqkv, float* dweight_partial, const float* dout, const T* qkv,
    const float* weight, const float* mean, const float* rstd, const float* cos_table, const float* sin_table, int rows,
    int seq, int heads, int hs, int which)
{
    __shared__ float block_dweight[QK_WARPS * QK_PER_LANE * 32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int half = hs / 2;
    float dw[QK_PER_LANE];
#pragma unroll
    for (int k = 0; k < QK_PER_LANE; k++) dw[k] = 0.0f;
    for (int r = blockIdx.x * QK_WARPS + warp; r < rows; r += gridDim.x * QK_WARPS)
    {
        long long start = qk_row_start(r, seq, heads, hs, which);
        const float* dy = dout + (long long)r * hs;
        const float* c = cos_table + (long long)(r % seq) * half;
        const float* sn = sin_table + (long long)(r % seq) * half;
        float m = mean[r], s = rstd[r];
        float xhat[QK_PER_LANE], gw[QK_PER_LANE];
        float sum_gw = 0.0f, sum_gw_xhat = 0.0f;
#pragma unroll
        for (int k = 0; k < QK_PER_LANE; k++)
        {
            if (32 * k >= hs) break;
            int i = lane + 32 * k;
            float g = i < hs ? dy[i] : 0.0f;
            float partner = __shfl_xor_sync(0xffffffffu, g, 1);
            if (i < half) g = g * c[i] + partner * sn[i ^ 1];
            xhat[k] = i < hs ? (to_float(qkv[start + i]) - m) * s : 0.0f;
            gw[k] = i < hs ? g * weight[i] : 0.0f;
            dw[k] += g * xhat[k];
            sum_gw += gw[k];
            sum_gw_xhat += gw[k] * xhat[k];
        }
        float mean_gw = warp_sum(sum_gw) / hs, mean_gw_xhat = warp_sum(sum_gw_xhat) / hs;
#pragma unroll
        for (int k = 0; k < QK_PER_LANE; k++)
        {
            if (32 * k >= hs) break;
            int i = lane + 32 * k;
            if (i < hs) dqkv[start + i] = from_float<T>(s * (gw[k] - mean_gw - xhat[k] * mean_gw_xhat));
        }
    }
#pragma unroll
    for (int k = 0; k < QK_PER_LANE; k++) block_dweight[warp * QK_PER_LANE * 32 + lane + 32 * k] = dw[k];
    __syncthreads();
    for (int i = threadIdx.x; i < hs; i += blockDim.x)
    {
        float total = 0.0f;
        for (int w = 0; w < QK_WARPS; w++) total += block_dweight[w * QK_PER_LANE * 32 + i];
        dweight_partial[(long long)blockIdx.x * hs + i] = total;
    }
}

extern "C" __global__ void qk_norm_rotary_forward_f32(float* out, float* mean, float* rstd, const float* qkv,
    const float* weight, const float* cos_table, const float* sin_table, int rows, int seq, int heads, int hs, int which)
{
    qk_norm_rotary_forward(out, mean, rstd, qkv, weight, cos_table, sin_table, rows, seq, heads, hs, which);
}

extern "C" __global__ void qk_norm_rotary_forward_bf16(float* out, float* mean, float* rstd, const bf16_bits* qkv,
    const float* weight, const float* cos_table, const float* sin_table, int rows, int seq, int heads, int hs, int which)
{
    qk_norm_rotary_forward(out, mean, rstd, qkv, weight, cos_table, sin_table, rows, seq, heads, hs, which);
}

extern "C" __global__ void qk_norm_rotary_backward_f32(float* dqkv, float* dweight_partial, const float* dout,
    const float* qkv, const float* weight, const float* mean, const float* rstd, const float* cos_table,
    const float* sin_table, int rows, int seq, int heads, int hs, int which)
{
    qk_norm_rotary_backward(dqkv, dweight_partial, dout, qkv, weight, mean, rstd, cos_table, sin_table, rows, seq, heads,
        hs, which);
}

extern "C" __global__ void qk_norm_rotary_backward_bf16(bf16_bits* dqkv, float* dweight_partial, const float* dout,
    const bf16_bits* qkv, const float* weight, const float* mean, const float* rstd, const float* cos_table,
    const float* sin_table, int rows, int seq, int heads, int hs, int which)
{
    qk_norm_rotary_backward(dqkv, dweight_partial, dout, qkv, weight, mean, rstd, cos_table, sin_table, rows, seq, heads,
        hs, which);
}
