// `oecrun bench-collectives`: the TCP ring's all-reduce, reduce-scatter and all-gather (algbw, busbw) next to raw TCP loopback throughput.
using System.CommandLine;
using OecRun.Bench;
using Rank;

namespace OecRun.Commands;

public static class BenchCollectivesCommand
{
    /// <summary>The command's options: world sizes (comma-separated), the largest message in MB, the ring's segment in KB.</summary>
    public sealed record Options(string WorldSizes = "2,4", int MaxMegabytes = 256, int SegmentKilobytes = 1024);

    public static Command Create()
    {
        var command = new Command("bench-collectives", "Measure the TCP ring all-reduce, reduce-scatter and all-gather (algbw, busbw) next to raw TCP loopback throughput.");
        var b = new OptionBinder<Options>(command, new Options());
        b.Add(new Option<string>("--world-sizes") { Description = "Comma-separated numbers of ranks.", DefaultValueFactory = _ => b.Defaults.WorldSizes }, (o, v) => o with { WorldSizes = v });
        b.Add(new Option<int>("--max-mb") { Description = "Largest message in MB; sizes go from 1 KB up by factors of 4.", DefaultValueFactory = _ => b.Defaults.MaxMegabytes },
            (o, v) => o with { MaxMegabytes = v });
        b.Add(new Option<int>("--segment-kb") { Description = "The ring's pipelining segment in KB (bytes per socket send and receive).", DefaultValueFactory = _ => b.Defaults.SegmentKilobytes },
            (o, v) => o with { SegmentKilobytes = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            TorchRuntime.EnsureLoaded();
            var sizes = new List<long>();
            for (long bytes = 1024; bytes <= (long)o.MaxMegabytes << 20; bytes *= 4) sizes.Add(bytes);
            if (o.SegmentKilobytes is < 1 or > 1 << 20)
                throw new ArgumentException($"--segment-kb = {o.SegmentKilobytes}: expected 1 to {1 << 20}");
            CollectiveBench.Run(o.WorldSizes.Split(',').Select(int.Parse).ToArray(), sizes, Console.Out, o.SegmentKilobytes << 10);
            return 0;
        });
        return command;
    }
}
