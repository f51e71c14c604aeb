// What the host runs of the row kernels share: inputs in the kernel's element type from fp32 draws, and the comparison
// of an output with its fp64 reference, relative to the reference's largest magnitude (as KernelCheck.Compare does).
// Include it after a kernel source (it uses common.cuh's to_float and from_float).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

static int misses = 0;

// n normal draws scaled and shifted, rounded to T (fp32 itself or bf16 bits).
template <typename T> std::vector<T> draw(std::mt19937& random, size_t n, float scale, float offset)
{
    std::normal_distribution<float> normal;
    std::vector<T> values(n);
    for (auto& v : values) v = from_float<T>(scale * normal(random) + offset);
    return values;
}

// max |actual - expected| over max |expected| within tolerance; a NaN anywhere misses. Prints one line.
template <typename T> void compare(const char* what, const char* name, const std::vector<double>& expected, const std::vector<T>& actual, double tolerance)
{
    double error = 0, scale = 0;
    bool nan = false;
    for (size_t i = 0; i < expected.size(); i++)
    {
        double a = to_float(actual[i]);
        nan |= std::isnan(a) || std::isnan(expected[i]);
        error = std::max(error, std::fabs(a - expected[i]));
        scale = std::max(scale, std::fabs(expected[i]));
    }
    double relative = error / std::max(scale, 1e-30);
    bool ok = !nan && relative <= tolerance;
    misses += !ok;
    std::printf("%-40s %-8s error %9.3g of its scale %9.3g, tolerance %8.2g %s\n", what, name, relative, scale, tolerance, ok ? "ok" : "MISS");
}
