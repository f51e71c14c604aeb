// A rank that disappears mid all-reduce (or reduce-scatter) makes every other rank throw CollectiveException quickly, naming the dead rank.
using System.Diagnostics;
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class FailureTests
{
    [Theory]
    [InlineData(3, 1, false)]
    [InlineData(4, 2, false)]
    [InlineData(4, 0, false)]
    [InlineData(3, 1, true)] // reduce-scatter's receive half also waits on its send half
    [InlineData(4, 0, true)]
    public void Dead_peer_is_named_on_every_rank(int world, int dead, bool reduceScatter)
    {
        var options = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20), ChunkBytes: 1 << 16);
        var (results, errors) = Ranks.TryRun(world, (rank, comm) =>
        {
            comm.Barrier(); // everyone is connected and running
            if (rank == dead)
            {
                Thread.Sleep(300); // the others are inside the all-reduce by now, waiting for this rank
                comm.Dispose();
                return TimeSpan.Zero;
            }
            using var t = torch.ones(world << 18);
            using var shard = torch.empty(1 << 18);
            var watch = Stopwatch.StartNew();
            var e = Assert.Throws<CollectiveException>(() => { if (reduceScatter) comm.ReduceScatter(t, shard); else comm.AllReduce(t); });
            Assert.Contains($"rank {dead} (127.0.0.1:", e.Message);
            Assert.StartsWith($"group '", e.Message);
            var later = Assert.Throws<CollectiveException>(() => comm.Barrier()); // broken stays broken
            Assert.Contains($"rank {dead} (", later.Message);
            return watch.Elapsed;
        }, options);
        Assert.All(errors, e => Assert.Null(e));
        Assert.All(results, elapsed => Assert.True(elapsed < TimeSpan.FromSeconds(5), $"took {elapsed}"));
    }

    [Fact]
    public void Silent_peer_times_out_naming_it()
    {
        var options = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(1));
        var (results, errors) = Ranks.TryRun(3, (rank, comm) =>
        {
            if (rank == 1) { Thread.Sleep(3000); return ""; } // alive but never joins: the others time out
            using var t = torch.ones(10);
            return Assert.Throws<CollectiveException>(() => comm.AllReduce(t)).Message;
        }, options);
        Assert.All(errors, e => Assert.Null(e));
        Assert.Contains("rank 1 (", results[0]);
        Assert.Contains("rank 1 (", results[2]);
    }

    [Fact]
    public void Rendezvous_timeout_names_missing_ranks()
    {
        var rv = new InProcessRendezvous();
        var e = Assert.Throws<TimeoutException>(() => rv.AllGather("k", 0, 3, "a", TimeSpan.FromMilliseconds(100)));
        Assert.Contains("[1, 2]", e.Message);
    }
}
