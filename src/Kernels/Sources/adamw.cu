// AdamW over one flat fp32 run in one pass: reads p, g, m, v [n] and writes p, m, v, with the arithmetic of
// FlatAdamW.Update (PyTorch's single-tensor AdamW as libtorch's CUDA ops compute it) in the same order and roundings.

// lr_scale [2] in device memory: the learning rate and the gradient's scale (the clip coefficient; 1: unclipped), so
// that neither is a launch argument that changes from step to step. The step's other scalars come from the host,
// computed as the reference computes them (in double, rounded to fp32 once): beta1, 1 - beta1, beta2, 1 - beta2,
// 1 / sqrt(1 - beta2^t) (libtorch divides a CUDA tensor by a scalar as a product with the scalar's fp32 reciprocal),
// eps and 1 - beta1^t. Each libtorch op rounds its result; its `a + alpha * b` compiles to one fma, as here.
extern "C" __global__ void adamw_step_f32(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m,
                                          float* __restrict__ v, const float* __restrict__ lr_scale, long long n,
                                          float weight_decay, float beta1, float one_minus_beta1, float beta2,
                                          float one_minus_beta2, float inv_sqrt_bias2, float eps, float bias1)
{
    float lr = lr_scale[0], scale = lr_scale[1];
    float decay = 1.0f - lr * weight_decay; // 1 without weight decay: p * 1 is p, as the reference's skipped product
    float step_size = -lr / bias1;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    {
        float g = grad[i] * scale;
        float mi = fmaf(one_minus_beta1, g, m[i] * beta1);                          // m.mul_(beta1).add_(g, alpha: 1 - beta1)
        float vi = fmaf(one_minus_beta2, g * g, v[i] * beta2);                      // v.mul_(beta2).addcmul_(g, g, value: 1 - beta2)
        float denominator = __fadd_rn(__fmul_rn(sqrtf(vi), inv_sqrt_bias2), eps); // (v.sqrt() / sqrt(bias2)).add_(eps), not fused
        p[i] = fmaf(step_size, mi / denominator, p[i] * decay);                    // p.mul_(decay).addcdiv_(m, denominator, value: -lr / bias1)
        m[i] = mi;
        v[i] = vi;
    }
}
