// Over real gRPC: registration waits for the whole world, exchanges return every rank's value in rank order (a split's
// group's exchange waits for its group alone), and a rendezvous that never completes fails the generation naming the
// missing rank; the first rank may take job.startup_timeout_s, the rest job.rendezvous_timeout_s after it.
using Job;
using Coordinator.Protocol;
using Grpc.Core;

namespace Coordinator.UnitTests;

public sealed class RendezvousTests
{
    [Fact]
    public async Task Two_ranks_register_together_and_exchange_in_rank_order()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var first = grpc.Client.RegisterAsync(TestJob.RegisterRequest(-1, pid: 1), GrpcJob.Call()).ResponseAsync;

        await Task.Delay(TimeSpan.FromMilliseconds(500));
        Assert.False(first.IsCompleted, "the first Register returned before the world was complete");
        Assert.Equal(JobPhase.Registering, grpc.Job.State.Phase);

        var second = grpc.Client.RegisterAsync(TestJob.RegisterRequest(-1, pid: 2), GrpcJob.Call()).ResponseAsync;
        var replies = await Task.WhenAll(first, second).Within();

        Assert.Equal([0, 1], replies.Select(r => r.Rank).Order());
        Assert.All(replies, r =>
        {
            Assert.Equal(1, r.Generation);
            Assert.Equal(TestJob.World, r.WorldSize);
            Assert.Equal(0, r.StartStep);
            Assert.Equal("", r.ResumeFrom);
            Assert.Equal(TestJob.ConfigJson, r.ConfigJson);
            Assert.Equal("tcp", r.Bootstrap.Backend);
        });
        Assert.Equal(replies[0].Bootstrap.GroupKey, replies[1].Bootstrap.GroupKey);
        Assert.Equal(JobPhase.Running, grpc.Job.State.Phase);

        // Rank 1 publishes first; both get the values indexed by rank.
        ExchangeRequest Publish(int rank) => new()
        {
            JobId = TestJob.JobId, Generation = 1, Rank = rank, Key = replies[0].Bootstrap.GroupKey + "/endpoints", Value = $"10.0.0.{rank}:600{rank}",
        };
        var fromRank1 = grpc.Client.ExchangeAsync(Publish(1), GrpcJob.Call()).ResponseAsync;
        await Task.Delay(TimeSpan.FromMilliseconds(200));
        Assert.False(fromRank1.IsCompleted, "the exchange returned before every rank published");
        var fromRank0 = grpc.Client.ExchangeAsync(Publish(0), GrpcJob.Call()).ResponseAsync;
        var exchanged = await Task.WhenAll(fromRank0, fromRank1).Within();

        Assert.All(exchanged, x => Assert.Equal(["10.0.0.0:6000", "10.0.0.1:6001"], x.Values));
    }

    [Fact]
    public async Task A_rendezvous_timeout_fails_the_generation_naming_the_missing_rank()
    {
        // the first rank may take its time (a loaded machine); the rest get 1 s after it
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { RendezvousTimeoutS = 1, StartupTimeoutS = 120, MaxRestarts = 0 });

        var e = await Assert.ThrowsAsync<RpcException>(() =>
            grpc.Client.RegisterAsync(TestJob.RegisterRequest(0), GrpcJob.Call()).ResponseAsync.Within());

        Assert.Equal(StatusCode.Aborted, e.StatusCode);
        Assert.Contains("rendezvous timed out", e.Status.Detail);
        Assert.Contains("ranks [1] of 2 never registered", e.Status.Detail);
        var outcome = await grpc.Job.State.Outcome.Within();
        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.Equal(1, outcome.ExitCode);
        Assert.Contains("ranks [1] of 2 never registered", outcome.Reason);
        Assert.Equal(JobPhase.Failed, grpc.Job.State.Phase);
    }

    [Fact]
    public async Task The_first_rank_may_take_the_startup_timeout_and_the_rest_the_rendezvous_timeout_after_it()
    {
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { StartupTimeoutS = 60, RendezvousTimeoutS = 1, MaxRestarts = 0 });

        await Task.Delay(TimeSpan.FromSeconds(2));                       // twice the rendezvous timeout, no rank yet
        Assert.Equal(JobPhase.Registering, grpc.Job.State.Phase);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RpcException>(() =>
            grpc.Client.RegisterAsync(TestJob.RegisterRequest(0), GrpcJob.Call()).ResponseAsync.Within());

        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(0.9), $"failed {clock.Elapsed.TotalSeconds:0.00} s after the first rank: not counted from it");
        Assert.Equal(StatusCode.Aborted, e.StatusCode);
        Assert.Contains("rendezvous timed out 1 s after the first rank registered: ranks [1] of 2 never registered", e.Status.Detail);
    }

    [Fact]
    public async Task A_generation_no_rank_joins_fails_after_the_startup_timeout_saying_so()
    {
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { StartupTimeoutS = 1, RendezvousTimeoutS = 60, MaxRestarts = 0 });

        var outcome = await grpc.Job.State.Outcome.Within();

        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.Contains("no rank registered within 1 s of generation 1's start (job.startup_timeout_s", outcome.Reason);
    }

    [Fact]
    public async Task An_exchange_of_a_group_smaller_than_the_world_completes_with_the_group_alone()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var groupKey = (await RegisterWorld(grpc))[0].Bootstrap.GroupKey;

        // World rank 1 is rank 0 of a one-rank split group: it must not wait for world rank 0.
        var alone = await grpc.Client.ExchangeAsync(Publish(groupKey + "/split0/color1/endpoints", 0, "10.0.0.1:6001", size: 1), GrpcJob.Call()).ResponseAsync.Within();

        Assert.Equal(["10.0.0.1:6001"], alone.Values);
        Assert.Equal(JobPhase.Running, grpc.Job.State.Phase);
    }

    [Fact]
    public async Task Callers_of_one_key_that_disagree_on_its_group_size_are_refused_naming_the_key_and_both_sizes()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var key = (await RegisterWorld(grpc))[0].Bootstrap.GroupKey + "/split0/color0/endpoints";
        // The first caller publishes in-process: JobState records it before Exchange returns, so the gRPC call below
        // is the later one whatever the load (two gRPC calls in flight may arrive in either order).
        var first = grpc.Job.State.Exchange(new Caller(TestJob.JobId, 1, 0, "test"), key, "10.0.0.0:6000", 2, CancellationToken.None);

        var e = await Assert.ThrowsAsync<RpcException>(() =>
            grpc.Client.ExchangeAsync(Publish(key, 0, "10.0.0.1:6001", size: 1), GrpcJob.Call()).ResponseAsync.Within());

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains($"exchange '{key}'", e.Status.Detail);
        Assert.Contains("says the group has 1 ranks, an earlier caller said 2", e.Status.Detail);
        Assert.False(first.IsCompleted, "the exchange of two returned with one rank published");
    }

    [Theory]
    [InlineData(3, 0, "a group of 3 ranks in a world of 2")]
    [InlineData(-1, 0, "a group of -1 ranks in a world of 2")]
    [InlineData(1, 1, "rank 1 outside its group of 1 ranks")]
    public async Task An_exchange_group_beyond_the_world_or_a_rank_outside_its_group_is_refused(int size, int rank, string expected)
    {
        await using var grpc = await GrpcJob.StartAsync();
        var key = (await RegisterWorld(grpc))[0].Bootstrap.GroupKey + "/split0/color0/endpoints";

        var e = await Assert.ThrowsAsync<RpcException>(() =>
            grpc.Client.ExchangeAsync(Publish(key, rank, "10.0.0.0:6000", size), GrpcJob.Call()).ResponseAsync.Within());

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(expected, e.Status.Detail);
    }

    static async Task<RegisterReply[]> RegisterWorld(GrpcJob grpc) =>
        await Task.WhenAll(Enumerable.Range(0, TestJob.World)
            .Select(r => grpc.Client.RegisterAsync(TestJob.RegisterRequest(r), GrpcJob.Call()).ResponseAsync)).Within();

    static ExchangeRequest Publish(string key, int rank, string value, int size) =>
        new() { JobId = TestJob.JobId, Generation = 1, Rank = rank, Key = key, Value = value, WorldSize = size };
}
