// Every collective of the TCP ring equals a serial reference, for world sizes 1-4, all dtypes, odd lengths and 2-D shapes.
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class CollectiveOpsTests
{
    private static readonly ScalarType[] DTypes =
        [ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Int64, ScalarType.Int32];

    private static readonly long[][] Shapes = [[0], [1], [7], [1000], [13], [5, 6], [3, 0]];

    private const long Dim0 = 0; // a long, so sum(0) does not bind to sum(ScalarType)

    private static readonly ReduceOp[] Ops = [ReduceOp.Sum, ReduceOp.Average, ReduceOp.Max, ReduceOp.Min];

    // Deterministic data per (rank, case): small integers and quarters, with a sign, in the tensor's dtype.
    internal static Tensor Input(int rank, int caseId, long[] shape, ScalarType dtype)
    {
        var g = new Generator((ulong)(1000 * caseId + rank + 1));
        using var ints = torch.randint(-40, 41, shape, generator: g, dtype: ScalarType.Int64);
        using var d = ints.to_type(ScalarType.Float64);
        using var q = TensorMemory.IsFloating(dtype) ? d.div(4.0) : d.alias();
        return q.to_type(dtype);
    }

    internal static Tensor Reference(IEnumerable<Tensor> inputs, ReduceOp op, ScalarType dtype)
    {
        var xs = inputs.Select(t => t.to_type(ScalarType.Float64)).ToArray();
        using var stacked = torch.stack(xs);
        foreach (var x in xs) x.Dispose();
        return op switch
        {
            ReduceOp.Sum => stacked.sum(Dim0),
            ReduceOp.Max => stacked.amax(Dim0),
            ReduceOp.Min => stacked.amin(Dim0),
            _ => TensorMemory.IsFloating(dtype) ? stacked.mean([0]) : stacked.sum(Dim0).div(xs.Length, RoundingMode.floor),
        };
    }

    internal static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        var (rtol, atol) = actual.dtype switch
        {
            ScalarType.BFloat16 => (2e-2, 0.1),
            ScalarType.Float16 => (2e-3, 1e-2),
            ScalarType.Float32 => (1e-6, 1e-6),
            _ => (1e-12, 1e-12),
        };
        using var a = actual.to_type(ScalarType.Float64);
        Assert.True(expected.allclose(a, rtol, atol), $"{what}: expected {expected.ToString(TorchSharp.TensorStringStyle.Julia)} got {a.ToString(TorchSharp.TensorStringStyle.Julia)}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void All_reduce_equals_serial_reference(int world)
    {
        var cases = (from d in DTypes from s in Shapes from o in Ops select (d, s, o)).ToArray();
        Ranks.Run(world, (rank, comm) =>
        {
            for (var i = 0; i < cases.Length; i++)
            {
                var (dtype, shape, op) = cases[i];
                using var t = Input(rank, i, shape, dtype);
                comm.AllReduce(t, op);
                var all = Enumerable.Range(0, world).Select(r => Input(r, i, shape, dtype)).ToArray();
                using var expected = Reference(all, op, dtype);
                foreach (var x in all) x.Dispose();
                AssertClose(expected, t, $"rank {rank} of {world}: AllReduce {op} {dtype} [{string.Join(",", shape)}]");
            }
            return 0;
        });
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Small_chunks_pipeline_many_segments(int world)
    {
        // 64-byte segments: 1000 float64 elements cross the ring in many segments per step.
        Ranks.Run(world, (rank, comm) =>
        {
            using var t = Input(rank, 7, [1000], ScalarType.Float64);
            comm.AllReduce(t);
            var all = Enumerable.Range(0, world).Select(r => Input(r, 7, [1000], ScalarType.Float64)).ToArray();
            using var expected = Reference(all, ReduceOp.Sum, ScalarType.Float64);
            AssertClose(expected, t, $"rank {rank}");
            return 0;
        }, new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20), ChunkBytes: 64));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Broadcast_all_gather_reduce_scatter_equal_serial_reference(int world)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            var caseId = 0;
            foreach (var dtype in DTypes)
            foreach (var shape in Shapes)
            {
                caseId++;
                CheckBroadcast(comm, rank, world, caseId, shape, dtype);
                CheckAllGather(comm, rank, world, caseId, shape, dtype);
                foreach (var op in Ops) CheckReduceScatter(comm, rank, world, caseId, shape, dtype, op);
            }
            comm.Barrier();
            return 0;
        });
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Reduce_scatter_and_all_gather_of_odd_fp32_lengths_in_many_segments_equal_serial_reference(int world)
    {
        // ZeRO's use: 1-D fp32 tensors of any length divisible by the world size. 64-byte segments split each chunk
        // into many, so reduce-scatter's accumulator is overwritten while the send half still forwards earlier partials.
        Ranks.Run(world, (rank, comm) =>
        {
            foreach (var each in new long[] { 1, 13, 333, 1001 })
            {
                CheckAllGather(comm, rank, world, (int)each, [each], ScalarType.Float32);
                foreach (var op in Ops) CheckReduceScatter(comm, rank, world, (int)each, [each], ScalarType.Float32, op);
            }
            return 0;
        }, new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20), ChunkBytes: 64));
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void Reduce_scatter_into_its_own_slice_of_the_input_equals_serial_reference(int world)
    {
        // The output aliases the input's chunk of this rank, which later steps still read.
        const long each = 333;
        Ranks.Run(world, (rank, comm) =>
        {
            using var input = Input(rank, 5, [each * world], ScalarType.Float32);
            using var output = input.narrow(0, rank * each, each);
            comm.ReduceScatter(input, output);
            var all = Enumerable.Range(0, world).Select(r => Input(r, 5, [each * world], ScalarType.Float32)).ToArray();
            using var full = Reference(all, ReduceOp.Sum, ScalarType.Float32);
            foreach (var x in all) x.Dispose();
            using var expected = full.narrow(0, rank * each, each);
            AssertClose(expected, output, $"rank {rank} of {world}: ReduceScatter into its input");
            return 0;
        }, new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20), ChunkBytes: 64));
    }

    private static void CheckBroadcast(ICommunicator comm, int rank, int world, int caseId, long[] shape, ScalarType dtype)
    {
        var root = caseId % world;
        using var t = Input(rank, caseId, shape, dtype);
        comm.Broadcast(t, root);
        using var expected = Input(root, caseId, shape, dtype).to_type(ScalarType.Float64);
        AssertClose(expected, t, $"rank {rank} of {world}: Broadcast from {root} {dtype}");
    }

    private static void CheckAllGather(ICommunicator comm, int rank, int world, int caseId, long[] shape, ScalarType dtype)
    {
        using var input = Input(rank, caseId, shape, dtype);
        var outShape = shape.ToArray();
        outShape[0] *= world;
        using var output = torch.empty(outShape, dtype);
        comm.AllGather(input, output);
        var all = Enumerable.Range(0, world).Select(r => Input(r, caseId, shape, dtype).to_type(ScalarType.Float64)).ToArray();
        using var expected = torch.cat(all, 0);
        AssertClose(expected, output, $"rank {rank} of {world}: AllGather {dtype} [{string.Join(",", shape)}]");
    }

    private static void CheckReduceScatter(ICommunicator comm, int rank, int world, int caseId, long[] shape, ScalarType dtype, ReduceOp op)
    {
        var inShape = shape.ToArray();
        inShape[0] *= world;
        using var input = Input(rank, caseId, inShape, dtype);
        using var before = input.clone();
        using var output = torch.empty(shape, dtype);
        comm.ReduceScatter(input, output, op);
        var all = Enumerable.Range(0, world).Select(r => Input(r, caseId, inShape, dtype)).ToArray();
        using var full = Reference(all, op, dtype);
        using var expected = full.narrow(0, rank * shape[0], shape[0]);
        AssertClose(expected, output, $"rank {rank} of {world}: ReduceScatter {op} {dtype} [{string.Join(",", shape)}]");
        Assert.True(before.eq(input).all().item<bool>(), "ReduceScatter must leave its input unchanged");
    }

    [Fact]
    public void Mismatched_sizes_fail_with_a_clear_message()
    {
        var (_, errors) = Ranks.TryRun(2, (rank, comm) =>
        {
            using var t = torch.ones(rank == 0 ? 10 : 11);
            comm.AllReduce(t);
            return 0;
        }, new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(5)));
        Assert.All(errors, e => Assert.IsType<CollectiveException>(e));
        Assert.Contains(errors, e => e!.Message.Contains("mismatched collective"));
    }

    [Fact]
    public void Non_contiguous_tensor_is_refused()
    {
        Ranks.Run(1, (rank, comm) =>
        {
            using var t = torch.zeros(3, 4).t();
            var e = Assert.Throws<ArgumentException>(() => comm.AllReduce(t));
            Assert.Contains("rank 0", e.Message);
            return 0;
        });
    }
}
