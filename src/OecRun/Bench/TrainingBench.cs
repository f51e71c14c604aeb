// The CPU benchmark: tokens/s of the training step per preset and precision, each OEC method's step time against none.
using System.Diagnostics;
using Oec;
using Rank.Configuration;
using Rank.Model;
using TorchSharp;
using static TorchSharp.torch;
using Rank.Training;

namespace OecRun.Bench;

public static class TrainingBench
{
    /// <summary>
    /// For each preset, one trainer per precision and method on the same data and seed; they take their steps in turn
    /// (round-robin), so that a noisy machine slows all of them alike, and the median step times are compared: each
    /// method against none in the same precision, and bf16 against fp32 for the same method.
    /// </summary>
    public static void Run(IReadOnlyList<string> presets, int steps, TextWriter console)
    {
        console.WriteLine($"| preset | parameters | tokens/step | precision | method | median ms/step | tokens/s | vs none | vs fp32 |");
        console.WriteLine($"|---|---|---|---|---|---|---|---|---|");
        var optimizers = new List<string>();
        foreach (var preset in presets)
        {
            var config = ConfigFor(preset);
            var runs = (from precision in Enum.GetValues<Precision>() from method in Enum.GetValues<OecMethod>() select (precision, method)).ToList();
            var trainers = runs.Select(r => new Trainer(config with { Oec = config.Oec with { Method = r.method }, Train = config.Train with { Precision = r.precision } })).ToList();
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
            double MedianOf(Precision precision, OecMethod method) => Median(times[runs.IndexOf((precision, method))]);
            for (int i = 0; i < trainers.Count; i++)
            {
                var (precision, method) = runs[i];
                double ms = Median(times[i]);
                console.WriteLine($"| {preset} | {parameters / 1e6:F2}M | {tokens} | {precision.ToString().ToLowerInvariant()} | {method} | {ms:F1} | {tokens / ms * 1000:F0} " +
                                  $"| {Percent(ms, MedianOf(precision, OecMethod.None))} | {Percent(ms, MedianOf(Precision.Fp32, method))} |");
            }
            int tensors = trainers[0].Model.parameters().Count();
            trainers.ForEach(t => t.Dispose());
            var (adamw, flat) = TimeOptimizers(() => new Gpt(config.Model, config.Data.ResolvedVocabSize, config.Train.SequenceLength), CPU, 50);
            optimizers.Add($"| {preset} | {tensors} | {adamw:F2} | {flat:F2} | {flat / adamw:F2} |");
        }
        console.WriteLine();
        console.WriteLine("The optimizer step alone (same parameters and gradients, alternating steps, median of 50):");
        console.WriteLine("| preset | parameter tensors | TorchSharp AdamW ms | FlatAdamW ms | ratio |");
        console.WriteLine("|---|---|---|---|---|");
        optimizers.ForEach(console.WriteLine);
    }

    /// <summary>
    /// The optimizer step alone, TorchSharp's AdamW against <see cref="FlatAdamW"/> on two copies of one model with the
    /// same gradients, steps alternating (so that noise hits both alike): median ms per step of each and their ratio.
    /// On a GPU this is the host's launch cost that the flat buffers remove; with <paramref name="kernels"/> FlatAdamW
    /// steps each group in one launch of the fused kernel.
    /// </summary>
    public static (double TorchSharpMs, double FlatMs) TimeOptimizers(Func<Gpt> build, Device device, int steps, Kernels.KernelRuntime? kernels = null)
    {
        using var a = build();
        using var b = build();
        a.to(device);
        b.to(device);
        var (pa, pb) = (a.parameters().ToList(), b.parameters().ToList());
        using (no_grad())
            foreach (var p in pa) p.grad = full_like(p, 1e-3);
        using var adamw = optim.AdamW(pa, 1e-3, 0.9, 0.95, 1e-8, 0);
        using var flat = new FlatAdamW([(pb, 0)], 0.9, 0.95, 1e-8) { Kernels = kernels };
        using (no_grad())
            foreach (var p in pb) p.grad!.fill_(1e-3);
        var (torchSharp, ours) = (new List<double>(), new List<double>());
        for (int i = 0; i < steps + 3; i++)
        {
            Synchronize(device);
            var clock = Stopwatch.StartNew();
            adamw.step();
            Synchronize(device);
            if (i >= 3) torchSharp.Add(clock.Elapsed.TotalMilliseconds);
            clock.Restart();
            flat.Step(1e-3);
            Synchronize(device);
            if (i >= 3) ours.Add(clock.Elapsed.TotalMilliseconds);
        }
        return (Median(torchSharp), Median(ours));
    }

    /// <summary>Waits for the GPU's queued work, so that a clock read after it measures the work; nothing on the CPU.</summary>
    internal static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    /// <summary>Step time relative to a reference: +10.0% is 10% slower.</summary>
    static string Percent(double ms, double reference) => $"{(ms / reference - 1) * 100:+0.0;-0.0}%";

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

    internal static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
