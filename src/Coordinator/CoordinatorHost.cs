// Hosts the coordinator's gRPC service (and gRPC health) in Kestrel over HTTP/2 without TLS.
using System.Net;
using Grpc.HealthCheck;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Coordinator;

public sealed class CoordinatorHost : IAsyncDisposable
{
    readonly WebApplication app;

    CoordinatorHost(WebApplication app, Uri address) => (this.app, Address) = (app, address);

    /// <summary>Where ranks reach the coordinator, e.g. http://127.0.0.1:29400.</summary>
    public Uri Address { get; }

    /// <param name="listen">The address to bind: loopback for a local launch, Any in a cluster.</param>
    /// <param name="port">0 takes a free port.</param>
    public static async Task<CoordinatorHost> StartAsync(JobState job, JobLog log, IPAddress listen, int port)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders().AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.Listen(listen, port, o => o.Protocols = HttpProtocols.Http2));
        builder.Services.AddSingleton(job).AddSingleton(log);
        builder.Services.AddSingleton<IHostLifetime, HostedBySomeoneElse>(); // signals belong to the program hosting the coordinator
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = 1 << 20;
            o.Interceptors.Add<TokenInterceptor>();
        });
        // grpc.health.v1: SERVING while the job can still make progress, NOT_SERVING once it has failed.
        builder.Services.AddGrpcHealthChecks().AddCheck("job", () => job.Phase == JobPhase.Failed
            ? HealthCheckResult.Unhealthy("job failed") : HealthCheckResult.Healthy(job.Phase.ToString()));
        var app = builder.Build();
        app.MapGrpcService<CoordinatorService>();
        app.MapGrpcHealthChecksService();
        await app.StartAsync();

        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var uri = new Uri(bound);
        string host = IPAddress.Any.Equals(listen) || IPAddress.IPv6Any.Equals(listen) ? Dns.GetHostName() : uri.Host;
        var address = new UriBuilder(uri) { Host = host }.Uri;
        log.Info($"listening on {bound} (gRPC, HTTP/2 without TLS); ranks reach it at {address}");
        return new CoordinatorHost(app, address);
    }

    /// <summary>Neither waits for nor reacts to Ctrl+C or SIGTERM: the launcher or `oecrun coordinator` turns them
    /// into a stop of the job, which needs the service to keep answering until the ranks have checkpointed.</summary>
    sealed class HostedBySomeoneElse : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await app.StopAsync();
        await app.DisposeAsync();
    }
}
