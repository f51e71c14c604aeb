// Stability statistics of the head, cheap enough to log every few steps.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

/// <summary>
/// The paper's per-evaluation statistics. Per-token values are averaged over the N tokens, except MaxAbsLogit,
/// the maximum over all tokens. All are global over the vocabulary (through <see cref="IVocabularyReduction"/>).
/// </summary>
public sealed record LogitStatistics(
    double MeanLogit,   // mean over tokens of (1/V) sum_j l_j, which equals mu . h
    double LogitStd,    // mean over tokens of the standard deviation of l_j over j
    double MaxAbsLogit, // max over tokens and j of |l_j|
    double MuNorm,      // ||mu||
    double MeanLogZ,    // mean over tokens of log sum_j exp(l_j)
    double RLog)        // mean over tokens of max_j |l_j - mean l| / max_j |l_j|
{
    /// <summary>logits [N, V_local], weight E [V_local, H]. Computed without gradient, in fp32.</summary>
    public static LogitStatistics Compute(Tensor logits, Tensor weight, IVocabularyReduction vocab)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var l = logits.detach().to_type(ScalarType.Float32);
        double v = vocab.VocabSize;
        var mean = vocab.Sum(l, -1) / v;                                           // [N]
        var variance = vocab.Sum((l - mean.unsqueeze(-1)).square(), -1) / v;        // [N]; two-pass, so it stays accurate when all logits drift together
        var maxAbs = vocab.Max(l.abs());                                           // [N]
        var maxDeviation = vocab.Max((l - mean.unsqueeze(-1)).abs());              // [N]
        return new LogitStatistics(
            MeanLogit: mean.mean().item<float>(),
            LogitStd: variance.sqrt().mean().item<float>(),
            MaxAbsLogit: maxAbs.max().item<float>(),
            MuNorm: OutputEmbedding.Mu(weight.detach(), vocab).norm().item<float>(),
            MeanLogZ: vocab.LogSumExp(l).mean().item<float>(),
            RLog: (maxDeviation / maxAbs.clamp_min(1e-30)).mean().item<float>());
    }
}
