// qk_norm_rotary.cu run on the host (cuda_host.h) against qk-LayerNorm + rotary in fp64, launched as QkNormRotaryOp
// launches it: forward out, mean and rstd of the q and k slices of qkv [B, T, 3, nh, hs]; backward dqkv (zero outside
// the slice) and dweight (the blocks' partial sums, summed as the op does); fp32 and bf16 qkv; rows shorter than a
// warp (hs 8, 20) and longer than two (hs 72), idle warps, and more rows than backward has warps (a warp takes a
// second row). Prints a line per output and exits with the number of misses.
#include "cuda_host.h"
#include "qk_norm_rotary.cu"
#include "host_check.h"

constexpr unsigned Warps = 8, Threads = Warps * 32; // QkNormRotaryOp's
constexpr unsigned MaxBackwardBlocks = 1024;

static void forward(float* out, float* mean, float* rstd, const float* qkv, const float* w, const float* cos, const float* sin, int rows, int T, int nh, int hs, int which)
{
    qk_norm_rotary_forward_f32(out, mean, rstd, qkv, w, cos, sin, rows, T, nh, hs, which);
}
static void forward(float* out, float* mean, float* rstd, const bf16_bits* qkv, const float* w, const float* cos, const float* sin, int rows, int T, int nh, int hs, int which)
{
    qk_norm_rotary_forward_bf16(out, mean, rstd, qkv, w, cos, sin, rows, T, nh, hs, which);
}
static void backward(float* dqkv, float* partial, const float* dout, const float* qkv, const float* w, const float* mean, const float* rstd, const float* cos, const float* sin, int rows, int T, int nh, int hs, int which)
{
    qk_norm_rotary_backward_f32(dqkv, partial, dout, qkv, w, mean, rstd, cos, sin, rows, T, nh, hs, which);
}
static void backward(bf16_bits* dqkv, float* partial, const float* dout, const bf16_bits* qkv, const float* w, const float* mean, const float* rstd, const float* cos, const float* sin, int rows, int T, int nh, int hs, int which)
{
    qk_norm_rotary_backward_bf16(dqkv, partial, dout, qkv, w, mean, rstd, cos, sin, rows, T, nh, hs, which);
}

struct Reference
{
    std::vector<double> out, mean, rstd, dqkv, dweight;
};

// Row (b, h, t) of slice `which`: LayerNorm over hs (eps 1e-5) with weight, o; then y_i = o_i cos_i + o_{i^1} sin_i
// for i < hs/2 (QkNormRotaryOp.Rotate: x cos + swap(x) sin, tables [T_max, hs/2] at row t), y_i = o_i beyond.
// Backward: g_i = dy_i cos_i + dy_{i^1} sin_{i^1} below hs/2 (dy_i beyond), then LayerNorm's gradients of g.
template <typename T> Reference qk_norm_rotary(const std::vector<T>& qkv, const std::vector<float>& w, const std::vector<float>& cos,
    const std::vector<float>& sin, const std::vector<float>& dout, int B, int T_, int nh, int hs, int which)
{
    int half = hs / 2, rows = B * nh * T_;
    Reference r{std::vector<double>((size_t)rows * hs), std::vector<double>(rows), std::vector<double>(rows), std::vector<double>(qkv.size()), std::vector<double>(hs)};
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++)
            for (int t = 0; t < T_; t++)
            {
                size_t row = ((size_t)b * nh + h) * T_ + t, start = ((((size_t)b * T_ + t) * 3 + which) * nh + h) * hs;
                const float *c = &cos[(size_t)t * half], *s = &sin[(size_t)t * half];
                const float* dy = &dout[row * hs];
                std::vector<double> x(hs), o(hs), g(hs);
                double sum = 0, squares = 0, gw_sum = 0, gw_xhat_sum = 0;
                for (int i = 0; i < hs; i++) sum += x[i] = to_float(qkv[start + i]);
                double mean = sum / hs;
                for (int i = 0; i < hs; i++) squares += (x[i] - mean) * (x[i] - mean);
                double rstd = 1 / std::sqrt(squares / hs + 1e-5);
                for (int i = 0; i < hs; i++) o[i] = (x[i] - mean) * rstd * w[i];
                for (int i = 0; i < hs; i++)
                {
                    r.out[row * hs + i] = i < half ? o[i] * c[i] + o[i ^ 1] * s[i] : o[i];
                    g[i] = i < half ? dy[i] * (double)c[i] + dy[i ^ 1] * (double)s[i ^ 1] : dy[i];
                    double xhat = (x[i] - mean) * rstd;
                    r.dweight[i] += g[i] * xhat;
                    gw_sum += g[i] * w[i];
                    gw_xhat_sum += g[i] * w[i] * xhat;
                }
                for (int i = 0; i < hs; i++)
                    r.dqkv[start + i] = rstd * (g[i] * w[i] - gw_sum / hs - (x[i] - mean) * rstd * gw_xhat_sum / hs);
                r.mean[row] = mean;
                r.rstd[row] = rstd;
            }
    return r;
}

template <typename T> void run(const char* type, int B, int T_, int nh, int hs, int which)
{
    std::mt19937 random(((B * 1000 + T_) * 100 + nh) * 1000 + hs * 3 + which);
    int rows = B * nh * T_, half = hs / 2;
    auto qkv = draw<T>(random, (size_t)B * T_ * 3 * nh * hs, 1, 0.5f);   // [B, T, 3, nh, hs], rows off zero mean
    auto w = draw<float>(random, hs, 0.1f, 1);
    std::uniform_real_distribution<float> uniform(-1, 1);                // the self-check's tables: every entry matters
    std::vector<float> cos((size_t)(T_ + 3) * half), sin(cos.size());  // [T_max, hs/2]
    for (auto& v : cos) v = uniform(random);
    for (auto& v : sin) v = uniform(random);
    auto dout = draw<float>(random, (size_t)rows * hs, 1, 0);           // [B, nh, T, hs]

    std::vector<float> out((size_t)rows * hs), mean(rows), rstd(rows);
    launch((rows + Warps - 1) / Warps, Threads, [&] { forward(out.data(), mean.data(), rstd.data(), qkv.data(), w.data(), cos.data(), sin.data(), rows, T_, nh, hs, which); });
    unsigned blocks = std::min((rows + Warps - 1) / Warps, MaxBackwardBlocks);
    std::vector<T> dqkv(qkv.size(), from_float<T>(0.0f));
    std::vector<float> partial((size_t)blocks * hs), dweight(hs);
    launch(blocks, Threads, [&] { backward(dqkv.data(), partial.data(), dout.data(), qkv.data(), w.data(), mean.data(), rstd.data(), cos.data(), sin.data(), rows, T_, nh, hs, which); });
    for (unsigned b = 0; b < blocks; b++)
        for (int i = 0; i < hs; i++) dweight[i] += partial[(size_t)b * hs + i]; // partial.sum(0)

    // QkNormRotaryOp.Checks' tolerances: 8 fp32 ulp per element of a row's reduction; dqkv from bf16 one bf16 ulp more;
    // dweight 8 sqrt(rows) ulp more for its sum over rows. mean and rstd as the row's outputs.
    double ulp = std::pow(2.0, -24), row = 8 * hs * ulp;
    char what[64];
    std::snprintf(what, sizeof what, "%s B %d T %d nh %d hs %d %c", type, B, T_, nh, hs, "qkv"[which]);
    auto expected = qk_norm_rotary(qkv, w, cos, sin, dout, B, T_, nh, hs, which);
    compare(what, "out", expected.out, out, row);
    compare(what, "mean", expected.mean, mean, row);
    compare(what, "rstd", expected.rstd, rstd, row);
    compare(what, "dqkv", expected.dqkv, dqkv, sizeof(T) == 2 ? 1.0 / 128 + row : row);
    compare(what, "dweight", expected.dweight, dweight, row + 8 * std::sqrt(rows) * ulp);
}

int main()
{
    for (int which : {0, 1})
    {
        run<float>("fp32", 2, 7, 3, 20, which);     // 42 rows: 6 blocks, the last with 6 idle warps; 12 idle lanes a row
        run<float>("fp32", 1, 5, 3, 8, which);      // 2 blocks; 24 idle lanes a row
        run<float>("fp32", 1, 3, 3, 72, which);     // 3 elements for lanes 0..7, 2 for the others
        run<bf16_bits>("bf16", 2, 7, 3, 20, which);
        run<bf16_bits>("bf16", 1, 3, 3, 72, which);
    }
    run<float>("fp32", 2, 683, 6, 8, 0);            // 8196 rows: backward's 1024 blocks, 4 warps take a second row
    std::printf("%d misses\n", misses);
    return misses;
}
