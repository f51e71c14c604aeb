// Which methods the fused cross-entropy kernel computes (ChunkedHead.FormOf), and that its reference for them
// (CrossEntropyHooks.Local, what the GPU self-check compares with) is bit for bit the methods' own hooks.
using Kernels.Ops;
using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class ChunkedHeadFormTests
{
    const long N = 9, V = 41;

    static IOecMethod Method(OecMethod method) =>
        new OecOptions { Method = method, MuLossLambda = 0.1, ZLossLambda = 0.01, SoftCap = 2 }.Resolve();

    [Theory]
    [InlineData(OecMethod.None, null, null)]
    [InlineData(OecMethod.MuLoss, null, null)]
    [InlineData(OecMethod.MuCentering, null, null)]
    [InlineData(OecMethod.ZLoss, null, 0.01)]
    [InlineData(OecMethod.SoftCap, 2.0, null)]
    public void Each_method_is_the_kernel_form_of_its_transform_and_penalty(OecMethod method, double? softCap, double? zLossLambda)
    {
        Assert.Equal(new CrossEntropyForm(softCap, zLossLambda), ChunkedHead.FormOf(Method(method), new LocalVocabulary(V)));
    }

    [Fact]
    public void A_vocabulary_other_than_the_local_one_has_no_kernel_form()
    {
        Assert.Null(ChunkedHead.FormOf(Method(OecMethod.None), new Sharded(new LocalVocabulary(V))));
    }

    [Theory]
    [InlineData(OecMethod.None)]
    [InlineData(OecMethod.MuLoss)]
    [InlineData(OecMethod.MuCentering)]
    [InlineData(OecMethod.ZLoss)]
    [InlineData(OecMethod.SoftCap)]
    public void The_kernel_forms_reference_is_bitwise_the_methods_hooks(OecMethod method)
    {
        var oec = Method(method);
        var vocab = new LocalVocabulary(V);
        var form = ChunkedHead.FormOf(oec, vocab);
        Assert.NotNull(form);
        manual_seed(20261205);
        var logits = 3 * randn(N, V);
        var targets = randint(0, V, [N], dtype: ScalarType.Int64);
        var own = new CrossEntropyHooks(oec.TransformLogits, oec.TokenPenalty, vocab.LogSumExp, vocab.TargetLogit, vocab.Sum, vocab.Max, V, form);

        var expected = CrossEntropyOp.Reference(logits.clone(), targets, N, own, gradients: true, statistics: true);
        var actual = CrossEntropyOp.Reference(logits.clone(), targets, N, CrossEntropyHooks.Local(V, form), gradients: true, statistics: true);

        Assert.Equal(TensorAssert.Values(expected.CrossEntropy), TensorAssert.Values(actual.CrossEntropy));
        Assert.Equal(TensorAssert.Values(expected.LogZ), TensorAssert.Values(actual.LogZ));
        Assert.Equal(expected.Penalty is null, actual.Penalty is null);
        if (expected.Penalty is { } penalty) Assert.Equal(TensorAssert.Values(penalty), TensorAssert.Values(actual.Penalty!));
        Assert.Equal(TensorAssert.Values(expected.Gradient!), TensorAssert.Values(actual.Gradient!));
        Assert.Equal(TensorAssert.Values(expected.Statistics!.RLog), TensorAssert.Values(actual.Statistics!.RLog));
    }

    /// <summary>A vocabulary that reduces as the local one but is not it, as a sharded one is not.</summary>
    sealed class Sharded(LocalVocabulary local) : IVocabularyReduction
    {
        public long VocabSize => local.VocabSize;
        public long Tokens => local.Tokens;
        public long Offset => local.Offset;
        public Tensor Sum(Tensor x, long dim) => local.Sum(x, dim);
        public Tensor Max(Tensor x) => local.Max(x);
        public Tensor LogSumExp(Tensor logits) => local.LogSumExp(logits);
        public Tensor TargetLogit(Tensor logits, Tensor targets) => local.TargetLogit(logits, targets);
        public Tensor Share(Tensor hidden) => local.Share(hidden);
    }
}
