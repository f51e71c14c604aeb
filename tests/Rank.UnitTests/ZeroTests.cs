// ZeRO stages 1-3 against the one-process trainer: the same losses and parameters, within float rounding.
using Oec;
using Rank.Configuration;
using Rank.Parallel;
using Rank.Training;
using TorchSharp;
using Xunit.Abstractions;

namespace Rank.UnitTests;

public class ZeroTests(ITestOutputHelper log)
{
    const int Steps = 8;

    public static TheoryData<OecMethod> Methods => [OecMethod.None, OecMethod.MuLoss, OecMethod.MuCentering];

    [Theory]
    [MemberData(nameof(Methods))]
    public void Every_stage_and_layout_trains_as_one_process(OecMethod method)
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: Steps, method: method)
            .WithOec(o => o with { MuLossLambda = 1e-1 })                        // strong enough to matter in a few steps
            .WithTrain(t => t with { GradAccum = 2, WeightDecay = 0.1 });
        using var single = new Trainer(config);
        var reference = Enumerable.Range(0, Steps).Select(s => single.Step(s).CrossEntropy).ToArray();
        var expected = Tensors.Parameters(single.Model);

        foreach (int stage in new[] { 1, 2, 3 })
            foreach (var (dp, tp) in new[] { (2, 1), (4, 1), (2, 2) })
            {
                var (losses, trainers) = VocabParallelTests.RunLayout(config.WithTrain(t => t with { Zero = stage }), dp, tp, Steps);
                try
                {
                    Assert.All(trainers, t => Assert.Equal(stage, Assert.IsType<ZeroAdamW>(t.Optimizer).Stage));
                    // stage 3: of the 2 blocks, the second's forward and the first's recomputation found their weights on the way
                    Assert.All(trainers, t => Assert.Equal(stage == 3 ? 2 * Steps * 2 : 0, ((ZeroAdamW)t.Optimizer).Prefetched));
                    // stages 2-3: both blocks' reduce-scatters started inside the last micro-batch's backward (the root's after it)
                    Assert.All(trainers, t => Assert.Equal(stage >= 2 ? 2 : 0, t.GroupsStartedInBackward));
                    double lossError = Enumerable.Range(0, Steps).SelectMany(s => losses.Select(l => Math.Abs(l[s] - reference[s]))).Max();
                    Tensors.AssertWithinRounding(expected, VocabParallelTests.WholeParameters(trainers, tp), lossError, $"{method}, zero {stage}, dp {dp} x tp {tp}", log.WriteLine);
                }
                finally
                {
                    foreach (var t in trainers) t?.Dispose();
                }
            }
    }

    /// <summary>What a rank holds between steps, measured from its tensors, against the memory plan: the moments are the
    /// plan's optimizer bytes exactly, a stage 2-3 gradient is its shards (the plan's peak adds what one backward holds
    /// whole), stage 3's weights are the root and the blocks' shards (the plan's peak adds a gathered block and the next).</summary>
    [Fact]
    public void Each_stage_holds_what_the_memory_plan_says_between_steps()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 2);
        foreach (int stage in new[] { 0, 1, 2, 3 })
            foreach (int dp in new[] { 1, 2, 4 })
            {
                var layout = config.WithTrain(t => t with { Zero = stage }) with { Job = config.Job with { WorldSize = dp } };
                var plan = MemoryPlan.Of(layout);
                var (_, trainers) = VocabParallelTests.RunLayout(layout, dp, 1, steps: 2, gather: false);
                try
                {
                    var held = trainers[^1].Optimizer.Held;
                    bool sharded = stage > 0 && dp > 1; // one rank has no data group: ZeRO has nothing to split
                    double shards = plan.OptimizerBytes / 2, block = 4.0 * plan.Shape.BlockParameters;
                    log.WriteLine($"| {stage} | {dp} | {held.Weights:N0} | {held.Gradients:N0} | {held.Moments:N0} | {plan.WeightBytes:N0} | {plan.GradientBytes:N0} | {plan.OptimizerBytes:N0} |");
                    Assert.Equal(sharded ? plan.OptimizerBytes : 8 * plan.RankParameters, held.Moments);
                    Assert.Equal(sharded && stage >= 2 ? shards : 4 * plan.RankParameters, held.Gradients);
                    Assert.Equal(sharded && stage == 3 ? plan.WeightBytes - 2 * block : plan.WeightBytes, held.Weights);
                    if (sharded && stage == 3) Assert.All(Enumerable.Range(0, 2), k => Assert.False(((ZeroAdamW)trainers[^1].Optimizer).Gathered(k)));
                }
                finally
                {
                    foreach (var t in trainers) t?.Dispose();
                }
            }
    }

    [Fact]
    public void Stage_1_all_reduces_started_during_backward_give_the_same_bits()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 4).WithTrain(t => t with { Zero = 1, GradAccum = 2 });
        var (afterLosses, after) = VocabParallelTests.RunLayout(config.WithTrain(t => t with { OverlapGradReduce = false }), 2, 1, steps: 4);
        var (duringLosses, during) = VocabParallelTests.RunLayout(config.WithTrain(t => t with { OverlapGradReduce = true }), 2, 1, steps: 4);
        try
        {
            Assert.All(during, t => Assert.Equal(2, t.GroupsStartedInBackward)); // both blocks of tiny; the root after backward
            Assert.All(after, t => Assert.Equal(0, t.GroupsStartedInBackward));
            Assert.Equal(afterLosses, duringLosses);
            Assert.Equal(0, Tensors.MaxParameterDifference(after[0].Model, during[0].Model));
        }
        finally
        {
            foreach (var t in after.Concat(during)) t?.Dispose();
        }
    }

    /// <summary>Stages 2 and 3 on a data group whose other rank mirrors this one: a block's reduce-scatter is still in
    /// flight while the backward of the block before it runs (it is waited for only when a later one starts or backward
    /// ends), and the shard then holds the whole gradient's slice.</summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Stage_2_and_3_reduce_scatters_run_during_the_backward_of_the_blocks_before_them(int stage)
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 1) with { Model = new Model.ModelOptions { Preset = "tiny", NLayer = 4 } };
        var data = new MirroredPeer();
        using var model = new Model.Gpt(config.Model, 512, 16, seed: 1);
        using var zero = new ZeroAdamW(model, data, null, stage, 0, 0.9, 0.95, 1e-8);
        var idx = torch.randint(0, 512, [2, 16]);
        zero.BeforeBackward(lastMicroBatch: true);
        model.forward(idx).square().mean().backward();
        model.ThrowIfRecomputeFailed(0);
        zero.AfterBackward(0);

        log.WriteLine(string.Join(", ", data.Events));
        Assert.Equal(4, zero.GroupsStartedInBackward);
        Assert.Equal(["0", "1", "2", "3", "root"], data.Events.Where(e => e.StartsWith("start ", StringComparison.Ordinal)).Select(e => e[6..]).Order()); // each once
        // backward meets blocks 3, 2, 1, 0: block k's reduce-scatter is waited for only after block k - 1's has started
        for (int k = 3; k >= 1; k--)
            Assert.True(data.Events.IndexOf($"start {k}") < data.Events.IndexOf($"start {k - 1}") && data.Events.IndexOf($"start {k - 1}") < data.Events.IndexOf($"wait {k}"),
                        $"block {k}: {string.Join(", ", data.Events)}");
    }

    /// <summary>Stage 3 frees a released block's weights when it releases them, not when a dispose scope ends or the
    /// garbage collector runs: no wrapper of a view into the gathered buffer outlives the parameters' use of it. Measured
    /// by the bytes malloc has handed out (libtorch's CPU tensors), inside a scope as a training step's forward is.</summary>
    [Fact]
    public void Stage_3_returns_a_released_blocks_memory_at_once()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 1) with { Model = new Model.ModelOptions { Preset = "tiny", NLayer = 4, DModel = 256 } };
        using var model = new Model.Gpt(config.Model, 512, 16, seed: 1);
        long blocks = model.named_parameters().Where(n => n.name.StartsWith("h.")).Sum(n => n.parameter.numel()) * sizeof(float); // 4 x ~12 d^2 fp32
        using var zero = new ZeroAdamW(model, new MirroredPeer(), null, 3, 0, 0.9, 0.95, 1e-8);  // the blocks' weights sharded: their parameters empty
        using var scope = torch.NewDisposeScope();
        long before = PeakMemory.Allocated();
        zero.GatherBlocks();
        long gathered = PeakMemory.Allocated() - before;
        zero.ReleaseBlocks();
        long after = PeakMemory.Allocated() - before;
        log.WriteLine($"blocks {blocks:N0} B; gathered {gathered:N0} B, after release {after:N0} B");
        // malloc's count is process-wide: another thread's frees (the test host's, the GC's) can land between the
        // two readings, so the gathered bytes are bounded below by most of the blocks, not all of them
        Assert.InRange(gathered, blocks * 9 / 10, 2 * blocks);
        Assert.True(after < blocks / 8, $"after the release {after:N0} of the {gathered:N0} bytes gathered are still allocated");
    }

    /// <summary>A data group of two ranks whose other rank holds what this one holds: every collective's result is
    /// exact without a peer (an average is the value itself). Records the reduce-scatters of the blocks' gradients
    /// (identified by their size order) as "start k" and "wait k".</summary>
    sealed class MirroredPeer : Collectives.ICommunicator
    {
        public List<string> Events { get; } = [];
        public int Rank => 0;
        public int WorldSize => 2;
        public void AllReduce(torch.Tensor tensor, Collectives.ReduceOp op = Collectives.ReduceOp.Sum) { if (op == Collectives.ReduceOp.Sum) tensor.mul_(2); }
        public void Broadcast(torch.Tensor tensor, int root) { }
        public void AllGather(torch.Tensor input, torch.Tensor output)
        {
            using var flat = input.view(-1);
            using var both = torch.cat([flat, flat]);
            using var into = output.view(-1);
            into.copy_(both);
        }
        public void ReduceScatter(torch.Tensor input, torch.Tensor output, Collectives.ReduceOp op = Collectives.ReduceOp.Sum)
        {
            using var mine = input.view(-1).narrow(0, 0, output.numel());
            output.copy_(op == Collectives.ReduceOp.Sum ? mine * 2 : mine);
        }
        public Collectives.IPendingCollective ReduceScatterAsync(torch.Tensor input, torch.Tensor output, Collectives.ReduceOp op = Collectives.ReduceOp.Sum)
        {
            string name = Block(input);
            Events.Add($"start {name}");
            return new Pending(() => { ReduceScatter(input, output, op); Events.Add($"wait {name}"); });
        }
        // Backward reduce-scatters the blocks' gradients in the order 3, 2, 1, 0, then the root's after it: each buffer
        // named by the order it first came in.
        string Block(torch.Tensor input)
        {
            if (!names.TryGetValue(input.Handle, out var name))
                names[input.Handle] = name = names.Count < 4 ? $"{3 - names.Count}" : "root";
            return name;
        }

        readonly Dictionary<IntPtr, string> names = [];
        public void Barrier() { }
        public Collectives.ICommunicator Split(int color, int key) => throw new NotSupportedException();
        public void Dispose() { }

        sealed class Pending(Action complete) : Collectives.IPendingCollective
        {
            bool done;
            public void Wait() { if (!done) { done = true; complete(); } }
        }
    }
}
