// AllReduceAsync of the TCP ring: equals the serial reduction, keeps call order with synchronous operations, fails fast.
using System.Diagnostics;
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class AsyncAllReduceTests
{
    // Lengths 0 to 100k (several 4 KiB segments, so passes pipeline) and two dtypes: several all-reduces pending at once.
    private static readonly (long Length, ScalarType DType)[] Cases =
        [(1000, ScalarType.Float32), (0, ScalarType.Float32), (100_003, ScalarType.Float32), (7, ScalarType.Int64), (1, ScalarType.Float64)];

    private static readonly TcpOptions Small = new(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20), ChunkBytes: 4096);

    [Theory]
    [InlineData(2, ReduceOp.Sum)]
    [InlineData(2, ReduceOp.Average)]
    [InlineData(3, ReduceOp.Sum)]
    [InlineData(3, ReduceOp.Average)]
    public void Several_pending_all_reduces_equal_the_serial_reduction(int world, ReduceOp op)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            var tensors = Cases.Select((c, i) => CollectiveOpsTests.Input(rank, i, [c.Length], c.DType)).ToArray();
            var pending = tensors.Select(t => comm.AllReduceAsync(t, op)).ToArray();
            foreach (var p in pending.Reverse()) p.Wait(); // the wait order does not matter
            for (var i = 0; i < Cases.Length; i++)
            {
                var all = Enumerable.Range(0, world).Select(r => CollectiveOpsTests.Input(r, i, [Cases[i].Length], Cases[i].DType)).ToArray();
                using var expected = CollectiveOpsTests.Reference(all, op, Cases[i].DType);
                CollectiveOpsTests.AssertClose(expected, tensors[i], $"rank {rank} of {world}: AllReduceAsync {op} case {i}");
            }
            return 0;
        }, Small);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void A_pending_all_gather_between_all_reduces_equals_the_synchronous_one(int world)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            using var before = CollectiveOpsTests.Input(rank, 1, [1001], ScalarType.Float32);
            using var mine = CollectiveOpsTests.Input(rank, 2, [333], ScalarType.Float32);
            using var gathered = torch.empty(333L * world);
            using var after = CollectiveOpsTests.Input(rank, 3, [1001], ScalarType.Float32);
            var first = comm.AllReduceAsync(before);
            var gather = comm.AllGatherAsync(mine, gathered);
            mine.fill_(-1);                                           // read before AllGatherAsync returned
            var last = comm.AllReduceAsync(after);
            last.Wait();
            gather.Wait();
            first.Wait();
            using var expected = torch.cat(Enumerable.Range(0, world).Select(r => CollectiveOpsTests.Input(r, 2, [333], ScalarType.Float32)).ToArray());
            Assert.True(expected.allclose(gathered, rtol: 0, atol: 0), $"rank {rank} of {world}: AllGatherAsync");
            var all = Enumerable.Range(0, world).Select(r => CollectiveOpsTests.Input(r, 3, [1001], ScalarType.Float32)).ToArray();
            using var reduced = CollectiveOpsTests.Reference(all, ReduceOp.Sum, ScalarType.Float32);
            CollectiveOpsTests.AssertClose(reduced, after, $"rank {rank} of {world}: the all-reduce queued after it");
            return 0;
        }, Small);
    }

    [Theory]
    [InlineData(2, ReduceOp.Sum)]
    [InlineData(3, ReduceOp.Average)]
    public void A_pending_reduce_scatter_between_all_reduces_equals_the_serial_reduction_of_each_slice(int world, ReduceOp op)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            using var before = CollectiveOpsTests.Input(rank, 1, [1001], ScalarType.Float32);
            using var whole = CollectiveOpsTests.Input(rank, 2, [333L * world], ScalarType.Float32);
            using var mine = torch.empty(333);
            using var after = CollectiveOpsTests.Input(rank, 3, [1001], ScalarType.Float32);
            var first = comm.AllReduceAsync(before);
            var scatter = comm.ReduceScatterAsync(whole, mine, op);
            var last = comm.AllReduceAsync(after);
            last.Wait();
            scatter.Wait();
            first.Wait();
            var all = Enumerable.Range(0, world).Select(r => CollectiveOpsTests.Input(r, 2, [333L * world], ScalarType.Float32)).ToArray();
            using var reduced = CollectiveOpsTests.Reference(all, op, ScalarType.Float32);
            CollectiveOpsTests.AssertClose(reduced.narrow(0, 333L * rank, 333), mine, $"rank {rank} of {world}: ReduceScatterAsync {op}");
            return 0;
        }, Small);
    }

    [Fact]
    public void An_asynchronous_reduce_scatter_into_its_own_input_is_refused()
    {
        Ranks.Run(2, (rank, comm) =>
        {
            using var whole = torch.ones(10);
            var e = Assert.Throws<ArgumentException>(() => comm.ReduceScatterAsync(whole, whole.narrow(0, 5 * rank, 5)));
            Assert.Contains("overlaps its input", e.Message);
            return 0;
        }, Small);
    }

    [Fact]
    public void An_all_reduce_queued_inside_a_dispose_scope_that_ends_before_it_runs_still_reduces()
    {
        // As the trainer starts bucket all-reduces from inside backward: the scope ends while the all-reduce still
        // waits in the queue behind a big one, and must not take the communicator's view of the tensor with it.
        Ranks.Run(2, (rank, comm) =>
        {
            using var big = torch.ones(1 << 20);
            using var t = CollectiveOpsTests.Input(rank, 3, [1000], ScalarType.Float32);
            IPendingCollective first, second;
            using (torch.NewDisposeScope())
            {
                first = comm.AllReduceAsync(big);
                second = comm.AllReduceAsync(t);
            }
            first.Wait();
            second.Wait();
            var all = Enumerable.Range(0, 2).Select(r => CollectiveOpsTests.Input(r, 3, [1000], ScalarType.Float32)).ToArray();
            using var expected = CollectiveOpsTests.Reference(all, ReduceOp.Sum, ScalarType.Float32);
            CollectiveOpsTests.AssertClose(expected, t, $"rank {rank}");
            Assert.Equal(2f, big[12345].item<float>());
            return 0;
        }, Small);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Async_and_sync_operations_interleaved_keep_their_order_and_values(int world)
    {
        Ranks.Run(world, (rank, comm) =>
        {
            float r = rank + 1; // rank r contributes r + 1; sum over ranks = world (world + 1) / 2
            float sum = world * (world + 1) / 2f;
            using var a = torch.full(50_000, r);
            using var b = torch.full(3_000, r);
            using var c = torch.full(20_001, r);
            using var synced = torch.full(10_000, r);
            using var root = torch.full(5_000, r);
            using var gathered = torch.empty(world * 2L);

            var pa = comm.AllReduceAsync(a);
            comm.AllReduce(synced, ReduceOp.Max);     // runs after a
            IPendingCollective? pb = null;            // queued from another thread, as the autograd engine would
            var other = new Thread(() => pb = comm.AllReduceAsync(b, ReduceOp.Average));
            other.Start();
            other.Join();
            comm.Broadcast(root, root: world - 1);    // after b
            var pc = comm.AllReduceAsync(c, ReduceOp.Min);
            using (var mine = torch.full(2, r)) comm.AllGather(mine, gathered);
            using var split = comm.Split(color: 0, key: -rank); // one group, ranks reversed
            comm.Barrier();
            pc.Wait(); pa.Wait(); pb!.Wait();

            Assert.True(a.eq(sum).all().item<bool>(), $"rank {rank}: a");
            Assert.True(b.eq(sum / world).all().item<bool>(), $"rank {rank}: b");
            Assert.True(c.eq(1f).all().item<bool>(), $"rank {rank}: c");
            Assert.True(synced.eq((float)world).all().item<bool>(), $"rank {rank}: synced");
            Assert.True(root.eq((float)world).all().item<bool>(), $"rank {rank}: broadcast");
            Assert.Equal(Enumerable.Range(1, world).SelectMany(x => new[] { (float)x, x }), gathered.data<float>().ToArray());
            Assert.Equal(world - 1 - rank, split.Rank);
            return 0;
        }, Small);
    }

    [Fact]
    public void Dead_peer_makes_wait_throw_quickly_and_breaks_the_communicator()
    {
        const int world = 3, dead = 1;
        var options = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20), ChunkBytes: 1 << 16);
        var (results, errors) = Ranks.TryRun(world, (rank, comm) =>
        {
            comm.Barrier();
            if (rank == dead)
            {
                Thread.Sleep(300); // the others are inside the queued all-reduces by now
                comm.Dispose();
                return TimeSpan.Zero;
            }
            using var x = torch.ones(1 << 20);
            using var y = torch.ones(1 << 20);
            var watch = Stopwatch.StartNew();
            var px = comm.AllReduceAsync(x);
            var py = comm.AllReduceAsync(y);
            var e = Assert.Throws<CollectiveException>(() => px.Wait());
            Assert.Contains($"rank {dead} (127.0.0.1:", e.Message);
            Assert.Contains($"rank {dead} (", Assert.Throws<CollectiveException>(() => py.Wait()).Message);
            Assert.Contains($"rank {dead} (", Assert.Throws<CollectiveException>(() => comm.Barrier()).Message);
            return watch.Elapsed;
        }, options);
        Assert.All(errors, e => Assert.Null(e));
        Assert.All(results, elapsed => Assert.True(elapsed < TimeSpan.FromSeconds(5), $"took {elapsed}"));
    }

    [Fact]
    public void Silent_peer_makes_wait_time_out_naming_it()
    {
        var options = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(1));
        var (results, errors) = Ranks.TryRun(3, (rank, comm) =>
        {
            if (rank == 1) { Thread.Sleep(2000); return ""; } // alive but never joins
            using var t = torch.ones(10);
            var pending = comm.AllReduceAsync(t);
            var watch = Stopwatch.StartNew();
            var message = Assert.Throws<CollectiveException>(() => pending.Wait()).Message;
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(3), $"Wait took {watch.Elapsed}");
            return message;
        }, options);
        Assert.All(errors, e => Assert.Null(e));
        Assert.Contains("rank 1 (", results[0]);
        Assert.Contains("rank 1 (", results[2]);
    }

    /// <summary>The timeout bounds a wait without progress, as the sockets bound a synchronous call: an all-reduce that
    /// keeps moving data (64-byte segments here) may take several timeouts in all and still completes.</summary>
    [Fact]
    public void A_long_async_all_reduce_that_keeps_moving_data_completes()
    {
        var timeout = TimeSpan.FromSeconds(1); // long enough for a loaded machine's socket calls; the pass takes several
        var options = new TcpOptions(TcpOptions.NewToken(), Timeout: timeout, ChunkBytes: 64);
        var (results, errors) = Ranks.TryRun(2, (rank, comm) =>
        {
            using var t = torch.ones(8 << 20); // 32 MB in 64-byte segments: about 4 s on an idle 2-core machine
            var watch = Stopwatch.StartNew();
            comm.AllReduceAsync(t).Wait();
            return (watch.Elapsed, AllTwo: t.eq(2).all().item<bool>());
        }, options);

        Assert.All(errors, e => Assert.Null(e));
        Assert.All(results, r => Assert.True(r.AllTwo));
        // the case under test: longer than a timeout and its grace (else make the tensor bigger)
        Assert.All(results, r => Assert.True(r.Elapsed > timeout * 1.25, $"took only {r.Elapsed}"));
    }
}
