// ZeRO jobs as processes against one process: stage 3 over a sharded vocabulary, stage 1 at dp 2 and 2 at dp 4, and a job resumed at another
// world size and stage, end within float rounding of the uninterrupted one-rank run.
using Job;
using Rank.Configuration;
using OecRun.Launching;
using Rank.Model;
using Rank.Training;
using Rank.UnitTests;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public sealed class OneRankJobFixture : IDisposable
{
    readonly TempDirectory temp = new();
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<Task<RunConfig>>> jobs = new();

    /// <summary>ZeroJobTests.Settings on one rank with oec.method = <paramref name="method"/>, run once for the tests
    /// that compare with it.</summary>
    public Task<RunConfig> Job(string method = "mu_centering") => jobs.GetOrAdd(method, m => new(async () =>
    {
        var one = RunConfig.Load(null, [.. ZeroJobTests.Settings, "oec.method=" + m, "job.world_size=1", "run.out_dir=" + temp.File("one-" + m)]);
        Assert.Equal(0, await Launch.Local(one, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));
        return one;
    })).Value;

    public void Dispose() => temp.Dispose();
}

public class ZeroJobTests(ITestOutputHelper log, OneRankJobFixture fixture) : IClassFixture<OneRankJobFixture>
{
    internal static readonly string[] Settings =
    [
        "train.steps=50", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=25",
        "train.eval_batches=2", "train.log_every=5", "train.threads=1", "data.synthetic_tokens=30000", "train.weight_decay=0.1",
        "job.checkpoint_every=10", "job.keep_checkpoints=10", "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10",
    ];

    [Fact]
    public async Task Stage_3_over_two_replicas_of_two_vocabulary_shards_trains_as_one_rank()
    {
        using var temp = new TempDirectory();
        var one = await fixture.Job();
        var sharded = RunConfig.Load(null, [.. Settings, "oec.method=mu_centering", "job.world_size=4", "job.vocab_parallel=2", "train.zero=3", "run.out_dir=" + temp.File("zero3")]);
        Assert.Equal(0, await Launch.Local(sharded, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));

        AssertSameWithinRounding(one, sharded);
        var last = Path.Combine(sharded.Run.OutDir!, "checkpoints", "step_00000050");
        Assert.Equal(["optimizer.shard0of2.zero0of2.safetensors", "optimizer.shard0of2.zero1of2.safetensors",
                      "optimizer.shard1of2.zero0of2.safetensors", "optimizer.shard1of2.zero1of2.safetensors"],
                     Directory.GetFiles(last, "optimizer*").Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task A_stage_3_job_on_four_ranks_resumes_as_a_stage_1_job_on_two()
    {
        using var temp = new TempDirectory();
        var one = await fixture.Job();
        string outDir = temp.File("resharded");
        var first = RunConfig.Load(null, [.. Settings, "oec.method=mu_centering", "job.world_size=4", "train.zero=3", "run.out_dir=" + outDir]);
        await JobProcessTests.StopAfter(first, 20);
        var second = RunConfig.Load(null, [.. Settings, "oec.method=mu_centering", "job.world_size=2", "train.zero=1", "job.resume=true", "run.out_dir=" + outDir]);
        Assert.Equal(0, await Launch.Local(second, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));

        AssertSameWithinRounding(one, second);
        var written = Directory.GetDirectories(Path.Combine(outDir, "checkpoints"), "step_*").Order()
            .Select(d => string.Join(" ", Directory.GetFiles(d, "optimizer*").Select(Path.GetFileName).Order())).ToList();
        Assert.Contains("optimizer.zero0of4.safetensors optimizer.zero1of4.safetensors optimizer.zero2of4.safetensors optimizer.zero3of4.safetensors", written);
        Assert.Equal("optimizer.zero0of2.safetensors optimizer.zero1of2.safetensors", written[^1]);
    }

    /// <summary>The stages and methods the jobs above leave out (in-process, ZeroTests runs every stage, layout and
    /// method for a few steps).</summary>
    [Theory]
    [InlineData(1, 2, "none")]
    [InlineData(2, 4, "mu_loss")]
    public async Task A_job_at_a_stage_trains_as_one_rank(int stage, int dp, string method)
    {
        using var temp = new TempDirectory();
        var one = await fixture.Job(method);
        var sharded = RunConfig.Load(null, [.. Settings, "oec.method=" + method, $"job.world_size={dp}", $"train.zero={stage}", "run.out_dir=" + temp.File("zero")]);
        Assert.Equal(0, await Launch.Local(sharded, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));

        AssertSameWithinRounding(one, sharded);
    }

    // The final models and the training loss at every logged step within float rounding (Tensors.AssertWithinRounding).
    void AssertSameWithinRounding(RunConfig expected, RunConfig actual)
    {
        using var a = new Gpt(expected.Model, expected.Data.ResolvedVocabSize, expected.Train.SequenceLength);
        using var b = new Gpt(actual.Model, actual.Data.ResolvedVocabSize, actual.Train.SequenceLength);
        Checkpoint.Load(a, Path.Combine(expected.Run.OutDir!, "model.safetensors"));
        Checkpoint.Load(b, Path.Combine(actual.Run.OutDir!, "model.safetensors"));
        var lossesWant = MetricsLog.Read(Path.Combine(expected.Run.OutDir!, "metrics.jsonl")).ToDictionary(m => m.Step, m => m.TrainLoss);
        var lossesGot = MetricsLog.Read(Path.Combine(actual.Run.OutDir!, "metrics.jsonl")).ToDictionary(m => m.Step, m => m.TrainLoss);
        Assert.Equal(lossesWant.Keys.Order(), lossesGot.Keys.Order());
        double lossError = lossesWant.Max(kv => Math.Abs(kv.Value - lossesGot[kv.Key]));
        Tensors.AssertWithinRounding(Tensors.Parameters(a), Tensors.Parameters(b), lossError, Path.GetFileName(actual.Run.OutDir!), log.WriteLine);
    }
}
