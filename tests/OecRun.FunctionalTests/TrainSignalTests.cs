// `oecrun train` as a process under a supervisor's signals: SIGTERM and SIGHUP stop the job at a checkpoint, as Ctrl+C does.
using System.Diagnostics;
using OecRun.Launching;

namespace OecRun.FunctionalTests;

public class TrainSignalTests
{
    [Theory]
    [InlineData(15)] // SIGTERM: Kubernetes, systemd and every process supervisor stop with it
    [InlineData(1)]  // SIGHUP: the terminal closed
    public async Task A_stop_signal_ends_the_job_at_a_checkpoint_that_resumes_it_with_exit_code_0(int signal)
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        using var train = ChildProcesses.Start(Launch.SelfCommand("train", "job.world_size=1", "train.steps=100000", "train.warmup_steps=1",
            "train.batch_size=4", "train.sequence_length=32", "train.eval_every=0", "train.log_every=1", "job.checkpoint_every=0",
            "data.synthetic_tokens=20000", "run.out_dir=" + outDir), new());
        var error = train.StandardError.ReadToEndAsync();
        var clock = Stopwatch.StartNew();
        string? line;
        while ((line = train.StandardOutput.ReadLine()) is not null && !line.Contains("step     3/") && clock.Elapsed < TimeSpan.FromSeconds(90)) { }
        Assert.NotNull(line); // it trains

        ChildProcesses.Signal(train, signal);
        string rest = await train.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(train.WaitForExit(TimeSpan.FromSeconds(60)), $"oecrun train still runs 60 s after signal {signal}");

        Assert.True(train.ExitCode == 0, $"exit code {train.ExitCode} after signal {signal}: {await error}");
        Assert.Matches(@"stopped: stopped at step \d+ \(interrupted\); continue it with job.resume=true", rest);
        Assert.NotEmpty(Directory.GetDirectories(Path.Combine(outDir, "checkpoints"), "step_*"));
    }
}
