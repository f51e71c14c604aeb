using Job;
using Oec;
// Data-parallel training against its references: one rank, an uninterrupted run, a run without a fault.
using System.Diagnostics;
using Collectives;
using Coordinator;
using Rank.Configuration;
using OecRun.Launching;
using Rank.Distributed;
using Rank.Model;
using Rank.Training;
using Xunit.Abstractions;

namespace Rank.UnitTests;

public sealed class CleanJobFixture : IDisposable
{
    readonly TempDirectory temp = new();
    public Lazy<Task<RunConfig>> Job { get; }

    /// <summary>The uninterrupted 2-rank job of DistributedTests.JobSettings, run once for the tests that compare with it.</summary>
    public CleanJobFixture() => Job = new(async () =>
    {
        var clean = RunConfig.Load(null, [.. DistributedTests.JobSettings, "run.out_dir=" + temp.File("clean")]);
        int exit = await Launch.Local(clean, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5));
        Assert.Equal(0, exit);
        return clean;
    });

    public void Dispose() => temp.Dispose();
}

public class DistributedTests(ITestOutputHelper log, CleanJobFixture fixture) : IClassFixture<CleanJobFixture>
{
    [Fact]
    public void Two_ranks_and_one_rank_take_the_same_loss_at_every_step_with_mu_centering()
    {
        using var temp = new TempDirectory();
        const int steps = 24;
        var config = TestConfigs.Tiny(temp.Path, steps: steps, method: Oec.OecMethod.MuCentering).WithTrain(t => t with { GradAccum = 2 });

        using var single = new Trainer(config);
        var reference = Enumerable.Range(0, steps).Select(s => single.Step(s).CrossEntropy).ToArray();

        var rendezvous = new InProcessRendezvous();
        var losses = new double[2][];
        var models = new Gpt[2];
        var trainers = new Trainer[2];
        var threads = Enumerable.Range(0, 2).Select(rank => new Thread(() =>
        {
            var comm = TcpRingCommunicator.Create(rendezvous, "equivalence", rank, 2, new TcpOptions(Timeout: TimeSpan.FromSeconds(30)));
            trainers[rank] = new Trainer(config, comm);
            losses[rank] = Enumerable.Range(0, steps).Select(s => trainers[rank].Step(s).CrossEntropy).ToArray();
        })).ToList();
        threads.ForEach(t => t.Start());
        Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a rank did not finish within 2 minutes"));
        try
        {
            double worst = 0;
            for (int s = 0; s < steps; s++)
            {
                log.WriteLine($"step {s + 1}: one rank {reference[s]:R}, two ranks {losses[0][s]:R} / {losses[1][s]:R}");
                Assert.Equal(losses[0][s], losses[1][s]); // both ranks report the all-reduced loss
                worst = Math.Max(worst, Math.Abs(reference[s] - losses[0][s]));
            }
            double parameters = Tensors.MaxParameterDifference(single.Model, trainers[0].Model);
            log.WriteLine($"largest loss difference {worst:G3}; largest parameter difference {parameters:G3}");
            Assert.True(worst < 1e-4, $"the losses of one and two ranks differ by up to {worst}");
            Assert.True(parameters < 1e-4, $"the parameters of one and two ranks differ by up to {parameters}");
            Assert.Equal(0, Tensors.MaxParameterDifference(trainers[0].Model, trainers[1].Model)); // replicas stay identical
            Assert.True(Tensors.MuNorm(trainers[0].Model.OutputEmbedding) < 1e-6);
        }
        finally
        {
            foreach (var t in trainers) t?.Dispose();
        }
    }

    [Theory]
    [InlineData(OecMethod.MuLoss, false)]
    [InlineData(OecMethod.MuLoss, true)]
    [InlineData(OecMethod.None, false)]
    public void Gradients_all_reduced_layer_by_layer_during_backward_give_the_parameters_of_the_all_reduce_after_it(OecMethod method, bool tying)
    {
        using var temp = new TempDirectory();
        const int steps = 8;
        var config = (TestConfigs.Tiny(temp.Path, steps: steps, method: method).WithOec(o => o with { MuLossLambda = 1e-1 })
                      with { Model = new Model.ModelOptions { WeightTying = tying } }).WithTrain(t => t with { GradAccum = 2 }); // only the last micro-batch starts them

        Trainer[] Run(bool overlap, int[] started)
        {
            var rendezvous = new InProcessRendezvous();
            var trainers = new Trainer[2];
            var threads = Enumerable.Range(0, 2).Select(rank => new Thread(() =>
            {
                var comm = TcpRingCommunicator.Create(rendezvous, "overlap", rank, 2, new TcpOptions(Timeout: TimeSpan.FromSeconds(30)));
                trainers[rank] = new Trainer(config.WithTrain(t => t with { OverlapGradReduce = overlap }), comm);
                for (int s = 0; s < steps; s++) trainers[rank].Step(s);
                started[rank] = trainers[rank].GroupsStartedInBackward;
            })).ToList();
            threads.ForEach(t => t.Start());
            Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a rank did not finish within 2 minutes"));
            return trainers;
        }
        int[] overlappedGroups = new int[2], afterGroups = new int[2];
        var overlapped = Run(overlap: true, overlappedGroups);
        var after = Run(overlap: false, afterGroups);
        try
        {
            double difference = Tensors.MaxParameterDifference(overlapped[0].Model, after[0].Model);
            log.WriteLine($"{method}, tying {tying}: groups started in backward {overlappedGroups[0]} (overlapped), {afterGroups[0]} (after); parameters differ by up to {difference:G3}");
            Assert.Equal([config.Model.NLayer!.Value + 1, config.Model.NLayer!.Value + 1], overlappedGroups); // ln_f (+ head), then every block
            Assert.Equal([0, 0], afterGroups);
            // The same sums, cut into other buckets, so the ring adds some elements in another order: rounding, no more.
            Assert.True(difference < 1e-5, $"overlapped and after-backward all-reduce end {difference} apart");
            Assert.Equal(0, Tensors.MaxParameterDifference(overlapped[0].Model, overlapped[1].Model));
        }
        finally
        {
            foreach (var t in overlapped.Concat(after)) t?.Dispose();
        }
    }

    [Fact]
    public void A_run_stopped_after_step_7_and_resumed_ends_with_the_same_parameters_as_an_uninterrupted_run()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.File("whole"), steps: 16).WithTrain(t => t with { LogEvery = 1 }) with { Job = new JobOptions { CheckpointEvery = 5 } };
        using var whole = new Trainer(config);
        whole.Run(TextWriter.Null);

        var halves = config with { Run = new RunOptions { OutDir = temp.File("halves") } };
        var first = new StopAfter(7, new LocalSession(halves.Run.OutDir!, 3, halves.ToJson()));
        using (var trainer = new Trainer(halves))
        {
            var stopped = trainer.Run(TextWriter.Null, first);
            Assert.True(stopped.Stopped);
            Assert.Equal(7, stopped.Steps);
        }
        var checkpoint = first.CheckpointDirectory(7);
        Assert.Equal(["manifest.json", "model.safetensors", "optimizer.bin", "rng.rank0.bin"], Directory.GetFiles(checkpoint).Select(Path.GetFileName).Order());
        using var resumed = new Trainer(halves);
        var result = resumed.Run(TextWriter.Null, new LocalSession(halves.Run.OutDir!, 3, halves.ToJson(), startStep: 7, resumeFrom: checkpoint));

        Assert.Equal(16, result.Steps);
        Assert.Equal(0, Tensors.MaxParameterDifference(whole.Model, resumed.Model)); // bitwise on the CPU
        var expected = MetricsLog.Read(Path.Combine(config.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.GradNorm));
        var actual = MetricsLog.Read(Path.Combine(halves.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.GradNorm));
        Assert.Equal(expected, actual); // one line per step, none lost or repeated across the stop
    }

    [Fact]
    public void A_corrupt_checkpoint_is_refused_naming_the_file()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 4) with { Job = new JobOptions { CheckpointEvery = 2 } };
        using (var trainer = new Trainer(config)) trainer.Run(TextWriter.Null);
        string dir = Path.Combine(temp.Path, "checkpoints", "step_00000002");
        string optimizerFile = Path.Combine(dir, "optimizer.bin");
        var bytes = File.ReadAllBytes(optimizerFile);
        bytes[^1] ^= 1;
        File.WriteAllBytes(optimizerFile, bytes);

        using var fresh = new Trainer(config);
        var e = Assert.Throws<InvalidDataException>(() => fresh.LoadCheckpoint(dir));

        Assert.Contains("optimizer.bin", e.Message);
        Assert.Contains("corrupt", e.Message);
    }

    internal static readonly string[] JobSettings =
    [
        "train.steps=160", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=80",
        "train.eval_batches=2", "train.log_every=10", "train.threads=1", "data.synthetic_tokens=30000",
        "job.world_size=2", "job.checkpoint_every=40", "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10",
    ];

    /// <summary>Asserts that two finished jobs have bitwise equal final models and the same metrics at every logged step.</summary>
    static void AssertSameResult(RunConfig expected, RunConfig actual)
    {
        using var a = new Gpt(expected.Model, expected.Data.ResolvedVocabSize, expected.Train.SequenceLength);
        using var b = new Gpt(actual.Model, actual.Data.ResolvedVocabSize, actual.Train.SequenceLength);
        Checkpoint.Load(a, Path.Combine(expected.Run.OutDir!, "model.safetensors"));
        Checkpoint.Load(b, Path.Combine(actual.Run.OutDir!, "model.safetensors"));
        Assert.Equal(0, Tensors.MaxParameterDifference(a, b));
        Assert.Equal(MetricsLog.Read(Path.Combine(expected.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.ValLoss)),
                     MetricsLog.Read(Path.Combine(actual.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.ValLoss)));
    }

    [Fact]
    public async Task A_rank_killed_with_signal_9_mid_run_is_replaced_and_the_job_ends_as_if_nothing_happened()
    {
        using var temp = new TempDirectory();
        var clean = await fixture.Job.Value;
        var faulty = RunConfig.Load(null, [.. JobSettings, "run.out_dir=" + temp.File("faulty")]);
        var console = new StringWriter();

        JobState? job = null;
        Task? killer = null;
        int exit = await Launch.Local(faulty, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None,
            created: j => job = j,
            started: (generation, rank, process) =>
            {
                if (generation != 1 || rank != 1) return;
                killer = Task.Run(async () =>
                {
                    var deadline = Stopwatch.StartNew();
                    while (job!.Ranks().FirstOrDefault(r => r.Rank == 1)?.Step is not >= 50 && deadline.Elapsed < TimeSpan.FromMinutes(2))
                        await Task.Delay(20);
                    process.Kill(); // SIGKILL
                });
            }).WaitAsync(TimeSpan.FromMinutes(5));
        if (killer is not null) await killer.WaitAsync(TimeSpan.FromMinutes(1));
        log.WriteLine(console.ToString());

        Assert.Equal(0, exit);
        Assert.Equal(1, job!.Restarts);
        string coordinatorLog = File.ReadAllText(Path.Combine(faulty.Run.OutDir!, "coordinator.log"));
        Assert.Contains("generation 1 failed", coordinatorLog);
        Assert.Contains("killed by signal 9", coordinatorLog);
        Assert.Matches(@"generation 2 resumes from checkpoint step (40|80|120)", coordinatorLog);
        Assert.Contains("succeeded: finished 160 steps", coordinatorLog);

        AssertSameResult(clean, faulty); // the replacement generation's result is the uninterrupted job's, to the bit
    }

    [Fact]
    public async Task A_job_stopped_by_an_interrupt_and_resumed_ends_as_the_uninterrupted_job()
    {
        using var temp = new TempDirectory();
        var clean = await fixture.Job.Value;
        var halves = RunConfig.Load(null, [.. JobSettings, "run.out_dir=" + temp.File("halves")]);
        using var interrupt = new CancellationTokenSource();
        JobState? job = null;
        var watcher = Task.CompletedTask;

        int first = await Launch.Local(halves, Launch.SelfRankCommand(), TextWriter.Null, interrupt.Token, created: j =>
        {
            job = j;
            watcher = Task.Run(async () =>
            {
                while (j.Ranks().FirstOrDefault()?.Step is not >= 60 && !j.Outcome.IsCompleted) await Task.Delay(20);
                interrupt.Cancel(); // as Ctrl+C does
            });
        }).WaitAsync(TimeSpan.FromMinutes(5));
        await watcher.WaitAsync(TimeSpan.FromMinutes(1));
        var stopped = await job!.Outcome;
        Assert.Equal(0, first);
        Assert.Equal(JobPhase.Stopped, stopped.Phase);
        Assert.InRange(stopped.Step, 60, 159);
        Assert.False(File.Exists(Path.Combine(halves.Run.OutDir!, "model.safetensors")));

        var resumed = halves with { Job = halves.Job with { Resume = true } };
        int second = await Launch.Local(resumed, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5));

        Assert.Equal(0, second);
        Assert.Contains($"resuming from {Path.Combine(halves.Run.OutDir!, "checkpoints", $"step_{stopped.Step:D8}")}",
            File.ReadAllText(Path.Combine(halves.Run.OutDir!, "coordinator.log")));
        AssertSameResult(clean, halves);
    }

    [Fact]
    public async Task A_vocabulary_sharded_job_checkpoints_per_shard_resumes_exactly_and_writes_the_whole_model_of_one_process()
    {
        using var temp = new TempDirectory();
        string[] settings = ["train.steps=60", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=0",
            "train.log_every=5", "train.threads=1", "data.synthetic_tokens=30000", "job.world_size=2", "job.vocab_parallel=2",
            "job.checkpoint_every=20", "job.heartbeat_interval_s=0.2"];
        var whole = RunConfig.Load(null, [.. settings, "run.out_dir=" + temp.File("whole")]);
        var halves = RunConfig.Load(null, [.. settings, "run.out_dir=" + temp.File("halves")]);

        Assert.Equal(0, await Launch.Local(whole, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));
        Assert.Equal(["manifest.json", "model.shard0of2.safetensors", "model.shard1of2.safetensors", "optimizer.shard0of2.bin",
                      "optimizer.shard1of2.bin", "rng.rank0.bin", "rng.rank1.bin"],
            Directory.GetFiles(Path.Combine(whole.Run.OutDir!, "checkpoints", "step_00000020")).Select(Path.GetFileName).Order());

        using var interrupt = new CancellationTokenSource();
        JobState? job = null;
        var watcher = Task.CompletedTask;
        Assert.Equal(0, await Launch.Local(halves, Launch.SelfRankCommand(), TextWriter.Null, interrupt.Token, created: j =>
        {
            job = j;
            watcher = Task.Run(async () =>
            {
                while (j.Ranks().FirstOrDefault()?.Step is not >= 15 && !j.Outcome.IsCompleted) await Task.Delay(10);
                interrupt.Cancel();
            });
        }).WaitAsync(TimeSpan.FromMinutes(5)));
        await watcher.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(JobPhase.Stopped, (await job!.Outcome).Phase);
        Assert.Equal(0, await Launch.Local(halves with { Job = halves.Job with { Resume = true } }, Launch.SelfRankCommand(), TextWriter.Null,
            CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));
        AssertSameResult(whole, halves); // resumed from per-shard checkpoints, to the bit

        using var reference = new Trainer(whole with { Job = new JobOptions(), Run = new RunOptions { OutDir = temp.File("one") } });
        for (int step = 0; step < 60; step++) reference.Step(step);
        using var model = new Gpt(whole.Model, whole.Data.ResolvedVocabSize, whole.Train.SequenceLength);
        Checkpoint.Load(model, Path.Combine(whole.Run.OutDir!, "model.safetensors"));
        var differences = Tensors.Parameters(reference.Model)
            .SelectMany(kv => kv.Value.Zip(Tensors.Parameters(model)[kv.Key], (a, b) => Math.Abs(a - b))).Order().ToArray();
        double p999 = differences[(int)(0.999 * (differences.Length - 1))];
        log.WriteLine($"stopped at step {(await job.Outcome).Step}; against one process: largest parameter difference {differences[^1]:G3}, 99.9th percentile {p999:G3}");
        Assert.True(differences[^1] < 1e-3, $"largest parameter difference {differences[^1]}");
        Assert.True(p999 < 1e-5, $"99.9th percentile of parameter differences {p999}");
    }

    [Fact]
    public async Task A_rank_that_loses_its_coordinator_mid_run_exits_instead_of_hanging()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["train.steps=100000", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32",
            "train.eval_every=0", "train.threads=1", "data.synthetic_tokens=30000", "job.world_size=1", "job.checkpoint_every=0",
            "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=2", "run.out_dir=" + temp.Path]);
        using var data = new TrainingData(config.Data, config.Train.SequenceLength);
        using var coordinatorLog = new JobLog(null, null);
        string token = new string('t', 32);
        using var job = new JobState(new JobSpec("lost", token, config.Job with { Id = "lost" }, config.ToJson(),
            new Data.BatchPlan(data.Train, config.Train.BatchSize, config.Train.Seed), 1, config.Train.Steps, temp.Path), coordinatorLog);
        var host = await CoordinatorHost.StartAsync(job, coordinatorLog, System.Net.IPAddress.Loopback, 0);
        using var rank = ChildProcesses.Start(Launch.SelfRankCommand(),
            new() { ["OEC_COORDINATOR"] = host.Address.ToString(), ["OEC_JOB_ID"] = "lost", ["OEC_JOB_TOKEN"] = token });
        var output = rank.StandardOutput.ReadToEndAsync();
        var clock = Stopwatch.StartNew();
        while (job.Ranks().FirstOrDefault()?.Step is not > 20 && clock.Elapsed < TimeSpan.FromMinutes(1)) await Task.Delay(50);
        Assert.True(job.Ranks().Single().Step > 20, "the rank did not get going");

        await host.DisposeAsync(); // the coordinator is gone
        clock.Restart();
        await rank.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        log.WriteLine($"exited {clock.Elapsed.TotalSeconds:F1} s after the coordinator, code {rank.ExitCode}:\n{await output}");

        Assert.Equal(ExitCodes.LostCoordinator, rank.ExitCode);
        Assert.Contains("lost the coordinator", await output);
    }

    [Fact]
    public void A_rank_without_the_job_token_exits_with_2_naming_OEC_JOB_TOKEN()
    {
        using var rank = ChildProcesses.Start(Launch.SelfRankCommand(),
            new() { ["OEC_COORDINATOR"] = "http://127.0.0.1:9", ["OEC_JOB_ID"] = "x", ["OEC_JOB_TOKEN"] = null });
        string error = rank.StandardError.ReadToEnd();
        Assert.True(rank.WaitForExit(TimeSpan.FromSeconds(30)));

        Assert.Equal(2, rank.ExitCode);
        Assert.Contains("OEC_JOB_TOKEN", error);
    }

    /// <summary>A session that asks to stop once `step` steps are done.</summary>
    sealed class StopAfter(long step, LocalSession inner) : ITrainingSession
    {
        long done;
        public long StartStep => inner.StartStep;
        public string? ResumeFrom => inner.ResumeFrom;
        public bool StopRequested => done + 1 >= step;
        public string CheckpointDirectory(long s) => inner.CheckpointDirectory(s);
        public void Progress(long stepsDone, StepMetrics? metrics) => done = stepsDone;
        public void CheckpointWritten(long s, (long Epoch, long Position) cursor, IReadOnlyList<CheckpointFile> files) => inner.CheckpointWritten(s, cursor, files);
    }
}

public partial class CoordinatorCommandTests
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    [Fact]
    public void The_coordinator_command_stops_on_SIGTERM_and_exits_with_0()
    {
        using var temp = new TempDirectory();
        using var coordinator = ChildProcesses.Start(
            Launch.SelfCommand("coordinator", "--port", "0", "--metrics-port", "0", "job.id=sigterm", "data.synthetic_tokens=20000", "run.out_dir=" + temp.Path),
            new() { ["OEC_JOB_TOKEN"] = new string('k', 32) });
        var clock = Stopwatch.StartNew();
        string? line;
        while ((line = coordinator.StandardOutput.ReadLine()) is not null && !line.Contains("listening on") && clock.Elapsed < TimeSpan.FromSeconds(60)) { }
        Assert.Contains("listening on", line);

        Assert.Equal(0, Kill(coordinator.Id, 15)); // SIGTERM
        Assert.True(coordinator.WaitForExit(TimeSpan.FromSeconds(30)), "the coordinator still runs 30 s after SIGTERM");

        Assert.Equal(0, coordinator.ExitCode);
        Assert.Contains("stopped (SIGTERM)", File.ReadAllText(Path.Combine(temp.Path, "coordinator.log")));
    }
}
