// Whole local jobs as processes against their references: a rank killed mid-run, a stopped and resumed job, a
// vocabulary-sharded job, a rank that loses its coordinator or lacks the job token.
using Job;
using System.Diagnostics;
using Coordinator;
using Rank.Configuration;
using OecRun.Launching;
using Rank.Model;
using Rank.Training;
using Rank.UnitTests;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public sealed class CleanJobFixture : IDisposable
{
    readonly TempDirectory temp = new();
    public Lazy<Task<RunConfig>> Job { get; }

    /// <summary>The uninterrupted 2-rank job of JobProcessTests.JobSettings, run once for the tests that compare with it.</summary>
    public CleanJobFixture() => Job = new(async () =>
    {
        var clean = RunConfig.Load(null, [.. JobProcessTests.JobSettings, "run.out_dir=" + temp.File("clean")]);
        int exit = await Launch.Local(clean, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5));
        Assert.Equal(0, exit);
        return clean;
    });

    public void Dispose() => temp.Dispose();
}

public class JobProcessTests(ITestOutputHelper log, CleanJobFixture fixture) : IClassFixture<CleanJobFixture>
{
    internal static readonly string[] JobSettings =
    [
        "train.steps=160", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=80",
        "train.eval_batches=2", "train.log_every=10", "train.threads=1", "data.synthetic_tokens=30000",
        "job.world_size=2", "job.checkpoint_every=40", "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10",
    ];

    /// <summary>Asserts that two finished runs of <paramref name="config"/>'s model wrote bitwise equal final models.</summary>
    internal static void AssertSameModel(RunConfig config, string expectedDir, string actualDir)
    {
        using var a = new Gpt(config.Model, config.Data.ResolvedVocabSize, config.Train.SequenceLength);
        using var b = new Gpt(config.Model, config.Data.ResolvedVocabSize, config.Train.SequenceLength);
        Checkpoint.Load(a, Path.Combine(expectedDir, "model.safetensors"));
        Checkpoint.Load(b, Path.Combine(actualDir, "model.safetensors"));
        Assert.Equal(0, Tensors.MaxParameterDifference(a, b));
    }

    /// <summary>Asserts that two finished jobs have bitwise equal final models and the same metrics at every logged step.</summary>
    static void AssertSameResult(RunConfig expected, RunConfig actual)
    {
        AssertSameModel(expected, expected.Run.OutDir!, actual.Run.OutDir!);
        Assert.Equal(MetricsLog.Read(Path.Combine(expected.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.ValLoss)),
                     MetricsLog.Read(Path.Combine(actual.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.ValLoss)));
    }

    /// <summary>Runs the job and interrupts it, as Ctrl+C does, once rank 0 has done <paramref name="step"/> steps;
    /// asserts that it stopped at a checkpoint with exit code 0.</summary>
    internal static async Task<JobState> StopAfter(RunConfig config, long step)
    {
        using var interrupt = new CancellationTokenSource();
        JobState? job = null;
        var watcher = Task.CompletedTask;
        int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Null, interrupt.Token, created: j =>
        {
            job = j;
            watcher = Task.Run(async () =>
            {
                while ((j.Ranks().FirstOrDefault()?.Step ?? 0) < step && !j.Outcome.IsCompleted) await Task.Delay(20);
                interrupt.Cancel();
            });
        }).WaitAsync(TimeSpan.FromMinutes(5));
        await watcher.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(0, exit);
        Assert.Equal(JobPhase.Stopped, (await job!.Outcome).Phase);
        return job;
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
        var pids = new System.Collections.Concurrent.ConcurrentBag<(int Pid, string Start)>();
        var environments = new System.Collections.Concurrent.ConcurrentBag<string[]>();
        int exit = await Launch.Local(faulty, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None,
            created: j => job = j,
            started: (generation, rank, process) =>
            {
                pids.Add((process.Id, StartTime(process.Id)));
                environments.Add(File.ReadAllText($"/proc/{process.Id}/environ").Split('\0'));
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
        // No rank, the killed one included, left .NET's debugger pipes or diagnostics socket (clr-debug-pipe-PID-START-*,
        // dotnet-diagnostic-PID-START-*) in the temporary directory; START tells a rank from a later process that got its pid.
        Assert.All(environments, e => Assert.Contains("OMP_WAIT_POLICY=PASSIVE", e)); // OpenMP threads that sleep, not spin
        Assert.Empty(pids.SelectMany(p => new[] { "clr-debug-pipe", "dotnet-diagnostic" }
            .SelectMany(kind => Directory.EnumerateFileSystemEntries(Path.GetTempPath(), $"{kind}-{p.Pid}-{p.Start}-*"))));
    }

    /// <summary>A process's start time in clock ticks since boot (/proc/PID/stat's 22nd field), which .NET puts after
    /// the pid in the names of its diagnostic pipes.</summary>
    static string StartTime(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[19]; // fields from the 3rd (state) on, after "(comm) "
    }

    [Fact]
    public async Task A_job_stopped_by_an_interrupt_and_resumed_ends_as_the_uninterrupted_job()
    {
        using var temp = new TempDirectory();
        var clean = await fixture.Job.Value;
        var halves = RunConfig.Load(null, [.. JobSettings, "run.out_dir=" + temp.File("halves")]);

        var stopped = await (await StopAfter(halves, 60)).Outcome;
        Assert.InRange(stopped.Step, 60, 159);
        Assert.False(File.Exists(Path.Combine(halves.Run.OutDir!, "model.safetensors")));

        var resumed = halves with { Job = halves.Job with { Resume = ResumeMode.Yes } };
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
        Assert.Equal(["manifest.json", "model.shard0of2.safetensors", "model.shard1of2.safetensors", "optimizer.shard0of2.safetensors",
                      "optimizer.shard1of2.safetensors", "rng.rank0.bin", "rng.rank1.bin"],
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
        Assert.Equal(0, await Launch.Local(halves with { Job = halves.Job with { Resume = ResumeMode.Yes } }, Launch.SelfRankCommand(), TextWriter.Null,
            CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5)));
        AssertSameResult(whole, halves); // resumed from per-shard checkpoints, to the bit

        using var reference = new Trainer(whole with { Job = new JobOptions(), Run = new RunOptions { OutDir = temp.File("one") } });
        for (int step = 0; step < 60; step++) reference.Step(step);
        log.WriteLine($"stopped at step {(await job.Outcome).Step}");
        LayoutProcessTests.AssertSavedModelMatches(reference.Model, whole, log);
    }

    [Fact]
    public async Task A_rank_that_loses_its_coordinator_mid_run_exits_instead_of_hanging()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["train.steps=100000", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32",
            "train.eval_every=0", "train.threads=1", "data.synthetic_tokens=30000", "job.world_size=1", "job.checkpoint_every=0",
            "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=2", "run.out_dir=" + temp.Path]);
        await using var coordinator = await BareCoordinator.StartAsync(config, "lost");
        var job = coordinator.Job;
        using var rank = coordinator.StartRank();
        var output = rank.StandardOutput.ReadToEndAsync();
        var clock = Stopwatch.StartNew();
        while (job.Ranks().FirstOrDefault()?.Step is not > 20 && clock.Elapsed < TimeSpan.FromMinutes(1)) await Task.Delay(50);
        Assert.True(job.Ranks().Single().Step > 20, "the rank did not get going");

        await coordinator.StopServingAsync(); // the coordinator is gone
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

    [Fact]
    public async Task A_rank_started_before_its_coordinator_answers_keeps_asking_then_exits_as_having_lost_it()
    {
        var clock = Stopwatch.StartNew();
        using var rank = ChildProcesses.Start(Launch.SelfRankCommand(), new()
        {
            ["OEC_COORDINATOR"] = "http://127.0.0.1:9", ["OEC_JOB_ID"] = "early", ["OEC_JOB_TOKEN"] = new string('t', 32),
            ["OEC_REGISTER_TIMEOUT_S"] = "3",
        });
        var output = rank.StandardOutput.ReadToEndAsync();
        await rank.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));

        // Refused with 2 at once before (which a Kubernetes Job takes as fatal); now it asks for 3 s, then exits 5.
        Assert.Equal(ExitCodes.LostCoordinator, rank.ExitCode);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(3), $"exited after {clock.Elapsed.TotalSeconds:F1} s: it did not keep asking");
        Assert.Contains("no coordinator answered at http://127.0.0.1:9/ for 3 s", await output);
    }
}
