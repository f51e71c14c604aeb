using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class LogitStatisticsTests
{
    // Two tokens, V = 4:
    //   token 0: [1, 2, 3, -6]     mean 0,   E[l^2] = 50/4 = 12.5,  var 12.5,  max|l| 6, max|l - mean| 6,   r 1
    //   token 1: [0.5, -0.5, 2, 0] mean 0.5, E[l^2] = 4.5/4 = 1.125, var 0.875, max|l| 2, max|l - mean| 1.5, r 0.75
    private static readonly double[,] HandLogits = { { 1, 2, 3, -6 }, { 0.5, -0.5, 2, 0 } };
    // Rows 2 and 3 are padding (zero); mu = [1, 1.5], ||mu|| = sqrt(3.25).
    private static readonly double[,] HandWeight = { { 1, 2 }, { 3, 4 }, { 0, 0 }, { 0, 0 } };

    [Fact]
    public void Compute_matches_a_hand_computation_on_small_logits()
    {
        var stats = LogitStatistics.Compute(tensor(HandLogits), tensor(HandWeight), new LocalVocabulary(4));

        double lse0 = Math.Log(Math.Exp(1) + Math.Exp(2) + Math.Exp(3) + Math.Exp(-6));
        double lse1 = Math.Log(Math.Exp(0.5) + Math.Exp(-0.5) + Math.Exp(2) + Math.Exp(0));
        const double tol = 1e-6; // computed in fp32
        TensorAssert.Close(0.25, stats.MeanLogit, tol, tol, "MeanLogit");
        TensorAssert.Close((Math.Sqrt(12.5) + Math.Sqrt(0.875)) / 2, stats.LogitStd, tol, tol, "LogitStd");
        TensorAssert.Close(6.0, stats.MaxAbsLogit, tol, tol, "MaxAbsLogit");
        TensorAssert.Close((6.0 + 2.0) / 2, stats.MeanMaxAbsLogit, tol, tol, "MeanMaxAbsLogit"); // the paper's logits_mean_absmax
        TensorAssert.Close(Math.Sqrt(3.25), stats.MuNorm, tol, tol, "MuNorm");
        TensorAssert.Close((lse0 + lse1) / 2, stats.MeanLogZ, tol, tol, "MeanLogZ");
        TensorAssert.Close((1.0 + 0.75) / 2, stats.RLog, tol, tol, "RLog");
    }

    [Fact]
    public void Compute_matches_loop_computed_statistics_on_random_logits()
    {
        manual_seed(7);
        const int n = 5, v = 11;
        var logits = randn(n, v, dtype: ScalarType.Float64) * 3 + 1;
        var weight = randn(v, 3, dtype: ScalarType.Float64);
        var l = TensorAssert.Values(logits);
        var w = TensorAssert.Values(weight);

        double meanSum = 0, stdSum = 0, maxAbs = 0, lseSum = 0, rSum = 0;
        for (int t = 0; t < n; t++)
        {
            var row = l.Skip(t * v).Take(v).ToArray();
            double mean = row.Average();
            double variance = row.Sum(x => (x - mean) * (x - mean)) / v; // population variance
            double rowMax = row.Max(Math.Abs);
            double m = row.Max();
            meanSum += mean;
            stdSum += Math.Sqrt(variance);
            maxAbs = Math.Max(maxAbs, rowMax);
            lseSum += m + Math.Log(row.Sum(x => Math.Exp(x - m)));
            rSum += row.Max(x => Math.Abs(x - mean)) / rowMax;
        }
        var mu = Enumerable.Range(0, 3).Select(c => Enumerable.Range(0, v).Sum(r => w[r * 3 + c]) / v).ToArray();

        var stats = LogitStatistics.Compute(logits, weight, new LocalVocabulary(v));

        const double tol = 1e-5;
        TensorAssert.Close(meanSum / n, stats.MeanLogit, tol, tol, "MeanLogit");
        TensorAssert.Close(stdSum / n, stats.LogitStd, tol, tol, "LogitStd");
        TensorAssert.Close(maxAbs, stats.MaxAbsLogit, tol, tol, "MaxAbsLogit");
        TensorAssert.Close(Math.Sqrt(mu.Sum(x => x * x)), stats.MuNorm, tol, tol, "MuNorm");
        TensorAssert.Close(lseSum / n, stats.MeanLogZ, tol, tol, "MeanLogZ");
        TensorAssert.Close(rSum / n, stats.RLog, tol, tol, "RLog");
    }

    // Rows 0 and 1 of HandWeight against mu = [1, 1.5]: ||e_0 - mu|| / ||e_0|| = 0.5 / sqrt 5, ||e_1 - mu|| / ||e_1||
    // = sqrt 10.25 / 5; the zero padding rows have no direction and are left out.
    /// <summary>r_emb is a token's: a padding row (here row 3, moved by the softmax's push like any row) is left out,
    /// while mu still averages over every row.</summary>
    [Fact]
    public void REmb_leaves_out_the_padding_rows()
    {
        double[,] weight = { { 1, 2 }, { 3, 4 }, { 0, 0 }, { 1.5, 2.5 } }; // row 3, padding, nearest mu
        var padded = LogitStatistics.Compute(tensor(HandLogits), tensor(weight), new LocalVocabulary(4, tokens: 3));
        var all = LogitStatistics.Compute(tensor(HandLogits), tensor(weight), new LocalVocabulary(4));

        double[] mu = [(1 + 3 + 0 + 1.5) / 4.0, (2 + 4 + 0 + 2.5) / 4.0];
        double R(double x, double y) => Math.Sqrt((x - mu[0]) * (x - mu[0]) + (y - mu[1]) * (y - mu[1])) / Math.Sqrt(x * x + y * y);
        double r0 = R(1, 2), r1 = R(3, 4), r3 = R(1.5, 2.5);
        TensorAssert.Close((r0 + r1) / 2, padded.REmbMean, 1e-6, 1e-6, "REmbMean over tokens 0 and 1 (row 2 is zero)");
        TensorAssert.Close(Math.Min(r0, r1), padded.REmbMin, 1e-6, 1e-6, "REmbMin over tokens");
        TensorAssert.Close((r0 + r1 + r3) / 3, all.REmbMean, 1e-6, 1e-6, "REmbMean over every non-zero row");
        Assert.True(r3 < Math.Min(r0, r1)); // the padding row would have set the minimum
        TensorAssert.Close(all.MuNorm, padded.MuNorm, 0, 0, "MuNorm: every row");
    }

    [Fact]
    public void REmb_matches_a_hand_computation_and_leaves_out_zero_rows()
    {
        var stats = LogitStatistics.Compute(tensor(HandLogits), tensor(HandWeight), new LocalVocabulary(4));

        double r0 = 0.5 / Math.Sqrt(5), r1 = Math.Sqrt(10.25) / 5;
        TensorAssert.Close((r0 + r1) / 2, stats.REmbMean, 1e-6, 1e-6, "REmbMean");
        TensorAssert.Close(r0, stats.REmbMin, 1e-6, 1e-6, "REmbMin");
        Assert.True(double.IsNaN(stats.MeanMuDotH) && double.IsNaN(stats.MaxMeanLogitGap), "mu . h without the hidden states");
    }

    [Fact]
    public void The_mechanism_measures_match_a_direct_computation_and_the_mean_logit_equals_mu_dot_h()
    {
        manual_seed(5);
        const int n = 6, v = 19, h = 7;
        var weight = randn(v, h, dtype: ScalarType.Float64) + 1.5; // mu far from 0
        var hidden = randn(n, h, dtype: ScalarType.Float64);
        var (w, x) = (TensorAssert.Values(weight), TensorAssert.Values(hidden));
        var mu = Enumerable.Range(0, h).Select(c => Enumerable.Range(0, v).Sum(r => w[r * h + c]) / v).ToArray();
        double muDotH = Enumerable.Range(0, n).Average(t => Enumerable.Range(0, h).Sum(c => mu[c] * x[t * h + c]));
        var rEmb = Enumerable.Range(0, v).Select(r =>
            Math.Sqrt(Enumerable.Range(0, h).Sum(c => Math.Pow(w[r * h + c] - mu[c], 2))) /
            Math.Sqrt(Enumerable.Range(0, h).Sum(c => Math.Pow(w[r * h + c], 2)))).ToArray();

        var stats = LogitStatistics.Compute(hidden.matmul(weight.t()), weight, new LocalVocabulary(v), hidden);

        const double tol = 1e-5; // fp32
        TensorAssert.Close(muDotH, stats.MeanMuDotH, tol, tol, "MeanMuDotH");
        TensorAssert.Close(muDotH, stats.MeanLogit, tol, tol, "MeanLogit (the identity)");
        Assert.True(Math.Abs(muDotH) > 1, $"the test needs a mean logit far from 0, got {muDotH}");
        Assert.True(stats.MaxMeanLogitGap < 1e-5, $"fp64 logits keep the identity to fp32 rounding, gap {stats.MaxMeanLogitGap}");
        TensorAssert.Close(rEmb.Average(), stats.REmbMean, tol, tol, "REmbMean");
        TensorAssert.Close(rEmb.Min(), stats.REmbMin, tol, tol, "REmbMin");
    }

    [Fact]
    public void The_gap_is_how_far_the_mean_logit_of_each_token_is_from_its_mu_dot_h()
    {
        // h = [1, 0] and [0, 1], mu = [1, 1.5]: mu . h = 1 and 1.5; the hand logits' means are 0 and 0.5.
        var stats = LogitStatistics.Compute(tensor(HandLogits), tensor(HandWeight), new LocalVocabulary(4), eye(2, dtype: ScalarType.Float64));

        TensorAssert.Close(1.25, stats.MeanMuDotH, 1e-6, 1e-6, "MeanMuDotH");
        TensorAssert.Close(1.0, stats.MaxMeanLogitGap, 1e-6, 1e-6, "MaxMeanLogitGap");
    }

    [Fact]
    public void After_centering_the_mean_logit_of_h_E_transposed_and_the_norm_of_mu_are_zero()
    {
        manual_seed(3);
        const int v = 37, h = 13;
        var weight = randn(v, h) + 2; // far from centred: ||mu|| about 2 sqrt(13)
        var hidden = randn(6, h);
        var vocab = new LocalVocabulary(v);

        var before = LogitStatistics.Compute(hidden.matmul(weight.t()), weight, vocab);
        OutputEmbedding.Center(weight, vocab).Dispose();
        var after = LogitStatistics.Compute(hidden.matmul(weight.t()), weight, vocab);

        Assert.True(before.MuNorm > 1, $"the test needs an uncentred weight, ||mu|| = {before.MuNorm}");
        Assert.True(Math.Abs(after.MeanLogit) < 1e-5, $"mean logit after centering {after.MeanLogit}");
        Assert.True(after.MuNorm < 1e-6, $"||mu|| after centering {after.MuNorm}");
    }

    [Fact]
    public void Compute_records_no_autograd_history_and_accepts_logits_that_require_grad()
    {
        var logits = tensor(HandLogits).requires_grad_();
        var weight = tensor(HandWeight).requires_grad_();

        var stats = LogitStatistics.Compute(logits, weight, new LocalVocabulary(4));

        TensorAssert.Close(6.0, stats.MaxAbsLogit, 1e-6, 1e-6);
        Assert.Null(logits.grad);
        Assert.Null(weight.grad);
        Assert.True(logits.is_leaf && weight.is_leaf);
    }

    [Theory]
    [InlineData(1e2)]
    [InlineData(1e3)]
    [InlineData(1e4)]
    public void LogitStd_stays_accurate_when_all_logits_drift_together(double drift)
    {
        // The divergence the paper describes: every logit moves by the same large amount; the spread stays small.
        manual_seed(11);
        const int n = 4, v = 257;
        var spread = randn(n, v, dtype: ScalarType.Float64);
        var logits = spread + drift;
        double expected = TensorAssert.Values(spread.std(1, unbiased: false)).Average();

        var stats = LogitStatistics.Compute(logits, zeros(v, 2), new LocalVocabulary(v));

        TensorAssert.Close(drift, stats.MeanLogit, 1e-5, 1e-5, "MeanLogit");
        TensorAssert.Close(expected, stats.LogitStd, 1e-3, 1e-3, "LogitStd");
    }

    [Fact]
    public void All_zero_logits_give_zero_statistics_and_no_NaN()
    {
        const int v = 5;
        var stats = LogitStatistics.Compute(zeros(3, v), zeros(v, 4), new LocalVocabulary(v));

        Assert.Equal(0.0, stats.MeanLogit);
        Assert.Equal(0.0, stats.LogitStd);
        Assert.Equal(0.0, stats.MaxAbsLogit);
        Assert.Equal(0.0, stats.MuNorm);
        Assert.Equal(0.0, stats.RLog);
        TensorAssert.Close(Math.Log(v), stats.MeanLogZ, 1e-6, 1e-6, "MeanLogZ");
    }
}
