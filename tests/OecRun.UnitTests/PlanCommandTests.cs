// `oecrun plan`: its figures are MemoryPlan's for the configuration bound as train binds it, bad values are refused
// naming the option, and the README's preset table is what the model's parameter count gives.
using System.Globalization;
using OecRun.Commands;
using Rank.Configuration;
using Rank.Model;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class PlanCommandTests
{
    static readonly string[] Gpt13 = ["model.preset=gpt3-1.3B", "data.vocab_size=50257", "train.sequence_length=2048", "train.precision=bf16",
                                      "train.batch_size=8", "run.out_dir=unused"];

    [Theory]
    [InlineData(0, "none")]
    [InlineData(3, "every:4")]
    public void The_plan_prints_the_memory_plans_figures_for_the_configuration(int zero, string checkpointing)
    {
        var (code, output, error) = Invoke(["plan", "--world-size", "8", "--gpu-memory", "141GiB", "--zero", $"{zero}",
                                            "--activation-checkpointing", checkpointing, .. Gpt13]);
        Assert.True(code == 0, error);

        var config = RunConfig.Load(null, [.. Gpt13, "job.world_size=8", $"train.zero={zero}", $"train.activation_checkpointing={checkpointing}"]);
        var plan = MemoryPlan.Of(config);
        int sequences = plan.MaxSequences(141.0 * (1L << 30));
        Assert.True(sequences > 0);
        Assert.Contains(Row("fp32 weights", plan.WeightBytes), output);
        Assert.Contains(Row("bf16 weight copies", plan.Bf16WeightBytes), output);
        Assert.Contains(Row("fp32 gradients", plan.GradientBytes), output);
        Assert.Contains(Row("AdamW state (two fp32 moments)", plan.OptimizerBytes), output);
        Assert.Contains(Row("activations per sequence, no checkpointing", plan.ActivationBytes), output);
        Assert.Contains(Row($"activations per sequence, {plan.CheckpointedBlocks} blocks recomputed", plan.CheckpointedActivationBytes), output);
        Assert.Contains(Row($"total at {sequences} sequence(s) per rank", plan.TotalBytes(sequences)), output);
        Assert.Contains($"largest micro-batch: {sequences} sequence(s) per rank, train.batch_size = {sequences * 8} (x dp 8)", output);
    }

    [Fact]
    public void The_configuration_file_and_overrides_bind_as_for_train()
    {
        using var temp = new TempDirectory();
        string file = Path.Combine(temp.Path, "run.json");
        File.WriteAllText(file, """{ "model": { "preset": "gpt3-350M" }, "job": { "world_size": 4, "vocab_parallel": 2 } }""");

        var (code, output, error) = Invoke("plan", "--config", file, "model.n_layer=2", "run.out_dir=unused");

        Assert.True(code == 0, error);
        Assert.Contains("model.preset gpt3-350M: 2 layers, d 1024, 16 heads", output);
        Assert.Contains("4 ranks = 2 replicas (dp) x 2 vocabulary shards (tp)", output);
    }

    [Fact]
    public void The_zero_stage_and_checkpointing_are_the_configurations_unless_given()
    {
        var fromConfig = Invoke(["plan", .. Gpt13, "train.zero=2", "train.activation_checkpointing=every:6"]);
        var given = Invoke(["plan", "--zero", "3", "--activation-checkpointing", "none", .. Gpt13, "train.zero=2", "train.activation_checkpointing=every:6"]);

        Assert.Contains("ZeRO stage 2; activation checkpointing every:6 (4 blocks recomputed)", fromConfig.Out); // blocks 0, 6, 12, 18
        Assert.Contains("ZeRO stage 3; activation checkpointing none (24 blocks recomputed)", given.Out);        // stage 3 recomputes every block
    }

    [Fact]
    public void A_plan_that_cannot_fit_says_so()
    {
        var (code, output, _) = Invoke(["plan", "--gpu-memory", "1GiB", .. Gpt13]);

        Assert.Equal(0, code);
        Assert.Contains("does not fit: one sequence per rank needs", output);
    }

    [Theory]
    [InlineData("--zero 4: expected 0, 1, 2 or 3", "--zero", "4")]
    [InlineData("--gpu-memory '12XB': expected a positive size in bytes", "--gpu-memory", "12XB")]
    [InlineData("--gpu-memory '0GiB': expected a positive size in bytes", "--gpu-memory", "0GiB")]
    [InlineData("--activation-checkpointing 'every:0': expected none, all or every:k", "--activation-checkpointing", "every:0")]
    [InlineData("--world-size 65537: must be in [1, 65536]", "--world-size", "65537")]
    [InlineData("--world-size 3: must be a multiple of job.vocab_parallel = 2", "--world-size", "3", "job.vocab_parallel=2")]
    [InlineData("unknown setting 'train.bogus' = 1", "train.bogus=1")]
    public void Bad_values_fail_with_exit_code_2_naming_the_option_and_value(string expected, params string[] args)
    {
        var (code, output, error) = Invoke(["plan", .. args]);

        Assert.Equal(2, code);
        Assert.Contains(expected, error);
        Assert.Equal("", output);
    }

    [Theory]
    [InlineData("141GiB", 141.0 * (1L << 30))]
    [InlineData("80GB", 80e9)]
    [InlineData("24576MiB", 24576.0 * (1 << 20))]
    [InlineData("1000", 1000)]
    [InlineData("1.5KiB", 1536)]
    public void A_memory_size_takes_bytes_or_a_unit(string text, double bytes) => Assert.Equal(bytes, PlanCommand.Bytes("--gpu-memory", text));

    [Fact]
    public void The_readmes_preset_table_is_the_parameter_count_of_each_preset()
    {
        string readme = File.ReadAllText(Path.Combine(TestPrograms.RepositoryRoot, "README.md"));

        var missing = ModelOptions.PresetNames.Select(PresetRow).Where(row => !readme.Contains(row, StringComparison.Ordinal)).ToArray();

        Assert.True(missing.Length == 0, $"README.md lacks these rows of the preset table:\n{string.Join('\n', missing)}");
    }

    /// <summary>A preset's row: its shape and parameters at V = 50304 (GPT-2's 50257 padded), untied and tied.</summary>
    static string PresetRow(string preset)
    {
        var o = new ModelOptions { Preset = preset }.Resolve();
        double Count(bool tied) => ModelShape.Of(o with { WeightTying = tied }, 50257).Parameters;
        return string.Create(CultureInfo.InvariantCulture, $"| `{preset}` | {o.NLayer} | {o.DModel} | {o.NHead} | {Count(false):N0} | {Count(true):N0} |");
    }

    static string Row(string what, double bytes) => string.Create(CultureInfo.InvariantCulture, $"| {what} | {bytes:0} | {bytes / (1L << 30):0.###} |");
}
