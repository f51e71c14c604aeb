// `oecrun plan`: the memory a rank needs to train a configuration at a world size, ZeRO stage and activation checkpointing.
using System.CommandLine;
using System.Globalization;
using Job;
using Rank.Configuration;

namespace OecRun.Commands;

public static class PlanCommand
{
    /// <summary>The command's options: train's configuration, and over it the world size, the ZeRO stage and activation
    /// checkpointing (null: the configuration's), and the GPU's memory in bytes.</summary>
    public sealed record Options(RunSettings Settings, int? WorldSize = null, double GpuBytes = 80.0 * (1L << 30), int? Zero = null,
                                 string? Checkpointing = null);

    public static Command Create()
    {
        var command = new Command("plan", "Print the memory per rank of a configuration (same --config and overrides as train): fp32 weights, bf16 copies, " +
                                          "gradients, AdamW state, activations per sequence, the loss's chunk, and the largest micro-batch that fits a GPU.");
        var b = new OptionBinder<Options>(command, new Options(new RunSettings()));
        b.Add(CommandLine.ConfigOption(), (o, v) => o with { Settings = o.Settings with { ConfigFile = v } });
        b.Add(CommandLine.OverridesArgument(), (o, v) => o with { Settings = o.Settings with { Overrides = v ?? [] } });
        b.Add(new Option<int?>("--world-size") { Description = "Ranks W = dp x job.vocab_parallel (default: the configuration's job.world_size)." },
            (o, v) => o with { WorldSize = v });
        b.Add(new Option<string>("--gpu-memory") { Description = "One GPU's memory: bytes, or with a unit (141GiB, 80GB, 24576MiB).", DefaultValueFactory = _ => "80GiB" },
            (o, v) => o with { GpuBytes = Bytes("--gpu-memory", v) });
        b.Add(new Option<int?>("--zero") { Description = "ZeRO stage over the data group (default: train.zero): 0 (none), 1 (AdamW state), 2 (and gradients), 3 (and the blocks' weights)." },
            (o, v) => o with { Zero = v is null or (>= 0 and <= 3) ? v : throw new ArgumentException($"--zero {v}: expected 0, 1, 2 or 3") });
        b.Add(new Option<string?>("--activation-checkpointing") { Description = "none, all (every block) or every:k (blocks 0, k, 2k, ...; default: train.activation_checkpointing)." },
            (o, v) => o with { Checkpointing = v is null ? null : Checked(v) });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            var config = Over(o.Settings.Load(), o);
            Write(MemoryPlan.Of(config), config, o.GpuBytes, Console.Out);
            return 0;
        });
        return command;
    }

    static string Checked(string checkpointing)
    {
        try
        {
            _ = Rank.Parallel.ActivationCheckpointing.Parse(checkpointing);
            return checkpointing;
        }
        catch (ArgumentException)
        {
            throw new ArgumentException($"--activation-checkpointing '{checkpointing}': expected none, all or every:k with k >= 1 (blocks 0, k, 2k, ...)");
        }
    }

    /// <summary>The configuration with the command's --world-size, --zero and --activation-checkpointing over it.</summary>
    static RunConfig Over(RunConfig config, Options o)
    {
        config = WithWorldSize(config, o.WorldSize);
        return config with { Train = config.Train with { Zero = o.Zero ?? config.Train.Zero, ActivationCheckpointing = o.Checkpointing ?? config.Train.ActivationCheckpointing } };
    }

    static RunConfig WithWorldSize(RunConfig config, int? worldSize)
    {
        if (worldSize is not int w) return config;
        if (w < 1 || w > JobOptions.MaxWorldSize) throw new ArgumentException($"--world-size {w}: must be in [1, {JobOptions.MaxWorldSize}] (job.world_size's range)");
        if (w % config.Job.VocabParallel != 0)
            throw new ArgumentException($"--world-size {w}: must be a multiple of job.vocab_parallel = {config.Job.VocabParallel} (W = dp x tp)");
        return config with { Job = config.Job with { WorldSize = w } };
    }

    static readonly (string Suffix, double Factor)[] Units =
        [("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1)];

    /// <summary>A size in bytes: a number, or a number and one of B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB,
    /// TiB (powers of 1024); throws naming <paramref name="option"/> and the text otherwise.</summary>
    public static double Bytes(string option, string text)
    {
        var unit = Units.FirstOrDefault(u => text.EndsWith(u.Suffix, StringComparison.Ordinal));
        string number = unit.Suffix is null ? text : text[..^unit.Suffix.Length];
        if (double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) && value > 0 && double.IsFinite(value))
            return value * (unit.Suffix is null ? 1 : unit.Factor);
        throw new ArgumentException($"{option} '{text}': expected a positive size in bytes, or with a unit such as 141GiB, 80GB or 24576MiB");
    }

    const double GiB = 1L << 30;
    static readonly CultureInfo C = CultureInfo.InvariantCulture;

    static void Write(MemoryPlan plan, RunConfig config, double gpuBytes, TextWriter output)
    {
        int sequences = plan.MaxSequences(gpuBytes);
        Header(plan, config, gpuBytes, output);
        Table(plan, Math.Max(1, sequences), output);
        output.WriteLine(sequences == 0
            ? string.Create(C, $"does not fit: one sequence per rank needs {plan.TotalBytes(1) / GiB:0.###} GiB, {gpuBytes / GiB:0.###} GiB on the GPU; raise --zero or the world size")
            : string.Create(C, $"largest micro-batch: {sequences} sequence(s) per rank, train.batch_size = {(long)sequences * plan.Layout.DataParallel} " +
                               $"(x dp {plan.Layout.DataParallel}); the CUDA context and allocator fragmentation come on top"));
    }

    static void Header(MemoryPlan plan, RunConfig config, double gpuBytes, TextWriter output)
    {
        var s = plan.Shape;
        output.WriteLine(string.Create(C, $"model.preset {config.Model.Preset}: {s.Layers} layers, d {s.Dim}, {s.Heads} heads, V {s.Vocab} {(s.Tied ? "tied" : "untied")}, " +
            $"{s.Parameters:N0} parameters ({plan.RankParameters:N0} on a rank); T {plan.SequenceLength}, train.precision {config.Train.Precision.ToString().ToLowerInvariant()}"));
        output.WriteLine(string.Create(C, $"{plan.Layout}; ZeRO stage {plan.Zero}{(plan.Stage != plan.Zero ? " (0 applies: one rank per data group)" : "")}; activation checkpointing {plan.Checkpointing} ({plan.CheckpointedBlocks} blocks recomputed); " +
            $"loss chunk {plan.ChunkTokens:0} tokens; GPU memory {gpuBytes / GiB:0.##} GiB"));
        output.WriteLine();
    }

    /// <summary>Bytes per rank, the loss and the totals at <paramref name="shown"/> sequences per rank.</summary>
    static void Table(MemoryPlan plan, int shown, TextWriter output)
    {
        output.WriteLine("| per rank | bytes | GiB |");
        output.WriteLine("|---|---|---|");
        void Row(string what, double bytes) => output.WriteLine(string.Create(C, $"| {what} | {bytes:0} | {bytes / GiB:0.###} |"));
        Row("fp32 weights", plan.WeightBytes);
        Row("bf16 weight copies", plan.Bf16WeightBytes);
        Row("fp32 gradients", plan.GradientBytes);
        Row("AdamW state (two fp32 moments)", plan.OptimizerBytes);
        Row(string.Create(C, $"loss: dL/dE and one chunk of min({plan.ChunkTokens:0}, {shown} x T) tokens' logits and their backward"), plan.LossBytes(shown));
        Row("total without activations", plan.StateBytes + plan.LossBytes(shown));
        Row("activations per sequence, no checkpointing", plan.ActivationBytes);
        Row($"activations per sequence, {plan.CheckpointedBlocks} blocks recomputed", plan.CheckpointedActivationBytes);
        Row($"total at {shown} sequence(s) per rank", plan.TotalBytes(shown));
        output.WriteLine();
    }
}
