// The run directory across jobs: its lock refuses a second job while the first lives and is free again after kill -9,
// and a stopped and resumed job keeps its id.
using System.Diagnostics;
using Coordinator;
using Job;
using OecRun.Launching;
using Rank.Configuration;

namespace OecRun.FunctionalTests;

public class RunDirectoryTests
{
    static readonly string[] Settings =
    [
        "job.world_size=1", "train.warmup_steps=1", "train.batch_size=4", "train.sequence_length=32", "train.eval_every=0",
        "train.log_every=1", "train.threads=1", "data.synthetic_tokens=20000", "job.heartbeat_interval_s=0.2",
    ];

    static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    /// <summary>`oecrun train` of <see cref="Settings"/> for a long run into outDir, as a child process.</summary>
    static Train StartTrain(string outDir, params string[] more) =>
        new(ChildProcesses.Start(Launch.SelfCommand(["train", .. Settings, "train.steps=100000", "job.checkpoint_every=2", "run.out_dir=" + outDir, .. more]), new()));

    /// <summary>A child `oecrun train` with its stderr collected; killed with its ranks on Dispose if it still runs, so that a
    /// failed test leaves no job behind.</summary>
    sealed class Train(Process process) : IDisposable
    {
        public Process Process { get; } = process;
        public Task<string> Errors { get; } = process.StandardError.ReadToEndAsync();

        /// <summary>Reads the output up to the first line that contains <paramref name="text"/>; fails the test naming what
        /// it read when the job ends or <see cref="Patience"/> passes first.</summary>
        public async Task<List<string>> ReadUntil(string text)
        {
            var seen = new List<string>();
            var clock = Stopwatch.StartNew();
            string? line;
            while ((line = Process.StandardOutput.ReadLine()) is not null && clock.Elapsed < Patience)
            {
                seen.Add(line);
                if (line.Contains(text)) return seen;
            }
            Dispose();
            Assert.Fail($"no line with '{text}' from oecrun train:\n{string.Join('\n', seen)}\n{await Errors}");
            return seen;
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.WaitForExit(Patience);
            Process.Dispose();
        }
    }

    /// <summary>SIGTERM, then the exit code once the job stopped at a checkpoint.</summary>
    static async Task<int> Stop(Process train, Task<string> output)
    {
        ChildProcesses.Signal(train, 15);
        await output.WaitAsync(Patience);
        Assert.True(train.WaitForExit(Patience), "oecrun train still runs after SIGTERM");
        return train.ExitCode;
    }

    [Fact]
    public async Task A_second_job_into_the_directory_of_a_running_one_exits_with_2_naming_the_lock_and_its_holder()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        using var first = StartTrain(outDir);
        await first.ReadUntil("step     3/");
        var firstOutput = first.Process.StandardOutput.ReadToEndAsync(); // keeps its pipe drained

        using var second = StartTrain(outDir, "job.resume=true"); // what the check for a directory holding a run lets through
        _ = second.Process.StandardOutput.ReadToEndAsync();
        string secondErrors = await second.Errors.WaitAsync(Patience);
        Assert.True(second.Process.WaitForExit(Patience), "the second job still runs");

        Assert.Equal(ExitCodes.Refused, second.Process.ExitCode);
        Assert.Contains($"run.out_dir = '{outDir}' is in use by another job: pid {first.Process.Id} on host {Environment.MachineName}", secondErrors);
        Assert.Contains(Path.Combine(outDir, RunDirectoryLock.FileName), secondErrors);
        Assert.Equal(0, await Stop(first.Process, firstOutput));
        // The second job was refused before it opened the log: one job wrote it.
        Assert.Single(File.ReadAllLines(Path.Combine(outDir, "coordinator.log")), l => l.Contains("generation 1 waits for its ranks"));
    }

    [Fact]
    public async Task The_lock_of_a_job_killed_with_signal_9_is_free_and_a_resume_takes_it()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        using (var crashed = StartTrain(outDir))
        {
            await crashed.ReadUntil("committed");
            crashed.Process.Kill(entireProcessTree: true); // SIGKILL to the holder of the lock (and its ranks, which would outlive it)
            Assert.True(crashed.Process.WaitForExit(Patience));
        }
        Assert.True(File.Exists(Path.Combine(outDir, RunDirectoryLock.FileName))); // the file stays; the lock went with the process

        using var resumed = StartTrain(outDir, "job.resume=true");
        var seen = await resumed.ReadUntil("[rank 0] step");
        Assert.Contains(seen, l => l.Contains("resuming from"));
        Assert.Equal(0, await Stop(resumed.Process, resumed.Process.StandardOutput.ReadToEndAsync()));
    }

    [Fact]
    public async Task A_stopped_and_resumed_job_keeps_its_job_id()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [.. Settings, "train.steps=200", "job.checkpoint_every=0", "run.out_dir=" + temp.File("run")]);
        var first = await JobProcessTests.StopAfter(config, 3);

        var resume = config with { Job = config.Job with { Resume = ResumeMode.Yes } };
        JobState? second = null;
        int finished = await Launch.Local(resume, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None, created: j => second = j)
            .WaitAsync(TimeSpan.FromMinutes(5));

        Assert.Equal(0, finished);
        Assert.StartsWith("run-", first.Spec.JobId);
        Assert.Equal(first.Spec.JobId, second!.Spec.JobId); // one Prometheus series (label job) for the whole run
    }
}
