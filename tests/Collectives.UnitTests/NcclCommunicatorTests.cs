// The NCCL backend: a clear refusal where NCCL or CUDA is missing; on a GPU, world size 1 against the reference.
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class NcclCommunicatorTests
{
    static bool NcclUsable()
    {
        try
        {
            NcclNative.EnsureAvailable();
            return true;
        }
        catch (BackendUnavailableException)
        {
            return false;
        }
    }

    [SkippableFact]
    public void Without_NCCL_or_CUDA_asking_for_the_backend_says_what_is_missing_and_where_it_looked()
    {
        Skip.If(NcclUsable(), "this machine has NCCL and CUDA");

        var error = Assert.Throws<BackendUnavailableException>(() =>
            NcclCommunicator.Create(new InProcessRendezvous(), "nccl-missing", 0, 1, device: 0, TimeSpan.FromSeconds(5)));

        Assert.Contains("NCCL backend cannot start", error.Message);
        if (!cuda.is_available()) Assert.Contains("CUDA is not available", error.Message);
        if (error.Message.Contains("libnccl.so.2 was not found", StringComparison.Ordinal))
        {
            Assert.Contains("NCCL_LIBRARY=", error.Message);           // the places it looked
            Assert.Contains("LD_LIBRARY_PATH=", error.Message);
        }
    }

    [SkippableFact]
    public void Without_a_CUDA_runtime_the_side_stream_says_where_it_looked()
    {
        Skip.If(System.Runtime.InteropServices.NativeLibrary.TryLoad("libcudart.so", out _), "this machine has libcudart.so");
        Skip.If(File.ReadLines("/proc/self/maps").Any(l => l.Contains("/libcudart", StringComparison.Ordinal)), "a libcudart is mapped");

        var error = Assert.Throws<CollectiveException>(NcclNative.EnsureCudart);

        Assert.Contains("/proc/self/maps (none)", error.Message);
        Assert.Contains("libcudart.so, .so.13 and .so.12 through the dynamic loader (LD_LIBRARY_PATH=", error.Message);
    }

    [SkippableFact]
    public void On_a_GPU_world_size_1_all_reduce_broadcast_and_all_gather_keep_the_values()
    {
        Skip.IfNot(NcclUsable(), "needs NCCL and a CUDA device");
        using var comm = NcclCommunicator.Create(new InProcessRendezvous(), "nccl-1", 0, 1, device: 0, TimeSpan.FromSeconds(30));
        var cudaDevice = new Device(DeviceType.CUDA, 0);
        using var x = arange(1000, dtype: ScalarType.Float32, device: cudaDevice);
        using var expected = x.clone();

        comm.AllReduce(x, ReduceOp.Sum);
        comm.Broadcast(x, root: 0);
        using var gathered = empty(1000, dtype: ScalarType.Float32, device: cudaDevice);
        comm.AllGather(x, gathered);
        comm.Barrier();

        Assert.True(x.equal(expected).all().item<bool>());
        Assert.True(gathered.equal(expected).all().item<bool>());
    }

    [SkippableFact]
    public void On_a_GPU_async_all_reduce_keeps_the_values_and_is_ordered_with_the_current_stream()
    {
        Skip.IfNot(NcclUsable(), "needs NCCL and a CUDA device");
        using var comm = NcclCommunicator.Create(new InProcessRendezvous(), "nccl-async-1", 0, 1, device: 0, TimeSpan.FromSeconds(30));
        var cudaDevice = new Device(DeviceType.CUDA, 0);
        using var x = arange(1000, dtype: ScalarType.Float32, device: cudaDevice);
        using var expected = x.clone();
        comm.AllReduceAsync(x, ReduceOp.Sum).Wait();
        Assert.True(x.equal(expected).all().item<bool>());

        // 64M elements written on the current stream behind slow matmuls, reduced at once on the side stream, then
        // written again after Wait. Average at world size 1 still reads and writes every element (a multiply by 1), so
        // a side stream that ran before the fill, or a current stream that did not wait, leaves elements other than 4.
        using var big = zeros(64L << 20, dtype: ScalarType.Float32, device: cudaDevice);
        using var a = randn([4096, 4096], device: cudaDevice);
        for (var i = 0; i < 8; i++) using (a.matmul(a)) { }
        big.fill_(3);
        var pending = comm.AllReduceAsync(big, ReduceOp.Average);
        pending.Wait();
        big.add_(1);
        Assert.True(big.eq(4).all().item<bool>(), $"{big.ne(4).sum().item<long>()} of {big.numel()} elements are not 4");
    }

    /// <summary>A communicator setup that no restart changes (the GPU unusable, two ranks on one GPU) is a configuration
    /// failure (the rank exits 2, not restarted max_restarts times); a system or remote error stays a lost peer.</summary>
    [Theory]
    [InlineData(1, true)]   // ncclUnhandledCudaError
    [InlineData(4, true)]   // ncclInvalidArgument
    [InlineData(5, true)]   // ncclInvalidUsage: e.g. "Duplicate GPU detected"
    [InlineData(2, false)]  // ncclSystemError: a socket, a peer gone
    [InlineData(3, false)]  // ncclInternalError
    [InlineData(6, false)]  // ncclRemoteError
    public void A_failed_setup_is_a_configuration_failure_only_where_no_restart_helps(int result, bool configuration)
    {
        var e = NcclNative.InitFailure(result, "ncclCommInitRank failed");
        Assert.Equal(configuration, e is BackendUnavailableException);
        Assert.Equal(!configuration, e is CollectiveException);
    }
}
