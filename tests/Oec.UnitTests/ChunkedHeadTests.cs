// The fused, chunked head against the unchunked one (OutputEmbedding.Logits + Loss + LogitStatistics.Compute): loss,
// cross-entropy, statistics and the gradients of the hidden states and of E, for every method, fp32 and bf16.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class ChunkedHeadTests
{
    const int N = 24, H = 16, V = 64;

    // Strong regularisers, so that each method's share of the loss and the gradients is far above the tolerances.
    static IOecMethod Method(OecMethod method) =>
        new OecOptions { Method = method, MuLossLambda = 0.1, ZLossLambda = 0.01, SoftCap = 2 }.Resolve();

    /// <summary>hidden [N, H], E [V, H] with mean 0.3 (so mu-loss matters), targets [N], from a fixed seed.</summary>
    static (Tensor Hidden, Tensor Weight, Tensor Targets) Data()
    {
        manual_seed(20261204);
        return (randn(N, H), randn(V, H) + 0.3, randint(0, V, [N], dtype: ScalarType.Int64));
    }

    sealed record Result(double Loss, double CrossEntropy, double[] HiddenGrad, double[] WeightGrad, LogitStatistics Statistics);

    static Result Reference(OecMethod method, ScalarType compute)
    {
        var (hidden, weight, targets) = Data();
        var (h, e) = (hidden.requires_grad_(), weight.requires_grad_());
        var vocab = new LocalVocabulary(V);
        var logits = OutputEmbedding.Logits(h, e, Method(method), vocab, compute);
        var loss = OutputEmbedding.Loss(logits, targets, e, Method(method), vocab);
        loss.Loss.backward();
        return new Result(TensorAssert.Scalar(loss.Loss), TensorAssert.Scalar(loss.CrossEntropy), TensorAssert.Values(h.grad!),
                          TensorAssert.Values(e.grad!), LogitStatistics.Compute(logits, e, vocab, h));
    }

    static Result Chunked(OecMethod method, ScalarType compute, long chunk)
    {
        var (hidden, weight, targets) = Data();
        var (h, e) = (hidden.requires_grad_(), weight.requires_grad_());
        var loss = ChunkedHead.Loss(h, e, targets, Method(method), new LocalVocabulary(V), compute, chunk, statistics: true);
        loss.Loss.backward();
        return new Result(TensorAssert.Scalar(loss.Loss), TensorAssert.Scalar(loss.CrossEntropy), TensorAssert.Values(h.grad!),
                          TensorAssert.Values(e.grad!), loss.Statistics!);
    }

    static double[] Fields(LogitStatistics s) =>
        [s.MeanLogit, s.LogitStd, s.MaxAbsLogit, s.MuNorm, s.MeanLogZ, s.RLog, s.MeanMuDotH, s.REmbMean, s.REmbMin, s.MeanMaxAbsLogit];

    /// <summary>|actual - expected| &lt;= tolerance (|expected| + scale of the tensor), element-wise.</summary>
    internal static void Same(string what, IReadOnlyList<double> expected, IReadOnlyList<double> actual, double tolerance)
    {
        Assert.Equal(expected.Count, actual.Count);
        double scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tolerance * (Math.Abs(expected[i]) + scale),
                $"{what}, element {i}: expected {expected[i]:R}, got {actual[i]:R} (scale {scale:G3})");
    }

    public static TheoryData<OecMethod, bool, long> Cases()
    {
        var data = new TheoryData<OecMethod, bool, long>();
        foreach (var method in Enum.GetValues<OecMethod>())
            foreach (var bf16 in new[] { false, true })
                foreach (var chunk in new long[] { 0, N, 7, 1 }) // auto and one chunk; 7, 7, 7, 3 (a ragged last chunk); 24 of one token
                    data.Add(method, bf16, chunk);
        return data;
    }

    // fp32: the chunks change only the order of summation: of the per-token losses (sums of chunk sums), of the
    // statistics, and of E's gradient (a sum of per-chunk products); 1e-5 is about 100 fp32 epsilons. bf16: each chunk's
    // product for E's gradient is rounded to bf16 (8 significant bits, 2^-9 relative) before the fp32 sum over the
    // chunks, where the unchunked backward rounds the whole sum once; 1e-2 of the scale bounds a few such roundings.
    // Everything else in bf16 (the logits, the loss, the hidden states' gradient) is computed per token alike: 1e-5.
    [Theory]
    [MemberData(nameof(Cases))]
    public void The_chunked_head_equals_the_unchunked_loss_statistics_and_gradients(OecMethod method, bool bf16, long chunk)
    {
        var compute = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        var expected = Reference(method, compute);
        var actual = Chunked(method, compute, chunk);

        Same("loss", [expected.Loss], [actual.Loss], 1e-5);
        Same("cross-entropy", [expected.CrossEntropy], [actual.CrossEntropy], 1e-5);
        Same("hidden.grad", expected.HiddenGrad, actual.HiddenGrad, 1e-5);
        Same("E.grad", expected.WeightGrad, actual.WeightGrad, bf16 ? 1e-2 : 1e-5);
        var (e, a) = (Fields(expected.Statistics), Fields(actual.Statistics));
        for (int f = 0; f < e.Length; f++) Same($"statistics[{f}]", [e[f]], [a[f]], 1e-5);
        // The gap is a difference of nearly equal values (rounding level in fp32): compared against the logits' scale.
        Assert.True(Math.Abs(expected.Statistics.MaxMeanLogitGap - actual.Statistics.MaxMeanLogitGap) <= 1e-5 * expected.Statistics.MaxAbsLogit,
            $"gap: expected {expected.Statistics.MaxMeanLogitGap:R}, got {actual.Statistics.MaxMeanLogitGap:R}");
    }

    // The paper's code under torch.autocast(bfloat16): the head's matmul returns bf16 logits, cross_entropy (on autocast's
    // fp32 list) casts them to fp32. Here: the same product rounded to bf16, then the loss in fp32, for every chunking.
    // The statistics see those bf16 logits: with a common row of norm ~50 in E the mean logit loses mu . h by far
    // more than in fp32 (bf16 keeps 8 significant bits).
    [Theory]
    [InlineData(0L)]
    [InlineData(7L)]
    public void In_bf16_the_logits_are_the_bf16_product_and_the_loss_is_fp32_as_under_autocast(long chunk)
    {
        var (hidden, weight, targets) = Data();
        weight = weight + 12;                                                          // mu about 12.3 in each of H = 16 columns
        var logits = nn.functional.linear(hidden.to_type(ScalarType.BFloat16), weight.to_type(ScalarType.BFloat16)); // [N, V] bf16
        Assert.Equal(ScalarType.BFloat16, logits.dtype);
        double autocast = TensorAssert.Scalar(nn.functional.cross_entropy(logits.to_type(ScalarType.Float32), targets));
        double fp32 = TensorAssert.Scalar(nn.functional.cross_entropy(nn.functional.linear(hidden, weight), targets));

        var bf16 = ChunkedHead.Loss(hidden, weight, targets, Method(OecMethod.None), new LocalVocabulary(V), ScalarType.BFloat16, chunk, statistics: true);
        var full = ChunkedHead.Loss(hidden, weight, targets, Method(OecMethod.None), new LocalVocabulary(V), ScalarType.Float32, chunk, statistics: true);

        TensorAssert.Close(autocast, TensorAssert.Scalar(bf16.CrossEntropy), 1e-6, 0, "bf16 cross-entropy");
        Assert.True(Math.Abs(autocast - fp32) > 1e-3, $"the bf16 logits must matter for this test: {autocast} against fp32 {fp32}");
        Assert.True(bf16.Statistics!.MaxMeanLogitGap > 100 * full.Statistics!.MaxMeanLogitGap,
            $"bf16 gap {bf16.Statistics.MaxMeanLogitGap:G3} against fp32 {full.Statistics.MaxMeanLogitGap:G3}");
    }

    // z-loss is not bitwise: the chunks add each token's penalty to its cross-entropy before the one division by N,
    // where the unchunked loss divides each sum by N (two means); its tolerance is the theory's above.
    [Theory]
    [MemberData(nameof(MethodData.AllBut), OecMethod.ZLoss, MemberType = typeof(MethodData))]
    public void In_fp32_one_chunk_is_bitwise_the_unchunked_computation(OecMethod method)
    {
        var expected = Reference(method, ScalarType.Float32);
        var actual = Chunked(method, ScalarType.Float32, N);

        Assert.Equal(expected.Loss, actual.Loss);
        Assert.Equal(expected.CrossEntropy, actual.CrossEntropy);
        Assert.Equal(expected.HiddenGrad, actual.HiddenGrad);
        Assert.Equal(expected.WeightGrad, actual.WeightGrad);
    }

    [Fact]
    public void Without_gradients_the_loss_is_the_same_and_nothing_is_differentiated()
    {
        var (hidden, weight, targets) = Data();
        var method = Method(OecMethod.ZLoss);
        var withGrad = ChunkedHead.Loss(hidden.requires_grad_(), weight, targets, method, new LocalVocabulary(V), chunkTokens: 5);
        HeadLoss without;
        using (no_grad()) without = ChunkedHead.Loss(hidden, weight, targets, method, new LocalVocabulary(V), chunkTokens: 5);

        Assert.Equal(TensorAssert.Scalar(withGrad.Loss), TensorAssert.Scalar(without.Loss));
        Assert.Equal(TensorAssert.Scalar(withGrad.CrossEntropy), TensorAssert.Scalar(without.CrossEntropy));
        Assert.False(without.Loss.requires_grad);
        Assert.Null(without.Statistics);
    }

    [Fact]
    public void The_incoming_gradient_scales_the_gradients()
    {
        var (hidden, weight, targets) = Data();
        var method = Method(OecMethod.None);
        var (h1, h2) = (hidden.clone().requires_grad_(), hidden.clone().requires_grad_());
        ChunkedHead.Loss(h1, weight, targets, method, new LocalVocabulary(V), chunkTokens: 5).Loss.backward();
        (ChunkedHead.Loss(h2, weight, targets, method, new LocalVocabulary(V), chunkTokens: 5).Loss * 0.25).backward();

        TensorAssert.AllClose(h1.grad! * 0.25, h2.grad!, rtol: 1e-6, atol: 0);
    }

    [Theory]
    [InlineData(0L, 50304L, 1334L)] // 256 MiB of fp32 logits at the GPT-2 vocabulary
    [InlineData(0L, 64L, 1048576L)]
    [InlineData(0L, 1L << 40, 1L)]  // at least one token
    [InlineData(512L, 50304L, 512L)]
    public void Chunk_size_is_the_option_or_what_keeps_a_chunk_of_fp32_logits_within_256_MiB(long requested, long vocabLocal, long expected)
    {
        Assert.Equal(expected, ChunkedHead.ChunkTokens(requested, vocabLocal));
    }
}
