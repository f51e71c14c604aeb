// cuda_host.h, which runs the kernel sources on the host, behaves as a GPU does where the kernels rely on it.
using Xunit.Abstractions;

namespace Kernels.UnitTests;

public class HostEmulationTests(ITestOutputHelper log)
{
    // Emulation/cuda_host_checks.cpp: warps of a block taking different numbers of shuffles, returned threads counted
    // at __syncthreads, dynamic shared memory, and an abort (not a hang) where threads can never meet.
    [Fact]
    public void Warps_shuffle_apart_returned_threads_count_at_barriers_and_threads_that_cannot_meet_abort()
    {
        var (misses, output) = HostEmulation.Run("cuda_host_checks");
        log.WriteLine(output);
        Assert.True(misses == 0, output);
    }
}
