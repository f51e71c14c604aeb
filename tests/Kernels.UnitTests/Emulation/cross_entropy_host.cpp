// cross_entropy.cu run on the host (cuda_host.h) against the closed form in fp64: log Z, the loss terms, the
// statistics and the gradient, for odd widths, the transforms and penalties, forward-only launches, large common
// offsets (the running max rescales), a -inf logit and a target outside the vocabulary. Prints a line per case and
// exits with the number of misses.
#include "cuda_host.h"
#include "cross_entropy.cu"
#include <algorithm>
#include <cstdio>
#include <limits>
#include <random>

static int misses = 0;

// Within tol of the scale (1 + |expected|); NaN and infinities must match exactly.
static void expect(const char* what, int row, double expected, double actual, double tol)
{
    bool ok = std::isfinite(expected) ? std::fabs(actual - expected) <= tol * (1 + std::fabs(expected))
                                      : (std::isnan(expected) ? std::isnan(actual) : actual == expected);
    if (!ok)
    {
        misses++;
        std::printf("  MISS %s row %d: expected %.9g, got %.9g\n", what, row, expected, actual);
    }
}

struct Case
{
    const char* name;
    int rows, vocab;
    unsigned threads; // a multiple of 32; fewer than the GPU launch's 1024 keep the host's thread count low
    float cap, z_loss;
    int gradient;
    float scale, offset;
    bool bad_target, negative_infinity;
};

static void run(const Case& c)
{
    std::mt19937 random(c.rows * 7919 + c.vocab);
    std::normal_distribution<float> normal;
    size_t count = (size_t)c.rows * c.vocab;
    std::vector<float> logits(count), given;
    for (auto& l : logits) l = c.scale * normal(random) + c.offset;
    std::vector<long long> targets(c.rows);
    for (auto& t : targets) t = random() % c.vocab;
    if (c.bad_target) targets[0] = c.vocab;
    if (c.negative_infinity) logits[1] = -std::numeric_limits<float>::infinity();
    given = logits;
    std::vector<float> out(ROW_OUTPUTS * c.rows, -1.0f);
    int tokens = 3 * c.rows;
    launch(c.rows, c.threads, [&] { cross_entropy_f32(logits.data(), targets.data(), out.data(), c.rows, c.vocab, c.cap, c.z_loss, 1.0f / tokens, c.gradient); });

    double largest_gradient = 0, gradient_error = 0;
    for (int r = 0; r < c.rows; r++)
    {
        const float* l = &given[(size_t)r * c.vocab];
        std::vector<double> x(c.vocab);
        double max = -INFINITY, sum = 0;
        for (int j = 0; j < c.vocab; j++)
        {
            x[j] = c.cap > 0 ? c.cap * std::tanh((double)l[j] / c.cap) : l[j];
            max = std::max(max, x[j]);
            sum += x[j];
        }
        double exps = 0;
        for (int j = 0; j < c.vocab; j++) exps += std::exp(x[j] - max);
        double log_z = max + std::log(exps), mean = sum / c.vocab, squares = 0, max_abs = 0, max_deviation = 0;
        for (int j = 0; j < c.vocab; j++)
        {
            squares += (x[j] - mean) * (x[j] - mean);
            max_abs = std::max(max_abs, std::fabs(x[j]));
            max_deviation = std::max(max_deviation, std::fabs(x[j] - mean));
        }
        long long t = targets[r];
        bool valid = t >= 0 && t < c.vocab;
        expect("cross-entropy", r, valid ? log_z - x[t] : NAN, out[CROSS_ENTROPY * c.rows + r], 1e-6);
        expect("penalty", r, c.z_loss * log_z * log_z, out[PENALTY * c.rows + r], 1e-6);
        expect("log Z", r, log_z, out[LOG_Z * c.rows + r], 1e-6);
        expect("mean", r, mean, out[MEAN * c.rows + r], 1e-6);
        expect("std", r, std::sqrt(squares / c.vocab), out[STD * c.rows + r], 1e-6);
        expect("max |x|", r, max_abs, out[MAX_ABS * c.rows + r], 1e-6);
        expect("r_log", r, max_deviation / max_abs, out[R_LOG * c.rows + r], 1e-6);
        for (int j = 0; j < c.vocab; j++)
        {
            float got = logits[(size_t)r * c.vocab + j];
            if (!c.gradient)
            {
                if (got != l[j]) { misses++; std::printf("  MISS row %d: logit %d changed without gradient\n", r, j); }
                continue;
            }
            double dx = ((1 + 2 * c.z_loss * log_z) * std::exp(x[j] - log_z) - (j == t ? 1 : 0)) / tokens;
            double y = c.cap > 0 ? std::tanh((double)l[j] / c.cap) : 0;
            double dl = c.cap > 0 ? dx * (1 - y * y) : dx;
            largest_gradient = std::max(largest_gradient, std::fabs(dl));
            gradient_error = std::max(gradient_error, std::fabs(got - dl));
        }
    }
    double relative = gradient_error / std::max(largest_gradient, 1e-30);
    std::printf("%-24s %d x %d, %u threads: gradient error %.3g of its scale %.3g\n", c.name, c.rows, c.vocab, c.threads, relative, largest_gradient);
    // fp32: x - log Z (|.| up to ~20) rounds by up to 1e-6 absolute, which exp turns into its relative error.
    if (relative > 4e-6) { misses++; std::printf("  MISS gradient\n"); }
}

int main()
{
    const Case cases[] = {
        {"none, 1024 threads", 2, 1001, 1024, 0, 0, 1, 4, 0, false, false},
        {"none", 7, 1001, 128, 0, 0, 1, 4, 0, false, false},
        {"z-loss", 7, 1001, 128, 0, 1e-2f, 1, 4, 0, false, false},
        {"soft-cap", 7, 1001, 96, 30, 0, 1, 4, 0, false, false},
        {"soft-cap and z-loss", 3, 5000, 256, 5, 1e-3f, 1, 4, 2, false, false},
        {"offset 50", 4, 777, 64, 0, 1e-4f, 1, 2, 50, false, false},
        {"idle threads", 5, 33, 64, 0, 0, 1, 1, 0, false, false},
        {"one logit", 2, 1, 32, 0, 0, 1, 1, 0, false, false},
        {"forward only", 3, 500, 128, 30, 1e-4f, 0, 4, 0, false, false},
        {"target outside", 2, 100, 64, 0, 0, 1, 1, 0, true, false},
        {"a -inf logit", 2, 100, 64, 0, 0, 1, 1, 0, false, true},
    };
    for (const auto& c : cases) run(c);
    std::printf("%d misses\n", misses);
    return misses;
}
