// The OEC methods on the output embedding E [V, H]: mu, mu-loss, mu-centering, z-loss, soft-capping, and the loss.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

/// <summary>The training loss (what is differentiated), the plain cross-entropy (what is logged and evaluated) and,
/// when asked for, the logit statistics of the same logits.</summary>
public sealed record HeadLoss(Tensor Loss, Tensor CrossEntropy, LogitStatistics? Statistics = null);

public static class OutputEmbedding
{
    /// <summary>mu = (1/V) sum_i e_i over ALL V rows, padding included. weight [V_local, H] -> [H], fp32.</summary>
    public static Tensor Mu(Tensor weight, IVocabularyReduction vocab) =>
        vocab.Sum(weight.to_type(ScalarType.Float32), 0) / vocab.VocabSize;

    /// <summary>mu-loss = lambda * ||mu||^2, a scalar. Each row e_i receives gradient 2 * lambda * mu / V.</summary>
    public static Tensor MuLoss(Tensor weight, IVocabularyReduction vocab, double lambda) =>
        lambda * Mu(weight, vocab).square().sum();

    /// <summary>
    /// mu-centering: E -> E - mu in place, without gradient, after the optimizer step. Afterwards ||mu|| = 0 and
    /// the mean logit mu . h is 0 for every hidden state h. Optimizer state is untouched. Returns ||mu|| before, a 0-dim
    /// fp32 tensor where the weight is: reading it is the caller's choice (on a GPU, .item() waits for the device).
    /// </summary>
    public static Tensor Center(Tensor weight, IVocabularyReduction vocab)
    {
        // The scope roots every temporary until the end: TorchSharp may otherwise finalize a temporary (or an
        // implicit Scalar) on another thread's garbage collection while libtorch still reads it.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var mu = Mu(weight, vocab);
        weight.sub_(mu.to_type(weight.dtype));
        return mu.norm().MoveToOuterDisposeScope();
    }

    /// <summary>z-loss = lambda * mean over tokens of (log Z)^2; logZ [N] from <see cref="IVocabularyReduction.LogSumExp"/>.</summary>
    public static Tensor ZLoss(Tensor logZ, double lambda) => ZLossPerToken(logZ, lambda).mean();

    /// <summary>Each token's share of z-loss before the mean: lambda * (log Z)^2, logZ [N] -> [N].</summary>
    public static Tensor ZLossPerToken(Tensor logZ, double lambda) => lambda * logZ.square();

    /// <summary>Logit soft-capping l -> c * tanh(l / c): every logit stays within [-c, c] (inside, up to fp rounding of tanh).</summary>
    public static Tensor SoftCap(Tensor logits, double cap) => (logits / cap).tanh() * cap;

    /// <summary>
    /// Logits of the head: hidden [N, H] times E^T [H, V_local] -> [N, V_local] in fp32, then the method's
    /// <see cref="IOecMethod.TransformLogits"/> (soft-capping, locally: it is element-wise). A sharded head's vocab
    /// routes the hidden states' gradient. A transform changes the model's logits, so the logged cross-entropy is taken
    /// on transformed logits. The matmul runs in <paramref name="compute"/> (null: the inputs' dtype; bf16:
    /// differentiable casts of hidden and E, whose gradients arrive in their own dtype, fp32); the logits are fp32
    /// whatever it is, so that log Z, the loss and the statistics are. The cast comes after Share, so a sharded head
    /// all-reduces the hidden states' gradient in their own dtype.
    /// </summary>
    public static Tensor Logits(Tensor hidden, Tensor weight, IOecMethod method, IVocabularyReduction? vocab = null,
                                ScalarType? compute = null)
    {
        var shared = vocab?.Share(hidden) ?? hidden;                                                     // [N, H]
        var (h, e) = compute is ScalarType c ? (shared.to_type(c), weight.to_type(c)) : (shared, weight);
        var logits = nn.functional.linear(h, e).to_type(ScalarType.Float32);                             // [N, V_local]
        return method.TransformLogits(logits);
    }

    /// <summary>
    /// Cross-entropy from one log Z per token, plus the method's <see cref="IOecMethod.TokenPenalty"/> (z-loss) averaged
    /// over the tokens and its <see cref="IOecMethod.WeightRegulariser"/> (mu-loss): logits [N, V_local] fp32, targets
    /// [N] int64, weight E [V_local, H]. CE = mean(log Z - l_target). The unchunked computation, which
    /// <see cref="ChunkedHead"/> equals (its tests take this as the reference).
    /// </summary>
    public static HeadLoss Loss(Tensor logits, Tensor targets, Tensor weight, IOecMethod method, IVocabularyReduction vocab)
    {
        // bf16 keeps 8 significant bits: a logit of 20 only to within 0.06 nats, too coarse for log Z and the loss.
        if (logits.dtype is ScalarType.BFloat16 or ScalarType.Float16)
            throw new ArgumentException($"logits of dtype {logits.dtype}: the loss takes fp32 (or fp64) logits; Logits returns fp32", nameof(logits));
        var logZ = vocab.LogSumExp(logits);                                  // [N]
        var crossEntropy = (logZ - vocab.TargetLogit(logits, targets)).mean(); // scalar, nats per token
        var loss = method.TokenPenalty(logZ) is { } penalty ? crossEntropy + penalty.mean() : crossEntropy;
        return new HeadLoss(WithWeightRegulariser(loss, weight, method, vocab), crossEntropy);
    }

    /// <summary>loss plus the method's regulariser on E (mu-loss), which is outside any chunking of the tokens.</summary>
    public static Tensor WithWeightRegulariser(Tensor loss, Tensor weight, IOecMethod method, IVocabularyReduction vocab) =>
        method.WeightRegulariser(weight, vocab) is { } regulariser ? loss + regulariser : loss;
}
