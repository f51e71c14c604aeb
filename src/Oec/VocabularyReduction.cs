// The one seam for reductions over the vocabulary dimension of the output embedding and the logits.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

/// <summary>
/// Every reduction over the vocabulary goes through this interface: the row sum for mu and the sums and
/// maxima inside log Z and the logit statistics. Unsharded, each is a local reduction (<see cref="LocalVocabulary"/>).
/// With a vocabulary-sharded head (each rank holds rows [offset, offset + V/tp) of E), an implementation
/// reduces locally and then all-reduces across the vocabulary-parallel group, so that every method in this
/// library gives the global value on every rank.
/// </summary>
public interface IVocabularyReduction
{
    /// <summary>V: rows of the whole output embedding, padding rows included (mu averages over all of them).</summary>
    long VocabSize { get; }

    /// <summary>Rows that are tokens: V without the padding rows, which follow them (r_emb is measured over tokens).</summary>
    long Tokens { get; }

    /// <summary>The global row of this rank's first row: 0 unsharded.</summary>
    long Offset { get; }

    /// <summary>Sum over the vocabulary dimension <paramref name="dim"/> of a [.., V_local, ..] tensor. Differentiable.</summary>
    Tensor Sum(Tensor x, long dim);

    /// <summary>Max over the last (vocabulary) dimension of [.., V_local]. Not differentiated.</summary>
    Tensor Max(Tensor x);

    /// <summary>log Z = log sum_j exp(l_j) over the last dimension of logits [.., V_local] -> [..]. Differentiable.</summary>
    Tensor LogSumExp(Tensor logits);

    /// <summary>The logit of each target token: logits [N, V_local], targets [N] (global ids) -> [N]. Differentiable.</summary>
    Tensor TargetLogit(Tensor logits, Tensor targets);

    /// <summary>The hidden states [N, H] entering the head, the same on every rank of the group. Identity forward;
    /// sharded, the backward sums their gradient over the group, since each shard's logits give only its part.</summary>
    Tensor Share(Tensor hidden);
}

/// <summary>The unsharded head: every reduction is local, with no communication and no extra cost.</summary>
/// <param name="tokens">Rows that are tokens (the data's vocabulary before padding); null: all <paramref name="vocabSize"/>.</param>
public sealed class LocalVocabulary(long vocabSize, long? tokens = null) : IVocabularyReduction
{
    public long VocabSize { get; } = vocabSize > 0 ? vocabSize
        : throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "vocabulary size must be positive");

    public long Tokens { get; } = tokens is long t && (t < 1 || t > vocabSize)
        ? throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"tokens must be in [1, {vocabSize}]")
        : tokens ?? vocabSize;

    public long Offset => 0;

    public Tensor Sum(Tensor x, long dim) => x.sum(dim);

    public Tensor Max(Tensor x) => x.amax(-1);

    public Tensor LogSumExp(Tensor logits) => logits.logsumexp(-1);

    public Tensor TargetLogit(Tensor logits, Tensor targets) => logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1);

    public Tensor Share(Tensor hidden) => hidden;
}
