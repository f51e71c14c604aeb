using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class LocalVocabularyTests
{
    [Fact]
    public void TargetLogit_picks_the_logit_of_each_target_token_like_gather()
    {
        var logits = tensor(new double[,] { { 1, 2, 3, 4 }, { -5, 6, -7, 8 }, { 0.5, 0.25, 0.125, 9 } });
        var targets = tensor(new long[] { 3, 0, 1 });
        var vocab = new LocalVocabulary(4);

        var picked = vocab.TargetLogit(logits, targets);

        Assert.Equal(new long[] { 3 }, picked.shape);
        TensorAssert.Close(new double[] { 4, -5, 0.25 }, TensorAssert.Values(picked));
        TensorAssert.AllClose(logits.gather(1, targets.unsqueeze(1)).squeeze(1), picked);
    }

    [Fact]
    public void TargetLogit_passes_the_gradient_to_the_target_entries_only()
    {
        var logits = zeros(2, 3, dtype: ScalarType.Float64).requires_grad_();
        var targets = tensor(new long[] { 2, 0 });

        new LocalVocabulary(3).TargetLogit(logits, targets).sum().backward();

        TensorAssert.Close(new double[] { 0, 0, 1, 1, 0, 0 }, TensorAssert.Values(logits.grad!));
    }

    [Fact]
    public void The_local_reductions_match_torch_sum_amax_and_logsumexp()
    {
        var x = tensor(new double[,] { { 1, -2, 3 }, { 0.5, 4, -1 } });
        var vocab = new LocalVocabulary(3);

        TensorAssert.Close(new double[] { 1.5, 2, 2 }, TensorAssert.Values(vocab.Sum(x, 0)));
        TensorAssert.Close(new double[] { 3, 4 }, TensorAssert.Values(vocab.Max(x)));
        double lse0 = Math.Log(Math.Exp(1) + Math.Exp(-2) + Math.Exp(3));
        double lse1 = Math.Log(Math.Exp(0.5) + Math.Exp(4) + Math.Exp(-1));
        TensorAssert.Close(new[] { lse0, lse1 }, TensorAssert.Values(vocab.LogSumExp(x)), rtol: 1e-12);
    }

    [Fact]
    public void VocabSize_is_the_size_it_was_given()
    {
        Assert.Equal(50304, new LocalVocabulary(50304).VocabSize);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(long.MinValue)]
    public void A_zero_or_negative_vocabulary_size_throws(long vocabSize)
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => new LocalVocabulary(vocabSize));
        Assert.Equal("vocabSize", e.ParamName);
    }
}
