// The memory a rank needs to train a configuration: weights, bf16 copies, gradients, AdamW state, activations and the
// loss's chunk, per ZeRO stage and activation checkpointing. The one home of that arithmetic (MemoryBudget uses it too).
using Job;
using Rank.Model;
using Rank.Parallel;
using Rank.Training;

namespace Rank.Configuration;

/// <summary>
/// The GPT's parameters by unit, in double so that absurd sizes do not overflow: the embeddings/head unit (wte [V, d],
/// lm_head [V, d] unless tied, ln_f [d]) and n_layer blocks of attention 4 d^2, SwiGLU 3 d h and four LayerNorms.
/// </summary>
/// <param name="Vocab">V, padded to model.vocab_multiple.</param>
/// <param name="Hidden">h: SwiGLU's hidden size, 256 * ceil(floor(8d/3) / 256) as Rank.Model.SwiGlu.HiddenSize.</param>
public sealed record ModelShape(double Vocab, double Dim, int Layers, int Heads, double Hidden, bool Tied)
{
    /// <summary>The shape of <paramref name="model"/> (resolved) over a vocabulary of <paramref name="vocabSize"/> tokens.</summary>
    public static ModelShape Of(ModelOptions model, int vocabSize)
    {
        double d = model.DModel!.Value;
        return new ModelShape(model.PaddedVocab(vocabSize), d, model.NLayer!.Value, model.NHead!.Value,
                              256 * Math.Ceiling(Math.Floor(8 * d / 3) / 256), model.WeightTying);
    }

    /// <summary>hs: d / n_head.</summary>
    public double HeadDim => Dim / Heads;

    /// <summary>One block: c_attn 3 d^2, c_proj d^2, SwiGLU's W, V, W_2 3 d h, ln_1 and ln_2 (d each), the q and k LayerNorms (hs each).</summary>
    public double BlockParameters => (4 * Dim * Dim) + (3 * Dim * Hidden) + (2 * Dim) + (2 * HeadDim);

    /// <summary>The embeddings/head unit of a rank holding V / tp rows of each embedding: wte, lm_head unless tied, ln_f.</summary>
    public double EmbeddingParameters(int vocabParallel = 1) => (Math.Ceiling(Vocab / vocabParallel) * Dim * (Tied ? 1 : 2)) + Dim;

    /// <summary>Every parameter of the whole model (numel over model.parameters()).</summary>
    public double Parameters => (Layers * BlockParameters) + EmbeddingParameters();
}

/// <summary>
/// The bytes one rank holds while training, for train.zero = <see cref="Zero"/> over the data group of dp = W / tp ranks,
/// as Rank.Parallel.ZeroAdamW splits them: units (the root: embeddings, ln_f, head; and each block), each padded to a
/// multiple of dp. Stage 1: AdamW state / dp; 2: gradients too, with a block's whole gradient during its backward and
/// the root's through the backward; 3: the blocks' fp32 weights too, a block gathered whole while it runs and the next one arriving (and its bf16
/// copy), the root whole on every rank, and every block recomputed in backward. The embeddings' rows are / tp.
/// Activations are per sequence of T tokens, as autograd saves them (<see cref="BlockActivations"/>); everything else
/// is per rank whatever the batch.
/// </summary>
public sealed record MemoryPlan(ModelShape Shape, int SequenceLength, Precision Precision, long LossChunkTokens, ParallelLayout Layout,
                                int Zero, ActivationCheckpointing Checkpointing)
{
    /// <summary>The plan of <paramref name="config"/>: its model, train (train.zero, train.activation_checkpointing) and job sections.</summary>
    public static MemoryPlan Of(RunConfig config) =>
        new(ModelShape.Of(config.Model, config.Data.ResolvedVocabSize), config.Train.SequenceLength, config.Train.Precision,
            config.Train.LossChunkTokens, ParallelLayout.Of(config.Job), config.Train.Zero, config.Train.Checkpointing);

    bool Bf16 => Precision == Precision.Bf16;
    int Dp => Layout.DataParallel;

    /// <summary>The stage that applies: train.zero over a data group, 0 without one (dp = 1: nothing to split).</summary>
    public int Stage => Dp > 1 ? Zero : 0;

    /// <summary>Parameters a rank holds before ZeRO: every block and the embeddings/head unit with V / tp rows.</summary>
    public double RankParameters => (Shape.Layers * Shape.BlockParameters) + Shape.EmbeddingParameters(Layout.VocabParallel);

    /// <summary>The root unit of a rank: the embeddings (V / tp rows), ln_f and the head.</summary>
    double Root => Shape.EmbeddingParameters(Layout.VocabParallel);

    /// <summary>A rank's shards of every unit, each unit padded to a multiple of dp.</summary>
    double Shards => (Shape.Layers * Math.Ceiling(Shape.BlockParameters / Dp)) + Math.Ceiling(Root / Dp);

    /// <summary>What is whole at a time under stage 3: the root and one gathered block.</summary>
    double Whole => Root + Shape.BlockParameters;

    /// <summary>fp32 weights: all of them, or (stage 3) the blocks' shards, the root, the gathered block and the next
    /// one, whose gather is under way (prefetch).</summary>
    public double WeightBytes => 4 * (Stage >= 3 ? (Shape.Layers * Math.Ceiling(Shape.BlockParameters / Dp)) + Whole + Shape.BlockParameters : RankParameters);

    /// <summary>The weights cast to bf16 once per step (train.precision = bf16; 0 in fp32): of what is whole at a time.</summary>
    public double Bf16WeightBytes => !Bf16 ? 0 : 2 * (Stage >= 3 ? Whole : RankParameters);

    /// <summary>fp32 gradients: all, or (stage 2 and 3) the shards, the root's whole gradient through the backward and
    /// one block's during its backward.</summary>
    public double GradientBytes => 4 * (Stage >= 2 ? Shards + Whole : RankParameters);

    /// <summary>AdamW's two fp32 moments: of all parameters, or (stage 1 and up) of the shards.</summary>
    public double OptimizerBytes => 8 * (Stage >= 1 ? Shards : RankParameters);

    /// <summary>The blocks recomputed in backward: train.activation_checkpointing's, or every block under stage 3.</summary>
    public int CheckpointedBlocks => Enumerable.Range(0, Shape.Layers).Count((Stage >= 3 ? new ActivationCheckpointing(1) : Checkpointing).Covers);

    /// <summary>Weights, copies, gradients and optimizer state: what MemoryBudget checks at start-up.</summary>
    public double StateBytes => WeightBytes + Bf16WeightBytes + GradientBytes + OptimizerBytes;

    /// <summary>Tokens in one chunk of the fused head (Oec.ChunkedHead.ChunkTokens over V / tp rows).</summary>
    public double ChunkTokens => Oec.ChunkedHead.ChunkTokens(LossChunkTokens, (long)Math.Min(long.MaxValue, Math.Ceiling(Shape.Vocab / Layout.VocabParallel)));

    /// <summary>
    /// The fused head's memory besides the activations, for <paramref name="sequences"/> sequences per rank: dL/dE
    /// [V/tp, d] fp32, formed in its forward and held until its backward, and one chunk's loss over n = min(chunk, B T)
    /// tokens: the logits [n, V/tp] fp32 and three more fp32 arrays of that size in the loss's backward (the shifted
    /// logits, their exp, the gradient); in bf16 also the matmul's bf16 logits and the bf16 gradient (2 bytes each).
    /// </summary>
    public double LossBytes(int sequences)
    {
        double rows = Math.Ceiling(Shape.Vocab / Layout.VocabParallel);
        double tokens = Math.Min(ChunkTokens, (double)sequences * SequenceLength);
        return (4 * rows * Shape.Dim) + (tokens * rows * (Bf16 ? 20 : 16));
    }

    /// <summary>
    /// What autograd saves in one block for one sequence (B = 1, T tokens, d, hs, nh heads, h hidden), with attention by
    /// a fused kernel (flash or memory-efficient: no [T, T] matrix), bytes. fp32, every tensor 4 bytes:
    ///   x [T, d] (ln_1's input), ln_1(x) [T, d] (c_attn's input), qkv [T, 3d] (kept by the q, k LayerNorms' and
    ///   attention's views of it), rotated q and k [nh, T, hs] (attention's inputs), attention's output [T, d] (c_proj's
    ///   input, the same storage), x1 [T, d] (ln_2's input), ln_2(x1) [T, d] (W's and V's input), W x and V x [T, h]
    ///   (silu's input, the product's), silu(W x) [T, h], their product [T, h] (W_2's input):
    ///   40 T d + 16 T h.
    /// bf16 (the residual stream, LayerNorms and rotary in fp32; matmul inputs and outputs in bf16):
    ///   x [T, d] fp32, ln_1(x) cast to bf16, qkv [T, 3d] bf16, q and k cast to fp32 for their LayerNorms [T, d] fp32 each,
    ///   rotated q and k cast to bf16, attention's output bf16, x1 [T, d] fp32, ln_2(x1) cast to bf16 twice (W's and V's
    ///   casts are separate tensors), W x, V x, silu, product [T, h] bf16:
    ///   34 T d + 8 T h.
    /// Both: LayerNorm's mean and rstd per row (ln_1, ln_2: [T] fp32; q, k: [nh, T] fp32) and attention's logsumexp
    /// [nh, T] fp32: 16 T + 20 nh T.
    /// </summary>
    public double BlockActivations
    {
        get
        {
            double t = SequenceLength, d = Shape.Dim, h = Shape.Hidden;
            double matrices = Bf16 ? (34 * t * d) + (8 * t * h) : (40 * t * d) + (16 * t * h);
            return matrices + (16 * t) + (20 * Shape.Heads * t);
        }
    }

    /// <summary>Per sequence outside the blocks: ln_f's input and output [T, d] fp32 (the head's input, held by the
    /// step), the head's dL/dhidden [T, d] fp32 (formed in its forward), and the token ids and targets [T] int64.</summary>
    double HeadActivations => (12.0 * SequenceLength * Shape.Dim) + (16.0 * SequenceLength);

    /// <summary>Activation bytes per sequence without checkpointing: every block's and the head's.</summary>
    public double ActivationBytes => (Shape.Layers * BlockActivations) + HeadActivations;

    /// <summary>Activation bytes per sequence with <see cref="CheckpointedBlocks"/>: a checkpointed block keeps only its
    /// input [T, d] fp32 (Rank.Parallel.Recomputed; TorchSharp's placeholder for its output is slimmed to one element);
    /// the others keep everything, and backward recomputes one checkpointed block at a time.</summary>
    public double CheckpointedActivationBytes
    {
        get
        {
            int kept = CheckpointedBlocks;
            if (kept == 0) return ActivationBytes;
            return (kept * 4.0 * SequenceLength * Shape.Dim) + ((Shape.Layers - kept + 1) * BlockActivations) + HeadActivations;
        }
    }

    /// <summary>Bytes per rank for <paramref name="sequences"/> sequences per rank (a replica's share of train.batch_size).</summary>
    public double TotalBytes(int sequences) => StateBytes + LossBytes(sequences) + (sequences * CheckpointedActivationBytes);

    /// <summary>The most sequences per rank whose <see cref="TotalBytes"/> fit <paramref name="memoryBytes"/> (at most
    /// 2^30); 0 when not even one does.</summary>
    public int MaxSequences(double memoryBytes)
    {
        int fits = 0;
        for (int step = 1 << 30; step > 0; step >>= 1)
            if (TotalBytes(fits + step) <= memoryBytes) fits += step;
        return fits;
    }
}
