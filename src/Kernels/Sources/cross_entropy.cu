// The cross-entropy of the fused linear cross-entropy, one block per token's row of a chunk's fp32 logits (as llm.c's
// fused classifier): the method's transform, log Z, the loss terms, the logit statistics and dL/dlogits over the logits.
#include "common.cuh" // block_sum, block_max

// The rows of the output [ROW_OUTPUTS, n]: per token, in this order.
enum RowOutput
{
    CROSS_ENTROPY, // log Z - x_target, nats
    PENALTY,       // z_loss * (log Z)^2 (0 without z-loss)
    LOG_Z,         // log sum_j exp(x_j)
    MEAN,          // (1/V) sum_j x_j
    STD,           // sqrt((1/V) sum_j (x_j - mean)^2), two passes
    MAX_ABS,       // max_j |x_j|
    R_LOG,         // max_j |x_j - mean| / max_j |x_j|
    ROW_OUTPUTS
};

__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000); }

// Soft-capping's tanh(l / cap) (cap > 0), whose square the gradient needs; x = y * cap.
__device__ __forceinline__ float capped_tanh(float l, float cap) { return tanhf(l / cap); }

// The logit under the method: cap * tanh(l / cap) with soft-capping (cap > 0), else l itself.
__device__ __forceinline__ float transform(float l, float cap) { return cap > 0.0f ? capped_tanh(l, cap) * cap : l; }

// logits [rows, vocab] fp32 (the transform is applied here), targets [rows] int64 in [0, vocab) (another id gives NaN
// terms), out [ROW_OUTPUTS, rows] fp32. cap: soft-capping's c, 0 for none; z_loss: lambda, 0 for none; inv_tokens:
// 1 / N, the loss being the mean over all N tokens of the step. gradient != 0: each logit l is overwritten by
// d(loss / N)/dl; 0 leaves the logits as they are. blockDim.x a multiple of 32, at most 1024; grid (rows, 1).
// __launch_bounds__(1024): at most 64 registers a thread, so that a block of 1024 threads fits a multiprocessor's
// 65536 (the only kernel launched with more than 256 threads, which fit at any register count).
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_f32(float* logits, const long long* targets, float* out, int rows, int vocab,
                                             float cap, float z_loss, float inv_tokens, int gradient)
{
    __shared__ float scratch[32];
    int row = blockIdx.x;
    float* l = logits + (long long)row * vocab;
    long long target = targets[row];
    bool valid = target >= 0 && target < vocab;
    // Read before any thread writes a gradient (the reductions below are barriers).
    float x_target = valid ? transform(l[target], cap) : __int_as_float(0x7fc00000);

    // Pass 1: a running max m and sum s of exp(x - m) (rescaled when m grows: one exp per logit), the sum and the min.
    float m = negative_infinity(), s = 0.0f, sum = 0.0f, low = -negative_infinity();
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
    {
        float x = transform(l[j], cap);
        if (x > m)
        {
            s = s * expf(m - x) + 1.0f;
            m = x;
        }
        else if (x != negative_infinity()) s += expf(x - m); // a NaN gets here and propagates
        sum += x;
        low = fminf(low, x);
    }
    float row_max = block_max(m, scratch);
    float log_z = row_max + logf(block_sum(m == negative_infinity() ? 0.0f : s * expf(m - row_max), scratch));
    float mean = block_sum(sum, scratch) / vocab;
    low = -block_max(-low, scratch);

    // Pass 2: the squared deviations, and the gradient: d/dx of (log Z - x_t + z_loss (log Z)^2) / N is
    // (1 + 2 z_loss log Z) softmax(x) / N - [j = t] / N, times dx/dl = (1 - tanh^2) with soft-capping.
    float g = inv_tokens, g_log_z = g + g * z_loss * (2.0f * log_z);
    float squares = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
    {
        float raw = l[j];
        float y = cap > 0.0f ? capped_tanh(raw, cap) : raw;
        float x = cap > 0.0f ? y * cap : raw;
        float deviation = x - mean;
        squares += deviation * deviation;
        if (gradient)
        {
            float dx = g_log_z * expf(x - log_z) - (j == target ? g : 0.0f);
            l[j] = cap > 0.0f ? dx * cap * (1.0f - y * y) / cap : dx;
        }
    }
    float std_dev = sqrtf(block_sum(squares, scratch) / vocab);

    if (threadIdx.x == 0)
    {
        float largest = fmaxf(row_max, -low);
        out[CROSS_ENTROPY * rows + row] = log_z - x_target;
        out[PENALTY * rows + row] = z_loss * (log_z * log_z);
        out[LOG_Z * rows + row] = log_z;
        out[MEAN * rows + row] = mean;
        out[STD * rows + row] = std_dev;
        out[MAX_ABS * rows + row] = largest;
        out[R_LOG * rows + row] = fmaxf(row_max - mean, mean - low) / fmaxf(largest, 1e-30f);
    }
}
