// CUDA tensors on the TCP ring go through pinned host buffers; CPU tensors go as they are, with no copy.
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class HostStagingTests
{
    private static readonly Device Gpu = new(DeviceType.CUDA, 0);

    [Fact]
    public void A_CPU_tensor_is_its_own_host_side_and_takes_no_copy()
    {
        using var t = torch.arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        using var staged = HostStaging.In(t);

        Assert.Equal(TensorMemory.Data(t), TensorMemory.Data(staged.Host)); // the ring writes the caller's memory
        Assert.Equal([12L], staged.Host.shape);
        staged.Host.add_(1);
        staged.Out();
        Assert.Equal(12f, t[2, 3].item<float>());
    }

    [Fact]
    public void A_tensor_on_neither_the_CPU_nor_a_GPU_is_refused_naming_its_device()
    {
        using var t = torch.empty(4, device: torch.META);
        var e = Assert.Throws<ArgumentException>(() => TensorMemory.Check(t, "tensor", 1));
        Assert.Contains("rank 1: tensor is on meta", e.Message);
    }

    [SkippableTheory]
    [InlineData(2)]
    [InlineData(3)]
    public void CUDA_tensors_on_one_GPU_cross_the_ring_through_pinned_host_memory(int world)
    {
        Skip.IfNot(cuda.is_available(), "needs a CUDA device");
        Ranks.Run(world, (rank, comm) =>
        {
            CheckAllReduce(comm, rank, world);
            CheckBroadcastAndGather(comm, rank, world);
            return 0;
        });
    }

    [SkippableFact]
    public void A_staged_CUDA_tensor_has_a_pinned_host_copy_of_its_values()
    {
        Skip.IfNot(cuda.is_available(), "needs a CUDA device");
        using var t = torch.arange(1000, dtype: ScalarType.Float32, device: Gpu).mul(2); // a kernel queued on the stream
        using var staged = HostStaging.In(t);

        Assert.True(staged.Host.is_pinned());
        Assert.Equal(1998f, staged.Host[999].item<float>());
        staged.Host.fill_(7);
        staged.Out();
        Assert.Equal(DeviceType.CUDA, t.device_type);
        Assert.Equal(7000f, t.sum().item<float>());
    }

    // Sync and async all-reduce of a tensor a GPU kernel has just written, against the serial reference.
    private static void CheckAllReduce(ICommunicator comm, int rank, int world)
    {
        using var x = Gpu3(rank, 1, [1001]);
        comm.AllReduce(x);
        AssertEqualsReference(Enumerable.Range(0, world).Select(r => Cpu3(r, 1, [1001])), ReduceOp.Sum, x, $"rank {rank}: AllReduce");

        using var y = Gpu3(rank, 2, [7, 9]);
        var pending = comm.AllReduceAsync(y, ReduceOp.Average);
        pending.Wait();
        AssertEqualsReference(Enumerable.Range(0, world).Select(r => Cpu3(r, 2, [7, 9])), ReduceOp.Average, y, $"rank {rank}: AllReduceAsync");
    }

    private static void CheckBroadcastAndGather(ICommunicator comm, int rank, int world)
    {
        using var b = Gpu3(rank, 3, [333]);
        comm.Broadcast(b, root: world - 1);
        AssertEqualsReference([Cpu3(world - 1, 3, [333])], ReduceOp.Sum, b, $"rank {rank}: Broadcast");

        using var part = Gpu3(rank, 4, [13]);
        using var gathered = torch.empty(13 * world, device: Gpu);
        comm.AllGather(part, gathered);
        var parts = Enumerable.Range(0, world).Select(r => Cpu3(r, 4, [13])).ToArray();
        AssertEqualsReference([torch.cat(parts, 0)], ReduceOp.Sum, gathered, $"rank {rank}: AllGather");
        foreach (var p in parts) p.Dispose();

        using var full = Gpu3(rank, 5, [13 * world]);
        using var shard = torch.empty(13, device: Gpu);
        comm.ReduceScatter(full, shard);
        AssertEqualsReference(Enumerable.Range(0, world).Select(r => Cpu3(r, 5, [13 * world]).narrow(0, rank * 13, 13)), ReduceOp.Sum, shard,
            $"rank {rank}: ReduceScatter");
    }

    // The test input times 3, on the CPU and computed on the GPU.
    private static Tensor Cpu3(int rank, int caseId, long[] shape)
    {
        using var x = CollectiveOpsTests.Input(rank, caseId, shape, ScalarType.Float32);
        return x.mul(3);
    }

    private static Tensor Gpu3(int rank, int caseId, long[] shape)
    {
        using var x = CollectiveOpsTests.Input(rank, caseId, shape, ScalarType.Float32);
        using var onGpu = x.to(Gpu);
        return onGpu.mul(3);
    }

    // inputs: each rank's CPU tensor, disposed here.
    private static void AssertEqualsReference(IEnumerable<Tensor> inputs, ReduceOp op, Tensor onGpu, string what)
    {
        Assert.Equal(DeviceType.CUDA, onGpu.device_type);
        var xs = inputs.ToArray();
        using var expected = CollectiveOpsTests.Reference(xs, op, ScalarType.Float32);
        foreach (var x in xs) x.Dispose();
        using var actual = onGpu.cpu();
        CollectiveOpsTests.AssertClose(expected, actual, what);
    }
}
