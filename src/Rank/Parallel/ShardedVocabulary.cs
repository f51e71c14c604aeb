// The vocabulary-sharded head's reductions: local reduce, then all-reduce across the vocabulary-parallel group.
using Collectives;
using Kernels;
using Oec;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Parallel;

/// <summary>
/// This rank holds rows [Offset, Offset + Rows) of E [V, H] and the same columns of the logits; the other shards are on
/// the other ranks of <paramref name="group"/>, which all see the same tokens. Sums become a local sum plus an
/// all-reduce whose backward is the identity (Megatron's reduce-from-region): every rank computes the same loss from
/// the global sums, so each shard's gradient is already whole. Maxima are all-reduced without gradient. log Z is
/// Megatron's vocab-parallel log-sum-exp: global max, local sum of exponentials, one all-reduce; its backward, the
/// local softmax, needs no communication. Only the hidden states entering the head need one all-reduce in backward
/// (<see cref="Share"/>). The input embedding's lookup is Megatron's vocab-parallel embedding (<see cref="Lookup"/>).
/// Every value the OEC library derives from these (mu, mu-loss, log Z, z-loss, the statistics) is
/// therefore global and identical on every rank of the group.
/// </summary>
public sealed class ShardedVocabulary : IVocabularyReduction
{
    readonly ICommunicator group;

    /// <param name="vocabSize">V, padded: divisible by the group size; rank r of the group holds rows [r V/tp, (r + 1) V/tp).</param>
    /// <param name="tokens">Rows that are tokens (the data's vocabulary before padding); null: all of them.</param>
    public ShardedVocabulary(ICommunicator group, long vocabSize, long? tokens = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        if (vocabSize < 1 || vocabSize % group.WorldSize != 0)
            throw new ArgumentException($"vocabulary of {vocabSize} rows cannot be split evenly over {group.WorldSize} vocabulary-parallel ranks");
        this.group = group;
        VocabSize = vocabSize;
        Rows = vocabSize / group.WorldSize;
        Offset = group.Rank * Rows;
        Tokens = tokens is long t && (t < 1 || t > vocabSize) ? throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"tokens must be in [1, {vocabSize}]")
            : tokens ?? vocabSize;
    }

    public long VocabSize { get; }
    public long Tokens { get; }
    /// <summary>First global row (token id) of this shard.</summary>
    public long Offset { get; }
    /// <summary>Rows of this shard: V / tp.</summary>
    public long Rows { get; }
    public int Parts => group.WorldSize;

    public Tensor Sum(Tensor x, long dim) => SumAcross(x.sum(dim));

    public Tensor Max(Tensor x)
    {
        using var noGrad = no_grad();
        using var local = x.amax(-1);
        return AllReducedCopy(local, group, ReduceOp.Max);
    }

    public Tensor LogSumExp(Tensor logits)
    {
        var max = Max(logits);                                             // [N], global, constant for autograd
        var sum = SumAcross((logits - max.unsqueeze(-1)).exp().sum(-1));   // [N], global sum of exp(l - max)
        return max + sum.log();
    }

    public Tensor TargetLogit(Tensor logits, Tensor targets)
    {
        var local = targets - Offset;                                      // [N]: this shard's column, where it has one
        var mine = local.ge(0).logical_and(local.lt(Rows));
        var picked = logits.gather(-1, local.clamp(0, Rows - 1).unsqueeze(-1)).squeeze(-1) * mine.to_type(logits.dtype);
        return SumAcross(picked);                                          // exactly one shard contributes per token
    }

    public Tensor Share(Tensor hidden) => ShareAcrossGroup.apply(hidden, group);

    /// <summary>
    /// Megatron's vocab-parallel embedding: ids [B, T] -> [B, T, d] from <paramref name="table"/>, this shard's rows
    /// [Rows, d]. Ids outside the shard look up row 0 and are zeroed; the sum over the group gives every rank the full
    /// lookup, and its backward leaves each shard the gradient of its own rows.
    /// </summary>
    public Tensor Lookup(Embedding table, Tensor idx)
    {
        var local = idx - Offset;                                       // [B, T]
        var outside = local.lt(0).logical_or(local.ge(Rows));
        var x = table.forward(local.masked_fill(outside, 0)) * outside.logical_not().unsqueeze(-1).to_type(ScalarType.Float32);
        return SumAcross(x);
    }

    /// <summary>Element-wise sum over the group of a tensor each rank holds a part of; backward: identity.</summary>
    public Tensor SumAcross(Tensor partial) => SumAcrossGroup.apply(partial, group);

    /// <summary>A contiguous copy of x, reduced over the group. The temporary is named and disposed, so it stays alive
    /// until clone has read it (TorchSharp may otherwise finalize it on another thread's garbage collection).</summary>
    static Tensor AllReducedCopy(Tensor x, ICommunicator group, ReduceOp op)
    {
        using var contiguous = x.contiguous();
        var copy = contiguous.clone();
        group.AllReduce(copy, op);
        return copy;
    }

    /// <summary>Forward: all-reduce SUM. Backward: the gradient as it is (every rank holds the same downstream loss).</summary>
    sealed class SumAcrossGroup : torch.autograd.SingleTensorFunction<SumAcrossGroup>
    {
        public override string Name => "SumAcrossVocabularyShards";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            return AllReducedCopy((Tensor)vars[0], (ICommunicator)vars[1], ReduceOp.Sum);
        }

        // One gradient per argument: the tensor's, and none for the communicator.
        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) => BackwardTensors.Run(gradOutput, () => [gradOutput, null!]);
    }

    /// <summary>Forward: identity. Backward: all-reduce SUM of the gradient (each shard contributes its part).</summary>
    sealed class ShareAcrossGroup : torch.autograd.SingleTensorFunction<ShareAcrossGroup>
    {
        public override string Name => "ShareAcrossVocabularyShards";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("group", vars[1]);
            return ((Tensor)vars[0]).alias();
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardTensors.Run(gradOutput, () => [AllReducedCopy(gradOutput, (ICommunicator)ctx.get_data("group"), ReduceOp.Sum), null!]);
    }
}
