// Activation checkpointing against the plain step: the same losses and parameters, bit for bit.
using Oec;
using Rank.Parallel;
using Rank.Training;

namespace Rank.UnitTests;

public class ActivationCheckpointingTests
{
    const int Steps = 4;

    [Theory]
    [InlineData(Precision.Fp32, false, "all")]
    [InlineData(Precision.Bf16, false, "all")]
    [InlineData(Precision.Fp32, true, "every:2")]
    [InlineData(Precision.Bf16, true, "every:2")]
    public void Recomputing_blocks_in_backward_changes_no_bit(Precision precision, bool tying, string checkpointing)
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: Steps, method: OecMethod.MuLoss)
            .WithTrain(t => t with { Precision = precision, GradAccum = 2 })
            with { Model = new Model.ModelOptions { WeightTying = tying, NLayer = 3 } };
        config = config.Validated();
        var (plainLosses, plain) = Train(config);
        var (checkpointedLosses, checkpointed) = Train(config.WithTrain(t => t with { ActivationCheckpointing = checkpointing }));

        Assert.Equal(plainLosses, checkpointedLosses);
        Assert.All(plain, kv => Assert.Equal(kv.Value, checkpointed[kv.Key]));
    }

    [Fact]
    public void Every_k_covers_blocks_0_k_2k()
    {
        var every2 = ActivationCheckpointing.Parse("every:2");
        Assert.Equal([true, false, true, false, true], Enumerable.Range(0, 5).Select(every2.Covers));
        Assert.All(Enumerable.Range(0, 5), k => Assert.True(ActivationCheckpointing.Parse("all").Covers(k)));
        Assert.All(Enumerable.Range(0, 5), k => Assert.False(ActivationCheckpointing.Parse("none").Covers(k)));
    }

    [Theory]
    [InlineData("every:0")]
    [InlineData("some")]
    [InlineData("every:x")]
    public void A_bad_value_is_refused_naming_the_option(string value)
    {
        var e = Assert.Throws<ArgumentException>(() => new TrainOptions { ActivationCheckpointing = value }.Validate());
        Assert.Contains($"train.activation_checkpointing = '{value}'", e.Message);
    }

    static (double[] Losses, Dictionary<string, double[]> Parameters) Train(Configuration.RunConfig config)
    {
        using var trainer = new Trainer(config);
        var losses = Enumerable.Range(0, Steps).Select(s => trainer.Step(s).CrossEntropy).ToArray();
        return (losses, Tensors.Parameters(trainer.Model));
    }
}
