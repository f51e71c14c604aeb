// Parallelism applied to a built model by named steps, in one order (torchtitan's parallelize_llama): the one place that knows it.
using Collectives;
using Job;
using Oec;
using Rank.Model;
using TorchSharp;

namespace Rank.Parallel;

/// <summary>
/// The steps that turn the whole model of one process into this rank's part of a <see cref="ParallelLayout"/>, each
/// testable alone. The trainer calls them in this order, between building the model and building its optimizer:
/// <list type="number">
/// <item><see cref="SplitGroups"/>: the vocabulary group and the data group of this rank (collective over all ranks).</item>
/// <item><see cref="ApplyVocabParallel"/>: the embeddings keep this shard's rows; the head's reductions span the group.</item>
/// <item><see cref="ApplyActivationCheckpointing"/>: the blocks that recompute their forward in backward.</item>
/// <item>The model moves to its device: what follows communicates its tensors (NCCL: GPU memory).</item>
/// <item><see cref="ApplyDataParallel"/>: replicas start from replica 0's parameters and average their gradients;
/// or, with train.zero &gt; 0, <see cref="ApplyZero"/>: the optimizer's state, the gradients and the blocks' weights
/// split over the data group (ZeRO stages 1-3), the optimizer and the reduction in one.</item>
/// </list>
/// The optimizer of stage 0 is built last, over the parameters as these steps leave them.
/// </summary>
public static class Parallelize
{
    /// <summary>
    /// Splits <paramref name="comm"/> by the layout: the vocabulary group (rank r's replica's tp shards, ordered by
    /// shard) when tp > 1, and the data group (rank r's shard in each of the dp replicas, ordered by replica) when
    /// dp > 1 (the whole communicator when tp = 1). Both splits are collective over all ranks. No communicator: one
    /// process, no groups.
    /// </summary>
    public static ParallelGroups SplitGroups(ICommunicator? comm, ParallelLayout layout)
    {
        if (comm is null || comm.WorldSize == 1) return new ParallelGroups(null, null, ownsData: false);
        if (comm.WorldSize != layout.WorldSize)
            throw new ArgumentException($"the communicator has {comm.WorldSize} ranks, the layout {layout}");
        if (layout.VocabParallel == 1) return new ParallelGroups(null, comm, ownsData: false);
        int dataRank = layout.DataRank(comm.Rank), vocabRank = layout.VocabRank(comm.Rank);
        var vocab = comm.Split(color: dataRank, key: vocabRank);
        var sameShard = comm.Split(color: vocabRank, key: dataRank);
        if (layout.DataParallel > 1) return new ParallelGroups(vocab, sameShard, ownsData: true);
        sameShard.Dispose();
        return new ParallelGroups(vocab, null, ownsData: false);
    }

    /// <summary>
    /// Vocabulary parallelism over <paramref name="vocabGroup"/>: the model keeps rows [r V/tp, (r + 1) V/tp) of its
    /// embeddings (their values those of the whole model, so a shard starts as its part of the unsharded
    /// initialisation) and looks tokens up through <see cref="ShardedVocabulary.Lookup"/>. Returns the reductions
    /// over the vocabulary the head takes: the group's, or local ones when there is no group. <paramref name="tokens"/>:
    /// the rows that are tokens, the data's vocabulary before padding (null: all).
    /// </summary>
    public static IVocabularyReduction ApplyVocabParallel(Gpt model, ICommunicator? vocabGroup, long? tokens = null)
    {
        if (vocabGroup is null) return new LocalVocabulary(model.VocabSize, tokens);
        var shard = new ShardedVocabulary(vocabGroup, model.VocabSize, tokens);
        model.KeepVocabularyRows(shard.Offset, shard.Rows);
        model.Lookup = idx => shard.Lookup(model.TokenEmbedding, idx);
        return shard;
    }

    /// <summary>Activation checkpointing: the blocks <paramref name="checkpointing"/> covers keep only their input
    /// from the forward and run it again in backward (<see cref="Recomputed"/>).</summary>
    public static void ApplyActivationCheckpointing(Gpt model, ActivationCheckpointing checkpointing) => model.Checkpointing = checkpointing;

    /// <summary>
    /// Data parallelism over the data group: every replica takes replica 0's parameters, and the gradients are averaged
    /// over the group by <see cref="DataParallelGradients"/>, overlapped with backward when <paramref name="overlap"/>
    /// (train.overlap_grad_reduce) and the vocabulary is whole. Not with a sharded vocabulary, whose backward runs
    /// collectives of its own on the vocabulary group: two communicators' kernels at once are allowed only when every
    /// rank orders them alike, which the autograd engine does not promise. Null when there is no data group.
    /// </summary>
    public static DataParallelGradients? ApplyDataParallel(Gpt model, ParallelGroups groups, bool overlap)
    {
        if (groups.Data is not { } data) return null;
        var gradients = overlap && groups.Vocab is null
            ? DataParallelGradients.Overlapped(model, data)
            : new DataParallelGradients(new GradientBucketer(data, model.parameters().Cast<torch.Tensor>().ToList()));
        gradients.BroadcastParameters();
        return gradients;
    }

    /// <summary>ZeRO over the data group at <paramref name="stage"/> (1-3): a <see cref="ZeroAdamW"/> that reduces
    /// the gradients and steps the optimizer; replicas start from replica 0's parameters. Null when there is no data group.</summary>
    public static ZeroAdamW? ApplyZero(Gpt model, ParallelGroups groups, int stage, double weightDecay, double beta1, double beta2, double eps, bool overlap) =>
        groups.Data is { } data ? new ZeroAdamW(model, data, groups.Vocab, stage, weightDecay, beta1, beta2, eps, overlap) : null;
}

/// <summary>This rank's communicators within the layout: Vocab, the vocabulary group (tp ranks, one replica's
/// shards; null when tp = 1); Data, the data group (dp ranks, one shard's replicas; null when dp = 1). Disposes the
/// groups split for them, not the communicator they were split from.</summary>
public sealed class ParallelGroups(ICommunicator? vocab, ICommunicator? data, bool ownsData) : IDisposable
{
    public ICommunicator? Vocab => vocab;
    public ICommunicator? Data => data;

    public void Dispose()
    {
        if (ownsData) data?.Dispose();
        vocab?.Dispose();
    }
}
