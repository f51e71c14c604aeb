// The CPU benchmark: tokens/s of the training step per preset, and each OEC method's step time against none.
using System.Diagnostics;
using Oec;
using Rank.Configuration;
using Rank.Model;
using Rank.Training;

namespace Rank;

public static class Bench
{
    /// <summary>
    /// For each preset, one trainer per method on the same data and seed; the methods take their steps in turn
    /// (round-robin), so that a noisy machine slows all of them alike, and the median step times are compared.
    /// </summary>
    public static void Run(IReadOnlyList<string> presets, int steps, TextWriter console)
    {
        console.WriteLine($"| preset | parameters | tokens/step | method | median ms/step | tokens/s | vs none |");
        console.WriteLine($"|---|---|---|---|---|---|---|");
        foreach (var preset in presets)
        {
            var config = ConfigFor(preset);
            var trainers = Enum.GetValues<OecMethod>().Select(m => new Trainer(config with { Oec = config.Oec with { Method = m } })).ToList();
            var times = trainers.Select(_ => new List<double>()).ToList();
            for (int round = 0; round < steps + 3; round++)
                for (int i = 0; i < trainers.Count; i++)
                {
                    var clock = Stopwatch.StartNew();
                    trainers[i].Step(round, statistics: false);
                    if (round >= 3) times[i].Add(clock.Elapsed.TotalMilliseconds); // the first 3 rounds warm up
                }
            long parameters = trainers[0].Model.parameters().Sum(p => p.numel());
            int tokens = config.Train.BatchSize * config.Train.SequenceLength;
            double baseline = Median(times[0]);
            for (int i = 0; i < trainers.Count; i++)
            {
                double ms = Median(times[i]);
                console.WriteLine($"| {preset} | {parameters / 1e6:F2}M | {tokens} | {trainers[i].Config.Oec.Method} | {ms:F1} | {tokens / ms * 1000:F0} | {(ms / baseline - 1) * 100:+0.0;-0.0}% |");
            }
            trainers.ForEach(t => t.Dispose());
        }
    }

    /// <summary>tiny: the default run's shapes. Larger presets: GPT-2's vocabulary (50257, padded 50304), T = 256, B = 4.</summary>
    static RunConfig ConfigFor(string preset)
    {
        var config = new RunConfig { Model = new ModelOptions { Preset = preset } };
        if (preset.Equals("tiny", StringComparison.OrdinalIgnoreCase)) return config.Validated();
        return (config with
        {
            Data = config.Data with { VocabSize = 50257, SyntheticTokens = 200_000 },
            Train = config.Train with { BatchSize = 4, SequenceLength = 256 },
        }).Validated();
    }

    static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
