// Over real gRPC: the job token, the job id and the registration's rank and world size are checked, each refusal has
// its status code and is logged; the health service answers without a token.
using Coordinator.Protocol;
using Grpc.Core;
using Grpc.Health.V1;

namespace Coordinator.UnitTests;

public sealed class SecurityTests
{
    static async Task<RpcException> Refused(GrpcJob grpc, RegisterRequest request, string? token = TestJob.Token) =>
        await Assert.ThrowsAsync<RpcException>(() => grpc.Client.RegisterAsync(request, GrpcJob.Call(token)).ResponseAsync.Within());

    [Fact]
    public async Task Register_without_the_token_is_unauthenticated()
    {
        await using var grpc = await GrpcJob.StartAsync();

        var e = await Refused(grpc, TestJob.RegisterRequest(0), token: null);

        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        Assert.Contains("refused (Unauthenticated)", grpc.Job.LogText());
        Assert.Empty(grpc.Job.State.Ranks());
    }

    [Fact]
    public async Task Register_with_a_wrong_token_is_permission_denied()
    {
        await using var grpc = await GrpcJob.StartAsync();

        var e = await Refused(grpc, TestJob.RegisterRequest(0), token: "fedcba9876543210-wrong-token");

        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        Assert.Contains("refused (PermissionDenied)", grpc.Job.LogText());
        Assert.Empty(grpc.Job.State.Ranks());
    }

    [Fact]
    public async Task Register_with_the_token_but_another_job_id_is_permission_denied()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var request = TestJob.RegisterRequest(0);
        request.JobId = "another-job";

        var e = await Refused(grpc, request);

        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        Assert.Contains("another-job", e.Status.Detail);
        Assert.Contains("refused (PermissionDenied)", grpc.Job.LogText());
        Assert.Empty(grpc.Job.State.Ranks());
    }

    [Fact]
    public async Task A_rank_beyond_the_world_is_invalid_argument_naming_rank_and_world_size()
    {
        await using var grpc = await GrpcJob.StartAsync();

        var e = await Refused(grpc, TestJob.RegisterRequest(TestJob.World));

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains($"rank {TestJob.World}", e.Status.Detail);
        Assert.Contains($"world size {TestJob.World}", e.Status.Detail);
        Assert.Contains("refused (InvalidArgument)", grpc.Job.LogText());
        Assert.Empty(grpc.Job.State.Ranks());
    }

    [Fact]
    public async Task A_world_size_mismatch_is_invalid_argument()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var request = TestJob.RegisterRequest(0);
        request.WorldSize = 3;

        var e = await Refused(grpc, request);

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("WORLD_SIZE=3", e.Status.Detail);
        Assert.Contains("refused (InvalidArgument)", grpc.Job.LogText());
        Assert.Empty(grpc.Job.State.Ranks());
    }

    [Fact]
    public async Task A_further_rank_once_the_world_is_full_is_resource_exhausted()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var first = grpc.Client.RegisterAsync(TestJob.RegisterRequest(-1, pid: 1), GrpcJob.Call()).ResponseAsync;
        var second = grpc.Client.RegisterAsync(TestJob.RegisterRequest(-1, pid: 2), GrpcJob.Call()).ResponseAsync;
        await Task.WhenAll(first, second).Within();

        var e = await Refused(grpc, TestJob.RegisterRequest(-1, pid: 3));

        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.Contains("refused (ResourceExhausted)", grpc.Job.LogText());
        Assert.Equal(JobPhase.Running, grpc.Job.State.Phase);
        Assert.Equal([1, 2], grpc.Job.State.Ranks().Select(r => r.Pid).Order());
    }

    [Fact]
    public async Task Health_answers_serving_without_a_token_and_not_serving_once_the_job_failed()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var health = new Health.HealthClient(grpc.Channel);

        var serving = await health.CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow + Waits.Timeout).ResponseAsync.Within();
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, serving.Status);

        grpc.Job.State.Abort("test abort");
        var failed = await health.CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow + Waits.Timeout).ResponseAsync.Within();
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, failed.Status);
        // the liveness probe's service: the process still answers, so Kubernetes does not restart it into resuming the failed job
        var live = await health.CheckAsync(new HealthCheckRequest { Service = CoordinatorHost.LivenessService }, deadline: DateTime.UtcNow + Waits.Timeout).ResponseAsync.Within();
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, live.Status);
    }
}
