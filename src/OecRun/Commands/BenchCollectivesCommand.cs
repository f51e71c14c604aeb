// `oecrun bench-collectives`: the TCP ring's all-reduce, reduce-scatter and all-gather (algbw, busbw) next to raw TCP loopback throughput.
using System.CommandLine;
using OecRun.Bench;
using Rank;

namespace OecRun.Commands;

public static class BenchCollectivesCommand
{
    /// <summary>The command's options: world sizes (comma-separated) and the largest message in MB.</summary>
    public sealed record Options(string WorldSizes = "2,4", int MaxMegabytes = 256);

    public static Command Create()
    {
        var command = new Command("bench-collectives", "Measure the TCP ring all-reduce, reduce-scatter and all-gather (algbw, busbw) next to raw TCP loopback throughput.");
        var b = new OptionBinder<Options>(command, new Options());
        b.Add(new Option<string>("--world-sizes") { Description = "Comma-separated numbers of ranks.", DefaultValueFactory = _ => b.Defaults.WorldSizes }, (o, v) => o with { WorldSizes = v });
        b.Add(new Option<int>("--max-mb") { Description = "Largest message in MB; sizes go from 1 KB up by factors of 4.", DefaultValueFactory = _ => b.Defaults.MaxMegabytes },
            (o, v) => o with { MaxMegabytes = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            TorchRuntime.EnsureLoaded();
            var sizes = new List<long>();
            for (long bytes = 1024; bytes <= (long)o.MaxMegabytes << 20; bytes *= 4) sizes.Add(bytes);
            CollectiveBench.Run(o.WorldSizes.Split(',').Select(int.Parse).ToArray(), sizes, Console.Out);
            return 0;
        });
        return command;
    }
}
