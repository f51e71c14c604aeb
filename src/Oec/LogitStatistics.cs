// Stability statistics of the head, cheap enough to log every few steps.
using Kernels.Ops;
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
    /// <summary>Mean over tokens of mu . h, from the fp32 mu of E and the hidden states h: the paper's identity says it
    /// equals <see cref="MeanLogit"/>. NaN when the hidden states were not given.</summary>
    public double MeanMuDotH { get; init; } = double.NaN;

    /// <summary>Max over tokens of |(1/V) sum_j l_j - mu . h|: what the logits as computed (bf16 products, soft-capping)
    /// lose of the identity; rounding level (1e-6 of the logits) in fp32 without a cap. NaN without the hidden states.</summary>
    public double MaxMeanLogitGap { get; init; } = double.NaN;

    /// <summary>Mean over the tokens' rows of E (padding rows left out) of r_emb = ||e_i - mu|| / ||e_i||: about 1 for isotropic rows, near 0 when mu
    /// dominates every row (the anisotropy the paper blames for the divergence). Zero rows are left out (NaN: all are).</summary>
    public double REmbMean { get; init; } = double.NaN;

    /// <summary>Min over the tokens' rows of E of ||e_i - mu|| / ||e_i||.</summary>
    public double REmbMin { get; init; } = double.NaN;

    /// <summary>Mean over tokens of each token's max_j |l_j|: what the paper's code logs as max |logit|
    /// (logits_mean_absmax), beside <see cref="MaxAbsLogit"/>, the largest over all tokens.</summary>
    public double MeanMaxAbsLogit { get; init; } = double.NaN;

    /// <summary>logits [N, V_local], weight E [V_local, H], hidden [N, H] when the identity mean logit = mu . h is to be
    /// checked. Computed without gradient, in fp32.</summary>
    public static LogitStatistics Compute(Tensor logits, Tensor weight, IVocabularyReduction vocab, Tensor? hidden = null)
    {
        using var sums = new Sums(vocab, weight);
        sums.Add(logits, hidden: hidden);
        return sums.Result();
    }

    /// <summary>
    /// The statistics of the logits of all tokens, gathered chunk by chunk over the tokens (every chunk holds whole
    /// rows: each token's mean, std, max and log Z are complete in it). The per-token values are summed on the device
    /// and read once, in <see cref="Result"/>. mu of E [V_local, H] is computed once, at construction (an all-reduce
    /// when the vocabulary is sharded).
    /// </summary>
    public sealed class Sums : IDisposable
    {
        readonly IVocabularyReduction vocab;
        readonly Tensor weight, mu;                  // E [V_local, H] detached; mu [H] fp32, global
        // [sum of mean logit, sum of std, sum of log Z, sum of r_log, sum of mu . h, sum of max |logit|] and
        // [max |logit|, max |mean logit - mu . h|], each over the tokens so far
        readonly Tensor sums, maxima;
        long tokens;
        bool identity = true;                        // every chunk came with its hidden states

        public Sums(IVocabularyReduction vocab, Tensor weight)
        {
            this.vocab = vocab;
            this.weight = weight.detach();
            using (no_grad()) mu = OutputEmbedding.Mu(this.weight, vocab);
            sums = zeros(6, device: weight.device);
            maxima = zeros(2, device: weight.device);
        }

        /// <summary>Adds the tokens of logits [n, V_local] (fp32 or wider); logZ [n] when the caller has it already;
        /// hidden [n, H], the states the logits came from, for mu . h.</summary>
        public void Add(Tensor logits, Tensor? logZ = null, Tensor? hidden = null)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var l = logits.detach().to_type(ScalarType.Float32);
            Add(CrossEntropyOp.Statistics(l, vocab.Sum, vocab.Max, vocab.VocabSize), logZ?.detach() ?? vocab.LogSumExp(l), hidden);
        }

        /// <summary>Adds the tokens whose statistics are <paramref name="rows"/> and log Z <paramref name="logZ"/>
        /// (each [n], as the fused cross-entropy computes them); hidden [n, H] as in the other overload.</summary>
        public void Add(LogitRows rows, Tensor logZ, Tensor? hidden)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var muDotH = hidden is null ? zeros_like(rows.Mean) : hidden.detach().to_type(ScalarType.Float32).matmul(mu); // [n]
            identity &= hidden is not null;
            sums.add_(stack([rows.Mean.sum(), rows.Std.sum(), logZ.sum(), rows.RLog.sum(), muDotH.sum(), rows.MaxAbs.sum()]));
            maxima.copy_(maximum(maxima, stack([rows.MaxAbs.max(), (rows.Mean - muDotH).abs().max()])));
            tokens += rows.Mean.shape[0];
        }

        /// <summary>The statistics of every token added, with ||mu|| and r_emb of E; reads the device once.</summary>
        public LogitStatistics Result()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var e = weight.to_type(ScalarType.Float32);                                            // [V_local, H]
            var norms = e.norm(1).unsqueeze(0);                                                    // [1, V_local]
            var isToken = arange(vocab.Offset, vocab.Offset + e.shape[0], 1L, ScalarType.Int64, e.device) < vocab.Tokens; // [V_local] padding rows are no token's
            var rows = (norms > 0) & isToken.unsqueeze(0);                                          // a zero row has no direction: left out
            var rEmb = where(rows, (e - mu).norm(1).unsqueeze(0) / norms.clamp_min(1e-30), 0);      // [1, V_local]
            var count = vocab.Sum(rows.to_type(ScalarType.Float32), -1).squeeze(0);
            var weightWise = stack([vocab.Sum(rEmb, -1).squeeze(0) / count,
                                    -vocab.Max(where(rows, -rEmb, double.NegativeInfinity)).squeeze(0), mu.norm()]).cpu().data<float>().ToArray();
            var perToken = (sums / tokens).cpu().data<float>().ToArray();
            var max = maxima.cpu().data<float>().ToArray();
            return new LogitStatistics(
                MeanLogit: perToken[0],
                LogitStd: perToken[1],
                MaxAbsLogit: max[0],
                MuNorm: weightWise[2],
                MeanLogZ: perToken[2],
                RLog: perToken[3])
            {
                MeanMuDotH = identity ? perToken[4] : double.NaN,
                MaxMeanLogitGap = identity ? max[1] : double.NaN,
                REmbMean = weightWise[0],
                REmbMin = weightWise[1],
                MeanMaxAbsLogit = perToken[5],
            };
        }

        public void Dispose()
        {
            sums.Dispose();
            maxima.Dispose();
            mu.Dispose();
        }
    }
}
