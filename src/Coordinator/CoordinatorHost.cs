// Hosts the coordinator's gRPC service (and gRPC health) in Kestrel over HTTP/2 without TLS, and on a second port
// (HTTP/1.1) Prometheus' /metrics and the live page.
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
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace Coordinator;

public sealed class CoordinatorHost : IAsyncDisposable
{
    readonly WebApplication app;

    readonly JobMetrics metrics;

    CoordinatorHost(WebApplication app, Uri address, JobMetrics metrics, MetricsHistory history) =>
        (this.app, Address, this.metrics, History) = (app, address, metrics, history);

    /// <summary>OpenTelemetry's service.name of the coordinator (Prometheus: target_info{service_name=...}).</summary>
    public const string ServiceName = "oec-coordinator";

    /// <summary>Where ranks reach the coordinator, e.g. http://127.0.0.1:29400.</summary>
    public Uri Address { get; }

    /// <summary>Where Prometheus scrapes the job's metrics (HTTP/1.1), e.g. http://127.0.0.1:9400/metrics.</summary>
    public Uri MetricsAddress { get; private init; } = null!;

    /// <summary>The live page (HTTP/1.1, the metrics port), e.g. http://127.0.0.1:9400/live.</summary>
    public Uri LivePageAddress { get; private init; } = null!;

    /// <summary>The step metrics the live page draws; Truncate it after a rollback.</summary>
    public MetricsHistory History { get; }

    /// <summary>The grpc.health.v1 service name that answers SERVING while the process runs (a liveness probe's); the
    /// default name "" answers NOT_SERVING once the job has failed.</summary>
    public const string LivenessService = "oec.live";

    /// <param name="listen">The address to bind: loopback for a local launch; `oecrun coordinator --host` (default Any) in a cluster.</param>
    /// <param name="port">gRPC (HTTP/2) port; 0 takes a free port.</param>
    /// <param name="metricsPort">HTTP/1.1 port for Prometheus' /metrics and the live page; 0 takes a free port.</param>
    public static async Task<CoordinatorHost> StartAsync(JobState job, JobLog log, IPAddress listen, int port, int metricsPort = 0)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders().AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        ListenOptions? http1 = null; // its endpoint holds the bound port once Kestrel has started
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(listen, port, o => o.Protocols = HttpProtocols.Http2);
            k.Listen(listen, metricsPort, o => (o.Protocols, http1) = (HttpProtocols.Http1, o));
        });
        var metrics = new JobMetrics(job);
        // service.name names the exporter in target_info; the scope label would repeat the one meter's name on every series.
        builder.Services.AddOpenTelemetry().ConfigureResource(r => r.AddService(ServiceName))
            .WithMetrics(m =>
            {
                metrics.AddTo(m);
                m.AddPrometheusExporter(o => (o.ScrapeResponseCacheDurationMilliseconds, o.ScopeInfoEnabled) = (0, false));
            });
        builder.Services.AddSingleton(job).AddSingleton(log);
        builder.Services.AddSingleton<IHostLifetime, HostedBySomeoneElse>(); // signals belong to the program hosting the coordinator
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = 1 << 20;
            o.Interceptors.Add<TokenInterceptor>();
        });
        // grpc.health.v1: SERVING while the job can still make progress, NOT_SERVING once it has failed.
        // "" (readiness): the job's state. LivenessService: the process answers, whatever the job's state: a coordinator
        // whose job failed keeps serving why (--linger), and a restart would resume the job it failed.
        builder.Services.AddGrpcHealthChecks(o => o.Services.Map(LivenessService, r => r.Name == "process"))
            .AddCheck("process", () => HealthCheckResult.Healthy("serving"))
            .AddCheck("job", () => job.Phase == JobPhase.Failed ? HealthCheckResult.Unhealthy("job failed") : HealthCheckResult.Healthy(job.Phase.ToString()));
        var app = builder.Build();
        app.MapGrpcService<CoordinatorService>();
        app.MapGrpcHealthChecksService();
        app.MapPrometheusScrapingEndpoint();
        var history = new MetricsHistory(job);
        app.MapLivePage(history, c => c.Connection.LocalPort == http1?.IPEndPoint?.Port);
        await app.StartAsync();

        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Select(a => new Uri(a)).ToList();
        string host = IPAddress.Any.Equals(listen) || IPAddress.IPv6Any.Equals(listen) ? Dns.GetHostName() : bound[0].Host;
        var address = new UriBuilder(bound[0]) { Host = host }.Uri;
        var scrape = new UriBuilder(bound[1]) { Host = host, Path = "/metrics" }.Uri;
        var page = new UriBuilder(bound[1]) { Host = host, Path = LivePage.Path }.Uri;
        log.Info($"listening on {bound[0]} (gRPC, HTTP/2 without TLS); ranks reach it at {address}; Prometheus metrics at {scrape}; live page at {page}");
        return new CoordinatorHost(app, address, metrics, history) { MetricsAddress = scrape, LivePageAddress = page };
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
        History.Dispose();
        metrics.Dispose();
    }
}
