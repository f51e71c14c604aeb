// On a GPU, the chunked head with the fused cross-entropy kernel against the same head with the TorchSharp ops: loss,
// cross-entropy, statistics and gradients, for every method, fp32 and bf16 (skipped without a GPU and NVRTC).
using Kernels;
using Kernels.UnitTests;
using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class ChunkedHeadKernelTests
{
    const int N = 300, H = 64, V = 1001;

    sealed record Result(double Loss, double CrossEntropy, double[] HiddenGrad, double[] WeightGrad, LogitStatistics Statistics);

    static Result Run(OecMethod method, ScalarType compute, KernelRuntime? kernels)
    {
        manual_seed(20261205);
        var h = (2 * randn(N, H)).cuda().requires_grad_();
        var e = (randn(V, H) + 0.3).cuda().requires_grad_();
        var targets = randint(0, V, [N], dtype: ScalarType.Int64).cuda();
        var oec = new OecOptions { Method = method, MuLossLambda = 0.1, ZLossLambda = 0.01, SoftCap = 2 }.Resolve();
        var loss = ChunkedHead.Loss(h, e, targets, oec, new LocalVocabulary(V), compute, chunkTokens: 128, statistics: true, kernels: kernels);
        loss.Loss.backward();
        return new(TensorAssert.Scalar(loss.Loss), TensorAssert.Scalar(loss.CrossEntropy), TensorAssert.Values(h.grad!),
                   TensorAssert.Values(e.grad!), loss.Statistics!);
    }

    // The kernel sums each row in another order than libtorch (1001 terms): log Z, the loss and the statistics within a
    // few fp32 ulps, 1e-5 of their scale. The gradients: fp32 alike; in bf16 each dlogit is rounded to bf16 before the
    // matmuls, and a dlogit a few ulps off rounds to the neighbouring bf16 value (2^-8 relative) here and there: 1e-3.
    [SkippableTheory]
    [InlineData(OecMethod.None, false)]
    [InlineData(OecMethod.MuLoss, false)]
    [InlineData(OecMethod.MuCentering, false)]
    [InlineData(OecMethod.ZLoss, false)]
    [InlineData(OecMethod.SoftCap, false)]
    [InlineData(OecMethod.ZLoss, true)]
    [InlineData(OecMethod.SoftCap, true)]
    public void The_fused_cross_entropy_gives_the_loss_statistics_and_gradients_of_the_TorchSharp_ops(OecMethod method, bool bf16)
    {
        var kernels = Gpu.Runtime();
        var compute = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        var expected = Run(method, compute, null);
        var actual = Run(method, compute, kernels);

        ChunkedHeadTests.Same("loss", [expected.Loss], [actual.Loss], 1e-5);
        ChunkedHeadTests.Same("cross-entropy", [expected.CrossEntropy], [actual.CrossEntropy], 1e-5);
        ChunkedHeadTests.Same("hidden.grad", expected.HiddenGrad, actual.HiddenGrad, bf16 ? 1e-3 : 1e-5);
        ChunkedHeadTests.Same("E.grad", expected.WeightGrad, actual.WeightGrad, bf16 ? 1e-3 : 1e-5);
        double[] Fields(LogitStatistics s) => [s.MeanLogit, s.LogitStd, s.MaxAbsLogit, s.MeanLogZ, s.RLog, s.MeanMuDotH];
        var (e, a) = (Fields(expected.Statistics), Fields(actual.Statistics));
        for (int f = 0; f < e.Length; f++) ChunkedHeadTests.Same($"statistics[{f}]", [e[f]], [a[f]], 1e-5);
    }
}
