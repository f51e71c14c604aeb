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
        using var sums = new Sums(vocab, logits.device);
        sums.Add(logits);
        return sums.Result(weight);
    }

    /// <summary>
    /// The statistics of the logits of all tokens, gathered chunk by chunk over the tokens (every chunk holds whole
    /// rows: each token's mean, std, max and log Z are complete in it). The per-token values are summed on the device
    /// and read once, in <see cref="Result"/>.
    /// </summary>
    public sealed class Sums(IVocabularyReduction vocab, Device device) : IDisposable
    {
        // [sum of mean logit, sum of std, sum of log Z, sum of r_log] and the max |logit|, each over the tokens so far
        readonly Tensor sums = zeros(4, device: device), maxAbs = zeros(1, device: device);
        long tokens;

        /// <summary>Adds the tokens of logits [n, V_local] (fp32 or wider); logZ [n] when the caller has it already.</summary>
        public void Add(Tensor logits, Tensor? logZ = null)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var l = logits.detach().to_type(ScalarType.Float32);
            double v = vocab.VocabSize;
            var mean = vocab.Sum(l, -1) / v;                                           // [n]
            var deviation = l - mean.unsqueeze(-1);                                    // [n, V_local]
            var variance = vocab.Sum(deviation.square(), -1) / v;                      // [n]; two-pass, so it stays accurate when all logits drift together
            var largest = vocab.Max(l.abs());                                          // [n]
            var rLog = vocab.Max(deviation.abs()) / largest.clamp_min(1e-30);          // [n]
            var z = logZ?.detach() ?? vocab.LogSumExp(l);                              // [n]
            sums.add_(stack([mean.sum(), variance.sqrt().sum(), z.sum(), rLog.sum()]));
            maxAbs.copy_(maximum(maxAbs, largest.max().unsqueeze(0)));
            tokens += l.shape[0];
        }

        /// <summary>The statistics of every token added, with ||mu|| of E [V_local, H]; reads the device once.</summary>
        public LogitStatistics Result(Tensor weight)
        {
            using var scope = NewDisposeScope();
            var perToken = (sums / tokens).cpu().data<float>().ToArray();
            return new LogitStatistics(
                MeanLogit: perToken[0],
                LogitStd: perToken[1],
                MaxAbsLogit: maxAbs.item<float>(),
                MuNorm: OutputEmbedding.Mu(weight.detach(), vocab).norm().item<float>(),
                MeanLogZ: perToken[2],
                RLog: perToken[3]);
        }

        public void Dispose()
        {
            sums.Dispose();
            maxAbs.Dispose();
        }
    }
}
