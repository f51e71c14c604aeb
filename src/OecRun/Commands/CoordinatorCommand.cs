// `oecrun coordinator`: the coordinator alone, for ranks started elsewhere (Kubernetes).
using System.CommandLine;
using System.Net;
using OecRun.Launching;

namespace OecRun.Commands;

public static class CoordinatorCommand
{
    /// <summary>The command's options: the configuration and where to listen (Host: the address both ports bind).</summary>
    public sealed record Options(RunSettings Run, string Host = "0.0.0.0", int Port = 29400, int MetricsPort = 9400, bool Linger = false);

    public static Command Create()
    {
        var command = new Command("coordinator", "Run the coordinator alone, for ranks started elsewhere (`oecrun rank`), e.g. on Kubernetes. " +
                                                 "Needs OEC_JOB_TOKEN; the job id is job.id, else OEC_JOB_ID.");
        var b = new OptionBinder<Options>(command, new Options(new RunSettings()));
        b.Add(CommandLine.ConfigOption(), (o, v) => o with { Run = o.Run with { ConfigFile = v } });
        b.Add(CommandLine.OverridesArgument(), (o, v) => o with { Run = o.Run with { Overrides = v ?? [] } });
        b.Add(new Option<string>("--host") { Description = "Address to listen on, for the ranks and for /metrics and /live: 0.0.0.0 (every interface), 127.0.0.1 (this machine only) or one interface's address.", DefaultValueFactory = _ => b.Defaults.Host },
            (o, v) => o with { Host = v });
        b.Add(new Option<int>("--port") { Description = "Port to listen on for the ranks (gRPC, at --host).", DefaultValueFactory = _ => b.Defaults.Port },
            (o, v) => o with { Port = v });
        b.Add(new Option<int>("--metrics-port") { Description = "Port of the Prometheus endpoint /metrics and the live page /live (HTTP/1.1, at --host).", DefaultValueFactory = _ => b.Defaults.MetricsPort },
            (o, v) => o with { MetricsPort = v });
        b.Add(new Option<bool>("--linger") { Description = "Keep serving health, /metrics and the live page after the job ended, until SIGTERM (for a Kubernetes Deployment)." },
            (o, v) => o with { Linger = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            var listen = ListenAddress(o.Host);
            return Launch.Cluster(o.Run.Load(), listen, o.Port, o.MetricsPort, Console.Out, o.Linger).GetAwaiter().GetResult();
        });
        return command;
    }

    // A dotted IPv4 address (IPAddress.TryParse would also take "29400" as 0.0.114.248) or an IPv6 address.
    static IPAddress ListenAddress(string host) =>
        IPAddress.TryParse(host, out var ip) && (ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork || host.Count(c => c == '.') == 3) ? ip
        : throw new ArgumentException($"--host '{host}': not an IP address to listen on (e.g. 0.0.0.0 for every interface, 127.0.0.1 for this machine only)");
}
