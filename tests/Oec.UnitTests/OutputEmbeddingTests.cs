using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class OutputEmbeddingTests
{
    // V = 4 rows, H = 2; rows 2 and 3 are (zero) padding rows. mu = [4/4, 6/4] = [1, 1.5], ||mu||^2 = 3.25.
    private static Tensor HandWeight(bool requiresGrad = false) =>
        tensor(new double[,] { { 1, 2 }, { 3, 4 }, { 0, 0 }, { 0, 0 } }, requires_grad: requiresGrad);

    private static double LogSumExp(IEnumerable<double> row)
    {
        var r = row.ToArray();
        double m = r.Max();
        return m + Math.Log(r.Sum(x => Math.Exp(x - m)));
    }

    private static Tensor CrossEntropy(Tensor logits, Tensor targets) => nn.functional.cross_entropy(logits, targets);

    // ---- mu ----

    [Fact]
    public void Mu_is_the_mean_of_all_rows_padding_rows_included()
    {
        var mu = OutputEmbedding.Mu(HandWeight(), new LocalVocabulary(4));

        Assert.Equal(new long[] { 2 }, mu.shape);
        Assert.Equal(ScalarType.Float32, mu.dtype);
        TensorAssert.Close(new[] { 1.0, 1.5 }, TensorAssert.Values(mu));
    }

    [Fact]
    public void Mu_of_a_random_matrix_equals_the_column_mean()
    {
        manual_seed(1);
        var weight = randn(29, 7);

        var mu = OutputEmbedding.Mu(weight, new LocalVocabulary(29));

        TensorAssert.AllClose(weight.mean([0L]), mu, rtol: 1e-5, atol: 1e-6);
    }

    [Fact]
    public void The_mean_logit_over_the_vocabulary_is_mu_dot_h()
    {
        manual_seed(12);
        const int v = 31, h = 6;
        var weight = randn(v, h, dtype: ScalarType.Float64) + 0.7;
        var hidden = randn(4, h, dtype: ScalarType.Float64);

        var mu = OutputEmbedding.Mu(weight, new LocalVocabulary(v)).to_type(ScalarType.Float64);

        TensorAssert.AllClose(hidden.matmul(mu), hidden.matmul(weight.t()).mean([1L]), rtol: 1e-5, atol: 1e-6);
    }

    // ---- mu-loss ----

    [Theory]
    [InlineData(1e-4)]
    [InlineData(1.0)]
    [InlineData(1e2)]
    public void MuLoss_is_lambda_times_the_squared_norm_of_mu(double lambda)
    {
        var loss = OutputEmbedding.MuLoss(HandWeight(), new LocalVocabulary(4), lambda);

        Assert.Equal(0, loss.dim());
        TensorAssert.Close(lambda * 3.25, TensorAssert.Scalar(loss), rtol: 1e-6);
    }

    [Theory]
    [InlineData(1e-4)]
    [InlineData(1.0)]
    [InlineData(1e2)]
    public void MuLoss_sends_the_gradient_two_lambda_mu_over_V_to_every_row(double lambda)
    {
        var weight = HandWeight(requiresGrad: true);

        OutputEmbedding.MuLoss(weight, new LocalVocabulary(4), lambda).backward();

        // 2 * lambda * [1, 1.5] / 4 = lambda * [0.5, 0.75], the same for each of the four rows, padding included.
        var expected = Enumerable.Repeat(new[] { 0.5 * lambda, 0.75 * lambda }, 4).SelectMany(r => r).ToArray();
        TensorAssert.Close(expected, TensorAssert.Values(weight.grad!), rtol: 1e-6);
    }

    [Theory]
    [InlineData(1e-4)]
    [InlineData(3.0)]
    public void MuLoss_gradient_on_a_random_matrix_is_mu_broadcast_to_every_row(double lambda)
    {
        manual_seed(2);
        const int v = 23, h = 5;
        var weight = (randn(v, h, dtype: ScalarType.Float64) + 0.5).requires_grad_();
        var vocab = new LocalVocabulary(v);

        OutputEmbedding.MuLoss(weight, vocab, lambda).backward();

        var mu = OutputEmbedding.Mu(weight.detach(), vocab).to_type(ScalarType.Float64);
        var expected = (2 * lambda / v * mu).unsqueeze(0).expand(v, h);
        TensorAssert.AllClose(expected, weight.grad!, rtol: 1e-5, atol: 1e-12);
    }

    // ---- mu-centering ----

    [Theory]
    [InlineData(37, 13)]
    [InlineData(1, 3)]
    [InlineData(101, 7)]
    public void Center_makes_mu_and_the_mean_logit_zero(int v, int h)
    {
        manual_seed(4);
        var weight = randn(v, h) * 0.5 + 3;
        var vocab = new LocalVocabulary(v);
        var hidden = randn(9, h);

        OutputEmbedding.Center(weight, vocab).Dispose();

        double muNorm = TensorAssert.Scalar(OutputEmbedding.Mu(weight, vocab).norm());
        Assert.True(muNorm < 1e-5, $"||mu|| after centering = {muNorm}");
        var meanLogit = TensorAssert.Values(hidden.matmul(weight.t()).mean([1L])); // mean over the vocabulary, per token
        Assert.All(meanLogit, m => Assert.True(Math.Abs(m) < 1e-5, $"mean logit after centering = {m}"));
    }

    [Fact]
    public void Center_subtracts_mu_from_every_row_and_returns_the_norm_of_mu_before()
    {
        var weight = tensor(new float[,] { { 1, 2 }, { 3, 4 }, { 0, 0 }, { 0, 0 } });

        double before = OutputEmbedding.Center(weight, new LocalVocabulary(4)).item<float>();

        TensorAssert.Close(Math.Sqrt(3.25), before, rtol: 1e-6);
        TensorAssert.Close(new[] { 0.0, 0.5, 2.0, 2.5, -1.0, -1.5, -1.0, -1.5 }, TensorAssert.Values(weight), rtol: 1e-6);
    }

    [Fact]
    public void Center_on_an_already_centred_weight_returns_zero_and_changes_nothing()
    {
        manual_seed(5);
        var weight = randn(17, 6);
        var vocab = new LocalVocabulary(17);
        OutputEmbedding.Center(weight, vocab).Dispose();
        var centred = weight.clone();

        double again = OutputEmbedding.Center(weight, vocab).item<float>();

        Assert.True(again < 1e-6, $"second Center returned {again}");
        TensorAssert.AllClose(centred, weight, rtol: 0, atol: 1e-6);
    }

    [Fact]
    public void Center_records_no_autograd_history_and_leaves_the_gradient_alone()
    {
        manual_seed(6);
        var weight = (randn(19, 5) + 1).requires_grad_();
        var vocab = new LocalVocabulary(19);
        (weight.square().sum() * 0.5).backward(); // grad = weight
        var gradBefore = weight.grad!.clone();

        double norm = OutputEmbedding.Center(weight, vocab).item<float>();

        Assert.True(norm > 0.5);
        Assert.True(weight.is_leaf, "the weight must stay a leaf");
        Assert.True(weight.requires_grad, "the weight must still require grad");
        TensorAssert.AllClose(gradBefore, weight.grad!, rtol: 0, atol: 0);
        Assert.True(TensorAssert.Scalar(OutputEmbedding.Mu(weight, vocab).norm()) < 1e-5);
    }

    [Fact]
    public void Center_keeps_the_dtype_and_shape_of_the_weight()
    {
        var weight = ones(7, 3, dtype: ScalarType.Float64) * 2;

        double norm = OutputEmbedding.Center(weight, new LocalVocabulary(7)).item<float>();

        TensorAssert.Close(2 * Math.Sqrt(3), norm, rtol: 1e-6);
        Assert.Equal(ScalarType.Float64, weight.dtype);
        Assert.Equal(new long[] { 7, 3 }, weight.shape);
        Assert.All(TensorAssert.Values(weight), x => Assert.Equal(0.0, x));
    }

    // ---- z-loss ----

    [Theory]
    [InlineData(1e-4)]
    [InlineData(0.5)]
    public void ZLoss_is_lambda_times_the_mean_of_the_squared_log_partition_function(double lambda)
    {
        var rows = new[] { new[] { 1.0, 2.0, 3.0 }, new[] { 0.0, -1.0, 5.0 }, new[] { 40.0, 41.0, -3.0 } };
        var logits = tensor(rows.SelectMany(r => r).ToArray(), [3, 3]);

        var z = OutputEmbedding.ZLoss(new LocalVocabulary(3).LogSumExp(logits), lambda);

        double expected = lambda * rows.Select(r => Math.Pow(LogSumExp(r), 2)).Average();
        TensorAssert.Close(expected, TensorAssert.Scalar(z), rtol: 1e-12);
    }

    [Fact]
    public void Loss_with_ZLoss_is_cross_entropy_plus_the_z_loss_and_logs_torch_cross_entropy()
    {
        var rows = new[] { new[] { 1.0, 2.0, 3.0, -1.0 }, new[] { 0.0, -1.0, 5.0, 2.0 } };
        var logits = tensor(rows.SelectMany(r => r).ToArray(), [2, 4]);
        var targets = tensor(new long[] { 0, 2 });
        var options = new OecOptions { Method = OecMethod.ZLoss, ZLossLambda = 0.1 };

        var result = OutputEmbedding.Loss(logits, targets, HandWeight(), options.Resolve(), new LocalVocabulary(4));

        double ce = ((LogSumExp(rows[0]) - 1.0) + (LogSumExp(rows[1]) - 5.0)) / 2;
        double z = 0.1 * (Math.Pow(LogSumExp(rows[0]), 2) + Math.Pow(LogSumExp(rows[1]), 2)) / 2;
        TensorAssert.Close(ce, TensorAssert.Scalar(result.CrossEntropy), rtol: 1e-12);
        TensorAssert.Close(TensorAssert.Scalar(CrossEntropy(logits, targets)), TensorAssert.Scalar(result.CrossEntropy), rtol: 1e-12);
        TensorAssert.Close(ce + z, TensorAssert.Scalar(result.Loss), rtol: 1e-12);
    }

    // ---- soft-capping ----

    [Theory]
    [InlineData(30.0)]
    [InlineData(5.0)]
    public void SoftCap_keeps_large_logits_within_the_cap(double cap)
    {
        var logits = tensor(new float[] { 1e4f, -1e4f, 1e30f, -1e30f, float.PositiveInfinity, float.NegativeInfinity });

        var capped = TensorAssert.Values(OutputEmbedding.SoftCap(logits, cap));

        // c * tanh(l / c) tends to +-c; in floating point tanh(l / c) rounds to exactly +-1 for l far beyond c,
        // so the output reaches +-c there but never passes it and stays finite.
        Assert.All(capped, x => Assert.True(double.IsFinite(x) && Math.Abs(x) <= cap, $"{x} escapes the cap {cap}"));
        Assert.True(capped[0] > 0.999 * cap && capped[1] < -0.999 * cap);
    }

    [Fact]
    public void SoftCap_output_is_strictly_inside_the_cap_where_tanh_is_not_saturated()
    {
        const double cap = 30;
        var logits = tensor(new double[] { 30, -30, 90, -90, 150, -150, 300, -300 });

        var capped = TensorAssert.Values(OutputEmbedding.SoftCap(logits, cap));

        Assert.All(capped, x => Assert.True(Math.Abs(x) < cap, $"{x} is not strictly inside (-{cap}, {cap})"));
        TensorAssert.Close(cap * Math.Tanh(1), capped[0], rtol: 1e-12);
        TensorAssert.Close(-cap * Math.Tanh(3), capped[3], rtol: 1e-12);
    }

    [Fact]
    public void SoftCap_is_almost_the_identity_for_logits_much_smaller_than_the_cap()
    {
        var small = new[] { 0.0, 1e-3, -2e-3, 0.05, -0.1 };

        var capped = TensorAssert.Values(OutputEmbedding.SoftCap(tensor(small), 30));

        // c tanh(l/c) = l - l^3 / (3 c^2) + ...: relative error below (0.1/30)^2 / 3 < 4e-6.
        TensorAssert.Close(small, capped, rtol: 4e-6, atol: 0);
    }

    [Theory]
    [MemberData(nameof(MethodData.AllBut), OecMethod.SoftCap, MemberType = typeof(MethodData))]
    public void Logits_are_the_plain_product_of_hidden_and_E_transposed_unless_the_method_is_SoftCap(OecMethod method)
    {
        manual_seed(8);
        var hidden = randn(4, 6) * 10;
        var weight = randn(9, 6) * 10;
        var options = new OecOptions { Method = method, SoftCap = 5 };

        var logits = OutputEmbedding.Logits(hidden, weight, options.Resolve());

        Assert.Equal(new long[] { 4, 9 }, logits.shape);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        TensorAssert.AllClose(hidden.matmul(weight.t()), logits, rtol: 1e-5, atol: 1e-4);
        Assert.Contains(TensorAssert.Values(logits), x => Math.Abs(x) > 5); // the cap would have mattered
    }

    [Fact]
    public void Logits_are_soft_capped_when_the_method_is_SoftCap()
    {
        manual_seed(8);
        var hidden = randn(4, 6) * 10;
        var weight = randn(9, 6) * 10;
        var options = new OecOptions { Method = OecMethod.SoftCap, SoftCap = 5 };

        var logits = OutputEmbedding.Logits(hidden, weight, options.Resolve());

        var raw = hidden.matmul(weight.t());
        TensorAssert.AllClose((raw / 5).tanh() * 5, logits, rtol: 1e-5, atol: 1e-5);
        Assert.All(TensorAssert.Values(logits), x => Assert.True(Math.Abs(x) <= 5));
        Assert.Contains(TensorAssert.Values(raw), x => Math.Abs(x) > 5);
    }

    [Fact]
    public void Logits_in_bf16_are_the_fp32_product_of_the_bf16_rounded_operands_and_their_gradients_arrive_in_fp32()
    {
        manual_seed(8);
        var hidden = randn(5, 16).requires_grad_();
        var weight = randn(7, 16).requires_grad_();

        var logits = OutputEmbedding.Logits(hidden, weight, new OecOptions { Method = OecMethod.None }.Resolve(), compute: ScalarType.BFloat16);
        logits.sum().backward();

        Assert.Equal(ScalarType.Float32, logits.dtype);
        using var h = hidden.detach().to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
        using var e = weight.detach().to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
        using var exact = hidden.detach().matmul(weight.detach().t());
        // A bf16 matmul accumulates in fp32 and rounds its result to bf16: within 2^-8 relative of the rounded operands' product.
        TensorAssert.AllClose(h.matmul(e.t()), logits, rtol: 1.0 / 256, atol: 1e-3);
        Assert.True((logits.detach() - exact).abs().max().item<float>() > 1e-3, "the logits are the fp32 product: no bf16 rounding happened");
        Assert.Equal(ScalarType.Float32, hidden.grad!.dtype);
        Assert.Equal(ScalarType.Float32, weight.grad!.dtype);
        // d sum(logits) / d hidden = column sums of E: the bf16-rounded E's, up to the bf16 rounding of the backward matmul.
        TensorAssert.AllClose(e.sum(0L).expand(5, 16), hidden.grad!, rtol: 1.0 / 128, atol: 1e-2);
    }

    [Fact]
    public void The_loss_refuses_bf16_logits_naming_their_dtype()
    {
        var logits = zeros(2, 4, dtype: ScalarType.BFloat16);

        var e = Assert.Throws<ArgumentException>(() => OutputEmbedding.Loss(logits, tensor(new long[] { 0, 1 }), HandWeight(), new OecOptions().Resolve(), new LocalVocabulary(4)));

        Assert.Contains("BFloat16", e.Message);
        Assert.Contains("fp32", e.Message);
    }

    [Fact]
    public void Logits_are_float32_even_for_float64_inputs()
    {
        var hidden = ones(2, 2, dtype: ScalarType.Float64);

        var logits = OutputEmbedding.Logits(hidden, HandWeight(), new OecOptions { Method = OecMethod.None }.Resolve());

        Assert.Equal(ScalarType.Float32, logits.dtype);
        TensorAssert.Close(new double[] { 3, 7, 0, 0, 3, 7, 0, 0 }, TensorAssert.Values(logits));
    }

    // ---- the loss ----

    [Theory]
    [MemberData(nameof(MethodData.All), MemberType = typeof(MethodData))]
    public void The_logged_cross_entropy_is_torch_cross_entropy_of_the_head_logits_without_regularisers(OecMethod method)
    {
        manual_seed(9);
        const int n = 6, v = 13, h = 5;
        var hidden = randn(n, h) * 3;
        var weight = randn(v, h) + 1; // mu far from 0, so mu-loss is not negligible
        var targets = randint(0, v, [n], dtype: ScalarType.Int64);
        var vocab = new LocalVocabulary(v);
        var options = new OecOptions { Method = method, MuLossLambda = 0.5, ZLossLambda = 0.3, SoftCap = 4 };

        var logits = OutputEmbedding.Logits(hidden, weight, options.Resolve());
        var result = OutputEmbedding.Loss(logits, targets, weight, options.Resolve(), vocab);

        double ce = TensorAssert.Scalar(result.CrossEntropy);
        TensorAssert.Close(TensorAssert.Scalar(CrossEntropy(logits, targets)), ce, rtol: 1e-5);
        double loss = TensorAssert.Scalar(result.Loss);
        switch (method)
        {
            case OecMethod.MuLoss:
                double mu = TensorAssert.Scalar(OutputEmbedding.MuLoss(weight, vocab, 0.5));
                Assert.True(mu > 0.1, "the test needs a visible mu-loss");
                TensorAssert.Close(mu, loss - ce, rtol: 1e-4);
                break;
            case OecMethod.ZLoss:
                double z = TensorAssert.Scalar(OutputEmbedding.ZLoss(logits.logsumexp(-1), 0.3));
                TensorAssert.Close(z, loss - ce, rtol: 1e-4);
                break;
            default:
                Assert.Equal(ce, loss);
                break;
        }
        if (method == OecMethod.SoftCap)
        {
            var uncapped = hidden.matmul(weight.t());
            double ceUncapped = TensorAssert.Scalar(CrossEntropy(uncapped, targets));
            Assert.True(Math.Abs(ceUncapped - ce) > 1e-2, "the logged cross-entropy must be taken on the capped logits");
        }
    }

    [Fact]
    public void The_gradient_of_the_loss_without_mitigation_is_softmax_minus_one_hot_over_N()
    {
        manual_seed(10);
        const int n = 5, v = 7;
        var logits = (randn(n, v, dtype: ScalarType.Float64) * 2).requires_grad_();
        var targets = tensor(new long[] { 0, 6, 3, 3, 1 });
        var options = new OecOptions { Method = OecMethod.None };

        OutputEmbedding.Loss(logits, targets, zeros(v, 2), options.Resolve(), new LocalVocabulary(v)).Loss.backward();

        var oneHot = nn.functional.one_hot(targets, v).to_type(ScalarType.Float64);
        var expected = (logits.detach().softmax(-1) - oneHot) / n;
        TensorAssert.AllClose(expected, logits.grad!, rtol: 1e-10, atol: 1e-14);
    }

    [Fact]
    public void MuLoss_in_the_loss_reaches_the_weight_once_per_forward_pass_not_per_token()
    {
        // With logits that do not depend on the weight, the only gradient on E is the mu-loss term 2 lambda mu / V,
        // whatever the number of tokens.
        foreach (int n in new[] { 1, 8 })
        {
            var weight = HandWeight(requiresGrad: true);
            var logits = zeros(n, 4, dtype: ScalarType.Float64);
            var targets = zeros(n, dtype: ScalarType.Int64);
            var options = new OecOptions { Method = OecMethod.MuLoss, MuLossLambda = 2.0 };

            OutputEmbedding.Loss(logits, targets, weight, options.Resolve(), new LocalVocabulary(4)).Loss.backward();

            var expected = Enumerable.Repeat(new[] { 1.0, 1.5 }, 4).SelectMany(r => r).ToArray(); // 2*2*[1,1.5]/4
            TensorAssert.Close(expected, TensorAssert.Values(weight.grad!), rtol: 1e-6);
        }
    }
}
