// layernorm.cu run on the host (cuda_host.h) against LayerNorm in fp64, launched as LayerNormOp launches it: forward y,
// mean and rstd; backward dx and dweight through the per-block partial sums and their column sum; fp32 and bf16, odd
// widths, idle warps and lanes, a width at the 96 KiB shared-memory limit, and more rows than backward has warps (each
// warp takes a second row; fp32 only, the loop does not depend on the type). Prints a line per output and exits with the number of misses.
#include "cuda_host.h"
#include "layernorm.cu"
#include "host_check.h"

constexpr unsigned Threads = 256, Warps = Threads / 32; // LayerNormOp's
constexpr unsigned MaxPartials = 1024;
constexpr float Eps = 1e-5f;

static void forward(const float* x, const float* w, float* y, float* mean, float* rstd, int N, int d) { layernorm_forward_f32(x, w, y, mean, rstd, N, d, Eps); }
static void forward(const bf16_bits* x, const bf16_bits* w, bf16_bits* y, float* mean, float* rstd, int N, int d) { layernorm_forward_bf16(x, w, y, mean, rstd, N, d, Eps); }
static void backward(const float* dy, const float* x, const float* w, const float* mean, const float* rstd, float* dx, float* partial, int N, int d)
{
    layernorm_backward_f32(dy, x, w, mean, rstd, dx, partial, N, d);
}
static void backward(const bf16_bits* dy, const bf16_bits* x, const bf16_bits* w, const float* mean, const float* rstd, bf16_bits* dx, float* partial, int N, int d)
{
    layernorm_backward_bf16(dy, x, w, mean, rstd, dx, partial, N, d);
}
static void weight_grad(const float* partial, float* dweight, int blocks, int d) { layernorm_weight_grad_f32(partial, dweight, blocks, d); }
static void weight_grad(const float* partial, bf16_bits* dweight, int blocks, int d) { layernorm_weight_grad_bf16(partial, dweight, blocks, d); }

struct Reference
{
    std::vector<double> y, mean, rstd, dx, dweight;
};

// LayerNorm over the last dim (biased variance) with a weight, and its gradients, in fp64 from the same inputs.
template <typename T> Reference layernorm(const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& dy, int N, int d)
{
    Reference r{std::vector<double>((size_t)N * d), std::vector<double>(N), std::vector<double>(N), std::vector<double>((size_t)N * d), std::vector<double>(d)};
    for (int i = 0; i < N; i++)
    {
        auto at = [&](const std::vector<T>& v, int j) { return (double)to_float(v[(size_t)i * d + j]); };
        double sum = 0, squares = 0, g_sum = 0, g_xhat_sum = 0;
        for (int j = 0; j < d; j++) sum += at(x, j);
        double mean = sum / d;
        for (int j = 0; j < d; j++) squares += (at(x, j) - mean) * (at(x, j) - mean);
        double rstd = 1 / std::sqrt(squares / d + Eps);
        for (int j = 0; j < d; j++)
        {
            double xhat = (at(x, j) - mean) * rstd, g = at(dy, j) * to_float(w[j]);
            r.y[(size_t)i * d + j] = xhat * to_float(w[j]);
            r.dweight[j] += at(dy, j) * xhat;
            g_sum += g;
            g_xhat_sum += g * xhat;
        }
        for (int j = 0; j < d; j++)
        {
            double xhat = (at(x, j) - mean) * rstd;
            r.dx[(size_t)i * d + j] = rstd * (at(dy, j) * to_float(w[j]) - g_sum / d - xhat * g_xhat_sum / d);
        }
        r.mean[i] = mean;
        r.rstd[i] = rstd;
    }
    return r;
}

template <typename T> void run(const char* type, int N, int d)
{
    std::mt19937 random(N * 1000 + d);
    auto x = draw<T>(random, (size_t)N * d, 2, 0.5f), w = draw<T>(random, d, 0.1f, 1), dy = draw<T>(random, (size_t)N * d, 1, 0);
    std::vector<T> y(x.size()), dx(x.size()), dweight(d);
    std::vector<float> mean(N), rstd(N);
    launch((N + Warps - 1) / Warps, Threads, [&] { forward(x.data(), w.data(), y.data(), mean.data(), rstd.data(), N, d); });

    unsigned blocks = std::min((N + Warps - 1) / Warps, MaxPartials);
    std::vector<float> partial((size_t)blocks * d);
    launch(blocks, Threads, [&] { backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), partial.data(), N, d); }, Warps * d * sizeof(float));
    launch((d + 31) / 32, Threads, [&] { weight_grad(partial.data(), dweight.data(), (int)blocks, d); });

    // LayerNormOp.Checks' tolerances: fp32 4 ulp per term of the reduction (d, or N + d for dweight); bf16 one bf16
    // ulp of the largest value. mean and rstd are fp32 from the same values in either type: 4 ulp per term.
    auto fp32 = [](long length) { return 4 * length * std::pow(2.0, -24); };
    bool bf16 = sizeof(T) == 2;
    char what[64];
    std::snprintf(what, sizeof what, "%s N %d x d %d", type, N, d);
    auto expected = layernorm(x, w, dy, N, d);
    compare(what, "y", expected.y, y, bf16 ? 1.0 / 128 : fp32(d));
    compare(what, "mean", expected.mean, mean, fp32(d));
    compare(what, "rstd", expected.rstd, rstd, fp32(d));
    compare(what, "dx", expected.dx, dx, bf16 ? 1.0 / 128 : fp32(d));
    compare(what, "dweight", expected.dweight, dweight, bf16 ? 1.0 / 128 : fp32(N + d));
}

int main()
{
    run<float>("fp32", 7, 100);     // one block, one warp idle
    run<float>("fp32", 19, 37);     // three blocks, the last with 5 idle warps; lanes 5..31 idle in a row's second pass
    run<float>("fp32", 9, 3072);    // the widest: 96 KiB of partial sums in shared memory, 96 columns a lane
    run<float>("fp32", 8200, 5);    // backward's 1024 blocks: warps 0..7 of block 0 take a second row
    run<bf16_bits>("bf16", 7, 100);
    run<bf16_bits>("bf16", 19, 37);
    run<bf16_bits>("bf16", 9, 3072);
    std::printf("%d misses\n", misses);
    return misses;
}
