// Rank processes rendezvousing through the coordinator: a layout with both data and vocabulary parallelism, whose split
// groups exchange their endpoints among themselves, trains as one process does; a peer that never publishes fails the
// generation (exit 1), not as a lost coordinator.
using Job;
using Coordinator;
using Rank.Configuration;
using Rank.Distributed;
using OecRun.Launching;
using Rank.Model;
using Rank.Training;
using Rank.UnitTests;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public sealed class LayoutProcessTests(ITestOutputHelper log)
{
    const int Steps = 12;

    [Fact]
    public async Task Four_rank_processes_in_two_vocabulary_groups_train_as_one_process_does()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [$"train.steps={Steps}", "train.warmup_steps=2", "train.batch_size=8", "train.sequence_length=32",
            "train.eval_every=0", "train.log_every=1", "train.threads=1", "data.synthetic_tokens=30000", "oec.method=mu_loss",
            "job.world_size=4", "job.vocab_parallel=2", "job.checkpoint_every=0", "job.heartbeat_interval_s=0.2",
            "job.rendezvous_timeout_s=20", "job.max_restarts=0", "run.out_dir=" + temp.File("job")]);
        var console = new StringWriter();

        int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None)
            .WaitAsync(TimeSpan.FromMinutes(2));
        log.WriteLine(console.ToString());

        Assert.Equal(ExitCodes.Success, exit);
        Assert.Contains($"succeeded: finished {Steps} steps", File.ReadAllText(Path.Combine(config.Run.OutDir!, "coordinator.log")));
        using var reference = new Trainer(config with { Job = new JobOptions(), Run = new RunOptions { OutDir = temp.File("one") } });
        var losses = Enumerable.Range(0, Steps).Select(s => reference.Step(s).CrossEntropy).ToArray();
        var logged = MetricsLog.Read(Path.Combine(config.Run.OutDir!, "metrics.jsonl"));
        Assert.Equal(Enumerable.Range(1, Steps), logged.Select(m => m.Step));
        double lossError = logged.Max(m => Math.Abs(m.TrainLoss - losses[m.Step - 1]));
        log.WriteLine($"against one process: losses differ by up to {lossError:G3}");
        Assert.True(lossError < 1e-5, $"the losses differ from one process by up to {lossError}"); // as in VocabParallelTests
        AssertSavedModelMatches(reference.Model, config, log);
    }

    [Fact]
    public async Task A_rank_whose_peer_never_publishes_its_endpoint_fails_the_generation_with_exit_1_not_as_a_lost_coordinator()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["train.steps=20", "train.warmup_steps=2", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=0",
            "train.threads=1", "data.synthetic_tokens=30000", "job.world_size=2", "job.checkpoint_every=0", "job.rendezvous_timeout_s=8",
            "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=60", "job.max_restarts=0", "run.out_dir=" + temp.Path]);
        await using var coordinator = await BareCoordinator.StartAsync(config, "silent");
        using var rank = coordinator.StartRank(new() { ["RANK"] = "0" });
        var output = rank.StandardOutput.ReadToEndAsync();
        // job.rendezvous_timeout_s bounds registration too (from the job's start): long enough for a loaded machine to start a rank.
        using var silent = new CoordinatorClient(coordinator.Host.Address, coordinator.JobId, coordinator.Token); // rank 1: registers, never publishes
        await Task.Run(() => silent.Register(1, 2, "127.0.0.1", TimeSpan.FromMinutes(1), unreachableFor: TimeSpan.Zero)).WaitAsync(TimeSpan.FromMinutes(1));

        await rank.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        log.WriteLine($"exit code {rank.ExitCode}:\n{await output}");

        Assert.Equal(ExitCodes.Failed, rank.ExitCode);
        Assert.Contains("ranks [1] never published", await output);
        Assert.DoesNotContain("lost the coordinator", await output);
        var outcome = await coordinator.Job.Outcome.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.Contains("rank 0 failed: exchange 'silent/g1/endpoints'", outcome.Reason);
    }

    /// <summary>Asserts that the model a finished job saved is the one-process reference's, to the tolerances of
    /// VocabParallelTests: every parameter within 1e-3, all but 0.1% of them within 1e-5.</summary>
    internal static void AssertSavedModelMatches(Gpt reference, RunConfig job, ITestOutputHelper log)
    {
        using var model = new Gpt(job.Model, job.Data.ResolvedVocabSize, job.Train.SequenceLength);
        Checkpoint.Load(model, Path.Combine(job.Run.OutDir!, "model.safetensors"));
        var differences = Tensors.Parameters(reference)
            .SelectMany(kv => kv.Value.Zip(Tensors.Parameters(model)[kv.Key], (a, b) => Math.Abs(a - b))).Order().ToArray();
        double p999 = differences[(int)(0.999 * (differences.Length - 1))];
        log.WriteLine($"against one process: largest parameter difference {differences[^1]:G3}, 99.9th percentile {p999:G3}");
        Assert.True(differences[^1] < 1e-3, $"largest parameter difference {differences[^1]}");
        Assert.True(p999 < 1e-5, $"99.9th percentile of parameter differences {p999}");
    }
}
