// The fused linear cross-entropy: the head's matmul, loss and gradients chunk by chunk over the tokens, never all logits at once.
using Kernels;
using Kernels.Ops;
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

/// <summary>
/// hidden [N, H] times E^T -> logits, the method's transform, cross-entropy and token penalty (z-loss), and their
/// gradients for the hidden states and for E, one chunk of tokens [n, V_local] at a time inside one autograd function,
/// as Liger-Kernel's FusedLinearCrossEntropy and llm.c's fused classifier do: the forward computes each chunk's
/// gradients while its logits exist and keeps only dL/dhidden [N, H] and dL/dE [V_local, H]; the backward scales them by
/// the incoming gradient. So at most one chunk of logits (and the few chunk-sized temporaries of its loss) is alive.
/// Each chunk's loss is differentiated with autograd on its own logits, through the same <see cref="IVocabularyReduction"/>
/// calls as <see cref="OutputEmbedding.Loss"/> (a sharded vocabulary all-reduces each chunk's max, sum-exp and target
/// logit), so every method's hooks apply per chunk unchanged; or, given the kernels, on a GPU, an unsharded vocabulary
/// and a method whose hooks the kernel knows (<see cref="FormOf"/>), by one kernel launch per chunk that writes the
/// loss terms, the statistics and the logits' gradient (<see cref="CrossEntropyOp"/>). The matmuls run in the compute
/// dtype, the softmax and the loss in fp32; the gradients arrive in fp32.
/// </summary>
public static class ChunkedHead
{
    /// <summary>train.loss_chunk_tokens = 0 keeps a chunk's fp32 logits [n, V_local] within this many bytes (256 MiB:
    /// 1334 tokens at V = 50304). A chunk's matmul [n, H] x [H, V] still fills a GPU at that size, and its loss holds
    /// about four such temporaries (logits, transformed logits, softmax, gradient), about 1 GiB, where the whole
    /// logits of the 16M shape's 32768 tokens took 6.6 GB each.</summary>
    public const long AutoChunkBytes = 256L << 20;

    /// <summary>Tokens per chunk: <paramref name="requested"/> when positive, else as many as fit <see cref="AutoChunkBytes"/>.</summary>
    public static long ChunkTokens(long requested, long vocabLocal) =>
        requested > 0 ? requested : Math.Max(1, AutoChunkBytes / (sizeof(float) * vocabLocal));

    /// <summary>
    /// The head's loss of hidden [N, H] (fp32 or the compute dtype) against targets [N] int64, with E = weight
    /// [V_local, H] fp32: cross-entropy and the method's token penalty, chunk by chunk, plus its regulariser on E
    /// (mu-loss) once, outside the chunks. Differentiable in hidden and weight. <paramref name="computeWeight"/>: E in
    /// <paramref name="compute"/> when the caller holds that copy already (the model's cast once per step); null: cast
    /// here. The statistics, when asked for, come from the same chunks. <paramref name="kernels"/>: the fused
    /// cross-entropy's, where it applies (null: the TorchSharp ops throughout).
    /// </summary>
    public static HeadLoss Loss(Tensor hidden, Tensor weight, Tensor targets, IOecMethod method, IVocabularyReduction vocab,
                                ScalarType compute = ScalarType.Float32, long chunkTokens = 0, bool statistics = false,
                                Tensor? computeWeight = null, KernelRuntime? kernels = null)
    {
        var shared = vocab.Share(hidden);                                                   // [N, H]
        var hooks = new CrossEntropyHooks(method.TransformLogits, method.TokenPenalty, vocab.LogSumExp, vocab.TargetLogit,
                                          vocab.Sum, vocab.Max, vocab.VocabSize, FormOf(method, vocab));
        var plan = new Plan(targets, hooks, kernels, compute, ChunkTokens(chunkTokens, weight.shape[0]), computeWeight,
                            statistics ? new LogitStatistics.Sums(vocab, weight) : null);
        try
        {
            bool differentiate = is_grad_enabled() && (shared.requires_grad || weight.requires_grad);
            var tokenLoss = differentiate ? Function.apply(shared, weight, plan) : Run(shared, weight, plan).Loss;
            var loss = OutputEmbedding.WithWeightRegulariser(tokenLoss, weight, method, vocab);
            return new HeadLoss(loss, plan.CrossEntropy!, plan.Statistics?.Result());
        }
        finally
        {
            plan.Statistics?.Dispose();
        }
    }

    /// <summary>The method's transform and penalty as the fused cross-entropy's parameters, for the methods whose hooks
    /// are exactly those (identity or soft-capping, no penalty or z-loss) over an unsharded vocabulary; null: autograd.</summary>
    public static CrossEntropyForm? FormOf(IOecMethod method, IVocabularyReduction vocab) => vocab is not LocalVocabulary ? null : method switch
    {
        NoneMethod or MuLossMethod or MuCenteringMethod => new(),
        ZLossMethod z => new(ZLossLambda: z.Lambda),
        SoftCapMethod s => new(SoftCap: s.Cap),
        _ => null,
    };

    /// <summary>What a call chunks (Chunk: tokens per chunk) and what its forward leaves for the caller (the
    /// cross-entropy, a scalar without gradient).</summary>
    sealed record Plan(Tensor Targets, CrossEntropyHooks Hooks, KernelRuntime? Kernels, ScalarType Compute, long Chunk,
                       Tensor? ComputeWeight, LogitStatistics.Sums? Statistics)
    {
        public Tensor? CrossEntropy { get; set; }
    }

    /// <summary>The sums over all chunks, each divided by N: the token loss, and (when differentiated) its gradients.</summary>
    sealed record Totals(Tensor Loss, Tensor? HiddenGrad, Tensor? WeightGrad);

    /// <summary>The chunk loop: loss, cross-entropy (into the plan), statistics, and the gradients when asked for.</summary>
    static Totals Run(Tensor hidden, Tensor weight, Plan plan, bool gradients = false)
    {
        using var noGrad = no_grad();
        long total = hidden.shape[0];                                                       // N
        var e = plan.ComputeWeight ?? weight.detach().to_type(plan.Compute);               // [V_local, H]
        var lossSum = zeros(2, device: hidden.device);                                     // [token loss, cross-entropy], summed
        var hiddenGrad = gradients ? empty(hidden.shape, device: hidden.device) : null;    // [N, H] fp32
        var weightGrad = gradients ? zeros(weight.shape, device: weight.device) : null;    // [V_local, H] fp32
        for (long start = 0; start < total; start += plan.Chunk)
        {
            using var scope = NewDisposeScope();
            long rows = Math.Min(plan.Chunk, total - start);
            var states = hidden.detach().narrow(0, start, rows);                           // [n, H] as given
            var h = states.to_type(plan.Compute);                                           // [n, H]
            var logits = nn.functional.linear(h, e).to_type(ScalarType.Float32);            // [n, V_local]: the product in Compute, then fp32
            var dLogits = Chunk(logits, states, plan.Targets.narrow(0, start, rows), total, plan, lossSum, gradients);
            if (dLogits is null) continue;
            var d = dLogits.to_type(plan.Compute);                                           // [n, V_local]
            hiddenGrad!.narrow(0, start, rows).copy_(d.mm(e));                               // [n, H]
            weightGrad!.add_(d.t().mm(h));                                                   // [V_local, H]; both products as linear's backward forms them
        }
        plan.CrossEntropy = lossSum[1] / total;
        return new Totals(lossSum[0] / total, hiddenGrad, weightGrad);
    }

    /// <summary>
    /// One chunk's logits [n, V_local] fp32, hidden states [n, H] and targets [n]: adds its token loss and cross-entropy
    /// (sums over its tokens) to lossSum, its statistics to the plan's, and returns d(its token loss / N)/d logits, [n, V_local], when asked for; total: N.
    /// </summary>
    static Tensor? Chunk(Tensor logits, Tensor hidden, Tensor targets, long total, Plan plan, Tensor lossSum, bool gradients)
    {
        var rows = CrossEntropyOp.Apply(plan.Kernels, logits, targets, total, plan.Hooks, gradients, plan.Statistics is not null);
        if (rows.Statistics is { } statistics) plan.Statistics!.Add(statistics, rows.LogZ, hidden);
        using var noGrad = no_grad();
        var crossEntropy = rows.CrossEntropy.sum();                                          // nats, summed over the chunk
        lossSum.add_(stack([rows.Penalty is { } penalty ? crossEntropy + penalty.sum() : crossEntropy, crossEntropy]));
        return rows.Gradient;
    }

    /// <summary>Forward: the chunk loop with gradients; backward: those gradients times the incoming one (a scalar's).</summary>
    sealed class Function : torch.autograd.SingleTensorFunction<Function>
    {
        public override string Name => "ChunkedLinearCrossEntropy";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            var totals = Run((Tensor)vars[0], (Tensor)vars[1], (Plan)vars[2], gradients: true);
            ctx.save_data("totals", totals);
            return totals.Loss;
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) => BackwardTensors.Run(gradOutput, () =>
        {
            var totals = (Totals)ctx.get_data("totals");
            return [totals.HiddenGrad!.mul_(gradOutput), totals.WeightGrad!.mul_(gradOutput), null!];
        });
    }
}
