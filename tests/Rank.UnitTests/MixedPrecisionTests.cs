// bf16 mixed precision (train.precision = bf16) against fp32: the loss curve, what must stay fp32, distributed equivalence.
using Oec;
using Rank.Configuration;
using Rank.Model;
using Rank.Training;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class MixedPrecisionTests(ITestOutputHelper log)
{
    static RunConfig Bf16(RunConfig config) => config.WithTrain(t => t with { Precision = Precision.Bf16 });

    static double[] Losses(RunConfig config)
    {
        using var trainer = new Trainer(config);
        return Enumerable.Range(0, config.Train.Steps).Select(s => trainer.Step(s, statistics: false).CrossEntropy).ToArray();
    }

    /// <summary>Trailing mean over the last <paramref name="window"/> steps (fewer at the start): a batch's own noise averaged out.</summary>
    static double[] Smoothed(double[] losses, int window) =>
        losses.Select((_, i) => losses[Math.Max(0, i - window + 1)..(i + 1)].Average()).ToArray();

    /// <summary>Mean |a - b| of the smoothed curves over the last 50 steps, and |a - b| of the final step's loss.</summary>
    static (double Curve, double Final) Difference(double[] a, double[] b)
    {
        var (sa, sb) = (Smoothed(a, 20), Smoothed(b, 20));
        return (Enumerable.Range(a.Length - 50, 50).Average(i => Math.Abs(sa[i] - sb[i])), Math.Abs(a[^1] - b[^1]));
    }

    [Fact]
    public void Bf16_and_fp32_loss_curves_over_200_steps_differ_by_under_a_tenth_of_the_seed_to_seed_spread_of_fp32()
    {
        using var temp = new TempDirectory();
        var fp32 = TestConfigs.Tiny(temp.Path, steps: 200);
        var reference = Losses(fp32);
        var otherSeed = Losses(fp32.WithTrain(t => t with { Seed = fp32.Train.Seed + 1 })); // another initialisation and batch order
        var bf16 = Losses(Bf16(fp32));

        var noise = Difference(reference, otherSeed);
        var precision = Difference(reference, bf16);
        double largest = reference.Zip(bf16, (a, b) => Math.Abs(a - b)).Max();
        log.WriteLine($"final loss: fp32 {reference[^1]:F4}, fp32 other seed {otherSeed[^1]:F4}, bf16 {bf16[^1]:F4}");
        log.WriteLine($"seed to seed (fp32): smoothed curves {noise.Curve:G3} apart over the last 50 steps, final losses {noise.Final:G3}");
        log.WriteLine($"bf16 to fp32 (same seed): smoothed curves {precision.Curve:G3} apart, final losses {precision.Final:G3}, any step at most {largest:G3}; " +
                      $"ratios to the seed spread {precision.Curve / noise.Curve:G3} and {precision.Final / noise.Final:G3}");
        Assert.True(reference[^1] < reference[0] - 1, $"fp32 did not train: loss {reference[0]:F3} -> {reference[^1]:F3}");
        // Two fp32 runs of one configuration are bitwise equal (TrainerTests): any difference here is bf16's rounding.
        Assert.True(largest > 1e-5, $"bf16 losses equal fp32's to {largest:G3}: the matmuls did not run in bf16");
        // Measured on the development CPU: ratios 0.0075 (curves) and 0.0016 (final loss); a tenth leaves a margin of 13.
        Assert.True(precision.Curve < noise.Curve / 10, $"bf16's smoothed curve is {precision.Curve:G3} from fp32's, over a tenth of the seed spread {noise.Curve:G3}");
        Assert.True(precision.Final < noise.Final / 10, $"bf16's final loss is {precision.Final:G3} from fp32's, over a tenth of the seed spread {noise.Final:G3}");
    }

    [Fact]
    public void In_bf16_the_parameters_their_gradients_and_the_AdamW_state_stay_fp32_and_the_loss_sees_fp32_logits()
    {
        using var temp = new TempDirectory();
        var config = Bf16(TestConfigs.Tiny(temp.Path, steps: 3, method: OecMethod.MuLoss));
        using var trainer = new Trainer(config);
        Assert.Equal(ScalarType.BFloat16, trainer.Compute);
        Assert.Equal(ScalarType.BFloat16, trainer.Model.Compute);
        for (int step = 0; step < 3; step++) trainer.Step(step); // the chunked head casts each chunk's logits to fp32 for the loss
        Assert.True(double.IsFinite(trainer.Evaluate()));

        Assert.All(trainer.Model.named_parameters(), p => Assert.Equal((p.name, ScalarType.Float32), (p.name, p.parameter.dtype)));
        var states = trainer.Model.parameters().Select(p => ((FlatAdamW)trainer.Optimizer).StateOf(p)).ToList();
        Assert.All(states, s => Assert.Equal((ScalarType.Float32, ScalarType.Float32), (s.ExpAvg.dtype, s.ExpAvgSq.dtype)));
        Assert.All(states, s => Assert.True(s.ExpAvgSq.max().item<float>() > 0, "an AdamW state was never updated"));

        // One more forward and backward as Trainer.Step takes them: fp32 logits, fp32 gradients at every parameter.
        using var scope = NewDisposeScope();
        var x = randint(0, 512, [2, 16], dtype: ScalarType.Int64);
        var hidden = trainer.Model.forward(x).view(32, trainer.Model.Dim);
        var logits = OutputEmbedding.Logits(hidden, trainer.Model.OutputEmbedding, config.Oec.Resolve(), trainer.Vocab, trainer.Compute);
        Assert.Equal(ScalarType.Float32, hidden.dtype);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        OutputEmbedding.Loss(logits, randint(0, 512, [32], dtype: ScalarType.Int64), trainer.Model.OutputEmbedding, config.Oec.Resolve(), trainer.Vocab).Loss.backward();
        Assert.All(trainer.Model.named_parameters(), p => Assert.Equal((p.name, ScalarType.Float32), (p.name, p.parameter.grad?.dtype)));
    }

    [Fact]
    public void A_bf16_linear_and_attention_round_like_bf16_and_in_fp32_are_the_plain_ops_bit_for_bit()
    {
        manual_seed(3);
        using var scope = NewDisposeScope();
        var layer = nn.Linear(32, 48, hasBias: false);
        var x = randn(4, 32);
        var (q, k, v) = (randn(1, 2, 8, 16), randn(1, 2, 8, 16), randn(1, 2, 8, 16));
        using var fp32 = new ComputeWeights(ScalarType.Float32);
        using var bf16 = new ComputeWeights(ScalarType.BFloat16);

        Assert.Equal(0, (Mixed.Linear(layer, x, fp32) - layer.forward(x)).abs().max().item<float>());
        var attention = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        Assert.Equal(0, (Mixed.Attention(q, k, v, ScalarType.Float32) - attention).abs().max().item<float>());

        var linear = Mixed.Linear(layer, x, bf16);
        var mixed = Mixed.Attention(q, k, v, ScalarType.BFloat16);
        // autocast's flow: matmul and attention outputs stay in bf16
        Assert.Equal((ScalarType.BFloat16, ScalarType.BFloat16), (linear.dtype, mixed.dtype));
        static Tensor Rounded(Tensor t) => t.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
        // The fp32 product of the bf16-rounded operands; a bf16 matmul accumulates in fp32, then rounds to 8 significant bits.
        var exact = nn.functional.linear(Rounded(x), Rounded(layer.weight!));
        double linearError = ((linear.to_type(ScalarType.Float32) - exact).abs() / (exact.abs() + 1e-6)).max().item<float>();
        double attentionError = (mixed.to_type(ScalarType.Float32) - attention).abs().max().item<float>();
        log.WriteLine($"bf16: linear within {linearError:G3} relative of the rounded operands' product; attention within {attentionError:G3} of fp32's");
        Assert.InRange(linearError, 1e-4, 1.0 / 256);
        Assert.True((linear.to_type(ScalarType.Float32) - layer.forward(x)).abs().max().item<float>() > 1e-3, "the bf16 linear is fp32's: no rounding happened");
        Assert.InRange(attentionError, 1e-4, 0.05); // outputs of order 1, each operand and the result within 2^-9 relative
    }

    [Fact]
    public void The_bf16_weights_are_cast_once_until_invalidated_and_their_gradient_reaches_the_fp32_weight_in_fp32()
    {
        manual_seed(4);
        var layer = nn.Linear(8, 4, hasBias: false);
        using var weights = new ComputeWeights(ScalarType.BFloat16);
        var copy = weights.Copy(layer.weight!);
        Assert.Same(copy, weights.Copy(layer.weight!));
        Assert.Equal(ScalarType.BFloat16, copy.dtype);

        for (int micro = 0; micro < 2; micro++) Mixed.Linear(layer, ones(3, 8), weights).to_type(ScalarType.Float32).sum().backward(); // two micro-batches, one copy
        Assert.Equal(ScalarType.Float32, layer.weight!.grad!.dtype);
        Assert.Equal(6.0, layer.weight.grad.max().item<float>()); // d sum(x W^T)/dW = 3 rows of ones, twice

        using (no_grad()) layer.weight.add_(1);
        Assert.Same(copy, weights.Copy(layer.weight)); // stale until the step says so
        weights.Invalidate();
        var fresh = weights.Copy(layer.weight);
        Assert.NotSame(copy, fresh);
        Assert.Equal(0, (fresh.to_type(ScalarType.Float32) - layer.weight.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32)).abs().max().item<float>());
        using var fp32 = new ComputeWeights(ScalarType.Float32);
        Assert.Same(layer.weight, fp32.Copy(layer.weight)); // nothing cached in fp32
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_dtype_flow_is_autocasts_matmul_and_attention_outputs_in_bf16_LayerNorm_and_the_residual_stream_in_fp32(bool bf16)
    {
        var compute = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        using var weights = new ComputeWeights(compute);
        var block = new Block(64, 4, 16, weights);
        var attention = new CausalSelfAttention(64, 4, 16, weights);
        var mlp = new SwiGlu(64, weights);
        var x = randn(2, 16, 64); // the residual stream, fp32

        Assert.Equal(compute, attention.forward(x).dtype);
        Assert.Equal(compute, mlp.forward(x).dtype);
        Assert.Equal(ScalarType.Float32, block.forward(x).dtype);
    }

    [Fact]
    public void The_trainer_casts_the_weights_afresh_after_every_optimizer_step()
    {
        using var temp = new TempDirectory();
        using var trainer = new Trainer(Bf16(TestConfigs.Tiny(temp.Path, steps: 2)));
        var weight = trainer.Model.OutputEmbedding;
        trainer.Step(0, statistics: false);
        var copy = trainer.Model.Weights.Copy(weight);

        Assert.Equal(0, (copy.to_type(ScalarType.Float32) - weight.detach().to_type(ScalarType.BFloat16).to_type(ScalarType.Float32)).abs().max().item<float>());
        trainer.Step(1, statistics: false);
        Assert.NotSame(copy, trainer.Model.Weights.Copy(weight));
    }

    /// <summary>|a - b| over every element of every parameter, ascending.</summary>
    static double[] Differences(Dictionary<string, double[]> a, Dictionary<string, double[]> b) =>
        a.SelectMany(kv => kv.Value.Zip(b[kv.Key], (x, y) => Math.Abs(x - y))).Order().ToArray();

    static double Percentile999(double[] ascending) => ascending[(int)(0.999 * (ascending.Length - 1))];

    [Theory]
    [InlineData(2, 1, OecMethod.MuCentering)] // data-parallel: the gradients' all-reduce
    [InlineData(1, 2, OecMethod.MuLoss)]      // vocabulary-sharded: mu, log Z, the target logit and the hidden states' gradient all-reduced
    public void A_distributed_bf16_run_takes_the_losses_and_ends_with_the_parameters_of_one_bf16_process(int dp, int tp, OecMethod method)
    {
        using var temp = new TempDirectory();
        var config = Bf16(TestConfigs.Tiny(temp.Path, steps: 10, method: method).WithOec(o => o with { MuLossLambda = 1e-1 }));
        using var single = new Trainer(config);
        var reference = Enumerable.Range(0, 10).Select(s => single.Step(s).CrossEntropy).ToArray();
        var expected = Tensors.Parameters(single.Model);
        using var fp32 = new Trainer(config.WithTrain(t => t with { Precision = Precision.Fp32 }));
        double roundingLoss = Enumerable.Range(0, 10).Max(s => Math.Abs(fp32.Step(s).CrossEntropy - reference[s]));
        var rounding = Differences(expected, Tensors.Parameters(fp32.Model));
        log.WriteLine($"bf16 against fp32, one process: largest loss difference {roundingLoss:G3}; parameter difference largest {rounding[^1]:G3}, " +
                      $"99.9th percentile {Percentile999(rounding):G3}");

        var (losses, trainers) = VocabParallelTests.RunLayout(config, dp, tp);
        try
        {
            double lossError = Enumerable.Range(0, 10).SelectMany(s => losses.Select(l => Math.Abs(l[s] - reference[s]))).Max();
            var actual = VocabParallelTests.WholeParameters(trainers, tp);
            var differences = Differences(expected, actual);
            double largest = differences[^1], p999 = Percentile999(differences);
            log.WriteLine($"bf16, {method}, dp {dp} x tp {tp}: largest loss difference {lossError:G3}; parameter difference largest {largest:G3}, 99.9th percentile {p999:G3}");
            // Not bitwise: each rank rounds its part of a matmul (a half batch's weight gradient, a half vocabulary's
            // gradient of the hidden states) to bf16 before the fp32 all-reduce adds the parts, where one process rounds
            // the whole. So the layouts differ by bf16's rounding, which the fp32 run measures: allowed twice that.
            Assert.True(lossError <= 2 * roundingLoss, $"dp {dp} x tp {tp}: the bf16 losses differ from one bf16 process by up to {lossError:G3}, over twice bf16's own {roundingLoss:G3}");
            Assert.True(largest <= 2 * rounding[^1], $"dp {dp} x tp {tp}: the bf16 parameters differ from one bf16 process by up to {largest:G3}, over twice bf16's own {rounding[^1]:G3}");
            Assert.True(p999 <= 2 * Percentile999(rounding), $"dp {dp} x tp {tp}: 0.1% of the bf16 parameters differ from one bf16 process by more than {p999:G3}, over twice bf16's own {Percentile999(rounding):G3}");
        }
        finally
        {
            foreach (var t in trainers) t?.Dispose();
        }
    }
}
