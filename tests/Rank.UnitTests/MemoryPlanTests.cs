// MemoryPlan: the parameter counts of the presets, the ZeRO stages' shares, checkpointing, the largest batch, and the
// activations per sequence against the peak memory measured during training steps.
using Job;
using Rank.Configuration;
using Rank.Model;
using Rank.Parallel;
using Rank.Training;
using Xunit.Abstractions;

namespace Rank.UnitTests;

public sealed class MemoryPlanTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData("gpt3-125M", false)]
    [InlineData("gpt3-350M", true)]
    public void A_GPT3_shapes_parameter_count_is_the_built_models(string preset, bool tying)
    {
        // One block of the preset's width: the count is linear in n_layer, and the whole model would take gigabytes.
        var options = new ModelOptions { Preset = preset, NLayer = 1, WeightTying = tying };
        using var model = new Gpt(options, vocabSize: 1000, maxSequenceLength: 16);

        Assert.Equal(model.parameters().Sum(p => p.numel()), ModelShape.Of(options.Resolve(), 1000).Parameters);
    }

    [Theory]
    [InlineData("gpt3-125M", 12, 768, 12)]
    [InlineData("gpt3-350M", 24, 1024, 16)]
    [InlineData("gpt3-760M", 24, 1536, 16)]
    [InlineData("gpt3-1.3B", 24, 2048, 16)]
    [InlineData("gpt3-2.7B", 32, 2560, 32)]
    public void The_GPT3_presets_have_the_papers_shapes(string preset, int layers, int dim, int heads)
    {
        var resolved = new ModelOptions { Preset = preset }.Resolve();

        Assert.Equal((layers, dim, heads), (resolved.NLayer, resolved.DModel, resolved.NHead));
    }

    [Fact]
    public void The_papers_presets_are_unchanged()
    {
        var shapes = new[] { "16M", "29M", "57M", "109M", "221M" }.Select(p => new ModelOptions { Preset = p }.Resolve()).Select(o => (o.NLayer, o.DModel, o.NHead));

        Assert.Equal([(6, 224, 4), (9, 320, 4), (12, 480, 4), (15, 640, 4), (21, 832, 4)], shapes);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Each_ZeRO_stage_divides_its_states_by_the_data_parallel_size(int zero)
    {
        var one = Plan(worldSize: 1, zero: zero);
        var eight = Plan(worldSize: 8, zero: zero);
        var s = eight.Shape;
        double p = eight.RankParameters, root = s.EmbeddingParameters(), block = s.BlockParameters;
        double blockShards = s.Layers * Math.Ceiling(block / 8), shards = blockShards + Math.Ceiling(root / 8); // units padded to dp

        Assert.Equal(one.StateBytes, one.WeightBytes + one.Bf16WeightBytes + one.GradientBytes + one.OptimizerBytes);
        Assert.Equal(8 * (zero >= 1 ? shards : p), eight.OptimizerBytes);
        Assert.Equal(4 * (zero >= 2 ? shards + root + block : p), eight.GradientBytes); // the root's and one block's whole in backward
        Assert.Equal(4 * (zero >= 3 ? blockShards + root + 2 * block : p), eight.WeightBytes); // the root whole, a block gathered and the next arriving
        Assert.Equal(2 * (zero >= 3 ? root + block : p), eight.Bf16WeightBytes);
        Assert.Equal(one.ActivationBytes, eight.ActivationBytes); // per sequence: ZeRO shards no activation
        Assert.Equal(zero >= 3 ? s.Layers : 0, eight.CheckpointedBlocks); // stage 3 recomputes every block
        Assert.True(zero == 0 ? eight.StateBytes == one.StateBytes : eight.StateBytes < one.StateBytes);
    }

    [Fact]
    public void A_sharded_vocabulary_holds_its_rows_of_the_embeddings()
    {
        var whole = Plan(worldSize: 4, zero: 0);
        var sharded = Plan(worldSize: 4, zero: 0, vocabParallel: 4);
        var s = whole.Shape;

        Assert.Equal(s.Parameters, whole.RankParameters);
        Assert.Equal(s.Parameters - (0.75 * s.Vocab * s.Dim * 2), sharded.RankParameters); // untied: wte and lm_head
        Assert.True(sharded.LossBytes(1) < whole.LossBytes(1));
    }

    [Theory]
    [InlineData("none", 0)]
    [InlineData("all", 24)]
    [InlineData("every:2", 12)]
    [InlineData("every:5", 5)] // blocks 0, 5, 10, 15, 20
    public void Checkpointing_keeps_each_checkpointed_blocks_input_and_recomputes_one_block(string text, int checkpointed)
    {
        var plan = Plan(worldSize: 1, zero: 0) with { Checkpointing = ActivationCheckpointing.Parse(text) };
        double input = 4.0 * plan.SequenceLength * plan.Shape.Dim, block = plan.BlockActivations; // its input [T, d] fp32 (the output placeholder slimmed)

        double expected = checkpointed == 0 ? plan.ActivationBytes
            : plan.ActivationBytes - (checkpointed * block) + (checkpointed * input) + block;
        Assert.Equal(expected, plan.CheckpointedActivationBytes, 6);
        Assert.Equal(checkpointed, plan.CheckpointedBlocks);
    }

    [Fact]
    public void The_plan_of_a_configuration_takes_its_zero_stage_and_checkpointing()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["train.zero=2", "train.activation_checkpointing=every:2", "job.world_size=2", $"run.out_dir={temp.Path}"]);

        var plan = MemoryPlan.Of(config);

        Assert.Equal((2, 2, 1), (plan.Zero, plan.Layout.DataParallel, plan.CheckpointedBlocks)); // tiny: blocks 0 and 1, every:2 recomputes block 0
        Assert.Equal(plan.StateBytes, MemoryBudget.RankBytes(config));
    }

    [Fact]
    public void The_largest_batch_is_the_last_that_fits()
    {
        var plan = Plan(worldSize: 8, zero: 1);
        double memory = 80.0 * (1L << 30);

        int n = plan.MaxSequences(memory);

        Assert.True(n > 0);
        Assert.True(plan.TotalBytes(n) <= memory);
        Assert.True(plan.TotalBytes(n + 1) > memory);
        Assert.Equal(0, plan.MaxSequences(plan.TotalBytes(1) - 1));
    }

    [Theory]
    [InlineData(Precision.Fp32, 4, 128)]
    [InlineData(Precision.Bf16, 4, 128)]
    [InlineData(Precision.Fp32, 8, 256)]
    [InlineData(Precision.Bf16, 8, 256)]
    public void The_planned_activations_per_sequence_are_within_25_percent_of_the_measured_slope(Precision precision, int layers, int sequenceLength)
    {
        const int Small = 2, Large = 10;
        using var temp = new TempDirectory();
        var config = Measured(temp.Path, precision, layers, sequenceLength, Small);
        long small = PeakOfStep(config), large = PeakOfStep(config.WithTrain(t => t with { BatchSize = Large }));
        double slope = (double)(large - small) / (Large - Small), planned = MemoryPlan.Of(config).ActivationBytes;

        log.WriteLine($"{precision}, {layers} blocks, T {sequenceLength}: step peak {small} B at B = {Small}, {large} B at B = {Large}: {slope:F0} B a sequence measured, " +
                      $"{planned:F0} planned (ratio {slope / planned:F3})");
        Assert.InRange(slope / planned, 0.75, 1.25);
    }

    [Theory]
    [InlineData(Precision.Fp32)]
    [InlineData(Precision.Bf16)]
    public void Checkpointing_every_block_cuts_the_measured_activations_as_planned(Precision precision)
    {
        const int Small = 2, Large = 10;
        using var temp = new TempDirectory();
        var plain = Measured(temp.Path, precision, 8, 128, Small);
        var checkpointed = plain.WithTrain(t => t with { ActivationCheckpointing = "all" });
        // The largest of five steps' peaks: a checkpointed step's peak is the short recomputation of one block, which the
        // sampling thread can miss in a step (a missed sample only lowers a peak; the smallest, as above, once gave a
        // negative slope).
        double Slope(RunConfig config) =>
            (double)(PeakOfStep(config.WithTrain(t => t with { BatchSize = Large }), largest: true) - PeakOfStep(config, largest: true)) / (Large - Small);
        double plainSlope = Slope(plain), checkpointedSlope = Slope(checkpointed);
        double planned = MemoryPlan.Of(checkpointed).CheckpointedActivationBytes;

        log.WriteLine($"{precision}, 8 blocks, T 128: {plainSlope:F0} B a sequence without checkpointing, {checkpointedSlope:F0} with every block " +
                      $"checkpointed ({checkpointedSlope / plainSlope:F3} of it); planned {planned:F0} (measured / planned {checkpointedSlope / planned:F3})");
        Assert.True(checkpointedSlope < plainSlope / 2, $"checkpointing kept {checkpointedSlope} B a sequence of {plainSlope}");
        // One block's backward holds temporaries besides what it saved (the plan leaves them out, see the test above);
        // with only one block's activations alive they are a larger share, and whether the sampler catches them
        // depends on the machine's load: measured / planned was 0.85 to 0.93 on a quiet machine, 1.59 (bf16) in a
        // CI run beside other work, and 0.65 (fp32) at a load average of 9, where the sampler missed the recomputations'
        // peaks in all five large-batch steps. A checkpointing that kept the activations would give 4 or more.
        Assert.InRange(checkpointedSlope / planned, 0.5, 2.0);
    }

    /// <summary>Blocks of d 128 and 4 heads, vocabulary 512, a fixed loss chunk of 64 tokens (so that only the activations
    /// grow with the batch), one libtorch thread.</summary>
    static RunConfig Measured(string outDir, Precision precision, int layers, int sequenceLength, int batch) =>
        (TestConfigs.Tiny(outDir, steps: 10) with { Model = new ModelOptions { Preset = "tiny", NLayer = layers, DModel = 128 } })
            .WithTrain(t => t with { BatchSize = batch, SequenceLength = sequenceLength, Precision = precision, LossChunkTokens = 64 });

    /// <summary>The smallest of three steps' peaks (or, <paramref name="largest"/>, the largest of five), after two steps
    /// that allocate the gradients and AdamW's state.</summary>
    static long PeakOfStep(RunConfig config, bool largest = false)
    {
        using var trainer = new Trainer(config);
        trainer.Step(0);
        trainer.Step(1);
        var peaks = Enumerable.Range(2, largest ? 5 : 3).Select(step => PeakMemory.During(() => trainer.Step(step))).ToList();
        return largest ? peaks.Max() : peaks.Min();
    }

    static MemoryPlan Plan(int worldSize, int zero, int vocabParallel = 1) =>
        new(ModelShape.Of(new ModelOptions { Preset = "gpt3-1.3B" }.Resolve(), 50257), 2048, Precision.Bf16, 0,
            new ParallelLayout(worldSize, vocabParallel), zero, ActivationCheckpointing.None);
}
