// A TestJob served by a real CoordinatorHost on a free loopback port, with a gRPC channel to it.
using Job;
using System.Net;
using Grpc.Core;
using Grpc.Net.Client;
using CoordinatorClient = Coordinator.Protocol.Coordinator.CoordinatorClient;

namespace Coordinator.UnitTests;

internal sealed class GrpcJob : IAsyncDisposable
{
    GrpcJob(TestJob job, CoordinatorHost host)
    {
        (Job, Host) = (job, host);
        Channel = GrpcChannel.ForAddress(host.Address);
        Client = new CoordinatorClient(Channel);
    }

    public TestJob Job { get; }
    public CoordinatorHost Host { get; }
    public GrpcChannel Channel { get; }
    public CoordinatorClient Client { get; }

    public static async Task<GrpcJob> StartAsync(JobOptions? options = null, long steps = TestJob.Steps, DivergenceOptions? divergence = null)
    {
        var job = new TestJob(options, steps: steps, divergence: divergence);
        try
        {
            var host = await CoordinatorHost.StartAsync(job.State, job.Log, IPAddress.Loopback, 0).Within();
            return new GrpcJob(job, host);
        }
        catch
        {
            job.Dispose();
            throw;
        }
    }

    /// <summary>Call options with "authorization: Bearer {token}" (none when token is null) and a deadline.</summary>
    public static CallOptions Call(string? token = TestJob.Token)
    {
        var headers = new Metadata();
        if (token is not null) headers.Add("authorization", $"Bearer {token}");
        return new CallOptions(headers, DateTime.UtcNow + Waits.Timeout);
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        await Host.DisposeAsync();
        Job.Dispose();
    }
}
