// Faults on one machine, injected into whole jobs: kill -9 of a rank and of the coordinator at seeded random steps,
// SIGSTOP of a rank, and every file of a checkpoint corrupted or torn. Each job must recover by itself (or, for the
// coordinator, when restarted as its Deployment would) and end with the uninterrupted run's model, to the bit.
using Job;
using OecRun.Launching;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests.Faults;

[Collection(FaultCollection.Name)]
public class ProcessFaultTests(ITestOutputHelper log, FaultReferenceFixture reference)
{
    [Fact]
    public async Task A_rank_killed_with_signal_9_at_a_seeded_random_step_is_replaced_and_the_job_ends_with_the_reference_model()
    {
        string referenceDir = await reference.RunDir;
        for (int trial = 0; trial < FaultJob.Trials; trial++)
        {
            var random = new Random(1000 + trial);
            int victim = random.Next(2);
            long atStep = random.Next(5, FaultJob.Steps - 25); // the rank's step reaches the test a heartbeat late: leave it time to be killed
            using var temp = new TempDirectory();
            string outDir = temp.File("run");
            var fault = await FaultJob.RunLocal(FaultJob.Config(outDir), victim, atStep, process => process.Kill(), log);

            var times = FaultJob.Timed(outDir, fault.At);
            string failure = File.ReadLines(Path.Combine(outDir, "coordinator.log")).FirstOrDefault(l => l.Contains("generation 1 failed"))
                             ?? throw new Xunit.Sdk.XunitException($"trial {trial}: no failure logged: the job ended before rank {victim} was killed at step {fault.Step}");
            log.WriteLine($"trial {trial}: rank {victim} killed at step {fault.Step} (aimed {atStep}); detected in {times.DetectionS:F2} s, training again in {times.RecoveryS:F2} s; {failure}");
            FaultJob.Report("kill -9 rank", trial, fault.Exit == 0, fault.Exit == 0 && FaultJob.SameModel(referenceDir, outDir), times, failure);

            Assert.Equal(ExitCodes.Success, fault.Exit);
            Assert.Equal(1, fault.Job.Restarts);
            Assert.Contains($"rank {victim} (pid {fault.Pid}) exited with code 137 (killed by signal 9)", failure);
            Assert.InRange(times.DetectionS, 0, FaultJob.HeartbeatTimeoutS);
            FaultJob.AssertSameModel(referenceDir, outDir);
        }
    }

    [Fact]
    public async Task A_rank_stopped_with_SIGSTOP_is_found_silent_within_the_heartbeat_timeout_replaced_and_the_job_ends_with_the_reference_model()
    {
        string referenceDir = await reference.RunDir;
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        var fault = await FaultJob.RunLocal(FaultJob.Config(outDir), victim: 1, atStep: 30, process => ChildProcesses.Signal(process, 19), log); // SIGSTOP

        var times = FaultJob.Timed(outDir, fault.At);
        string failure = File.ReadLines(Path.Combine(outDir, "coordinator.log")).First(l => l.Contains("generation 1 failed"));
        log.WriteLine($"rank 1 stopped at step {fault.Step}: detected in {times.DetectionS:F2} s, training again in {times.RecoveryS:F2} s; {failure}");
        FaultJob.Report("SIGSTOP rank", 0, fault.Exit == 0, fault.Exit == 0 && FaultJob.SameModel(referenceDir, outDir), times, failure);

        Assert.Equal(ExitCodes.Success, fault.Exit);
        Assert.Equal(1, fault.Job.Restarts);
        Assert.Contains("rank 1", failure);
        // Silence is noticed after job.heartbeat_timeout_s; the watchdog and a loaded machine add a little.
        Assert.InRange(times.DetectionS, FaultJob.HeartbeatTimeoutS - 1, FaultJob.HeartbeatTimeoutS + 10);
        // The stopped process cannot hear that its generation ended: it is killed after another heartbeat timeout, not
        // after the launcher's whole grace period, and the next generation starts.
        Assert.InRange(times.RecoveryS, FaultJob.HeartbeatTimeoutS, 2 * FaultJob.HeartbeatTimeoutS + 8);
        FaultJob.AssertSameModel(referenceDir, outDir);
    }

    /// <summary>A rank told to go (a pod evicted, a node drained, Slurm's preemption) gets SIGTERM: the ranks stop at a
    /// checkpoint that the coordinator did not ask for, so the job continues from it in a new generation, without a
    /// restart counted, and ends with the reference model.</summary>
    [Fact]
    public async Task A_rank_sent_SIGTERM_stops_the_job_at_a_checkpoint_the_next_generation_continues_and_the_job_ends_with_the_reference_model()
    {
        string referenceDir = await reference.RunDir;
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        var fault = await FaultJob.RunLocal(FaultJob.Config(outDir), victim: 1, atStep: 30, process => ChildProcesses.Signal(process, 15), log); // SIGTERM

        string coordinatorLog = File.ReadAllText(Path.Combine(outDir, "coordinator.log"));
        var resumed = System.Text.RegularExpressions.Regex.Match(coordinatorLog, @"generation 1 stopped at step (\d+) on its ranks' own signal; generation 2 resumes from checkpoint step (\d+)");
        log.WriteLine(resumed.Value);
        Assert.Equal(ExitCodes.Success, fault.Exit);
        Assert.True(resumed.Success, coordinatorLog);
        Assert.Equal(resumed.Groups[1].Value, resumed.Groups[2].Value);           // no step lost: the stop's own checkpoint
        Assert.InRange(long.Parse(resumed.Groups[1].Value), 31, FaultJob.Steps - 1);
        Assert.Equal(0, fault.Job.Restarts);
        Assert.DoesNotContain("generation 1 failed", coordinatorLog);
        FaultJob.AssertSameModel(referenceDir, outDir);
    }

    public static TheoryData<string, string> DamagedFiles() => new()
    {
        { "model.safetensors", "flip" }, { "model.safetensors", "truncate" },
        { "optimizer.safetensors", "flip" }, { "optimizer.safetensors", "truncate" },
        { "rng.rank1.bin", "flip" }, { "manifest.json", "truncate" }, { "manifest.json", "delete" },
    };

    [Theory]
    [MemberData(nameof(DamagedFiles))]
    public async Task A_newest_checkpoint_with_a_damaged_file_is_skipped_kept_and_the_resumed_job_ends_with_the_reference_model(string file, string damage)
    {
        string referenceDir = await reference.RunDir;
        using var temp = new TempDirectory();
        string outDir = CrashedAtStep70(referenceDir, temp.File("run"));
        string damaged = Path.Combine(outDir, "checkpoints", "step_00000060", file);
        byte[] bytes = File.ReadAllBytes(damaged);
        switch (damage)
        {
            case "flip": bytes[bytes.Length / 2] ^= 0x10; File.WriteAllBytes(damaged, bytes); break;
            case "truncate": File.WriteAllBytes(damaged, bytes[..(bytes.Length / 2)]); break;
            default: File.Delete(damaged); break;
        }

        var console = new StringWriter();
        int exit = await Launch.Local(FaultJob.Config(outDir, "job.resume=true"), Launch.SelfRankCommand(), TextWriter.Synchronized(console),
            CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5));
        log.WriteLine(console.ToString());

        Assert.Equal(ExitCodes.Success, exit);
        Assert.Contains($"resuming from {Path.Combine(outDir, "checkpoints", "step_00000040")}", console.ToString());
        FaultJob.AssertSameModel(referenceDir, outDir);
        // The damaged checkpoint is evidence: still there, or set aside, never deleted.
        string[] kept = Directory.GetFiles(Path.Combine(outDir, "checkpoints"), damage == "delete" ? "model.safetensors" : file, SearchOption.AllDirectories);
        Assert.Contains(kept, f => Path.GetFileName(Path.GetDirectoryName(f))!.Contains("step_00000060", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_coordinator_killed_with_signal_9_at_a_seeded_random_step_and_restarted_ends_the_job_with_the_reference_model()
    {
        string referenceDir = await reference.RunDir;
        for (int trial = 0; trial < FaultJob.Trials; trial++)
        {
            long atStep = 5 * new Random(2000 + trial).Next(1, FaultJob.Steps / 5 - 2); // a logged step, 5..70
            using var temp = new TempDirectory();
            string outDir = temp.File("run");
            using var job = ClusterJob.Start(outDir, Node.Here, [Node.Here, Node.Here]);
            await job.UntilStepAsync(atStep, TimeSpan.FromMinutes(3));
            var first = job.Coordinator;
            first.Kill(); // SIGKILL
            var killedAt = DateTime.UtcNow;
            long killedStep = job.LoggedStep();
            await first.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            job.StartCoordinator(); // as a Deployment restarts its pod
            var (ranks, coordinator) = await job.WaitAsync(TimeSpan.FromMinutes(4), log);

            var resumed = FaultJob.LoggedAt(outDir, @"^generation 1: all 2 ranks registered", killedAt);
            var times = new Recovery(double.NaN, (resumed - killedAt)?.TotalSeconds ?? double.NaN);
            string codes = string.Join("; ", job.ExitCodesByRank.OrderBy(p => p.Key).Select(p => $"rank {p.Key}: {string.Join(", ", p.Value)}"));
            log.WriteLine($"trial {trial}: coordinator killed at step {killedStep}; training again in {times.RecoveryS:F2} s; rank exit codes {codes}");
            bool recovered = coordinator == 0 && ranks.All(c => c == 0);
            FaultJob.Report("kill -9 coordinator", trial, recovered, recovered && FaultJob.SameModel(referenceDir, outDir), times, codes);

            Assert.Equal(0, coordinator);
            Assert.All(ranks, c => Assert.Equal(ExitCodes.Success, c));
            Assert.All(job.ExitCodesByRank.Values.SelectMany(c => c.SkipLast(1)), c => Assert.Contains(c, ExitCodes.Recreate));
            FaultJob.AssertSameModel(referenceDir, outDir);
        }
    }

    /// <summary>The reference run as a crash at step 70 would have left it: checkpoints 20, 40 and 60, the metrics up to
    /// step 70, no final model.</summary>
    static string CrashedAtStep70(string referenceDir, string outDir)
    {
        foreach (string dir in Directory.GetDirectories(Path.Combine(referenceDir, "checkpoints"), "step_*"))
        {
            if (string.CompareOrdinal(Path.GetFileName(dir), "step_00000060") > 0) continue;
            string copy = Path.Combine(outDir, "checkpoints", Path.GetFileName(dir));
            Directory.CreateDirectory(copy);
            foreach (string f in Directory.GetFiles(dir)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        }
        File.Copy(Path.Combine(referenceDir, "config.json"), Path.Combine(outDir, "config.json"));
        // Every line (ReadAll, not Read, which leaves out rolled-back ones), so that the indices are the file's lines.
        var steps = MetricsLog.ReadAll(Path.Combine(referenceDir, "metrics.jsonl")).Select(m => m.Step).ToList();
        File.WriteAllLines(Path.Combine(outDir, "metrics.jsonl"),
            File.ReadLines(Path.Combine(referenceDir, "metrics.jsonl")).Where((_, i) => steps[i] <= 70));
        return outDir;
    }
}
