// adamw.cu run on the host (cuda_host.h) against AdamWOp.Reference emulated op for op in fp32 as libtorch's CUDA ops
// round: p, m and v after one step at t = 10 on an odd length, with and without weight decay, gradient scales 0.37 and
// 1, each launched as AdamWOp launches it, and once on a single block so that every thread loops. Prints a line per
// comparison and exits with the number of misses.
#include "cuda_host.h"
#include "adamw.cu"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

static int misses = 0;

// AdamWOp's self-check hyperparameters.
static const long long Step = 10;
static const double Lr = 3e-3, Beta1 = 0.9, Beta2 = 0.95, Eps = 1e-8;

struct Case
{
    const char* name;
    long long n;
    double weight_decay, scale;
    bool one_block;
};

struct State
{
    std::vector<float> p, g, m, v;
};

// AdamWOp.Reference on a gradient already scaled (g.mul_(scale): the clip), one libtorch op a statement: a double
// scalar enters an fp32 op as fp32; `a + alpha * b`, addcmul and addcdiv are one fma; a division by a scalar is a
// product with its fp32 reciprocal; every op rounds its result to fp32.
static void reference(State& s, const Case& c)
{
    double bias1 = 1 - std::pow(Beta1, Step), bias2 = 1 - std::pow(Beta2, Step);
    float decay = (float)(1 - Lr * c.weight_decay), step_size = (float)(-Lr / bias1), inverse_sqrt_bias2 = 1.0f / (float)std::sqrt(bias2);
    for (size_t i = 0; i < s.p.size(); i++)
    {
        float g = s.g[i] * (float)c.scale;                                  // g.mul_(scale)
        if (c.weight_decay != 0) s.p[i] = s.p[i] * decay;                   // data.mul_(1 - lr wd)
        float m_decayed = s.m[i] * (float)Beta1;                            // expAvg.mul_(beta1)
        s.m[i] = fmaf((float)(1 - Beta1), g, m_decayed);                    // .add_(g, alpha: 1 - beta1)
        float v_decayed = s.v[i] * (float)Beta2, square = g * g;            // expAvgSq.mul_(beta2)
        s.v[i] = fmaf((float)(1 - Beta2), square, v_decayed);               // .addcmul_(g, g, value: 1 - beta2)
        float root = sqrtf(s.v[i]);                                         // expAvgSq.sqrt()
        float scaled = root * inverse_sqrt_bias2;                           // / Math.Sqrt(bias2)
        float denominator = scaled + (float)Eps;                            // .add_(eps)
        float ratio = s.m[i] / denominator;
        s.p[i] = fmaf(step_size, ratio, s.p[i]);                            // data.addcdiv_(m, denominator, value: -lr / bias1)
    }
}

// The elements that differ in their bits, and the largest |kernel - reference| relative to the reference's largest
// magnitude: AdamWOp's tolerance of 2^-21 for p (whose 1 - lr wd and -lr / bias1 the kernel forms from an fp32 lr);
// m and v take the same ops on the same fp32 values, so their bits must match.
static void compare(const Case& c, const char* what, const std::vector<float>& expected, const std::vector<float>& actual, bool exact)
{
    double largest = 0, error = 0;
    long long differ = 0;
    for (size_t i = 0; i < expected.size(); i++)
    {
        largest = std::max(largest, std::fabs((double)expected[i]));
        error = std::max(error, std::fabs((double)actual[i] - expected[i]));
        differ += std::memcmp(&actual[i], &expected[i], 4) != 0;
    }
    double relative = error / std::max(largest, 1e-30);
    std::printf("%-34s %s: %lld of %zu differ, error %.3g of its scale %.3g\n", c.name, what, differ, expected.size(), relative, largest);
    if (exact ? differ != 0 : !(relative <= 1.0 / (1 << 21))) { misses++; std::printf("  MISS %s %s\n", c.name, what); }
}

static void run(const Case& c)
{
    std::mt19937 random((unsigned)c.n);
    std::normal_distribution<float> normal;
    State given;
    for (long long i = 0; i < c.n; i++)
    {
        given.p.push_back(0.02f * normal(random));
        given.g.push_back(1e-3f * normal(random));
        given.m.push_back(1e-3f * normal(random));
        float x = normal(random);
        given.v.push_back(1e-6f * x * x);
    }
    State kernel = given, expected = given;
    reference(expected, c);

    // AdamWOp.Fused: Elementwise.Blocks(n) of 256 threads; the step's scalars from the host, lr and scale in memory.
    double bias1 = 1 - std::pow(Beta1, Step), bias2 = 1 - std::pow(Beta2, Step);
    float lr_scale[2] = {(float)Lr, (float)c.scale}, inverse_sqrt_bias2 = 1.0f / (float)std::sqrt(bias2);
    unsigned grid = c.one_block ? 1 : (unsigned)std::clamp((c.n + 255) / 256, 1LL, 1LL << 16);
    launch(grid, 256, [&] {
        adamw_step_f32(kernel.p.data(), kernel.g.data(), kernel.m.data(), kernel.v.data(), lr_scale, c.n, (float)c.weight_decay,
                       (float)Beta1, (float)(1 - Beta1), (float)Beta2, (float)(1 - Beta2), inverse_sqrt_bias2, (float)Eps, (float)bias1);
    });

    std::printf("%s: %lld elements, %u blocks of 256\n", c.name, c.n, grid);
    compare(c, "p", expected.p, kernel.p, false);
    compare(c, "m", expected.m, kernel.m, true);
    compare(c, "v", expected.v, kernel.v, true);
    if (kernel.g != given.g) { misses++; std::printf("  MISS %s: the gradient changed\n", c.name); }
}

int main()
{
    const Case cases[] = {
        {"odd 1001, decay 0.1, scale 0.37", 1001, 0.1, 0.37, false},
        {"odd 1001, no decay", 1001, 0, 1, false},
        {"odd 1001, decay 0.1", 1001, 0.1, 1, false},
        {"odd 1001, decay 0.1, scale 0.37, one block", 1001, 0.1, 0.37, true},
    };
    for (const auto& c : cases) run(c);
    std::printf("%d misses\n", misses);
    return misses;
}
