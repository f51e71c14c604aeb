// cuda_host.h's own behaviour, as a GPU has it: warps of one block taking different numbers of shuffles, threads that
// returned early counting as arrived at __syncthreads, dynamic shared memory shared by the block and unwritten (NaN)
// at each block's start; and threads that can never meet abort with a message rather than hang. Prints a line per
// check and exits with the number of misses.
#include "cuda_host.h"
#include "common.cuh"
#include <sys/wait.h>
#include <unistd.h>

static int misses = 0;

static void expect(const char* what, bool ok)
{
    misses += !ok;
    std::printf("%-72s %s\n", what, ok ? "ok" : "MISS");
}

int main()
{
    float sums[2][64];
    launch(2, 96, [&] {
        if (threadIdx.x >= 64) return; // warp 2 leaves at once
        float v = 1;
        for (int k = 0; k < (threadIdx.x < 32 ? 3 : 1); k++) v = warp_sum(v);
        __syncthreads();
        sums[blockIdx.x][threadIdx.x] = v;
    });
    bool all = true;
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 64; t++) all &= sums[b][t] == (t < 32 ? 32 * 32 * 32 : 32);
    expect("warp 0 sums three times, warp 1 once, warp 2 returns; all meet", all);

    float seen[2][64];
    launch(2, 64, [&] {
        float* shared = dynamic_shared<float>(); // [64]
        seen[blockIdx.x][threadIdx.x] = shared[threadIdx.x];
        __syncthreads();
        shared[63 - threadIdx.x] = (float)threadIdx.x;
        __syncthreads();
        sums[blockIdx.x][threadIdx.x] = shared[threadIdx.x];
    }, 64 * sizeof(float));
    all = true;
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 64; t++) all &= std::isnan(seen[b][t]) && sums[b][t] == 63 - t;
    expect("dynamic shared memory: NaN at each block's start, then one array for the block", all);

    pid_t child = fork();
    if (child == 0)
    {
        std::freopen("/dev/null", "w", stderr);
        launch(1, 64, [] {
            if (threadIdx.x == 32) warp_sum(1.0f); // lanes 33..63 never shuffle: they wait at __syncthreads for lane 32
            __syncthreads();
        });
        std::_Exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    expect("a shuffle that one lane takes alone while its warp waits at __syncthreads aborts", WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);

    std::printf("%d misses\n", misses);
    return misses;
}
