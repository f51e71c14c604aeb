// swiglu.cu run on the host (cuda_host.h) against silu(a) * b and its gradients in fp64: fp32 and bf16, an odd length
// (16-byte packs, then a scalar tail), a start one element into the allocation (not 16-byte aligned: every element
// through the scalar loop, each thread looping) and several blocks, each launched as SwiGluOp launches it. Prints a
// line per comparison and exits with the number of misses.
#include "cuda_host.h"
#include "swiglu.cu"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>

static int misses = 0;

static void forward(const float* a, const float* b, float* y, long long n) { swiglu_forward_f32(a, b, y, n); }
static void forward(const bf16_bits* a, const bf16_bits* b, bf16_bits* y, long long n) { swiglu_forward_bf16(a, b, y, n); }
static void backward(const float* g, const float* a, const float* b, float* da, float* db, long long n) { swiglu_backward_f32(g, a, b, da, db, n); }
static void backward(const bf16_bits* g, const bf16_bits* a, const bf16_bits* b, bf16_bits* da, bf16_bits* db, long long n)
{
    swiglu_backward_bf16(g, a, b, da, db, n);
}

// SwiGluOp.Blocks: 256 threads a block, one thread a 16-byte pack, at least one block and at most 2^16.
static unsigned blocks(long long n, size_t element_size)
{
    long long packs = (n * (long long)element_size + 15) / 16;
    return (unsigned)std::clamp((packs + 255) / 256, 1LL, 1LL << 16);
}

// `offset + n + Slack` elements from a 16-byte aligned allocation (operator new's), each `fill`; at() is element offset.
template <typename T> struct Buffer
{
    static constexpr long long Slack = 8;
    std::vector<T> all;
    long long offset;
    Buffer(long long offset, long long n, T fill) : all(offset + n + Slack, fill), offset(offset) {}
    T* at() { return all.data() + offset; }
};

// Within tol of the reference's largest magnitude (SwiGluOp's self-check tolerance for the dtype).
template <typename T>
static void compare(const char* name, const char* what, const std::vector<double>& expected, const T* actual, double tol)
{
    double largest = 0, error = 0;
    for (size_t i = 0; i < expected.size(); i++)
    {
        largest = std::max(largest, std::fabs(expected[i]));
        error = std::max(error, std::fabs((double)to_float(actual[i]) - expected[i]));
    }
    double relative = error / std::max(largest, 1e-30);
    std::printf("%-30s %-2s error %.3g of its scale %.3g\n", name, what, relative, largest);
    if (!(relative <= tol)) { misses++; std::printf("  MISS %s %s\n", name, what); }
}

// Every element of `buffer` outside [offset, offset + n) still holds `fill`: the kernel wrote only its n elements.
template <typename T> static void untouched(const char* name, const char* what, const Buffer<T>& buffer, long long n, T fill)
{
    for (long long i = 0; i < (long long)buffer.all.size(); i++)
        if ((i < buffer.offset || i >= buffer.offset + n) && std::memcmp(&buffer.all[i], &fill, sizeof(T)) != 0)
        {
            misses++;
            std::printf("  MISS %s %s: element %lld outside the run was written\n", name, what, i - buffer.offset);
            return;
        }
}

template <typename T> static void run(const char* name, long long rows, long long hidden, long long offset, double tol)
{
    long long n = rows * hidden;
    std::mt19937 random((unsigned)(n + offset));
    std::normal_distribution<float> normal;
    const T fill = from_float<T>(12345.0f);
    Buffer<T> a(offset, n, fill), b(offset, n, fill), g(offset, n, fill), y(offset, n, fill), da(offset, n, fill), db(offset, n, fill);
    for (long long i = 0; i < n; i++)
    {
        a.at()[i] = from_float<T>(2 * normal(random));
        b.at()[i] = from_float<T>(normal(random));
        g.at()[i] = from_float<T>(normal(random));
    }
    for (T* p : {a.at(), b.at(), g.at(), y.at(), da.at(), db.at()})
        if ((((std::uintptr_t)p & 15) == 0) != (offset == 0))
        {
            misses++;
            std::printf("  MISS %s: a pointer's 16-byte alignment is not the case's\n", name);
        }

    unsigned grid = blocks(n, sizeof(T));
    launch(grid, 256, [&] { forward(a.at(), b.at(), y.at(), n); });
    launch(grid, 256, [&] { backward(g.at(), a.at(), b.at(), da.at(), db.at(), n); });

    // y = a s b, da = g b s (1 + a (1 - s)), db = g a s with s = sigmoid(a), from the same (rounded) inputs.
    std::vector<double> y_expected(n), da_expected(n), db_expected(n);
    for (long long i = 0; i < n; i++)
    {
        double ai = to_float(a.at()[i]), bi = to_float(b.at()[i]), gi = to_float(g.at()[i]), s = 1 / (1 + std::exp(-ai));
        y_expected[i] = ai * s * bi;
        da_expected[i] = gi * bi * s * (1 + ai * (1 - s));
        db_expected[i] = gi * ai * s;
    }
    std::printf("%s: %lld x %lld from element %lld, %u blocks of 256\n", name, rows, hidden, offset, grid);
    compare(name, "y", y_expected, y.at(), tol);
    compare(name, "da", da_expected, da.at(), tol);
    compare(name, "db", db_expected, db.at(), tol);
    untouched(name, "y", y, n, fill);
    untouched(name, "da", da, n, fill);
    untouched(name, "db", db, n, fill);
}

int main()
{
    // SwiGluOp's tolerances: fp32 a few ulp of fp32 arithmetic (1e-6); bf16 one rounding of the result, within the
    // self-check's 2^-6 (whose reference rounds intermediates too).
    const double fp32 = 1e-6, bf16 = 1.0 / 64;
    run<float>("fp32 odd (packs, a tail of 3)", 7, 101, 0, fp32);
    run<float>("fp32 odd unaligned", 7, 101, 1, fp32);
    run<float>("fp32 several blocks", 33, 203, 0, fp32);
    run<bf16_bits>("bf16 odd (packs, a tail of 3)", 7, 101, 0, bf16);
    run<bf16_bits>("bf16 odd unaligned", 7, 101, 1, bf16);
    run<bf16_bits>("bf16 several blocks", 33, 203, 0, bf16);
    std::printf("%d misses\n", misses);
    return misses;
}
