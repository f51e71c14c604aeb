// `oecrun bench-vocab`: the vocabulary-sharded head per tp: memory per rank, step time, the OEC methods' overhead.
using System.CommandLine;
using OecRun.Bench;
using Rank;

namespace OecRun.Commands;

public static class BenchVocabCommand
{
    /// <summary>The command's options: timed steps, the corpus's vocabulary and the tp sizes (comma-separated).</summary>
    public sealed record Options(int Steps = 10, int Vocab = 32768, string Parts = "1,2,4");

    public static Command Create()
    {
        var command = new Command("bench-vocab", "Measure the vocabulary-sharded head per tp: head parameter and optimizer-state memory per rank, " +
                                                 "step time, and the overhead of mu-loss and mu-centering against none.");
        var b = new OptionBinder<Options>(command, new Options());
        b.Add(new Option<int>("--steps") { Description = "Timed steps per method and tp (after 2 warmup steps).", DefaultValueFactory = _ => b.Defaults.Steps }, (o, v) => o with { Steps = v });
        b.Add(new Option<int>("--vocab") { Description = "Vocabulary size of the synthetic corpus (padded to a multiple of 64 x every tp).", DefaultValueFactory = _ => b.Defaults.Vocab },
            (o, v) => o with { Vocab = v });
        b.Add(new Option<string>("--parts") { Description = "Comma-separated vocabulary-parallel sizes tp (ranks are threads of this process).", DefaultValueFactory = _ => b.Defaults.Parts },
            (o, v) => o with { Parts = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            TorchRuntime.EnsureLoaded();
            var tps = CommandLine.SplitList(o.Parts).Select(p => int.TryParse(p, out int tp) ? tp : throw new ArgumentException($"--parts: '{p}' is not a number")).ToArray();
            return VocabBench.Run(tps, o.Steps, o.Vocab, Console.Out);
        });
        return command;
    }
}
