// `oecrun bench-coordinator`: a coordinator process under simulated ranks.
using System.CommandLine;
using OecRun.Bench;

namespace OecRun.Commands;

public static class BenchCoordinatorCommand
{
    /// <summary>The command's options: simulated ranks, the steady window in seconds, the port (0: a free one), seconds
    /// between a rank's heartbeats.</summary>
    public sealed record Options(int Ranks = 1024, double Seconds = 30, int Port = 0, double Interval = 1);

    public static Command Create()
    {
        var command = new Command("bench-coordinator", "Measure a coordinator process under simulated ranks: registration time, heartbeat latency, its CPU and memory.");
        var b = new OptionBinder<Options>(command, new Options());
        b.Add(new Option<int>("--ranks") { Description = "Simulated ranks that register and heartbeat once a second.", DefaultValueFactory = _ => b.Defaults.Ranks }, (o, v) => o with { Ranks = v });
        b.Add(new Option<double>("--seconds") { Description = "Steady heartbeat window in seconds (after 5 s of warm-up).", DefaultValueFactory = _ => b.Defaults.Seconds },
            (o, v) => o with { Seconds = v });
        b.Add(new Option<double>("--interval") { Description = "Seconds between a rank's heartbeats (job.heartbeat_interval_s); longer: many ranks at the rate of fewer.",
            DefaultValueFactory = _ => b.Defaults.Interval }, (o, v) => o with { Interval = v });
        b.Add(new Option<int>("--port") { Description = "The coordinator's port; 0 picks a free one.", DefaultValueFactory = _ => b.Defaults.Port }, (o, v) => o with { Port = CommandLine.Port("--port", v) });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            return CoordinatorBench.Run(o.Ranks, o.Seconds, Console.Out, o.Port, o.Interval);
        });
        return command;
    }
}
