// Small run configurations: a tiny model on a small synthetic corpus, so that a step takes milliseconds on a CPU.
using Oec;
using Rank.Configuration;
using Rank.Training;

namespace Rank.UnitTests;

internal static class TestConfigs
{
    /// <summary>Preset tiny (2 layers, d 64, 4 heads), vocabulary 512, 30k synthetic tokens, 8 x 32 tokens a step, no validation
    /// unless asked. One libtorch thread (set process-wide by the trainer).</summary>
    public static RunConfig Tiny(string outDir, int steps = 10, OecMethod method = OecMethod.MuCentering) =>
        new RunConfig
        {
            Oec = new OecOptions { Method = method },
            Data = new DataOptions { SyntheticTokens = 30_000 },
            Train = new TrainOptions
            {
                Steps = steps,
                WarmupSteps = Math.Min(5, steps),
                BatchSize = 8,
                SequenceLength = 32,
                EvalEvery = 0,
                EvalBatches = 2,
                LogEvery = 5,
                Threads = 1, // too small to gain from more; spinning OpenMP threads crawl on a busy 2-core machine
            },
            Run = new RunOptions { OutDir = outDir },
        }.Validated();

    public static RunConfig WithTrain(this RunConfig config, Func<TrainOptions, TrainOptions> change) =>
        (config with { Train = change(config.Train) }).Validated();

    public static RunConfig WithOec(this RunConfig config, Func<OecOptions, OecOptions> change) =>
        (config with { Oec = change(config.Oec) }).Validated();
}
