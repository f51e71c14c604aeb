// The vocabulary-sharded layouts against the one-process trainer: same losses, same parameters after 10 steps.
using Collectives;
using Coordinator;
using Oec;
using Rank.Configuration;
using Rank.Parallel;
using Rank.Training;
using Xunit.Abstractions;

namespace Rank.UnitTests;

public class VocabParallelTests(ITestOutputHelper log)
{
    const int Steps = 10;

    /// <summary>Runs dp x tp ranks as threads for Steps steps; returns every rank's losses and its trainer (to dispose).</summary>
    internal static (double[][] Losses, Trainer[] Trainers) RunLayout(RunConfig config, int dp, int tp, int steps = Steps, bool gather = true)
    {
        int world = dp * tp;
        var layout = config with { Job = config.Job with { WorldSize = world, VocabParallel = tp } };
        var rendezvous = new InProcessRendezvous();
        var ring = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(30));
        var losses = new double[world][];
        var trainers = new Trainer[world];
        var errors = new Exception?[world];
        var threads = Enumerable.Range(0, world).Select(rank => new Thread(() =>
        {
            try
            {
                var comm = TcpRingCommunicator.Create(rendezvous, $"layout-{dp}x{tp}", rank, world, ring);
                trainers[rank] = new Trainer(layout, comm);
                losses[rank] = Enumerable.Range(0, steps).Select(s => trainers[rank].Step(s).CrossEntropy).ToArray();
                if (gather) (trainers[rank].Optimizer as ZeroAdamW)?.GatherBlocks(); // ZeRO-3: the blocks whole, for comparison (collective)
            }
            catch (Exception e)
            {
                errors[rank] = e;
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromMinutes(2)), $"a rank of {dp} x {tp} did not finish within 2 minutes"));
        Assert.All(errors, e => Assert.Null(e));
        return (losses, trainers);
    }

    /// <summary>Each parameter of the whole model, from replica 0's shards put side by side.</summary>
    internal static Dictionary<string, double[]> WholeParameters(Trainer[] trainers, int tp)
    {
        var shards = trainers.Take(tp).Select(t => Tensors.Parameters(t.Model)).ToArray();
        return shards[0].Keys.ToDictionary(name => name, name =>
            trainers[0].Model.ShardedNames.Contains(name)
                ? shards.SelectMany(s => s[name]).ToArray()
                : shards[0][name]);
    }

    public static TheoryData<OecMethod, bool> MethodsAndTying()
    {
        var data = new TheoryData<OecMethod, bool>();
        foreach (var tying in new[] { false, true })
            foreach (var method in Enum.GetValues<OecMethod>()) data.Add(method, tying);
        return data;
    }

    [Theory]
    [MemberData(nameof(MethodsAndTying))]
    public void Sharded_layouts_take_the_losses_and_end_with_the_parameters_of_one_process(OecMethod method, bool tying)
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: Steps, method: method)
            .WithOec(o => o with { MuLossLambda = 1e-1, ZLossLambda = 1e-2, SoftCap = 3 }) // strong enough to matter in 10 steps
            with { Model = new Model.ModelOptions { WeightTying = tying } };
        config = config.Validated();
        using var single = new Trainer(config);
        var reference = Enumerable.Range(0, Steps).Select(s => single.Step(s).CrossEntropy).ToArray();
        var expected = Tensors.Parameters(single.Model);

        foreach (var (dp, tp) in new[] { (1, 2), (1, 4), (2, 2) })
        {
            var (losses, trainers) = RunLayout(config, dp, tp);
            try
            {
                double lossError = Enumerable.Range(0, Steps).SelectMany(s => losses.Select(l => Math.Abs(l[s] - reference[s]))).Max();
                Tensors.AssertWithinRounding(expected, WholeParameters(trainers, tp), lossError, $"{method}, tying {tying}, dp {dp} x tp {tp}", log.WriteLine);
            }
            finally
            {
                foreach (var t in trainers) t?.Dispose();
            }
        }
    }

    [Fact]
    public void Each_shard_holds_V_over_tp_rows_of_each_embedding_and_their_optimizer_state()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 1);
        var (_, trainers) = RunLayout(config, 1, 4);
        try
        {
            foreach (var t in trainers)
            {
                Assert.Equal([128L, 64L], t.Model.OutputEmbedding.shape); // 512 rows over 4 shards, d = 64
                Assert.Equal(["lm_head", "wte.weight"], t.Model.ShardedNames.Order());
            }
        }
        finally
        {
            foreach (var t in trainers) t?.Dispose();
        }
    }
}
