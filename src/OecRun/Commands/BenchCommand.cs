// `oecrun bench`: tokens/s of the training step per preset and each OEC method's step-time overhead, on the CPU.
using System.CommandLine;
using OecRun.Bench;
using Rank;

namespace OecRun.Commands;

public static class BenchCommand
{
    /// <summary>The command's options: timed steps per measurement and the model presets.</summary>
    public sealed record Options(int Steps = 10, string Presets = "tiny,16M");

    public static Command Create()
    {
        var command = new Command("bench", "Measure tokens/s of the training step per preset and the step-time overhead of each OEC method.");
        var b = new OptionBinder<Options>(command, new Options());
        b.Add(new Option<int>("--steps") { Description = "Timed steps per measurement (after 3 warmup steps).", DefaultValueFactory = _ => b.Defaults.Steps }, (o, v) => o with { Steps = v });
        b.Add(new Option<string>("--presets") { Description = "Comma-separated model presets.", DefaultValueFactory = _ => b.Defaults.Presets }, (o, v) => o with { Presets = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            TorchRuntime.EnsureLoaded();
            TrainingBench.Run(CommandLine.SplitList(o.Presets), o.Steps, Console.Out);
            return 0;
        });
        return command;
    }
}
