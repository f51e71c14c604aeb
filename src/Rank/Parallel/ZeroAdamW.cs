// ZeRO over the data group: AdamW's state (stage 1), the gradients (2) and the blocks' parameters (3) split into dp shards.
using Collectives;
using Kernels.Ops;
using Rank.Model;
using Rank.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Parallel;

/// <summary>
/// AdamW whose state is split over the dp ranks of the data group (train.zero; Rajbhandari et al. 2020, PyTorch's
/// ZeroRedundancyOptimizer and FSDP). The parameters fall into units, each one flat fp32 buffer: the root (the
/// embeddings, ln_f and the head: every step uses them first and last, and mu needs all of E) and one per block.
/// A unit's buffer is padded to a multiple of dp, and rank r of the group owns elements [r s, (r + 1) s), s = padded / dp:
/// <list type="bullet">
/// <item>stage 1: the AdamW moments of those elements; gradients are all-reduced whole (with
/// train.overlap_grad_reduce a block's as soon as the last micro-batch's backward leaves it);</item>
/// <item>stage 2: also their averaged gradient, reduce-scattered during each micro-batch's backward, a block's
/// started as soon as its backward ends (at its <see cref="Boundary"/>) and overlapped with the backward of the blocks
/// before it (at most <see cref="MaxReduceScattersInFlight"/> in flight), the root's after it: the whole gradient of a
/// block is freed once its reduce-scatter is done;</item>
/// <item>stage 3: also, for blocks, their fp32 master weights: a block's parameters are all-gathered for its forward
/// and again for its recomputation in backward (<see cref="Recomputed"/>: every block recomputes), then freed, and its
/// gradient's reduce-scatter starts as soon as its backward ends, overlapped as in stage 2. The gather of the block that runs next starts when a
/// block starts (prefetch: two blocks are whole at a time). The root stays whole on every rank.</item>
/// </list>
/// Each rank updates its elements with <see cref="AdamWOp"/>, the unsharded optimizer's arithmetic element
/// for element, then the parameters held whole are all-gathered. Within a unit the matrices come first (weight decay),
/// then the vectors; in the root the embeddings lead, so that with a sharded vocabulary (job.vocab_parallel) their rows,
/// whose squared gradient norms add over the vocabulary group, are one range.
/// </summary>
public sealed class ZeroAdamW : IGradientReduction, IOptimizer, IBlockParameters
{
    /// <summary>A parameter of a unit: elements [Offset, Offset + Elements) of its buffer, and its shape (a stage 3
    /// block's parameters are empty while released).</summary>
    sealed record Member(string Name, Parameter P, long Offset, long[] Shape)
    {
        public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
        /// <summary>The member's view of <paramref name="buffer"/>: a wrapper of its own, for the caller to dispose once the
        /// parameter (set_) or its .grad holds the view, so that no stray wrapper keeps a freed buffer's memory.</summary>
        public Tensor In(Tensor buffer)
        {
            using var part = buffer.narrow(0, Offset, Elements);
            return part.view(Shape);
        }

        public void SetWeights(Tensor buffer)
        {
            using var view = In(buffer);
            P.set_(view);
        }

        public void SetGradient(Tensor buffer)
        {
            using var view = In(buffer);
            P.grad = view;
        }
    }

    sealed class Unit
    {
        public required IReadOnlyList<Member> Members;
        public required long Padded, Size, Low, DecayEnd; // elements: whole buffer (padded), shard, shard's first, end of the matrices
        public Tensor? Full;                              // [Padded] the parameters (stage 3 blocks: only while gathered)
        public IPendingCollective? Arriving;              // stage 3: the all-gather into Full started ahead of use
        public (IPendingCollective Done, Tensor Part)? Scattering; // stages 2-3: FullGrad's reduce-scatter into Part [Size], in flight
        public Tensor? Master;                            // [Size] stage 3 blocks: this rank's fp32 master weights
        public Tensor? FullGrad;                          // [Padded] the gradient: stage 1 always, stages 2-3 during a backward
        public Tensor? ShardGrad;                         // [Size] stages 2-3: this rank's averaged gradient
        public required Tensor ExpAvg, ExpAvgSq;          // [Size] AdamW's moments
        public Tensor Weights => Master ?? Full!.narrow(0, Low, Size);
        public Tensor Gradient => ShardGrad ?? FullGrad!.narrow(0, Low, Size);
    }

    readonly ICommunicator data;
    readonly ICommunicator? vocab;
    readonly IReadOnlySet<string> vocabRows;
    readonly Gpt model;
    readonly Unit root;
    readonly Unit[] blocks;
    readonly double weightDecay, beta1, beta2, eps;
    Exception? boundaryFailure; // a collective that failed to run or start inside backward, thrown after it
    readonly List<IPendingCollective> pending = [];  // stage 1: all-reduces started during backward
    readonly List<Unit> scattering = [];             // stages 2-3: units whose reduce-scatter is in flight, oldest first
    bool lastMicroBatch;

    public int Stage { get; }
    /// <summary>Blocks whose gradient reduction the last backward started during backward: stage 1, all-reduces of the
    /// step's last micro-batch (n_layer with overlap, else 0); stages 2-3, reduce-scatters (n_layer).</summary>
    public int GroupsStartedInBackward { get; private set; }

    /// <summary>Stages 2-3: block reduce-scatters in flight at once during backward; starting one more first finishes
    /// the oldest (adds its result to the shard, frees its whole gradient). Two: a block's reduce-scatter runs during
    /// the backward of the block before it, with one more of slack.</summary>
    public const int MaxReduceScattersInFlight = 2;
    public long Steps { get; private set; }

    /// <param name="vocab">The vocabulary group when the embeddings are split by rows over it (their names:
    /// <see cref="Gpt.ShardedNames"/>); null otherwise.</param>
    /// <param name="overlap">Stage 1: start a block's all-reduce during the last backward (train.overlap_grad_reduce).</param>
    public ZeroAdamW(Gpt model, ICommunicator data, ICommunicator? vocab, int stage, double weightDecay, double beta1, double beta2, double eps, bool overlap = false)
    {
        if (stage is < 1 or > 3) throw new ArgumentException($"train.zero = {stage}: ZeroAdamW shards stages 1, 2 and 3");
        (this.model, this.data, this.vocab, Stage) = (model, data, vocab, stage);
        (this.weightDecay, this.beta1, this.beta2, this.eps) = (weightDecay, beta1, beta2, eps);
        vocabRows = vocab is null ? new HashSet<string>() : model.ShardedNames;
        var named = model.named_parameters().ToList();
        using var noGrad = no_grad();
        root = Build(named.Where(n => !n.name.StartsWith("h.", StringComparison.Ordinal)).OrderByDescending(n => vocabRows.Contains(n.name)), shardWeights: false);
        blocks = Enumerable.Range(0, model.Layers)
            .Select(k => Build(named.Where(n => n.name.StartsWith($"h.{k}.", StringComparison.Ordinal)), shardWeights: stage == 3)).ToArray();
        if (stage == 3) model.BlockParameters = this;
        if (stage == 2 || (stage == 1 && overlap)) model.BoundaryReached = BlockFinished;
    }

    // During backward at boundary k (the input of block k; n_layer: of ln_f): block k's gradient of this micro-batch
    // is final. Stage 2 reduce-scatters it; stage 1 starts its all-reduce after the step's last micro-batch.
    void BlockFinished(int boundary)
    {
        if (boundary >= blocks.Length || boundaryFailure is not null) return;
        try
        {
            if (Stage == 2) StartReduceScatter(blocks[boundary], inBackward: true);
            else if (lastMicroBatch) pending.Add(data.AllReduceAsync(blocks[boundary].FullGrad!, ReduceOp.Average));
        }
        catch (Exception e) { boundaryFailure = e; } // never through libtorch's backward
    }

    public HeldBytes Held => new(Units.Sum(u => HeldBytes.Of(u.Full) + HeldBytes.Of(u.Master)), Units.Sum(u => HeldBytes.Of(u.FullGrad) + HeldBytes.Of(u.ShardGrad)),
                                 Units.Sum(u => HeldBytes.Of(u.ExpAvg) + HeldBytes.Of(u.ExpAvgSq)));

    /// <summary>Stage 3: block forwards (first or recomputed) whose weights were already on their way when they began.</summary>
    public long Prefetched { get; private set; }

    /// <summary>Whether the parameters of block <paramref name="block"/> are here whole now (stage 3: only while gathered).</summary>
    public bool Gathered(int block) => blocks[block].Full is not null;

    // One unit: its parameters become views of one buffer [padded], every rank takes replica 0's values, and this
    // rank's shard of the state is allocated. Matrices first (weight decay), each group in the given order.
    Unit Build(IEnumerable<(string name, Parameter parameter)> parameters, bool shardWeights)
    {
        var ordered = parameters.Where(n => n.parameter.dim() >= 2).Concat(parameters.Where(n => n.parameter.dim() < 2)).ToList();
        long offset = 0;
        var members = ordered.Select(n => { var at = new Member(n.name, n.parameter, offset, n.parameter.shape); offset += n.parameter.numel(); return at; }).ToList();
        long decayEnd = members.Where(m => m.Shape.Length >= 2).Sum(m => m.Elements);
        int dp = data.WorldSize;
        long padded = (offset + dp - 1) / dp * dp, size = padded / dp;
        var like = ordered[0].parameter;
        var unit = new Unit
        {
            Members = members, Padded = padded, Size = size, Low = data.Rank * size, DecayEnd = decayEnd,
            Full = zeros(padded, like.dtype, like.device),
            ExpAvg = zeros(size, like.dtype, like.device), ExpAvgSq = zeros(size, like.dtype, like.device),
        };
        foreach (var m in members)
        {
            using var slice = m.In(unit.Full);
            slice.copy_(m.P);
            m.P.set_(slice);
        }
        data.Broadcast(unit.Full, root: 0);                                    // all replicas start from replica 0's values
        if (Stage == 1)
        {
            unit.FullGrad = zeros(padded, like.dtype, like.device);
            foreach (var m in members) m.SetGradient(unit.FullGrad);
        }
        else unit.ShardGrad = zeros(size, like.dtype, like.device);
        if (shardWeights)
        {
            using (var mine = unit.Full.narrow(0, unit.Low, size)) unit.Master = mine.clone();
            Free(unit);
        }
        return unit;
    }

    /// <summary>Stages 2-3: before the first backward of a micro-batch the gradients of the units held whole get a
    /// zeroed buffer to accumulate into (stage 3's blocks get theirs when gathered for backward).</summary>
    public void BeforeBackward(bool lastMicroBatch)
    {
        this.lastMicroBatch = lastMicroBatch;
        if (Stage == 1) return;
        GroupsStartedInBackward = 0;
        using var noGrad = no_grad();
        foreach (var unit in WholeUnits) WholeGradient(unit);
    }

    /// <summary>After each backward: stage 2-3 reduce-scatters what is still whole (stage 3: the root) into the
    /// shards and frees it. (Stage 3's collectives inside backward fail through <see cref="Recomputed"/>.)</summary>
    public void AfterBackward(long step)
    {
        if (boundaryFailure is { } failure)
        {
            boundaryFailure = null;
            throw new CollectiveException($"step {step}: a gradient reduce-scatter failed during backward: {failure.Message}", failure);
        }
        if (Stage == 1) return;
        foreach (var unit in WholeUnits) StartReduceScatter(unit, inBackward: false);
        while (scattering.Count > 0) FinishReduceScatter(scattering[0]);
    }

    /// <summary>Stage 1: the whole gradients averaged over the group (after the last micro-batch): the all-reduces
    /// not started in backward are started, then all are waited for. Stages 2-3: done by then.</summary>
    public void Average()
    {
        if (Stage != 1) return;
        int started = GroupsStartedInBackward = pending.Count;           // blocks L-1 .. L-started, in backward's order
        foreach (var unit in blocks.Take(blocks.Length - started).Reverse().Prepend(root))
            pending.Add(data.AllReduceAsync(unit.FullGrad!, ReduceOp.Average));
        try { pending.ForEach(p => p.Wait()); }
        finally { pending.Clear(); }
    }

    /// <summary>torch's clip_grad_norm_ over the whole gradient from the shards: squared norms summed over the data
    /// group (and, for the embeddings' rows, over the vocabulary group), every shard scaled by
    /// min(1, maxNorm / (norm + 1e-6)) when maxNorm &gt; 0. Returns the norm.</summary>
    public double ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var body = new List<Tensor>();
        var rows = new List<Tensor>();
        foreach (var unit in Units)
            foreach (var (name, _, _, from, length) in Owned(unit))
                (vocabRows.Contains(name) ? rows : body).Add(unit.Gradient.narrow(0, from, length).to_type(ScalarType.Float64).square().sum());
        var device = root.ExpAvg.device;
        var squares = stack([Sum(body, device), Sum(rows, device)]);          // [body, embedding rows] fp64
        data.AllReduce(squares, ReduceOp.Sum);
        if (vocab is not null)
        {
            var rowSquares = squares[1].reshape(1).contiguous();
            vocab.AllReduce(rowSquares, ReduceOp.Sum);
            squares[1].copy_(rowSquares[0]);
        }
        double norm = Math.Sqrt(squares.sum().item<double>());
        double coefficient = maxNorm / (norm + 1e-6);
        if (maxNorm > 0 && coefficient < 1)
            foreach (var unit in Units) unit.Gradient.mul_(coefficient);
        return norm;
    }

    static Tensor Sum(List<Tensor> parts, Device device) => parts.Count == 0 ? zeros(1, ScalarType.Float64, device)[0] : stack(parts).sum();

    /// <summary>One AdamW step of this rank's elements, then the whole units all-gathered (stage 3's blocks stay sharded).</summary>
    public void Step(double lr)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Steps++;
        foreach (var unit in Units)
        {
            long decay = Math.Clamp(unit.DecayEnd - unit.Low, 0, unit.Size);   // this shard's matrices: [0, decay)
            foreach (var (from, length, wd) in new[] { (0L, decay, weightDecay), (decay, unit.Size - decay, 0.0) })
                if (length > 0)
                    AdamWOp.Apply(model.Kernels, unit.Weights.narrow(0, from, length), unit.Gradient.narrow(0, from, length),
                                  unit.ExpAvg.narrow(0, from, length), unit.ExpAvgSq.narrow(0, from, length), Steps, lr, wd, beta1, beta2, eps);
        }
        foreach (var unit in WholeUnits) data.AllGather(unit.Weights.clone(), unit.Full!);
    }

    /// <summary>Every gradient this rank keeps to zero, in place.</summary>
    public void ZeroGrad()
    {
        foreach (var unit in Units) (unit.ShardGrad ?? unit.FullGrad!).zero_();
    }

    // Block k's parameters all-gathered into a buffer of their own, and the parameters made views of it; for backward
    // also a zeroed gradient buffer (stage 3).
    void IBlockParameters.Gather(int block, bool forBackward)
    {
        var unit = blocks[block];
        using var noGrad = no_grad();
        if (unit.Arriving is not null) Prefetched++;
        Arrive(unit);
        int next = forBackward ? block - 1 : block + 1;                  // the block whose forward runs next
        if (next >= 0 && next < blocks.Length && blocks[next].Full is null) Prefetch(blocks[next]);
        if (forBackward) WholeGradient(unit);
    }

    // The block's weights all-gathered into a buffer of their own, started now and waited for by Arrive: the next
    // block's gather runs while this one computes (FSDP's prefetch), so two blocks are whole at a time.
    void Prefetch(Unit unit)
    {
        unit.Full = empty(unit.Padded, unit.Master!.dtype, unit.Master.device);
        unit.Arriving = data.AllGatherAsync(unit.Master, unit.Full);
    }

    // The block's weights whole here (its prefetch waited for, or gathered now), the parameters views of them.
    void Arrive(Unit unit)
    {
        if (unit.Full is null) Prefetch(unit);
        if (unit.Arriving is not { } arriving) return;
        unit.Arriving = null;
        arriving.Wait();
        foreach (var m in unit.Members) m.SetWeights(unit.Full!);
    }

    void IBlockParameters.Release(int block)
    {
        if (Stage == 3) Free(blocks[block]);
    }

    // After block k's backward: its gradient's reduce-scatter into this rank's shard started (stage 3).
    void IBlockParameters.Backward(int block) => StartReduceScatter(blocks[block], inBackward: true);

    /// <summary>Stage 3: every block gathered (collective over the data group), to save or load the whole model.</summary>
    public void GatherBlocks()
    {
        if (Stage != 3) return;
        using var noGrad = no_grad();
        foreach (var unit in blocks) Arrive(unit);
    }

    /// <summary>Stage 3: every block freed again; <paramref name="keep"/>: the gathered values (a checkpoint just loaded
    /// into them) become this rank's master weights first.</summary>
    public void ReleaseBlocks(bool keep = false)
    {
        if (Stage != 3) return;
        using var noGrad = no_grad();
        foreach (var unit in blocks)
        {
            if (keep)
                using (var mine = unit.Full!.narrow(0, unit.Low, unit.Size)) unit.Master!.copy_(mine);
            Free(unit);
        }
    }

    /// <summary>This rank's moments as chunk files' entries: each parameter's elements within this rank's shards.</summary>
    public IEnumerable<MomentChunk> Chunks() =>
        Units.SelectMany(unit => Owned(unit).Select(o =>
            new MomentChunk(o.Name, o.Total, o.Start, unit.ExpAvg.narrow(0, o.From, o.Length), unit.ExpAvgSq.narrow(0, o.From, o.Length))));

    public void Save(string path) => OptimizerCheckpoint.Write(path, Steps, Chunks());

    /// <summary>This rank's moments from a checkpoint's chunk files, whatever world size and stage wrote them.</summary>
    public void Load(IReadOnlyList<string> files) => Steps = OptimizerCheckpoint.Read(files, Chunks().ToList());

    IEnumerable<Unit> Units => blocks.Prepend(root);
    IEnumerable<Unit> WholeUnits => Stage == 3 ? [root] : Units;

    // The parts of the unit's parameters in this rank's shard: (name, the parameter's elements, first element within
    // the parameter, first element within the shard, length).
    static IEnumerable<(string Name, long Total, long Start, long From, long Length)> Owned(Unit unit)
    {
        foreach (var m in unit.Members)
        {
            long from = Math.Max(m.Offset, unit.Low), to = Math.Min(m.Offset + m.Elements, unit.Low + unit.Size);
            if (from < to) yield return (m.Name, m.Elements, from - m.Offset, from - unit.Low, to - from);
        }
    }

    void WholeGradient(Unit unit)
    {
        if (unit.Scattering is not null) FinishReduceScatter(unit); // its buffer is still being read
        unit.FullGrad ??= zeros(unit.Padded, unit.ShardGrad!.dtype, unit.ShardGrad.device);
        foreach (var m in unit.Members) m.SetGradient(unit.FullGrad);
    }

    // The gradient of this micro-batch on its way to the shards: its reduce-scatter (averaged over the group) started,
    // to run while backward goes on; beyond MaxReduceScattersInFlight the oldest is finished first.
    void StartReduceScatter(Unit unit, bool inBackward)
    {
        if (unit.FullGrad is null || unit.Scattering is not null) return; // nothing to send, or on its way
        using var noGrad = no_grad();
        foreach (var m in unit.Members) m.P.grad = null;                  // nothing accumulates into it any more
        var part = empty(unit.Size, unit.FullGrad.dtype, unit.FullGrad.device).DetachFromDisposeScope();
        unit.Scattering = (data.ReduceScatterAsync(unit.FullGrad, part, ReduceOp.Average), part);
        scattering.Add(unit);
        if (inBackward) GroupsStartedInBackward++;
        while (scattering.Count > MaxReduceScattersInFlight) FinishReduceScatter(scattering[0]);
    }

    // Its averaged gradient added to this rank's shard, and the whole one freed.
    void FinishReduceScatter(Unit unit)
    {
        scattering.Remove(unit);
        if (unit.Scattering is not var (done, part)) return;
        unit.Scattering = null;
        try
        {
            done.Wait();
            using var noGrad = no_grad();
            unit.ShardGrad!.add_(part);
        }
        finally
        {
            part.Dispose();
            unit.FullGrad?.Dispose();
            unit.FullGrad = null;
        }
    }

    // Stage 3: the block's parameters made empty and its whole buffer and compute-dtype copies freed.
    void Free(Unit unit)
    {
        using var noGrad = no_grad();
        if (unit.Arriving is { } arriving) // a gather still in flight writes into Full: let it finish first
        {
            unit.Arriving = null;
            arriving.Wait();
        }
        foreach (var m in unit.Members)
        {
            model.Weights.Forget(m.P);
            using var none = empty(0, m.P.dtype, m.P.device);
            m.P.set_(none);
        }
        unit.Full?.Dispose();
        unit.Full = null;
    }

    public void Dispose()
    {
        foreach (var unit in Units)
            foreach (var t in new[] { unit.Full, unit.Master, unit.FullGrad, unit.ShardGrad, unit.ExpAvg, unit.ExpAvgSq, unit.Scattering?.Part }) t?.Dispose();
    }
}
