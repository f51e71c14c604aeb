// `oecrun sweep`: the paper's learning-rate sweep, every cell an ordinary training job; resumable.
using System.CommandLine;
using Oec;
using OecRun.Launching;
using OecRun.Sweep;

namespace OecRun.Commands;

public static class SweepCommand
{
    public static Command Create()
    {
        var command = new Command("sweep", "Reproduce the paper's learning-rate sweep: every method x weight tying x learning rate x preset is an ordinary training job " +
                                           "(divergence.action = warn) in <out>/cells/<cell>/, sharing the base configuration (the CPU-sized default under --config and the overrides); " +
                                           "then results.md (final validation loss, LRS, step-time overhead) and charts against the learning rate. Ctrl+C (or --max-minutes) stops the running cells at a checkpoint; the same command resumes.");
        var b = new OptionBinder<SweepOptions>(command, new SweepOptions { OutDir = "" });
        b.Add(CommandLine.ConfigOption(), (o, v) => o with { ConfigFile = v });
        b.Add(CommandLine.OverridesArgument($"train.steps=600 train.batch_size=8 (not {string.Join(", ", SweepOptions.SweepKeys.Keys)}: the sweep sets them)"), (o, v) => o with { Overrides = v ?? [] });
        b.Add(new Option<string>("--methods") { Description = "Comma-separated OEC methods.", DefaultValueFactory = _ => string.Join(",", Enum.GetValues<OecMethod>().Select(SweepOptions.MethodName)) },
            (o, v) => o with { Methods = SweepOptions.ParseMethods(v) });
        b.Add(new Option<string>("--tying") { Description = "Comma-separated model.weight_tying settings.", DefaultValueFactory = _ => "false,true" },
            (o, v) => o with { Tying = SweepOptions.ParseTying(v) });
        b.Add(new Option<string>("--learning-rates") { Description = "Comma-separated peak learning rates, at least 2: the learning-rate sensitivity compares them (one learning rate is a job for `oecrun train`; default: the paper's grid).", DefaultValueFactory = _ => string.Join(",", SweepOptions.PaperLearningRates.Select(SweepOptions.FormatRate)) },
            (o, v) => o with { LearningRates = SweepOptions.ParseRates(v) });
        b.Add(new Option<string>("--presets") { Description = "Comma-separated model presets.", DefaultValueFactory = _ => "tiny" },
            (o, v) => o with { Presets = SweepOptions.ParsePresets(v) });
        b.Add(new Option<string?>("--seeds") { Description = "Every cell once per seed (train.seed): a count N (the base's train.seed and the N - 1 after it) or a comma-separated list; results.md gives the mean and spread over them and the LRS per seed (default: one seed, the base's)." },
            (o, v) => o with { Seeds = v is null ? null : SweepOptions.ParseSeeds(v) });
        b.Add(new Option<double?>("--max-minutes") { Description = "Bound the wall time of this invocation: when it is up the running cells stop at a checkpoint, no more start, and results.md holds the cells finished so far; the same command continues (stopped cells resume from their checkpoint)." },
            (o, v) => o with { MaxMinutes = v });
        b.Add(new Option<int>("--ranks") { Description = "job.world_size of every cell.", DefaultValueFactory = _ => b.Defaults.Ranks }, (o, v) => o with { Ranks = v });
        b.Add(new Option<int?>("--parallel") { Description = "Cells run side by side (default: cores / (ranks x train.threads), at least 1; 1 with train.device = cuda)." },
            (o, v) => o with { Parallel = v });
        b.Add(new Option<string?>("--out") { Description = "The sweep's directory: sweep.json, cells/<cell>/, results.md, the charts. Run again with the same --out to resume (default: runs/sweep-<UTC date-time>)." },
            (o, v) => o with { OutDir = CommandLine.OutputDirectory(v ?? $"runs/sweep-{DateTime.UtcNow:yyyyMMdd-HHmmss}", "--out") });
        command.SetGuardedAction(parse =>
        {
            var options = b.Bind(parse);
            using var interrupt = CommandLine.FirstInterrupt();
            return SweepRun.Run(options, Launch.SelfRankCommand(), Console.Out, interrupt.Token).GetAwaiter().GetResult();
        });
        return command;
    }
}
