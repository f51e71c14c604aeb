// Over real gRPC: registration waits for the whole world, exchanges return every rank's value in rank order, and a
// rendezvous that never completes fails the generation naming the missing rank.
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
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { RendezvousTimeoutS = 1, MaxRestarts = 0 });

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
}
