// GradientBucketer: broadcast makes replicas identical; averaged gradients equal the serial mean of per-rank gradients.
using Collectives;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class GradientBucketerTests
{
    // Embedding + Linear + LayerNorm, plus a side Linear used only for batches of rank 0 (no grad elsewhere).
    private sealed class Net : IDisposable
    {
        public readonly Embedding Emb = nn.Embedding(10, 4);
        public readonly Linear Lin = nn.Linear(4, 8);
        public readonly LayerNorm Norm = nn.LayerNorm(8);
        public readonly Linear Side = nn.Linear(4, 1);

        public Tensor[] Parameters() =>
            Emb.parameters().Concat(Lin.parameters()).Concat(Norm.parameters()).Concat(Side.parameters()).ToArray();

        // One group per module, in the order backward finishes them (last layer first).
        public IReadOnlyList<Tensor>[] BackwardGroups() =>
            [Side.parameters().ToArray(), Norm.parameters().ToArray(), Lin.parameters().ToArray(), Emb.parameters().ToArray()];

        // ids [B, 3] int64, x [B, 4] fp32 -> scalar loss.
        public Tensor Loss(Tensor ids, Tensor x, bool useSide)
        {
            using var e = Emb.forward(ids).mean([1L]);
            using var h = Lin.forward(e + x);
            using var n = Norm.forward(h);
            var loss = n.pow(2).mean() + n.sum(1).sin().mean();
            if (useSide) using (var s = Side.forward(x)) loss = loss + s.mean();
            return loss;
        }

        public void ZeroGrad()
        {
            foreach (var p in Parameters()) p.grad = null;
        }

        public void Dispose() { Emb.Dispose(); Lin.Dispose(); Norm.Dispose(); Side.Dispose(); }
    }

    private static (Tensor Ids, Tensor X) Batch(int rank)
    {
        var g = new Generator((ulong)(77 + rank));
        return (torch.randint(0, 10, [5, 3], generator: g), torch.randn([5, 4], generator: g));
    }

    private static Tensor[] Gradients(Net net, int batchRank)
    {
        net.ZeroGrad();
        var (ids, x) = Batch(batchRank);
        using (var loss = net.Loss(ids, x, batchRank == 0)) loss.backward();
        return net.Parameters().Select(p => p.grad is { } g ? g.clone() : torch.zeros_like(p)).ToArray();
    }

    [Theory]
    [InlineData(2, 64)]                 // tiny buckets: about one parameter each
    [InlineData(3, 64)]
    [InlineData(2, 25 * 1024 * 1024)]   // one bucket
    [InlineData(3, 25 * 1024 * 1024)]
    public void Averaged_gradients_equal_serial_mean(int world, long bucketBytes)
    {
        var rootParams = new Tensor[world][];
        Ranks.Run(world, (rank, comm) =>
        {
            using var net = new Net(); // different random init per rank until the broadcast
            using var bucketer = new GradientBucketer(comm, net.Parameters(), bucketBytes);
            if (bucketBytes == 64) Assert.True(bucketer.BucketCount >= 4, $"{bucketer.BucketCount} buckets");
            bucketer.BroadcastParameters(root: 0);
            rootParams[rank] = net.Parameters().Select(p => p.detach().clone()).ToArray();

            var perRank = Enumerable.Range(0, world).Select(r => Gradients(net, r)).ToArray();
            var expected = perRank[0].Select((_, i) => torch.stack(perRank.Select(g => g[i])).mean([0L])).ToArray();

            Gradients(net, rank); // this rank's own batch only
            bucketer.AverageGradients();
            var actual = net.Parameters();
            for (var i = 0; i < actual.Length; i++)
                Assert.True(expected[i].allclose(actual[i].grad!, 1e-5, 1e-6), $"rank {rank}: parameter {i} gradient differs");
            return 0;
        });
        for (var r = 1; r < world; r++)
            for (var i = 0; i < rootParams[0].Length; i++)
                Assert.True(rootParams[0][i].equal(rootParams[r][i]).all().item<bool>(), $"rank {r} parameter {i} differs from rank 0 after broadcast");
    }

    // This rank's gradients averaged by the bucketer; ready = the groups to call Ready for (in that order) first.
    private static Tensor[] Averaged(Net net, GradientBucketer bucketer, int rank, params int[] ready)
    {
        Gradients(net, rank);
        foreach (var g in ready) bucketer.Ready(g);
        bucketer.AverageGradients();
        return net.Parameters().Select(p => p.grad!.clone()).ToArray();
    }

    private static void AssertBitIdentical(Tensor[] expected, Tensor[] actual, string what)
    {
        for (var i = 0; i < expected.Length; i++)
            Assert.True(expected[i].equal(actual[i]).all().item<bool>(), $"{what}: parameter {i} differs");
    }

    [Theory]
    [InlineData(2, 64)]
    [InlineData(3, 64)]
    [InlineData(2, 25 * 1024 * 1024)]
    [InlineData(3, 25 * 1024 * 1024)]
    public void Ready_per_group_in_backward_order_gives_the_synchronous_bits_and_the_serial_mean(int world, long bucketBytes)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            using var net = new Net();
            using var bucketer = new GradientBucketer(comm, net.BackwardGroups(), bucketBytes);
            Assert.Equal(4, bucketer.GroupCount);
            if (bucketBytes > 64) Assert.Equal(4, bucketer.BucketCount); // one per group: buckets never span two
            bucketer.BroadcastParameters(root: 0);
            var perRank = Enumerable.Range(0, world).Select(r => Gradients(net, r)).ToArray();
            var mean = perRank[0].Select((_, i) => torch.stack(perRank.Select(g => g[i])).mean([0L])).ToArray();

            var synchronous = Averaged(net, bucketer, rank);
            var overlapped = Averaged(net, bucketer, rank, 0, 1, 2, 3);
            AssertBitIdentical(synchronous, overlapped, $"rank {rank}: Ready per group vs synchronous");
            for (var i = 0; i < mean.Length; i++)
                Assert.True(mean[i].allclose(overlapped[i], 1e-5, 1e-6), $"rank {rank}: parameter {i} differs from the serial mean");
            return 0;
        });
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Ready_for_some_groups_then_average_gradients_finishes_the_rest(int world)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            using var net = new Net();
            using var bucketer = new GradientBucketer(comm, net.BackwardGroups(), bucketBytes: 64);
            bucketer.BroadcastParameters(root: 0);
            var synchronous = Averaged(net, bucketer, rank);
            AssertBitIdentical(synchronous, Averaged(net, bucketer, rank, 2), $"rank {rank}: Ready(2) only");
            AssertBitIdentical(synchronous, Averaged(net, bucketer, rank, 3, 0), $"rank {rank}: Ready(3), Ready(0)"); // out of order
            AssertBitIdentical(synchronous, Averaged(net, bucketer, rank), $"rank {rank}: a round without Ready after rounds with");
            return 0;
        });
    }

    [Fact]
    public void Ready_twice_in_one_round_throws_naming_the_group()
    {
        Ranks.Run(1, (rank, comm) =>
        {
            using var net = new Net();
            using var bucketer = new GradientBucketer(comm, net.BackwardGroups());
            Gradients(net, 0);
            bucketer.Ready(2);
            var e = Assert.Throws<InvalidOperationException>(() => bucketer.Ready(2));
            Assert.Contains("group 2", e.Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => bucketer.Ready(4));
            bucketer.AverageGradients();
            bucketer.Ready(2); // a new round
            bucketer.AverageGradients();
            using var single = new GradientBucketer(comm, net.Parameters());
            Assert.Equal(1, single.GroupCount);
            return 0;
        });
    }
}
