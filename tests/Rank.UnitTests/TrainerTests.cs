using Job;
using Oec;
using Rank.Configuration;
using Rank.Training;
using Xunit.Abstractions;

namespace Rank.UnitTests;

public class TrainerTests(ITestOutputHelper log)
{
    [Fact]
    public void The_validation_loss_falls_far_below_ln_V_and_the_initial_loss_within_80_steps()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 80).WithTrain(t => t with { WarmupSteps = 10, EvalBatches = 4 });
        using var trainer = new Trainer(config);
        double lnV = Math.Log(trainer.Model.VocabSize);

        double initial = trainer.Evaluate();
        for (int step = 0; step < config.Train.Steps; step++) trainer.Step(step);
        double final = trainer.Evaluate();

        double entropyRate = new Data.SyntheticCorpus(512, config.Data.SyntheticTokens, config.Data.SyntheticSeed).EntropyRateNats;
        log.WriteLine($"ln V = {lnV:F3}, initial val {initial:F3}, after {config.Train.Steps} steps {final:F3}, entropy rate {entropyRate:F3}");
        Assert.Equal(512, trainer.Model.VocabSize);
        Assert.True(Math.Abs(initial - lnV) < 0.5, $"initial validation loss {initial:F3} is not near ln V = {lnV:F3}");
        Assert.True(final < lnV - 2, $"validation loss {final:F3} after {config.Train.Steps} steps is not far below ln V = {lnV:F3}");
        Assert.True(final < initial - 2, $"validation loss {final:F3} is not far below the initial {initial:F3}");
        // No model beats the corpus's entropy rate on held-out data: a loss far below it would mean the targets leak in.
        Assert.True(final > entropyRate - 0.3, $"validation loss {final:F3} is below the entropy rate {entropyRate:F3} of the corpus");
    }

    [Fact]
    public void Two_trainers_with_the_same_config_take_identical_losses()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 4);
        using var a = new Trainer(config);
        using var b = new Trainer(config);

        for (int step = 0; step < 4; step++)
        {
            var (lossA, gradA, statsA, _) = a.Step(step);
            var (lossB, gradB, statsB, _) = b.Step(step);
            log.WriteLine($"step {step}: {lossA:R} {lossB:R}");
            Assert.Equal(lossA, lossB);
            Assert.Equal(gradA, gradB);
            Assert.Equal(statsA, statsB);
        }
        Assert.Equal(0, Tensors.MaxParameterDifference(a.Model, b.Model));
    }

    [Fact]
    public void Gradient_accumulation_over_two_half_batches_equals_one_full_batch()
    {
        using var temp = new TempDirectory();
        var full = TestConfigs.Tiny(temp.Path, steps: 3).WithTrain(t => t with { BatchSize = 8, GradAccum = 1, WarmupSteps = 1 });
        var halves = full.WithTrain(t => t with { BatchSize = 4, GradAccum = 2 });
        using var a = new Trainer(full);
        using var b = new Trainer(halves);
        Assert.Equal(0, Tensors.MaxParameterDifference(a.Model, b.Model));

        for (int step = 0; step < 3; step++)
        {
            var (lossA, gradA, _, _) = a.Step(step);
            var (lossB, gradB, _, _) = b.Step(step);
            log.WriteLine($"step {step}: loss {lossA:R} vs {lossB:R}, grad {gradA:R} vs {gradB:R}");
            Assert.True(Math.Abs(lossA - lossB) < 1e-5, $"step {step}: loss {lossA} vs {lossB}");
            // AdamW hardly sees a gradient's scale, so the norm is what shows that each half counts half.
            Assert.True(Math.Abs(gradA - gradB) < 1e-4 * gradA, $"step {step}: gradient norm {gradA} vs {gradB}");
        }

        double difference = Tensors.MaxParameterDifference(a.Model, b.Model);
        log.WriteLine($"max parameter difference {difference:G3}");
        Assert.True(difference < 1e-5, $"parameters differ by up to {difference}");
    }

    [Fact]
    public void Mu_centering_keeps_mu_at_zero_after_every_step_and_none_does_not()
    {
        using var temp = new TempDirectory();
        var centered = TestConfigs.Tiny(temp.Path, steps: 10, method: OecMethod.MuCentering);
        using var a = new Trainer(centered);
        using var b = new Trainer(centered.WithOec(o => o with { Method = OecMethod.None }));

        for (int step = 0; step < 10; step++)
        {
            var (_, _, stats, _) = a.Step(step);
            b.Step(step);
            double muCentered = Tensors.MuNorm(a.Model.OutputEmbedding);
            double muNone = Tensors.MuNorm(b.Model.OutputEmbedding);
            log.WriteLine($"step {step}: |mu| centering {muCentered:G3}, none {muNone:G3}, logged {stats!.MuNorm:G3}");
            Assert.True(muCentered < 1e-6, $"step {step}: ||mu|| = {muCentered} after centering");
            Assert.True(muNone > 1e-3, $"step {step}: ||mu|| = {muNone} without centering");
            if (step > 0) Assert.True(stats.MuNorm < 1e-5, $"step {step}: the forward pass saw ||mu|| = {stats.MuNorm}");
        }
    }

    [Fact]
    public void Mu_loss_at_a_large_lambda_keeps_mu_far_smaller_than_none()
    {
        using var temp = new TempDirectory();
        // A constant learning rate, so that mu keeps drifting without a mitigation.
        var none = TestConfigs.Tiny(temp.Path, steps: 30, method: OecMethod.None).WithTrain(t => t with { MinLearningRate = t.LearningRate });
        using var a = new Trainer(none);
        using var b = new Trainer(none.WithOec(o => o with { Method = OecMethod.MuLoss, MuLossLambda = 1e2 }));
        double initial = Tensors.MuNorm(a.Model.OutputEmbedding);

        for (int step = 0; step < 30; step++)
        {
            a.Step(step);
            b.Step(step);
        }

        double muNone = Tensors.MuNorm(a.Model.OutputEmbedding);
        double muLoss = Tensors.MuNorm(b.Model.OutputEmbedding);
        log.WriteLine($"|mu| initial {initial:G3}, none {muNone:G3}, mu_loss {muLoss:G3}");
        Assert.True(muNone > 3 * initial, $"without a mitigation ||mu|| went only from {initial} to {muNone}");
        Assert.True(muLoss < 0.2 * muNone, $"||mu|| with mu-loss {muLoss} is not far below {muNone} without");
    }

    [Fact]
    public void Run_writes_the_config_the_metrics_and_the_model()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        var config = TestConfigs.Tiny(outDir, steps: 12).WithTrain(t => t with { LogEvery = 5, EvalEvery = 6 });
        using var trainer = new Trainer(config);
        var console = new StringWriter();

        var result = trainer.Run(console);

        Assert.False(result.Diverged);
        Assert.Equal(12, result.Steps);
        Assert.Equal(outDir, result.OutDir);
        Assert.Equal(config, RunConfig.Load(Path.Combine(outDir, "config.json"), []));
        Assert.Equal(config.ToJson(), Checkpoint.ReadConfig(Path.Combine(outDir, "model.safetensors")));

        var metrics = MetricsLog.Read(Path.Combine(outDir, "metrics.jsonl"));
        Assert.Equal([5, 6, 10, 12], metrics.Select(m => m.Step));                  // every log_every, every eval, the last
        Assert.Equal([false, true, false, true], metrics.Select(m => m.ValLoss is not null)); // val_loss at eval steps only
        foreach (var m in metrics)
        {
            double[] fields = [m.TrainLoss, m.LearningRate, m.GradNorm, m.TokensPerSecond, m.StepSeconds, m.MuNorm, m.MeanLogit,
                               m.LogitStd, m.MaxAbsLogit, m.MeanLogZ, m.RLog, m.ValLoss ?? 0];
            Assert.All(fields, v => Assert.True(double.IsFinite(v), $"step {m.Step}: {m}"));
            Assert.Equal(config.Train.LearningRateAt(m.Step - 1), m.LearningRate);
            Assert.Equal(config.Train.BatchSize * config.Train.SequenceLength, m.TokensPerSecond * m.StepSeconds, 6); // one clock for both
            // the mechanism measures: the mean logit is mu . h per token (an identity: a gap of float rounding)
            Assert.True(m.MeanMuDotH is double muDotH && Math.Abs(muDotH - m.MeanLogit) < 1e-4, $"step {m.Step}: mean mu.h {m.MeanMuDotH}, mean logit {m.MeanLogit}");
            Assert.True(m.MaxMeanLogitGap is < 1e-4, $"step {m.Step}: largest gap {m.MaxMeanLogitGap}");
            Assert.True(m.REmbMin is > 0 && m.REmbMean is >= 0 and <= 2 && m.REmbMin <= m.REmbMean, $"step {m.Step}: r_emb {m.REmbMin} .. {m.REmbMean}");
        }
        Assert.Equal(result.FinalTrainLoss, metrics[^1].TrainLoss);
        Assert.Equal(result.FinalValLoss, metrics[^1].ValLoss);
        Assert.Contains("done: 12 steps", console.ToString());
    }

    [Fact]
    public void A_diverging_run_stops_with_Diverged_and_a_non_finite_loss()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        var config = TestConfigs.Tiny(outDir, steps: 50, method: OecMethod.None)
            .WithTrain(t => t with { LearningRate = 1e3, MinLearningRate = 1e3, WarmupSteps = 0, GradClip = 0, LogEvery = 1 });
        using var trainer = new Trainer(config);
        var console = new StringWriter();

        var result = trainer.Run(console);

        log.WriteLine(console.ToString());
        Assert.True(result.Diverged, $"the run did not diverge: final loss {result.FinalTrainLoss}");
        Assert.False(double.IsFinite(result.FinalTrainLoss));
        Assert.True(result.Steps < 50);
        var metrics = MetricsLog.Read(Path.Combine(outDir, "metrics.jsonl"));
        Assert.Equal(result.Steps, metrics[^1].Step);
        Assert.False(double.IsFinite(metrics[^1].TrainLoss));
        Assert.False(File.Exists(Path.Combine(outDir, "model.safetensors")));
    }
}
